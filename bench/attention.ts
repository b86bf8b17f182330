/**
 * Decode attention: 1 new token against `positions` cached ones (default 2048), 32 query heads x 128
 * over `kvHeads` kv heads (default 32: MHA, LLaMA-7B; 8: grouped-query, LLaMA-3-8B), f32 and f16 KV
 * in a wasm-storage KvCache; the wasm kernel on 1 and 2 threads against the reference
 * (src/ops/attention.ts). Prints best and median of `rounds` calls, in ms.
 *
 *   npm run build && node dist/bench/attention.js [positions] [rounds] [kvHeads]
 */
import { KvCache } from '../src/generate/kv-cache.js';
import { attentionWasm } from '../src/kernels/wasm/attention.js';
import { poolReady, setThreads } from '../src/kernels/wasm/pool.js';
import { attention, type AttentionParams } from '../src/ops/attention.js';

const positions = Number(process.argv[2] ?? 2048);
const rounds = Number(process.argv[3] ?? 20);
const nHeads = 32;
const nKvHeads = Number(process.argv[4] ?? nHeads);
const headDim = 128;
if (!Number.isInteger(nKvHeads) || nKvHeads < 1 || nHeads % nKvHeads !== 0) throw new Error(`kvHeads must divide ${nHeads}, got ${process.argv[4]}`);

function time(fn: () => void, n: number): { min: number; median: number } {
  fn();
  const xs: number[] = [];
  for (let i = 0; i < n; i++) {
    const t0 = performance.now();
    fn();
    xs.push(performance.now() - t0);
  }
  xs.sort((a, b) => a - b);
  return { min: xs[0]!, median: xs[xs.length >> 1]! };
}

await poolReady();
console.log(`decode attention, 1 token vs ${positions} positions, ${nHeads} query / ${nKvHeads} kv heads x ${headDim} (ms: best / median of ${rounds})`);
for (const dtype of ['f32', 'f16'] as const) {
  const cache = new KvCache({ nLayers: 1, nKvHeads, headDim, capacity: positions, dtype, storage: 'wasm' });
  const width = nHeads * headDim;
  const kv = Float32Array.from({ length: positions * nKvHeads * headDim }, (_, i) => Math.sin(i * 0.37));
  cache.write(0, 0, positions, kv, kv);
  cache.advance(positions);
  const p: AttentionParams = {
    out: new Float32Array(width),
    q: Float32Array.from({ length: width }, (_, i) => Math.cos(i * 0.11) * 0.3),
    keys: cache.keys(0),
    values: cache.values(0),
    positions: Int32Array.of(positions - 1),
    length: positions,
    nHeads,
    nKvHeads,
    headDim,
    scratch: new Float64Array(positions + headDim),
  };
  const row = (name: string, r: { min: number; median: number }) => console.log(`  ${dtype} KV  ${name.padEnd(18)} ${r.min.toFixed(3)} / ${r.median.toFixed(3)}`);
  row('reference', time(() => attention(p), Math.min(rounds, 5)));
  for (const threads of [1, 2]) {
    setThreads(threads);
    row(`wasm ${threads} thread(s)`, time(() => attentionWasm(p), rounds));
  }
  cache.dispose();
}
