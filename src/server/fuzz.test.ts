/**
 * Random request bodies against a running server (fast-check): whatever arrives, the answer is a
 * success or a 4xx with OpenAI's error JSON and a one-line message, never a 5xx or a dropped
 * connection, and the server goes on serving. Bodies mix valid and invalid values for the fields
 * the server reads, plus arbitrary JSON and arbitrary text.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import fc from 'fast-check';
import { loadModel } from '../models/load.js';
import { writeTinyModel } from '../models/tiny.js';
import { type RunningServer, startServer } from './http.js';

let dir: string;
let server: RunningServer;

before(async () => {
  dir = mkdtempSync(join(tmpdir(), 'halfpipe-fuzz-'));
  const model = await loadModel(writeTinyModel({ format: 'gguf', out: join(dir, 'tiny.gguf'), seed: 4, set: { max_position_embeddings: 96 } }).path);
  server = await startServer({ model, modelId: 'tiny', port: 0, maxTokensCap: 16, maxBodyBytes: 1 << 16 });
});
after(async () => {
  await server.close();
  rmSync(dir, { recursive: true, force: true });
});

/** A value that is sometimes right for the field and often not. */
const anyValue = fc.oneof(fc.jsonValue({ maxDepth: 2 }), fc.constant(null), fc.double(), fc.string({ maxLength: 8 }));
/** Mostly a right value, sometimes anything: so that many bodies are valid and each field is also tried broken. */
const maybe = <T>(arb: fc.Arbitrary<T>) => fc.oneof({ arbitrary: arb, weight: 12 }, { arbitrary: anyValue, weight: 1 });
const content = fc.oneof(
  { arbitrary: fc.string({ maxLength: 40 }), weight: 6 },
  fc.array(
    fc.oneof(
      fc.record({ type: fc.constant('text'), text: maybe(fc.string({ maxLength: 20 })) }),
      fc.record({ type: fc.constant('image_url'), image_url: fc.record({ url: maybe(fc.constantFrom('data:image/png;base64,AAAA', 'data:,x', 'file:///etc/passwd', '/etc/passwd', 'http://x/y.png')) }) }),
      anyValue,
    ),
    { maxLength: 3 },
  ),
  fc.oneof(anyValue),
);
const message = fc.record({ role: maybe(fc.constantFrom('system', 'user', 'assistant', 'user', 'developer')), content });
const common = {
  model: maybe(fc.constantFrom('tiny', 'tiny', 'tiny', 'other')),
  max_tokens: maybe(fc.integer({ min: 1, max: 16 })),
  temperature: maybe(fc.double({ min: 0, max: 2, noNaN: true })),
  top_p: maybe(fc.double({ min: 0, max: 1, noNaN: true })),
  seed: maybe(fc.integer({ min: 0, max: 2 ** 40 })),
  stop: maybe(fc.oneof(fc.string({ minLength: 1, maxLength: 4 }), fc.array(fc.string({ minLength: 1, maxLength: 4 }), { maxLength: 4 }))),
  presence_penalty: maybe(fc.double({ min: -2, max: 2, noNaN: true })),
  frequency_penalty: maybe(fc.double({ min: -2, max: 2, noNaN: true })),
  stream: maybe(fc.boolean()),
  response_format: maybe(fc.record({ type: maybe(fc.constantFrom('text', 'json_object', 'json_object', 'json_schema')) })),
  n: maybe(fc.constantFrom(1, 1, 1, 2)),
};
// Fields other than model and messages/prompt are often left out, as clients do.
const chatBody = fc.record({ ...common, messages: maybe(fc.array(message, { minLength: 1, maxLength: 3 })), logprobs: maybe(fc.boolean()), top_logprobs: maybe(fc.integer({ min: 0, max: 20 })) }, { requiredKeys: ['model', 'messages'] });
const completionBody = fc.record({ ...common, prompt: maybe(fc.oneof(fc.string({ minLength: 1, maxLength: 30 }), fc.array(fc.integer({ min: 0, max: 520 }), { minLength: 1, maxLength: 8 }))), logprobs: maybe(fc.integer({ min: 0, max: 5 })) }, { requiredKeys: ['model', 'prompt'] });
const body = fc.oneof(
  chatBody.map((b) => ({ path: '/v1/chat/completions', text: JSON.stringify(b) })),
  completionBody.map((b) => ({ path: '/v1/completions', text: JSON.stringify(b) })),
  fc.tuple(fc.constantFrom('/v1/chat/completions', '/v1/completions'), fc.oneof(fc.string({ maxLength: 60 }), fc.jsonValue().map((v) => JSON.stringify(v) ?? 'null'))).map(([path, text]) => ({ path, text })),
);

test('random request bodies: a success or a 4xx with a one-line OpenAI error, never a 5xx; the server goes on', async (t) => {
  const statuses = new Map<number, number>();
  await fc.assert(
    fc.asyncProperty(body, async ({ path, text }) => {
      const r = await fetch(`${server.url}${path}`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: text });
      const raw = await r.text();
      statuses.set(r.status, (statuses.get(r.status) ?? 0) + 1);
      assert.ok(r.status < 500, `${r.status} for ${path} ${text}: ${raw}`);
      if (r.status >= 400) {
        const err = (JSON.parse(raw) as { error: { message: string; type: string } }).error;
        assert.equal(typeof err.message, 'string');
        assert.ok(err.message.length > 0 && !err.message.includes('\n'), err.message);
        assert.equal(err.type, 'invalid_request_error');
      } else if ((r.headers.get('content-type') ?? '').startsWith('text/event-stream')) {
        assert.ok(raw.trimEnd().endsWith('data: [DONE]'), raw.slice(-200));
      } else {
        assert.ok(Array.isArray((JSON.parse(raw) as { choices: unknown[] }).choices));
      }
    }),
    { numRuns: 400, seed: 20261129 },
  );
  const health = (await (await fetch(`${server.url}/health`)).json()) as { status: string; running: number; queued: number };
  assert.deepEqual(health, { status: 'ok', running: 0, queued: 0 });
  t.diagnostic(`statuses: ${[...statuses].map(([s, n]) => `${s} x${n}`).join(', ')}`);
  // Both kinds of answer happened: the property is not vacuous.
  assert.ok([...statuses.keys()].some((s) => s < 300) && [...statuses.keys()].some((s) => s >= 400), [...statuses].join(' '));
});
