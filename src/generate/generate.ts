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
  /** restricts which tokens may come next (e.g. JSON mode: jsonObjectConstraint); EOS only when it says complete */
  constraint?: TokenConstraint;
}

/** Restricts sampling to tokens that keep the output a prefix of a valid document (see json-constraint.ts). */
export interface TokenConstraint {
  /** sets to -Infinity (in place) the logits of every token that may not come next; EOS ids are allowed exactly when the document is complete */
  mask(logits: Float32Array): void;
  /** advances past the sampled token */
  accept(id: number): void;
  /** whether the output so far is a complete document */
  readonly complete: boolean;
  /**
   * tokens that may still be generated, the one about to be sampled included; called before each
   * mask() so that the constraint can steer to a complete document within the budget
   */
  budget?(tokensLeft: number): void;
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

/**
 * One sequence's generation as a state machine, apart from any forward pass: give it the logits of
 * the latest position (`next`), it samples, detokenizes and checks the stops, and says whether it
 * wants another token. generateTokens drives one with a session; a server drives many with one
 * batched forward per step.
 */
export class Generation {
  readonly promptIds: readonly number[];
  readonly sampler: Sampler;
  readonly maxTokens: number;
  /** generated token ids so far (the EOS token excluded) */
  readonly tokens: number[] = [];
  /** per step: the top K of that step, when asked for */
  readonly steps: TokenLogprob[][] = [];
  /** the text so far (what the events carried, plus the tail that finish() flushed) */
  text = '';
  private readonly tokenizer: Tokenizer;
  private readonly k: number;
  private readonly endIds: Set<number>;
  private readonly detok: StreamingDetokenizer;
  private readonly stops: StopMatcher;
  private readonly history: number[];
  private readonly constraint: TokenConstraint | undefined;
  /** the constrained copy of the logits */
  private masked = new Float32Array(0);
  private reason: FinishReason | undefined;

  constructor(tokenizer: Tokenizer, promptIds: readonly number[], opts: GenerateOptions = {}) {
    const maxTokens = opts.maxTokens ?? 128;
    if (!Number.isInteger(maxTokens) || maxTokens < 0) fail('usage', `max tokens must be an integer >= 0, got ${maxTokens}`);
    if (promptIds.length === 0) fail('usage', 'the prompt is empty: give at least one token');
    const k = opts.logprobs ?? 0;
    if (!Number.isInteger(k) || k < 0) fail('usage', `logprobs must be an integer >= 0, got ${k}`);
    this.tokenizer = tokenizer;
    this.promptIds = promptIds;
    this.maxTokens = maxTokens;
    this.k = k;
    this.sampler = new Sampler(opts);
    this.endIds = new Set([...tokenizer.eosIds, ...(opts.stopTokenIds ?? [])]);
    // The prompt is context, so the first token keeps a leading space its piece carries.
    this.detok = new StreamingDetokenizer((ids) => tokenizer.decode(ids, { skipSpecial: true }), promptIds);
    this.stops = new StopMatcher(opts.stop ?? []);
    this.history = [...promptIds];
    this.constraint = opts.constraint;
    if (maxTokens === 0) this.finish('length');
  }

  /** Why generation ended, or undefined while it goes on. */
  get finishReason(): FinishReason | undefined {
    return this.reason;
  }

  get done(): boolean {
    return this.reason !== undefined;
  }

  /**
   * Samples the next token from the logits of the latest position (raw, or masked with -Infinity
   * for tokens that must not come). Returns the event to stream; when generation ends here without
   * a token to show (EOS) it returns undefined. After it, `done` tells whether the caller should run
   * the returned token through the model and call next() again.
   */
  next(logits: Float32Array): GeneratedToken | undefined {
    if (this.reason !== undefined) fail('usage', `generation already finished (${this.reason})`);
    // A constraint masks a copy: logprobs stay the model's own.
    let allowed = logits;
    if (this.constraint) {
      if (this.masked.length !== logits.length) this.masked = new Float32Array(logits.length);
      this.masked.set(logits);
      this.constraint.budget?.(this.maxTokens - this.tokens.length);
      this.constraint.mask(this.masked);
      allowed = this.masked;
    }
    const id = this.sampler.sample(allowed, this.history);
    const out: GeneratedToken = { id, text: '' };
    if (this.k > 0) {
      out.logprob = logprobOf(logits, id);
      out.topLogprobs = topLogprobs(logits, this.k).map((t) => ({ ...t, token: this.tokenizer.tokenText(t.id) }));
      this.steps.push(out.topLogprobs);
    }
    if (this.endIds.has(id)) {
      this.finish('eos');
      return undefined;
    }
    this.constraint?.accept(id);
    this.history.push(id);
    this.tokens.push(id);
    const { emit, stopped } = this.stops.push(this.detok.push(id));
    out.text = emit;
    this.text += emit;
    if (stopped) this.finish('stop');
    else if (this.tokens.length >= this.maxTokens) this.finish('length');
    return out;
  }

  /**
   * Ends generation (if it has not ended) and returns the text still held back: an incomplete
   * character or a partial stop string that never completed. It is part of `text`.
   */
  finish(reason: FinishReason): string {
    if (this.reason !== undefined) return '';
    this.reason = reason;
    if (reason === 'stop') return '';
    const rest = this.stops.push(this.detok.flush());
    const tail = rest.emit + (rest.stopped ? '' : this.stops.flush());
    if (rest.stopped) this.reason = 'stop';
    this.text += tail;
    return tail;
  }

  /** The final result (call after `done`). */
  result(prefillSeconds: number, decodeSeconds: number): GenerateResult {
    return {
      tokens: this.tokens,
      text: this.text,
      ...(this.k > 0 ? { logprobs: this.steps } : {}),
      finishReason: this.reason ?? 'length',
      promptTokens: this.promptIds.length,
      timings: {
        prefillSeconds,
        decodeSeconds,
        prefillTokensPerSecond: this.promptIds.length / Math.max(prefillSeconds, 1e-9),
        decodeTokensPerSecond: Math.max(this.tokens.length - 1, 0) / Math.max(decodeSeconds, 1e-9),
      },
    };
  }
}

/** Whether every logit is finite. */
export function allFinite(logits: Float32Array): boolean {
  for (let i = 0; i < logits.length; i++) if (!Number.isFinite(logits[i]!)) return false;
  return true;
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
  const gen = new Generation(tokenizer, promptIds, opts);
  const history = [...promptIds];
  /** Checks a step's logits; returns usable ones (or throws), switching sessions on upcast. */
  const checked = (logits: Float32Array, ids: readonly number[]): Float32Array => {
    if (allFinite(logits)) return logits;
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

  const t0 = performance.now();
  // With nothing to generate, nothing reads the prompt's logits.
  let logits = gen.done ? undefined : checked(session.forward(promptIds), promptIds);
  const t1 = performance.now();
  while (!gen.done) {
    if (opts.signal?.aborted) {
      gen.finish('cancelled');
      break;
    }
    const out = gen.next(logits!);
    if (!out) break;
    history.push(out.id);
    yield out;
    // The last token needs no forward pass: nothing would read its logits.
    if (!gen.done) logits = checked(session.forward([out.id]), history);
    // Let other work (a server's sockets, a CLI's output) run between tokens.
    await new Promise<void>((resolve) => setImmediate(resolve));
  }
  const t2 = performance.now();
  return gen.result((t1 - t0) / 1000, (t2 - t1) / 1000);
}
