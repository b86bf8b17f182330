/**
 * Quantized matmul on the wasm heap (kernel: src/kernels/wasm/assembly/matmul_quant.ts, built to
 * build/matmul_quant.wasm): out (tokens, rows) = x (tokens, cols) . W^T for GGUF Q8_0, Q4_0, Q4_K
 * and Q6_K weights.
 *
 * Weights are packed once with packQuantMatrix (the ggml blocks copied into the wasm heap, row-major,
 * blocks in their original order). Activations stay f32: the kernel widens each group of 16 quants to
 * f32 lanes and multiplies-adds them with x in f32, applying the block (sub-block) scales to the
 * partial sums (and the K-quant mins to the sub-block sums of x). For tokens > 1 each weight row is
 * dequantized once (ggml's exact f32 values) into per-thread scratch and dotted with every token, so
 * the weights are streamed once per call.
 *
 * Accuracy against the float64 reference (`linear` / dotQuantRow): f32 products and f32 accumulation
 * in short partial sums (4 lanes, per block, then across blocks). Measured on random 256 x 4096
 * matrices, tokens 1 and 4, every type: max |out - ref| <= 2e-8 x sum_i |w_i x_i| (up to ~4e-4 of
 * |ref| where the sum cancels). The tests require < 1e-6 x sum_i |w_i x_i| + 1e-30.
 *
 * Output rows are split over the worker pool (runRows). A decode call (tokens = 1) allocates nothing
 * once its heap scratch has grown to size.
 */
import type { QuantizedMatrix } from '../../ops/linear.js';
import { wasmHeap } from './heap.js';
import type { PackedMatrix, PackedType } from './packed.js';
import { runRows, threadCount } from './pool.js';

export type PackedQuantType = Extract<PackedType, 'Q8_0' | 'Q4_0' | 'Q4_K' | 'Q6_K'>;
export const PACKED_QUANT_TYPES: readonly PackedQuantType[] = ['Q8_0', 'Q4_0', 'Q4_K', 'Q6_K'];

const KERNEL = 'matmul_quant';

interface QuantInfo {
  block: number;
  blockBytes: number;
  fn: string;
}

const INFO: Record<PackedQuantType, QuantInfo> = {
  Q8_0: { block: 32, blockBytes: 34, fn: 'matmul_q8_0' },
  Q4_0: { block: 32, blockBytes: 18, fn: 'matmul_q4_0' },
  Q4_K: { block: 256, blockBytes: 144, fn: 'matmul_q4_k' },
  Q6_K: { block: 256, blockBytes: 210, fn: 'matmul_q6_k' },
};

function isPackedQuantType(t: unknown): t is PackedQuantType {
  return typeof t === 'string' && Object.hasOwn(INFO, t);
}

/** Bytes of one packed row of `cols` elements of `type`. */
export function packedQuantRowBytes(type: PackedQuantType, cols: number): number {
  const info = INFO[type];
  return (cols / info.block) * info.blockBytes;
}

/**
 * Copies a GGUF-quantized matrix (Q8_0, Q4_0, Q4_K or Q6_K) into the wasm heap, once. The layout is
 * the ggml blocks, row after row (rowBytes = blocks x blockBytes, no padding). Free it with
 * freePacked when the matrix is dropped.
 */
export function packQuantMatrix(w: QuantizedMatrix): PackedMatrix {
  if (!isPackedQuantType(w.type)) throw new TypeError(`packQuantMatrix: type ${String(w.type)} is not one of ${PACKED_QUANT_TYPES.join(', ')}`);
  const info = INFO[w.type];
  const { rows, cols } = w;
  if (!Number.isInteger(rows) || rows < 0 || rows > 0x7fffffff) throw new RangeError(`packQuantMatrix: bad rows ${rows}`);
  if (!Number.isInteger(cols) || cols <= 0 || cols % info.block !== 0 || cols > 0x1fffffff) {
    throw new RangeError(`packQuantMatrix: ${w.type} cols must be a positive multiple of ${info.block}, got ${cols}`);
  }
  const rowBytes = packedQuantRowBytes(w.type, cols);
  if (w.rowBytes !== rowBytes) throw new RangeError(`packQuantMatrix: ${w.type} rows of ${cols} take ${rowBytes} bytes, the matrix says ${w.rowBytes}`);
  const bytes = rows * rowBytes;
  if (w.data.byteLength < bytes) throw new RangeError(`packQuantMatrix: data holds ${w.data.byteLength} bytes, need ${bytes}`);
  const heap = wasmHeap();
  // 16 spare bytes: no kernel load reaches past its block today, but keep v128 loads safe anyway.
  const ptr = heap.alloc(bytes + 16, 64);
  heap.u8(ptr, bytes).set(w.data.subarray(0, bytes));
  return { kind: 'packed', type: w.type, rows, cols, ptr, bytes };
}

/** Returns a packed matrix's heap memory. */
export function freePacked(w: PackedMatrix): void {
  wasmHeap().free(w.ptr);
}

/** A reusable heap buffer; grows (never shrinks). */
interface Scratch {
  ptr: number;
  bytes: number;
}

const xBuf: Scratch = { ptr: 0, bytes: 0 };
const outBuf: Scratch = { ptr: 0, bytes: 0 };
const rowBuf: Scratch = { ptr: 0, bytes: 0 };

function ensure(s: Scratch, bytes: number): number {
  if (bytes > s.bytes) {
    const heap = wasmHeap();
    if (s.bytes > 0) heap.free(s.ptr);
    s.ptr = heap.alloc(bytes, 64);
    s.bytes = bytes;
  }
  return s.ptr;
}

// Exact-length views over the scratch, keyed by length; dropped when the memory grew or the scratch moved.
let viewBuffer: ArrayBufferLike | undefined;
let viewX = 0;
let viewOut = 0;
const xViews = new Map<number, Float32Array>();
const outViews = new Map<number, Float32Array>();

function viewOf(views: Map<number, Float32Array>, buffer: ArrayBufferLike, ptr: number, n: number): Float32Array {
  let v = views.get(n);
  if (v === undefined) {
    if (views.size >= 32) views.clear();
    v = new Float32Array(buffer, ptr, n);
    views.set(n, v);
  }
  return v;
}

/** The kernel's argument list and the job, reused between calls (runRows copies them into shared memory). */
const args: number[] = [0, 0, 0, 0, 0, 0, 0, 0];
const job = { kernel: KERNEL, fn: '', args, rows: 0, rowWork: 0 };

/**
 * out (tokens, rows) = x (tokens, cols) . W^T with W the packed Q8_0/Q4_0/Q4_K/Q6_K matrix, x and out
 * ordinary Float32Arrays (x is copied into heap scratch, the result copied back). `out` must not
 * overlap `x`.
 */
export function matmulQuant(out: Float32Array, x: Float32Array, tokens: number, w: PackedMatrix): void {
  if (!isPackedQuantType(w.type)) throw new TypeError(`matmulQuant: type ${w.type} is not one of ${PACKED_QUANT_TYPES.join(', ')}`);
  const { rows, cols } = w;
  if (!Number.isInteger(tokens) || tokens < 0) throw new RangeError(`matmulQuant: tokens must be a non-negative integer, got ${tokens}`);
  const nx = tokens * cols;
  const nout = tokens * rows;
  if (x.length < nx) throw new RangeError(`matmulQuant: x holds ${x.length} values, need ${tokens} x ${cols}`);
  if (out.length < nout) throw new RangeError(`matmulQuant: out holds ${out.length} values, need ${tokens} x ${rows}`);
  if (tokens === 0 || rows === 0) return;
  if (nx * 4 > 0x7fffffff || nout * 4 > 0x7fffffff) throw new RangeError('matmulQuant: operands exceed 2 GiB');

  const heap = wasmHeap();
  const threads = threadCount();
  const rowStride = cols * 4;
  const xPtr = ensure(xBuf, nx * 4);
  const outPtr = ensure(outBuf, nout * 4);
  // Per-thread scratch: a dequantized row (tokens > 1) or Q4_K's sums of x (tokens = 1; cols / 8 + 64 bytes).
  const rowPtr = ensure(rowBuf, rowStride * threads);
  const buffer = heap.memory.buffer;
  if (buffer !== viewBuffer || viewX !== xPtr || viewOut !== outPtr) {
    viewBuffer = buffer;
    viewX = xPtr;
    viewOut = outPtr;
    xViews.clear();
    outViews.clear();
  }
  viewOf(xViews, buffer, xPtr, nx).set(nx === x.length ? x : x.subarray(0, nx));

  args[0] = w.ptr;
  args[1] = cols;
  args[2] = xPtr;
  args[3] = tokens;
  args[4] = outPtr;
  args[5] = rows;
  args[6] = rowPtr;
  args[7] = rowStride;
  job.fn = INFO[w.type].fn;
  job.rows = rows;
  job.rowWork = cols * (tokens > 1 ? tokens + 1 : 1);
  runRows(job);
  const result = viewOf(outViews, buffer, outPtr, nout);
  out.set(result);
}
