/**
 * npm run bench:decode — prefill and decode speed of a ~97M-parameter random llama (f32, f16, Q8_0)
 * in halfpipe and in llama.cpp (node-llama-cpp) on the same GGUF file with the same thread count,
 * side by side in one run, with the weight bytes streamed per second against the WASM read
 * bandwidth measured in the same run. Prints a markdown table, and with several thread counts the
 * speedup of each over the first.
 *
 *   --prefill N   prompt tokens (default 512)
 *   --decode N    generated tokens (default 64)
 *   --types LIST  comma-separated of f32,f16,Q8_0 (default all)
 *   --threads L   comma-separated thread counts, each run by both engines (default 1,2)
 *   --kernels K   halfpipe's kernels: wasm (default) or reference
 */
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { getLlama, type Token } from 'node-llama-cpp';
import { wasmHeap } from '../src/kernels/wasm/heap.js';
import { runRows, setThreads } from '../src/kernels/wasm/pool.js';
import { argmax, loadModel } from '../src/models/load.js';
import { writeTinyModel } from '../src/models/tiny.js';

const { values } = parseArgs({
  options: {
    prefill: { type: 'string', default: '512' },
    decode: { type: 'string', default: '64' },
    types: { type: 'string', default: 'f32,f16,Q8_0' },
    threads: { type: 'string', default: '1,2' },
    kernels: { type: 'string', default: 'wasm' },
  },
});
const PREFILL = Number(values.prefill);
const DECODE = Number(values.decode);
const TYPES = values.types!.split(',');
const THREADS = values.threads!.split(',').map(Number);
const KERNELS = values.kernels as 'wasm' | 'reference';
for (const n of [PREFILL, DECODE, ...THREADS]) if (!Number.isInteger(n) || n < 1) throw new Error(`bench:decode: counts must be positive integers`);

// ~97M parameters: 14 layers of dim 768 with a 2304-wide MLP and 4 KV heads.
const SHAPE = { hidden_size: 768, intermediate_size: 2304, num_hidden_layers: 14, num_attention_heads: 12, num_key_value_heads: 4, max_position_embeddings: 1024 };

/** WASM SIMD streaming read of 256 MiB in the heap on the pool's threads (bytes per second), best of 5. */
function wasmReadBandwidth(): number {
  const heap = wasmHeap();
  const bytes = 256 << 20;
  const rowBytes = 1 << 16;
  const ptr = heap.alloc(bytes);
  const sink = heap.alloc(64);
  heap.u8(ptr, bytes).fill(1);
  let best = Infinity;
  for (let r = 0; r < 5; r++) {
    const t0 = performance.now();
    runRows({ kernel: 'matmul_quant', fn: 'read_rows', args: [ptr, rowBytes, sink], rows: bytes / rowBytes, rowWork: rowBytes });
    best = Math.min(best, performance.now() - t0);
  }
  heap.free(ptr);
  heap.free(sink);
  return bytes / (best / 1000);
}

function modelPath(type: string): string {
  const dir = join(tmpdir(), 'halfpipe-bench');
  mkdirSync(dir, { recursive: true });
  const path = join(dir, `llama-97m-${type}.gguf`);
  if (!existsSync(path)) {
    process.stderr.write(`writing ${path} ...\n`);
    const quant = type === 'Q8_0' ? { quant: 'Q8_0' as const } : { dtype: type as 'f32' | 'f16' };
    writeTinyModel({ format: 'gguf', out: path, seed: 1, set: SHAPE, ...quant });
  }
  return path;
}

const prompt = Array.from({ length: PREFILL }, (_, i) => 3 + ((i * 7919) % 500));
const llama = await getLlama({ gpu: false, build: 'never', logLevel: 'error' as never });
const rows: string[] = [];
const bandwidths = new Map<number, number>();
/** decode tok/s of halfpipe by "type threads", for the speedup column */
const decodeRates = new Map<string, number>();

for (const type of TYPES) {
  const path = modelPath(type);
  const weightBytes = statSync(path).size;
  // Peak memory of the same decode in a process of its own, against what decode needs: the weights and the KV cache.
  const child = spawnSync(process.execPath, [fileURLToPath(new URL('./rss.js', import.meta.url)), path, String(PREFILL), String(DECODE)], { encoding: 'utf8' });
  const { maxRssBytes, kvBytes } = JSON.parse(child.stdout) as { maxRssBytes: number; kvBytes: number };
  const model = await loadModel(path, { kernels: KERNELS });
  const lm = await llama.loadModel({ modelPath: path });
  for (const threads of THREADS) {
    setThreads(threads);
    if (!bandwidths.has(threads)) bandwidths.set(threads, wasmReadBandwidth());
    const readBandwidth = bandwidths.get(threads)!;
    // halfpipe
    const session = model.model.newSession();
    const t0 = performance.now();
    let logits = session.forward(prompt);
    const t1 = performance.now();
    for (let i = 0; i < DECODE; i++) logits = session.forward([argmax(logits)]);
    const t2 = performance.now();
    session.dispose();
    const ours = { prefill: PREFILL / ((t1 - t0) / 1000), decode: DECODE / ((t2 - t1) / 1000) };
    decodeRates.set(`${type} ${threads}`, ours.decode);

    // llama.cpp on the same file and thread count, F32 KV cache.
    const ctx = await lm.createContext({ contextSize: 1024, batchSize: 512, threads, flashAttention: false, experimentalKvCacheKeyType: 'F32', experimentalKvCacheValueType: 'F32' });
    const seq = ctx.getSequence();
    const s0 = performance.now();
    let first = 0;
    let count = 0;
    for await (const _ of seq.evaluate(prompt as unknown as Token[], { temperature: 0, yieldEogToken: true })) {
      if (count === 0) first = performance.now();
      if (++count > DECODE) break;
    }
    const s2 = performance.now();
    const theirs = { prefill: PREFILL / ((first - s0) / 1000), decode: DECODE / ((s2 - first) / 1000) };
    await ctx.dispose();

    const streamed = weightBytes * ours.decode;
    const base = decodeRates.get(`${type} ${THREADS[0]}`)!;
    rows.push(
      `| ${type} | ${(weightBytes / 2 ** 20).toFixed(0)} MiB | ${threads} | ${ours.prefill.toFixed(1)} | ${theirs.prefill.toFixed(1)} | ${(ours.prefill / theirs.prefill).toFixed(3)} | ${ours.decode.toFixed(2)} | ${theirs.decode.toFixed(1)} | ${(ours.decode / theirs.decode).toFixed(3)} | ${(ours.decode / base).toFixed(2)}x | ${(streamed / 1e9).toFixed(2)} | ${((100 * streamed) / readBandwidth).toFixed(1)}% | ${(maxRssBytes / (weightBytes + kvBytes)).toFixed(2)}x (${(maxRssBytes / 2 ** 20).toFixed(0)} MiB) |`,
    );
  }
  await lm.dispose();
}
await llama.dispose();

const bw = [...bandwidths].map(([t, b]) => `${(b / 1e9).toFixed(1)} GB/s on ${t} thread(s)`).join(', ');
console.log(
  `decode bench: ${model90m()} random llama, prefill ${PREFILL} tokens, decode ${DECODE} tokens, halfpipe --kernels ${KERNELS}, llama.cpp F32 KV cache, both on the same thread count; WASM SIMD read bandwidth ${bw} (256 MiB)`,
);
console.log('');
console.log(`| weights | file | threads | halfpipe prefill tok/s | llama.cpp prefill tok/s | ratio | halfpipe decode tok/s | llama.cpp decode tok/s | ratio | decode vs ${THREADS[0]} thread(s) | weight GB/s (halfpipe decode) | of WASM read bandwidth | peak RSS / (weights + KV), own process, default threads |`);
console.log('|---|---|---|---|---|---|---|---|---|---|---|---|---|');
for (const r of rows) console.log(r);

function model90m(): string {
  return `dim ${SHAPE.hidden_size}, ${SHAPE.num_hidden_layers} layers, mlp ${SHAPE.intermediate_size}, ${SHAPE.num_attention_heads}/${SHAPE.num_key_value_heads} heads`;
}
