/**
 * SwiGLU's gating (Shazeer 2020), the MLP activation of LLaMA:
 *
 *     out_i = silu(gate_i) * up_i,      silu(g) = g * sigmoid(g) = g / (1 + exp(-g))
 *
 * in float64, rounded once to f32 on store. For g -> -inf, exp(-g) overflows to Infinity and silu
 * goes to -0, its limit. out may be gate or up (in place).
 */
import { fail } from '../core/errors.js';

export function swiglu(out: Float32Array, gate: Float32Array, up: Float32Array, n = out.length): void {
  if (!Number.isInteger(n) || n < 0 || gate.length < n || up.length < n || out.length < n) {
    fail('shape', `swiglu: need ${n} values, have out ${out.length}, gate ${gate.length}, up ${up.length}`);
  }
  for (let i = 0; i < n; i++) {
    const g = gate[i]!;
    out[i] = (g / (1 + Math.exp(-g))) * up[i]!;
  }
}
