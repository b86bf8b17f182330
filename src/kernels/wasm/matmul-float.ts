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
 * measured on random data it is ~1e-7 of sum |x_i W[o,i]| (model shapes, see the tests),
 * well inside the 1e-5 relative bound the model tests use.
 *
 * Threads: output rows (in groups of 4) are split over the worker pool (pool.ts).
 * A call allocates nothing once its heap scratch (x and out, grown as needed) is big enough.
 */
import { fail } from '../../core/errors.js';
import type { Tensor } from '../../core/tensor.js';
import { wasmHeap } from './heap.js';
import type { PackedMatrix } from './packed.js';
import { runRows } from './pool.js';

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

function floatInfo(w: PackedMatrix): FloatInfo {
  const info = infos.get(w);
  if (!info) fail('layout', `matmulFloat: ${w.type} [${w.rows}, ${w.cols}] was not packed by packFloatMatrix (or was freed)`);
  return info;
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
  const blocks = cp / 8;
  const bytes = packedFloatBytes(type, rows, cols);
  const heap = wasmHeap();
  const ptr = heap.alloc(Math.max(bytes, 16), 64);
  const src = w.data;
  const base = w.offset;
  let f16Special = false;
  if (type === 'f32') {
    const dst = heap.f32(ptr, bytes / 4);
    dst.fill(0);
    const s = src as Float32Array;
    // Element (o, i) -> group o>>2, block i>>3: ((g * blocks + b) * 4 + (o & 3)) * 8 + (i & 7).
    for (let o = 0; o < rows; o++) {
      const so = base + o * cols;
      const rowBase = ((o >> 2) * blocks * 4 + (o & 3)) * 8;
      for (let b = 0; b < blocks; b++) {
        const d = rowBase + b * 32;
        const i0 = b * 8;
        const n = Math.min(8, cols - i0);
        for (let k = 0; k < n; k++) dst[d + k] = s[so + i0 + k]!;
      }
    }
  } else {
    const dst = heap.u16(ptr, bytes / 2);
    dst.fill(0);
    const s = src as Uint16Array;
    // Within a row's 8 halves: column k < 4 at 2k (low half of lane k), k >= 4 at 2(k-4)+1.
    for (let o = 0; o < rows; o++) {
      const so = base + o * cols;
      const rowBase = ((o >> 2) * blocks * 4 + (o & 3)) * 8;
      for (let b = 0; b < blocks; b++) {
        const d = rowBase + b * 32;
        const i0 = b * 8;
        const n = Math.min(8, cols - i0);
        for (let k = 0; k < n; k++) {
          const h = s[so + i0 + k]!;
          if (type === 'f16' && (h & 0x7c00) === 0x7c00) f16Special = true;
          dst[d + (k < 4 ? 2 * k : 2 * (k - 4) + 1)] = h;
        }
      }
    }
  }
  const m: PackedMatrix = Object.freeze({ kind: 'packed' as const, type, rows, cols, ptr, bytes });
  infos.set(m, { cp, code, f16Special });
  return m;
}

/** Returns a packed matrix's heap memory; the matrix must not be used afterwards. */
export function freeFloatMatrix(w: PackedMatrix): void {
  floatInfo(w);
  infos.delete(w);
  wasmHeap().free(w.ptr);
}

/** Heap scratch for x and out, shared by every call (kernels are synchronous), grown as needed. */
interface Scratch {
  xPtr: number;
  xBytes: number;
  outPtr: number;
  outBytes: number;
  buffer: SharedArrayBuffer | null;
  x: Float32Array;
  out: Float32Array;
}
const scratch: Scratch = { xPtr: 0, xBytes: 0, outPtr: 0, outBytes: 0, buffer: null, x: new Float32Array(0), out: new Float32Array(0) };

function ensureScratch(xBytes: number, outBytes: number): void {
  const heap = wasmHeap();
  let changed = false;
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
  }
}

const jobArgs = [0, 0, 0, 0, 0, 0, 0, 0];
const job = { kernel: 'matmul_float', fn: 'matmul', args: jobArgs, rows: 0, rowWork: 0 };

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
  ensureScratch(tokens * cp * 4, tokens * rows * 4);
  const sx = scratch.x;

  // x into the scratch, padded with zeros to cp per token; f16 prescaled while |x| < 2^16.
  let exact = info.f16Special ? 1 : 0;
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
    if (cp === cols) sx.set(tokens === 1 && x.length === cols ? x : x.subarray(0, tokens * cols));
    else for (let t = 0; t < tokens; t++) sx.set(x.subarray(t * cols, (t + 1) * cols), t * cp);
  }
  if (cp !== cols) for (let t = 0; t < tokens; t++) sx.fill(0, t * cp + cols, (t + 1) * cp);

  jobArgs[0] = info.code;
  jobArgs[1] = exact;
  jobArgs[2] = w.ptr;
  jobArgs[3] = rows;
  jobArgs[4] = cp;
  jobArgs[5] = tokens;
  jobArgs[6] = scratch.xPtr;
  jobArgs[7] = scratch.outPtr;
  job.rows = Math.ceil(rows / 4);
  job.rowWork = 4 * cp * tokens;
  runRows(job);

  const n = tokens * rows;
  if (out.length === n && scratch.out.length === n) out.set(scratch.out);
  else out.set(scratch.out.subarray(0, n));
}
