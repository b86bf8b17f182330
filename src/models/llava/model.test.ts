import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { HalfpipeError } from '../../core/errors.js';
import { ropeReference } from '../../ops/rope/reference.js';
import { Rope, type RopeInputs, type RopeOutputs } from '../../ops/rope/rope.js';
import type { RgbImage } from '../../vision/image.js';
import type { LlamaModel } from '../llama/model.js';
import { loadModel } from '../load.js';
import { writeTinyModel } from '../tiny.js';
import { anyresFeatureCount } from '../../vision/preprocess.js';
import { firstBadOp, renderHtml, renderTerminalSummary, traceJson, type TraceJson, validateTraceJson, VISION_LAYER_PROBES } from '../../monitor/index.js';
import { ClipVisionModel } from '../clip/model.js';
import { ClipImageEncoder, LlavaModel, LlavaSession } from './model.js';
import { nextLayout } from './next.js';
import { TINY_NEXT_PINPOINTS, tinyMmprojPath, writeTinyLlava } from './tiny.js';

let dir: string;
let hf: LlavaModel;
let gguf: LlavaModel;

before(async () => {
  dir = mkdtempSync(join(tmpdir(), 'halfpipe-llava-'));
  writeTinyModel({ arch: 'llava', format: 'hf', out: join(dir, 'hf'), seed: 3 });
  writeTinyModel({ arch: 'llava', format: 'gguf', out: join(dir, 'tiny.gguf'), seed: 3 });
  hf = asLlava(await loadModel(join(dir, 'hf'), { policy: 'f32' }));
  gguf = asLlava(await loadModel(join(dir, 'tiny.gguf'), { policy: 'f32' }));
});
after(() => rmSync(dir, { recursive: true, force: true }));

function asLlava(m: unknown): LlavaModel {
  assert.ok(m instanceof LlavaModel, 'loadModel returns a LlavaModel');
  return m;
}

/** A deterministic synthetic RGB image (gradients and a pattern that depends on `seed`). */
function image(width: number, height: number, seed: number): RgbImage {
  const data = new Uint8Array(width * height * 3);
  for (let y = 0; y < height; y++)
    for (let x = 0; x < width; x++) {
      const i = (y * width + x) * 3;
      data[i] = (x * 255) / width + seed * 40;
      data[i + 1] = (y * 255) / height;
      data[i + 2] = ((x * y + seed * 17) % 7) * 36;
    }
  return { width, height, data };
}

const PROMPT = 'USER: <image>\nWhat does the keeper see? ASSISTANT:';
const IMAGE = image(70, 50, 1);

function maxRelDiff(a: Float32Array, b: Float32Array): number {
  assert.equal(a.length, b.length);
  let diff = 0;
  let scale = 0;
  for (let i = 0; i < a.length; i++) {
    diff = Math.max(diff, Math.abs(a[i]! - b[i]!));
    scale = Math.max(scale, Math.abs(b[i]!));
  }
  return diff / scale;
}

function argmaxRows(logits: Float32Array, vocab: number): number[] {
  const out: number[] = [];
  for (let r = 0; r < logits.length / vocab; r++) {
    let best = 0;
    for (let i = 1; i < vocab; i++) if (logits[r * vocab + i]! > logits[r * vocab + best]!) best = i;
    out.push(best);
  }
  return out;
}

test('tiny llava: HF config, the <image> token, 16 image rows per 56 px image', () => {
  assert.equal(hf.info.architecture, 'LlavaForConditionalGeneration');
  assert.equal(hf.imageTokenId, 512);
  assert.equal(hf.tokenizer.encode('<image>', { addSpecial: false }).join(), '512');
  assert.equal(gguf.imageTokenId, 512);
  assert.ok(existsSync(tinyMmprojPath(join(dir, 'tiny.gguf'))));
  const p = hf.prepare(PROMPT, [IMAGE]);
  assert.equal(p.spans.length, 1);
  assert.equal(p.spans[0]!.rows, 16);
  assert.equal(p.ids.filter((id) => id === 512).length, 16);
  assert.equal(p.embeddings[0]!.data.length, 16 * hf.config.dim);
});

test('HF llava and GGUF + mmproj llava: same ids and logits on the same image + text prompt', () => {
  const a = hf.prepare(PROMPT, [IMAGE]);
  const b = gguf.prepare(PROMPT, [IMAGE]);
  assert.deepEqual(a.ids, b.ids);
  assert.ok(maxRelDiff(a.embeddings[0]!.data, b.embeddings[0]!.data) < 1e-6, 'image features');
  const la = hf.logits(PROMPT, { images: [IMAGE] });
  const lb = gguf.logits(PROMPT, { images: [IMAGE] });
  assert.ok(maxRelDiff(la, lb) < 1e-5, `logits differ by ${maxRelDiff(la, lb)}`);
});

test('the image matters: another image changes the logits after it, not before it', () => {
  const a = hf.logits(PROMPT, { images: [IMAGE] });
  const b = hf.logits(PROMPT, { images: [image(70, 50, 2)] });
  const V = hf.config.vocabSize;
  const { spans } = hf.prepare(PROMPT, [IMAGE]);
  const at = spans[0]!.at;
  assert.deepEqual(a.subarray(0, at * V), b.subarray(0, at * V));
  assert.ok(maxRelDiff(a.subarray(at * V), b.subarray(at * V)) > 1e-3);
});

test('several images, chat messages with image parts, and count mismatches through the model', () => {
  const two = hf.prepare('USER: <image> and <image>\ncompare ASSISTANT:', [IMAGE, image(40, 90, 3)]);
  assert.deepEqual(two.spans.map((s) => s.image), [0, 1]);
  assert.ok(two.spans[1]!.at >= two.spans[0]!.at + 16);
  const chat = hf.prepare({ messages: [{ role: 'user', content: [{ type: 'image' }, { type: 'text', text: 'What is this?' }] }] }, [IMAGE]);
  assert.equal(chat.spans.length, 1);
  assert.equal(hf.tokenizer.decode(chat.ids.slice(0, chat.spans[0]!.at), { skipSpecial: true }).trim(), 'USER:');
  const oneLine = (re: RegExp) => (e: unknown) => e instanceof HalfpipeError && re.test(e.message) && !e.message.includes('\n');
  assert.throws(() => hf.prepare(PROMPT, [IMAGE, IMAGE]), oneLine(/1 <image> placeholder but 2 images were given/));
  assert.throws(() => hf.prepare('USER: <image><image> ASSISTANT:', [IMAGE]), oneLine(/2 <image> placeholders but 1 image was given/));
  assert.throws(() => hf.logits('no image here', { images: [IMAGE] }), oneLine(/0 <image> placeholders but 1 image was given/));
});

/** RoPE whose fused() runs the unfused reference: a test double for the model's rope. */
class ReferenceRope extends Rope {
  calls = 0;
  override fused(inputs: RopeInputs): RopeOutputs {
    this.calls++;
    return ropeReference(this, inputs);
  }
}

/** The same weights with the model's rope replaced (LlamaModel.rope is readonly only to TS). */
function withRope(m: LlavaModel, make: (r: Rope) => Rope): LlamaModel {
  const model = m.withOptions({});
  const r = model.rope;
  (model as { rope: Rope }).rope = make(r);
  return model;
}

test('fused RoPE and the unfused reference RoPE give the same logits on an image + text prompt', () => {
  for (const m of [hf, gguf]) {
    // HF weights use NeoX pairing, GGUF weights GPT-J pairing: both are checked.
    const prepared = m.prepare(PROMPT, [IMAGE]);
    const fused = m.session(prepared).forward(prepared.ids, { allLogits: true });
    const ref = new ReferenceRope({ scaling: m.model.rope.scaling, pairing: m.model.rope.pairing, positionLimit: m.model.rope.positionLimit });
    const refModel = withRope(m, () => ref);
    const session = m.session(prepared, refModel);
    // Prefill in uneven pieces so image rows straddle forward() calls, then decode one token.
    const cut = prepared.spans[0]!.at + 5;
    const part1 = session.forward(prepared.ids.slice(0, cut), { allLogits: true });
    const part2 = session.forward(prepared.ids.slice(cut), { allLogits: true });
    const reference = new Float32Array(part1.length + part2.length);
    reference.set(part1);
    reference.set(part2, part1.length);
    assert.ok(ref.calls > 0, 'the reference rope ran');
    assert.ok(maxRelDiff(fused, reference) < 1e-6, `fused vs reference: ${maxRelDiff(fused, reference)}`);
    assert.deepEqual(argmaxRows(fused, m.config.vocabSize), argmaxRows(reference, m.config.vocabSize));
    // The check can fail: a rope that puts tokens at other positions (twice as far apart; a constant
    // shift would not do, RoPE scores depend on relative positions only) changes the logits.
    class Shifted extends Rope {
      override fused(inputs: RopeInputs): RopeOutputs {
        return ropeReference(this, { ...inputs, positions: inputs.positions.map((p) => 2 * p) });
      }
    }
    const shifted = m.session(prepared, withRope(m, (r) => new Shifted({ scaling: r.scaling, pairing: r.pairing, positionLimit: r.positionLimit }))).forward(prepared.ids, { allLogits: true });
    assert.ok(maxRelDiff(fused, shifted) > 1e-4);
  }
});

test('safe-f16 vs f32: the same top-1 token at (nearly) every position of an image prompt', async () => {
  const f16 = asLlava(await loadModel(join(dir, 'hf'), { policy: 'safe-f16' }));
  assert.equal(f16.info.policy, 'safe-f16');
  const prompt = 'USER: <image>\nThe keeper climbed the steps every evening to light the lamp. ASSISTANT:';
  const a = argmaxRows(hf.logits(prompt, { images: [IMAGE] }), hf.config.vocabSize);
  const b = argmaxRows(f16.logits(prompt, { images: [IMAGE] }), hf.config.vocabSize);
  const agree = a.filter((t, i) => t === b[i]).length;
  assert.equal(a[a.length - 1], b[b.length - 1], 'last position');
  assert.ok(agree / a.length >= 0.95, `top-1 agreement ${agree}/${a.length}`);
  // And the generated tokens (greedy) agree.
  const gen = async (m: LlavaModel) => {
    const it = m.generate(prompt, { images: [IMAGE], maxTokens: 4, temperature: 0 });
    for (;;) {
      const r = await it.next();
      if (r.done) return r.value.tokens;
    }
  };
  assert.deepEqual(await gen(f16), await gen(hf));
});

test('a batch of two prompts (different lengths and images, interleaved sessions) equals running them one at a time', () => {
  const requests = [
    { prompt: PROMPT, images: [IMAGE] },
    { prompt: 'USER: <image> then <image>\nSay which one is brighter, and why. ASSISTANT:', images: [image(30, 80, 4), image(64, 64, 5)] },
  ];
  const batched = hf.batch(requests, { steps: 3, chunk: 7 });
  assert.notEqual(batched[0]!.ids.length, batched[1]!.ids.length);
  requests.forEach((r, i) => {
    const [alone] = hf.batch([r], { steps: 3, chunk: 64 });
    assert.deepEqual(batched[i]!.tokens, alone!.tokens);
    batched[i]!.logits.forEach((l, s) => assert.deepEqual(l, alone!.logits[s], `request ${i} step ${s}`));
    // And equal to one plain forward of the whole prompt.
    const prepared = hf.prepare(r.prompt, r.images);
    assert.deepEqual(new LlavaSession(hf.model, prepared.embeddings).forward(prepared.ids), batched[i]!.logits[0]);
  });
});

test('generate and trace with an image: tokens stream, segments are text / image 0 / generated', async () => {
  const it = hf.generate(PROMPT, { images: [IMAGE], maxTokens: 3, temperature: 0 });
  let r = await it.next();
  while (!r.done) r = await it.next();
  assert.equal(r.value.promptTokens, hf.prepare(PROMPT, [IMAGE]).ids.length);
  const trace = hf.trace(PROMPT, { images: [IMAGE], maxTokens: 2 });
  const names = new Set(trace.report.forwards.flatMap((f) => f.segments.map((s) => s.segment)));
  for (const s of ['text', 'image 0', 'generated']) assert.ok(names.has(s), `segment ${s} in ${[...names].join(', ')}`);
});

test('mmproj: explicit path, auto-detection, and mmproj: false for the text model alone', async () => {
  const explicit = asLlava(await loadModel(join(dir, 'tiny.gguf'), { policy: 'f32', mmproj: tinyMmprojPath(join(dir, 'tiny.gguf')) }));
  assert.equal(explicit.imageTokenId, 512);
  const textOnly = await loadModel(join(dir, 'tiny.gguf'), { policy: 'f32', mmproj: false });
  assert.ok(!(textOnly instanceof LlavaModel));
  await assert.rejects(loadModel(join(dir, 'tiny.gguf'), { mmproj: join(dir, 'tiny.gguf') }), /not an mmproj file/);
});

test('tiny LLaVA-NeXT (HF): anyres rows match the processor count, newline rows in place, logits finite', async () => {
  writeTinyLlava({ format: 'hf', out: join(dir, 'next'), seed: 5 }, 'llava_next');
  const next = asLlava(await loadModel(join(dir, 'next'), { policy: 'f32' }));
  assert.equal(next.info.architecture, 'LlavaNextForConditionalGeneration');
  const encoder = next.encoder as ClipImageEncoder;
  const newline = encoder.next!.newline;
  const dim = next.config.dim;
  const rowsSeen = new Set<number>();
  for (const img of [image(100, 40, 1), image(40, 100, 2), image(90, 90, 3)]) {
    const p = next.prepare(PROMPT, [img]);
    const rows = p.spans[0]!.rows;
    rowsSeen.add(rows);
    assert.equal(rows, anyresFeatureCount(img.height, img.width, { gridPinpoints: TINY_NEXT_PINPOINTS, imageSize: 56, visionPatchSize: 14 }));
    const layout = nextLayout(img.height, img.width, TINY_NEXT_PINPOINTS, 56, 14);
    const data = p.embeddings[0]!.data;
    for (let r = 0; r < layout.rows; r++) {
      const at = (16 + r * (layout.cols + 1) + layout.cols) * dim;
      assert.deepEqual(data.subarray(at, at + dim), newline, `newline after map row ${r}`);
    }
    const logits = next.logits(PROMPT, { images: [img] });
    assert.ok(logits.every(Number.isFinite));
  }
  assert.ok(rowsSeen.size > 1, 'different aspect ratios give different token counts');
});

test('a vocabulary without <image>: the text is split at each <image>, any fill id, same logits', () => {
  const split = new LlavaModel(gguf.model, gguf.tokenizer, gguf.chatTemplate, gguf.info, { ...gguf.llava, imageTokenId: 0 }, gguf.encoder, false);
  const a = split.prepare(PROMPT, [IMAGE]);
  const b = gguf.prepare(PROMPT, [IMAGE]);
  assert.deepEqual(a.spans, b.spans);
  assert.deepEqual(a.ids.map((id) => (id === 512 ? 0 : id)), b.ids.map((id) => (id === 512 ? 0 : id)));
  assert.deepEqual(split.logits(PROMPT, { images: [IMAGE] }), gguf.logits(PROMPT, { images: [IMAGE] }));
  assert.throws(() => split.prepare('USER: <image> <image>', [IMAGE]), /2 <image> placeholders but 1 image was given/);
});

test('mmproj auto-detection refuses to guess between several candidates', async () => {
  const sub = join(dir, 'many');
  mkdirSync(sub);
  writeTinyModel({ arch: 'llava', format: 'gguf', out: join(sub, 'a.gguf'), seed: 1 });
  writeTinyModel({ arch: 'llava', format: 'gguf', out: join(sub, 'b.gguf'), seed: 2 });
  writeTinyModel({ format: 'gguf', out: join(sub, 'plain.gguf'), seed: 1 });
  await assert.rejects(loadModel(join(sub, 'plain.gguf')), (e: unknown) => e instanceof HalfpipeError && /several mmproj files beside plain\.gguf \(mmproj-a\.gguf, mmproj-b\.gguf\)/.test(e.message));
  assert.ok((await loadModel(join(sub, 'a.gguf'))) instanceof LlavaModel);
  assert.ok(!((await loadModel(join(sub, 'plain.gguf'), { mmproj: false })) instanceof LlavaModel));
});

test('trace: every vision op and the projector are probes, one forward per image before the prefill, segment image k', () => {
  const prompt = 'USER: <image> and <image>\nWhat does the keeper see? ASSISTANT:';
  const images = [IMAGE, image(40, 60, 2)];
  const trace = hf.trace(prompt, { images, maxTokens: 2, shadow: 'f32' });
  const fws = trace.report.forwards;
  assert.deepEqual(fws.map((f) => f.label), ['vision image 0', 'vision image 1', 'prefill', 'decode 0']);
  const encoder = hf.encoder as ClipImageEncoder;
  assert.equal(encoder.vision.probe, undefined, 'the model keeps its probe-free encoder');
  const nv = Math.max(...encoder.vision.featureLayers);
  const expected: string[] = ['vision.embeddings@-1', 'vision.pre_ln@-1'];
  for (let l = 0; l < nv; l++) for (const n of VISION_LAYER_PROBES) expected.push(`${n}@${l}`);
  expected.push('projector.linear_1@-1', 'projector.act@-1', 'projector.linear_2@-1');
  for (const k of [0, 1]) {
    const fw = fws[k]!;
    assert.deepEqual(fw.probes.map((p) => `${p.probe}@${p.layer}`), expected, `image ${k} probes in execution order`);
    assert.ok(fw.probes.every((p, i) => i === 0 || p.seq > fw.probes[i - 1]!.seq));
    assert.deepEqual([...new Set(fw.segments.map((s) => s.segment))], [`image ${k}`]);
    assert.equal(fw.segments.length, expected.length);
    const rows = encoder.vision.outputRows;
    assert.equal(fw.probes.find((p) => p.probe === 'projector.linear_2')!.tokens, rows, 'projector rows are the patches');
  }
  assert.ok(fws[2]!.probes[0]!.probe === 'embeddings' && fws[2]!.probes.every((p) => !p.probe.includes('.')), 'text forwards hold text probes');
  assert.equal(trace.report.firstNonFinite, null);
  // Headroom per layer: vision layers, the projector, then text, as separate entries.
  const towers = trace.analyses.headroom.map((h) => (h.probe.startsWith('vision.') ? 'vision' : h.probe.startsWith('projector.') ? 'projector' : 'text'));
  assert.deepEqual([...new Set(towers)], ['vision', 'projector', 'text']);
  assert.equal(towers.filter((t) => t === 'vision').length, nv + 1);
  // The shadow run encodes the images too, and matches (f32 both ways).
  assert.ok(trace.shadow!.forwards[0]!.label === 'vision image 0');
  assert.ok(trace.analyses.shadow!.entries.some((e) => e.probe === 'vision.fc1'));
  assert.equal(trace.analyses.shadow!.firstDivergence, null);
  // Renderings.
  const json = JSON.parse(JSON.stringify(traceJson(trace.report, trace.analyses))) as TraceJson;
  assert.deepEqual(validateTraceJson(json), []);
  assert.equal(json.summary.visionLayers, nv);
  const text = renderTerminalSummary(trace.report, trace.analyses);
  assert.match(text, new RegExp(`${nv} vision layer\\(s\\)`));
  assert.match(text, /vision 0\s+vision\./);
  assert.match(text, /projector\s+projector\./);
  const html = renderHtml(trace.report, trace.analyses);
  assert.match(html, /Vision tower and projector: absmax/);
  assert.match(html, />vision\.fc1</);
});

test('trace: a non-finite value planted in a vision op is the first bad op, in image 0', () => {
  const base = hf.encoder as ClipImageEncoder;
  const w = base.vision.weights;
  const huge = { ...w, layers: w.layers.map((lw, l) => (l === 0 ? { ...lw, fc1Bias: new Float32Array(lw.fc1Bias.length).fill(1e6) } : lw)) };
  const policy = 'f32,vision.layers.0.fc1=f16';
  const vision = new ClipVisionModel(base.vision.config, huge, { policy, featureLayers: base.vision.featureLayers, strategy: base.vision.strategy });
  const encoder = new ClipImageEncoder(vision, base.projector.withOptions({ policy }), base.processor);
  const bad = new LlavaModel(hf.model, hf.tokenizer, hf.chatTemplate, hf.info, hf.llava, encoder);
  const trace = bad.trace(PROMPT, { images: [IMAGE], maxTokens: 1 });
  const op = trace.analyses.firstBadOp!;
  assert.ok(op, 'a first bad op');
  assert.equal(op.probe, 'vision.fc1');
  assert.equal(op.layer, 0);
  assert.equal(op.segment, 'image 0');
  assert.equal(op.forwardLabel, 'vision image 0');
  assert.equal(op.triage, 'precision-overflow');
  assert.deepEqual(op.inputs.map((i) => `${i.probe}@${i.layer}`), ['vision.ln2@0']);
  assert.equal(firstBadOp({ ...trace.report, firstNonFinite: null })!.probe, 'vision.fc1', 'found without the capture too');
  const summary = renderTerminalSummary(trace.report, trace.analyses);
  assert.match(summary, /first bad op: vision\.fc1 \(layer 0\), forward 0 'vision image 0', token \d+ \[image 0\]/);
  const seg = trace.analyses.segments.find((s) => s.segment === 'image 0')!;
  assert.equal(seg.firstNonFinite!.probe, 'vision.fc1');
  assert.deepEqual(validateTraceJson(JSON.parse(JSON.stringify(traceJson(trace.report, trace.analyses)))), []);
});

test('prepareAsync (a layer at a time, with event-loop turns) equals prepare bit for bit; other work runs meanwhile', async () => {
  writeTinyLlava({ format: 'hf', out: join(dir, 'next-async'), seed: 6 }, 'llava_next');
  const next = asLlava(await loadModel(join(dir, 'next-async'), { policy: 'f32' }));
  for (const model of [hf, gguf, next, asLlava(await loadModel(join(dir, 'hf'), { policy: 'f32', kernels: 'reference' }))]) {
    const images = [image(70, 50, 1), image(40, 90, 2)];
    const prompt = 'USER: <image> and <image>\nWhich is brighter? ASSISTANT:';
    const want = model.prepare(prompt, images);
    let turns = 0;
    const ticker = setInterval(() => turns++, 0);
    const got = await model.prepareAsync(prompt, images);
    clearInterval(ticker);
    assert.deepEqual(got.ids, want.ids);
    assert.deepEqual(got.spans, want.spans);
    assert.deepEqual(got.embeddings, want.embeddings);
    assert.ok(turns > 0, 'timers ran while the images were encoded');
  }
  await assert.rejects(hf.prepareAsync(PROMPT, []), (e) => e instanceof HalfpipeError && /image/.test(e.message));
});
