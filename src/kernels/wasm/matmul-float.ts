/**
 * Float weight matrices (f32, f16, bf16) in the wasm heap and their SIMD matrix product
 * (src/kernels/wasm/assembly/matmul_float.ts, built to build/matmul_float.wasm):
 *
 *     out[t * rows + o] = sum_{i < cols} x[t * cols + i] * W[o, i]        t < tokens, o < rows
 *
 * the same contract as the reference `linear` (src/ops/linear.ts), which accumulates in float64.
 *
 * Packing (once, at load): rows in groups of 4, columns in blocks of 8 (zero padded), each
 * group one sequential stream (see the kernel's header). f16/bf16 weights are decoded exactly in
 * SIMD lanes (bf16: one shift or mask; f16: shift + mask with x prescaled by 2^112 while
 * max|x| < 2^16, else, or when the matrix holds f16 inf/NaN, a full decode).
 *
 * Accuracy: products are exact-then-rounded f32, sums accumulate in f32 lanes (chains of at
 * most cp/4 terms, cp = cols rounded up to 8, then a 3-level reduction), so
 *     |out - exact| <= (cp/4 + 4) * 2^-24 * sum_i |x_i * W[o, i]|   (first order, worst case);
 * measured on random data it is 2e-8 .. 5e-8 of sum |x_i W[o,i]| (cols 4096 and 11008; the tests
 * assert <= 2e-6 on model shapes). Relative to the output itself the error is larger where the sum
 * cancels (|out| << sum |x_i W[o,i]|): up to ~2e-4 on random zero-mean data, as with any f32
 * accumulation; a float64 reference with an elementwise relative bound must allow for that.
 *
 * Threads: output rows (in groups of 4) are split over the worker pool (pool.ts).
 * A call allocates nothing once its heap scratch (x and out, grown as needed) is big enough
 * (and x holds exactly tokens * cols values when cols is a multiple of 8).
 */
import { fail } from '../../core/errors.js';
import type { Tensor } from '../../core/tensor.js';
import { loadKernel, wasmHeap } from './heap.js';
import type { PackedMatrix } from './packed.js';
import { runRows, threadCount } from './pool.js';

export type FloatType = 'f32' | 'f16' | 'bf16';

const TYPE_CODE: Record<FloatType, number> = { f32: 0, f16: 1, bf16: 2 };
/** 2^112: f16 raw decode rebias carried by x. */
const F16_PRESCALE = 2 ** 112;
/** x values must stay below this in magnitude for the prescaled f16 path (x * 2^112 < 2^128). */
const F16_FAST_LIMIT = 65536;

interface FloatInfo {
  /** cols rounded up to a multiple of 8 */
  cp: number;
  code: number;
  /** f16 matrix holding an inf or NaN: always the exact decode */
  f16Special: boolean;
}

/** Packing details of the matrices made here (PackedMatrix itself stays the shared plain type). */
const infos = new WeakMap<PackedMatrix, FloatInfo>();

/** Matrices given back with freeFloatMatrix (their objects must not be used again). */
const freed = new WeakSet<PackedMatrix>();

/**
 * The packing details of `w`: recorded by packFloatMatrix, or, for another object describing the
 * same heap data (a copy such as { ...packed }), derived from its fields once (f16: one scan for
 * inf/NaN) and cached.
 */
function floatInfo(w: PackedMatrix): FloatInfo {
  const known = infos.get(w);
  if (known) return known;
  const type = w.type as FloatType;
  const code = TYPE_CODE[type];
  if (freed.has(w) || code === undefined || w.bytes !== packedFloatBytes(type, w.rows, w.cols)) {
    fail('layout', `matmulFloat: ${w.type} [${w.rows}, ${w.cols}] was not packed by packFloatMatrix (or was freed)`);
  }
  let f16Special = false;
  if (type === 'f16') {
    const h = wasmHeap().u16(w.ptr, w.bytes / 2);
    for (let i = 0; i < h.length && !f16Special; i++) f16Special = (h[i]! & 0x7c00) === 0x7c00;
  }
  const info = { cp: Math.ceil(w.cols / 8) * 8, code, f16Special };
  infos.set(w, info);
  return info;
}

interface PackKernel {
  pack_f32(src: number, dst: number, rows: number, cols: number): void;
  pack_16(src: number, dst: number, rows: number, cols: number): number;
}

/** Packed bytes of a rows x cols matrix: (rows rounded up to 4) x (cols rounded up to 8) elements. */
export function packedFloatBytes(type: FloatType, rows: number, cols: number): number {
  return Math.ceil(rows / 4) * 4 * Math.ceil(cols / 8) * 8 * (type === 'f32' ? 4 : 2);
}

/**
 * Copies a 2-D contiguous (out, in) f32/f16/bf16 tensor into the wasm heap in the kernel's layout.
 * The copy is independent of the tensor (free it with freeFloatMatrix).
 */
export function packFloatMatrix(w: Tensor): PackedMatrix {
  if (w.rank !== 2) fail('shape', `packFloatMatrix: a weight matrix must be 2-D, got shape [${w.shape.join(', ')}]`);
  if (!w.isContiguous) fail('layout', 'packFloatMatrix: the weight must be contiguous');
  const type = w.dtype as FloatType;
  const code = TYPE_CODE[type];
  if (code === undefined) fail('dtype', `packFloatMatrix: unsupported dtype ${String(w.dtype)}`);
  const rows = w.shape[0]!;
  const cols = w.shape[1]!;
  const cp = Math.ceil(cols / 8) * 8;
  const bytes = packedFloatBytes(type, rows, cols);
  const heap = wasmHeap();
  const elemBytes = type === 'f32' ? 4 : 2;
  const srcBytes = rows * cols * elemBytes;
  // A source already in the heap (a load's staging region, see PackStaging) is permuted in place;
  // any other is first copied into heap scratch (a fast memcpy), freed right after.
  const inHeap = heap.ptrOf(w.data);
  const ptr = heap.alloc(Math.max(bytes, 16), 64);
  let tmp: number | undefined;
  let f16Special = false;
  try {
    if (inHeap === undefined) tmp = heap.alloc(Math.max(srcBytes, 16), 64);
    // The buffer after the last alloc (an alloc may grow the memory).
    const mem = heap.buffer;
    new Uint8Array(mem, ptr, bytes).fill(0);
    if (tmp !== undefined) new Uint8Array(mem, tmp, srcBytes).set(new Uint8Array(w.data.buffer, w.data.byteOffset + w.offset * elemBytes, srcBytes));
    const src = tmp ?? inHeap! + w.offset * elemBytes;
    // The permutation runs in wasm SIMD into the zeroed destination (padding stays zero); a JS loop is ~10x slower.
    const k = loadKernel('matmul_float').exports as unknown as PackKernel;
    if (type === 'f32') k.pack_f32(src, ptr, rows, cols);
    else f16Special = k.pack_16(src, ptr, rows, cols) === 1 && type === 'f16';
  } catch (err) {
    heap.free(ptr);
    throw err;
  } finally {
    if (tmp !== undefined) heap.free(tmp);
  }
  const m: PackedMatrix = Object.freeze({ kind: 'packed' as const, type, rows, cols, ptr, bytes });
  infos.set(m, { cp, code, f16Special });
  return m;
}

/** Returns a packed matrix's heap memory; the matrix must not be used afterwards. */
export function freeFloatMatrix(w: PackedMatrix): void {
  floatInfo(w);
  infos.delete(w);
  freed.add(w);
  wasmHeap().free(w.ptr);
}

/** Heap scratch for x and out, shared by every call (kernels are synchronous), grown as needed. */
interface Scratch {
  /** per-thread f32 tiles of a decoded row group (multi-token f16/bf16) */
  tilePtr: number;
  tileBytes: number;
  xPtr: number;
  xBytes: number;
  outPtr: number;
  outBytes: number;
  buffer: SharedArrayBuffer | null;
  x: Float32Array;
  out: Float32Array;
  /** out[0, n) views by n, so that copying the result back allocates nothing (a model has few shapes) */
  outViews: Map<number, Float32Array>;
}
const scratch: Scratch = { tilePtr: 0, tileBytes: 0, xPtr: 0, xBytes: 0, outPtr: 0, outBytes: 0, buffer: null, x: new Float32Array(0), out: new Float32Array(0), outViews: new Map() };

function ensureScratch(xBytes: number, outBytes: number, tileBytes: number): void {
  const heap = wasmHeap();
  let changed = false;
  if (tileBytes > scratch.tileBytes) {
    if (scratch.tileBytes > 0) heap.free(scratch.tilePtr);
    scratch.tilePtr = heap.alloc(tileBytes, 64);
    scratch.tileBytes = tileBytes;
  }
  if (xBytes > scratch.xBytes) {
    if (scratch.xBytes > 0) heap.free(scratch.xPtr);
    const n = Math.max(xBytes, 2 * scratch.xBytes);
    scratch.xPtr = heap.alloc(n, 64);
    scratch.xBytes = n;
    changed = true;
  }
  if (outBytes > scratch.outBytes) {
    if (scratch.outBytes > 0) heap.free(scratch.outPtr);
    const n = Math.max(outBytes, 2 * scratch.outBytes);
    scratch.outPtr = heap.alloc(n, 64);
    scratch.outBytes = n;
    changed = true;
  }
  // Views go stale when the memory grows (a new buffer object); byteLength tells without allocating.
  const mem = heap.memory.buffer as unknown as SharedArrayBuffer;
  if (changed || scratch.buffer === null || scratch.buffer.byteLength !== mem.byteLength) {
    scratch.buffer = mem;
    scratch.x = new Float32Array(mem, scratch.xPtr, scratch.xBytes / 4);
    scratch.out = new Float32Array(mem, scratch.outPtr, scratch.outBytes / 4);
    scratch.outViews.clear();
  }
}

const jobArgs = [0, 0, 0, 0, 0, 0, 0];
/** Kernel exports by type code; f16 with the full decode is matmul_f16x. */
const FNS = ['matmul_f32', 'matmul_f16', 'matmul_bf16'];
/** Multi-token exports by type code (f16/bf16 decoded once per call; the third argument is the per-thread scratch). */
const TOKENS_FNS = ['', 'matmul_f16_tokens', 'matmul_bf16_tokens'];
/** Decode masks by type code (the kernel takes them as an argument, see there). */
const MASKS = [0, 0x8fffe000 | 0, 0xffff0000 | 0];
const job = { kernel: 'matmul_float', fn: 'matmul_f32', args: jobArgs, rows: 0, rowWork: 0 };

/**
 * out (tokens, rows) = x (tokens, cols) W^T for a matrix from packFloatMatrix. x and out are
 * ordinary arrays (copied into and out of heap scratch); out must not overlap x.
 */
export function matmulFloat(out: Float32Array, x: Float32Array, tokens: number, w: PackedMatrix): void {
  const info = floatInfo(w);
  const { rows, cols } = w;
  if (!Number.isInteger(tokens) || tokens < 0) fail('shape', `matmulFloat: tokens must be a non-negative integer, got ${tokens}`);
  if (x.length < tokens * cols) fail('shape', `matmulFloat: x holds ${x.length} values, need ${tokens} x ${cols}`);
  if (out.length < tokens * rows) fail('shape', `matmulFloat: out holds ${out.length} values, need ${tokens} x ${rows}`);
  if (tokens === 0 || rows === 0) return;
  const cp = info.cp;
  // Several tokens over f16/bf16: each row group is decoded once into per-thread f32 scratch and
  // every token runs the f32 micro-kernel over it (bit-identical to one call per token; see the kernel).
  const decodeOnce = tokens > 1 && info.code !== TYPE_CODE.f32;
  const tileBytes = cp * 16;
  ensureScratch(tokens * cp * 4, tokens * rows * 4, decodeOnce ? tileBytes * threadCount() : 0);
  const sx = scratch.x;

  // x into the scratch, padded with zeros to cp per token; f16 prescaled while |x| < 2^16.
  let exact = info.f16Special || decodeOnce ? 1 : 0;
  if (info.code === TYPE_CODE.f16 && exact === 0) {
    let big = false;
    for (let t = 0; t < tokens; t++) {
      const s = t * cols;
      const d = t * cp;
      for (let i = 0; i < cols; i++) {
        const v = x[s + i]!;
        if (v >= F16_FAST_LIMIT || v <= -F16_FAST_LIMIT) big = true;
        sx[d + i] = v * F16_PRESCALE;
      }
    }
    if (big) exact = 1;
  }
  if (info.code !== TYPE_CODE.f16 || exact === 1) {
    if (cp === cols) sx.set(x.length === tokens * cols ? x : x.subarray(0, tokens * cols));
    else for (let t = 0; t < tokens; t++) sx.set(x.subarray(t * cols, (t + 1) * cols), t * cp);
  }
  if (cp !== cols) for (let t = 0; t < tokens; t++) sx.fill(0, t * cp + cols, (t + 1) * cp);

  job.fn = decodeOnce ? TOKENS_FNS[info.code]! : exact === 1 ? 'matmul_f16x' : FNS[info.code]!;
  jobArgs[0] = w.ptr;
  jobArgs[1] = rows;
  jobArgs[2] = cp;
  jobArgs[3] = tokens;
  jobArgs[4] = scratch.xPtr;
  jobArgs[5] = scratch.outPtr;
  jobArgs[6] = decodeOnce ? scratch.tilePtr : MASKS[info.code]!;
  job.rows = Math.ceil(rows / 4);
  job.rowWork = 4 * cp * tokens;
  runRows(job);

  const n = tokens * rows;
  let view = scratch.outViews.get(n);
  if (view === undefined) {
    if (scratch.outViews.size >= 64) scratch.outViews.clear();
    view = scratch.out.subarray(0, n);
    scratch.outViews.set(n, view);
  }
  out.set(view);
}
