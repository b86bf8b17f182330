import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, truncateSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { HalfpipeError } from '../core/errors.js';
import { loadModel } from './load.js';
import { TINY_QUANTS, writeTinyModel } from './tiny.js';

let dir: string;
before(() => {
  dir = mkdtempSync(join(tmpdir(), 'halfpipe-load-'));
});
after(() => rmSync(dir, { recursive: true, force: true }));

const rejects = async (p: Promise<unknown>, pattern: RegExp) =>
  assert.rejects(p, (e: unknown) => e instanceof HalfpipeError && pattern.test(e.message) && !e.message.includes('\n'));

function maxRelDiff(a: Float32Array, b: Float32Array): number {
  let diff = 0;
  let scale = 0;
  for (let i = 0; i < a.length; i++) {
    diff = Math.max(diff, Math.abs(a[i]! - b[i]!));
    scale = Math.max(scale, Math.abs(b[i]!));
  }
  return diff / scale;
}

const hashFile = (p: string) => createHash('sha256').update(readFileSync(p)).digest('hex');

test('tiny models are deterministic: the same seed writes the same bytes', () => {
  const a = writeTinyModel({ format: 'gguf', out: join(dir, 'a.gguf'), seed: 7 });
  const b = writeTinyModel({ format: 'gguf', out: join(dir, 'b.gguf'), seed: 7 });
  const c = writeTinyModel({ format: 'gguf', out: join(dir, 'c.gguf'), seed: 8 });
  assert.equal(hashFile(a.path), hashFile(b.path));
  assert.notEqual(hashFile(a.path), hashFile(c.path));
  writeTinyModel({ format: 'hf', out: join(dir, 'h1'), seed: 7 });
  writeTinyModel({ format: 'hf', out: join(dir, 'h2'), seed: 7 });
  for (const f of ['model.safetensors', 'tokenizer.json', 'config.json']) assert.equal(hashFile(join(dir, 'h1', f)), hashFile(join(dir, 'h2', f)));
});

test('the same weights as HF safetensors and as GGUF give the same logits (the Q/K permutation is right)', async () => {
  for (const set of [{}, { num_key_value_heads: 1 }, { tie_word_embeddings: true, num_attention_heads: 2, num_key_value_heads: 2 }]) {
    writeTinyModel({ format: 'hf', out: join(dir, 'same-hf'), seed: 3, set });
    writeTinyModel({ format: 'gguf', out: join(dir, 'same.gguf'), seed: 3, set });
    const hf = await loadModel(join(dir, 'same-hf'));
    const gguf = await loadModel(join(dir, 'same.gguf'));
    assert.equal(hf.config.ropePairing, 'neox');
    assert.equal(gguf.config.ropePairing, 'gptj');
    const ids = hf.tokenizer.encode('The keeper climbed the steps to light the lamp.');
    assert.deepEqual(gguf.tokenizer.encode('The keeper climbed the steps to light the lamp.'), ids);
    assert.ok(maxRelDiff(gguf.logits(ids), hf.logits(ids)) <= 1e-6, JSON.stringify(set));
  }
});

test('every dtype and quant type loads and generates, close to the f32 model', async () => {
  const ids = [1, 320, 439, 436, 300];
  writeTinyModel({ format: 'hf', out: join(dir, 'ref'), seed: 5 });
  const reference = (await loadModel(join(dir, 'ref'))).logits(ids);
  for (const dtype of ['f32', 'f16', 'bf16'] as const) {
    writeTinyModel({ format: 'hf', out: join(dir, `hf-${dtype}`), seed: 5, dtype });
    writeTinyModel({ format: 'gguf', out: join(dir, `${dtype}.gguf`), seed: 5, dtype });
    for (const path of [join(dir, `hf-${dtype}`), join(dir, `${dtype}.gguf`)]) {
      const m = await loadModel(path);
      assert.deepEqual(m.info.weightTypes, { [dtype]: 16 }, path);
      // bf16 keeps 8 bits of mantissa: the bound is that of the weights' own rounding.
      const bound = { f32: 1e-6, f16: 5e-3, bf16: 4e-2 }[dtype];
      assert.ok(maxRelDiff(m.logits(ids), reference) <= bound, `${path}: ${maxRelDiff(m.logits(ids), reference)}`);
    }
  }
  // The HF loader can also convert an f32 checkpoint's weights on load.
  const converted = await loadModel(join(dir, 'ref'), { dtype: 'bf16' });
  assert.deepEqual(converted.info.weightTypes, { bf16: 16 });
  for (const quant of TINY_QUANTS) {
    const path = writeTinyModel({ format: 'gguf', out: join(dir, `${quant}.gguf`), seed: 5, quant }).path;
    const m = await loadModel(path);
    assert.deepEqual(m.info.weightTypes, { [quant]: 16 }, quant);
    const it = m.generate(ids, { maxTokens: 4, temperature: 0 });
    let r = await it.next();
    while (!r.done) r = await it.next();
    assert.equal(r.value.tokens.length + (r.value.finishReason === 'eos' ? 1 : 0) <= 4, true);
    assert.ok(r.value.finishReason === 'length' || r.value.finishReason === 'eos');
  }
});

test('a seed gives identical output on every run; stop strings and max tokens end generation', async () => {
  writeTinyModel({ format: 'hf', out: join(dir, 'seeded'), seed: 2 });
  const m = await loadModel(join(dir, 'seeded'));
  const run = async (opts: Parameters<typeof m.generate>[1]) => {
    const it = m.generate('The lighthouse', opts);
    let r = await it.next();
    while (!r.done) r = await it.next();
    return r.value;
  };
  const a = await run({ seed: 42, temperature: 1, maxTokens: 24 });
  const b = await run({ seed: 42, temperature: 1, maxTokens: 24 });
  const c = await run({ seed: 43, temperature: 1, maxTokens: 24 });
  assert.deepEqual(a.tokens, b.tokens);
  assert.notDeepEqual(a.tokens, c.tokens);
  assert.equal(a.finishReason, 'length');
  assert.equal(a.tokens.length, 24);
  const stopAt = a.text.slice(3, 5);
  const stopped = await run({ seed: 42, temperature: 1, maxTokens: 24, stop: [stopAt] });
  assert.equal(stopped.finishReason, 'stop');
  assert.equal(stopped.text, a.text.slice(0, a.text.indexOf(stopAt)));
});

test('loader errors are one clear line', async () => {
  await rejects(loadModel(join(dir, 'nope')), /no such model/);
  const bad = join(dir, 'bad-arch');
  writeTinyModel({ format: 'hf', out: bad, seed: 1 });
  const cfg = JSON.parse(readFileSync(join(bad, 'config.json'), 'utf8'));
  writeFileSync(join(bad, 'config.json'), JSON.stringify({ ...cfg, architectures: ['GPT2LMHeadModel'] }));
  await rejects(loadModel(bad), /GPT2LMHeadModel.*LlamaForCausalLM/);
  const truncated = writeTinyModel({ format: 'gguf', out: join(dir, 'cut.gguf'), seed: 1 }).path;
  truncateSync(truncated, 5000);
  await rejects(loadModel(truncated), /./);
  writeFileSync(join(dir, 'junk.gguf'), 'this is not a model file at all');
  await rejects(loadModel(join(dir, 'junk.gguf')), /./);
  const ok = await loadModel(writeTinyModel({ format: 'gguf', out: join(dir, 'ctx.gguf'), seed: 1, set: { max_position_embeddings: 16 } }).path);
  assert.throws(() => ok.logits(Array.from({ length: 17 }, () => 5)), (e: unknown) => e instanceof HalfpipeError && /longer than the context|context/.test(e.message));
  assert.throws(() => ok.logits([1, 100000]), (e: unknown) => e instanceof HalfpipeError);
});

test('input embeddings replace token embeddings exactly (the hook LLaVA image features use)', async () => {
  writeTinyModel({ format: 'hf', out: join(dir, 'embeds'), seed: 4 });
  const m = await loadModel(join(dir, 'embeds'));
  const { dim } = m.config;
  const table = m.model.weights.tokenEmbedding;
  assert.ok(!('kind' in table));
  const rowOf = (id: number) => Float32Array.from((table as import('../core/tensor.js').Tensor).narrow(0, id, 1).toFloat64Array());
  const ids = [1, 300, 5, 5, 5, 301, 302];
  const replaced = [1, 300, 410, 411, 412, 301, 302];
  const data = new Float32Array(3 * dim);
  [410, 411, 412].forEach((id, r) => data.set(rowOf(id), r * dim));
  const viaEmbeddings = m.model.newSession().forward(ids, { allLogits: true, embeddings: [{ at: 2, data }] });
  assert.deepEqual(viaEmbeddings, m.logits(replaced));
  assert.notDeepEqual(viaEmbeddings, m.logits(ids));
  assert.throws(() => m.model.newSession().forward(ids, { embeddings: [{ at: 6, data }] }), /do not fit/);
});

test('the bigram preset: next-token probabilities are the training text bigram frequencies', async () => {
  const { TRAINING_TEXT, tinyVocab } = await import('../text/tiny-vocab.js');
  const { ggufTokenizer } = await import('../text/gguf-tokenizer.js');
  writeTinyModel({ format: 'hf', out: join(dir, 'bigram'), preset: 'bigram' });
  const m = await loadModel(join(dir, 'bigram'));
  const tok = ggufTokenizer(tinyVocab('llama'));
  const V = m.config.vocabSize;
  // Count what follows token `the` in the training text, as written plainly here.
  const ids = TRAINING_TEXT.split('\n').filter((p) => p.trim()).flatMap((p) => tok.encode(p, { addSpecial: true }));
  const t = tok.encode('the lamp', { addSpecial: false })[0]!;
  const counts = new Map<number, number>();
  for (let i = 0; i + 1 < ids.length; i++) if (ids[i] === t && ids[i + 1] !== 1) counts.set(ids[i + 1]!, (counts.get(ids[i + 1]!) ?? 0) + 1);
  const total = [...counts.values()].reduce((a, b) => a + b, 0);
  const logits = m.logits([1, t]).subarray(V);
  let lse = -Infinity;
  for (const v of logits) lse = Math.max(lse, v);
  const sum = logits.reduce((s, v) => s + Math.exp(v - lse), 0);
  for (const [next, c] of counts) {
    const p = Math.exp(logits[next]! - lse) / sum;
    assert.ok(Math.abs(p - (c + 0.05) / (total + 0.05 * V)) < 1e-5, `P(${next} | ${t})`);
  }
});
