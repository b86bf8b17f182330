/**
 * Peak resident memory of decoding alone, in a process of its own (bench:decode runs it):
 * node dist/bench/rss.js MODEL PROMPT_TOKENS DECODE_TOKENS prints {"maxRssBytes", "kvBytes"}.
 */
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
console.log(JSON.stringify({ maxRssBytes: process.resourceUsage().maxRSS * 1024, kvBytes }));
