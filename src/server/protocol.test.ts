/**
 * The server's protocol layer: request validation (each bad parameter is a 400 that names it),
 * error mapping to HTTP statuses, logprob shapes, image URLs, and the HTTP behaviours the
 * end-to-end tests (server.test.ts) do not reach: the body limit, the API key, unknown routes and
 * models, client disconnects and a graceful close. Network: 127.0.0.1 only.
 */
import assert from 'node:assert/strict';
import { mkdtempSync } from 'node:fs';
import { request } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { PNG } from 'pngjs';
import { HalfpipeError } from '../core/errors.js';
import { loadModel, type TextModel } from '../models/load.js';
import { writeTinyModel } from '../models/tiny.js';
import { ContextLengthError, QueueFullError, ShuttingDownError } from './engine.js';
import { startServer } from './http.js';
import { loadImageUrl } from './images.js';
import { ApiError, chatLogprobs, completionLogprobs, parseChatRequest, parseCompletionRequest, parseJsonBody, TokenTexts, toApiError } from './openai.js';

const limits = { maxTokensCap: 100 };
const chatBody = (extra: Record<string, unknown> = {}) => ({ model: 'm', messages: [{ role: 'user', content: 'hi' }], ...extra });

/** Runs `fn`, expects an ApiError with this status and param, returns its message. */
function apiError(fn: () => unknown, status: number, param: string | null): string {
  try {
    fn();
  } catch (e) {
    assert.ok(e instanceof ApiError, `expected an ApiError, got ${String(e)}`);
    assert.equal(e.status, status, e.message);
    assert.equal(e.param, param, e.message);
    assert.ok(!e.message.includes('\n'));
    return e.message;
  }
  assert.fail('expected an error');
}

test('malformed JSON and non-object bodies are 400s', () => {
  assert.match(apiError(() => parseJsonBody('{"model": '), 400, null), /not valid JSON/);
  assert.match(apiError(() => parseJsonBody('[1, 2]'), 400, null), /JSON object/);
  assert.deepEqual(parseJsonBody('{"a": 1}'), { a: 1 });
});

test('chat: OpenAI defaults (temperature 1, top_p 1, top-k and min-p off) and the budget default to the cap', () => {
  const p = parseChatRequest(chatBody(), limits);
  assert.equal(p.options.temperature, 1);
  assert.equal(p.options.topP, 1);
  assert.equal(p.options.topK, 0);
  assert.equal(p.options.minP, 0);
  assert.equal(p.options.maxTokens, 100);
  assert.equal(p.stream, false);
  assert.equal(p.logprobs, undefined);
  assert.equal(p.jsonMode, false);
  assert.deepEqual(p.messages, [{ role: 'user', content: 'hi' }]);
});

test('chat: parameters map to engine options', () => {
  const p = parseChatRequest(
    chatBody({ temperature: 0.5, top_p: 0.9, max_completion_tokens: 7, stop: 'x', seed: 9, presence_penalty: 0.5, frequency_penalty: -1, logprobs: true, top_logprobs: 3, stream: true, stream_options: { include_usage: true }, response_format: { type: 'json_object' }, n: 1, unknown_field: { anything: 1 } }),
    limits,
  );
  assert.deepEqual(
    { ...p.options },
    { temperature: 0.5, topP: 0.9, topK: 0, minP: 0, repeatPenalty: 1, presencePenalty: 0.5, frequencyPenalty: -1, maxTokens: 7, seed: 9, stop: ['x'] },
  );
  assert.equal(p.logprobs, 3);
  assert.equal(p.stream, true);
  assert.equal(p.includeUsage, true);
  assert.equal(p.jsonMode, true);
  assert.equal(parseChatRequest(chatBody({ logprobs: true }), limits).logprobs, 0);
  assert.equal(parseChatRequest(chatBody({ max_tokens: 5 }), limits).options.maxTokens, 5);
  assert.equal(parseChatRequest(chatBody({ response_format: { type: 'text' } }), limits).jsonMode, false);
  // top_p 0 keeps one token: greedy.
  assert.equal(parseChatRequest(chatBody({ top_p: 0 }), limits).options.temperature, 0);
});

test('chat: each bad parameter is a 400 naming it', () => {
  const cases: Array<[Record<string, unknown>, string, RegExp]> = [
    [{ temperature: 'hot' }, 'temperature', /'temperature' must be a number/],
    [{ temperature: 3 }, 'temperature', /between 0 and 2/],
    [{ top_p: 1.5 }, 'top_p', /between 0 and 1/],
    [{ max_tokens: 2.5 }, 'max_tokens', /integer/],
    [{ max_tokens: 0 }, 'max_tokens', /between 1/],
    [{ max_tokens: 101 }, 'max_tokens', /limit of 100/],
    [{ max_completion_tokens: 500 }, 'max_completion_tokens', /limit of 100/],
    [{ n: 2 }, 'n', /only n=1/],
    [{ stop: ['a', 'b', 'c', 'd', 'e'] }, 'stop', /at most 4/],
    [{ stop: 5 }, 'stop', /string or an array/],
    [{ seed: -1 }, 'seed', /between 0/],
    [{ presence_penalty: 3 }, 'presence_penalty', /between -2 and 2/],
    [{ stream: 'yes' }, 'stream', /boolean/],
    [{ stream_options: { include_usage: true } }, 'stream_options', /only allowed when 'stream'/],
    [{ logprobs: 1 }, 'logprobs', /boolean/],
    [{ top_logprobs: 2 }, 'top_logprobs', /needs 'logprobs'/],
    [{ logprobs: true, top_logprobs: 21 }, 'top_logprobs', /between 0 and 20/],
    [{ response_format: { type: 'json_schema', json_schema: {} } }, 'response_format', /json_schema' is not supported/],
    [{ response_format: 'json' }, 'response_format', /object/],
    [{ model: 7 }, 'model', /'model' must be a string/],
    [{ model: undefined }, 'model', /provide a 'model'/],
    [{ messages: 'hi' }, 'messages', /array of messages/],
    [{ messages: [] }, 'messages', /must not be empty/],
    [{ messages: [{ role: 'robot', content: 'x' }] }, 'messages[0].role', /'system', 'user' or 'assistant'/],
    [{ messages: [{ role: 'user', content: 5 }] }, 'messages[0].content', /string or an array/],
    [{ messages: [{ role: 'user', content: [{ type: 'audio' }] }] }, 'messages[0].content[0].type', /'text' or 'image_url'/],
    [{ messages: [{ role: 'user', content: [{ type: 'text', text: 1 }] }] }, 'messages[0].content[0].text', /must be a string/],
    [{ messages: [{ role: 'user', content: [{ type: 'image_url', image_url: {} }] }] }, 'messages[0].content[0].image_url', /string 'url'/],
  ];
  for (const [extra, param, message] of cases) assert.match(apiError(() => parseChatRequest(chatBody(extra), limits), 400, param), message, param);
});

test('chat: image parts become placeholders in order; text-only parts join into one string', () => {
  const p = parseChatRequest(
    chatBody({
      messages: [
        { role: 'system', content: [{ type: 'text', text: 'be ' }, { type: 'text', text: 'brief' }] },
        { role: 'user', content: [{ type: 'image_url', image_url: { url: 'data:a' } }, { type: 'text', text: 'and' }, { type: 'image_url', image_url: { url: 'data:b' } }] },
        { role: 'assistant', content: null },
        { role: 'developer', content: 'x' },
      ],
    }),
    limits,
  );
  assert.deepEqual(p.messages, [
    { role: 'system', content: 'be brief' },
    { role: 'user', content: [{ type: 'image' }, { type: 'text', text: 'and' }, { type: 'image' }] },
    { role: 'assistant', content: '' },
    { role: 'system', content: 'x' },
  ]);
  assert.deepEqual(
    p.images.map((i) => [i.url, i.param]),
    [
      ['data:a', 'messages[1].content[0].image_url'],
      ['data:b', 'messages[1].content[2].image_url'],
    ],
  );
});

test('completions: prompt forms, logprobs 0..5, unsupported echo/suffix/best_of', () => {
  const body = (extra: Record<string, unknown>) => ({ model: 'm', ...extra });
  assert.equal(parseCompletionRequest(body({ prompt: 'a' }), limits).prompt, 'a');
  assert.equal(parseCompletionRequest(body({ prompt: ['a'] }), limits).prompt, 'a');
  assert.deepEqual(parseCompletionRequest(body({ prompt: [1, 2, 3] }), limits).prompt, [1, 2, 3]);
  assert.deepEqual(parseCompletionRequest(body({ prompt: [[4, 5]] }), limits).prompt, [4, 5]);
  assert.equal(parseCompletionRequest(body({ prompt: 'a', logprobs: 0 }), limits).logprobs, 0);
  assert.equal(parseCompletionRequest(body({ prompt: 'a', logprobs: 5 }), limits).logprobs, 5);
  assert.match(apiError(() => parseCompletionRequest(body({ prompt: ['a', 'b'] }), limits), 400, 'prompt'), /only one prompt/);
  assert.match(apiError(() => parseCompletionRequest(body({ prompt: 3 }), limits), 400, 'prompt'), /string/);
  assert.match(apiError(() => parseCompletionRequest(body({ prompt: [1, -2] }), limits), 400, 'prompt'), /token ids/);
  assert.match(apiError(() => parseCompletionRequest(body({}), limits), 400, 'prompt'), /provide a 'prompt'/);
  assert.match(apiError(() => parseCompletionRequest(body({ prompt: 'a', logprobs: 6 }), limits), 400, 'logprobs'), /between 0 and 5/);
  assert.match(apiError(() => parseCompletionRequest(body({ prompt: 'a', logprobs: true }), limits), 400, 'logprobs'), /number/);
  apiError(() => parseCompletionRequest(body({ prompt: 'a', echo: true }), limits), 400, 'echo');
  apiError(() => parseCompletionRequest(body({ prompt: 'a', suffix: 'z' }), limits), 400, 'suffix');
  apiError(() => parseCompletionRequest(body({ prompt: 'a', best_of: 2 }), limits), 400, 'best_of');
});

test('engine errors map to statuses: numerics 500, full queue 429, shutdown 503, other HalfpipeErrors 400', () => {
  const numerics = toApiError(new HalfpipeError('numerics', 'down (layer 2) overflowed'));
  assert.deepEqual([numerics.status, numerics.type, numerics.code, numerics.message], [500, 'server_error', 'numerics_error', 'down (layer 2) overflowed']);
  const full = toApiError(new QueueFullError(4));
  assert.deepEqual([full.status, full.code], [429, 'rate_limit_exceeded']);
  assert.equal(toApiError(new ShuttingDownError()).status, 503);
  const usage = toApiError(new HalfpipeError('usage', 'temperature must be a finite number'));
  assert.deepEqual([usage.status, usage.type], [400, 'invalid_request_error']);
  assert.equal(toApiError(new HalfpipeError('config', 'this model has no chat template')).status, 400);
  assert.equal(toApiError(new ContextLengthError(9, 8)).code, 'context_length_exceeded');
  assert.equal(toApiError(new HalfpipeError('usage', 'the prompt has 9 tokens but the context holds 8')).code, null);
  const internal = toApiError(new TypeError('x is undefined\nat line 3'));
  assert.deepEqual([internal.status, internal.type, internal.message.includes('\n')], [500, 'server_error', false]);
  const passed = new ApiError(404, 'gone', 'model', 'model_not_found');
  assert.equal(toApiError(passed), passed);
  assert.deepEqual(passed.body(), { error: { message: 'gone', type: 'invalid_request_error', param: 'model', code: 'model_not_found' } });
  assert.equal(new ApiError(401, 'no').type, 'authentication_error');
});

const dir = mkdtempSync(join(tmpdir(), 'halfpipe-protocol-'));
const model: TextModel = await loadModel(writeTinyModel({ format: 'gguf', out: join(dir, 'tiny.gguf'), seed: 3, set: { max_position_embeddings: 64 } }).path);

function pngDataUri(width: number, height: number): string {
  const png = new PNG({ width, height });
  for (let i = 0; i < png.data.length; i += 4) png.data.set([(i * 7) % 256, (i / 4) % 200, 90, 255], i);
  return `data:image/png;base64,${PNG.sync.write(png).toString('base64')}`;
}

test('image URLs: data URIs decode; remote only when allowed; paths never; bad data is a 400 naming the part', async () => {
  const opts = { allowRemote: false, maxBytes: 1 << 20, timeoutMs: 1000 };
  const img = await loadImageUrl(pngDataUri(5, 3), opts, 'p');
  assert.deepEqual([img.width, img.height, img.data.length], [5, 3, 45]);
  const rejected = async (url: string, o: typeof opts, re: RegExp) =>
    assert.rejects(loadImageUrl(url, o, 'messages[0].content[1].image_url'), (e: unknown) => e instanceof ApiError && e.status === 400 && e.param === 'messages[0].content[1].image_url' && re.test(e.message));
  await rejected('http://127.0.0.1:1/x.png', opts, /remote image URLs are disabled/);
  await rejected('/etc/passwd', opts, /must be a data: URI/);
  await rejected('file:///etc/passwd', { ...opts, allowRemote: true }, /data: URI or an http\(s\) URL/);
  await rejected('data:image/png;base64,@@@', opts, /not valid base64/);
  await rejected('data:image/png;base64,aGVsbG8=', opts, /unsupported image format/);
  await rejected(pngDataUri(5, 3), { ...opts, maxBytes: 10 }, /larger than 10 bytes/);
  // Allowed remote URL that nothing answers: a 400 that says so, not a crash.
  await rejected('http://127.0.0.1:1/x.png', { ...opts, allowRemote: true }, /cannot fetch the image/);
});

test('logprobs shapes: chat {token, logprob, bytes, top_logprobs}, completions parallel arrays with offsets', () => {
  const texts = new TokenTexts(model.tokenizer);
  // SentencePiece: '▁the', '▁keeper' (a word-initial piece keeps its space, as in generated text).
  const ids = model.tokenizer.encode('the keeper', { addSpecial: false });
  const steps = ids.map((id, i) => ({ id, text: '', logprob: -1 - i, topLogprobs: [{ id, token: '', logprob: -1 - i }, { id: ids[0]!, token: '', logprob: -5 }] }));
  const chat = chatLogprobs(steps, 1, texts);
  assert.equal(chat.length, ids.length);
  assert.equal(chat.map((c) => c.token).join(''), ' the keeper');
  assert.deepEqual(Buffer.from(chat.flatMap((c) => c.bytes)).toString('utf8'), ' the keeper');
  assert.deepEqual(chat[0]!.top_logprobs.length, 1);
  assert.equal(chat[1]!.logprob, -2);
  const comp = completionLogprobs(steps, 2, texts);
  assert.equal(comp.tokens.join(''), ' the keeper');
  assert.deepEqual(comp.token_logprobs, steps.map((s) => s.logprob));
  assert.equal(comp.text_offset[0], 0);
  for (let i = 1; i < ids.length; i++) assert.equal(comp.text_offset[i], comp.text_offset[i - 1]! + comp.tokens[i - 1]!.length);
  assert.ok(Object.keys(comp.top_logprobs[0]!).length >= 1);
});

/** One raw HTTP request to 127.0.0.1: status, headers and body text. */
function call(url: string, method: string, path: string, body?: string | Buffer, headers: Record<string, string> = {}): Promise<{ status: number; headers: Record<string, unknown>; text: string }> {
  return new Promise((resolve, reject) => {
    const req = request(`${url}${path}`, { method, headers: { 'content-type': 'application/json', ...headers } }, (res) => {
      const pieces: Buffer[] = [];
      res.on('data', (p: Buffer) => pieces.push(p));
      res.on('end', () => resolve({ status: res.statusCode!, headers: res.headers, text: Buffer.concat(pieces).toString('utf8') }));
    });
    req.on('error', reject);
    req.end(body);
  });
}

const errorOf = (text: string) => (JSON.parse(text) as { error: { message: string; type: string; param: string | null; code: string | null } }).error;

test('HTTP: health without a key; /v1 needs the key; unknown routes, methods and models; context overflow', async () => {
  const server = await startServer({ model, port: 0, apiKey: 'sekrit', modelId: 'tiny' });
  try {
    assert.match(server.url, /^http:\/\/127\.0\.0\.1:\d+$/);
    const health = await call(server.url, 'GET', '/health');
    assert.equal(health.status, 200);
    assert.deepEqual(JSON.parse(health.text), { status: 'ok', running: 0, queued: 0 });
    for (const auth of [undefined, 'Bearer wrong', 'Bearer sekrit-longer', 'sekrit']) {
      const r = await call(server.url, 'GET', '/v1/models', undefined, auth ? { authorization: auth } : {});
      assert.equal(r.status, 401, String(auth));
      assert.deepEqual([errorOf(r.text).type, errorOf(r.text).code], ['authentication_error', 'invalid_api_key']);
    }
    const key = { authorization: 'Bearer sekrit' };
    const models = JSON.parse((await call(server.url, 'GET', '/v1/models', undefined, key)).text) as { object: string; data: Array<{ id: string; object: string; owned_by: string }> };
    assert.equal(models.object, 'list');
    assert.deepEqual(models.data.map((m) => [m.id, m.object, m.owned_by]), [['tiny', 'model', 'halfpipe']]);
    assert.equal((await call(server.url, 'GET', '/nope', undefined, key)).status, 404);
    const wrongMethod = await call(server.url, 'GET', '/v1/completions', undefined, key);
    assert.deepEqual([wrongMethod.status, wrongMethod.headers['allow']], [405, 'POST']);
    const unknown = await call(server.url, 'POST', '/v1/completions', JSON.stringify({ model: 'gpt-4', prompt: 'x' }), key);
    assert.deepEqual([unknown.status, errorOf(unknown.text).code, errorOf(unknown.text).param], [404, 'model_not_found', 'model']);
    const malformed = await call(server.url, 'POST', '/v1/chat/completions', '{"model": "tiny", ', key);
    assert.deepEqual([malformed.status, errorOf(malformed.text).type], [400, 'invalid_request_error']);
    const long = await call(server.url, 'POST', '/v1/completions', JSON.stringify({ model: 'tiny', prompt: Array.from({ length: 65 }, () => 5) }), key);
    assert.deepEqual([long.status, errorOf(long.text).code], [400, 'context_length_exceeded']);
    const outside = await call(server.url, 'POST', '/v1/completions', JSON.stringify({ model: 'tiny', prompt: [1, 1e6] }), key);
    assert.deepEqual([outside.status, errorOf(outside.text).param], [400, 'prompt']);
    const image = await call(server.url, 'POST', '/v1/chat/completions', JSON.stringify({ model: 'tiny', messages: [{ role: 'user', content: [{ type: 'image_url', image_url: { url: pngDataUri(4, 4) } }] }] }), key);
    assert.equal(image.status, 400);
    assert.match(errorOf(image.text).message, /does not take images/);
    const ok = await call(server.url, 'POST', '/v1/completions', JSON.stringify({ model: 'tiny', prompt: 'The keeper', max_tokens: 3, temperature: 0 }), key);
    assert.equal(ok.status, 200, ok.text);
    const done = JSON.parse(ok.text) as { object: string; choices: Array<{ finish_reason: string }>; usage: { prompt_tokens: number; completion_tokens: number; total_tokens: number } };
    assert.equal(done.object, 'text_completion');
    assert.equal(done.usage.total_tokens, done.usage.prompt_tokens + done.usage.completion_tokens);
  } finally {
    await server.close();
  }
});

test('HTTP: a body over the limit is a 413 without reading it all', async () => {
  const server = await startServer({ model, port: 0, maxBodyBytes: 1000 });
  try {
    // Declared too large: refused from the header.
    const declared = await call(server.url, 'POST', '/v1/completions', Buffer.alloc(5000, 32));
    assert.deepEqual([declared.status, errorOf(declared.text).code], [413, 'request_too_large']);
    // Chunked (no content-length): refused once the limit is passed.
    const chunked = await new Promise<number>((resolve, reject) => {
      const req = request(`${server.url}/v1/completions`, { method: 'POST', headers: { 'transfer-encoding': 'chunked' } }, (res) => {
        res.resume();
        resolve(res.statusCode!);
      });
      req.on('error', reject);
      req.write(Buffer.alloc(800, 32));
      req.write(Buffer.alloc(800, 32));
      // The rest is never sent: the server must answer without it.
    });
    assert.equal(chunked, 413);
    // The server still serves.
    assert.equal((await call(server.url, 'GET', '/health')).status, 200);
  } finally {
    await server.close();
  }
});

test('HTTP: streaming chunks end with finish_reason then [DONE]; streamed text equals the non-streamed text', async () => {
  const server = await startServer({ model, port: 0, modelId: 'tiny' });
  try {
    const body = { model: 'tiny', messages: [{ role: 'user', content: 'The keeper' }], max_tokens: 12, seed: 4 };
    const plain = JSON.parse((await call(server.url, 'POST', '/v1/chat/completions', JSON.stringify(body))).text) as { choices: Array<{ message: { content: string }; finish_reason: string }> };
    const streamed = await call(server.url, 'POST', '/v1/chat/completions', JSON.stringify({ ...body, stream: true, stream_options: { include_usage: true } }));
    assert.equal(streamed.status, 200);
    assert.match(String(streamed.headers['content-type']), /^text\/event-stream/);
    const events = streamed.text.split('\n\n').filter((e) => e.length > 0);
    assert.ok(events.every((e) => e.startsWith('data: ')));
    assert.equal(events.at(-1), 'data: [DONE]');
    const chunks = events.slice(0, -1).map((e) => JSON.parse(e.slice(6)) as { object: string; choices: Array<{ delta: { role?: string; content?: string }; finish_reason: string | null }>; usage?: { completion_tokens: number } });
    assert.ok(chunks.every((c) => c.object === 'chat.completion.chunk'));
    assert.equal(chunks[0]!.choices[0]!.delta.role, 'assistant');
    const usageChunk = chunks.at(-1)!;
    assert.deepEqual(usageChunk.choices, []);
    assert.ok(usageChunk.usage!.completion_tokens > 0);
    const last = chunks.at(-2)!.choices[0]!;
    assert.equal(last.finish_reason, plain.choices[0]!.finish_reason);
    const text = chunks.flatMap((c) => c.choices.map((ch) => ch.delta.content ?? '')).join('');
    assert.equal(text, plain.choices[0]!.message.content);
  } finally {
    await server.close();
  }
});

test('HTTP: a client that disconnects mid-generation frees its sequence; close() finishes in-flight requests', async () => {
  const server = await startServer({ model, port: 0, modelId: 'tiny' });
  try {
    // A stream the client drops after its first event.
    await new Promise<void>((resolve, reject) => {
      const req = request(`${server.url}/v1/completions`, { method: 'POST', headers: { 'content-type': 'application/json' } }, (res) => {
        res.once('data', () => {
          req.destroy();
          resolve();
        });
      });
      req.on('error', () => undefined);
      req.end(JSON.stringify({ model: 'tiny', prompt: 'The keeper', max_tokens: 60, stream: true, seed: 1 }));
      setTimeout(() => reject(new Error('no first event')), 10_000).unref();
    });
    for (let i = 0; i < 200 && server.engine.load.running + server.engine.load.queued > 0; i++) await new Promise((r) => setTimeout(r, 10));
    assert.deepEqual(server.engine.load, { running: 0, queued: 0 });
    // An in-flight request survives close(); a new one afterwards cannot connect.
    const inflight = call(server.url, 'POST', '/v1/completions', JSON.stringify({ model: 'tiny', prompt: 'The keeper', max_tokens: 40, seed: 2 }));
    while (server.engine.load.running === 0) await new Promise((r) => setImmediate(r));
    await server.close();
    const r = await inflight;
    assert.equal(r.status, 200, r.text);
    await assert.rejects(call(server.url, 'GET', '/health'));
  } finally {
    await server.close();
  }
});

test('HTTP: a full queue is a 429; a port in use is a one-line error', async () => {
  const server = await startServer({ model, port: 0, modelId: 'tiny', maxConcurrency: 1, maxQueue: 0 });
  try {
    const first = call(server.url, 'POST', '/v1/completions', JSON.stringify({ model: 'tiny', prompt: 'The keeper', max_tokens: 30, seed: 2 }));
    while (server.engine.load.running === 0) await new Promise((r) => setImmediate(r));
    const second = await call(server.url, 'POST', '/v1/completions', JSON.stringify({ model: 'tiny', prompt: 'The keeper', max_tokens: 3 }));
    assert.deepEqual([second.status, errorOf(second.text).code], [429, 'rate_limit_exceeded']);
    assert.equal((await first).status, 200);
    await assert.rejects(startServer({ model, port: server.port }), (e: unknown) => e instanceof HalfpipeError && /already in use/.test(e.message) && !e.message.includes('\n'));
  } finally {
    await server.close();
  }
});
