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
 * from the system CSPRNG and exposed as `Sampler.seed`. Each non-greedy `sample` takes exactly one 53-bit uniform
 * from the seeded PRNG (xoshiro128**, rng.ts); greedy takes none.
 *
 * Logits: NaN or +Infinity throws HalfpipeError('dtype', 'non-finite logits: ...'); -Infinity is a masked token,
 * never sampled. The input logits are never modified.
 *
 * Cost for a vocabulary of V tokens: a few O(V) passes. Top-k and top-p need the candidates in order only up to
 * their cut, so both are a quickselect (expected O(V), a weighted one for top-p) that sorts only the last few
 * tokens at the boundary, never the vocabulary; without top-k, top-p first drops the tokens of probability below
 * (1 - p) / V (together they hold mass < 1 - p, so none can be in the nucleus) and min-p's cut where it binds.
 * Ties at a cut go to the lower id, so results never depend on the order of the work.
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

/** Scans the logits once: throws on NaN / +Infinity (or an empty array), returns the max. -Infinity (masked) is fine. */
function scanLogits(logits: Float32Array): number {
  if (logits.length === 0) fail('usage', 'the logits are empty');
  let max = -Infinity;
  for (let i = 0; i < logits.length; i++) {
    const x = logits[i]!;
    if (x > max) {
      if (x === Infinity) throw new HalfpipeError('dtype', `non-finite logits: +Infinity at token ${i}`);
      max = x;
    } else if (x !== x) {
      throw new HalfpipeError('dtype', `non-finite logits: NaN at token ${i}`);
    }
  }
  return max;
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
    v -= count * o.frequencyPenalty + o.presencePenalty; // count > 0 here
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

/** The k best token ids (higher logit, then lower id), masked ones included, sorted best first: a size-k min-heap, O(V log k). */
function topKIds(l: Float32Array, k: number): number[] {
  const heap = new Int32Array(Math.min(k, l.length));
  let n = 0;
  for (let id = 0; id < l.length; id++) {
    if (n < heap.length) {
      // sift up: the root is the worst of the kept
      let i = n++;
      heap[i] = id;
      while (i > 0) {
        const p = (i - 1) >> 1;
        if (!better(l, heap[p]!, heap[i]!)) break;
        swap(heap, p, i);
        i = p;
      }
    } else if (n > 0 && better(l, id, heap[0]!)) {
      heap[0] = id;
      // sift down: the worse child goes up
      for (let i = 0; ; ) {
        const a = 2 * i + 1;
        if (a >= n) break;
        const c = a + 1 < n && better(l, heap[a]!, heap[a + 1]!) ? a + 1 : a;
        if (!better(l, heap[i]!, heap[c]!)) break;
        swap(heap, i, c);
        i = c;
      }
    }
  }
  return Array.from(heap.subarray(0, n)).sort(compareDesc(l));
}

function swap(ids: Int32Array, i: number, j: number): void {
  const t = ids[i]!;
  ids[i] = ids[j]!;
  ids[j] = t;
}

/**
 * Partitions ids[lo, hi) (hi - lo >= 3) around a median-of-three pivot: returns a with ids[lo, a) better than the
 * pivot ids[a], and ids(a, hi) worse. The order is total (ties broken by id), so nothing equals the pivot.
 */
function partition(ids: Int32Array, lo: number, hi: number, l: Float32Array): number {
  const mid = lo + ((hi - lo) >> 1);
  const last = hi - 1;
  // median of ids[lo], ids[mid], ids[last] into ids[last]
  if (better(l, ids[mid]!, ids[lo]!)) swap(ids, mid, lo); // now lo is better than mid
  if (better(l, ids[last]!, ids[lo]!)) swap(ids, last, lo); // lo is the best of the three
  if (better(l, ids[mid]!, ids[last]!)) swap(ids, mid, last); // last is the median
  const p = ids[last]!;
  let a = lo;
  for (let i = lo; i < last; i++) if (better(l, ids[i]!, p)) swap(ids, a++, i);
  swap(ids, a, last);
  return a;
}

/**
 * Reorders ids[0, n) so that ids[0, m) is the shortest prefix, in candidate order (higher logit, then lower id),
 * that holds at least k tokens or whose weight (w by id) sums to at least `target`; returns m (n if no prefix
 * does). A quickselect, expected O(n): no sort of the whole set, only of the last few tokens at the boundary.
 * ids[0, m) comes out in no particular order.
 */
function selectPrefix(ids: Int32Array, n: number, l: Float32Array, k: number, w: Float64Array | null, target: number): number {
  let lo = 0;
  let hi = n;
  let mass = 0; // weight of ids[0, lo), all in the prefix
  while (hi - lo > 16) {
    const a = partition(ids, lo, hi, l);
    let massBetter = 0;
    if (w) for (let i = lo; i < a; i++) massBetter += w[ids[i]!]!;
    if (a >= k || mass + massBetter >= target) {
      hi = a; // the prefix ends within ids[lo, a)
      continue;
    }
    mass += massBetter + (w ? w[ids[a]!]! : 0);
    if (a + 1 >= k || mass >= target) return a + 1;
    lo = a + 1;
  }
  const rest = ids.subarray(lo, hi).sort(compareDesc(l));
  for (let i = 0; i < rest.length; i++) {
    if (w) mass += w[rest[i]!]!;
    if (lo + i + 1 >= k || mass >= target) return lo + i + 1;
  }
  return hi;
}

/** Scratch buffers a Sampler reuses from token to token (sized to the vocabulary). */
interface Scratch {
  ids: Int32Array;
  w: Float64Array;
}

/**
 * The candidates left after top-k, top-p and min-p over the (penalized) logits `l` (max `max`, at least one
 * unmasked token): fills s.ids[0, n) with them, in no particular order, and returns n. The argmax is always kept.
 * s.w holds exp(l - max) for every candidate when top-p was applied.
 */
function filterCandidates(l: Float32Array, max: number, o: ResolvedSamplingOptions, s: Scratch): number {
  const { ids, w } = s;
  const V = l.length;
  const topK = o.topK > 0;
  const minPCut = o.minP > 0 ? max + Math.log(o.minP) : -Infinity;
  // min-p keeps a prefix of the candidate order, as top-k and top-p do, so it can be applied first to shrink the
  // set, except before top-k + top-p, whose softmax must run over all of the top k.
  let cut = topK && o.topP < 1 ? -Infinity : minPCut;
  let z = 0;
  if (!topK && o.topP < 1) {
    for (let i = 0; i < V; i++) z += w[i] = Math.exp(l[i]! - max);
    // Tokens with probability < (1 - p) / V hold mass < 1 - p together, so the nucleus lies among the others.
    cut = Math.max(cut, max + Math.log(((1 - o.topP) / V) * z));
  }
  let n = 0;
  for (let i = 0; i < V; i++) if (l[i]! >= cut && l[i] !== -Infinity) ids[n++] = i;
  if (topK && o.topK < n) n = selectPrefix(ids, n, l, o.topK, null, Infinity);
  if (o.topP < 1) {
    if (topK) {
      // as llama.cpp: top-p's softmax is over what top-k left
      for (let i = 0; i < n; i++) z += w[ids[i]!] = Math.exp(l[ids[i]!]! - max);
    }
    n = selectPrefix(ids, n, l, Infinity, w, o.topP * z);
  }
  if (o.minP > 0 && cut < minPCut) {
    let m = 0;
    for (let i = 0; i < n; i++) if (l[ids[i]!]! >= minPCut) ids[m++] = ids[i]!;
    n = m;
  }
  return n;
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
  private scratch: Scratch = { ids: new Int32Array(0), w: new Float64Array(0) };

  constructor(opts: SamplingOptions = {}) {
    this.options = Object.freeze(resolveSamplingOptions(opts));
    this.rng = new Rng(opts.seed);
    this.seed = this.rng.seed;
  }

  /** Picks the next token from raw logits (not modified) given the previous tokens (prompt + generated). */
  sample(logits: Float32Array, history: readonly number[]): number {
    const { l, max } = this.prepare(logits, history);
    const o = this.options;
    if (o.temperature === 0) return argmax(l);
    const { ids, w } = this.scratch;
    const n = filterCandidates(l, max, o, this.scratch);
    // weights at the temperature, reusing w (indexed by id)
    let total = 0;
    for (let i = 0; i < n; i++) total += w[ids[i]!] = Math.exp((l[ids[i]!]! - max) / o.temperature);
    const u = this.rng.nextFloat() * total;
    let cum = 0;
    for (let i = 0; i < n; i++) {
      cum += w[ids[i]!]!;
      if (u < cum) return ids[i]!;
    }
    // unreachable (cum ends equal to total > u); kept for safety against rounding
    return ids[n - 1]!;
  }

  /**
   * The distribution `sample` draws from for these logits and history, as [{id, p}] (p summing to 1) over the
   * candidates that survive the filters, most likely first (ties → lower id); greedy gives one token with p = 1.
   * Draws nothing from the PRNG.
   */
  distribution(logits: Float32Array, history: readonly number[]): Array<{ id: number; p: number }> {
    const { l, max } = this.prepare(logits, history);
    const o = this.options;
    if (o.temperature === 0) return [{ id: argmax(l), p: 1 }];
    const n = filterCandidates(l, max, o, this.scratch);
    const ids = Array.from(this.scratch.ids.subarray(0, n)).sort(compareDesc(l));
    const w = ids.map((id) => Math.exp((l[id]! - max) / o.temperature));
    const total = w.reduce((a, b) => a + b, 0);
    return ids.map((id, i) => ({ id, p: w[i]! / total }));
  }

  /** Checks the logits, copies them into the scratch buffer and applies the penalties there. */
  private prepare(logits: Float32Array, history: readonly number[]): { l: Float32Array; max: number } {
    scanLogits(logits);
    const V = logits.length;
    if (this.work.length !== V) {
      this.work = new Float32Array(V);
      this.scratch = { ids: new Int32Array(V), w: new Float64Array(V) };
    }
    const l = this.work;
    l.set(logits);
    penalize(l, history, this.options);
    // Penalties move logits, so the max is taken after them.
    let max = -Infinity;
    for (let i = 0; i < V; i++) if (l[i]! > max) max = l[i]!;
    if (max === -Infinity) fail('usage', 'cannot sample: every logit is -Infinity (all tokens masked)');
    return { l, max };
  }
}

/** log Σ exp(logits) in float64, max-subtracted; throws on NaN/+Infinity or when every token is masked. */
function logSumExp(logits: Float32Array): number {
  const max = scanLogits(logits);
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
  return topKIds(logits, k).map((id) => ({ id, logprob: logits[id]! - lse }));
}

/** The log-probability of token `id` under the softmax of the raw logits (float64, max-subtracted). */
export function logprobOf(logits: Float32Array, id: number): number {
  if (!Number.isInteger(id) || id < 0 || id >= logits.length)
    fail('usage', `token ${id} is outside the vocabulary [0, ${logits.length})`);
  return logits[id]! - logSumExp(logits);
}
