/**
 * WASM SIMD versions of the elementwise ops (kernel: src/kernels/wasm/assembly/elementwise.ts,
 * built to build/elementwise.wasm), each with the contract of its reference:
 *
 *   rmsNormWasm        src/ops/rmsnorm.ts   rmsNorm             out = x / sqrt(mean(x^2) + eps) * w
 *   swigluWasm         src/ops/swiglu.ts    swiglu              out = g / (1 + exp(-g)) * up
 *   softmaxWasm        src/ops/softmax.ts   softmaxInPlace      (Float32Array)
 *   roundF32ArrayWasm  src/core/dtype.ts    roundF32ArrayInPlace
 *   layerNormWasm      src/models/clip/model.ts  layerNorm     out = (x - mean) / sqrt(var + eps) * w + b
 *   quickGeluWasm      src/models/clip/model.ts  quickGelu     out = x / (1 + exp(-1.702 x))
 *   addBiasWasm        src/models/clip/model.ts  linearBias's bias add   out[r, i] = x[r, i] + b[i]
 *   addWasm            (a plain f32 loop)                      out[i] = a[i] + b[i]
 *
 * Precision: rmsNorm, swiglu and softmax compute in f64 and round once to f32, like the
 * references; they differ from them only in the order of the f64 sums and in exp (the kernel's
 * own, ~1 f64 ulp), so outputs are within 1 f32 ulp of the references and usually bit-identical
 * (the tests assert <= 1 ulp). roundF32ArrayWasm is bit-identical to roundF32ArrayInPlace
 * (data and counts). layerNormWasm is bit-identical to layerNorm (its f64 sums run in the
 * reference's order); quickGeluWasm is within 1 f32 ulp of quickGelu (f64, the kernel's exp);
 * addBiasWasm and addWasm are exact f32 adds, bit-identical to the plain loops.
 *
 * Memory: an array that is a view into the wasm heap is used in place (no copy); any other array
 * is copied into heap scratch (grown as needed, then reused: no allocation per call once big
 * enough) and the results copied back. Aliasing allowed by the references (rmsNorm out = x,
 * swiglu out = gate or up) works either way.
 *
 * Threads: calls with many rows (rmsNorm) or many elements (swiglu, rounding) are split over the
 * worker pool (pool.ts); a call of one token (e.g. dim 4096, hidden 11008) stays on the calling
 * thread. Results do not depend on the split: every row / element is computed the same way.
 */
import { fail } from '../../core/errors.js';
import type { DType, RoundingCounts } from '../../core/dtype.js';
import { loadKernel, wasmHeap } from './heap.js';
import { runRows, threadCount } from './pool.js';

const KERNEL = 'elementwise';
/** Elements per pool row for the 1-D ops (a multiple of 4, so only the last range has a tail). */
const CHUNK = 4096;

/** One growable heap region holding f32 values, with cached views so that copies allocate nothing. */
class Scratch {
  ptr = 0;
  private bytes = 0;
  private buffer: ArrayBufferLike | null = null;
  private all: Float32Array = new Float32Array(0);
  /** [0, n) views by n (a model has few shapes) */
  private views = new Map<number, Float32Array>();

  /** Makes room for n values; returns the pointer. */
  ensure(n: number): number {
    const need = Math.max(16, n * 4);
    if (need > this.bytes) {
      const heap = wasmHeap();
      if (this.bytes > 0) heap.free(this.ptr);
      const bytes = Math.max(need, 2 * this.bytes);
      this.ptr = heap.alloc(bytes, 64);
      this.bytes = bytes;
      this.buffer = null;
    }
    return this.ptr;
  }

  /** A view of the first n values (n within the last ensure). */
  view(n: number): Float32Array {
    // Views go stale when the memory grows (a new buffer object); byteLength tells without allocating.
    const mem = wasmHeap().memory.buffer;
    if (this.buffer === null || this.buffer.byteLength !== mem.byteLength) {
      this.buffer = mem;
      this.all = new Float32Array(mem, this.ptr, this.bytes / 4);
      this.views.clear();
    }
    let v = this.views.get(n);
    if (v === undefined) {
      if (this.views.size >= 64) this.views.clear();
      v = this.all.subarray(0, n);
      this.views.set(n, v);
    }
    return v;
  }

  /** Copies a[from, from + n) in; returns the pointer. */
  load(a: Float32Array, from: number, n: number): number {
    const ptr = this.ensure(n);
    this.view(n).set(from === 0 && n === a.length ? a : a.subarray(from, from + n));
    return ptr;
  }
}

/**
 * The kernel's exp constants, one f64x2 (or i32x4) per 16 bytes, in the order the kernel reads
 * them (see exp64 there): overflow threshold, lower clamp, 1.5 * 2^52, log2(e), ln2 high and low
 * parts, the Taylor coefficients 1/0! .. 1/13! paired for Estrin, +inf, and the i32 bias 1023.
 */
const EXP_CONSTANTS = [709.782712893383973096, -746, 6755399441055744.0, 1.4426950408889634, 6.93147180369123816490e-1, 1.90821492927058770002e-10,
  1, 1 / 2, 1 / 6, 1 / 24, 1 / 120, 1 / 720, 1 / 5040, 1 / 40320, 1 / 362880, 1 / 3628800, 1 / 39916800, 1 / 479001600, 1 / 6227020800, Infinity];
let expConstPtr = 0;

function expConstants(): number {
  if (expConstPtr === 0) {
    const heap = wasmHeap();
    const ptr = heap.alloc((EXP_CONSTANTS.length + 1) * 16, 64);
    const f = heap.f64(ptr, EXP_CONSTANTS.length * 2);
    EXP_CONSTANTS.forEach((v, i) => f.fill(v, 2 * i, 2 * i + 2));
    new Int32Array(heap.buffer, ptr + EXP_CONSTANTS.length * 16, 4).fill(1023);
    expConstPtr = ptr;
  }
  return expConstPtr;
}

const scratchA = new Scratch();
const scratchB = new Scratch();
const scratchC = new Scratch();
const scratchD = new Scratch();

/** Heap pointer of a[0, n): the array itself if it lives in the heap, else a copy in `s`. */
function input(a: Float32Array, n: number, s: Scratch): number {
  const ptr = wasmHeap().ptrOf(a);
  return ptr !== undefined ? ptr : s.load(a, 0, n);
}

/** Copies the n values at s back into a when a is not a heap view (ptr !== its own pointer). */
function output(a: Float32Array, n: number, s: Scratch): void {
  a.set(s.view(n));
}

const rmsArgs = [0, 0, 0, 0, 0];
const rmsJob = { kernel: KERNEL, fn: 'rmsnorm', args: rmsArgs, rows: 0, rowWork: 0 };

/** rmsNorm (src/ops/rmsnorm.ts) in WASM SIMD: same arguments, checks and in-place use (out = x). */
export function rmsNormWasm(out: Float32Array, x: Float32Array, weight: Float32Array, eps: number, rows: number, dim: number): void {
  if (!Number.isInteger(rows) || rows < 0 || !Number.isInteger(dim) || dim <= 0) fail('shape', `rmsNorm: invalid rows ${rows} or dim ${dim}`);
  if (weight.length !== dim) fail('shape', `rmsNorm: weight has ${weight.length} values, expected ${dim}`);
  if (x.length < rows * dim || out.length < rows * dim) fail('shape', `rmsNorm: x and out need ${rows} x ${dim} values, have ${x.length} and ${out.length}`);
  if (rows === 0) return;
  const n = rows * dim;
  const heap = wasmHeap();
  const xPtr = input(x, n, scratchA);
  const wPtr = input(weight, dim, scratchB);
  let outPtr = heap.ptrOf(out);
  const outCopied = outPtr === undefined;
  if (outPtr === undefined) outPtr = out === x ? xPtr : scratchC.ensure(n);
  rmsArgs[0] = outPtr;
  rmsArgs[1] = xPtr;
  rmsArgs[2] = wPtr;
  rmsArgs[3] = eps;
  rmsArgs[4] = dim;
  rmsJob.rows = rows;
  rmsJob.rowWork = dim;
  runRows(rmsJob);
  if (outCopied) output(out, n, out === x ? scratchA : scratchC);
}

const swiArgs = [0, 0, 0, 0, CHUNK, 0];
/** exp makes an element worth ~2 of rmsNorm's; one token of hidden 11008 stays inline. */
const swiJob = { kernel: KERNEL, fn: 'swiglu', args: swiArgs, rows: 0, rowWork: 2 * CHUNK };

/** swiglu (src/ops/swiglu.ts) in WASM SIMD: same arguments, checks and in-place use (out = gate or up). */
export function swigluWasm(out: Float32Array, gate: Float32Array, up: Float32Array, n = out.length): void {
  if (!Number.isInteger(n) || n < 0 || gate.length < n || up.length < n || out.length < n) {
    fail('shape', `swiglu: need ${n} values, have out ${out.length}, gate ${gate.length}, up ${up.length}`);
  }
  if (n === 0) return;
  const heap = wasmHeap();
  const gPtr = input(gate, n, scratchA);
  const uPtr = up === gate ? gPtr : input(up, n, scratchB);
  let outPtr = heap.ptrOf(out);
  let outScratch: Scratch | undefined;
  if (outPtr === undefined) {
    // out aliasing an input that was copied: write into that copy and bring it back.
    outScratch = out === gate ? scratchA : out === up ? scratchB : scratchC;
    outPtr = out === gate ? gPtr : out === up ? uPtr : scratchC.ensure(n);
  }
  swiArgs[0] = outPtr;
  swiArgs[1] = gPtr;
  swiArgs[2] = uPtr;
  swiArgs[3] = n;
  swiArgs[5] = expConstants();
  swiJob.rows = Math.ceil(n / CHUNK);
  runRows(swiJob);
  if (outScratch !== undefined) output(out, n, outScratch);
}

interface SoftmaxKernel {
  softmax(x: number, n: number, c: number): void;
}
let softmaxKernel: SoftmaxKernel | undefined;

/**
 * softmaxInPlace (src/ops/softmax.ts) for a Float32Array in WASM SIMD: softmax over
 * x[offset, offset + length) in place; NaN in gives NaN out, an all -Infinity row gives NaN.
 * One row, always on the calling thread.
 */
export function softmaxWasm(x: Float32Array, offset = 0, length = x.length - offset): void {
  if (!Number.isInteger(offset) || !Number.isInteger(length) || offset < 0 || length < 0 || offset + length > x.length) {
    fail('shape', `softmaxInPlace: range [${offset}, ${offset + length}) outside ${x.length} values`);
  }
  if (length === 0) return;
  softmaxKernel ??= loadKernel(KERNEL).exports as unknown as SoftmaxKernel;
  const ptr = wasmHeap().ptrOf(x);
  if (ptr !== undefined) {
    softmaxKernel.softmax(ptr + offset * 4, length, expConstants());
    return;
  }
  const c = expConstants();
  softmaxKernel.softmax(scratchA.load(x, offset, length), length, c);
  x.set(scratchA.view(length), offset);
}

/** Per-thread result slots of the rounding kernel: i32 [count, max |x| bits, -, -] each. */
const MAX_SLOTS = 256;
let resPtr = 0;
let resView: Int32Array | null = null;

function results(): Int32Array {
  const heap = wasmHeap();
  if (resPtr === 0) resPtr = heap.alloc(MAX_SLOTS * 16, 64);
  if (resView === null || resView.buffer.byteLength !== heap.memory.buffer.byteLength) resView = new Int32Array(heap.buffer, resPtr, MAX_SLOTS * 4);
  return resView;
}

const bitsToF32 = new Float32Array(1);
const bitsToF32U = new Uint32Array(bitsToF32.buffer);

const roundArgs = [0, 0, 0, 0, CHUNK];
/** Bit arithmetic only: cheaper per element than rmsNorm, so larger calls before threads pay. */
const roundJob = { kernel: KERNEL, fn: 'round_f16', args: roundArgs, rows: 0, rowWork: CHUNK / 2 };

/**
 * roundF32ArrayInPlace (src/core/dtype.ts) in WASM SIMD, bit for bit: rounds data[0, n) in place
 * to the nearest f16 / bf16 value (ties to even), past the threshold to +-inf or, with clamp, to
 * +-max (counted as overflowed / clamped); absmax is the largest finite |x| before rounding.
 * f32 leaves data as it is (all counts 0). n must be an integer in [0, data.length].
 */
export function roundF32ArrayWasm(data: Float32Array, n: number, dtype: DType, clamp = false): RoundingCounts {
  if (!Number.isInteger(n) || n < 0 || n > data.length) fail('shape', `roundF32ArrayWasm: n must be an integer in [0, ${data.length}], got ${n}`);
  const counts = { overflowed: 0, clamped: 0, absmax: 0 };
  if (dtype === 'f32' || n === 0) return counts;
  if (dtype !== 'f16' && dtype !== 'bf16') fail('dtype', `roundF32ArrayWasm: unknown dtype '${String(dtype)}'`);
  const bf16 = dtype === 'bf16';
  let ptr = wasmHeap().ptrOf(data);
  const copied = ptr === undefined;
  if (ptr === undefined) ptr = scratchA.load(data, 0, n);
  const res = results();
  const slots = Math.min(MAX_SLOTS, threadCount());
  res.fill(0, 0, slots * 4);
  roundArgs[0] = ptr;
  roundArgs[1] = n;
  roundArgs[2] = clamp ? (bf16 ? 0x7f7f0000 : 0x477fe000) : 0x7f800000;
  roundArgs[3] = resPtr;
  roundJob.fn = bf16 ? 'round_bf16' : 'round_f16';
  roundJob.rows = Math.ceil(n / CHUNK);
  runRows(roundJob);
  let past = 0;
  let maxBits = 0;
  for (let s = 0; s < slots; s++) {
    past += res[4 * s]!;
    maxBits = Math.max(maxBits, res[4 * s + 1]! >>> 0);
  }
  if (clamp) counts.clamped = past;
  else counts.overflowed = past;
  bitsToF32U[0] = maxBits;
  counts.absmax = bitsToF32[0]!;
  if (copied) data.set(scratchA.view(n));
  return counts;
}

const lnArgs = [0, 0, 0, 0, 0, 0];
/** Two scalar f64 passes and a vector one: a row costs ~3 of rmsNorm's. */
const lnJob = { kernel: KERNEL, fn: 'layernorm', args: lnArgs, rows: 0, rowWork: 0 };

/**
 * LayerNorm (layerNorm in src/models/clip/model.ts) in WASM SIMD, bit for bit: each of `rows` rows
 * of dim values becomes (x - mean) / sqrt(var + eps) * weight + bias, mean and biased variance in
 * float64. out may be x.
 */
export function layerNormWasm(out: Float32Array, x: Float32Array, weight: Float32Array, bias: Float32Array, eps: number, rows: number, dim: number): void {
  if (!Number.isInteger(rows) || rows < 0 || !Number.isInteger(dim) || dim <= 0) fail('shape', `layerNorm: invalid rows ${rows} or dim ${dim}`);
  if (weight.length !== dim || bias.length !== dim) fail('shape', `layerNorm: weight and bias have ${weight.length} and ${bias.length} values, expected ${dim}`);
  if (x.length < rows * dim || out.length < rows * dim) fail('shape', `layerNorm: x and out need ${rows} x ${dim} values, have ${x.length} and ${out.length}`);
  if (rows === 0) return;
  const n = rows * dim;
  const heap = wasmHeap();
  const xPtr = input(x, n, scratchA);
  const wPtr = input(weight, dim, scratchB);
  const bPtr = input(bias, dim, scratchD);
  let outPtr = heap.ptrOf(out);
  const outCopied = outPtr === undefined;
  if (outPtr === undefined) outPtr = out === x ? xPtr : scratchC.ensure(n);
  lnArgs[0] = outPtr;
  lnArgs[1] = xPtr;
  lnArgs[2] = wPtr;
  lnArgs[3] = bPtr;
  lnArgs[4] = eps;
  lnArgs[5] = dim;
  lnJob.rows = rows;
  lnJob.rowWork = 3 * dim;
  runRows(lnJob);
  if (outCopied) output(out, n, out === x ? scratchA : scratchC);
}

/** Heap pointers of the last staged 1-D call (module state, so a call allocates nothing). */
const staged = { out: 0, a: 0, b: 0, outScratch: undefined as Scratch | undefined };

/** Stages out = f(a[, b]) over n values with swigluWasm's scratch rules (out may alias an input). */
function stage1d(out: Float32Array, a: Float32Array, b: Float32Array | undefined, n: number): void {
  const aPtr = input(a, n, scratchA);
  const bPtr = b === undefined ? 0 : b === a ? aPtr : input(b, n, scratchB);
  const outPtr = wasmHeap().ptrOf(out);
  staged.a = aPtr;
  staged.b = bPtr;
  if (outPtr !== undefined) {
    staged.out = outPtr;
    staged.outScratch = undefined;
  } else {
    // out aliasing an input that was copied: write into that copy and bring it back.
    staged.outScratch = out === a ? scratchA : out === b ? scratchB : scratchC;
    staged.out = out === a ? aPtr : out === b ? bPtr : scratchC.ensure(n);
  }
}

/** Copies a staged call's result back when out is not a heap view. */
function unstage1d(out: Float32Array, n: number): void {
  if (staged.outScratch !== undefined) output(out, n, staged.outScratch);
}

/** The factor of quick_gelu's exp: x sigmoid(1.702 x) = x / (1 + exp(-1.702 x)). */
const QUICK_GELU_K = -1.702;
const qgArgs = [0, 0, 0, QUICK_GELU_K, CHUNK, 0];
/** exp, like swiglu. */
const qgJob = { kernel: KERNEL, fn: 'quick_gelu', args: qgArgs, rows: 0, rowWork: 2 * CHUNK };

/** quickGelu (src/models/clip/model.ts) of x[0, n) into out[0, n) in WASM SIMD (out may be x); within 1 f32 ulp. */
export function quickGeluWasm(out: Float32Array, x: Float32Array, n = out.length): void {
  if (!Number.isInteger(n) || n < 0 || x.length < n || out.length < n) fail('shape', `quickGelu: need ${n} values, have out ${out.length}, x ${x.length}`);
  if (n === 0) return;
  stage1d(out, x, undefined, n);
  qgArgs[0] = staged.out;
  qgArgs[1] = staged.a;
  qgArgs[2] = n;
  qgArgs[5] = expConstants();
  qgJob.rows = Math.ceil(n / CHUNK);
  runRows(qgJob);
  unstage1d(out, n);
}

const biasArgs = [0, 0, 0, 0];
/** A load, an add and a store per value: half of rmsNorm's work per value. */
const biasJob = { kernel: KERNEL, fn: 'add_bias', args: biasArgs, rows: 0, rowWork: 0 };

/** out[r, i] = x[r, i] + bias[i] in f32 over `rows` rows of bias.length values (out may be x); bit-exact. */
export function addBiasWasm(out: Float32Array, x: Float32Array, bias: Float32Array, rows: number): void {
  const dim = bias.length;
  if (!Number.isInteger(rows) || rows < 0 || dim === 0) fail('shape', `addBias: invalid rows ${rows} or bias length ${dim}`);
  if (x.length < rows * dim || out.length < rows * dim) fail('shape', `addBias: x and out need ${rows} x ${dim} values, have ${x.length} and ${out.length}`);
  if (rows === 0) return;
  const n = rows * dim;
  const heap = wasmHeap();
  const xPtr = input(x, n, scratchA);
  const bPtr = input(bias, dim, scratchB);
  let outPtr = heap.ptrOf(out);
  const outCopied = outPtr === undefined;
  if (outPtr === undefined) outPtr = out === x ? xPtr : scratchC.ensure(n);
  biasArgs[0] = outPtr;
  biasArgs[1] = xPtr;
  biasArgs[2] = bPtr;
  biasArgs[3] = dim;
  biasJob.rows = rows;
  biasJob.rowWork = dim / 2;
  runRows(biasJob);
  if (outCopied) output(out, n, out === x ? scratchA : scratchC);
}

const addArgs = [0, 0, 0, 0, CHUNK];
const addJob = { kernel: KERNEL, fn: 'add', args: addArgs, rows: 0, rowWork: CHUNK / 2 };

/** out[i] = a[i] + b[i] in f32 for i < n (out may be a or b); bit-exact. */
export function addWasm(out: Float32Array, a: Float32Array, b: Float32Array, n = out.length): void {
  if (!Number.isInteger(n) || n < 0 || a.length < n || b.length < n || out.length < n) fail('shape', `add: need ${n} values, have out ${out.length}, a ${a.length}, b ${b.length}`);
  if (n === 0) return;
  stage1d(out, a, b, n);
  addArgs[0] = staged.out;
  addArgs[1] = staged.a;
  addArgs[2] = staged.b;
  addArgs[3] = n;
  addJob.rows = Math.ceil(n / CHUNK);
  runRows(addJob);
  unstage1d(out, n);
}
