/**
 * Micro benchmark of the wasm elementwise kernels against their TypeScript references:
 * rmsNorm (dim 4096), swiglu (hidden 11008), softmax (one row of 4096) and f16/bf16 rounding
 * (dim 4096 and hidden 11008), at 1 row (decode) and 64 rows (prefill), with plain arrays
 * (copied into heap scratch and back) and with heap views (no copy). Each round times every
 * variant once; the table gives the median per call and the speedup (reference / wasm).
 *
 *   npm run build && node dist/bench/elementwise.js [rounds] [threads]
 */
import { availableParallelism } from 'node:os';
import { roundF32ArrayInPlace } from '../src/core/dtype.js';
import { rmsNormWasm, roundF32ArrayWasm, softmaxWasm, swigluWasm } from '../src/kernels/wasm/elementwise.js';
import { wasmHeap } from '../src/kernels/wasm/heap.js';
import { poolReady, setThreads } from '../src/kernels/wasm/pool.js';
import { rmsNorm } from '../src/ops/rmsnorm.js';
import { softmaxInPlace } from '../src/ops/softmax.js';
import { swiglu } from '../src/ops/swiglu.js';

const rounds = Number(process.argv[2] ?? 15);
const threads = Number(process.argv[3] ?? availableParallelism());
const DIM = 4096;
const HIDDEN = 11008;

function random(n: number, scale = 2): Float32Array {
  const a = new Float32Array(n);
  for (let i = 0; i < n; i++) a[i] = Math.sin(i * 0.7371 + 0.3) * scale;
  return a;
}

function heapCopy(a: Float32Array): Float32Array {
  const heap = wasmHeap();
  const v = heap.f32(heap.alloc(a.length * 4), a.length);
  v.set(a);
  return v;
}

/** Median ms per call of fn, over `rounds` rounds of enough calls to last ~5 ms. */
function time(fn: () => void): number {
  let reps = 1;
  for (;;) {
    const t0 = performance.now();
    for (let i = 0; i < reps; i++) fn();
    if (performance.now() - t0 > 5 || reps > 1e6) break;
    reps *= 2;
  }
  const samples: number[] = [];
  for (let r = 0; r < rounds; r++) {
    const t0 = performance.now();
    for (let i = 0; i < reps; i++) fn();
    samples.push((performance.now() - t0) / reps);
  }
  samples.sort((a, b) => a - b);
  return samples[samples.length >> 1]!;
}

function row(name: string, ref: () => void, plain: () => void, heap: () => void): void {
  const tr = time(ref);
  const tp = time(plain);
  const th = time(heap);
  const us = (ms: number) => (ms * 1000).toFixed(1).padStart(9);
  const x = (a: number, b: number) => `${(a / b).toFixed(1)}x`.padStart(8);
  console.log(`${name.padEnd(28)}${us(tr)}${us(tp)}${us(th)}${x(tr, tp)}${x(tr, th)}`);
}

setThreads(threads);
await poolReady();
console.log(`threads ${threads}, median of ${rounds} rounds, microseconds per call`);
console.log(`${'op'.padEnd(28)}${'ref'.padStart(9)}${'plain'.padStart(9)}${'heap'.padStart(9)}${'plain'.padStart(8)}${'heap'.padStart(8)}`);

for (const rows of [1, 64]) {
  const x = random(rows * DIM);
  const w = random(DIM, 1);
  const out = new Float32Array(rows * DIM);
  const hx = heapCopy(x);
  const hw = heapCopy(w);
  const hout = heapCopy(out);
  row(`rmsNorm ${rows}x${DIM}`, () => rmsNorm(out, x, w, 1e-5, rows, DIM), () => rmsNormWasm(out, x, w, 1e-5, rows, DIM), () => rmsNormWasm(hout, hx, hw, 1e-5, rows, DIM));
}

for (const rows of [1, 64]) {
  const n = rows * HIDDEN;
  const g = random(n, 4);
  const u = random(n, 1);
  const out = new Float32Array(n);
  const hg = heapCopy(g);
  const hu = heapCopy(u);
  const hout = heapCopy(out);
  row(`swiglu ${rows}x${HIDDEN}`, () => swiglu(out, g, u), () => swigluWasm(out, g, u), () => swigluWasm(hout, hg, hu));
}

{
  // Softmax is in place: every call works on the previous result, which stays a valid row.
  const x = random(DIM, 8);
  const a = x.slice();
  const b = x.slice();
  const h = heapCopy(x);
  row(`softmax 1x${DIM}`, () => softmaxInPlace(a), () => softmaxWasm(b), () => softmaxWasm(h));
}

for (const dtype of ['f16', 'bf16'] as const) {
  for (const [rows, dim] of [[1, DIM], [64, DIM], [1, HIDDEN], [64, HIDDEN]] as const) {
    // Rounding is idempotent: after the first call the data stays (already rounded) values.
    const n = rows * dim;
    const a = random(n, 3);
    const b = a.slice();
    const h = heapCopy(a);
    row(`round ${dtype} ${rows}x${dim}`, () => roundF32ArrayInPlace(a, n, dtype), () => roundF32ArrayWasm(b, n, dtype), () => roundF32ArrayWasm(h, n, dtype));
  }
}
