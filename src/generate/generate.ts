/**
 * The decode loop: prefill the prompt, then sample one token at a time until EOS, a stop string or
 * the token budget. Text is streamed through a UTF-8-safe detokenizer and a stop-string matcher, so
 * what a caller sees is never a broken character nor the start of a stop string.
 */
import { performance } from 'node:perf_hooks';
import { fail } from '../core/errors.js';
import type { LlamaSession } from '../models/llama/model.js';
import { StreamingDetokenizer } from '../text/detokenizer.js';
import { StopMatcher } from '../text/stop.js';
import type { Tokenizer } from '../text/tokenizer.js';
import { logprobOf, Sampler, type SamplingOptions, topLogprobs } from './sampler.js';

export interface GenerateOptions extends SamplingOptions {
  /** tokens to generate at most; default 128 */
  maxTokens?: number;
  /** generation ends before any of these strings (not included in the text) */
  stop?: string[];
  /** extra token ids that end generation, besides the tokenizer's EOS ids */
  stopTokenIds?: number[];
  /** report the top K log-probabilities per step (0 = none) */
  logprobs?: number;
  /** cancels generation between tokens */
  signal?: AbortSignal;
  /**
   * what to do when a step's logits are not finite: 'error' (default) stops with a message naming the
   * first op that went non-finite; 'warn' reports it and samples among the finite logits; 'upcast'
   * redoes the step, and the rest of the generation, with the f32 policy and says so
   */
  onNonFinite?: NonFiniteAction;
}

export type NonFiniteAction = 'error' | 'warn' | 'upcast';

/** What the decode loop needs from its model to handle non-finite logits. */
export interface NumericsGuard {
  /** names the first op that went non-finite when running `ids` from scratch */
  diagnose(ids: readonly number[]): string;
  /** a session of the same model under the f32 policy that has consumed `ids`, and its last logits */
  upcast(ids: readonly number[]): { session: LlamaSession; logits: Float32Array };
  /** where warnings go (default: stderr) */
  warn?(message: string): void;
}

export interface TokenLogprob {
  id: number;
  token: string;
  logprob: number;
}

export interface GeneratedToken {
  id: number;
  /** text completed by this token (may be empty while a character or stop string is pending) */
  text: string;
  /** the chosen token's log-probability and the top K alternatives, when asked for */
  logprob?: number;
  topLogprobs?: TokenLogprob[];
}

export type FinishReason = 'eos' | 'stop' | 'length' | 'cancelled';

export interface GenerateResult {
  /** generated token ids (the EOS token excluded) */
  tokens: number[];
  text: string;
  /** per step: the top K of that step, when asked for */
  logprobs?: TokenLogprob[][];
  finishReason: FinishReason;
  promptTokens: number;
  timings: { prefillSeconds: number; decodeSeconds: number; prefillTokensPerSecond: number; decodeTokensPerSecond: number };
}

/** Streams tokens for `promptIds` from a fresh or continuing session; returns the final result. */
export async function* generateTokens(
  session: LlamaSession,
  tokenizer: Tokenizer,
  promptIds: readonly number[],
  opts: GenerateOptions = {},
  guard?: NumericsGuard,
): AsyncGenerator<GeneratedToken, GenerateResult> {
  const action = opts.onNonFinite ?? 'error';
  if (!['error', 'warn', 'upcast'].includes(action)) fail('usage', `onNonFinite must be error, warn or upcast, got '${String(action)}'`);
  const warn = guard?.warn ?? ((m: string) => process.stderr.write(`halfpipe: warning: ${m}\n`));
  /** Checks a step's logits; returns usable ones (or throws), switching sessions on upcast. */
  const checked = (logits: Float32Array, ids: readonly number[]): Float32Array => {
    let finite = true;
    for (let i = 0; i < logits.length; i++) {
      if (!Number.isFinite(logits[i]!)) {
        finite = false;
        break;
      }
    }
    if (finite) return logits;
    const where = guard ? guard.diagnose(ids) : 'non-finite logits';
    if (action === 'error' || !guard) fail('numerics', `${where} (try --policy safe-f16 or f32, or --on-nonfinite upcast)`);
    if (action === 'upcast') {
      warn(`${where}; redoing the step and the rest of the generation with the f32 policy`);
      const redo = guard.upcast(ids);
      session = redo.session;
      return redo.logits;
    }
    warn(`${where}; sampling among the finite logits`);
    const masked = Float32Array.from(logits, (v) => (Number.isFinite(v) ? v : -Infinity));
    if (!masked.some((v) => v > -Infinity)) fail('numerics', `${where}: no finite logit left`);
    return masked;
  };
  const maxTokens = opts.maxTokens ?? 128;
  if (!Number.isInteger(maxTokens) || maxTokens < 0) fail('usage', `max tokens must be an integer >= 0, got ${maxTokens}`);
  if (promptIds.length === 0) fail('usage', 'the prompt is empty: give at least one token');
  const k = opts.logprobs ?? 0;
  if (!Number.isInteger(k) || k < 0) fail('usage', `logprobs must be an integer >= 0, got ${k}`);
  const sampler = new Sampler(opts);
  const endIds = new Set([...tokenizer.eosIds, ...(opts.stopTokenIds ?? [])]);
  // The prompt is context, so the first token keeps a leading space its piece carries.
  const detok = new StreamingDetokenizer((ids) => tokenizer.decode(ids, { skipSpecial: true }), promptIds);
  const stops = new StopMatcher(opts.stop ?? []);
  const history = [...promptIds];
  const generated: number[] = [];
  const steps: TokenLogprob[][] = [];
  let text = '';
  let finishReason: FinishReason = 'length';

  const t0 = performance.now();
  let logits = checked(session.forward(promptIds), promptIds);
  const t1 = performance.now();

  for (let step = 0; step < maxTokens; step++) {
    if (opts.signal?.aborted) {
      finishReason = 'cancelled';
      break;
    }
    const id = sampler.sample(logits, history);
    const out: GeneratedToken = { id, text: '' };
    if (k > 0) {
      out.logprob = logprobOf(logits, id);
      out.topLogprobs = topLogprobs(logits, k).map((t) => ({ ...t, token: tokenizer.tokenText(t.id) }));
      steps.push(out.topLogprobs);
    }
    if (endIds.has(id)) {
      finishReason = 'eos';
      break;
    }
    history.push(id);
    generated.push(id);
    const { emit, stopped } = stops.push(detok.push(id));
    out.text = emit;
    text += emit;
    yield out;
    if (stopped) {
      finishReason = 'stop';
      break;
    }
    // The last token needs no forward pass: nothing would read its logits.
    if (step + 1 < maxTokens) logits = checked(session.forward([id]), history);
    // Let other work (a server's sockets, a CLI's output) run between tokens.
    await new Promise<void>((resolve) => setImmediate(resolve));
  }
  if (finishReason !== 'stop') {
    const rest = stops.push(detok.flush());
    text += rest.emit + (rest.stopped ? '' : stops.flush());
    if (rest.stopped) finishReason = 'stop';
  }
  const t2 = performance.now();
  const prefillSeconds = (t1 - t0) / 1000;
  const decodeSeconds = (t2 - t1) / 1000;
  return {
    tokens: generated,
    text,
    ...(k > 0 ? { logprobs: steps } : {}),
    finishReason,
    promptTokens: promptIds.length,
    timings: {
      prefillSeconds,
      decodeSeconds,
      prefillTokensPerSecond: promptIds.length / Math.max(prefillSeconds, 1e-9),
      decodeTokensPerSecond: Math.max(generated.length - 1, 0) / Math.max(decodeSeconds, 1e-9),
    },
  };
}
