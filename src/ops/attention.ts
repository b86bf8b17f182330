/**
 * Causal multi-head attention over a KV cache, for a chunk of new tokens, the reference kernel
 * (Vaswani et al. 2017; grouped-query attention, Ainslie et al. 2023). For token t at position p_t
 * and query head h, with kv head g = floor(h / (nHeads / nKvHeads)) (HF's repeat_kv):
 *
 *     lo   = max(0, p_t - window + 1)          (0 without a window)
 *     s_j  = (q[t, h] . K[g, j]) / sqrt(headDim)                 j in [lo, p_t]
 *     a    = softmax(s)                                          (max subtracted)
 *     out[t, h] = sum_j a_j V[g, j]
 *
 * The window is Mistral's: a token attends to the last `window` positions, itself included
 * (key j is visible when p_t - window < j <= p_t). Keys and values for every position up to p_t
 * must already be in the cache, this chunk's included.
 *
 * Precision: q is f32, K and V are f32 or f16 (decoded exactly). Dot products, softmax and the
 * weighted sum of V all accumulate in float64 (JS numbers); each output is rounded once to f32.
 */
import { type DType, DTYPES, f16BitsToNumber, roundTo } from '../core/dtype.js';
import { fail } from '../core/errors.js';

/**
 * One layer's keys or values: element (kvHead, position, d) at
 * data[kvHead * headStride + position * headDim + d].
 */
export interface KvView {
  readonly dtype: 'f32' | 'f16';
  readonly data: Float32Array | Uint16Array;
  /** elements between consecutive kv heads (>= positions held * headDim) */
  readonly headStride: number;
}

export interface AttentionParams {
  /** (tokens, nHeads, headDim); must not overlap q */
  out: Float32Array;
  /** (tokens, nHeads, headDim), already rotated */
  q: Float32Array;
  keys: KvView;
  values: KvView;
  /** (tokens): the position of each new token */
  positions: Int32Array;
  /** positions the cache holds: every position must be < length */
  length: number;
  nHeads: number;
  nKvHeads: number;
  headDim: number;
  /** attend to the last `window` positions only (itself included); absent: all earlier positions */
  window?: number;
  /** float64 scratch of at least (max position + 1) + headDim values; allocated when absent */
  scratch?: Float64Array;
  /**
   * store the scores (after scaling) and the probabilities in this dtype, as an engine holding them
   * in f16 would: each is rounded to f32, then to the dtype (default f32: kept in float64)
   */
  scoresDtype?: DType;
  probsDtype?: DType;
  /** when given, receives the scores and probabilities as (tokens, nHeads, length); masked positions hold 0 */
  record?: { scores: Float32Array; probs: Float32Array };
}

/**
 * Checks every argument (shapes, positions, overlap, dtypes) before anything is read; returns the
 * largest position. The WASM kernel runs the same checks.
 */
export function checkAttention(p: AttentionParams): number {
  const { out, q, keys, values, positions, length, nHeads, nKvHeads, headDim, window, record } = p;
  const tokens = positions.length;
  if (![nHeads, nKvHeads, headDim].every((n) => Number.isInteger(n) && n > 0) || nHeads % nKvHeads !== 0) {
    fail('shape', `attention: invalid heads ${nHeads}/${nKvHeads} or headDim ${headDim}`);
  }
  const width = nHeads * headDim;
  if (q.length < tokens * width || out.length < tokens * width) fail('shape', `attention: q and out need ${tokens} x ${width} values, have ${q.length} and ${out.length}`);
  if (out.buffer === q.buffer && out.byteOffset < q.byteOffset + q.byteLength && q.byteOffset < out.byteOffset + out.byteLength) {
    fail('layout', 'attention: out overlaps q');
  }
  if (window !== undefined && (!Number.isInteger(window) || window < 1)) fail('shape', `attention: window must be a positive integer, got ${window}`);
  let maxPos = 0;
  for (let t = 0; t < tokens; t++) {
    const pos = positions[t]!;
    if (pos < 0 || pos >= length) fail('shape', `attention: position ${pos} of token ${t} is outside the ${length} cached positions`);
    maxPos = Math.max(maxPos, pos);
  }
  for (const [name, kv] of [['keys', keys], ['values', values]] as const) {
    if (kv.headStride < length * headDim || kv.data.length < (nKvHeads - 1) * kv.headStride + length * headDim) {
      fail('shape', `attention: ${name} hold fewer than ${length} positions of ${nKvHeads} x ${headDim}`);
    }
    if (kv.dtype !== 'f32' && kv.dtype !== 'f16') fail('dtype', `attention: ${name} dtype ${String(kv.dtype)} is not f32 or f16`);
  }
  for (const d of [p.scoresDtype, p.probsDtype]) {
    if (d !== undefined && !DTYPES.includes(d)) fail('dtype', `attention: unknown dtype ${String(d)}`);
  }
  if (record && (record.scores.length < tokens * nHeads * length || record.probs.length < tokens * nHeads * length)) {
    fail('shape', `attention: record needs ${tokens} x ${nHeads} x ${length} values`);
  }
  return maxPos;
}

export function attention(p: AttentionParams): void {
  const { out, q, keys, values, positions, length, nHeads, nKvHeads, headDim, window, record } = p;
  const scoresDtype = p.scoresDtype ?? 'f32';
  const probsDtype = p.probsDtype ?? 'f32';
  const tokens = positions.length;
  const maxPos = checkAttention(p);
  let scratch = p.scratch;
  if (scratch === undefined || scratch.length < maxPos + 1 + headDim) scratch = new Float64Array(maxPos + 1 + headDim);
  const scores = scratch;
  const acc = scratch.subarray(maxPos + 1, maxPos + 1 + headDim);

  const group = nHeads / nKvHeads;
  const scale = 1 / Math.sqrt(headDim);
  const kd = keys.data;
  const vd = values.data;
  const k16 = keys.dtype === 'f16';
  const v16 = values.dtype === 'f16';
  for (let t = 0; t < tokens; t++) {
    const pos = positions[t]!;
    const lo = window === undefined ? 0 : Math.max(0, pos - window + 1);
    const n = pos - lo + 1;
    for (let h = 0; h < nHeads; h++) {
      const qo = (t * nHeads + h) * headDim;
      const g = Math.floor(h / group);
      // Recorded rows are (token, head, position); positions outside the visible span hold 0.
      const ro = (t * nHeads + h) * length;
      if (record) {
        record.scores.fill(0, ro, ro + length);
        record.probs.fill(0, ro, ro + length);
      }
      // Scores against every visible key, scaled.
      let max = -Infinity;
      for (let j = 0; j < n; j++) {
        const ko = g * keys.headStride + (lo + j) * headDim;
        let s = 0;
        for (let d = 0; d < headDim; d++) s += q[qo + d]! * (k16 ? f16BitsToNumber(kd[ko + d]!) : kd[ko + d]!);
        s *= scale;
        if (scoresDtype !== 'f32') s = roundTo(scoresDtype, Math.fround(s));
        scores[j] = s;
        if (record) record.scores[ro + lo + j] = s;
        if (s > max) max = s;
      }
      // Softmax with the maximum subtracted.
      let sum = 0;
      for (let j = 0; j < n; j++) {
        const e = Math.exp(scores[j]! - max);
        scores[j] = e;
        sum += e;
      }
      // Weighted sum of the values.
      acc.fill(0);
      for (let j = 0; j < n; j++) {
        let a = scores[j]! / sum;
        if (probsDtype !== 'f32') a = roundTo(probsDtype, Math.fround(a));
        if (record) record.probs[ro + lo + j] = a;
        const vo = g * values.headStride + (lo + j) * headDim;
        for (let d = 0; d < headDim; d++) acc[d] += a * (v16 ? f16BitsToNumber(vd[vo + d]!) : vd[vo + d]!);
      }
      for (let d = 0; d < headDim; d++) out[qo + d] = acc[d]!;
    }
  }
}
