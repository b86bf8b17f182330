/**
 * End-to-end tests of the OpenAI-compatible server through the official `openai` npm client (and
 * plain fetch where the client cannot send what we need: malformed JSON, huge bodies, no key).
 *
 * Servers run in-process (startServer with port 0) on tiny random-weights models written into a
 * temp dir. Numbers the server reports are checked against the model itself:
 *  - usage.prompt_tokens is the tokenizer's count of the rendered prompt; completion_tokens is the
 *    number of tokens generated;
 *  - logprobs are log-softmax of the model's own logits (TextModel.logits), computed here in
 *    float64 (max-subtracted, log-sum-exp); the server's values must agree to 1e-9: the logits a
 *    served request sees (prefill, then decode steps, batched or not) are bit-identical to one
 *    full forward, because every kernel is batch-invariant;
 *  - batched serving gives exactly (===) the texts and logprobs of the same requests run alone.
 * No timed assertions: the load test only records its wall time as a diagnostic.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import OpenAI, { APIError } from 'openai';
import { PNG } from 'pngjs';
import { wasmHeap } from '../kernels/wasm/heap.js';
import { LlavaModel } from '../models/llava/model.js';
import { loadModel, type TextModel } from '../models/load.js';
import { writeTinyModel } from '../models/tiny.js';
import { logSoftmax64 } from '../testing/helpers.js';
import { type RunningServer, type ServeOptions, startServer } from './http.js';

let dir: string;
let text: TextModel;
let llava: LlavaModel;
let stressed: LlavaModel;

before(async () => {
  dir = mkdtempSync(join(tmpdir(), 'halfpipe-server-'));
  text = await loadModel(writeTinyModel({ format: 'hf', out: join(dir, 'tiny'), seed: 1, set: { max_position_embeddings: 256 } }).path);
  const lv = await loadModel(writeTinyModel({ arch: 'llava', format: 'hf', out: join(dir, 'llava'), seed: 2 }).path);
  assert.ok(lv instanceof LlavaModel);
  llava = lv;
  const st = await loadModel(writeTinyModel({ arch: 'llava', format: 'hf', out: join(dir, 'stress'), seed: 0, stress: 'image-overflow' }).path, { policy: 'naive-f16' });
  assert.ok(st instanceof LlavaModel);
  stressed = st;
});
after(() => rmSync(dir, { recursive: true, force: true }));

const MODEL = 'tiny';

/** Starts a server on a free port, runs `fn` with an openai client for it, always closes it. */
async function withServer<T>(opts: Partial<ServeOptions>, fn: (server: RunningServer, client: OpenAI) => Promise<T>): Promise<T> {
  const server = await startServer({ model: text, modelId: MODEL, ...opts, port: 0 });
  try {
    return await fn(server, clientFor(server));
  } finally {
    await server.close();
  }
}

// No retries: a 429 or 5xx must reach the test as it is.
const clientFor = (server: RunningServer, apiKey = 'unused') => new OpenAI({ baseURL: `${server.url}/v1`, apiKey, maxRetries: 0, timeout: 60_000 });

const userChat = (content: string): Array<{ role: 'user'; content: string }> => [{ role: 'user', content }];


/** Ids of the k largest entries, ties to the lower id. */
function topIds(lp: Float64Array, k: number): number[] {
  return [...lp.keys()].sort((a, b) => lp[b]! - lp[a]! || a - b).slice(0, k);
}

/**
 * Greedy decoding from the model's own full-sequence logits: per step, the log-softmax row of the
 * last position and the argmax; ends at EOS (not counted, as the server does not count it).
 */
function greedyReference(model: TextModel, promptIds: readonly number[], steps: number): { ids: number[]; rows: Float64Array[]; eos: boolean } {
  const vocab = model.config.vocabSize;
  const seq = [...promptIds];
  const ids: number[] = [];
  const rows: Float64Array[] = [];
  for (let s = 0; s < steps; s++) {
    const all = model.logits(seq);
    const lp = logSoftmax64(all.subarray((seq.length - 1) * vocab, seq.length * vocab));
    rows.push(lp);
    const id = topIds(lp, 1)[0]!;
    if (model.tokenizer.eosIds.includes(id)) return { ids, rows, eos: true };
    ids.push(id);
    seq.push(id);
  }
  return { ids, rows, eos: false };
}

const close = (a: number, b: number, what: string) => assert.ok(Math.abs(a - b) <= 1e-9, `${what}: server ${a}, model ${b}`);

async function collect(stream: AsyncIterable<OpenAI.Chat.Completions.ChatCompletionChunk>): Promise<{ chunks: OpenAI.Chat.Completions.ChatCompletionChunk[]; text: string }> {
  const chunks: OpenAI.Chat.Completions.ChatCompletionChunk[] = [];
  let out = '';
  for await (const c of stream) {
    chunks.push(c);
    out += c.choices[0]?.delta.content ?? '';
  }
  return { chunks, text: out };
}

/** A small RGB gradient PNG as a data: URI (pattern selects which image). */
function pngDataUri(size: number, pattern: number): { uri: string; png: Buffer } {
  const png = new PNG({ width: size, height: size });
  for (let y = 0; y < size; y++)
    for (let x = 0; x < size; x++) {
      const i = (y * size + x) * 4;
      png.data[i] = (x * 4 + pattern * 50) & 255;
      png.data[i + 1] = (y * 4) & 255;
      png.data[i + 2] = ((x + y) * 2 + pattern * 90) & 255;
      png.data[i + 3] = 255;
    }
  const buf = PNG.sync.write(png);
  return { uri: `data:image/png;base64,${buf.toString('base64')}`, png: buf };
}

/** An OpenAI error body: {error: {message (non-empty, one line), type, param, code}}. */
function assertErrorBody(body: unknown, type: string, code?: string | null): void {
  const error = (body as { error?: Record<string, unknown> } | undefined)?.error;
  assert.ok(error && typeof error === 'object', `an {error: {...}} body, got ${JSON.stringify(body)}`);
  assert.equal(typeof error['message'], 'string');
  const message = error['message'] as string;
  assert.ok(message.length > 0 && !message.includes('\n'), `a one-line message, got ${JSON.stringify(message)}`);
  assert.equal(error['type'], type, `type of ${JSON.stringify(error)}`);
  assert.ok('param' in error && 'code' in error, `param and code present in ${JSON.stringify(error)}`);
  if (code !== undefined) assert.equal(error['code'], code, `code of ${JSON.stringify(error)}`);
}

/** Runs an openai call that must fail with `status`; checks the error JSON the client received. */
async function expectApiError(call: () => Promise<unknown>, status: number, type: string, code?: string | null): Promise<APIError> {
  try {
    await call();
  } catch (err) {
    assert.ok(err instanceof APIError, `an APIError, got ${String(err)}`);
    assert.equal(err.status, status, `status of ${err.message}`);
    assertErrorBody({ error: err.error }, type, code);
    return err;
  }
  assert.fail(`expected HTTP ${status}`);
}

/** POST with a raw body (fetch): status and parsed JSON. */
async function postRaw(server: RunningServer, path: string, body: string | Buffer, headers: Record<string, string> = {}): Promise<{ status: number; json: unknown }> {
  const res = await fetch(`${server.url}${path}`, { method: 'POST', headers: { 'content-type': 'application/json', ...headers }, body });
  const raw = await res.text();
  let json: unknown;
  try {
    json = JSON.parse(raw);
  } catch {
    json = raw;
  }
  return { status: res.status, json };
}

async function assertServing(client: OpenAI, model = MODEL): Promise<void> {
  const r = await client.chat.completions.create({ model, messages: userChat('Still there?'), max_tokens: 2, temperature: 0 });
  assert.equal(r.object, 'chat.completion');
  assert.equal(typeof r.choices[0]!.message.content, 'string');
}

test('models and health: /v1/models lists the model id, /health reports the load', async () => {
  await withServer({}, async (server, client) => {
    const list = await client.models.list();
    assert.deepEqual(
      list.data.map((m) => [m.id, m.object, m.owned_by]),
      [[MODEL, 'model', 'halfpipe']],
    );
    const health = await fetch(`${server.url}/health`);
    assert.equal(health.status, 200);
    assert.deepEqual(await health.json(), { status: 'ok', running: 0, queued: 0 });
  });
});

test('chat, non-streaming, greedy: text, usage and top_logprobs equal the model run directly', async () => {
  await withServer({}, async (_server, client) => {
    const messages = userChat('The keeper lit the lamp.');
    const steps = 6;
    const r = await client.chat.completions.create({ model: MODEL, messages, max_tokens: steps, temperature: 0, logprobs: true, top_logprobs: 3 });
    const promptIds = text.promptIds({ messages });
    const ref = greedyReference(text, promptIds, steps);
    const choice = r.choices[0]!;
    assert.equal(r.object, 'chat.completion');
    assert.equal(r.model, MODEL);
    assert.equal(choice.message.role, 'assistant');
    assert.equal(choice.message.content, text.tokenizer.decode(ref.ids));
    assert.equal(choice.finish_reason, ref.eos ? 'stop' : 'length');
    assert.deepEqual(r.usage && [r.usage.prompt_tokens, r.usage.completion_tokens, r.usage.total_tokens], [promptIds.length, ref.ids.length, promptIds.length + ref.ids.length]);
    const content = choice.logprobs?.content;
    assert.ok(content, 'logprobs.content');
    assert.equal(content.length, ref.ids.length);
    content.forEach((step, i) => {
      const lp = ref.rows[i]!;
      close(step.logprob, lp[ref.ids[i]!]!, `step ${i} chosen`);
      assert.equal(step.top_logprobs.length, 3);
      const want = topIds(lp, 3);
      step.top_logprobs.forEach((alt, j) => close(alt.logprob, lp[want[j]!]!, `step ${i} top ${j}`));
      assert.equal(step.top_logprobs[0]!.token, step.token, 'greedy: the chosen token is the top one');
    });
  });
});

test('chat, streaming: role first, finish_reason last, [DONE]; the text equals the non-streaming one; include_usage adds usage', async () => {
  await withServer({}, async (_server, client) => {
    const messages = userChat('Tell me about the sea.');
    const whole = await client.chat.completions.create({ model: MODEL, messages, max_tokens: 8, temperature: 1, seed: 5 });
    const stream = await client.chat.completions.create({ model: MODEL, messages, max_tokens: 8, temperature: 1, seed: 5, stream: true, stream_options: { include_usage: true } });
    const { chunks, text: streamed } = await collect(stream);
    assert.ok(chunks.length >= 2);
    assert.ok(chunks.every((c) => c.object === 'chat.completion.chunk' && c.id === chunks[0]!.id));
    assert.equal(chunks[0]!.choices[0]!.delta.role, 'assistant');
    const usageChunk = chunks.at(-1)!;
    assert.equal(usageChunk.choices.length, 0, 'the usage chunk has no choices');
    assert.deepEqual(usageChunk.usage, whole.usage);
    const withChoices = chunks.filter((c) => c.choices.length > 0);
    assert.equal(withChoices.at(-1)!.choices[0]!.finish_reason, whole.choices[0]!.finish_reason);
    assert.ok(withChoices.slice(0, -1).every((c) => c.choices[0]!.finish_reason === null));
    assert.equal(streamed, whole.choices[0]!.message.content);
  });
});

test('completions: string prompt (usage = tokenizer count), logprobs against the model, token-id prompt, streaming', async () => {
  await withServer({}, async (_server, client) => {
    const prompt = 'Once upon a time';
    const promptIds = text.promptIds(prompt);
    const steps = 5;
    const ref = greedyReference(text, promptIds, steps);
    const r = await client.completions.create({ model: MODEL, prompt, max_tokens: steps, temperature: 0, logprobs: 2 });
    const choice = r.choices[0]!;
    assert.equal(r.object, 'text_completion');
    assert.equal(choice.text, text.tokenizer.decode(ref.ids));
    assert.deepEqual(r.usage && [r.usage.prompt_tokens, r.usage.completion_tokens, r.usage.total_tokens], [promptIds.length, ref.ids.length, promptIds.length + ref.ids.length]);
    const lps = choice.logprobs;
    assert.ok(lps?.token_logprobs && lps.top_logprobs && lps.tokens);
    assert.equal(lps.token_logprobs.length, ref.ids.length);
    assert.equal(lps.tokens.length, ref.ids.length);
    lps.token_logprobs.forEach((v, i) => close(v, ref.rows[i]![ref.ids[i]!]!, `step ${i} chosen`));
    lps.top_logprobs.forEach((alts, i) => {
      const lp = ref.rows[i]!;
      const want = topIds(lp, 2).map((id) => lp[id]!);
      const got = Object.values(alts).sort((a, b) => b - a);
      // Two alternatives with the same token text would collapse into one key.
      assert.ok(got.length >= 1 && got.length <= 2);
      got.forEach((v, j) => close(v, want[j]!, `step ${i} top ${j}`));
    });
    // The same prompt given as token ids (no BOS added) generates the same text.
    const byIds = await client.completions.create({ model: MODEL, prompt: promptIds, max_tokens: steps, temperature: 0 });
    assert.equal(byIds.choices[0]!.text, choice.text);
    assert.equal(byIds.usage?.prompt_tokens, promptIds.length);
    const stream = await client.completions.create({ model: MODEL, prompt, max_tokens: steps, temperature: 0, stream: true });
    let streamed = '';
    let finish: string | null = null;
    for await (const c of stream) {
      assert.equal(c.object, 'text_completion');
      streamed += c.choices[0]?.text ?? '';
      finish = c.choices[0]?.finish_reason ?? finish;
    }
    assert.equal(streamed, choice.text);
    assert.equal(finish, choice.finish_reason);
  });
});

test('seeds: the same seed gives the same text at temperature 1; different seeds differ', async () => {
  await withServer({}, async (_server, client) => {
    const ask = async (seed: number) => (await client.chat.completions.create({ model: MODEL, messages: userChat('Describe a storm.'), max_tokens: 12, temperature: 1, seed })).choices[0]!.message.content!;
    const a = await ask(42);
    assert.equal(await ask(42), a);
    const others = await Promise.all([1, 2, 3, 4].map(ask));
    assert.ok(new Set([a, ...others]).size >= 3, `seeds should change the samples: ${JSON.stringify([a, ...others])}`);
  });
});

test('stop strings: the text ends before the first stop string, finish_reason stop', async () => {
  await withServer({}, async (_server, client) => {
    const messages = userChat('Once upon a time there was');
    const full = (await client.chat.completions.create({ model: MODEL, messages, max_tokens: 16, temperature: 0 })).choices[0]!.message.content!;
    assert.ok(full.length >= 6, `need some text to cut: ${JSON.stringify(full)}`);
    const at = Math.floor(full.length / 2);
    const stop = full.slice(at, at + 2);
    const expected = full.slice(0, full.indexOf(stop));
    const cut = await client.chat.completions.create({ model: MODEL, messages, max_tokens: 16, temperature: 0, stop: ['zzzzqq', stop] });
    assert.equal(cut.choices[0]!.message.content, expected);
    assert.equal(cut.choices[0]!.finish_reason, 'stop');
    const streamed = await collect(await client.chat.completions.create({ model: MODEL, messages, max_tokens: 16, temperature: 0, stop, stream: true }));
    assert.equal(streamed.text, expected);
  });
});

test('response_format json_object: every output parses as a JSON object, at temperature 1.5, for several seeds and budgets', async () => {
  await withServer({}, async (_server, client) => {
    // A random-weights model at temperature 1.5 wanders; the constraint both keeps the output a
    // JSON prefix and closes the document within max_tokens, so every output parses, whether it
    // ended by itself ('stop') or at the budget ('length').
    for (const maxTokens of [200, 12, 3]) {
      for (let seed = 1; seed <= 6; seed++) {
        const r = await client.chat.completions.create({
          model: MODEL,
          messages: userChat('Reply with a JSON object.'),
          response_format: { type: 'json_object' },
          temperature: 1.5,
          seed,
          max_tokens: maxTokens,
        });
        const choice = r.choices[0]!;
        const content = choice.message.content!;
        assert.ok(['stop', 'length'].includes(choice.finish_reason));
        assert.ok(r.usage!.completion_tokens <= maxTokens);
        let parsed: unknown;
        assert.doesNotThrow(() => (parsed = JSON.parse(content)), `max_tokens ${maxTokens}, seed ${seed}: not JSON: ${JSON.stringify(content)}`);
        assert.ok(parsed !== null && typeof parsed === 'object' && !Array.isArray(parsed), `max_tokens ${maxTokens}, seed ${seed}: not an object: ${content}`);
      }
    }
    // {type: 'text'} is accepted (plain generation).
    const plain = await client.chat.completions.create({ model: MODEL, messages: userChat('Hi'), response_format: { type: 'text' }, max_tokens: 2 });
    assert.equal(typeof plain.choices[0]!.message.content, 'string');
  });
});

test('image input (tiny LLaVA, data: URI PNG): prompt tokens and greedy text equal the model run directly', async () => {
  await withServer({ model: llava, modelId: 'tiny-llava' }, async (_server, client) => {
    const image = pngDataUri(56, 0);
    const question = 'What is in the picture?';
    const r = await client.chat.completions.create({
      model: 'tiny-llava',
      messages: [{ role: 'user', content: [{ type: 'image_url', image_url: { url: image.uri } }, { type: 'text', text: question }] }],
      max_tokens: 6,
      temperature: 0,
    });
    const local = { messages: [{ role: 'user', content: [{ type: 'image' as const }, { type: 'text' as const, text: question }] }] };
    const prepared = llava.prepare(local, [image.png]);
    assert.ok(prepared.spans.length === 1 && prepared.spans[0]!.rows > 1);
    assert.equal(r.usage?.prompt_tokens, prepared.ids.length, 'the prompt counts the image tokens');
    const it = llava.generate(local, { images: [image.png], maxTokens: 6, temperature: 0 });
    let res = await it.next();
    while (!res.done) res = await it.next();
    assert.equal(r.choices[0]!.message.content, res.value.text);
    assert.equal(r.usage?.completion_tokens, res.value.tokens.length);
    // Another image changes the prompt's features, so the logits; the request still works.
    const other = await client.chat.completions.create({
      model: 'tiny-llava',
      messages: [{ role: 'user', content: [{ type: 'text', text: question }, { type: 'image_url', image_url: { url: pngDataUri(40, 1).uri } }] }],
      max_tokens: 3,
    });
    assert.equal(other.usage?.prompt_tokens, prepared.ids.length);
  });
});

test('errors: each a 4xx with an OpenAI error body, and the server keeps serving', async () => {
  await withServer({ model: llava, modelId: 'tiny-llava', maxBodyBytes: 1 << 20 }, async (server, client) => {
    const M = 'tiny-llava';
    const chat = (body: Record<string, unknown>) => client.chat.completions.create({ model: M, messages: userChat('hi'), max_tokens: 2, ...body } as never);
    // Malformed JSON.
    let raw = await postRaw(server, '/v1/chat/completions', '{"model": "tiny-llava", "messages": [');
    assert.equal(raw.status, 400);
    assertErrorBody(raw.json, 'invalid_request_error');
    // Wrong types.
    await expectApiError(() => chat({ messages: 'hello' }), 400, 'invalid_request_error');
    await expectApiError(() => chat({ temperature: 'hot' }), 400, 'invalid_request_error');
    await expectApiError(() => chat({ max_tokens: -1 }), 400, 'invalid_request_error');
    // A body over maxBodyBytes.
    raw = await postRaw(server, '/v1/chat/completions', JSON.stringify({ model: M, messages: userChat('x'.repeat(2 << 20)) }));
    assert.equal(raw.status, 413);
    assertErrorBody(raw.json, 'invalid_request_error');
    // Unknown model.
    await expectApiError(() => chat({ model: 'gpt-4o' }), 404, 'invalid_request_error', 'model_not_found');
    // Invalid image data: bad base64, and base64 that is not an image.
    const withImage = (url: string) => chat({ messages: [{ role: 'user', content: [{ type: 'image_url', image_url: { url } }, { type: 'text', text: 'what?' }] }] });
    await expectApiError(() => withImage('data:image/png;base64,@@@not*base64!!'), 400, 'invalid_request_error');
    await expectApiError(() => withImage(`data:image/png;base64,${Buffer.from('this is not a picture at all').toString('base64')}`), 400, 'invalid_request_error');
    // Remote image URLs are off by default.
    await expectApiError(() => withImage('http://example.com/cat.png'), 400, 'invalid_request_error');
    // A prompt over the context.
    const long = 'the keeper lit the lamp '.repeat(Math.ceil(llava.config.contextLength / 2));
    assert.ok(llava.promptIds(long).length > llava.config.contextLength);
    await expectApiError(() => client.completions.create({ model: M, prompt: long, max_tokens: 2 }), 400, 'invalid_request_error', 'context_length_exceeded');
    // Unsupported: n > 1, json_schema.
    await expectApiError(() => chat({ n: 2 }), 400, 'invalid_request_error');
    await expectApiError(() => chat({ response_format: { type: 'json_schema', json_schema: { name: 'x', schema: { type: 'object' } } } }), 400, 'invalid_request_error');
    // Limits and ranges: max_tokens over the cap, more than 4 stops, top_logprobs > 20, completions logprobs > 5, a prompt of the wrong type.
    await expectApiError(() => chat({ max_tokens: 100_000 }), 400, 'invalid_request_error');
    await expectApiError(() => chat({ stop: ['a', 'b', 'c', 'd', 'e'] }), 400, 'invalid_request_error');
    await expectApiError(() => chat({ logprobs: true, top_logprobs: 21 }), 400, 'invalid_request_error');
    await expectApiError(() => client.completions.create({ model: M, prompt: 'hi', max_tokens: 2, logprobs: 6 }), 400, 'invalid_request_error');
    await expectApiError(() => client.completions.create({ model: M, prompt: 42 as never, max_tokens: 2 }), 400, 'invalid_request_error');
    // Unknown route and wrong method.
    const route = await fetch(`${server.url}/v1/nothing-here`);
    assert.equal(route.status, 404);
    assertErrorBody(await route.json(), 'invalid_request_error');
    const method = await fetch(`${server.url}/v1/chat/completions`, { method: 'GET' });
    assert.equal(method.status, 405);
    assertErrorBody(await method.json(), 'invalid_request_error');
    await assertServing(client, M);
  });
});

test('API key: /v1/* needs the bearer key (401 otherwise), /health is open', async () => {
  await withServer({ apiKey: 'sesame-1234' }, async (server) => {
    assert.equal((await fetch(`${server.url}/health`)).status, 200);
    const missing = await fetch(`${server.url}/v1/models`);
    assert.equal(missing.status, 401);
    assertErrorBody(await missing.json(), 'authentication_error', 'invalid_api_key');
    const chatNoKey = await postRaw(server, '/v1/chat/completions', JSON.stringify({ model: MODEL, messages: userChat('hi'), max_tokens: 1 }));
    assert.equal(chatNoKey.status, 401);
    assertErrorBody(chatNoKey.json, 'authentication_error', 'invalid_api_key');
    await expectApiError(() => clientFor(server, 'sesame-1235').chat.completions.create({ model: MODEL, messages: userChat('hi'), max_tokens: 1 }), 401, 'authentication_error', 'invalid_api_key');
    await expectApiError(() => clientFor(server, 'sesame').models.list(), 401, 'authentication_error', 'invalid_api_key');
    const good = clientFor(server, 'sesame-1234');
    assert.equal((await good.models.list()).data[0]!.id, MODEL);
    await assertServing(good);
  });
});

test('numerics: image-overflow LLaVA under naive-f16: an image request gets 500 numerics_error naming the op; text requests still work', async () => {
  await withServer({ model: stressed, modelId: 'stress' }, async (_server, client) => {
    const err = await expectApiError(
      () =>
        client.chat.completions.create({
          model: 'stress',
          messages: [{ role: 'user', content: [{ type: 'image_url', image_url: { url: pngDataUri(56, 0).uri } }, { type: 'text', text: 'What does the keeper see?' }] }],
          max_tokens: 3,
        }),
      500,
      'server_error',
      'numerics_error',
    );
    assert.match(String(err.error && (err.error as { message: string }).message), /down.*\(layer 2\)/);
    // Streaming: the client sees the same error (a 500 before the stream starts, or an error event in it).
    await assert.rejects(
      async () => {
        const stream = await client.chat.completions.create({
          model: 'stress',
          messages: [{ role: 'user', content: [{ type: 'image_url', image_url: { url: pngDataUri(56, 0).uri } }, { type: 'text', text: 'What does the keeper see?' }] }],
          max_tokens: 3,
          stream: true,
        });
        for await (const _ of stream);
      },
      (e: unknown) => e instanceof APIError && /down.*\(layer 2\)/.test(e.message),
    );
    const ok = await client.chat.completions.create({ model: 'stress', messages: userChat('The keeper lit the lamp.'), max_tokens: 3 });
    assert.equal(typeof ok.choices[0]!.message.content, 'string');
    assert.ok(ok.usage!.completion_tokens >= 1);
  });
});

test('load: 32 concurrent streaming clients all complete (maxConcurrency 8, maxQueue 64)', async (t) => {
  await withServer({ maxConcurrency: 8, maxQueue: 64 }, async (server, client) => {
    const start = performance.now();
    const results = await Promise.all(
      Array.from({ length: 32 }, async (_, i) => {
        const stream = await client.chat.completions.create({ model: MODEL, messages: userChat(`Client ${i} says hello.`), max_tokens: 8, seed: i, stream: true });
        const { chunks } = await collect(stream);
        return chunks.filter((c) => c.choices.length > 0).at(-1)!.choices[0]!.finish_reason;
      }),
    );
    const seconds = (performance.now() - start) / 1000;
    assert.equal(results.length, 32);
    assert.ok(results.every((f) => f === 'stop' || f === 'length'), JSON.stringify(results));
    assert.ok(server.engine.stats.decodeRows > server.engine.stats.decodePasses, 'decode steps were batched');
    assert.deepEqual(server.engine.load, { running: 0, queued: 0 });
    t.diagnostic(`32 streaming clients x 8 tokens: ${seconds.toFixed(2)} s wall; ${server.engine.stats.decodePasses} decode passes for ${server.engine.stats.decodeRows} rows`);
  });
});

test('queue full: maxConcurrency 1, maxQueue 1: extra concurrent requests get 429 rate_limit_exceeded', async () => {
  await withServer({ maxConcurrency: 1, maxQueue: 1 }, async (_server, client) => {
    const outcomes = await Promise.all(
      Array.from({ length: 5 }, async () => {
        try {
          await client.completions.create({ model: MODEL, prompt: 'The long night', max_tokens: 120, temperature: 0 });
          return 'ok';
        } catch (err) {
          assert.ok(err instanceof APIError, String(err));
          assert.equal(err.status, 429);
          assertErrorBody({ error: err.error }, err.type ?? '', 'rate_limit_exceeded');
          return '429';
        }
      }),
    );
    assert.ok(outcomes.includes('ok') && outcomes.includes('429'), JSON.stringify(outcomes));
    assert.ok(outcomes.filter((o) => o === 'ok').length <= 2, `1 running + 1 queued at most: ${JSON.stringify(outcomes)}`);
    await assertServing(client);
  });
});

test('disconnect: aborting a stream mid-way ends the sequence and frees its KV cache', async () => {
  await withServer({}, async (server, client) => {
    await assertServing(client); // warm the kernels' scratch so the heap level below is steady
    const heap = wasmHeap();
    const before = heap.bytesInUse;
    const controller = new AbortController();
    const stream = await client.chat.completions.create({ model: MODEL, messages: userChat('Talk for a long time.'), max_tokens: 200, temperature: 1, seed: 3, stream: true }, { signal: controller.signal });
    let received = 0;
    let inFlight = { running: 0, queued: 0 };
    // The openai client ends an aborted stream's iteration quietly (no throw).
    for await (const _ of stream) {
      if (++received === 3) {
        inFlight = server.engine.load;
        assert.ok(heap.bytesInUse > before, 'the running sequence holds a KV cache in the wasm heap');
        controller.abort();
      }
    }
    assert.equal(received, 3, 'no chunk after the abort');
    assert.equal(inFlight.running, 1);
    const deadline = Date.now() + 10_000;
    while (server.engine.load.running > 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 10));
    assert.deepEqual(server.engine.load, { running: 0, queued: 0 });
    assert.equal(heap.bytesInUse, before, 'the heap is back to its level before the request');
    await assertServing(client);
  });
});

test('batched == alone: 6 concurrent seeded requests give exactly the texts and logprobs of the same requests run one at a time without batching', async () => {
  const requests = Array.from({ length: 6 }, (_, i) => ({
    model: MODEL,
    messages: userChat(['A', 'The keeper lit the lamp.', 'Once upon a time there was a sea', 'Hi', 'Describe the storm over the hill.', 'Why?'][i]!),
    max_tokens: 6 + i,
    temperature: 1,
    seed: 100 + i,
    logprobs: true,
    top_logprobs: 2,
  }));
  const summary = (r: OpenAI.Chat.Completions.ChatCompletion) => ({ text: r.choices[0]!.message.content, finish: r.choices[0]!.finish_reason, usage: r.usage, logprobs: r.choices[0]!.logprobs });
  const batched = await withServer({ batching: true }, async (server, client) => {
    const out = await Promise.all(requests.map((req) => client.chat.completions.create(req)));
    assert.ok(server.engine.stats.decodeRows > server.engine.stats.decodePasses, 'requests shared decode passes');
    return out.map(summary);
  });
  const alone = await withServer({ batching: false }, async (_server, client) => {
    const out = [];
    for (const req of requests) out.push(summary(await client.chat.completions.create(req)));
    return out;
  });
  assert.deepEqual(batched, alone);
});

test('graceful close: close() during a stream lets it finish, then the server stops', async () => {
  const server = await startServer({ model: text, modelId: MODEL, port: 0 });
  const client = clientFor(server);
  const stream = await client.chat.completions.create({ model: MODEL, messages: userChat('Go on.'), max_tokens: 24, temperature: 0, stream: true });
  let closing: Promise<void> | undefined;
  let closed = false;
  const chunks: OpenAI.Chat.Completions.ChatCompletionChunk[] = [];
  for await (const c of stream) {
    chunks.push(c);
    if (chunks.length === 2) closing = server.close().then(() => void (closed = true));
  }
  assert.ok(closing, 'close() was called mid-stream');
  const finish = chunks.at(-1)!.choices[0]!.finish_reason;
  assert.ok(finish === 'length' || finish === 'stop', `the stream finished: ${finish}`);
  await closing;
  assert.ok(closed);
  await assert.rejects(fetch(`${server.url}/health`), 'no longer accepting connections');
});
