/**
 * The serving engine on a tiny model: batching must not change any request's tokens or logprobs,
 * a cancelled request gives its KV cache back, a full queue refuses, and a non-finite step fails
 * only its own request.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { HalfpipeError } from '../core/errors.js';
import { wasmHeap } from '../kernels/wasm/heap.js';
import { loadModel, type TextModel } from '../models/load.js';
import { writeTinyModel } from '../models/tiny.js';
import { Engine, type EngineRequest, type EngineResult, QueueFullError } from './engine.js';

const dir = mkdtempSync(join(tmpdir(), 'halfpipe-engine-'));
test.after(() => rmSync(dir, { recursive: true, force: true }));
const model: TextModel = await loadModel(writeTinyModel({ format: 'gguf', out: join(dir, 'tiny.gguf'), seed: 3, set: { max_position_embeddings: 128 } }).path);

const prompts = ['The keeper', 'A ship came in from the', 'lamp', 'The light over the water was', 'Night', 'The'];
const request = (i: number): EngineRequest => ({
  promptIds: model.promptIds(prompts[i % prompts.length]!),
  options: { maxTokens: 6 + (i % 4), temperature: 1, topK: 0, topP: 1, minP: 0, seed: 100 + i, logprobs: 2 },
});
const summary = (r: EngineResult) => ({ tokens: r.tokens, text: r.text, logprobs: r.logprobs, finish: r.finishReason });

test('batched decoding gives every request exactly what it gets alone (same seeds), in fewer passes', async () => {
  const alone = new Engine(model, { batching: false, maxConcurrency: 1 });
  const want = [];
  for (let i = 0; i < 6; i++) want.push(summary(await alone.submit(request(i))));
  const batched = new Engine(model, { batching: true, maxConcurrency: 6 });
  const got = (await Promise.all(Array.from({ length: 6 }, (_, i) => batched.submit(request(i))))).map(summary);
  assert.deepEqual(got, want);
  // Decode steps of different requests shared passes.
  assert.ok(batched.stats.decodePasses < batched.stats.decodeRows, `${batched.stats.decodePasses} passes for ${batched.stats.decodeRows} rows`);
  assert.deepEqual(batched.load, { running: 0, queued: 0 });
});

test('streamed tokens add up to the result; a cancelled request ends as cancelled and frees its KV cache', async () => {
  const engine = new Engine(model, { maxConcurrency: 2 });
  const streamed: string[] = [];
  const done = await engine.submit({ ...request(1), onToken: (t) => streamed.push(t.text) });
  assert.equal(streamed.join('') + done.tail, done.text);

  const before = wasmHeap().bytesInUse;
  const controller = new AbortController();
  let seen = 0;
  const cancelled = engine.submit({
    promptIds: request(0).promptIds,
    options: { maxTokens: 100, temperature: 0 },
    signal: controller.signal,
    onToken: () => {
      if (++seen === 3) controller.abort();
    },
  });
  const other = engine.submit(request(2));
  const [c, o] = await Promise.all([cancelled, other]);
  assert.equal(c.finishReason, 'cancelled');
  assert.equal(c.tokens.length, 3);
  assert.ok(o.tokens.length > 0);
  assert.deepEqual(engine.load, { running: 0, queued: 0 });
  assert.equal(wasmHeap().bytesInUse, before, 'every KV cache went back to the heap');
});

test('a full queue refuses at once; bad requests throw before queueing', async () => {
  const engine = new Engine(model, { maxConcurrency: 1, maxQueue: 1 });
  const long = { promptIds: request(0).promptIds, options: { maxTokens: 20, temperature: 0 } };
  const a = engine.submit(long);
  const b = engine.submit(long);
  await assert.rejects(engine.submit(long), (e) => e instanceof QueueFullError && /busy/.test(e.message));
  await Promise.all([a, b]);
  assert.throws(() => engine.submit({ promptIds: Array.from({ length: 129 }, () => 5), options: {} }), /the prompt has 129 tokens but the context holds 128/);
  assert.throws(() => engine.submit({ promptIds: [], options: {} }), /the prompt is empty/);
  // The budget is cut to the room left in the context.
  const full = await engine.submit({ promptIds: Array.from({ length: 126 }, () => 5), options: { maxTokens: 50, temperature: 0 } });
  assert.ok(full.tokens.length <= 2);
});

test('image prompts read in the same passes as text requests give what they give alone', async () => {
  const llava = (await loadModel(writeTinyModel({ arch: 'llava', format: 'hf', out: join(dir, 'llava'), seed: 2 }).path)) as import('../models/llava/model.js').LlavaModel;
  const image = (shade: number) => ({ width: 12, height: 10, data: new Uint8Array(12 * 10 * 3).map((_, i) => (i * shade) % 251) });
  const requests = [0, 1, 2, 3].map((i): EngineRequest => {
    const prepared = llava.prepare(i % 2 === 0 ? `<image> Describe ${i}` : `Just text ${i}`, i % 2 === 0 ? [image(i + 3)] : []);
    return { promptIds: prepared.ids, session: () => llava.session(prepared), options: { maxTokens: 5, temperature: 1, seed: i, logprobs: 1 } };
  });
  const alone = new Engine(llava, { batching: false, maxConcurrency: 1 });
  const want = [];
  for (const r of requests) want.push(summary(await alone.submit(r)));
  const batched = new Engine(llava, { maxConcurrency: 4 });
  assert.deepEqual((await Promise.all(requests.map((r) => batched.submit(r)))).map(summary), want);
  assert.ok(batched.stats.decodePasses < batched.stats.decodeRows);
});

test('a pass the batch refuses as a whole is redone one sequence at a time: every request still completes, as alone', async () => {
  // A session of another LlamaModel object (same weights) cannot share a pass with the engine's.
  const other = model.withOptions({});
  const odd = (i: number): EngineRequest => ({ ...request(i), session: () => other.newSession() });
  const alone = new Engine(model, { batching: false, maxConcurrency: 1 });
  const want = [summary(await alone.submit(odd(0))), summary(await alone.submit(request(1)))];
  const batched = new Engine(model, { maxConcurrency: 2 });
  assert.deepEqual((await Promise.all([batched.submit(odd(0)), batched.submit(request(1))])).map(summary), want);
});

test('a non-finite step fails its own request with the op named; the others go on', async () => {
  const stress = await loadModel(writeTinyModel({ arch: 'llava', format: 'hf', out: join(dir, 'stress'), seed: 0, stress: 'image-overflow' }).path, { policy: 'naive-f16' });
  const llava = stress as import('../models/llava/model.js').LlavaModel;
  const image = { width: 8, height: 8, data: new Uint8Array(8 * 8 * 3).fill(200) };
  const prepared = llava.prepare('<image> The', [image]);
  const engine = new Engine(stress, { maxConcurrency: 4 });
  const bad = engine.submit({ promptIds: prepared.ids, session: () => llava.session(prepared), guard: llava.imageGuard(prepared), options: { maxTokens: 4, temperature: 0 } });
  const good = engine.submit({ promptIds: stress.promptIds('The keeper'), options: { maxTokens: 4, temperature: 0 } });
  await assert.rejects(bad, (e) => e instanceof HalfpipeError && e.code === 'numerics' && /down \(layer 2\)/.test(e.message) && !e.message.includes('\n'));
  assert.ok((await good).tokens.length > 0);
});
