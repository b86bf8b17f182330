/**
 * Token sampling from raw logits, following llama.cpp's default sampler chain (common/sampling.cpp) with the
 * samplers halfpipe supports:
 *
 *   penalties → top-k → top-p → min-p → temperature → draw
 *
 * - penalties (llama.cpp `llama_sampler_penalties`): over the last `repeatLastN` tokens of the history, every
 *   distinct token seen `count` times gets `logit > 0 ? logit / repeatPenalty : logit * repeatPenalty` (once, not
 *   per occurrence), then `logit -= count * frequencyPenalty + (count > 0 ? presencePenalty : 0)`. Frequency and
 *   presence use OpenAI's formulas but, as in llama.cpp, count only within that window. The arithmetic is done in
 *   float64 and rounded once to float32.
 * - top-k keeps the k highest logits (ties → lower id first); 0 = off.
 * - top-p keeps the smallest prefix of the candidates, sorted by logit, whose softmax mass (at temperature 1, over
 *   the candidates left by top-k) reaches p; 1 = off.
 * - min-p keeps the candidates whose probability is at least minP × the top probability, i.e.
 *   `logit >= maxLogit + ln(minP)`; 0 = off.
 * - temperature divides the surviving logits; 0 = greedy: the argmax of the penalized logits, ties → lowest id
 *   (the filters above always keep the argmax, so they do not matter then).
 *
 * Defaults are llama.cpp's CLI defaults (`common_params_sampling`): temperature 0.8, topK 40, topP 0.95,
 * minP 0.05, repeatPenalty 1 (off), repeatLastN 64, frequency and presence penalties 0. Without a seed, one is drawn
 * from the system CSPRNG and exposed as `Sampler.seed`.
 *
 * Logits: NaN or +Infinity throws HalfpipeError('dtype', 'non-finite logits: ...'); -Infinity is a masked token,
 * never sampled. The input logits are never modified.
 *
 * Cost for a vocabulary of V tokens: O(V) for the scan, plus O(V log k) for top-k (a bounded heap, no full sort).
 * Without top-k, top-p sorts only the tokens whose probability is at least (1 - p) / V (together they always hold
 * mass > p; the rest can never be in the nucleus), and no more than min-p would keep.
 */
import { fail, HalfpipeError } from '../core/errors.js';
import { Rng } from './rng.js';

export interface SamplingOptions {
  /** softmax temperature; 0 = greedy (argmax, ties → lowest id); default 0.8 */
  temperature?: number;
  /** keep the k most likely tokens; 0 = off; default 40 */
  topK?: number;
  /** nucleus sampling mass in (0, 1]; 1 = off; default 0.95 */
  topP?: number;
  /** drop tokens below minP × the top probability, in [0, 1]; 0 = off; default 0.05 */
  minP?: number;
  /** llama.cpp repetition penalty (> 0): logit > 0 ? logit / p : logit * p for tokens in the last repeatLastN; 1 = off; default 1 */
  repeatPenalty?: number;
  /** how many of the last history tokens the penalties look at; 0 = penalties off, -1 = the whole history; default 64 */
  repeatLastN?: number;
  /** OpenAI frequency penalty: logit -= count * f (count within the last repeatLastN tokens); default 0 */
  frequencyPenalty?: number;
  /** OpenAI presence penalty: logit -= (count > 0) * p (within the last repeatLastN tokens); default 0 */
  presencePenalty?: number;
  /** integer in [0, 2^53) seeding the PRNG; omitted = random (see Sampler.seed) */
  seed?: number;
}

export type ResolvedSamplingOptions = Required<Omit<SamplingOptions, 'seed'>>;

/** llama.cpp's CLI defaults. */
export const DEFAULT_SAMPLING: Readonly<ResolvedSamplingOptions> = Object.freeze({
  temperature: 0.8,
  topK: 40,
  topP: 0.95,
  minP: 0.05,
  repeatPenalty: 1,
  repeatLastN: 64,
  frequencyPenalty: 0,
  presencePenalty: 0,
});

/** Fills in defaults and validates; throws HalfpipeError('usage') with a one-line message on a bad value. */
export function resolveSamplingOptions(opts: SamplingOptions = {}): ResolvedSamplingOptions {
  const r: ResolvedSamplingOptions = {
    temperature: opts.temperature ?? DEFAULT_SAMPLING.temperature,
    topK: opts.topK ?? DEFAULT_SAMPLING.topK,
    topP: opts.topP ?? DEFAULT_SAMPLING.topP,
    minP: opts.minP ?? DEFAULT_SAMPLING.minP,
    repeatPenalty: opts.repeatPenalty ?? DEFAULT_SAMPLING.repeatPenalty,
    repeatLastN: opts.repeatLastN ?? DEFAULT_SAMPLING.repeatLastN,
    frequencyPenalty: opts.frequencyPenalty ?? DEFAULT_SAMPLING.frequencyPenalty,
    presencePenalty: opts.presencePenalty ?? DEFAULT_SAMPLING.presencePenalty,
  };
  const num = (v: unknown): v is number => typeof v === 'number' && Number.isFinite(v);
  if (!num(r.temperature) || r.temperature < 0) fail('usage', `temperature must be a finite number >= 0, got ${r.temperature}`);
  if (!Number.isSafeInteger(r.topK) || r.topK < 0) fail('usage', `topK must be an integer >= 0 (0 = off), got ${r.topK}`);
  if (!num(r.topP) || r.topP <= 0 || r.topP > 1) fail('usage', `topP must be in (0, 1] (1 = off), got ${r.topP}`);
  if (!num(r.minP) || r.minP < 0 || r.minP > 1) fail('usage', `minP must be in [0, 1] (0 = off), got ${r.minP}`);
  if (!num(r.repeatPenalty) || r.repeatPenalty <= 0) fail('usage', `repeatPenalty must be a finite number > 0 (1 = off), got ${r.repeatPenalty}`);
  if (!Number.isSafeInteger(r.repeatLastN) || r.repeatLastN < -1)
    fail('usage', `repeatLastN must be an integer >= -1 (0 = off, -1 = whole history), got ${r.repeatLastN}`);
  if (!num(r.frequencyPenalty)) fail('usage', `frequencyPenalty must be a finite number, got ${r.frequencyPenalty}`);
  if (!num(r.presencePenalty)) fail('usage', `presencePenalty must be a finite number, got ${r.presencePenalty}`);
  if (opts.seed !== undefined && (!Number.isSafeInteger(opts.seed) || opts.seed < 0))
    fail('usage', `seed must be an integer in [0, 2^53), got ${opts.seed}`);
  return r;
}

const F32_MAX = 3.4028234663852886e38;

/**
 * Scans the logits once: throws on NaN / +Infinity (or an empty array) and returns the max and how many are
 * finite. -Infinity (a masked token) is allowed.
 */
function scanLogits(logits: Float32Array): { max: number; finite: number } {
  if (logits.length === 0) fail('usage', 'the logits are empty');
  let max = -Infinity;
  let finite = 0;
  for (let i = 0; i < logits.length; i++) {
    const x = logits[i]!;
    if (x > max) {
      if (x === Infinity) throw new HalfpipeError('dtype', `non-finite logits: +Infinity at token ${i}`);
      max = x;
    } else if (x !== x) {
      throw new HalfpipeError('dtype', `non-finite logits: NaN at token ${i}`);
    }
    if (x !== -Infinity) finite++;
  }
  return { max, finite };
}

/** How often each token occurs in the penalty window (the last `lastN` of history; -1 = all). */
function windowCounts(history: readonly number[], lastN: number, vocab: number): Map<number, number> {
  const counts = new Map<number, number>();
  const start = lastN < 0 ? 0 : Math.max(0, history.length - lastN);
  for (let i = start; i < history.length; i++) {
    const id = history[i]!;
    if (!Number.isInteger(id) || id < 0 || id >= vocab)
      fail('usage', `history token ${id} at position ${i} is outside the vocabulary [0, ${vocab})`);
    counts.set(id, (counts.get(id) ?? 0) + 1);
  }
  return counts;
}

function penaltiesActive(o: Pick<ResolvedSamplingOptions, 'repeatPenalty' | 'repeatLastN' | 'frequencyPenalty' | 'presencePenalty'>): boolean {
  return o.repeatLastN !== 0 && (o.repeatPenalty !== 1 || o.frequencyPenalty !== 0 || o.presencePenalty !== 0);
}

/** Applies the penalties to `out` (already a copy of the logits) in place. */
function penalize(out: Float32Array, history: readonly number[], o: ResolvedSamplingOptions): void {
  if (!penaltiesActive(o)) return;
  for (const [id, count] of windowCounts(history, o.repeatLastN, out.length)) {
    let v = out[id]!;
    if (o.repeatPenalty !== 1) v = v > 0 ? v / o.repeatPenalty : v * o.repeatPenalty;
    v -= count * o.frequencyPenalty + (count > 0 ? o.presencePenalty : 0);
    // A huge repeatPenalty < 1 could push a logit past float32; keep it finite so the softmax stays defined.
    out[id] = v > F32_MAX ? F32_MAX : v;
  }
}

/**
 * The logits after the penalties (a new array; `logits` is not modified). Exported for tests and diagnostics;
 * `opts` takes the same fields and defaults as the Sampler.
 */
export function applyPenalties(logits: Float32Array, history: readonly number[], opts: SamplingOptions = {}): Float32Array {
  const out = Float32Array.from(logits);
  penalize(out, history, resolveSamplingOptions(opts));
  return out;
}

/** Ordering of candidates: higher logit first, ties → lower id first. Handles -Infinity. */
function better(l: Float32Array, a: number, b: number): boolean {
  const la = l[a]!;
  const lb = l[b]!;
  return la > lb || (la === lb && a < b);
}

function compareDesc(l: Float32Array): (a: number, b: number) => number {
  return (a, b) => {
    const la = l[a]!;
    const lb = l[b]!;
    return la > lb ? -1 : la < lb ? 1 : a - b;
  };
}

/**
 * The k best token ids (higher logit, then lower id), sorted best first, by a size-k min-heap: O(V log k).
 * Masked tokens (-Infinity) are skipped unless `includeMasked`.
 */
function topKIds(l: Float32Array, k: number, includeMasked: boolean): number[] {
  const heap = new Int32Array(Math.min(k, l.length));
  let n = 0;
  const siftDown = (i: number): void => {
    for (;;) {
      const a = 2 * i + 1;
      if (a >= n) return;
      const b = a + 1;
      // the worse child goes up: the root is the worst of the kept
      const c = b < n && better(l, heap[a]!, heap[b]!) ? b : a;
      if (!better(l, heap[i]!, heap[c]!)) return;
      const t = heap[i]!;
      heap[i] = heap[c]!;
      heap[c] = t;
      i = c;
    }
  };
  for (let id = 0; id < l.length; id++) {
    if (!includeMasked && l[id] === -Infinity) continue;
    if (n < heap.length) {
      // sift up
      let i = n++;
      heap[i] = id;
      while (i > 0) {
        const p = (i - 1) >> 1;
        if (!better(l, heap[p]!, heap[i]!)) break;
        const t = heap[p]!;
        heap[p] = heap[i]!;
        heap[i] = t;
        i = p;
      }
    } else if (n > 0 && better(l, id, heap[0]!)) {
      heap[0] = id;
      siftDown(0);
    }
  }
  return Array.from(heap.subarray(0, n)).sort(compareDesc(l));
}

/** The nucleus of `ids` (sorted best first): the shortest prefix whose mass reaches p (all of them if none does). */
function nucleus(l: Float32Array, ids: number[], max: number, z: number, p: number): number[] {
  let cum = 0;
  for (let i = 0; i < ids.length; i++) {
    cum += Math.exp(l[ids[i]!]! - max) / z;
    if (cum >= p) return ids.slice(0, i + 1);
  }
  return ids;
}

/**
 * The candidates left after top-k, top-p and min-p over the (penalized) logits `l`, whose max is `max` and which
 * have `finite` unmasked tokens. The argmax (lowest id among ties) is always kept.
 */
function filterCandidates(l: Float32Array, max: number, finite: number, o: ResolvedSamplingOptions): number[] {
  let ids: number[];
  const minPCut = o.minP > 0 ? max + Math.log(o.minP) : -Infinity;
  if (o.topK > 0 && o.topK < finite) {
    ids = topKIds(l, o.topK, false);
    if (o.topP < 1) {
      // as llama.cpp: top-p's softmax is over what top-k left
      let z = 0;
      for (const id of ids) z += Math.exp(l[id]! - max);
      ids = nucleus(l, ids, max, z, o.topP);
    }
  } else if (o.topP < 1) {
    let z = 0;
    for (let i = 0; i < l.length; i++) z += Math.exp(l[i]! - max);
    // Tokens with probability < (1 - p) / V hold mass < 1 - p together, so the nucleus lies among the others;
    // min-p's cut is also a prefix of the same order, so whatever it drops would be dropped afterwards anyway.
    const cut = Math.max(max + Math.log(((1 - o.topP) / l.length) * z), minPCut);
    ids = [];
    for (let i = 0; i < l.length; i++) if (l[i]! >= cut) ids.push(i);
    ids.sort(compareDesc(l));
    ids = nucleus(l, ids, max, z, o.topP);
  } else {
    ids = [];
    for (let i = 0; i < l.length; i++) if (l[i]! >= minPCut && l[i] !== -Infinity) ids.push(i);
    return ids; // in id order: no filter above needs an order
  }
  return o.minP > 0 ? ids.filter((id) => l[id]! >= minPCut) : ids;
}

function argmax(l: Float32Array): number {
  let best = 0;
  for (let i = 1; i < l.length; i++) if (l[i]! > l[best]!) best = i;
  return best;
}

export class Sampler {
  readonly options: Readonly<ResolvedSamplingOptions>;
  /** the PRNG seed in use (given, or drawn from crypto): pass it back as `seed` to reproduce a run */
  readonly seed: number;
  private readonly rng: Rng;
  private work = new Float32Array(0);

  constructor(opts: SamplingOptions = {}) {
    this.options = Object.freeze(resolveSamplingOptions(opts));
    this.rng = new Rng(opts.seed);
    this.seed = this.rng.seed;
  }

  /** Picks the next token from raw logits (not modified) given the previous tokens (prompt + generated). */
  sample(logits: Float32Array, history: readonly number[]): number {
    const { l, max, finite } = this.prepare(logits, history);
    const o = this.options;
    if (o.temperature === 0) return argmax(l);
    const ids = filterCandidates(l, max, finite, o);
    const w = new Float64Array(ids.length);
    let total = 0;
    for (let i = 0; i < ids.length; i++) total += w[i] = Math.exp((l[ids[i]!]! - max) / o.temperature);
    const u = this.rng.nextFloat() * total;
    let cum = 0;
    for (let i = 0; i < ids.length; i++) {
      cum += w[i]!;
      if (u < cum) return ids[i]!;
    }
    // only reachable through rounding at the very top: return the last token with any weight
    for (let i = ids.length - 1; i > 0; i--) if (w[i]! > 0) return ids[i]!;
    return ids[0]!;
  }

  /**
   * The distribution `sample` draws from for these logits and history, as [{id, p}] (p summing to 1) over the
   * candidates that survive the filters; greedy gives one token with p = 1. Draws nothing from the PRNG.
   */
  distribution(logits: Float32Array, history: readonly number[]): Array<{ id: number; p: number }> {
    const { l, max, finite } = this.prepare(logits, history);
    const o = this.options;
    if (o.temperature === 0) return [{ id: argmax(l), p: 1 }];
    const ids = filterCandidates(l, max, finite, o);
    const w = ids.map((id) => Math.exp((l[id]! - max) / o.temperature));
    const total = w.reduce((a, b) => a + b, 0);
    return ids.map((id, i) => ({ id, p: w[i]! / total }));
  }

  /** Checks the logits, copies them into the scratch buffer and applies the penalties there. */
  private prepare(logits: Float32Array, history: readonly number[]): { l: Float32Array; max: number; finite: number } {
    scanLogits(logits);
    if (this.work.length !== logits.length) this.work = new Float32Array(logits.length);
    const l = this.work;
    l.set(logits);
    penalize(l, history, this.options);
    // Penalties move logits, so the max and the masked count are taken after them.
    let max = -Infinity;
    let finite = 0;
    for (let i = 0; i < l.length; i++) {
      const x = l[i]!;
      if (x > max) max = x;
      if (x !== -Infinity) finite++;
    }
    if (finite === 0) fail('usage', 'cannot sample: every logit is -Infinity (all tokens masked)');
    return { l, max, finite };
  }
}

/** log Σ exp(logits) in float64, max-subtracted; throws on NaN/+Infinity or when every token is masked. */
function logSumExp(logits: Float32Array): number {
  const { max } = scanLogits(logits);
  if (max === -Infinity) fail('usage', 'cannot normalize: every logit is -Infinity (all tokens masked)');
  let s = 0;
  for (let i = 0; i < logits.length; i++) s += Math.exp(logits[i]! - max);
  return max + Math.log(s);
}

/**
 * log-softmax of the raw logits (float64 accumulation, max-subtracted); the top k as [{id, logprob}], sorted by
 * logprob descending, ties → lower id first. k larger than the vocabulary returns every token.
 */
export function topLogprobs(logits: Float32Array, k: number): Array<{ id: number; logprob: number }> {
  if (!Number.isSafeInteger(k) || k < 0) fail('usage', `the number of top logprobs must be an integer >= 0, got ${k}`);
  const lse = logSumExp(logits);
  if (k === 0) return [];
  return topKIds(logits, k, true).map((id) => ({ id, logprob: logits[id]! - lse }));
}

/** The log-probability of token `id` under the softmax of the raw logits (float64, max-subtracted). */
export function logprobOf(logits: Float32Array, id: number): number {
  if (!Number.isInteger(id) || id < 0 || id >= logits.length)
    fail('usage', `token ${id} is outside the vocabulary [0, ${logits.length})`);
  return logits[id]! - logSumExp(logits);
}
