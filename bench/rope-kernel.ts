/**
 * Micro benchmark of the fused RoPE wasm kernel on a LLaMA-7B prefill step
 * (batch 1, 4096 tokens, 32 q heads, 8 kv heads, head_dim 128, table precomputed)
 * against a plain copy of the same bytes (read q,k + write q,k).
 *
 *   npm run build && node dist/bench/rope-kernel.js [tokens] [reps]
 */
import { wasmHeap } from '../src/kernels/wasm/heap.js';
import { ropeWasm, type RopeWasmCall, type StorageDType } from '../src/kernels/wasm/rope.js';

const tokens = Number(process.argv[2] ?? 4096);
const reps = Number(process.argv[3] ?? 15);
const qHeads = 32;
const kHeads = 8;
const headDim = 128;
const heap = wasmHeap();

function time(fn: () => void): { min: number; median: number } {
  fn(); // warm up (compile, page in)
  const samples: number[] = [];
  for (let r = 0; r < reps; r++) {
    const t0 = process.hrtime.bigint();
    fn();
    samples.push(Number(process.hrtime.bigint() - t0) / 1e6);
  }
  samples.sort((a, b) => a - b);
  return { min: samples[0]!, median: samples[samples.length >> 1]! };
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

  const elems = (qBytes + kBytes) / es;
  const traffic = 2 * (qBytes + kBytes); // read q,k + write q,k
  // The same bytes copied with copyWithin (memmove) on a 16-bit view of the heap: read q,k + write q,k.
  const u16 = heap.u16(0, heap.buffer.byteLength / 2);
  const copy = time(() => {
    u16.copyWithin(qOut / 2, q / 2, (q + qBytes) / 2);
    u16.copyWithin(kOut / 2, k / 2, (k + kBytes) / 2);
  });
  const kin = time(() => ropeWasm(inPlace));
  const kout = time(() => ropeWasm(outOfPlace));
  const line = (name: string, ms: number) =>
    `${name.padEnd(22)} ${ms.toFixed(2).padStart(7)} ms  ${((ms * 1e6) / elems).toFixed(3)} ns/elem  ${(traffic / ms / 1e6).toFixed(1).padStart(5)} GB/s`;
  console.log(`${dtype} math=${math} ${pairing}: ${elems} elements, ${(traffic / 2 ** 20).toFixed(0)} MiB moved (+${((tokens * headDim * ts) / 2 ** 20).toFixed(0)} MiB table)`);
  console.log(`  ${line('copy (copyWithin)', copy.min)}   median ${copy.median.toFixed(2)} ms`);
  console.log(`  ${line('rope in place', kin.min)}   median ${kin.median.toFixed(2)} ms   ratio to copy ${(copy.min / kin.min).toFixed(2)} (median ${(copy.median / kin.median).toFixed(2)})`);
  console.log(`  ${line('rope out of place', kout.min)}   median ${kout.median.toFixed(2)} ms   ratio to copy ${(copy.min / kout.min).toFixed(2)} (median ${(copy.median / kout.median).toFixed(2)})`);

  for (const p of [q, k, qOut, kOut, table]) heap.free(p);
}

const only = process.env['ROPE_BENCH'];
for (const [dtype, math, pairing] of [
  ['f16', 'f32', 'neox'],
  ['f32', 'f32', 'neox'],
  ['f16', 'f32', 'gptj'],
  ['bf16', 'f32', 'neox'],
  ['f16', 'f64', 'neox'],
] as const) {
  if (only && !only.split(',').includes(`${dtype}/${math}/${pairing}`)) continue;
  bench(dtype, math, pairing);
}
