/** `halfpipe generate`, `chat`, `info` and `tiny`: argument handling and printing only. */
import { existsSync, readFileSync } from 'node:fs';
import { homedir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { performance } from 'node:perf_hooks';
import { type DType, parseDType } from '../core/dtype.js';
import { fail } from '../core/errors.js';
import type { GenerateOptions, GenerateResult, GeneratedToken } from '../generate/generate.js';
import { resolveSamplingOptions } from '../generate/sampler.js';
import { loadModel, type Prompt, type TextModel } from '../models/load.js';
import { TINY_QUANTS, type TinyQuant, writeTinyModel } from '../models/tiny.js';
import { parsePolicy } from '../precision/policy.js';
import { setThreads } from '../kernels/wasm/pool.js';
import { LlavaModel } from '../models/llava/model.js';
import { IMAGE_TOKEN as IMAGE_PLACEHOLDER } from '../models/llava/tiny.js';
import { decodeImage } from '../vision/image.js';
import type { ChatMessage } from '../text/chat.js';

const PACKAGE_VERSION = (JSON.parse(readFileSync(new URL('../../../package.json', import.meta.url), 'utf8')) as { version: string }).version;

const DEFAULT_MODEL_NOTE = 'halfpipe: no --model given: using the built-in tiny model (a 1.7M-parameter bigram model of a few paragraphs about a lighthouse; try --model org/name or a .gguf file)\n';

/**
 * Where a built-in model is cached: under the package version too, so that an upgrade that changes
 * a generator never reads the model an older version wrote.
 */
function builtinModelDir(name: string): string {
  return join(process.env['XDG_CACHE_HOME'] ?? join(homedir(), '.cache'), 'halfpipe', PACKAGE_VERSION, name);
}

/** The embedded default: a tiny model written once into ~/.cache/halfpipe (no download). */
function defaultModelPath(): string {
  const dir = builtinModelDir('tiny-bigram-v2');
  if (!existsSync(join(dir, 'model.safetensors'))) writeTinyModel({ format: 'hf', out: dir, seed: 0, preset: 'bigram' });
  return dir;
}

/** The embedded stress model (massive activations, an f16 down_proj overflow), written once. */
export function stressModelPath(): string {
  const dir = builtinModelDir('tiny-stress-v1');
  if (!existsSync(join(dir, 'model.safetensors'))) writeTinyModel({ format: 'hf', out: dir, seed: 0, stress: 'massive-activations' });
  return dir;
}

export interface ModelFlags {
  model?: string;
  kernels?: 'wasm' | 'reference';
  threads?: number;
  mmproj?: string;
  policy?: string;
  dtype?: string;
  kvCache?: string;
  offline?: boolean;
}

export async function openModel(flags: ModelFlags): Promise<{ model: TextModel; loadSeconds: number }> {
  const t0 = performance.now();
  // Bad flags fail before anything loads.
  const policy = flags.policy ? parsePolicy(flags.policy) : undefined;
  let path = flags.model;
  if (!path) {
    process.stderr.write(DEFAULT_MODEL_NOTE);
    path = defaultModelPath();
  }
  const kvCache = flags.kvCache === undefined ? undefined : (parseDType(flags.kvCache) as DType);
  if (kvCache === 'bf16') fail('usage', '--kv-cache must be f32 or f16');
  if (flags.threads !== undefined) setThreads(flags.threads);
  const model = await loadModel(path, {
    ...(flags.kernels ? { kernels: flags.kernels } : {}),
    ...(policy ? { policy } : {}),
    ...(flags.dtype ? { dtype: parseDType(flags.dtype) } : {}),
    ...(kvCache ? { kvCache: kvCache as 'f32' | 'f16' } : {}),
    ...(flags.offline ? { hub: { offline: true } } : {}),
    ...(flags.mmproj ? { mmproj: flags.mmproj === 'none' ? (false as const) : flags.mmproj } : {}),
  });
  return { model, loadSeconds: (performance.now() - t0) / 1000 };
}

export interface GenerateFlags extends ModelFlags {
  prompt?: string;
  promptIds?: string;
  chat?: boolean;
  maxTokens: number;
  temperature?: number;
  topK?: number;
  topP?: number;
  minP?: number;
  repeatPenalty?: number;
  seed?: number;
  logprobs?: number;
  stop?: string[];
  json?: boolean;
  onNonfinite?: 'error' | 'warn' | 'upcast';
  image?: string[];
}

export function samplingFrom(flags: GenerateFlags): GenerateOptions {
  const opts: GenerateOptions = { maxTokens: flags.maxTokens };
  if (flags.temperature !== undefined) opts.temperature = flags.temperature;
  if (flags.topK !== undefined) opts.topK = flags.topK;
  if (flags.topP !== undefined) opts.topP = flags.topP;
  if (flags.minP !== undefined) opts.minP = flags.minP;
  if (flags.repeatPenalty !== undefined) opts.repeatPenalty = flags.repeatPenalty;
  if (flags.seed !== undefined) opts.seed = flags.seed;
  if (flags.logprobs !== undefined) opts.logprobs = flags.logprobs;
  if (flags.stop?.length) opts.stop = flags.stop;
  if (flags.onNonfinite) opts.onNonFinite = flags.onNonfinite;
  return opts;
}

function parsePromptIds(text: string): number[] {
  const ids = text.split(',').map((s) => s.trim());
  if (ids.some((s) => !/^\d+$/.test(s))) fail('usage', `--prompt-ids must be comma-separated token ids, got '${text}'`);
  return ids.map(Number);
}

/** Runs the iterator, calling onToken per token; returns the final result. */
/** The prompt with its images: placeholders for images the text does not place itself. */
export function imagePrompt(model: TextModel, text: string, images: readonly string[], chat: boolean): { prompt: Prompt; images: string[] } {
  if (images.length > 0 && !(model instanceof LlavaModel)) fail('usage', `--image needs a LLaVA model; ${model.info.path} is ${model.info.architecture}`);
  const placed = text.split(IMAGE_PLACEHOLDER).length - 1;
  if (chat) {
    // Image parts first, as LLaVA's chat templates expect, unless the text places them itself.
    const parts = placed > 0 ? [] : images.map(() => ({ type: 'image' as const }));
    return { prompt: { messages: [{ role: 'user', content: parts.length ? [...parts, { type: 'text' as const, text }] : text }] }, images: [...images] };
  }
  return { prompt: placed > 0 || images.length === 0 ? text : `${images.map(() => IMAGE_PLACEHOLDER).join('')}\n${text}`, images: [...images] };
}

async function drain(it: AsyncGenerator<GeneratedToken, GenerateResult>, onToken: (t: GeneratedToken) => void): Promise<GenerateResult> {
  for (;;) {
    const step = await it.next();
    if (step.done) return step.value;
    onToken(step.value);
  }
}

export async function generateCommand(flags: GenerateFlags): Promise<void> {
  if ((flags.prompt === undefined) === (flags.promptIds === undefined)) fail('usage', 'give exactly one of --prompt TEXT and --prompt-ids 1,2,3');
  if (flags.chat && flags.promptIds !== undefined) fail('usage', '--chat takes --prompt, not --prompt-ids');
  const ids = flags.promptIds !== undefined ? parsePromptIds(flags.promptIds) : undefined;
  const sampling = samplingFrom(flags);
  resolveSamplingOptions(sampling); // bad sampling options fail before the model loads
  const { model, loadSeconds } = await openModel(flags);
  const images = flags.image ?? [];
  const { prompt, images: placed } = ids ? { prompt: ids as Prompt, images } : imagePrompt(model, flags.prompt!, images, flags.chat === true);
  if (ids && images.length && !(model instanceof LlavaModel)) fail('usage', '--image needs a LLaVA model');
  const it = model instanceof LlavaModel ? model.generate(prompt, { ...sampling, images: placed }) : model.generate(prompt, sampling);
  let printed = '';
  const result = await drain(it, (t) => {
    if (flags.json) return;
    process.stdout.write(t.text);
    printed += t.text;
  });
  if (flags.json) {
    const logprobs = result.logprobs?.map((step) => step.map(({ id, token, logprob }) => ({ id, token, logprob })));
    process.stdout.write(
      `${JSON.stringify({
        tokens: result.tokens,
        text: result.text,
        logprobs: logprobs ?? null,
        finish_reason: result.finishReason,
        timings: { load_s: loadSeconds, prefill_tokens_per_s: result.timings.prefillTokensPerSecond, decode_tokens_per_s: result.timings.decodeTokensPerSecond },
      })}\n`,
    );
    return;
  }
  process.stdout.write(`${result.text.slice(printed.length)}\n`);
}

export async function chatCommand(flags: GenerateFlags): Promise<void> {
  const { model } = await openModel(flags);
  if (!model.chatTemplate) fail('config', 'this model has no chat template');
  const messages: ChatMessage[] = [];
  const interactive = process.stdin.isTTY === true;
  const rl = createInterface({ input: process.stdin, output: process.stdout, terminal: interactive });
  const ask = () => interactive && rl.setPrompt('> ') === undefined && rl.prompt();
  if (interactive) process.stdout.write(`halfpipe chat: /reset clears the conversation, ${model instanceof LlavaModel ? '/image PATH attaches an image to the next turn, ' : ''}/exit or Ctrl-D leaves\n`);
  // Images attached so far: every turn's images stay with the conversation.
  const images: string[] = [];
  let pending: string[] = [];
  ask();
  for await (const line of rl) {
    const text = line.trim();
    if (text === '/exit') break;
    if (text === '/reset') {
      messages.length = 0;
      images.length = 0;
      pending = [];
      ask();
      continue;
    }
    if (text.startsWith('/image ')) {
      if (!(model instanceof LlavaModel)) fail('usage', '/image needs a LLaVA model');
      const path = text.slice(7).trim();
      decodeImage(path); // a bad image fails now, not at the next turn
      pending.push(path);
      ask();
      continue;
    }
    if (text === '') {
      ask();
      continue;
    }
    messages.push({ role: 'user', content: pending.length ? [...pending.map(() => ({ type: 'image' as const })), { type: 'text' as const, text }] : text });
    images.push(...pending);
    pending = [];
    const it = model instanceof LlavaModel ? model.generate({ messages }, { ...samplingFrom(flags), images }) : model.generate({ messages }, samplingFrom(flags));
    let printed = '';
    const result = await drain(it, (t) => {
      process.stdout.write(t.text);
      printed += t.text;
    });
    process.stdout.write(`${result.text.slice(printed.length)}\n`);
    messages.push({ role: 'assistant', content: result.text });
    ask();
  }
  rl.close();
}

export async function infoCommand(flags: ModelFlags & { json?: boolean }): Promise<void> {
  const { model } = await openModel(flags);
  const { info } = model;
  const c = info.config;
  const rope = { type: c.rope.type, theta: c.rope.base, rotary_dim: c.rope.rotaryDim, pairing: c.ropePairing };
  if (flags.json) {
    const { config: _config, ...rest } = info;
    process.stdout.write(`${JSON.stringify({ ...rest, dim: c.dim, layers: c.nLayers, heads: c.nHeads, kv_heads: c.nKvHeads, head_dim: c.headDim, hidden_dim: c.hiddenDim, rope })}\n`);
    return;
  }
  const lines = [
    `model          ${info.path} (${info.source === 'hf' ? 'HF checkpoint' : 'GGUF'})`,
    `architecture   ${info.architecture}`,
    `parameters     ${info.parameters.toLocaleString('en-US')}`,
    `weight types   ${Object.entries(info.weightTypes).map(([t, n]) => `${t} x${n}`).join(', ')}`,
    `shape          dim ${c.dim}, ${c.nLayers} layers, ${c.nHeads} heads (${c.nKvHeads} kv), head_dim ${c.headDim}, mlp ${c.hiddenDim}, vocab ${c.vocabSize}`,
    `context        ${info.contextLength} tokens${c.slidingWindow ? `, sliding window ${c.slidingWindow}` : ''}`,
    `rope           ${rope.type}, theta ${rope.theta}, rotary dims ${rope.rotary_dim}, ${rope.pairing} pairing`,
    `tokenizer      ${info.tokenizer.vocabSize} tokens, bos ${info.tokenizer.bosId ?? '-'}, eos ${info.tokenizer.eosIds.join(', ') || '-'}`,
    `chat template  ${info.chatTemplate ? 'yes' : 'no'}`,
    `policy         ${info.policy}`,
  ];
  if (model instanceof LlavaModel) {
    const v = model.llava.vision.vision;
    const p = model.llava.vision.projector;
    lines.push(
      `vision tower   CLIP ViT: ${v.imageSize}px images, patch ${v.patchSize}, dim ${v.dim}, ${v.nLayers} layers, ${v.nHeads} heads, mlp ${v.hiddenDim} (${v.act}), feature layers ${model.llava.featureLayers.join(', ')}, strategy ${model.llava.strategy}`,
      `projector      ${p.inDim} -> ${p.hiddenDim} (${p.act}) -> ${p.outDim}; image token ${model.imageTokenId}${model.llava.next ? `; anyres grid pinpoints ${JSON.stringify(model.llava.next.gridPinpoints)}` : ''}`,
    );
  }
  process.stdout.write(`${lines.join('\n')}\n`);
}

export interface TinyFlags {
  arch: string;
  out: string;
  format: 'hf' | 'gguf';
  dtype?: string;
  quant?: string;
  seed?: number;
  vocab?: 'llama' | 'gpt2';
  stress?: string;
  set?: string[];
}

/** key=value pairs; values are JSON when they parse as JSON, strings otherwise. */
function parseSets(pairs: string[]): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const pair of pairs) {
    const eq = pair.indexOf('=');
    if (eq <= 0) fail('usage', `--set takes key=value, got '${pair}'`);
    const value = pair.slice(eq + 1);
    try {
      out[pair.slice(0, eq)] = JSON.parse(value);
    } catch {
      out[pair.slice(0, eq)] = value;
    }
  }
  return out;
}

export function tinyCommand(flags: TinyFlags): void {
  if (!['llama', 'llava', 'llava-next'].includes(flags.arch)) fail('usage', `unknown --arch '${flags.arch}' (supported: llama, llava, llava-next)`);
  if (flags.quant && !(TINY_QUANTS as readonly string[]).includes(flags.quant)) fail('usage', `unknown --quant '${flags.quant}' (supported: ${TINY_QUANTS.join(', ')})`);
  const result = writeTinyModel({
    arch: flags.arch as 'llama' | 'llava' | 'llava-next',
    format: flags.format,
    out: flags.out,
    ...(flags.dtype ? { dtype: parseDType(flags.dtype) } : {}),
    ...(flags.quant ? { quant: flags.quant as TinyQuant } : {}),
    ...(flags.seed !== undefined ? { seed: flags.seed } : {}),
    ...(flags.vocab ? { vocab: flags.vocab } : {}),
    ...(flags.stress ? { stress: flags.stress as 'massive-activations' | 'image-overflow' } : {}),
    set: parseSets(flags.set ?? []),
  });
  const c = result.config;
  process.stderr.write(`wrote ${result.path}: llama, dim ${c.dim}, ${c.nLayers} layers, ${c.nHeads}/${c.nKvHeads} heads, vocab ${c.vocabSize}\n`);
}
