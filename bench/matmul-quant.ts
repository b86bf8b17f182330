/**
 * node dist/bench/matmul-quant.js — weight streaming speed of the quantized matvec (tokens = 1) on
 * 4096 x 4096 and 11008 x 4096 matrices of every packed type, 1 thread by default, against a plain
 * copy of the same packed bytes (Uint8Array.set inside the heap) and a WASM SIMD read of them (the
 * read-bandwidth ceiling), measured side by side in one run. Prints a markdown table: GB/s of the
 * repacked (kernel layout) bytes, and of the ggml bytes the matrix holds on disk (the figure that
 * compares across layouts: the repacked layout is 3-31% larger), from the median time, plus the
 * best time (a loaded machine inflates the median; the best run is the uncontended estimate).
 *
 *   --shapes RxC,...    matrix shapes (default 4096x4096,11008x4096)
 *   --types A,B         packed types (default Q8_0,Q4_0,Q4_K,Q6_K)
 *   --threads N,...     thread counts (default 1)
 *   --tokens N          also time a tokens = N call (default 0: skip)
 *   --runs N            timed runs (default 15)
 *
 * Pool workers compile the kernel themselves and start on V8's baseline (Liftoff) code; run with
 * `node --no-liftoff` to time optimized code from the first call on every thread.
 */
import { performance } from 'node:perf_hooks';
import { parseArgs } from 'node:util';
import { quantize } from '../src/formats/gguf/quants.js';
import type { QuantizedMatrix } from '../src/ops/linear.js';
import { wasmHeap } from '../src/kernels/wasm/heap.js';
import { freePacked, matmulQuant, type PackedQuantType, packedQuantRowBytes, packQuantMatrix } from '../src/kernels/wasm/matmul-quant.js';
import { poolReady, runRows, setThreads } from '../src/kernels/wasm/pool.js';

const { values } = parseArgs({
  options: {
    shapes: { type: 'string', default: '4096x4096,11008x4096' },
    types: { type: 'string', default: 'Q8_0,Q4_0,Q4_K,Q6_K' },
    threads: { type: 'string', default: '1' },
    tokens: { type: 'string', default: '0' },
    runs: { type: 'string', default: '15' },
  },
});
const SHAPES = values.shapes!.split(',').map((s) => s.split('x').map(Number) as [number, number]);
const THREADS = values.threads!.split(',').map(Number);
const TYPES = values.types!.split(',') as PackedQuantType[];
const TOKENS = Number(values.tokens);
const RUNS = Number(values.runs);

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)]!;
}

/** [median, best] seconds of `runs` timed calls. */
function seconds(fn: () => void, runs = RUNS): [number, number] {
  // Warm-up long enough for V8 to tier the kernels up from Liftoff on every thread (~0.3 s).
  for (const t0 = performance.now(); performance.now() - t0 < 300; ) fn();
  const ts: number[] = [];
  for (let i = 0; i < runs; i++) {
    const t0 = performance.now();
    fn();
    ts.push((performance.now() - t0) / 1000);
  }
  return [median(ts), Math.min(...ts)];
}

function randomValues(n: number, seed: number): Float32Array {
  let s = seed >>> 0;
  const v = new Float32Array(n);
  for (let i = 0; i < n; i++) {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    v[i] = s / 2 ** 31 - 1;
  }
  return v;
}

const heap = wasmHeap();
await poolReady();
const rows: string[] = [];
for (const [ROWS, COLS] of SHAPES) {
  const x1 = randomValues(COLS, 1);
  const xT = randomValues(Math.max(1, TOKENS) * COLS, 2);
  const out = new Float32Array(Math.max(1, TOKENS) * ROWS);
  for (const type of TYPES) {
    const rowBytes = packedQuantRowBytes(type, COLS);
    const w: QuantizedMatrix = { kind: 'quantized', type, rows: ROWS, cols: COLS, rowBytes, data: quantize(type, randomValues(ROWS * COLS, 3)) };
    const packed = packQuantMatrix(w);
    const GB = packed.bytes / 1e9;
    const ggmlGB = (ROWS * rowBytes) / 1e9;
    const copyDst = heap.alloc(packed.bytes);
    const sink = heap.alloc(64);
    const gbps = (s: number): string => (GB / s).toFixed(1);
    for (const threads of THREADS) {
      setThreads(threads);
      const copy = gbps(seconds(() => heap.u8(copyDst, packed.bytes).set(heap.u8(packed.ptr, packed.bytes)))[0]);
      // The read baseline streams the repacked bytes as (rows / 4) rows of 4 x rowBytes' worth.
      const readRows = Math.floor(packed.bytes / 128);
      const read = gbps(seconds(() => runRows({ kernel: 'matmul_quant', fn: 'read_rows', args: [packed.ptr, 128, sink], rows: readRows, rowWork: 32 }))[0]);
      const [mv, best] = seconds(() => matmulQuant(out, x1, 1, packed));
      let multi = '';
      if (TOKENS > 1) {
        const [s] = seconds(() => matmulQuant(out, xT, TOKENS, packed), Math.max(3, RUNS >> 2));
        multi = ` ${gbps(s)} GB/s, ${((2 * ROWS * COLS * TOKENS) / s / 1e9).toFixed(1)} GFLOP/s |`;
      }
      rows.push(
        `| ${ROWS}x${COLS} | ${type} | ${threads} | ${(packed.bytes / 2 ** 20).toFixed(1)} | ${gbps(mv)} | ${(ggmlGB / mv).toFixed(1)} | ${(mv * 1e3).toFixed(2)} | ${(best * 1e3).toFixed(2)} | ${read} | ${copy} |${multi}`,
      );
    }
    heap.free(copyDst);
    heap.free(sink);
    freePacked(packed);
  }
}
setThreads(1);

console.log(`matvec (tokens = 1), GB/s from the median of ${RUNS} runs\n`);
const multiHead = TOKENS > 1 ? ` tokens=${TOKENS} |` : '';
console.log(`| shape | type | threads | packed MiB | matvec GB/s (packed) | GB/s (ggml bytes) | median ms | best ms | SIMD read GB/s | copy (.set) GB/s |${multiHead}`);
console.log(`|---|---|---|---|---|---|---|---|---|---|${TOKENS > 1 ? '---|' : ''}`);
for (const r of rows) console.log(r);
