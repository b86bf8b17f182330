/**
 * Causal multi-head attention over a KV cache in WASM SIMD (src/kernels/wasm/assembly/attention.ts,
 * built to build/attention.wasm), the same contract and validation as the reference `attention`
 * (src/ops/attention.ts): GQA head groups, Mistral's sliding window, per-token positions, scale
 * 1/sqrt(headDim), scores and probabilities rounded to scoresDtype / probsDtype via f32.
 *
 * Precision (see the kernel's header): q . k in f32 lanes, softmax in f64, the weighted sum of V
 * in f32 lanes. With sum|q k| the largest over visible keys and cnt visible positions,
 *     |out - exact| <= [(cnt + 3) * 2^-24 + 2 * Delta] * sum_j a_j |v_j|,
 *     Delta = (headDim / 4 + 8) * 2^-24 * scale * max_j sum_d |q_d k_jd|     (score error)
 * to first order (a score error Delta moves every a_j by a factor within e^(+-2 Delta)).
 *
 * Threads: rows (token, kv head) are split over the worker pool; a row computes all the query heads
 * of its kv head (GQA: each K/V row is read from memory once for the group), each whole on one
 * thread in an order that depends on headDim only, so results are bit-identical for any split or
 * batch (a multi-token call equals one call per token).
 *
 * Memory: keys.data and values.data must be views of the wasm heap (a KvCache with
 * storage 'wasm'); otherwise this delegates to the reference (copying a whole cache into the heap
 * on every call would cost more than it saves). A `record` (the numerics monitor's scores and
 * probabilities) is filled by the kernel as it goes, through heap scratch.
 * q, positions and out are copied through heap scratch unless q / out already are heap views.
 */
import type { DType } from '../../core/dtype.js';
import { attention, type AttentionParams, checkAttention } from '../../ops/attention.js';
import { wasmHeap } from './heap.js';
import { runRows, threadCount } from './pool.js';

const TYPE_CODE: Record<DType, number> = { f32: 0, f16: 1, bf16: 2 };

/** One heap block reused by every call (kernels are synchronous), grown by doubling. */
let scratchPtr = 0;
let scratchBytes = 0;

function ensureScratch(bytes: number): number {
  if (bytes > scratchBytes) {
    const heap = wasmHeap();
    if (scratchBytes > 0) heap.free(scratchPtr);
    const n = Math.max(bytes, 2 * scratchBytes);
    scratchPtr = heap.alloc(n, 64);
    scratchBytes = n;
  }
  return scratchPtr;
}

const up64 = (n: number): number => Math.ceil(n / 64) * 64;

const jobArgs: number[] = new Array<number>(22).fill(0);
const job = { kernel: 'attention', fn: 'attn_rows', args: jobArgs, rows: 0, rowWork: 0 };

/** out = attention(q, K, V) as `attention` (src/ops/attention.ts) computes it, in WASM SIMD. */
export function attentionWasm(p: AttentionParams): void {
  const maxPos = checkAttention(p);
  const heap = wasmHeap();
  const { out, q, keys, values, positions, nHeads, nKvHeads, headDim } = p;
  const kPtr = heap.ptrOf(keys.data);
  const vPtr = heap.ptrOf(values.data);
  if (kPtr === undefined || vPtr === undefined) {
    attention(p);
    return;
  }
  const tokens = positions.length;
  if (tokens === 0) return;
  const n = tokens * nHeads * headDim;
  const qIn = heap.ptrOf(q);
  const outIn = heap.ptrOf(out);
  const maxLen = maxPos + 1;
  const slots = threadCount();
  const group = nHeads / nKvHeads;
  // Per slot: group x maxLen f64 scores and f32 probabilities, one decoded K row and 32 decoded
  // V rows (the kernel's V_BLOCK) of headDim f32.
  const slotBytes = up64(group * maxLen * 12 + 33 * headDim * 4);
  // Scratch layout: positions, q copy, out, then one score/probability block per thread slot.
  const posOff = 0;
  const qOff = posOff + up64(tokens * 4);
  const outOff = qOff + (qIn === undefined ? up64(n * 4) : 0);
  const slotOff = outOff + (outIn === undefined ? up64(n * 4) : 0);
  // A probe's record: (tokens, nHeads, length) scores and probabilities, 0 where not attended.
  const record = p.record;
  const recN = record ? tokens * nHeads * p.length : 0;
  const recOff = slotOff + slots * slotBytes;
  const base = ensureScratch(recOff + 2 * up64(recN * 4));
  if (record) heap.u8(base + recOff, 2 * up64(recN * 4)).fill(0);
  new Int32Array(heap.buffer, base + posOff, tokens).set(positions);
  const qPtr = qIn ?? base + qOff;
  if (qIn === undefined) heap.f32(qPtr, n).set(q.length === n ? q : q.subarray(0, n));
  const outPtr = outIn ?? base + outOff;

  jobArgs[0] = qPtr;
  jobArgs[1] = outPtr;
  jobArgs[2] = kPtr;
  jobArgs[3] = vPtr;
  jobArgs[4] = keys.headStride;
  jobArgs[5] = values.headStride;
  jobArgs[6] = base + posOff;
  jobArgs[7] = nHeads;
  jobArgs[8] = group;
  jobArgs[9] = headDim;
  jobArgs[10] = p.window ?? 0;
  jobArgs[11] = 1 / Math.sqrt(headDim);
  jobArgs[12] = TYPE_CODE[keys.dtype];
  jobArgs[13] = TYPE_CODE[values.dtype];
  jobArgs[14] = TYPE_CODE[p.scoresDtype ?? 'f32'];
  jobArgs[15] = TYPE_CODE[p.probsDtype ?? 'f32'];
  jobArgs[16] = base + slotOff;
  jobArgs[17] = slotBytes;
  jobArgs[18] = maxLen;
  jobArgs[19] = record ? base + recOff : 0;
  jobArgs[20] = record ? base + recOff + up64(recN * 4) : 0;
  jobArgs[21] = p.length;
  job.rows = tokens * nKvHeads;
  // Work of the longest row: a dot and a weighted sum per visible position and query head.
  job.rowWork = 2 * maxLen * headDim * group;
  runRows(job);
  if (outIn === undefined) out.set(heap.f32(outPtr, n));
  if (record) {
    record.scores.set(heap.f32(base + recOff, recN));
    record.probs.set(heap.f32(base + recOff + up64(recN * 4), recN));
  }
}
