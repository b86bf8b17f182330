/**
 * npm run bench:serve — the HTTP server under load: total generated tokens/s and time to first
 * token (p50/p99) with 1, 4 and 16 concurrent streaming clients, batching on and off.
 *
 * For each batching setting one server is started in-process (startServer, src/server/http.ts)
 * with maxConcurrency = the largest client count, so every client's sequence runs at once and the
 * two settings differ only in the decode step: one decodeBatch pass for all running sequences, or
 * one forward each. Both servers run side by side; each client count is measured on one, then at
 * once on the other. Each client is a raw `fetch` of POST /v1/chat/completions with stream: true
 * whose SSE stream is parsed by hand (sse-client.ts); it sends `--requests` requests back to back,
 * cycling through fixed prompts of mixed length, temperature 0, a fixed seed, max_tokens fixed.
 *
 *   total tok/s     all completion tokens / wall time of the configuration (first request sent to last stream ended)
 *   TTFT            request sent -> first non-empty content delta, p50/p99 over all requests (nearest rank)
 *   decode tok/s    per request (completion tokens - 1) / (last delta - first delta), averaged
 *
 * The clients run in the server's process: forwards are synchronous, so a client sees a token at
 * the end of the engine tick that made it (the same moment a remote client's socket would get it).
 * `--transport engine` drives the Engine (src/server/engine.ts) directly instead, with the same
 * prompts and measurements (TTFT = submit -> first token with text), for comparison.
 *
 * The model is a random-weights tiny llama written deterministically into tmpdir (reused when
 * present): big enough that one decode step reads tens of MB of weights (several ms on a CPU),
 * which is the cost batching shares between sequences; small enough to write and load in seconds.
 *
 *   --clients L      comma-separated concurrent client counts (default 1,4,16)
 *   --batching L     comma-separated of on,off (default on,off)
 *   --max-tokens N   max_tokens of every request (default 64)
 *   --requests R     requests per client per configuration (default auto: max(2, round(16 / clients)))
 *   --threads N      kernel threads (default: all cores)
 *   --dtype T        f32 or f16 weights (default f32)
 *   --transport T    http (default) or engine
 */
import { existsSync, mkdirSync } from 'node:fs';
import { availableParallelism, cpus, loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { parseArgs } from 'node:util';
import { poolReady, setThreads } from '../src/kernels/wasm/pool.js';
import { loadModel, type TextModel } from '../src/models/load.js';
import { writeTinyModel } from '../src/models/tiny.js';
import { Engine } from '../src/server/engine.js';
import { startServer } from '../src/server/http.js';
import { percentile, type StreamTiming, streamChat } from './sse-client.js';

const { values } = parseArgs({
  options: {
    clients: { type: 'string', default: '1,4,16' },
    batching: { type: 'string', default: 'on,off' },
    'max-tokens': { type: 'string', default: '64' },
    requests: { type: 'string', default: 'auto' },
    threads: { type: 'string', default: String(availableParallelism()) },
    dtype: { type: 'string', default: 'f32' },
    transport: { type: 'string', default: 'http' },
  },
});
const CLIENTS = values.clients!.split(',').map(Number);
const BATCHING = values.batching!.split(',').map((s) => {
  if (s !== 'on' && s !== 'off') throw new Error(`bench:serve: --batching takes on,off; got '${s}'`);
  return s === 'on';
});
const MAX_TOKENS = Number(values['max-tokens']);
// 'auto': about 16 requests per configuration (at least 2 per client): ~10-30 s each on 2 quiet cores.
const requestsPerClient = (clients: number): number => (values.requests === 'auto' ? Math.max(2, Math.round(16 / clients)) : Number(values.requests));
const THREADS = Number(values.threads);
const DTYPE = values.dtype as 'f32' | 'f16';
const TRANSPORT = values.transport as 'http' | 'engine';
for (const n of [...CLIENTS, MAX_TOKENS, requestsPerClient(1), THREADS]) if (!Number.isInteger(n) || n < 1) throw new Error('bench:serve: counts must be positive integers');
if (DTYPE !== 'f32' && DTYPE !== 'f16') throw new Error(`bench:serve: --dtype takes f32 or f16, got '${String(DTYPE)}'`);
if (TRANSPORT !== 'http' && TRANSPORT !== 'engine') throw new Error(`bench:serve: --transport takes http or engine, got '${String(TRANSPORT)}'`);
const SEED = 1234;
const MAX_CONCURRENCY = Math.max(...CLIENTS);

// ~24M parameters: 8 layers of dim 512, a 1376-wide MLP, 8 heads over 4 KV heads. In f32 one decode
// step streams ~95 MB of weights (~10-15 ms on 2 cores), the cost a batched pass pays once for
// all sequences; the 512-token vocabulary keeps the head and sampling small next to it.
const SHAPE = { hidden_size: 512, intermediate_size: 1376, num_hidden_layers: 8, num_attention_heads: 8, num_key_value_heads: 4, max_position_embeddings: 2048 };

function modelPath(): string {
  const dir = join(tmpdir(), 'halfpipe-bench');
  mkdirSync(dir, { recursive: true });
  const path = join(dir, `llama-serve-${DTYPE}.gguf`);
  if (!existsSync(path)) {
    process.stderr.write(`writing ${path} ...\n`);
    writeTinyModel({ format: 'gguf', out: path, seed: 7, dtype: DTYPE, set: SHAPE });
  }
  return path;
}

// Fixed prompts of mixed length (short, medium, long), cycled through by each client.
// (The tiny vocabulary has 512 tokens, so text costs about one token per two characters.)
const PROMPTS = [
  'Say hello.',
  'Summarise: the engine reads each weight once for all running sequences.',
  'Tell me a story about a lighthouse.',
  'Continue the text: the little engine reads every weight once and shares it between all the sequences that run together, so more clients cost little.',
];

/** One request's measurements, whatever carried it. */
type Sample = Pick<StreamTiming, 'ttftMs' | 'totalMs' | 'decodeMs' | 'completionTokens'>;
type Send = (prompt: string) => Promise<Sample>;

interface Target {
  send: Send;
  close(): Promise<void>;
}

async function httpTarget(model: TextModel, batching: boolean): Promise<Target> {
  const server = await startServer({ model, modelId: 'bench', port: 0, maxConcurrency: MAX_CONCURRENCY, maxQueue: 1024, batching });
  const send: Send = (prompt) =>
    streamChat(server.url, { model: 'bench', messages: [{ role: 'user', content: prompt }], max_tokens: MAX_TOKENS, temperature: 0, seed: SEED });
  return { send, close: () => server.close() };
}

function engineTarget(model: TextModel, batching: boolean): Target {
  const engine = new Engine(model, { maxConcurrency: MAX_CONCURRENCY, maxQueue: 1024, batching });
  const send: Send = async (prompt) => {
    const t0 = performance.now();
    let first = NaN;
    let last = NaN;
    const result = await engine.submit({
      promptIds: model.promptIds({ messages: [{ role: 'user', content: prompt }] }),
      options: { maxTokens: MAX_TOKENS, temperature: 0, seed: SEED },
      onToken: (t) => {
        if (t.text.length === 0) return;
        const now = performance.now();
        if (Number.isNaN(first)) first = now;
        last = now;
      },
    });
    const end = performance.now();
    return { ttftMs: first - t0, totalMs: end - t0, decodeMs: Number.isNaN(first) ? 0 : last - first, completionTokens: result.tokens.length };
  };
  return { send, close: () => engine.drain() };
}

interface Row {
  clients: number;
  batching: boolean;
  requests: number;
  tokens: number;
  totalTokPerS: number;
  p50: number;
  p99: number;
  decodePerClient: number;
}

/** `clients` loops, each sending its requests back to back; client c starts at prompt c. */
async function runConfig(send: Send, clients: number, batching: boolean): Promise<Row> {
  const samples: Sample[] = [];
  const requests = requestsPerClient(clients);
  const t0 = performance.now();
  await Promise.all(
    Array.from({ length: clients }, async (_, c) => {
      for (let r = 0; r < requests; r++) samples.push(await send(PROMPTS[(c + r) % PROMPTS.length]!));
    }),
  );
  const seconds = (performance.now() - t0) / 1000;
  const tokens = samples.reduce((s, x) => s + x.completionTokens, 0);
  const ttfts = samples.map((s) => s.ttftMs);
  const rates = samples.filter((s) => s.completionTokens > 1 && s.decodeMs > 0).map((s) => (s.completionTokens - 1) / (s.decodeMs / 1000));
  return {
    clients,
    batching,
    requests: samples.length,
    tokens,
    totalTokPerS: tokens / seconds,
    p50: percentile(ttfts, 50),
    p99: percentile(ttfts, 99),
    decodePerClient: rates.length ? rates.reduce((a, b) => a + b, 0) / rates.length : NaN,
  };
}

setThreads(THREADS);
await poolReady();
const path = modelPath();
const model = await loadModel(path);
const promptLengths = PROMPTS.map((p) => model.promptIds({ messages: [{ role: 'user', content: p }] }).length);
const params = (model.info.parameters / 1e6).toFixed(1);
const cpu = cpus()[0]?.model.trim() ?? 'unknown CPU';
// Other processes' load skews every number: say how busy the machine was.
const load = loadavg()[0]!.toFixed(1);

console.log(
  `bench:serve (${TRANSPORT === 'http' ? 'HTTP, streaming chat completions' : 'Engine driven directly, no HTTP'}) — tiny llama ${params}M params ` +
    `(${SHAPE.num_hidden_layers} layers, dim ${SHAPE.hidden_size}, MLP ${SHAPE.intermediate_size}, heads ${SHAPE.num_attention_heads}/${SHAPE.num_key_value_heads} KV, vocab ${model.config.vocabSize}, ${DTYPE} GGUF), ` +
    `${THREADS} kernel thread(s), ${availableParallelism()} cores (${cpu}, load average ${load} at start); max_tokens ${MAX_TOKENS}, ${values.requests === 'auto' ? 'max(2, 16/clients)' : values.requests} request(s) per client, ` +
    `prompts of ${promptLengths.join('/')} tokens, temperature 0, seed ${SEED}, maxConcurrency ${MAX_CONCURRENCY}`,
);
console.log('');
console.log('| clients | batching | requests | tokens | total tok/s | p50 TTFT ms | p99 TTFT ms | mean decode tok/s per client |');
console.log('|---:|:---|---:|---:|---:|---:|---:|---:|');
const rows: Row[] = [];
// Both servers run side by side (the idle one costs nothing) and each client count runs batched
// then unbatched back to back, so a change in the machine's load skews the pair less.
const targets = new Map<boolean, Target>();
for (const batching of BATCHING) {
  const target = TRANSPORT === 'http' ? await httpTarget(model, batching) : engineTarget(model, batching);
  // Warm-up: JIT, worker threads and the first allocations, outside the measurements.
  await target.send(PROMPTS[0]!);
  targets.set(batching, target);
}
for (const clients of CLIENTS) {
  for (const batching of BATCHING) {
    const row = await runConfig(targets.get(batching)!.send, clients, batching);
    rows.push(row);
    console.log(
      `| ${row.clients} | ${batching ? 'on' : 'off'} | ${row.requests} | ${row.tokens} | ${row.totalTokPerS.toFixed(1)} | ${row.p50.toFixed(0)} | ${row.p99.toFixed(0)} | ${row.decodePerClient.toFixed(1)} |`,
    );
  }
}
for (const target of targets.values()) await target.close();
if (BATCHING.includes(true) && BATCHING.includes(false)) {
  console.log('');
  console.log('batched / unbatched total throughput:');
  for (const clients of CLIENTS) {
    const on = rows.find((r) => r.clients === clients && r.batching);
    const off = rows.find((r) => r.clients === clients && !r.batching);
    // One client has nothing to batch (the engine runs one forward either way): its ratio is the machine's noise.
    if (on && off) console.log(`  ${clients} client(s): ${(on.totalTokPerS / off.totalTokPerS).toFixed(2)}x${clients === 1 ? ' (nothing to batch: this is run-to-run noise)' : ''}`);
  }
}
// The kernel pool's workers keep the process alive.
process.exit(0);
