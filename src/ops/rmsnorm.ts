/**
 * RMSNorm (Zhang & Sennrich 2019), as LLaMA applies it, per row r of `rows` rows of `dim` values:
 *
 *     out[r, i] = x[r, i] / sqrt(mean_j(x[r, j]^2) + eps) * weight[i]
 *
 * The sum of squares and the scaling run in float64; each output is rounded once to f32 on store.
 * out may be x itself (in place).
 */
import { fail } from '../core/errors.js';

export function rmsNorm(out: Float32Array, x: Float32Array, weight: Float32Array, eps: number, rows: number, dim: number): void {
  if (!Number.isInteger(rows) || rows < 0 || !Number.isInteger(dim) || dim <= 0) fail('shape', `rmsNorm: invalid rows ${rows} or dim ${dim}`);
  if (weight.length !== dim) fail('shape', `rmsNorm: weight has ${weight.length} values, expected ${dim}`);
  if (x.length < rows * dim || out.length < rows * dim) fail('shape', `rmsNorm: x and out need ${rows} x ${dim} values, have ${x.length} and ${out.length}`);
  for (let r = 0; r < rows; r++) {
    const at = r * dim;
    let ss = 0;
    for (let i = 0; i < dim; i++) ss += x[at + i]! * x[at + i]!;
    const scale = 1 / Math.sqrt(ss / dim + eps);
    for (let i = 0; i < dim; i++) out[at + i] = x[at + i]! * scale * weight[i]!;
  }
}
