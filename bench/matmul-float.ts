/**
 * Micro benchmark of the float matmul kernel (src/kernels/wasm/matmul-float.ts):
 * - decode: a rows x cols matvec (tokens = 1) per dtype, as GB/s of weight bytes streamed,
 *   against a plain copy (Uint8Array.copyWithin inside the wasm heap) of the same bytes;
 * - prefill: `prefill` tokens at once, as GFLOP/s (2 * tokens * rows * cols per call);
 * on 1 thread and on 2 (the worker pool). Every round times each variant once, so a noisy
 * machine slows them alike; the table gives the best and the median round.
 *
 * - small-model decode: time per matvec for the 56M llama's shapes (n_embd 512, n_ff 1408, vocab 32000).
 *
 *   npm run build && node dist/bench/matmul-float.js [rows] [cols] [rounds] [prefillTokens]
 */
import { Tensor } from '../src/core/tensor.js';
import { wasmHeap } from '../src/kernels/wasm/heap.js';
import { matmulFloat, packFloatMatrix } from '../src/kernels/wasm/matmul-float.js';
import type { PackedMatrix } from '../src/kernels/wasm/packed.js';
import { poolReady, setThreads } from '../src/kernels/wasm/pool.js';

const rows = Number(process.argv[2] ?? 4096);
const cols = Number(process.argv[3] ?? 4096);
const rounds = Number(process.argv[4] ?? 9);
const prefill = Number(process.argv[5] ?? 64);
const heap = wasmHeap();

function stats(xs: number[]): { min: number; median: number } {
  const s = [...xs].sort((a, b) => a - b);
  return { min: s[0]!, median: s[s.length >> 1]! };
}

function makeMatrix(dtype: 'f32' | 'f16' | 'bf16', rows: number, cols: number): PackedMatrix {
  const n = rows * cols;
  let t: Tensor;
  if (dtype === 'f32') {
    const d = new Float32Array(n);
    for (let i = 0; i < n; i++) d[i] = Math.sin(i) * 0.05;
    t = new Tensor('f32', d, [rows, cols]);
  } else {
    const d = new Uint16Array(n);
    // Ordinary small values: f16 exponent 5..14, bf16 exponent around 2^-5.
    for (let i = 0; i < n; i++) d[i] = dtype === 'f16' ? (((i * 2654435761) >>> 0) & 0x3bff) | 0x1400 : 0x3d00 | (i & 0x7f) | ((i & 1) << 15);
    t = new Tensor(dtype, d, [rows, cols]);
  }
  return packFloatMatrix(t);
}

/** Times fn (ms), repeating it until at least 20 ms passed. */
function time(fn: () => void): number {
  let reps = 0;
  const start = performance.now();
  let now = start;
  do {
    fn();
    reps++;
    now = performance.now();
  } while (now - start < 20);
  return (now - start) / reps;
}

await poolReady();
const x1 = new Float32Array(cols).map((_, i) => Math.cos(i));
const out1 = new Float32Array(rows);
const xp = new Float32Array(prefill * cols).map((_, i) => Math.cos(i * 0.37));
const outp = new Float32Array(prefill * rows);

const rowsOut: string[] = [];
for (const dtype of ['f32', 'f16', 'bf16'] as const) {
  const w = makeMatrix(dtype, rows, cols);
  const copyDst = heap.alloc(w.bytes, 64);
  const bytes = w.bytes;
  const samples: Record<string, number[]> = { copy: [], mv1: [], mv2: [], pf1: [], pf2: [] };
  for (let r = 0; r < rounds; r++) {
    const u8 = new Uint8Array(heap.buffer);
    samples.copy!.push(time(() => u8.copyWithin(copyDst, w.ptr, w.ptr + bytes)));
    for (const th of [1, 2]) {
      setThreads(th);
      samples[`mv${th}`]!.push(time(() => matmulFloat(out1, x1, 1, w)));
      samples[`pf${th}`]!.push(time(() => matmulFloat(outp, xp, prefill, w)));
    }
  }
  setThreads(1);
  heap.free(copyDst);
  heap.free(w.ptr);
  const gbs = (ms: number): string => (bytes / ms / 1e6).toFixed(1);
  const gflops = (ms: number): string => ((2 * prefill * rows * cols) / ms / 1e6).toFixed(1);
  const c = stats(samples.copy!);
  for (const th of [1, 2]) {
    const mv = stats(samples[`mv${th}`]!);
    const pf = stats(samples[`pf${th}`]!);
    rowsOut.push(
      `| ${dtype} | ${th} | ${(bytes / 2 ** 20).toFixed(0)} MiB | ${mv.min.toFixed(2)} / ${mv.median.toFixed(2)} ms | ${gbs(mv.min)} / ${gbs(mv.median)} | ${gbs(c.min)} / ${gbs(c.median)} | ${(c.min / mv.min).toFixed(2)} | ${gflops(pf.min)} / ${gflops(pf.median)} |`,
    );
  }
}
console.log(`matmulFloat ${rows}x${cols}, ${rounds} rounds (best / median); prefill ${prefill} tokens`);
console.log('| weights | threads | bytes | matvec time | matvec GB/s | copy GB/s (1 thread) | copy/matvec time | prefill GFLOP/s |');
console.log('|---|---|---|---|---|---|---|---|');
for (const l of rowsOut) console.log(l);

// Small shapes (decode of a 56M-parameter llama): microseconds per matvec, best of the rounds.
const shapes: Array<[number, number]> = [[512, 512], [1408, 512], [512, 1408], [32000, 512]];
console.log('');
console.log('| shape (out x in) | f32 1 thr | f32 2 thr | f16 1 thr | f16 2 thr | bf16 1 thr | bf16 2 thr |');
console.log('|---|---|---|---|---|---|---|');
for (const [r, c] of shapes) {
  const cells: string[] = [];
  for (const dtype of ['f32', 'f16', 'bf16'] as const) {
    const w = makeMatrix(dtype, r, c);
    const x = new Float32Array(c).map((_, i) => Math.cos(i));
    const out = new Float32Array(r);
    for (const th of [1, 2]) {
      setThreads(th);
      const s: number[] = [];
      for (let k = 0; k < rounds; k++) s.push(time(() => matmulFloat(out, x, 1, w)));
      cells.push(`${(stats(s).min * 1000).toFixed(1)} us`);
    }
    setThreads(1);
    heap.free(w.ptr);
  }
  console.log(`| ${r} x ${c} | ${cells.join(' | ')} |`);
}
