/**
 * npm run bench:monitor — what the numerics monitor costs: decode time with stats on every op
 * against decode time without a probe, on the same model, runs interleaved in one process.
 *
 *   --decode N   decode steps per run (default 64)
 *   --runs N     runs of each, median reported (default 7)
 */
import { mkdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { parseArgs } from 'node:util';
import type { LlamaModel } from '../src/models/llama/model.js';
import { argmax, loadModel } from '../src/models/load.js';
import { writeTinyModel } from '../src/models/tiny.js';
import { NumericsMonitor } from '../src/monitor/index.js';

const { values } = parseArgs({ options: { decode: { type: 'string', default: '64' }, runs: { type: 'string', default: '7' } } });
const DECODE = Number(values.decode);
const RUNS = Number(values.runs);

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)]!;
}

/** Seconds to prefill 16 tokens then decode DECODE greedy tokens; the monitor sees every forward. */
function decodeSeconds(model: LlamaModel, monitor?: NumericsMonitor): number {
  const session = model.newSession();
  monitor?.beginForward('prefill');
  let logits = session.forward(Array.from({ length: 16 }, (_, i) => 3 + i));
  const t0 = performance.now();
  for (let i = 0; i < DECODE; i++) {
    const next = argmax(logits);
    monitor?.beginForward(`decode ${i}`);
    logits = session.forward([next]);
  }
  return (performance.now() - t0) / 1000;
}

const rows: string[] = [];
const shapes = [
  { name: 'tiny (dim 64, 2 layers)', set: {} },
  { name: 'small (dim 256, 4 layers, mlp 688)', set: { hidden_size: 256, intermediate_size: 688, num_hidden_layers: 4, num_attention_heads: 8, num_key_value_heads: 4 } },
  // bench:decode's ~97M llama: a step costs what real models' steps cost per layer, so the fixed per-probe work weighs less.
  { name: '~97M (dim 768, 14 layers, mlp 2304)', set: { hidden_size: 768, intermediate_size: 2304, num_hidden_layers: 14, num_attention_heads: 12, num_key_value_heads: 4 } },
];
for (const shape of shapes) {
  for (const policy of ['f32', 'safe-f16']) {
    const dir = join(tmpdir(), 'halfpipe-bench', `monitor-${shape.set.hidden_size ?? 64}`);
    mkdirSync(dir, { recursive: true });
    writeTinyModel({ format: 'hf', out: dir, seed: 1, set: shape.set });
    const text = await loadModel(dir, { policy });
    const plain = text.withOptions({});
    const off: number[] = [];
    const on: number[] = [];
    // Warm up both paths so the JIT has compiled each before timing.
    decodeSeconds(plain);
    decodeSeconds(text.withOptions({ probe: new NumericsMonitor({ residualChannels: true }).probe }));
    for (let r = 0; r < RUNS; r++) {
      off.push(decodeSeconds(plain));
      const monitor = new NumericsMonitor({ residualChannels: true, segments: (p) => (p < 16 ? 'text' : 'generated') });
      on.push(decodeSeconds(text.withOptions({ probe: monitor.probe }), monitor));
    }
    const [a, b] = [median(off), median(on)];
    rows.push(`| ${shape.name} | ${policy} | ${((a / DECODE) * 1e3).toFixed(2)} | ${((b / DECODE) * 1e3).toFixed(2)} | ${(((b - a) / a) * 100).toFixed(1)}% |`);
  }
}
console.log(`monitor overhead: decode ${DECODE} tokens after a 16-token prompt, median of ${RUNS} interleaved runs, stats on every op (19 probes per layer) with residual channels and segments`);
console.log('');
console.log('| model | policy | ms/token without probe | ms/token with the monitor | overhead |');
console.log('|---|---|---|---|---|');
for (const r of rows) console.log(r);
