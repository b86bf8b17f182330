/**
 * Micro benchmark of the fused RoPE wasm kernel on a LLaMA-7B prefill step
 * (batch 1, 4096 tokens, 32 q heads, 8 kv heads, head_dim 128, table precomputed)
 * against a plain copy of the same bytes (read q,k + write q,k, one thread), with the
 * kernel on 1 thread and on N threads (the worker pool). Every round times each variant
 * once, so a noisy machine slows them alike; the table gives the best and the median
 * round, and ratios are copy time / rope time (1 = as fast as the copy).
 *
 *   npm run build && node dist/bench/rope-kernel.js [tokens] [rounds] [threads]
 *   ROPE_BENCH=f16/f32/neox,bf16/f32/neox   only these configurations
 */
import { availableParallelism } from 'node:os';
import { wasmHeap } from '../src/kernels/wasm/heap.js';
import { poolReady, setThreads } from '../src/kernels/wasm/pool.js';
import { ropeWasm, type RopeWasmCall, type StorageDType } from '../src/kernels/wasm/rope.js';

const tokens = Number(process.argv[2] ?? 4096);
const rounds = Number(process.argv[3] ?? 15);
const nThreads = Number(process.argv[4] ?? availableParallelism());
const qHeads = 32;
const kHeads = 8;
const headDim = 128;
const heap = wasmHeap();

interface Variant {
  name: string;
  run: () => void;
  samples: number[];
}

function variant(name: string, run: () => void): Variant {
  return { name, run, samples: [] };
}

function stats(xs: number[]): { min: number; median: number } {
  const s = [...xs].sort((a, b) => a - b);
  return { min: s[0]!, median: s[s.length >> 1]! };
}

function bench(dtype: StorageDType, math: 'f32' | 'f64', pairing: 'neox' | 'gptj'): void {
  const es = dtype === 'f32' ? 4 : 2;
  const ts = math === 'f64' ? 8 : 4;
  const qBytes = tokens * qHeads * headDim * es;
  const kBytes = tokens * kHeads * headDim * es;
  const q = heap.alloc(qBytes);
  const k = heap.alloc(kBytes);
  const qOut = heap.alloc(qBytes);
  const kOut = heap.alloc(kBytes);
  const table = heap.alloc(tokens * headDim * ts);

  // Realistic activations (|x| ~ 1) and a real rotary table.
  const fill = (ptr: number, bytes: number) => {
    if (es === 4) {
      const v = heap.f32(ptr, bytes / 4);
      for (let i = 0; i < v.length; i++) v[i] = Math.sin(i * 0.37) * 2;
    } else {
      const v = heap.u16(ptr, bytes / 2);
      // f16 / bf16 bit patterns of moderate normal numbers.
      for (let i = 0; i < v.length; i++) v[i] = dtype === 'f16' ? 0x3000 + ((i * 2654435761) >>> 20) % 0x1800 : 0x3e00 + ((i * 2654435761) >>> 20) % 0x200;
    }
  };
  fill(q, qBytes);
  fill(k, kBytes);
  const tv = ts === 8 ? heap.f64(table, tokens * headDim) : heap.f32(table, tokens * headDim);
  for (let t = 0; t < tokens; t++) {
    for (let i = 0; i < headDim / 2; i++) {
      const th = t * 10000 ** (-(2 * i) / headDim);
      tv[t * headDim + i] = Math.cos(th);
      tv[t * headDim + headDim / 2 + i] = Math.sin(th);
    }
  }

  const op = (ptr: number, heads: number) => ({ ptr, strides: [tokens * heads * headDim, heads * headDim, headDim] as const });
  const call = (inPlace: boolean): RopeWasmCall => ({
    dtype, math, batch: 1, seqLen: tokens, headDim, rotaryDim: headDim, pairing,
    q: { heads: qHeads, input: op(q, qHeads), output: op(inPlace ? q : qOut, qHeads) },
    k: { heads: kHeads, input: op(k, kHeads), output: op(inPlace ? k : kOut, kHeads) },
    table,
  });
  const inPlace = call(true);
  const outOfPlace = call(false);
  const threaded = (n: number, c: RopeWasmCall) => () => {
    setThreads(n);
    ropeWasm(c);
  };

  // The same bytes copied with copyWithin (memmove) on a 16-bit view of the heap: read q,k + write q,k.
  const u16 = heap.u16(0, heap.buffer.byteLength / 2);
  const variants = [
    variant('copy (copyWithin)', () => {
      u16.copyWithin(qOut / 2, q / 2, (q + qBytes) / 2);
      u16.copyWithin(kOut / 2, k / 2, (k + kBytes) / 2);
    }),
    variant('rope in place, 1 thread', threaded(1, inPlace)),
    variant(`rope in place, ${nThreads} threads`, threaded(nThreads, inPlace)),
    variant('rope out of place, 1 thread', threaded(1, outOfPlace)),
    variant(`rope out of place, ${nThreads} threads`, threaded(nThreads, outOfPlace)),
  ];
  for (const v of variants) v.run(); // warm up (compile, page in)
  for (let r = 0; r < rounds; r++) {
    for (const v of variants) {
      const t0 = process.hrtime.bigint();
      v.run();
      v.samples.push(Number(process.hrtime.bigint() - t0) / 1e6);
    }
  }

  const elems = (qBytes + kBytes) / es;
  const traffic = 2 * (qBytes + kBytes);
  const copy = stats(variants[0]!.samples);
  console.log(`\n${dtype} storage, math ${math}, ${pairing}: ${elems} elements, ${(traffic / 2 ** 20).toFixed(0)} MiB moved (+${((tokens * headDim * ts) / 2 ** 20).toFixed(0)} MiB table), ${rounds} rounds\n`);
  console.log('| variant | best ms | ns/elem | GB/s | vs copy (best) | median ms | vs copy (median) |');
  console.log('|---|---:|---:|---:|---:|---:|---:|');
  for (const v of variants) {
    const s = stats(v.samples);
    console.log(
      `| ${v.name} | ${s.min.toFixed(2)} | ${((s.min * 1e6) / elems).toFixed(3)} | ${(traffic / s.min / 1e6).toFixed(1)} | ` +
        `${(copy.min / s.min).toFixed(2)} | ${s.median.toFixed(2)} | ${(copy.median / s.median).toFixed(2)} |`,
    );
  }
  for (const p of [q, k, qOut, kOut, table]) heap.free(p);
}

const only = process.env['ROPE_BENCH'];
setThreads(nThreads);
await poolReady();
for (const [dtype, math, pairing] of [
  ['f16', 'f32', 'neox'],
  ['bf16', 'f32', 'neox'],
  ['f32', 'f32', 'neox'],
  ['f16', 'f32', 'gptj'],
  ['f16', 'f64', 'neox'],
] as const) {
  if (only && !only.split(',').includes(`${dtype}/${math}/${pairing}`)) continue;
  bench(dtype, math, pairing);
}
