/**
 * The OpenAI wire format: request validation (one 400 per problem, naming the parameter), the
 * mapping of halfpipe's errors to HTTP statuses, and the response objects (chat.completion,
 * text_completion, their stream chunks, and logprobs in OpenAI's two layouts).
 *
 * Sampling defaults follow OpenAI, not the CLI: temperature 1, top_p 1, top-k and min-p off; the
 * presence/frequency penalties count over the sampler's window (the last 64 tokens, as llama.cpp).
 */
import { HalfpipeError } from '../core/errors.js';
import type { GeneratedToken, GenerateOptions, FinishReason } from '../generate/generate.js';
import { CHAR_TO_BYTE } from '../text/byte-level.js';
import type { Tokenizer } from '../text/tokenizer.js';
import { ContextLengthError, QueueFullError, ShuttingDownError } from './engine.js';

/** An error with its HTTP status and OpenAI's {message, type, param, code}. */
export class ApiError extends Error {
  constructor(
    readonly status: number,
    message: string,
    readonly param: string | null = null,
    readonly code: string | null = null,
    readonly type: string = status === 401 ? 'authentication_error' : status >= 500 ? 'server_error' : 'invalid_request_error',
  ) {
    super(message);
  }

  body(): { error: { message: string; type: string; param: string | null; code: string | null } } {
    return { error: { message: this.message, type: this.type, param: this.param, code: this.code } };
  }
}

/** Any error thrown while serving a request, as the status and body the client gets. */
export function toApiError(e: unknown): ApiError {
  if (e instanceof ApiError) return e;
  if (e instanceof QueueFullError) return new ApiError(429, e.message, null, 'rate_limit_exceeded', 'rate_limit_error');
  if (e instanceof ShuttingDownError) return new ApiError(503, e.message, null, 'server_shutting_down', 'server_error');
  if (e instanceof HalfpipeError) {
    if (e.code === 'numerics') return new ApiError(500, e.message, null, 'numerics_error', 'server_error');
    if (e instanceof ContextLengthError) return new ApiError(400, e.message, 'messages', 'context_length_exceeded');
    return new ApiError(400, e.message);
  }
  return new ApiError(500, `internal error: ${e instanceof Error ? e.message.split('\n')[0] : String(e)}`, null, 'internal_error', 'server_error');
}

type Json = Record<string, unknown>;

/** What both endpoints share once validated. */
export interface ParsedCommon {
  model: string;
  stream: boolean;
  includeUsage: boolean;
  /** engine options (maxTokens already capped) */
  options: Omit<GenerateOptions, 'signal' | 'onNonFinite'>;
  /** top logprobs to report per token, or undefined for no logprobs */
  logprobs: number | undefined;
  jsonMode: boolean;
}

/** One image_url part: its URL and where it is in the request (for error messages). */
export interface ImageRef {
  url: string;
  param: string;
}

export type ChatPart = { type: 'text'; text: string } | { type: 'image' };

export interface ParsedChat extends ParsedCommon {
  messages: Array<{ role: string; content: string | ChatPart[] }>;
  /** the image parts in order; message parts {type:'image'} stand for them */
  images: ImageRef[];
}

export interface ParsedCompletion extends ParsedCommon {
  prompt: string | number[];
}

const bad = (param: string, message: string): ApiError => new ApiError(400, message, param);

function isObject(v: unknown): v is Json {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/** Parses a request body; malformed JSON or a non-object is a 400. */
export function parseJsonBody(text: string): Json {
  let v: unknown;
  try {
    v = JSON.parse(text);
  } catch (e) {
    throw new ApiError(400, `the request body is not valid JSON: ${e instanceof Error ? e.message : String(e)}`);
  }
  if (!isObject(v)) throw new ApiError(400, 'the request body must be a JSON object');
  return v;
}

function numberParam(body: Json, name: string, lo: number, hi: number): number | undefined {
  const v = body[name];
  if (v === undefined || v === null) return undefined;
  if (typeof v !== 'number' || !Number.isFinite(v)) throw bad(name, `'${name}' must be a number, got ${JSON.stringify(v)}`);
  if (v < lo || v > hi) throw bad(name, `'${name}' must be between ${lo} and ${hi}, got ${v}`);
  return v;
}

function intParam(body: Json, name: string, lo: number, hi: number): number | undefined {
  const v = numberParam(body, name, lo, hi);
  if (v !== undefined && !Number.isInteger(v)) throw bad(name, `'${name}' must be an integer, got ${v}`);
  return v;
}

function boolParam(body: Json, name: string): boolean | undefined {
  const v = body[name];
  if (v === undefined || v === null) return undefined;
  if (typeof v !== 'boolean') throw bad(name, `'${name}' must be a boolean, got ${JSON.stringify(v)}`);
  return v;
}

export interface ParseLimits {
  /** max_tokens above it is a 400 */
  maxTokensCap: number;
}

/** The parameters both endpoints take (model, sampling, budget, stops, streaming, n, response_format). */
function parseCommon(body: Json, limits: ParseLimits): Omit<ParsedCommon, 'logprobs'> {
  const model = body['model'];
  if (model === undefined || model === null) throw bad('model', "you must provide a 'model' parameter");
  if (typeof model !== 'string') throw bad('model', `'model' must be a string, got ${JSON.stringify(model)}`);
  const stream = boolParam(body, 'stream') ?? false;
  let includeUsage = false;
  const so = body['stream_options'];
  if (so !== undefined && so !== null) {
    if (!isObject(so)) throw bad('stream_options', "'stream_options' must be an object");
    if (!stream) throw bad('stream_options', "'stream_options' is only allowed when 'stream' is true");
    const iu = so['include_usage'];
    if (iu !== undefined && iu !== null && typeof iu !== 'boolean') throw bad('stream_options.include_usage', "'stream_options.include_usage' must be a boolean");
    includeUsage = iu === true;
  }
  const n = intParam(body, 'n', 1, 128);
  if (n !== undefined && n !== 1) throw bad('n', `only n=1 is supported, got ${n}`);
  const temperature = numberParam(body, 'temperature', 0, 2) ?? 1;
  const topP = numberParam(body, 'top_p', 0, 1) ?? 1;
  const presence = numberParam(body, 'presence_penalty', -2, 2) ?? 0;
  const frequency = numberParam(body, 'frequency_penalty', -2, 2) ?? 0;
  const seed = intParam(body, 'seed', 0, Number.MAX_SAFE_INTEGER);
  const maxCompletion = intParam(body, 'max_completion_tokens', 1, Number.MAX_SAFE_INTEGER);
  const maxTokensRaw = maxCompletion ?? intParam(body, 'max_tokens', 1, Number.MAX_SAFE_INTEGER);
  const budgetParam = maxCompletion !== undefined ? 'max_completion_tokens' : 'max_tokens';
  if (maxTokensRaw !== undefined && maxTokensRaw > limits.maxTokensCap) throw bad(budgetParam, `'${budgetParam}' is ${maxTokensRaw}, above this server's limit of ${limits.maxTokensCap}`);
  const stop = parseStop(body['stop']);
  const jsonMode = parseResponseFormat(body['response_format']);
  const options: ParsedCommon['options'] = {
    // top_p 0 keeps only the most likely token: greedy.
    temperature: topP === 0 ? 0 : temperature,
    topP: topP === 0 ? 1 : topP,
    topK: 0,
    minP: 0,
    repeatPenalty: 1,
    presencePenalty: presence,
    frequencyPenalty: frequency,
    maxTokens: maxTokensRaw ?? limits.maxTokensCap,
    ...(seed !== undefined ? { seed } : {}),
    ...(stop.length ? { stop } : {}),
  };
  return { model, stream, includeUsage, options, jsonMode };
}

function parseStop(v: unknown): string[] {
  if (v === undefined || v === null) return [];
  const list = typeof v === 'string' ? [v] : v;
  if (!Array.isArray(list) || list.some((s) => typeof s !== 'string')) throw bad('stop', "'stop' must be a string or an array of strings");
  if (list.length > 4) throw bad('stop', `'stop' takes at most 4 sequences, got ${list.length}`);
  return (list as string[]).filter((s) => s.length > 0);
}

/** Whether JSON mode is on; json_schema and unknown types are 400s. */
function parseResponseFormat(v: unknown): boolean {
  if (v === undefined || v === null) return false;
  if (!isObject(v) || typeof v['type'] !== 'string') throw bad('response_format', "'response_format' must be an object with a string 'type'");
  const type = v['type'];
  if (type === 'text') return false;
  if (type === 'json_object') return true;
  if (type === 'json_schema') throw bad('response_format', "response_format type 'json_schema' is not supported by this server; use 'json_object'");
  throw bad('response_format', `unknown response_format type '${type}' (expected 'text' or 'json_object')`);
}

const ROLES = new Set(['system', 'user', 'assistant', 'developer']);

/** Validates a chat request: messages with string or part-array content; images become placeholders. */
export function parseChatRequest(body: Json, limits: ParseLimits): ParsedChat {
  const common = parseCommon(body, limits);
  const raw = body['messages'];
  if (!Array.isArray(raw)) throw bad('messages', "'messages' must be an array of messages");
  if (raw.length === 0) throw bad('messages', "'messages' must not be empty");
  const images: ImageRef[] = [];
  const messages = raw.map((m, i) => {
    const at = `messages[${i}]`;
    if (!isObject(m)) throw bad(at, `${at} must be an object`);
    const role = m['role'];
    if (typeof role !== 'string' || !ROLES.has(role)) throw bad(`${at}.role`, `${at}.role must be 'system', 'user' or 'assistant', got ${JSON.stringify(role)}`);
    const content = m['content'];
    // 'developer' is OpenAI's newer name for the system role.
    const r = role === 'developer' ? 'system' : role;
    if (typeof content === 'string') return { role: r, content };
    if ((content === null || content === undefined) && role === 'assistant') return { role: r, content: '' };
    if (!Array.isArray(content)) throw bad(`${at}.content`, `${at}.content must be a string or an array of content parts`);
    const parts: ChatPart[] = content.map((p, j) => {
      const pat = `${at}.content[${j}]`;
      if (!isObject(p)) throw bad(pat, `${pat} must be an object`);
      if (p['type'] === 'text') {
        if (typeof p['text'] !== 'string') throw bad(`${pat}.text`, `${pat}.text must be a string`);
        return { type: 'text', text: p['text'] };
      }
      if (p['type'] === 'image_url') {
        const iu = p['image_url'];
        const url = typeof iu === 'string' ? iu : isObject(iu) ? iu['url'] : undefined;
        if (typeof url !== 'string') throw bad(`${pat}.image_url`, `${pat}.image_url must be an object with a string 'url'`);
        images.push({ url, param: `${pat}.image_url` });
        return { type: 'image' };
      }
      throw bad(`${pat}.type`, `${pat}.type must be 'text' or 'image_url', got ${JSON.stringify(p['type'])}`);
    });
    // Text-only parts become one string: every chat template renders that.
    if (parts.every((p) => p.type === 'text')) return { role: r, content: parts.map((p) => (p as { text: string }).text).join('') };
    return { role: r, content: parts };
  });
  const logprobsOn = boolParam(body, 'logprobs') ?? false;
  const top = intParam(body, 'top_logprobs', 0, 20);
  if (top !== undefined && !logprobsOn) throw bad('top_logprobs', "'top_logprobs' needs 'logprobs' set to true");
  return { ...common, messages, images, logprobs: logprobsOn ? (top ?? 0) : undefined };
}

/** Validates a completions request: prompt as a string, [string], token ids or [token ids]. */
export function parseCompletionRequest(body: Json, limits: ParseLimits): ParsedCompletion {
  const common = parseCommon(body, limits);
  let p = body['prompt'];
  if (p === undefined || p === null) throw bad('prompt', "you must provide a 'prompt' parameter");
  if (Array.isArray(p) && p.length === 1 && (typeof p[0] === 'string' || Array.isArray(p[0]))) p = p[0];
  let prompt: string | number[];
  if (typeof p === 'string') prompt = p;
  else if (Array.isArray(p) && p.length > 0 && p.every((x) => Number.isInteger(x) && (x as number) >= 0)) prompt = p as number[];
  else if (Array.isArray(p) && p.length > 1 && p.every((x) => typeof x === 'string' || Array.isArray(x))) throw bad('prompt', `only one prompt per request is supported, got ${p.length}`);
  else throw bad('prompt', "'prompt' must be a string, an array of one string, or an array of token ids");
  if (body['echo'] === true) throw bad('echo', "'echo' is not supported by this server");
  if (body['suffix'] !== undefined && body['suffix'] !== null) throw bad('suffix', "'suffix' is not supported by this server");
  const best = intParam(body, 'best_of', 1, 20);
  if (best !== undefined && best !== 1) throw bad('best_of', `only best_of=1 is supported, got ${best}`);
  const logprobs = intParam(body, 'logprobs', 0, 5);
  return { ...common, prompt, logprobs: logprobs ?? undefined };
}

/** The engine's top-K for a request: at least 1 so that each token carries its own log-probability. */
export function engineLogprobs(logprobs: number | undefined): number {
  return logprobs === undefined ? 0 : Math.max(1, logprobs);
}

export function finishReason(reason: FinishReason): 'stop' | 'length' {
  return reason === 'length' ? 'length' : 'stop';
}

/**
 * A token's UTF-8 bytes, from its vocabulary piece: `<0xAB>` byte tokens are that byte,
 * SentencePiece's '▁' is a space, byte-level BPE pieces map back through GPT-2's byte alphabet;
 * otherwise the tokenizer's decoding of the token alone.
 */
export function tokenBytes(tokenizer: Tokenizer, id: number): number[] {
  const piece = tokenizer.tokenText(id);
  const hex = /^<0x([0-9A-Fa-f]{2})>$/.exec(piece);
  if (hex) return [parseInt(hex[1]!, 16)];
  if (tokenizer.isSpecial(id)) return [...Buffer.from(piece, 'utf8')];
  const decoded = tokenizer.decode([id]);
  if (!decoded.includes('\uFFFD')) {
    // Decoders drop a sequence-initial space; the piece says whether the token has one.
    const text = piece.startsWith('\u2581') && !decoded.startsWith(' ') ? ` ${decoded}` : decoded;
    return [...Buffer.from(text, 'utf8')];
  }
  if ([...piece].every((c) => CHAR_TO_BYTE.has(c))) return [...piece].map((c) => CHAR_TO_BYTE.get(c)!);
  return [...Buffer.from(decoded, 'utf8')];
}

/** A token's display text and bytes (memoized per tokenizer: logprobs ask for the same tokens often). */
export class TokenTexts {
  private readonly cache = new Map<number, { token: string; bytes: number[] }>();
  constructor(private readonly tokenizer: Tokenizer) {}

  get(id: number): { token: string; bytes: number[] } {
    let t = this.cache.get(id);
    if (!t) {
      const bytes = tokenBytes(this.tokenizer, id);
      t = { token: Buffer.from(bytes).toString('utf8'), bytes };
      if (this.cache.size > 65536) this.cache.clear();
      this.cache.set(id, t);
    }
    return t;
  }
}

export interface ChatLogprob {
  token: string;
  logprob: number;
  bytes: number[];
  top_logprobs: Array<{ token: string; logprob: number; bytes: number[] }>;
}

/** Chat logprobs of generated tokens: {token, logprob, bytes, top_logprobs[top]}. */
export function chatLogprobs(tokens: readonly GeneratedToken[], top: number, texts: TokenTexts): ChatLogprob[] {
  return tokens.map((t) => ({
    ...texts.get(t.id),
    logprob: t.logprob ?? 0,
    top_logprobs: (t.topLogprobs ?? []).slice(0, top).map((a) => ({ ...texts.get(a.id), logprob: a.logprob })),
  }));
}

export interface CompletionLogprobs {
  tokens: string[];
  token_logprobs: number[];
  top_logprobs: Array<Record<string, number>>;
  text_offset: number[];
}

/** Completions logprobs: parallel arrays; text_offset counts characters from `offset`. */
export function completionLogprobs(tokens: readonly GeneratedToken[], top: number, texts: TokenTexts, offset = 0): CompletionLogprobs {
  const out: CompletionLogprobs = { tokens: [], token_logprobs: [], top_logprobs: [], text_offset: [] };
  let at = offset;
  for (const t of tokens) {
    const { token } = texts.get(t.id);
    out.tokens.push(token);
    out.token_logprobs.push(t.logprob ?? 0);
    const alts: Record<string, number> = {};
    for (const a of (t.topLogprobs ?? []).slice(0, top)) {
      const name = texts.get(a.id).token;
      if (!(name in alts)) alts[name] = a.logprob;
    }
    out.top_logprobs.push(alts);
    out.text_offset.push(at);
    at += token.length;
  }
  return out;
}

export interface Usage {
  prompt_tokens: number;
  completion_tokens: number;
  total_tokens: number;
}

export function usage(prompt: number, completion: number): Usage {
  return { prompt_tokens: prompt, completion_tokens: completion, total_tokens: prompt + completion };
}
