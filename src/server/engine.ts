/**
 * The serving engine: a queue of generation requests and a step loop that runs them together.
 *
 * Each request is one sequence with its own session (KV cache), sampler and stops (a Generation).
 * Every tick of the loop:
 *   1. finishes sequences whose client went away (their KV cache is freed at once);
 *   2. admits queued requests up to `maxConcurrency`;
 *   3. gathers the next token of every decoding sequence and, oldest request first, chunks of the
 *      prompts still being read, up to `prefillChunk` prompt tokens in all;
 *   4. runs them: with batching, as ONE pass (forwardBatch: each matrix is read once for all of
 *      them, each sequence attends to its own cache at its own positions through the fused RoPE's
 *      per-token positions); without, one forward per sequence.
 * Every kernel is batch-invariant, so a request's logits, and with the same seed its tokens, do
 * not depend on what else is running. Forwards are synchronous: the loop yields to the event loop
 * (sockets, new requests, disconnects) between ticks.
 *
 * Numerics: a step whose logits are not finite ends that request alone with a 'numerics' error
 * naming the first op that went non-finite (when a guard can diagnose it); the others go on.
 */
import { performance } from 'node:perf_hooks';
import { fail, HalfpipeError } from '../core/errors.js';
import { allFinite, type GeneratedToken, type GenerateOptions, type GenerateResult, Generation, type NumericsGuard } from '../generate/generate.js';
import { forwardBatch, type LlamaSession } from '../models/llama/model.js';
import type { TextModel } from '../models/load.js';

export interface EngineOptions {
  /** sequences running at once (default 8); more wait in the queue */
  maxConcurrency?: number;
  /** requests waiting at most (default 64); beyond it submit() fails with a QueueFullError */
  maxQueue?: number;
  /** one decode pass for all running sequences (default true); false: one forward per sequence */
  batching?: boolean;
}

export interface EngineRequest {
  /** the prompt's token ids (image placeholders already expanded, for LLaVA) */
  promptIds: readonly number[];
  /** a fresh session for this request (default: model.model.newSession()); LLaVA passes one with its images placed */
  session?: () => LlamaSession;
  /** sampling, budget, stops, logprobs, seed, and an optional constraint on the tokens */
  options: Omit<GenerateOptions, 'signal' | 'onNonFinite'>;
  /** explains non-finite logits (default: the text model's guard, which re-runs the ids with the monitor) */
  guard?: Pick<NumericsGuard, 'diagnose'>;
  /** aborting it (a client disconnect) ends the sequence with finish reason 'cancelled' and frees its cache */
  signal?: AbortSignal;
  /** called with each generated token as soon as it is sampled (text may be '' while held back) */
  onToken?: (token: GeneratedToken) => void;
}

export interface EngineResult extends GenerateResult {
  /** the text finish() flushed at the end (already in `text`; a streaming client has not seen it yet) */
  tail: string;
  /** seconds spent waiting in the queue */
  queueSeconds: number;
}

/** submit() refused: the queue is full (HTTP 429). */
export class QueueFullError extends HalfpipeError {
  constructor(limit: number) {
    super('usage', `the server is busy: ${limit} requests are already waiting`);
  }
}

/** submit() refused: the prompt does not fit the model's context (HTTP 400 context_length_exceeded). */
export class ContextLengthError extends HalfpipeError {
  constructor(promptTokens: number, context: number) {
    super('usage', `the prompt has ${promptTokens} tokens but the context holds ${context}`);
  }
}

/** submit() refused: the engine is shutting down (HTTP 503). */
export class ShuttingDownError extends HalfpipeError {
  constructor() {
    super('usage', 'the server is shutting down');
  }
}

interface Sequence {
  request: EngineRequest;
  gen: Generation;
  resolve: (r: EngineResult) => void;
  reject: (e: unknown) => void;
  submitted: number;
  session?: LlamaSession;
  /** prompt tokens already run */
  prefilled: number;
  /** the token to feed next (decode phase) */
  pending?: number;
  admitted?: number;
  firstToken?: number;
}

export class Engine {
  readonly model: TextModel;
  readonly maxConcurrency: number;
  readonly maxQueue: number;
  readonly batching: boolean;
  private readonly queue: Sequence[] = [];
  private readonly running: Sequence[] = [];
  private scheduled = false;
  private closing = false;
  private idleWaiters: Array<() => void> = [];
  /** decode passes run and the rows they held (for tests and the bench) */
  readonly stats = { decodePasses: 0, decodeRows: 0, prefillChunks: 0 };

  constructor(model: TextModel, opts: EngineOptions = {}) {
    this.model = model;
    this.maxConcurrency = opts.maxConcurrency ?? 8;
    this.maxQueue = opts.maxQueue ?? 64;
    this.batching = opts.batching ?? true;
    if (!Number.isInteger(this.maxConcurrency) || this.maxConcurrency < 1) fail('usage', `maxConcurrency must be a positive integer, got ${this.maxConcurrency}`);
    if (!Number.isInteger(this.maxQueue) || this.maxQueue < 0) fail('usage', `maxQueue must be an integer >= 0, got ${this.maxQueue}`);
  }

  /** Requests running and waiting. */
  get load(): { running: number; queued: number } {
    return { running: this.running.length, queued: this.queue.length };
  }

  /**
   * Queues a request; resolves when it ends (EOS, stop, budget or cancellation), rejects with a
   * HalfpipeError on a bad request, non-finite logits, a full queue or shutdown. Validation errors
   * (an empty prompt, one longer than the context, bad options) are thrown before anything queues.
   */
  submit(request: EngineRequest): Promise<EngineResult> {
    if (this.closing) return Promise.reject(new ShuttingDownError());
    const context = this.model.config.contextLength;
    const maxTokens = request.options.maxTokens ?? 128;
    if (request.promptIds.length > context) throw new ContextLengthError(request.promptIds.length, context);
    // The budget is cut to what the context has room for (the finish reason is then 'length').
    const options = { ...request.options, maxTokens: Math.min(maxTokens, context - request.promptIds.length) };
    const gen = new Generation(this.model.tokenizer, request.promptIds, options);
    // Requests beyond the free slots wait; at most maxQueue of them.
    if (this.queue.length - (this.maxConcurrency - this.running.length) >= this.maxQueue) return Promise.reject(new QueueFullError(this.maxQueue));
    return new Promise<EngineResult>((resolve, reject) => {
      this.queue.push({ request, gen, resolve, reject, submitted: performance.now(), prefilled: 0 });
      this.wake();
    });
  }

  /** Stops taking requests and resolves when every queued and running one has ended. */
  drain(): Promise<void> {
    this.closing = true;
    if (this.queue.length === 0 && this.running.length === 0) return Promise.resolve();
    return new Promise((resolve) => this.idleWaiters.push(resolve));
  }

  private wake(): void {
    if (this.scheduled) return;
    this.scheduled = true;
    setImmediate(() => {
      this.scheduled = false;
      try {
        this.tick();
      } finally {
        if (this.queue.length > 0 || this.running.length > 0) this.wake();
        else {
          for (const w of this.idleWaiters.splice(0)) w();
        }
      }
    });
  }

  private tick(): void {
    // 1. Cancelled sequences end now, queued or running.
    for (const list of [this.queue, this.running]) {
      for (let i = list.length - 1; i >= 0; i--) {
        const seq = list[i]!;
        if (seq.request.signal?.aborted) {
          list.splice(i, 1);
          this.end(seq, 'cancelled');
        }
      }
    }
    // 2. Admit.
    while (this.running.length < this.maxConcurrency && this.queue.length > 0) {
      const seq = this.queue.shift()!;
      try {
        seq.session = seq.request.session ? seq.request.session() : this.model.model.newSession();
      } catch (err) {
        seq.reject(err);
        continue;
      }
      seq.admitted = performance.now();
      if (seq.gen.done) {
        this.end(seq, seq.gen.finishReason!);
        continue;
      }
      this.running.push(seq);
    }
    // 3. The pass: every decoding sequence's next token, then prompt chunks, oldest request first,
    // up to prefillChunk prompt tokens in all (so a long prompt never stalls the others' decoding).
    const entries: Array<{ seq: Sequence; tokens: number[] }> = [];
    for (const seq of this.running) if (seq.pending !== undefined) entries.push({ seq, tokens: [seq.pending] });
    const decodeRows = entries.length;
    let budget = this.model.model.prefillChunk;
    for (const seq of this.running) {
      if (seq.pending !== undefined || budget === 0) continue;
      const ids = seq.gen.promptIds;
      const m = Math.min(budget, ids.length - seq.prefilled);
      entries.push({ seq, tokens: ids.slice(seq.prefilled, seq.prefilled + m) });
      budget -= m;
    }
    if (entries.length === 0) return;
    if (decodeRows > 0) {
      this.stats.decodePasses += this.batching ? 1 : decodeRows;
      this.stats.decodeRows += decodeRows;
    }
    this.stats.prefillChunks += entries.length - decodeRows;
    // 4. Run it: one batched pass, or one forward per sequence.
    let batch: Float32Array[] | undefined;
    if (this.batching && entries.length > 1) {
      try {
        batch = forwardBatch(entries.map(({ seq, tokens }) => ({ session: seq.session!, tokens })));
      } catch {
        // A pass that fails as a whole (it should not: every entry is checked before anything
        // runs, and a cache commits its positions only at the end) is redone one sequence at a
        // time below, so that only the sequence at fault fails.
        batch = undefined;
      }
    }
    entries.forEach(({ seq, tokens }, i) => {
      const logits = batch ? batch[i]! : this.guarded(seq, () => seq.session!.forward(tokens));
      if (!logits || (batch && !this.finite(seq, logits))) return;
      if (seq.pending !== undefined) this.sample(seq, logits);
      else {
        seq.prefilled += tokens.length;
        if (seq.prefilled === seq.gen.promptIds.length) this.sample(seq, logits);
      }
    });
  }

  /** Runs a forward of one sequence; on an error or non-finite logits fails it and returns undefined. */
  private guarded(seq: Sequence, run: () => Float32Array): Float32Array | undefined {
    let logits: Float32Array;
    try {
      logits = run();
    } catch (err) {
      this.fail(seq, err);
      return undefined;
    }
    return this.finite(seq, logits) ? logits : undefined;
  }

  private finite(seq: Sequence, logits: Float32Array): boolean {
    if (allFinite(logits)) return true;
    // The sequence so far: the prompt, then (decoding) the tokens fed after it.
    const ids = seq.pending === undefined ? seq.gen.promptIds : [...seq.gen.promptIds, ...seq.gen.tokens];
    let where = 'non-finite logits';
    try {
      where = (seq.request.guard ?? this.model.numericsGuard()).diagnose(ids);
    } catch {
      // The diagnosis is a courtesy; the error below is what matters.
    }
    this.fail(seq, new HalfpipeError('numerics', `${where} (policy ${this.model.model.policy.name}; try the safe-f16 or f32 policy)`));
    return false;
  }

  /** Samples from a sequence's latest logits and streams the token; ends it when generation is done. */
  private sample(seq: Sequence, logits: Float32Array): void {
    let out: GeneratedToken | undefined;
    try {
      out = seq.gen.next(logits);
    } catch (err) {
      this.fail(seq, err);
      return;
    }
    seq.firstToken ??= performance.now();
    seq.pending = undefined;
    if (out) {
      try {
        seq.request.onToken?.(out);
      } catch (err) {
        this.fail(seq, err);
        return;
      }
    }
    if (seq.gen.done) this.end(seq, seq.gen.finishReason!);
    else seq.pending = out!.id;
  }

  private remove(seq: Sequence): void {
    const i = this.running.indexOf(seq);
    if (i >= 0) this.running.splice(i, 1);
    seq.session?.dispose();
    seq.session = undefined;
  }

  private end(seq: Sequence, reason: GenerateResult['finishReason']): void {
    this.remove(seq);
    const tail = seq.gen.finish(reason);
    const now = performance.now();
    const admitted = seq.admitted ?? now;
    const first = seq.firstToken ?? now;
    seq.resolve({ ...seq.gen.result((first - admitted) / 1000, (now - first) / 1000), tail, queueSeconds: (admitted - seq.submitted) / 1000 });
  }

  private fail(seq: Sequence, err: unknown): void {
    this.remove(seq);
    seq.reject(err);
  }
}
