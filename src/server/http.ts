/**
 * An OpenAI-compatible HTTP server on node:http, in front of the serving engine (engine.ts):
 *
 *   GET  /health                -> {status, running, queued}
 *   GET  /v1/models             -> the one model this server holds
 *   POST /v1/chat/completions   -> chat.completion, or chat.completion.chunk events (SSE)
 *   POST /v1/completions        -> text_completion, or its chunks (SSE)
 *
 * A request is read with a byte limit (413 as soon as it is passed), validated (openai.ts: one 400
 * naming the parameter), tokenized (LLaVA: images decoded and encoded), then submitted to the
 * engine, which runs it batched with the others. A client that goes away aborts its request (the
 * engine frees its KV cache). Streaming starts with the first token, so an error before it (a full
 * queue, a numerics failure in the prefill) is still a plain HTTP status; after it, an error event.
 */
import { createHash, randomUUID, timingSafeEqual } from 'node:crypto';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { basename } from 'node:path';
import { performance } from 'node:perf_hooks';
import { fail, HalfpipeError } from '../core/errors.js';
import type { GeneratedToken } from '../generate/generate.js';
import { jsonObjectConstraint } from '../generate/json-constraint.js';
import type { LlamaSession } from '../models/llama/model.js';
import { LlavaModel } from '../models/llava/model.js';
import type { TextModel } from '../models/load.js';
import { Engine, type EngineRequest, type EngineResult } from './engine.js';
import { DEFAULT_IMAGE_FETCH, loadImageUrl } from './images.js';
import {
  ApiError,
  chatLogprobs,
  completionLogprobs,
  engineLogprobs,
  finishReason,
  parseChatRequest,
  parseCompletionRequest,
  parseJsonBody,
  type ParsedChat,
  type ParsedCommon,
  type ParsedCompletion,
  type ParseLimits,
  toApiError,
  TokenTexts,
  usage,
} from './openai.js';

export interface ServeOptions {
  /** a loaded model (LlavaModel for image input) */
  model: TextModel;
  /** the id /v1/models lists and requests must name (default: basename of info.path) */
  modelId?: string;
  /** default '127.0.0.1' */
  host?: string;
  /** default 8080; 0 = any free port */
  port?: number;
  /** when set, every /v1/* request needs 'Authorization: Bearer <key>' (constant-time compare); /health does not */
  apiKey?: string;
  /** default 8 */
  maxConcurrency?: number;
  /** default 64 (429 when full) */
  maxQueue?: number;
  /** default true */
  batching?: boolean;
  /** default 20 MiB (413 beyond) */
  maxBodyBytes?: number;
  /** default 4096: max_tokens above it -> 400 */
  maxTokensCap?: number;
  /** default false: http(s) image URLs -> 400; data: URIs always OK; file paths never */
  allowRemoteImages?: boolean;
  /** one line per request (default: none) */
  log?: (line: string) => void;
}

export interface RunningServer {
  /** http://host:port */
  url: string;
  port: number;
  engine: Engine;
  /** stop accepting, finish in-flight requests, then close */
  close(): Promise<void>;
}

/** What a handled request reports for the log line. */
interface RequestNote {
  promptTokens?: number;
  completionTokens?: number;
}

const sha256 = (s: string): Buffer => createHash('sha256').update(s, 'utf8').digest();

/** Reads the body up to `limit` bytes; past it, a 413 without reading the rest. */
function readBody(req: IncomingMessage, limit: number): Promise<string> {
  const declared = Number(req.headers['content-length']);
  if (Number.isFinite(declared) && declared > limit) return Promise.reject(tooLarge(limit));
  return new Promise((resolve, reject) => {
    const pieces: Buffer[] = [];
    let total = 0;
    const onData = (piece: Buffer) => {
      total += piece.length;
      if (total > limit) {
        req.off('data', onData);
        req.pause();
        reject(tooLarge(limit));
        return;
      }
      pieces.push(piece);
    };
    req.on('data', onData);
    req.on('end', () => resolve(Buffer.concat(pieces).toString('utf8')));
    req.on('error', reject);
  });
}

class BodyTooLarge extends ApiError {}

function tooLarge(limit: number): ApiError {
  return new BodyTooLarge(413, `the request body is larger than ${limit} bytes`, null, 'request_too_large');
}

function sendJson(res: ServerResponse, status: number, body: unknown, headers: Record<string, string> = {}): void {
  if (res.headersSent) {
    res.end();
    return;
  }
  const text = JSON.stringify(body);
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': String(Buffer.byteLength(text)), ...headers });
  res.end(text);
}

export async function startServer(opts: ServeOptions): Promise<RunningServer> {
  const model = opts.model;
  const host = opts.host ?? '127.0.0.1';
  const port = opts.port ?? 8080;
  const maxBodyBytes = opts.maxBodyBytes ?? 20 * 1024 * 1024;
  const limits: ParseLimits = { maxTokensCap: opts.maxTokensCap ?? 4096 };
  if (!Number.isInteger(port) || port < 0 || port > 65535) fail('usage', `port must be an integer in 0..65535, got ${port}`);
  if (!Number.isInteger(maxBodyBytes) || maxBodyBytes < 1) fail('usage', `maxBodyBytes must be a positive integer, got ${maxBodyBytes}`);
  if (!Number.isInteger(limits.maxTokensCap) || limits.maxTokensCap < 1) fail('usage', `maxTokensCap must be a positive integer, got ${limits.maxTokensCap}`);
  if (opts.apiKey !== undefined && opts.apiKey.length === 0) fail('usage', 'the API key must not be empty');
  const modelId = opts.modelId ?? basename(model.info.path);
  const created = Math.floor(Date.now() / 1000);
  const engine = new Engine(model, {
    ...(opts.maxConcurrency !== undefined ? { maxConcurrency: opts.maxConcurrency } : {}),
    ...(opts.maxQueue !== undefined ? { maxQueue: opts.maxQueue } : {}),
    ...(opts.batching !== undefined ? { batching: opts.batching } : {}),
  });
  const keyDigest = opts.apiKey === undefined ? undefined : sha256(opts.apiKey);
  const texts = new TokenTexts(model.tokenizer);
  const imageOpts = { ...DEFAULT_IMAGE_FETCH, maxBytes: Math.min(DEFAULT_IMAGE_FETCH.maxBytes, maxBodyBytes), allowRemote: opts.allowRemoteImages ?? false };
  let closing = false;

  const authorized = (req: IncomingMessage): boolean => {
    if (!keyDigest) return true;
    const m = /^Bearer\s+(.+)$/i.exec(req.headers.authorization ?? '');
    // Equal-length digests: the comparison takes the same time whatever the key sent.
    return m !== null && timingSafeEqual(sha256(m[1]!.trim()), keyDigest);
  };

  const checkModel = (name: string) => {
    if (name !== modelId) throw new ApiError(404, `the model '${name}' does not exist on this server (it serves '${modelId}')`, 'model', 'model_not_found');
  };

  /** Runs a validated request through the engine and writes the response (JSON or SSE). */
  const generate = async (
    req: IncomingMessage,
    res: ServerResponse,
    kind: 'chat' | 'completion',
    parsed: ParsedCommon,
    promptIds: readonly number[],
    extra: { session?: () => LlamaSession; guard?: EngineRequest['guard'] },
    note: RequestNote,
  ): Promise<void> => {
    note.promptTokens = promptIds.length;
    const context = model.config.contextLength;
    if (promptIds.length > context) {
      throw new ApiError(400, `the prompt has ${promptIds.length} tokens but the model's context holds ${context}`, kind === 'chat' ? 'messages' : 'prompt', 'context_length_exceeded');
    }
    const abort = new AbortController();
    res.on('close', () => {
      if (!res.writableFinished) abort.abort();
    });
    req.on('close', () => {
      if (!req.complete) abort.abort();
    });
    const id = `${kind === 'chat' ? 'chatcmpl' : 'cmpl'}-${randomUUID().replace(/-/g, '')}`;
    const stamp = Math.floor(Date.now() / 1000);
    const object = kind === 'chat' ? 'chat.completion.chunk' : 'text_completion';
    const event = (data: unknown) => res.write(`data: ${JSON.stringify(data)}\n\n`);
    const chunk = (choice: Record<string, unknown>) => event({ id, object, created: stamp, model: modelId, choices: [{ index: 0, ...choice }] });
    const tokens: GeneratedToken[] = [];
    let textSoFar = 0;
    const startStream = () => {
      if (res.headersSent) return;
      res.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-cache', ...(closing ? { connection: 'close' } : {}) });
      if (kind === 'chat') chunk({ delta: { role: 'assistant', content: '' }, logprobs: null, finish_reason: null });
    };
    const top = parsed.logprobs;
    const streamToken = (t: GeneratedToken) => {
      if (t.text === '' && top === undefined) return;
      startStream();
      if (kind === 'chat') {
        chunk({ delta: { content: t.text }, logprobs: top === undefined ? null : { content: chatLogprobs([t], top, texts) }, finish_reason: null });
      } else {
        chunk({ text: t.text, logprobs: top === undefined ? null : completionLogprobs([t], top, texts, textSoFar), finish_reason: null });
      }
      textSoFar += t.text.length;
    };
    const onToken = (t: GeneratedToken) => {
      tokens.push(t);
      if (parsed.stream && !abort.signal.aborted) streamToken(t);
    };
    const constraint = parsed.jsonMode ? jsonObjectConstraint(model.tokenizer) : undefined;
    const options = { ...parsed.options, logprobs: engineLogprobs(top), ...(constraint ? { constraint } : {}) };
    let result: EngineResult;
    try {
      result = await engine.submit({ promptIds, options, signal: abort.signal, onToken, ...(extra.session ? { session: extra.session } : {}), ...(extra.guard ? { guard: extra.guard } : {}) });
    } catch (e) {
      if (!res.headersSent) throw e;
      // The stream has started: the error goes as an event, then the connection ends.
      event(toApiError(e).body());
      res.end();
      return;
    }
    note.completionTokens = result.tokens.length;
    if (result.finishReason === 'cancelled' || abort.signal.aborted) {
      res.destroy();
      return;
    }
    const finish = finishReason(result.finishReason);
    const use = usage(result.promptTokens, result.tokens.length);
    if (parsed.stream) {
      startStream();
      if (result.tail) {
        if (kind === 'chat') chunk({ delta: { content: result.tail }, logprobs: null, finish_reason: null });
        else chunk({ text: result.tail, logprobs: null, finish_reason: null });
      }
      if (kind === 'chat') chunk({ delta: {}, logprobs: null, finish_reason: finish });
      else chunk({ text: '', logprobs: null, finish_reason: finish });
      if (parsed.includeUsage) event({ id, object, created: stamp, model: modelId, choices: [], usage: use });
      res.end('data: [DONE]\n\n');
      return;
    }
    const headers: Record<string, string> = closing ? { connection: 'close' } : {};
    if (kind === 'chat') {
      sendJson(res, 200, {
        id,
        object: 'chat.completion',
        created: stamp,
        model: modelId,
        choices: [
          {
            index: 0,
            message: { role: 'assistant', content: result.text, refusal: null },
            logprobs: top === undefined ? null : { content: chatLogprobs(tokens, top, texts), refusal: null },
            finish_reason: finish,
          },
        ],
        usage: use,
        system_fingerprint: null,
      }, headers);
    } else {
      sendJson(res, 200, {
        id,
        object: 'text_completion',
        created: stamp,
        model: modelId,
        choices: [{ index: 0, text: result.text, logprobs: top === undefined ? null : completionLogprobs(tokens, top, texts), finish_reason: finish }],
        usage: use,
        system_fingerprint: null,
      }, headers);
    }
  };

  const chat = async (req: IncomingMessage, res: ServerResponse, parsed: ParsedChat, note: RequestNote) => {
    checkModel(parsed.model);
    const messages = parsed.messages;
    if (parsed.images.length > 0) {
      if (!(model instanceof LlavaModel)) throw new ApiError(400, `the model '${modelId}' does not take images (it is ${model.info.architecture}, not LLaVA)`, parsed.images[0]!.param);
      const images = await Promise.all(parsed.images.map((r) => loadImageUrl(r.url, imageOpts, r.param)));
      if (res.destroyed) return;
      // Encoded a layer at a time, with turns for the event loop: the other requests keep decoding.
      const prepared = await model.prepareAsync({ messages }, images);
      if (res.destroyed) return;
      await generate(req, res, 'chat', parsed, prepared.ids, { session: () => model.session(prepared), guard: model.imageGuard(prepared) }, note);
      return;
    }
    // LLaVA without images still tokenizes through prepare (its placeholder rules).
    const ids = model instanceof LlavaModel ? model.prepare({ messages }, []).ids : model.promptIds({ messages });
    await generate(req, res, 'chat', parsed, ids, {}, note);
  };

  const completion = async (req: IncomingMessage, res: ServerResponse, parsed: ParsedCompletion, note: RequestNote) => {
    checkModel(parsed.model);
    const vocab = model.tokenizer.vocabSize;
    if (typeof parsed.prompt !== 'string') {
      const badId = parsed.prompt.find((t) => t >= vocab);
      if (badId !== undefined) throw new ApiError(400, `token id ${badId} in 'prompt' is outside the vocabulary of ${vocab}`, 'prompt');
    }
    const ids = model.promptIds(parsed.prompt);
    await generate(req, res, 'completion', parsed, ids, {}, note);
  };

  const handle = async (req: IncomingMessage, res: ServerResponse, note: RequestNote): Promise<void> => {
    const path = new URL(req.url ?? '/', 'http://localhost').pathname.replace(/\/+$/, '') || '/';
    const method = req.method ?? 'GET';
    const routes: Record<string, string> = { '/health': 'GET', '/v1/models': 'GET', '/v1/chat/completions': 'POST', '/v1/completions': 'POST' };
    const modelPath = path.startsWith('/v1/models/') ? decodeURIComponent(path.slice('/v1/models/'.length)) : undefined;
    const allowed = routes[path] ?? (modelPath !== undefined ? 'GET' : undefined);
    if (allowed === undefined) throw new ApiError(404, `no route for ${method} ${path}`, null, 'not_found');
    if (path.startsWith('/v1/') && !authorized(req)) throw new ApiError(401, 'invalid or missing API key (send Authorization: Bearer <key>)', null, 'invalid_api_key');
    if (method !== allowed) {
      res.setHeader('allow', allowed);
      throw new ApiError(405, `${path} takes ${allowed}, not ${method}`, null, 'method_not_allowed');
    }
    const card = { id: modelId, object: 'model', created, owned_by: 'halfpipe' };
    if (path === '/health') return sendJson(res, 200, { status: closing ? 'shutting_down' : 'ok', ...engine.load });
    if (path === '/v1/models') return sendJson(res, 200, { object: 'list', data: [card] });
    if (modelPath !== undefined) {
      checkModel(modelPath);
      return sendJson(res, 200, card);
    }
    const body = parseJsonBody(await readBody(req, maxBodyBytes));
    if (path === '/v1/chat/completions') return chat(req, res, parseChatRequest(body, limits), note);
    return completion(req, res, parseCompletionRequest(body, limits), note);
  };

  const server: Server = createServer((req, res) => {
    const t0 = performance.now();
    const note: RequestNote = {};
    res.on('close', () => {
      if (!opts.log) return;
      const tokens = note.promptTokens === undefined ? '' : ` prompt=${note.promptTokens} completion=${note.completionTokens ?? 0}`;
      const gone = res.writableFinished ? '' : ' (client gone)';
      opts.log(`${req.method} ${req.url} ${res.statusCode} ${(performance.now() - t0).toFixed(0)}ms${tokens}${gone}`);
    });
    handle(req, res, note).catch((e: unknown) => {
      const err = toApiError(e);
      if (res.headersSent) {
        res.end();
        return;
      }
      if (err instanceof BodyTooLarge) {
        // The rest of the body is not read: answer, then drop the connection.
        sendJson(res, err.status, err.body(), { connection: 'close' });
        res.on('finish', () => setTimeout(() => req.socket.destroy(), 100).unref());
        return;
      }
      sendJson(res, err.status, err.body(), closing ? { connection: 'close' } : {});
    });
  });

  await new Promise<void>((resolve, reject) => {
    const onError = (e: NodeJS.ErrnoException) => {
      const why = e.code === 'EADDRINUSE' ? `port ${port} on ${host} is already in use` : e.code === 'EACCES' ? `no permission to listen on ${host}:${port}` : e.message;
      reject(new HalfpipeError('usage', `cannot listen: ${why}`));
    };
    server.once('error', onError);
    server.listen(port, host, () => {
      server.off('error', onError);
      resolve();
    });
  });
  const address = server.address();
  const bound = typeof address === 'object' && address ? address.port : port;
  const shownHost = host.includes(':') ? `[${host}]` : host;

  let closed: Promise<void> | undefined;
  const close = (): Promise<void> => {
    closed ??= (async () => {
      closing = true;
      const stopped = new Promise<void>((resolve) => server.close(() => resolve()));
      await engine.drain();
      // In-flight responses finish writing; then idle keep-alive connections are closed, and
      // after a grace period whatever is left.
      const deadline = performance.now() + 5000;
      let done = false;
      void stopped.then(() => (done = true));
      while (!done && performance.now() < deadline) {
        server.closeIdleConnections();
        await new Promise((r) => setTimeout(r, 20));
      }
      if (!done) server.closeAllConnections();
      await stopped;
    })();
    return closed;
  };

  return { url: `http://${shownHost}:${bound}`, port: bound, engine, close };
}

