/**
 * cos/sin of the rotary angles p * w_i for integer positions p.
 *
 * 'exact' angles have float64 accuracy at any position: the position is split as p = hi * 2^10 + lo,
 * cos/sin of hi * 2^10 * w_i and of lo * w_i come from float64 tables, and the angle-addition
 * formula joins them. Each factor is accurate to ~1e-16, so the result is too, while a whole
 * 4096-token prefill needs only a few Math.cos calls per frequency beyond the cached low table.
 *
 * 'hf-compatible' angles reproduce how HF transformers (and so training) computes them: the
 * position and w_i as float32, their product rounded to float32. At p = 2^20 that angle is off by
 * up to ~0.03 rad, but it is what the checkpoint saw. Its cos/sin are then taken exactly.
 */
import type { RopeFrequencies } from './scaling.js';

export type AngleMode = 'exact' | 'hf-compatible';

const LOW_BITS = 10;
const LOW_SIZE = 1 << LOW_BITS;

/** cos/sin of lo * w_i for lo in [0, 1024), per frequency array (built once, 16 KiB per pair). */
const lowTables = new WeakMap<Float64Array, { cos: Float64Array; sin: Float64Array }>();

function lowTable(invFreq: Float64Array): { cos: Float64Array; sin: Float64Array } {
  let table = lowTables.get(invFreq);
  if (!table) {
    const half = invFreq.length;
    const cos = new Float64Array(LOW_SIZE * half);
    const sin = new Float64Array(LOW_SIZE * half);
    for (let lo = 0; lo < LOW_SIZE; lo++) {
      for (let i = 0; i < half; i++) {
        const angle = lo * invFreq[i]!;
        cos[lo * half + i] = Math.cos(angle);
        sin[lo * half + i] = Math.sin(angle);
      }
    }
    table = { cos, sin };
    lowTables.set(invFreq, table);
  }
  return table;
}

/**
 * Fills `out` with one row per token: rotaryDim/2 values m*cos(angle) then rotaryDim/2 values
 * m*sin(angle), m being the attention factor, in float64 (an f32 kernel rounds each value once).
 * Positions must already be validated (integers >= 0).
 */
export function fillCosSin(out: Float64Array, positions: Int32Array, freqs: RopeFrequencies, mode: AngleMode): void {
  const { invFreq, attentionFactor: m } = freqs;
  const half = invFreq.length;
  const row = 2 * half;
  if (mode === 'hf-compatible') {
    const w32 = Float32Array.from(invFreq);
    for (let t = 0; t < positions.length; t++) {
      const p = Math.fround(positions[t]!);
      for (let i = 0; i < half; i++) {
        const angle = Math.fround(p * w32[i]!);
        out[t * row + i] = m * Math.cos(angle);
        out[t * row + half + i] = m * Math.sin(angle);
      }
    }
    return;
  }
  const low = lowTable(invFreq);
  const hiCos = new Float64Array(half);
  const hiSin = new Float64Array(half);
  let cachedHi = -1;
  for (let t = 0; t < positions.length; t++) {
    const p = positions[t]!;
    const hi = p >>> LOW_BITS;
    const lo = p & (LOW_SIZE - 1);
    // Consecutive tokens usually share hi: recompute its cos/sin only when it changes.
    if (hi !== cachedHi) {
      for (let i = 0; i < half; i++) {
        const angle = hi * LOW_SIZE * invFreq[i]!;
        hiCos[i] = Math.cos(angle);
        hiSin[i] = Math.sin(angle);
      }
      cachedHi = hi;
    }
    const base = lo * half;
    for (let i = 0; i < half; i++) {
      const cl = low.cos[base + i]!;
      const sl = low.sin[base + i]!;
      // cos(a + b) = cos a cos b - sin a sin b;  sin(a + b) = sin a cos b + cos a sin b
      out[t * row + i] = m * (hiCos[i]! * cl - hiSin[i]! * sl);
      out[t * row + half + i] = m * (hiSin[i]! * cl + hiCos[i]! * sl);
    }
  }
}
