/**
 * Quantized matmul on the wasm heap (kernel: src/kernels/wasm/assembly/matmul_quant.ts, built to
 * build/matmul_quant.wasm): out (tokens, rows) = x (tokens, cols) . W^T for GGUF Q8_0, Q4_0, Q4_K
 * and Q6_K weights.
 *
 * Weights are repacked once with packQuantMatrix into the kernel's layout (see the kernel's header):
 * block scales as f32 (times a power of two), quants transposed within each 16 bytes so that one
 * shift and one mask give 4 lanes in x order, Q4_K's 6-bit scales and mins unpacked to bytes, Q6_K's
 * quants widened to bytes, Q8_0's rows interleaved by 4. Packed sizes per ggml block: Q8_0 36 B
 * (ggml 34), Q4_0 20 B (18), Q4_K 152 B (144), Q6_K 276 B (210). Activations stay f32: the kernel
 * converts the integer lanes to f32 exactly and multiplies-adds them with x in f32, applying the
 * block (sub-block) scales to the partial sums (and the K-quant constant parts to sums of x).
 * Every token takes the same arithmetic (batch invariance: a token's output does not depend on the
 * other tokens of the call or on how rows are split over threads); for Q8_0 (Q4_K) with tokens > 1
 * each 4-row group (row) is converted to f32 once per call (per tile of 8 tokens) and reused by every
 * token (same sums, bit for bit).
 *
 * Accuracy against the float64 reference (`linear` / dotQuantRow): the quants and (sub-)block scales
 * are exact in f32 (d*sc and dmin*m are products of at most 11 x 8 bits; the 2^-24 / 2^-28 factors
 * are exact), so the error is the f32 rounding of the products and of short sums (4 lanes per
 * block, then across blocks): a few ulps of sum_i |w_i x_i| (Q4_K: of sum |d sc q x| + |dmin m x|,
 * which can exceed it where the two parts cancel, as in ggml's own formula). Q4_K multiplies with x
 * pre-scaled by 2^-4j (j < 7), exact unless |x| < 2^-98 (subnormal; far below any activation).
 * The tests require < 1e-6 x sum_i |w_i x_i| + 1e-30 (about 17 f32 ulps). |x| must stay below
 * 2^90 (the lanes carry up to 2^28 until scaled).
 *
 * Output rows are split over the worker pool (runRows). A decode call (tokens = 1) allocates nothing
 * once its heap scratch has grown to size.
 */
import type { QuantizedMatrix } from '../../ops/linear.js';
import { f16BitsToNumber } from '../../core/dtype.js';
import { wasmHeap } from './heap.js';
import type { PackedMatrix, PackedType } from './packed.js';
import { runRows, threadCount } from './pool.js';

export type PackedQuantType = Extract<PackedType, 'Q8_0' | 'Q4_0' | 'Q4_K' | 'Q6_K'>;
export const PACKED_QUANT_TYPES: readonly PackedQuantType[] = ['Q8_0', 'Q4_0', 'Q4_K', 'Q6_K'];

const KERNEL = 'matmul_quant';

interface QuantInfo {
  block: number;
  /** rows interleaved per group (the kernel's row index counts groups) */
  group: number;
  /** bytes of one ggml block */
  blockBytes: number;
  /** bytes of one repacked block */
  packedBytes: number;
  fn: string;
  /** ggml block at src[s..] -> repacked block at dst[d..] (f32 fields through dv, little-endian) */
  repack: (src: Uint8Array, s: number, dst: Uint8Array, dv: DataView, d: number) => void;
}

function f16At(b: Uint8Array, o: number): number {
  return f16BitsToNumber(b[o]! | (b[o + 1]! << 8));
}

/**
 * 16 quants -> 16 bytes: lane k (bytes 4k..4k+3) holds elements k, 4 + k, 8 + k, 12 + k in its bytes
 * 0..3, so group j is byte j of every lane (one shift and mask in the kernel, lanes in x order).
 */
function transposeBytes16(q: (e: number) => number, dst: Uint8Array, d: number): void {
  for (let k = 0; k < 4; k++) for (let j = 0; j < 4; j++) dst[d + 4 * k + j] = q(4 * j + k) & 0xff;
}

/** 32 signed nibbles -> 16 bytes: lane k holds element 4j + k in bits 4j..4j+3 (j = 0..7). */
function transposeNibbles32(q: (e: number) => number, dst: Uint8Array, d: number): void {
  for (let k = 0; k < 4; k++) {
    for (let j = 0; j < 8; j += 2) dst[d + 4 * k + (j >> 1)] = (q(4 * j + k) & 15) | ((q(4 * (j + 1) + k) & 15) << 4);
  }
}

const TWO_M24 = 2 ** -24;
const TWO_M28 = 2 ** -28;

function repackQ8_0(src: Uint8Array, s: number, dst: Uint8Array, dv: DataView, d: number): void {
  dv.setFloat32(d, f16At(src, s) * TWO_M24, true);
  for (let h = 0; h < 2; h++) transposeBytes16((e) => src[s + 2 + 16 * h + e]!, dst, d + 4 + 16 * h);
}

function repackQ4_0(src: Uint8Array, s: number, dst: Uint8Array, dv: DataView, d: number): void {
  dv.setFloat32(d, f16At(src, s) * TWO_M28, true);
  // element e < 16: low nibble of qs[e], else the high nibble of qs[e - 16]; q ^ 8 = q - 8 as a signed nibble
  transposeNibbles32((e) => (e < 16 ? src[s + 2 + e]! & 15 : src[s + 2 + e - 16]! >> 4) ^ 8, dst, d + 4);
}

function kScale(b: Uint8Array, o: number, j: number): number {
  return j < 4 ? b[o + j]! & 63 : (b[o + j + 4]! & 15) | ((b[o + j - 4]! >> 6) << 4);
}

function kMin(b: Uint8Array, o: number, j: number): number {
  return j < 4 ? b[o + j + 4]! & 63 : (b[o + j + 4]! >> 4) | ((b[o + j]! >> 6) << 4);
}

function repackQ4_K(src: Uint8Array, s: number, dst: Uint8Array, dv: DataView, d: number): void {
  dv.setFloat32(d, f16At(src, s), true);
  dv.setFloat32(d + 4, f16At(src, s + 2), true);
  for (let j = 0; j < 8; j++) {
    dst[d + 8 + j] = kScale(src, s + 4, j);
    dst[d + 16 + j] = kMin(src, s + 4, j);
  }
  // sub-block j = 2c (+1): low (high) nibbles of qs[32c .. 32c + 32)
  for (let j = 0; j < 8; j++) {
    const qs = s + 16 + 32 * (j >> 1);
    const shift = (j & 1) * 4;
    transposeNibbles32((e) => (src[qs + e]! >> shift) & 15, dst, d + 24 + 16 * j);
  }
}

function repackQ6_K(src: Uint8Array, s: number, dst: Uint8Array, dv: DataView, d: number): void {
  dv.setFloat32(d, f16At(src, s + 208) * TWO_M24, true);
  for (let i = 0; i < 16; i++) dst[d + 4 + i] = src[s + 192 + i]!;
  // element e = 128h + 32k + l: low 4 bits from the low (k < 2) or high (k >= 2) nibble of
  // ql[64h + 32(k & 1) + l], high 2 bits are bits 2k..2k+1 of qh[32h + l]; stored as the int8 q - 32
  const q6 = (e: number): number => {
    const h = e >> 7;
    const k = (e >> 5) & 3;
    const l = e & 31;
    const ql = src[s + 64 * h + 32 * (k & 1) + l]!;
    const lo = k < 2 ? ql & 15 : ql >> 4;
    const hi = (src[s + 128 + 32 * h + l]! >> (2 * k)) & 3;
    return (lo | (hi << 4)) - 32;
  };
  for (let g = 0; g < 16; g++) transposeBytes16((e) => q6(16 * g + e), dst, d + 20 + 16 * g);
}

const INFO: Record<PackedQuantType, QuantInfo> = {
  Q8_0: { block: 32, group: 4, blockBytes: 34, packedBytes: 36, fn: 'matmul_q8_0', repack: repackQ8_0 },
  Q4_0: { block: 32, group: 1, blockBytes: 18, packedBytes: 20, fn: 'matmul_q4_0', repack: repackQ4_0 },
  Q4_K: { block: 256, group: 1, blockBytes: 144, packedBytes: 152, fn: 'matmul_q4_k', repack: repackQ4_K },
  Q6_K: { block: 256, group: 1, blockBytes: 210, packedBytes: 276, fn: 'matmul_q6_k', repack: repackQ6_K },
};

function isPackedQuantType(t: unknown): t is PackedQuantType {
  return typeof t === 'string' && Object.hasOwn(INFO, t);
}

/** Bytes of one ggml row of `cols` elements of `type` (the QuantizedMatrix's rowBytes). */
export function packedQuantRowBytes(type: PackedQuantType, cols: number): number {
  const info = INFO[type];
  return (cols / info.block) * info.blockBytes;
}

/** Bytes of one repacked row (the kernel layout) of `cols` elements of `type`. */
export function repackedQuantRowBytes(type: PackedQuantType, cols: number): number {
  const info = INFO[type];
  return (cols / info.block) * info.packedBytes;
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
  const srcBytes = rows * rowBytes;
  if (w.data.byteLength < srcBytes) throw new RangeError(`packQuantMatrix: data holds ${w.data.byteLength} bytes, need ${srcBytes}`);
  const groups = Math.ceil(rows / info.group);
  const blocks = (groups * info.group * cols) / info.block;
  const bytes = blocks * info.packedBytes;
  const heap = wasmHeap();
  // 16 spare bytes: no kernel load reaches past its block today, but keep v128 loads safe anyway.
  const ptr = heap.alloc(bytes + 16, 64);
  const dst = heap.u8(ptr, bytes);
  const dv = new DataView(dst.buffer, dst.byteOffset, bytes);
  const src = w.data;
  if (info.group === 1) {
    for (let b = 0; b < blocks; b++) info.repack(src, b * info.blockBytes, dst, dv, b * info.packedBytes);
  } else {
    // Groups of 4 rows, block by block: f32 d of each row, then per half of 16 the rows' 16 bytes.
    // The last group's missing rows stay zero (their sums are never stored).
    dst.fill(0);
    const nb = cols / info.block;
    for (let g = 0; g < groups; g++) {
      for (let b = 0; b < nb; b++) {
        const d = (g * nb + b) * 4 * info.packedBytes;
        for (let i = 0; i < 4 && 4 * g + i < rows; i++) {
          const s = (4 * g + i) * rowBytes + b * info.blockBytes;
          dv.setFloat32(d + 4 * i, f16At(src, s) * TWO_M24, true);
          for (let h = 0; h < 2; h++) transposeBytes16((e) => src[s + 2 + 16 * h + e]!, dst, d + 16 + 64 * h + 16 * i);
        }
      }
    }
  }
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
  // per-thread scratch: Q4_K's scaled x, sums of x, masks and block scales (4.125 cols + 144 bytes),
  // or Q8_0's converted 4-row group when tokens > 1 (16 cols bytes)
  // or Q4_K's masks, scales, a converted row and a tile of 8 tokens' prepared x (37.125 cols + 144)
  const rowStride = (w.type === 'Q8_0' ? cols * 16 : w.type === 'Q4_K' ? cols * 38 : cols * 5) + 256;
  const xPtr = ensure(xBuf, nx * 4);
  const outPtr = ensure(outBuf, nout * 4);
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
  const group = INFO[w.type].group;
  job.rows = Math.ceil(rows / group);
  job.rowWork = group * cols * tokens;
  runRows(job);
  const result = viewOf(outViews, buffer, outPtr, nout);
  out.set(result);
}
