import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { HalfpipeError } from '../../core/errors.js';
import { readGguf } from '../../formats/gguf/reader.js';
import { firstBadOp } from '../../monitor/index.js';
import type { RgbImage } from '../../vision/image.js';
import type { LlamaProbeName } from '../llama/model.js';
import { type LoadOptions, loadModel } from '../load.js';
import { writeTinyModel } from '../tiny.js';
import { type ImageInput, LlavaModel } from './model.js';
import { IMAGE_STRESS_DEFAULT_LAYERS, type ImageStressInfo } from './stress.js';
import { writeTinyLlava } from './tiny.js';

const F16_MAX = 65504;
const IMAGE_PROMPT = 'USER: <image>\nWhat does the keeper see? ASSISTANT:';
const TEXT_PROMPT = 'USER: The keeper lit the lamp. What does she see? ASSISTANT:';

/** A 56x56 RGB gradient: the tiny CLIP's own size. */
function gradient(): RgbImage {
  const data = new Uint8Array(56 * 56 * 3);
  for (let y = 0; y < 56; y++)
    for (let x = 0; x < 56; x++) {
      const i = (y * 56 + x) * 3;
      data[i] = x * 4;
      data[i + 1] = y * 4;
      data[i + 2] = (x + y) * 2;
    }
  return { width: 56, height: 56, data };
}
const IMAGE = gradient();

let dir: string;
let hfPath: string;
let ggufPath: string;
let info: ImageStressInfo;
before(() => {
  dir = mkdtempSync(join(tmpdir(), 'halfpipe-llava-stress-'));
  const hf = writeTinyLlava({ format: 'hf', out: join(dir, 'hf'), seed: 0, stress: 'image-overflow' });
  const gguf = writeTinyLlava({ format: 'gguf', out: join(dir, 'stress.gguf'), seed: 0, stress: 'image-overflow' });
  hfPath = hf.path;
  ggufPath = gguf.path;
  info = hf.imageStress!;
  assert.deepEqual(gguf.imageStress, info);
});
after(() => rmSync(dir, { recursive: true, force: true }));

async function llava(path: string, opts: LoadOptions = {}): Promise<LlavaModel> {
  const m = await loadModel(path, opts);
  assert.ok(m instanceof LlavaModel, 'loadModel returns a LlavaModel');
  return m;
}

/** Every probe's output of one prefill, rows of all chunks concatenated: key `${name}@${layer}`. */
interface Recording {
  model: LlavaModel;
  ids: number[];
  /** [at, at + rows) of the image, or [0, 0) for a text-only prompt */
  image: { at: number; rows: number };
  tensors: Map<string, { cols: number; data: Float32Array }>;
  overflowed: Map<string, number>;
}

async function record(path: string, prompt: string, images: readonly ImageInput[], policy: string): Promise<Recording> {
  const parts = new Map<string, Float32Array[]>();
  const overflowed = new Map<string, number>();
  const model = await llava(path, {
    policy,
    probe: (name: LlamaProbeName, layer: number, data: Float32Array, _shape: readonly number[], ctx?: { overflowed: number }) => {
      const key = `${name}@${layer}`;
      parts.set(key, [...(parts.get(key) ?? []), Float32Array.from(data)]);
      overflowed.set(key, (overflowed.get(key) ?? 0) + (ctx?.overflowed ?? 0));
    },
  });
  const prepared = model.prepare(prompt, images);
  model.logits(prompt, { images });
  const n = prepared.ids.length;
  const tensors = new Map<string, { cols: number; data: Float32Array }>();
  for (const [key, chunks] of parts) {
    const data = new Float32Array(chunks.reduce((k, c) => k + c.length, 0));
    let at = 0;
    for (const c of chunks) {
      data.set(c, at);
      at += c.length;
    }
    tensors.set(key, { cols: data.length / n, data });
  }
  const span = prepared.spans[0];
  return { model, ids: prepared.ids, image: span ? { at: span.at, rows: span.rows } : { at: 0, rows: 0 }, tensors, overflowed };
}

function row(rec: Recording, name: LlamaProbeName, layer: number, token: number): Float32Array {
  const t = rec.tensors.get(`${name}@${layer}`);
  assert.ok(t, `no probe output ${name}@${layer}`);
  return t.data.subarray(token * t.cols, (token + 1) * t.cols);
}

const absMax = (v: Float32Array) => v.reduce((m, x) => Math.max(m, Math.abs(x)), 0);
/** Channels with |x| >= threshold, ascending. */
const channelsOver = (v: Float32Array, threshold: number) => [...v.keys()].filter((i) => Math.abs(v[i]!) >= threshold);
const isImage = (rec: Recording, t: number) => t >= rec.image.at && t < rec.image.at + rec.image.rows;

async function greedy(m: LlavaModel, prompt: string, images: readonly ImageInput[], steps: number): Promise<number[]> {
  const it = m.generate(prompt, { images, maxTokens: steps, temperature: 0 });
  for (;;) {
    const r = await it.next();
    if (r.done) return r.value.tokens;
  }
}

const hashFile = (p: string) => createHash('sha256').update(readFileSync(p)).digest('hex');

test('writeTinyLlava image-overflow: 4 text layers by default, the info in config.json and GGUF metadata, deterministic bytes, bad options refused', () => {
  const a = writeTinyLlava({ format: 'hf', out: join(dir, 'det-a'), seed: 3, stress: 'image-overflow' });
  const b = writeTinyLlava({ format: 'hf', out: join(dir, 'det-b'), seed: 3, stress: 'image-overflow' });
  const plain = writeTinyLlava({ format: 'hf', out: join(dir, 'det-plain'), seed: 3, set: { num_hidden_layers: IMAGE_STRESS_DEFAULT_LAYERS } });
  assert.equal(a.config.nLayers, IMAGE_STRESS_DEFAULT_LAYERS);
  assert.equal(hashFile(join(a.path, 'model.safetensors')), hashFile(join(b.path, 'model.safetensors')));
  assert.notEqual(hashFile(join(a.path, 'model.safetensors')), hashFile(join(plain.path, 'model.safetensors')));
  const s = a.imageStress!;
  assert.equal(s.kind, 'image-overflow');
  assert.equal(new Set([...s.massiveChannels, s.overflowChannel]).size, 3);
  assert.equal(s.overflowLayer, IMAGE_STRESS_DEFAULT_LAYERS - 2);
  assert.ok(s.massiveValue >= 1000 && s.massiveValue < F16_MAX / 8);
  assert.ok(s.overflowValue > F16_MAX && s.overflowValue < 1e5);
  assert.deepEqual(JSON.parse(readFileSync(join(a.path, 'config.json'), 'utf8')).halfpipe_stress, s);
  assert.equal(plain.imageStress, undefined);
  assert.equal(JSON.parse(readFileSync(join(plain.path, 'config.json'), 'utf8')).halfpipe_stress, undefined);
  assert.deepEqual(info, { ...s }, 'the same edit for seeds 0 and 3 (positions depend on sizes only)');

  const meta = readGguf(ggufPath).metadata;
  assert.equal(meta.get('halfpipe.stress.kind'), 'image-overflow');
  assert.deepEqual(meta.get('halfpipe.stress.massive_channels'), info.massiveChannels);
  assert.equal(meta.get('halfpipe.stress.overflow_layer'), info.overflowLayer);
  assert.equal(meta.get('halfpipe.stress.overflow_channel'), info.overflowChannel);

  // `set` wins over the stress defaults; the overflow layer follows the layer count.
  assert.equal(writeTinyLlava({ format: 'hf', out: join(dir, 'deep'), stress: 'image-overflow', set: { num_hidden_layers: 6 } }).imageStress!.overflowLayer, 4);
  const usage = (e: unknown) => e instanceof HalfpipeError && e.code === 'usage';
  assert.throws(() => writeTinyLlava({ format: 'hf', out: join(dir, 'shallow'), stress: 'image-overflow', set: { num_hidden_layers: 1 } }), usage);
  assert.throws(() => writeTinyLlava({ format: 'hf', out: join(dir, 'next'), stress: 'image-overflow' }, 'llava_next'), usage);
  assert.throws(() => writeTinyLlava({ format: 'hf', out: join(dir, 'bad'), stress: 'nope' as 'image-overflow' }), usage);
  // The text model's stress kind is not a LLaVA one.
  assert.throws(() => writeTinyModel({ arch: 'llava', format: 'hf', out: join(dir, 'text-kind'), stress: 'massive-activations' }), usage);
});

test('f32: image tokens hold 2500 in the massive channels in every layer; the overflow down_proj output is finite, ~8e4, on image tokens only', async () => {
  for (const path of [hfPath, ggufPath]) {
    const rec = await record(path, IMAGE_PROMPT, [IMAGE], 'f32');
    const { nLayers } = rec.model.config;
    assert.equal(rec.image.rows, 16);
    for (const [key, t] of rec.tensors) assert.ok(t.data.every(Number.isFinite), `${path}: ${key} has a non-finite value`);
    for (let t = 0; t < rec.ids.length; t++) {
      const where = (l: number) => `${path} layer ${l} token ${t}${isImage(rec, t) ? ' (image)' : ''}`;
      for (let l = 0; l < nLayers; l++) {
        const x = row(rec, 'residual_2', l, t);
        // Exactly: nothing but the projector writes the massive channels.
        for (const ch of info.massiveChannels) assert.equal(x[ch], isImage(rec, t) ? info.massiveValue : 0, where(l));
        const down = row(rec, 'down', l, t);
        if (l === info.overflowLayer && isImage(rec, t)) {
          assert.deepEqual(channelsOver(down, F16_MAX), [info.overflowChannel], where(l));
          const v = down[info.overflowChannel]!;
          assert.ok(Math.abs(v - info.overflowValue) < 0.01 * info.overflowValue && v > 7e4 && v < 1e5, `${where(l)}: ${v}`);
        } else {
          assert.ok(absMax(down) < 50, `${where(l)}: down absmax ${absMax(down)}`);
        }
      }
    }
    // Text tokens of the image prompt stay small everywhere but the logits.
    for (const [key, t] of rec.tensors) {
      if (key.startsWith('logits')) continue;
      for (let i = 0; i < rec.ids.length; i++) {
        if (!isImage(rec, i)) {
          const v = t.data.subarray(i * t.cols, (i + 1) * t.cols);
          assert.ok(absMax(v) < 100, `${key} token ${i}: ${absMax(v)}`);
        }
      }
    }
  }
});

test('a text-only prompt never comes near the f16 range (every activation < 100 in f32)', async () => {
  for (const path of [hfPath, ggufPath]) {
    const rec = await record(path, TEXT_PROMPT, [], 'f32');
    for (const [key, t] of rec.tensors) assert.ok(absMax(t.data) < 100, `${path} ${key}: absmax ${absMax(t.data)}`);
  }
});

test('naive-f16: an image prompt overflows at down_proj on an image token (inf, then NaN); a text-only prompt stays finite', async () => {
  for (const path of [hfPath, ggufPath]) {
    const m = await llava(path, { policy: 'naive-f16' });
    const trace = m.trace(IMAGE_PROMPT, { images: [IMAGE], maxTokens: 4 });
    const bad = firstBadOp(trace.report);
    assert.ok(bad, `${path}: no non-finite value`);
    assert.equal(bad.probe, 'down', bad.message);
    assert.equal(bad.layer, info.overflowLayer, bad.message);
    assert.equal(bad.segment, 'image 0', bad.message);
    assert.equal(bad.channel, info.overflowChannel, bad.message);
    assert.equal(bad.value, Infinity, bad.message);
    assert.equal(bad.triage, 'precision-overflow', bad.message);
    assert.ok(bad.f32Absmax !== null && Math.abs(bad.f32Absmax - info.overflowValue) < 0.01 * info.overflowValue, bad.message);
    assert.deepEqual(trace.tokens, [], 'greedy stops at the non-finite prefill logits');

    // Op by op: inf at the overflow layer's down (one per image token), NaN from the next layer's norm on.
    const rec = await record(path, IMAGE_PROMPT, [IMAGE], 'naive-f16');
    const firstBad = [...rec.tensors.keys()].find((key) => !rec.tensors.get(key)!.data.every(Number.isFinite));
    assert.equal(firstBad, `down@${info.overflowLayer}`);
    const down = rec.tensors.get(`down@${info.overflowLayer}`)!.data;
    assert.ok(down.some((v) => v === Infinity) && !down.some(Number.isNaN));
    assert.equal(rec.overflowed.get(`down@${info.overflowLayer}`), rec.image.rows);
    for (let t = 0; t < rec.ids.length; t++) assert.equal(row(rec, 'down', info.overflowLayer, t)[info.overflowChannel] === Infinity, isImage(rec, t), `token ${t}`);
    assert.ok(rec.tensors.get(`attn_norm@${info.overflowLayer + 1}`)!.data.some(Number.isNaN));
    assert.ok(rec.tensors.get('logits@-1')!.data.some(Number.isNaN));

    // Text only: finite all the way, the same greedy tokens as f32.
    const text = m.trace(TEXT_PROMPT, { maxTokens: 6 });
    assert.equal(firstBadOp(text.report), null);
    assert.equal(text.tokens.length, 6);
    const f32 = await llava(path, { policy: 'f32' });
    assert.deepEqual(text.tokens, f32.trace(TEXT_PROMPT, { maxTokens: 6 }).tokens);
  }
});

test('safe-f16: image and text-only prompts stay finite and greedy-decode the f32 tokens', async () => {
  for (const path of [hfPath, ggufPath]) {
    const safe = await llava(path, { policy: 'safe-f16' });
    const f32 = await llava(path, { policy: 'f32' });
    for (const [prompt, images] of [
      [IMAGE_PROMPT, [IMAGE]],
      [TEXT_PROMPT, []],
    ] as const) {
      const trace = safe.trace(prompt, { images, maxTokens: 6 });
      assert.equal(firstBadOp(trace.report), null, `${path} ${prompt}`);
      assert.equal(trace.tokens.length, 6);
      const tokens = await greedy(safe, prompt, images, 6);
      assert.equal(tokens.length, 6);
      assert.deepEqual(tokens, await greedy(f32, prompt, images, 6), `${path} ${prompt}`);
    }
    // The overflowing value itself: kept in f32 by safe-f16's layers.*.down upcast.
    const rec = await record(path, IMAGE_PROMPT, [IMAGE], 'safe-f16');
    for (const [key, t] of rec.tensors) assert.ok(t.data.every(Number.isFinite), `${path} ${key}`);
    assert.ok([...rec.overflowed.values()].every((n) => n === 0));
    const v = row(rec, 'down', info.overflowLayer, rec.image.at)[info.overflowChannel]!;
    assert.ok(v > F16_MAX && Math.abs(v - info.overflowValue) < 0.01 * info.overflowValue, `${v}`);
  }
});

test('HF and GGUF + mmproj forms of the stress model compute the same logits on an image prompt', async () => {
  const a = (await llava(hfPath, { policy: 'f32' })).logits(IMAGE_PROMPT, { images: [IMAGE] });
  const b = (await llava(ggufPath, { policy: 'f32' })).logits(IMAGE_PROMPT, { images: [IMAGE] });
  let diff = 0;
  let scale = 0;
  a.forEach((v, i) => {
    diff = Math.max(diff, Math.abs(v - b[i]!));
    scale = Math.max(scale, Math.abs(v));
  });
  assert.ok(diff <= 1e-5 * scale, `max diff ${diff}, scale ${scale}`);
});

test('other seeds behave the same: naive-f16 overflows at down on image 0, safe-f16 keeps the f32 tokens', async () => {
  for (const seed of [1, 2, 7]) {
    const path = writeTinyLlava({ format: 'hf', out: join(dir, `seed-${seed}`), seed, stress: 'image-overflow' }).path;
    const bad = firstBadOp((await llava(path, { policy: 'naive-f16' })).trace(IMAGE_PROMPT, { images: [IMAGE], maxTokens: 1 }).report);
    assert.ok(bad && bad.probe === 'down' && bad.layer === info.overflowLayer && bad.segment === 'image 0', `seed ${seed}: ${bad?.message}`);
    assert.equal(firstBadOp((await llava(path, { policy: 'naive-f16' })).trace(TEXT_PROMPT, { maxTokens: 4 }).report), null, `seed ${seed} text`);
    const safe = await greedy(await llava(path, { policy: 'safe-f16' }), IMAGE_PROMPT, [IMAGE], 4);
    assert.deepEqual(safe, await greedy(await llava(path, { policy: 'f32' }), IMAGE_PROMPT, [IMAGE], 4), `seed ${seed}`);
  }
});
