/**
 * cos/sin of the rotary angles p * w_i for integer positions p.
 *
 * 'exact' angles have float64 accuracy at any position: the position is split as p = hi * 2^10 + lo,
 * cos/sin of hi * 2^10 * w_i and of lo * w_i come from float64 tables, and the angle-addition
 * formula joins them. Each factor is accurate to ~1e-16, so the result is too, while a whole
 * 4096-token prefill needs only a few Math.cos calls per frequency beyond the cached low table.
 * The join runs here (fillCosSin) or in the WASM kernel (kernels/wasm/angles.ts), bit-identically.
 *
 * 'hf-compatible' angles reproduce how HF transformers (and so training) computes them: the
 * position and w_i as float32, their product rounded to float32. At p = 2^20 that angle is off by
 * up to ~0.03 rad, but it is what the checkpoint saw. Its cos/sin are then taken exactly.
 */
import type { RopeFrequencies } from './scaling.js';

export type AngleMode = 'exact' | 'hf-compatible';

export const LOW_BITS = 10;
export const LOW_SIZE = 1 << LOW_BITS;

/** cos/sin tables in float64, `rows` rows of `half` values each: [rows][half] cos and [rows][half] sin. */
export interface CosSinTable {
  cos: Float64Array;
  sin: Float64Array;
}

const lowTables = new WeakMap<Float64Array, CosSinTable>();

/** cos/sin of lo * w_i for lo in [0, 1024); built once per frequency array (1 MiB at half = 64). */
export function lowTable(invFreq: Float64Array): CosSinTable {
  let table = lowTables.get(invFreq);
  if (!table) {
    const half = invFreq.length;
    table = { cos: new Float64Array(LOW_SIZE * half), sin: new Float64Array(LOW_SIZE * half) };
    for (let lo = 0; lo < LOW_SIZE; lo++) {
      for (let i = 0; i < half; i++) {
        const angle = lo * invFreq[i]!;
        table.cos[lo * half + i] = Math.cos(angle);
        table.sin[lo * half + i] = Math.sin(angle);
      }
    }
    lowTables.set(invFreq, table);
  }
  return table;
}

/** cos/sin of hi * 2^10 * w_i for each distinct hi among the positions, and each token's row. */
export function highTable(invFreq: Float64Array, positions: Int32Array): CosSinTable & { rows: number; rowOf: Int32Array } {
  const half = invFreq.length;
  const rowOf = new Int32Array(positions.length);
  const his: number[] = [];
  const seen = new Map<number, number>();
  for (let t = 0; t < positions.length; t++) {
    const hi = positions[t]! >>> LOW_BITS;
    let row = seen.get(hi);
    if (row === undefined) {
      row = his.length;
      his.push(hi);
      seen.set(hi, row);
    }
    rowOf[t] = row;
  }
  const cos = new Float64Array(his.length * half);
  const sin = new Float64Array(his.length * half);
  his.forEach((hi, row) => {
    for (let i = 0; i < half; i++) {
      const angle = hi * LOW_SIZE * invFreq[i]!;
      cos[row * half + i] = Math.cos(angle);
      sin[row * half + i] = Math.sin(angle);
    }
  });
  return { cos, sin, rows: his.length, rowOf };
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
  const high = highTable(invFreq, positions);
  for (let t = 0; t < positions.length; t++) {
    const l = (positions[t]! & (LOW_SIZE - 1)) * half;
    const h = high.rowOf[t]! * half;
    for (let i = 0; i < half; i++) {
      const cl = low.cos[l + i]!;
      const sl = low.sin[l + i]!;
      const ch = high.cos[h + i]!;
      const sh = high.sin[h + i]!;
      // cos(a + b) = cos a cos b - sin a sin b;  sin(a + b) = sin a cos b + cos a sin b
      out[t * row + i] = m * (ch * cl - sh * sl);
      out[t * row + half + i] = m * (sh * cl + ch * sl);
    }
  }
}
