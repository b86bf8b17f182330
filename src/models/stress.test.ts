import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { getLlama, type Token } from 'node-llama-cpp';
import { HalfpipeError } from '../core/errors.js';
import { readGguf } from '../formats/gguf/reader.js';
import { tinyVocab } from '../text/tiny-vocab.js';
import type { LlamaProbeName } from './llama/model.js';
import { type LoadOptions, loadModel, type TextModel } from './load.js';
import { MASSIVE_DEFAULT_LAYERS, triggerTokens, type StressInfo } from './stress.js';
import { writeTinyModel } from './tiny.js';

const F16_MAX = 65504;
const TEXT = 'The keeper lit the lamp. The ship came in.\nShe wrote it down. Ada listened.';
const PROMPT = 'The keeper lit the lamp. The ship';

let dir: string;
before(() => {
  dir = mkdtempSync(join(tmpdir(), 'halfpipe-stress-'));
});
after(() => rmSync(dir, { recursive: true, force: true }));

/** Every probe's output of one forward over `ids`, rows of all chunks concatenated: key `${name}@${layer}`. */
interface Recording {
  model: TextModel;
  ids: number[];
  tensors: Map<string, { rows: number; cols: number; data: Float32Array }>;
  overflowed: Map<string, number>;
}

async function record(path: string, text: string, opts: LoadOptions = {}): Promise<Recording> {
  const parts = new Map<string, Float32Array[]>();
  const overflowed = new Map<string, number>();
  const model = await loadModel(path, {
    ...opts,
    probe: (name: LlamaProbeName, layer: number, data: Float32Array, _shape: readonly number[], ctx?: { overflowed: number }) => {
      const key = `${name}@${layer}`;
      parts.set(key, [...(parts.get(key) ?? []), Float32Array.from(data)]);
      overflowed.set(key, (overflowed.get(key) ?? 0) + (ctx?.overflowed ?? 0));
    },
  });
  const ids = model.tokenizer.encode(text);
  model.logits(ids);
  const tensors = new Map<string, { rows: number; cols: number; data: Float32Array }>();
  for (const [key, chunks] of parts) {
    const data = new Float32Array(chunks.reduce((n, c) => n + c.length, 0));
    let at = 0;
    for (const c of chunks) {
      data.set(c, at);
      at += c.length;
    }
    tensors.set(key, { rows: ids.length, cols: data.length / ids.length, data });
  }
  return { model, ids, tensors, overflowed };
}

function row(rec: Recording, name: LlamaProbeName, layer: number, token: number): Float32Array {
  const t = rec.tensors.get(`${name}@${layer}`);
  assert.ok(t, `no probe output ${name}@${layer}`);
  return t.data.subarray(token * t.cols, (token + 1) * t.cols);
}

const absMax = (v: Float32Array) => v.reduce((m, x) => Math.max(m, Math.abs(x)), 0);
const median = (v: Float32Array) => Float64Array.from(v, Math.abs).sort()[v.length >> 1]!;
/** Channels with |x| >= threshold, ascending. */
const channelsOver = (v: Float32Array, threshold: number) => [...v.keys()].filter((i) => Math.abs(v[i]!) >= threshold);

/** Greedy decode from a fresh session: the tokens and each step's top-1 minus top-2 logit. */
function greedy(model: TextModel, prompt: string, steps: number): { tokens: number[]; gaps: number[] } {
  const session = model.model.newSession();
  let logits = session.forward(model.tokenizer.encode(prompt));
  const tokens: number[] = [];
  const gaps: number[] = [];
  for (let s = 0; s < steps; s++) {
    let best = -Infinity;
    let second = -Infinity;
    let id = -1;
    logits.forEach((v, i) => {
      if (v > best) [second, best, id] = [best, v, i];
      else if (v > second) second = v;
    });
    tokens.push(id);
    gaps.push(best - second);
    if (id < 0) break; // NaN logits
    logits = session.forward([id]);
  }
  return { tokens, gaps };
}

const hashFile = (p: string) => createHash('sha256').update(readFileSync(p)).digest('hex');

test('trigger tokens: BOS, then the "." tokens of each tiny vocabulary', () => {
  for (const kind of ['llama', 'gpt2'] as const) {
    const vocab = tinyVocab(kind);
    const ids = triggerTokens(vocab);
    assert.equal(ids[0], vocab.bosId);
    assert.ok(ids.length >= 2, kind);
    for (const id of ids.slice(1)) assert.match(vocab.tokens[id]!, /^(\.|<0x2E>)(\n|Ċ)*$/, kind);
    assert.ok(ids.some((id) => vocab.tokens[id] === '.'), kind);
  }
});

test('writeTinyModel with stress: default layers, the info in config.json, deterministic bytes, bad configs rejected', () => {
  const a = writeTinyModel({ format: 'hf', out: join(dir, 'det-a'), seed: 3, stress: 'massive-activations' });
  const b = writeTinyModel({ format: 'hf', out: join(dir, 'det-b'), seed: 3, stress: 'massive-activations' });
  const plain = writeTinyModel({ format: 'hf', out: join(dir, 'det-plain'), seed: 3, set: { num_hidden_layers: MASSIVE_DEFAULT_LAYERS } });
  assert.equal(a.config.nLayers, MASSIVE_DEFAULT_LAYERS);
  assert.equal(hashFile(join(a.path, 'model.safetensors')), hashFile(join(b.path, 'model.safetensors')));
  assert.notEqual(hashFile(join(a.path, 'model.safetensors')), hashFile(join(plain.path, 'model.safetensors')));
  const info = a.stress!;
  assert.equal(info.kind, 'massive-activations');
  assert.equal(info.massiveChannels.length, 2);
  assert.equal(new Set([...info.massiveChannels, info.overflowChannel]).size, 3);
  assert.equal(info.massiveLayer, 1);
  assert.equal(info.overflowLayer, MASSIVE_DEFAULT_LAYERS - 2);
  assert.deepEqual(JSON.parse(readFileSync(join(a.path, 'config.json'), 'utf8')).halfpipe_stress, info);
  assert.equal(plain.stress, undefined);
  assert.equal(JSON.parse(readFileSync(join(plain.path, 'config.json'), 'utf8')).halfpipe_stress, undefined);

  // `set` wins over the stress defaults; the overflow layer follows the layer count.
  const deep = writeTinyModel({ format: 'hf', out: join(dir, 'deep'), stress: 'massive-activations', set: { num_hidden_layers: 6 } });
  assert.equal(deep.stress!.overflowLayer, 4);
  const usage = (e: unknown) => e instanceof HalfpipeError && e.code === 'usage';
  assert.throws(() => writeTinyModel({ format: 'hf', out: join(dir, 'shallow'), stress: 'massive-activations', set: { num_hidden_layers: 3 } }), usage);
  assert.throws(() => writeTinyModel({ format: 'hf', out: join(dir, 'bad'), stress: 'nope' as 'massive-activations' }), usage);
});

/** The stress model of seed 0 as HF (llama vocab) and GGUF (gpt2 vocab), f32, with the recorded forward over TEXT. */
const stressed: Array<{ label: string; info: StressInfo; rec: () => Recording }> = [];
let plainRec: Recording;
before(async () => {
  const hf = writeTinyModel({ format: 'hf', out: join(dir, 'stress-hf'), seed: 0, stress: 'massive-activations' });
  const gguf = writeTinyModel({ format: 'gguf', out: join(dir, 'stress.gguf'), seed: 0, vocab: 'gpt2', stress: 'massive-activations' });
  const plain = writeTinyModel({ format: 'hf', out: join(dir, 'plain-hf'), seed: 0, set: { num_hidden_layers: MASSIVE_DEFAULT_LAYERS } });
  const hfRec = await record(hf.path, TEXT);
  const ggufRec = await record(gguf.path, TEXT);
  plainRec = await record(plain.path, TEXT);
  stressed.push({ label: 'hf/llama', info: hf.stress!, rec: () => hfRec }, { label: 'gguf/gpt2', info: gguf.stress!, rec: () => ggufRec });
});

test('massive activations: from layer 1 on, the trigger tokens hold ~2.5k in the same two channels, >= 100x the median', () => {
  for (const { label, info, rec: get } of stressed) {
    const rec = get();
    const { nLayers } = rec.model.config;
    const triggers = rec.ids.flatMap((id, t) => (info.triggerTokens.includes(id) ? [t] : []));
    assert.ok(triggers.length >= 4 && triggers[0] === 0, `${label}: BOS and three "." in ${JSON.stringify(rec.ids)}`);
    for (let l = 0; l < nLayers; l++) {
      for (let t = 0; t < rec.ids.length; t++) {
        const x = row(rec, 'residual_2', l, t);
        const where = `${label} layer ${l} token ${t} (id ${rec.ids[t]})`;
        if (l < info.massiveLayer || !triggers.includes(t)) {
          assert.ok(absMax(x) < 50, `${where}: absmax ${absMax(x)}`);
          continue;
        }
        const expected = l < info.overflowLayer ? info.massiveChannels : [...info.massiveChannels, info.overflowChannel].sort((a, b) => a - b);
        assert.deepEqual(channelsOver(x, 1000), expected, where);
        for (const ch of info.massiveChannels) {
          assert.ok(x[ch]! >= 2000 && x[ch]! <= 3500, `${where}: channel ${ch} = ${x[ch]}`);
          assert.ok(x[ch]! >= 100 * median(x), `${where}: channel ${ch} = ${x[ch]}, median ${median(x)}`);
          // Constant through the later layers: nothing but the writer touches these channels.
          assert.equal(x[ch], row(rec, 'residual_2', info.massiveLayer, t)[ch], where);
        }
      }
    }
    // BOS at position 0 holds exactly massiveValue (f32 rounding aside).
    for (const ch of info.massiveChannels) assert.ok(Math.abs(row(rec, 'residual_2', info.massiveLayer, 0)[ch]! - info.massiveValue) < 0.01, label);
  }
});

test("the overflow layer's down_proj output passes 65504 on every trigger token; every value is finite in f32", () => {
  for (const { label, info, rec: get } of stressed) {
    const rec = get();
    for (const [key, t] of rec.tensors) assert.ok(t.data.every(Number.isFinite), `${label}: ${key} has a non-finite value`);
    for (let l = 0; l < rec.model.config.nLayers; l++) {
      for (let t = 0; t < rec.ids.length; t++) {
        const down = row(rec, 'down', l, t);
        const where = `${label} layer ${l} token ${t} (id ${rec.ids[t]})`;
        if (l === info.overflowLayer && info.triggerTokens.includes(rec.ids[t]!)) {
          assert.deepEqual(channelsOver(down, F16_MAX), [info.overflowChannel], where);
          assert.ok(Math.abs(down[info.overflowChannel]! - info.overflowValue) < 0.01 * info.overflowValue, `${where}: ${down[info.overflowChannel]}`);
        } else {
          // The writer's output (~2.5k) is the only other large one.
          assert.ok(absMax(down) < (l === info.massiveLayer ? 3500 : 50), `${where}: absmax ${absMax(down)}`);
        }
      }
    }
  }
});

test('without the stress edit (same seed and size) no activation is large', () => {
  for (const [key, t] of plainRec.tensors) {
    if (key.startsWith('logits')) continue;
    assert.ok(absMax(t.data) < 50, `${key}: absmax ${absMax(t.data)}`);
  }
});

test('HF and GGUF forms of a stress model compute the same logits; GGUF metadata carries halfpipe.stress.*', async () => {
  const hf = writeTinyModel({ format: 'hf', out: join(dir, 'same-hf'), seed: 2, stress: 'massive-activations' });
  const gguf = writeTinyModel({ format: 'gguf', out: join(dir, 'same.gguf'), seed: 2, stress: 'massive-activations' });
  const a = await loadModel(hf.path);
  const b = await loadModel(gguf.path);
  const ids = a.tokenizer.encode(TEXT);
  const la = a.logits(ids);
  const lb = b.logits(ids);
  let diff = 0;
  let scale = 0;
  la.forEach((v, i) => {
    diff = Math.max(diff, Math.abs(v - lb[i]!));
    scale = Math.max(scale, Math.abs(v));
  });
  assert.ok(diff <= 1e-5 * scale, `max diff ${diff}, scale ${scale}`);
  const meta = readGguf(gguf.path).metadata;
  assert.equal(meta.get('halfpipe.stress.kind'), 'massive-activations');
  assert.deepEqual(meta.get('halfpipe.stress.massive_channels'), gguf.stress!.massiveChannels);
  assert.deepEqual(meta.get('halfpipe.stress.trigger_tokens'), gguf.stress!.triggerTokens);
  assert.equal(meta.get('halfpipe.stress.overflow_layer'), gguf.stress!.overflowLayer);
  assert.equal(meta.get('halfpipe.stress.overflow_channel'), gguf.stress!.overflowChannel);
});

test('greedy tokens are well separated (top-1 minus top-2 logit > 0.05 on most steps)', async () => {
  for (const { label, rec } of stressed) {
    const { gaps } = greedy(rec().model, PROMPT, 24);
    const wide = gaps.filter((g) => g > 0.05).length;
    assert.ok(wide >= 22, `${label}: gaps ${gaps.map((g) => g.toFixed(3)).join(' ')}`);
    assert.ok([...gaps].sort((a, b) => a - b)[12]! > 0.3, `${label}: median gap of ${gaps.join(' ')}`);
  }
});

test('precision policies: naive-f16 overflows at the down_proj (inf, then NaN); safe-f16 stays finite and keeps the greedy tokens', async () => {
  for (const { label, info, rec } of stressed) {
    const path = rec().model.info.path;
    const where = (p: string) => `${label} ${p}`;

    // naive-f16: the first non-finite value is the down output, then the inf residual's norm is NaN.
    const naive = await record(path, TEXT, { policy: 'naive-f16' });
    const firstBad = [...naive.tensors.keys()].find((key) => !naive.tensors.get(key)!.data.every(Number.isFinite));
    assert.equal(firstBad, `down@${info.overflowLayer}`, where('naive-f16'));
    const down = naive.tensors.get(`down@${info.overflowLayer}`)!.data;
    assert.ok(down.some((v) => v === Infinity) && !down.some(Number.isNaN), where('naive-f16 down'));
    assert.equal(naive.overflowed.get(`down@${info.overflowLayer}`), naive.ids.filter((id) => info.triggerTokens.includes(id)).length, where('naive-f16'));
    assert.ok(naive.tensors.get(`attn_norm@${info.overflowLayer + 1}`)!.data.some(Number.isNaN), where('naive-f16 attn_norm'));
    assert.ok(naive.tensors.get('logits@-1')!.data.every(Number.isNaN), where('naive-f16 logits'));

    // safe-f16 (f16 weights and activations, f32 residual, down and logits): finite, same greedy tokens as f32.
    const safe = await record(path, TEXT, { policy: 'safe-f16' });
    for (const [key, t] of safe.tensors) assert.ok(t.data.every(Number.isFinite), where(`safe-f16 ${key}`));
    assert.ok([...safe.overflowed.values()].every((n) => n === 0), where('safe-f16 overflow count'));
    assert.deepEqual(greedy(safe.model, PROMPT, 16).tokens, greedy(rec().model, PROMPT, 16).tokens, where('safe-f16 greedy'));
  }
});

test('llama.cpp (CPU: f32 activations, f16 only as matmul inputs) picks our greedy tokens on the stress model, f32 and f16 weights', async () => {
  const llama = await getLlama({ gpu: false, build: 'never', logLevel: 'error' as never });
  try {
    for (const dtype of ['f32', 'f16'] as const) {
      const path = join(dir, `llamacpp-${dtype}.gguf`);
      writeTinyModel({ format: 'gguf', out: path, seed: 0, dtype, stress: 'massive-activations' });
      // f16 weights load under safe-f16 by default: the policy that keeps what llama.cpp keeps in f32.
      const ours = await loadModel(path);
      const ids = ours.tokenizer.encode(PROMPT);
      const model = await llama.loadModel({ modelPath: path });
      const theirs: number[] = [];
      try {
        const ctx = await model.createContext({ contextSize: 128, batchSize: 128, threads: 1, flashAttention: false, experimentalKvCacheKeyType: 'F32', experimentalKvCacheValueType: 'F32' });
        try {
          // node-llama-cpp brands token ids as `Token`; these are plain ids of our own file.
          for await (const t of ctx.getSequence().evaluate(ids as unknown as Token[], { temperature: 0, yieldEogToken: true })) {
            theirs.push(t as number);
            if (theirs.length >= 16) break;
          }
        } finally {
          await ctx.dispose();
        }
      } finally {
        await model.dispose();
      }
      assert.deepEqual(theirs, greedy(ours, PROMPT, 16).tokens, dtype);
    }
  } finally {
    await llama.dispose();
  }
});
