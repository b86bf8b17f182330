/**
 * Peak resident memory of loading and decoding, in a process of its own (bench:decode runs it):
 * node dist/bench/rss.js MODEL PROMPT_TOKENS DECODE_TOKENS prints {"maxRssBytes", "kvBytes",
 * "weightBytes", "ratio"}: weightBytes is the model file's size (a GGUF file, or a checkpoint
 * directory's *.safetensors) and ratio = maxRssBytes / (weightBytes + kvBytes). The peak includes
 * the load: the loader packs each matrix as it reads it, so the loaded and packed models never
 * coexist; what remains above 1.0 is Node itself (~40 MiB), the code, the pool's worker threads
 * (~10 MiB each) and the activations.
 */
import { readdirSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { argmax, loadModel } from '../src/models/load.js';

const [path, prefill, decode] = process.argv.slice(2);
const model = await loadModel(path!);
const session = model.model.newSession();
let logits = session.forward(Array.from({ length: Number(prefill) }, (_, i) => 3 + ((i * 7919) % 500)));
for (let i = 0; i < Number(decode); i++) {
  logits = session.forward([argmax(logits)]);
}
const c = model.config;
const kvBytes = 2 * c.nLayers * c.nKvHeads * c.headDim * (model.model.kvCache === 'f16' ? 2 : 4) * (Number(prefill) + Number(decode));
const maxRssBytes = process.resourceUsage().maxRSS * 1024;
const weightBytes = statSync(path!).isDirectory()
  ? readdirSync(path!)
      .filter((f) => f.endsWith('.safetensors'))
      .reduce((n, f) => n + statSync(join(path!, f)).size, 0)
  : statSync(path!).size;
console.log(JSON.stringify({ maxRssBytes, kvBytes, weightBytes, ratio: Number((maxRssBytes / (weightBytes + kvBytes)).toFixed(3)) }));
