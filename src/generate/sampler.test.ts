import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { HalfpipeError } from '../core/errors.js';
import { Rng } from './rng.js';
import {
  applyPenalties,
  DEFAULT_SAMPLING,
  logprobOf,
  Sampler,
  type SamplingOptions,
  topLogprobs,
} from './sampler.js';

// ---------------------------------------------------------------------------------------------------------------
// Plain reference helpers, written out without any of the sampler's shortcuts.

/** Unmasked token ids, best first: higher logit, then lower id. */
function sortedIds(l: Float32Array): number[] {
  const ids: number[] = [];
  for (let i = 0; i < l.length; i++) if (l[i] !== -Infinity) ids.push(i);
  return ids.sort((a, b) => (l[a]! === l[b]! ? a - b : l[b]! - l[a]!));
}

/** Softmax over the tokens `ids` of `l` (float64), as a Map id → probability. */
function softmaxOver(l: Float32Array, ids: number[], temperature = 1): Map<number, number> {
  let m = -Infinity;
  for (const id of ids) m = Math.max(m, l[id]!);
  const w = ids.map((id) => Math.exp((l[id]! - m) / temperature));
  const z = w.reduce((a, b) => a + b, 0);
  return new Map(ids.map((id, i) => [id, w[i]! / z]));
}

/** The smallest set of highest-probability tokens whose mass is >= p. */
function nucleusOf(l: Float32Array, p: number): Set<number> {
  const ids = sortedIds(l);
  const probs = softmaxOver(l, ids);
  const out = new Set<number>();
  let mass = 0;
  for (const id of ids) {
    out.add(id);
    mass += probs.get(id)!;
    if (mass >= p) break;
  }
  return out;
}

/**
 * The candidate set of llama.cpp's chain top-k → top-p → min-p, plus whether the input sits within 1e-9 of a
 * threshold (where summation order may legitimately decide).
 */
function referenceCandidates(
  l: Float32Array,
  o: Required<Omit<SamplingOptions, 'seed'>>,
  sorted = sortedIds(l),
): { ids: Set<number>; ambiguous: boolean } {
  let s = sorted;
  let ambiguous = false;
  if (o.topK > 0) s = s.slice(0, o.topK);
  if (o.topP < 1) {
    const probs = softmaxOver(l, s);
    let mass = 0;
    for (let i = 0; i < s.length; i++) {
      mass += probs.get(s[i]!)!;
      if (Math.abs(mass - o.topP) < 1e-9) ambiguous = true;
      if (mass >= o.topP) {
        s = s.slice(0, i + 1);
        break;
      }
    }
  }
  if (o.minP > 0) {
    const top = l[s[0]!]!;
    for (const id of s) if (Math.abs(Math.exp(l[id]! - top) - o.minP) < 1e-9) ambiguous = true;
    s = s.filter((id) => Math.exp(l[id]! - top) >= o.minP);
  }
  return { ids: new Set(s), ambiguous };
}

function argmaxPlain(l: Float32Array): number {
  let best = -1;
  for (let i = 0; i < l.length; i++) if (best < 0 || l[i]! > l[best]!) best = i;
  return best;
}

// Logits at a random scale (so that top-k, top-p and min-p all get to bind), with ties, masked tokens, and at least
// one token unmasked.
const logitValue = fc.oneof(
  { weight: 6, arbitrary: fc.double({ min: -1, max: 1, noNaN: true }) },
  { weight: 2, arbitrary: fc.integer({ min: -3, max: 3 }).map((x) => x / 3) },
  { weight: 1, arbitrary: fc.constant(-Infinity) },
);
const logitsArb = (maxLength = 60, minLength = 1): fc.Arbitrary<Float32Array> =>
  fc
    .tuple(fc.array(logitValue, { minLength, maxLength }), fc.double({ min: 0.3, max: 20, noNaN: true }))
    .filter(([a]) => a.some((x) => x !== -Infinity))
    .map(([a, scale]) => Float32Array.from(a, (x) => x * scale));
const seedArb = fc.integer({ min: 0, max: 2 ** 31 });
const tempArb = fc.double({ min: 0.05, max: 5, noNaN: true });
const NO_FILTERS = { topK: 0, topP: 1, minP: 0 } as const;

function draws(s: Sampler, l: Float32Array, n: number, history: readonly number[] = []): number[] {
  return Array.from({ length: n }, () => s.sample(l, history));
}

function isUsageError(code: HalfpipeError['code'] = 'usage') {
  return (e: unknown): boolean => e instanceof HalfpipeError && e.code === code && !e.message.includes('\n');
}

// ---------------------------------------------------------------------------------------------------------------
// The PRNG

test('rng: SplitMix64-seeded xoshiro128** matches the C reference implementation', () => {
  // Printed by the published C code (splitmix64.c + xoshiro128starstar.c): state = two splitmix64 outputs, low word first.
  const expect: Array<[number, number[]]> = [
    [0, [3737715805, 2584255861, 2876756834, 3286328325, 1553311962, 1625202774]],
    [42, [1776835114, 4165204688, 17111135, 2317295270, 2792088233, 2554630222]],
    [9007199254740991, [1233166643, 1287031142, 661813442, 2960669951, 2601079046, 1036114921]],
  ];
  for (const [seed, want] of expect) {
    const r = new Rng(seed);
    assert.deepEqual(Array.from({ length: want.length }, () => r.nextUint32()), want, `seed ${seed}`);
  }
  const r = Rng.fromState([1, 2, 3, 4]);
  assert.deepEqual(Array.from({ length: 6 }, () => r.nextUint32()), [11520, 0, 5927040, 70819200, 2031721883, 1637235492]);
});

test('rng: same seed, same sequence; different seeds differ; floats in [0, 1) with 53 bits', () => {
  const a = new Rng(1234);
  const b = new Rng(1234);
  const c = new Rng(1235);
  const xa = Array.from({ length: 1000 }, () => a.nextFloat());
  const xb = Array.from({ length: 1000 }, () => b.nextFloat());
  const xc = Array.from({ length: 1000 }, () => c.nextFloat());
  assert.deepEqual(xa, xb);
  assert.ok(xa.filter((x, i) => x !== xc[i]).length > 990);
  for (const x of xa) assert.ok(x >= 0 && x < 1);
  assert.ok(xa.some((x) => !Number.isInteger(x * 2 ** 32)), 'more than 32 bits of resolution');
  const mean = xa.reduce((s, x) => s + x, 0) / xa.length;
  assert.ok(Math.abs(mean - 0.5) < 0.05, `mean ${mean}`);
  // without a seed: drawn from crypto, reported, reproducible
  const r1 = new Rng();
  const r2 = new Rng();
  assert.notEqual(r1.seed, r2.seed);
  const again = new Rng(r1.seed);
  assert.deepEqual([r1.nextUint32(), r1.nextUint32()], [again.nextUint32(), again.nextUint32()]);
  for (const bad of [-1, 1.5, 2 ** 53, NaN]) assert.throws(() => new Rng(bad), isUsageError());
});

// ---------------------------------------------------------------------------------------------------------------
// Sampling

test('defaults are llama.cpp CLI defaults', () => {
  assert.deepEqual(
    { ...DEFAULT_SAMPLING },
    { temperature: 0.8, topK: 40, topP: 0.95, minP: 0.05, repeatPenalty: 1, repeatLastN: 64, frequencyPenalty: 0, presencePenalty: 0 },
  );
  assert.deepEqual({ ...new Sampler({ seed: 1 }).options }, { ...DEFAULT_SAMPLING });
});

test('greedy (temperature 0) is the argmax, ties to the lowest id, whatever the other filters', () => {
  fc.assert(
    fc.property(logitsArb(), fc.nat({ max: 10 }), fc.double({ min: 0.01, max: 1, noNaN: true }), seedArb, (l, topK, topP, seed) => {
      const s = new Sampler({ temperature: 0, topK, topP, minP: 0.5, seed });
      assert.equal(s.sample(l, []), argmaxPlain(l));
      assert.deepEqual(s.distribution(l, []), [{ id: argmaxPlain(l), p: 1 }]);
    }),
  );
  const s = new Sampler({ temperature: 0 });
  assert.equal(s.sample(Float32Array.from([1, 3, -Infinity, 3, 2]), []), 1);
  assert.equal(s.sample(Float32Array.from([-Infinity, -5, -Infinity]), []), 1);
});

test('same seed → same 1000 tokens; different seeds → different tokens', () => {
  const l = Float32Array.from({ length: 200 }, (_, i) => Math.sin(i * 1.7) * 3);
  const run = (seed: number): number[] => draws(new Sampler({ temperature: 1, ...NO_FILTERS, seed }), l, 1000);
  const a = run(20240601);
  assert.deepEqual(run(20240601), a);
  const b = run(20240602);
  assert.ok(a.filter((x, i) => x !== b[i]).length > 500, 'different seeds should mostly disagree');
  assert.ok(new Set(a).size > 50, 'a flat-ish distribution is explored');
});

test('top-k never samples outside the k best (ties → lower id)', () => {
  fc.assert(
    fc.property(logitsArb(), fc.integer({ min: 1, max: 8 }), tempArb, seedArb, (l, topK, temperature, seed) => {
      const best = new Set(sortedIds(l).slice(0, topK));
      const s = new Sampler({ temperature, topK, topP: 1, minP: 0, seed });
      for (const id of draws(s, l, 30)) assert.ok(best.has(id), `token ${id} is not among the ${topK} best`);
      assert.deepEqual(new Set(s.distribution(l, []).map((c) => c.id)), best);
    }),
    { numRuns: 300 },
  );
});

test('top-p never samples outside the nucleus', () => {
  fc.assert(
    fc.property(logitsArb(), fc.double({ min: 0.01, max: 1, noNaN: true }), tempArb, seedArb, (l, topP, temperature, seed) => {
      // 1e-9 of slack for summation order
      const nucleus = nucleusOf(l, Math.min(1, topP + 1e-9));
      const s = new Sampler({ temperature, topK: 0, topP, minP: 0, seed });
      for (const id of draws(s, l, 30)) assert.ok(nucleus.has(id), `token ${id} is outside the ${topP} nucleus`);
      const cands = s.distribution(l, []).map((c) => c.id);
      for (const id of nucleusOf(l, topP - 1e-9)) assert.ok(cands.includes(id), `token ${id} of the nucleus was dropped`);
    }),
    { numRuns: 300 },
  );
});

test('min-p never samples below minP × pmax', () => {
  fc.assert(
    fc.property(logitsArb(), fc.double({ min: 0.001, max: 1, noNaN: true }), tempArb, seedArb, (l, minP, temperature, seed) => {
      const probs = softmaxOver(l, sortedIds(l));
      const pmax = Math.max(...probs.values());
      const s = new Sampler({ temperature, topK: 0, topP: 1, minP, seed });
      for (const id of draws(s, l, 30)) assert.ok(probs.get(id)! >= minP * pmax * (1 - 1e-9), `token ${id} is below min-p`);
    }),
    { numRuns: 300 },
  );
});

function candidateSetProperty(logits: fc.Arbitrary<Float32Array>, maxK: number): fc.IProperty<[Float32Array, Required<Omit<SamplingOptions, 'seed'>>]> {
  return fc.property(
    logits,
    fc.record({
      temperature: tempArb,
      topK: fc.nat({ max: maxK }),
      topP: fc.oneof(fc.constant(1), fc.double({ min: 0.01, max: 1, noNaN: true })),
      minP: fc.oneof(fc.constant(0), fc.double({ min: 0.001, max: 1, noNaN: true })),
      repeatPenalty: fc.constant(1),
      repeatLastN: fc.constant(64),
      frequencyPenalty: fc.constant(0),
      presencePenalty: fc.constant(0),
    }),
    (l, o) => {
      const ref = referenceCandidates(l, o);
      fc.pre(!ref.ambiguous);
      const dist = new Sampler({ ...o, seed: 1 }).distribution(l, []);
      assert.deepEqual(new Set(dist.map((c) => c.id)), ref.ids);
      const want = softmaxOver(l, [...ref.ids], o.temperature);
      for (const { id, p } of dist) assert.ok(Math.abs(p - want.get(id)!) < 1e-12, `p(${id}) = ${p}, want ${want.get(id)}`);
      assert.deepEqual(
        dist.map((c) => c.id),
        sortedIds(l).filter((id) => ref.ids.has(id)),
        'distribution() lists the most likely first',
      );
    },
  );
}

test('the candidate set is exactly top-k → top-p (renormalized over the top k) → min-p', () => {
  fc.assert(candidateSetProperty(logitsArb(), 12), { numRuns: 500 });
  // sets large enough for the quickselect to partition, with cuts anywhere
  fc.assert(candidateSetProperty(logitsArb(300, 17), 300), { numRuns: 500 });
});

test('top-p boundary: the nucleus stops at the first token whose cumulative mass reaches p', () => {
  const l = Float32Array.from([0, 0, 0, 0]); // 0.25 each; ties in id order
  const ids = (topP: number): number[] => new Sampler({ temperature: 1, topK: 0, topP, minP: 0, seed: 1 }).distribution(l, []).map((c) => c.id);
  assert.deepEqual(ids(0.5), [0, 1]);
  assert.deepEqual(ids(0.5000001), [0, 1, 2]);
  assert.deepEqual(ids(0.25), [0]);
  // the same at sizes where the quickselect partitions: 40 ties, half the mass is exactly the first 20
  const flat = new Float32Array(40);
  for (const [topP, n] of [
    [0.5, 20],
    [0.25, 10],
    [0.5000001, 21],
    [0.525, 21], // the pivot's own weight reaches the mass exactly
  ] as const) {
    const got = new Sampler({ temperature: 1, topK: 0, topP, minP: 0, seed: 1 }).distribution(flat, []).map((c) => c.id);
    assert.deepEqual(got, Array.from({ length: n }, (_, i) => i), `topP ${topP}`);
  }
  // with top-k, the mass is renormalized over the k kept: 2 of 2 equal tokens, p = 0.5 keeps one
  assert.deepEqual(new Sampler({ temperature: 1, topK: 2, topP: 0.5, minP: 0, seed: 1 }).distribution(l, []).map((c) => c.id), [0]);
  // min-p at exactly pmax × minP keeps the token: e^(ln 0.5) = 0.5
  const m = Float32Array.from([0, Math.fround(Math.log(0.5)), -1, -2]);
  for (const o of [
    { topK: 0, topP: 1 },
    { topK: 3, topP: 1 },
    { topK: 0, topP: 0.99 },
  ]) {
    const kept = new Sampler({ temperature: 1, ...o, minP: Math.exp(m[1]!), seed: 1 }).distribution(m, []).map((c) => c.id);
    assert.deepEqual(kept, [0, 1], JSON.stringify(o));
  }
});

test('large vocabularies: top-k by partial selection and top-p by threshold match the plain reference', () => {
  const rng = new Rng(99);
  const V = 128256;
  const l = new Float32Array(V);
  for (let i = 0; i < V; i++) l[i] = (rng.nextFloat() - 0.5) * 12 + (i % 1000 === 0 ? 8 : 0);
  l[777] = -Infinity;
  const sorted = sortedIds(l);
  const cases = [
    { temperature: 0.8, topK: 40, topP: 1, minP: 0 },
    { temperature: 0.8, topK: 40, topP: 0.95, minP: 0.05 },
    { temperature: 1, topK: 0, topP: 0.9, minP: 0 },
    { temperature: 1, topK: 0, topP: 0.5, minP: 0.01 },
    { temperature: 1, topK: 0, topP: 1, minP: 0.1 },
  ];
  for (const c of cases) {
    const o = { ...c, repeatPenalty: 1, repeatLastN: 64, frequencyPenalty: 0, presencePenalty: 0 };
    const ref = referenceCandidates(l, o, sorted);
    assert.ok(!ref.ambiguous);
    const s = new Sampler({ ...c, seed: 5 });
    assert.deepEqual(new Set(s.distribution(l, []).map((d) => d.id)), ref.ids, JSON.stringify(c));
    for (const id of draws(s, l, 50)) assert.ok(ref.ids.has(id));
  }
});

test('temperature → 0 approaches greedy', () => {
  fc.assert(
    fc.property(logitsArb(30), fc.nat(), seedArb, (raw, at, seed) => {
      // make the argmax unique, 0.5 above the rest
      const l = Float32Array.from(raw);
      const top = at % l.length;
      l[top] = Math.max(...Array.from(l).filter((x, i) => i !== top && x !== -Infinity), 0) + 0.5;
      let prev = 0;
      for (const temperature of [2, 1, 0.3, 0.1, 0.03]) {
        const p = new Sampler({ temperature, ...NO_FILTERS, seed }).distribution(l, []).find((c) => c.id === top)!.p;
        assert.ok(p >= prev - 1e-12, `p(argmax) must not fall as the temperature drops: ${p} < ${prev}`);
        prev = p;
      }
      assert.ok(prev > 1 - 1e-5, `p(argmax) at T=0.03 is ${prev}`);
      const s = new Sampler({ temperature: 0.001, ...NO_FILTERS, seed });
      for (const id of draws(s, l, 20)) assert.equal(id, top);
    }),
  );
});

/** Pearson's chi-square of observed counts against expected probabilities. */
function chiSquare(counts: number[], probs: number[], n: number): number {
  return counts.reduce((acc, c, i) => acc + (c - n * probs[i]!) ** 2 / (n * probs[i]!), 0);
}

test('sampling follows the softmax (chi-square, fixed seeds)', () => {
  const l = Float32Array.from([1, 0.5, 0, -0.5, 2, -1]);
  const n = 30000;
  // 5 degrees of freedom: P(chi2 > 20.5) = 0.001; 30 is generous yet far below what a wrong distribution gives.
  for (const [temperature, seed] of [
    [1, 7],
    [0.6, 8],
    [2.5, 9],
  ] as const) {
    const s = new Sampler({ temperature, ...NO_FILTERS, seed });
    const counts = new Array<number>(l.length).fill(0);
    for (let i = 0; i < n; i++) counts[s.sample(l, [])]!++;
    const want = [...softmaxOver(l, [0, 1, 2, 3, 4, 5], temperature).values()];
    const x2 = chiSquare(counts, want, n);
    assert.ok(x2 < 30, `T=${temperature}: chi-square ${x2.toFixed(2)} (counts ${counts})`);
  }
  // with top-k 3 the draw follows the softmax renormalized over the 3 best (tokens 4, 0, 1)
  const s = new Sampler({ temperature: 1, topK: 3, topP: 1, minP: 0, seed: 10 });
  const counts = [0, 0, 0];
  const slot = new Map([
    [4, 0],
    [0, 1],
    [1, 2],
  ]);
  for (let i = 0; i < n; i++) counts[slot.get(s.sample(l, []))!]!++;
  const x2 = chiSquare(counts, [...softmaxOver(l, [4, 0, 1]).values()], n);
  assert.ok(x2 < 25, `top-k 3: chi-square ${x2.toFixed(2)} (counts ${counts})`);
});

test('penalties change exactly the intended logits (llama.cpp repeat, OpenAI frequency/presence)', () => {
  // by hand: window = last 3 of [3, 0, 1, 1] = [0, 1, 1]
  const out = applyPenalties(Float32Array.from([2, -2, 0.5, 3]), [3, 0, 1, 1], {
    repeatPenalty: 2,
    repeatLastN: 3,
    frequencyPenalty: 0.5,
    presencePenalty: 0.25,
  });
  assert.deepEqual(Array.from(out), [2 / 2 - 0.5 - 0.25, -2 * 2 - 2 * 0.5 - 0.25, 0.5, 3]);

  fc.assert(
    fc.property(
      logitsArb(40).chain((l) =>
        fc.tuple(
          fc.constant(l),
          fc.array(fc.nat({ max: l.length - 1 }), { maxLength: 80 }),
          fc.record({
            repeatPenalty: fc.double({ min: 0.5, max: 2, noNaN: true }),
            repeatLastN: fc.integer({ min: -1, max: 100 }),
            frequencyPenalty: fc.double({ min: -2, max: 2, noNaN: true }),
            presencePenalty: fc.double({ min: -2, max: 2, noNaN: true }),
          }),
        ),
      ),
      ([l, history, o]) => {
        const before = Float32Array.from(l);
        const got = applyPenalties(l, history, o);
        assert.deepEqual(l, before, 'the input logits are not modified');
        const window = o.repeatLastN === -1 ? history : o.repeatLastN === 0 ? [] : history.slice(-o.repeatLastN);
        for (let i = 0; i < l.length; i++) {
          const count = window.filter((t) => t === i).length;
          let want = l[i]!;
          if (count > 0) {
            if (want > 0) want = want / o.repeatPenalty;
            else want = want * o.repeatPenalty;
            want = want - (count * o.frequencyPenalty + (count > 0 ? 1 : 0) * o.presencePenalty);
          }
          // computed in float64, rounded once to float32
          assert.ok(Object.is(got[i], Math.fround(want)), `token ${i} (count ${count}): ${got[i]} vs ${Math.fround(want)}`);
          if (count === 0) assert.ok(Object.is(got[i], l[i]), `token ${i} is not in the window and must not change`);
        }
      },
    ),
  );
});

test('the sampler applies the penalties before choosing, and never modifies the logits', () => {
  const l = Float32Array.from([5, 4.9, -1]);
  const copy = Float32Array.from(l);
  assert.equal(new Sampler({ temperature: 0 }).sample(l, [0]), 0);
  assert.equal(new Sampler({ temperature: 0, repeatPenalty: 1.1 }).sample(l, [0]), 1); // 5 / 1.1 < 4.9
  assert.equal(new Sampler({ temperature: 0, repeatPenalty: 1.1, repeatLastN: 1 }).sample(l, [0, 2]), 0); // 0 is out of the window
  assert.equal(new Sampler({ temperature: 0, repeatPenalty: 1.1, repeatLastN: 0 }).sample(l, [0]), 0); // 0 = off
  assert.equal(new Sampler({ temperature: 0, presencePenalty: 0.2 }).sample(l, [0]), 1);
  assert.equal(new Sampler({ temperature: 0, frequencyPenalty: 0.06 }).sample(l, [0]), 0); // 4.94 > 4.9
  assert.equal(new Sampler({ temperature: 0, frequencyPenalty: 0.06 }).sample(l, [0, 0]), 1); // 4.88 < 4.9
  assert.equal(new Sampler({ temperature: 0, repeatPenalty: 1.1, repeatLastN: -1 }).sample(l, [0, ...new Array(100).fill(2)]), 1);
  new Sampler({ temperature: 1, repeatPenalty: 1.3, seed: 3 }).sample(l, [0, 1]);
  assert.deepEqual(l, copy);
});

test('bad options and bad logits are one-line HalfpipeErrors', () => {
  const bad: SamplingOptions[] = [
    { temperature: -0.1 },
    { temperature: NaN },
    { temperature: Infinity },
    { topP: 0 },
    { topP: 1.01 },
    { topP: NaN },
    { topK: -1 },
    { topK: 2.5 },
    { topK: NaN },
    { minP: -0.01 },
    { minP: 1.5 },
    { repeatPenalty: 0 },
    { repeatPenalty: -1 },
    { repeatPenalty: NaN },
    { repeatLastN: -2 },
    { repeatLastN: 1.5 },
    { frequencyPenalty: Infinity },
    { presencePenalty: NaN },
    { seed: -1 },
    { seed: 0.5 },
  ];
  for (const o of bad) assert.throws(() => new Sampler(o), isUsageError(), JSON.stringify(o, (_, v) => (typeof v === 'number' ? String(v) : v)));
  // options that are fine
  new Sampler({ temperature: 0, topK: 0, topP: 1, minP: 0, repeatLastN: -1, seed: 0 });
  new Sampler({ ...{ maxTokens: 12, stop: ['x'] }, topP: 0.5 } as SamplingOptions); // extra fields (GenerateOptions) are ignored

  const s = new Sampler({ seed: 1 });
  for (const l of [Float32Array.from([0, NaN, 1]), Float32Array.from([0, Infinity, 1]), Float32Array.from([NaN])]) {
    assert.throws(
      () => s.sample(l, []),
      (e: unknown) => isUsageError('dtype')(e) && (e as Error).message.startsWith('non-finite logits'),
    );
    assert.throws(() => topLogprobs(l, 2), (e: unknown) => (e as Error).message.startsWith('non-finite logits'));
  }
  assert.throws(() => s.sample(Float32Array.from([-Infinity, -Infinity]), []), isUsageError());
  assert.throws(() => s.sample(new Float32Array(0), []), isUsageError());
  assert.throws(() => new Sampler({ repeatPenalty: 1.1 }).sample(Float32Array.from([1, 2]), [0, 2]), isUsageError());
  assert.throws(() => topLogprobs(Float32Array.from([1, 2]), -1), isUsageError());
  assert.throws(() => logprobOf(Float32Array.from([1, 2]), 2), isUsageError());
  // masked tokens are fine and never drawn
  const masked = Float32Array.from([-Infinity, 0, -Infinity, 0.5]);
  const m = new Sampler({ temperature: 5, ...NO_FILTERS, seed: 2 });
  for (const id of draws(m, masked, 200)) assert.ok(id === 1 || id === 3);
});

// ---------------------------------------------------------------------------------------------------------------
// Log-probabilities

test('topLogprobs: float64 log-softmax values, descending, ties by id; sums to 1', () => {
  fc.assert(
    fc.property(logitsArb(50), fc.nat({ max: 60 }), (l, k) => {
      // a float64 log-softmax written out the long way: log(exp(l_i) / Σ exp(l_j)); |l| <= 20 cannot overflow
      let z = 0;
      for (const x of l) z += Math.exp(x);
      const want = Array.from(l, (x) => Math.log(Math.exp(x) / z));
      const top = topLogprobs(l, k);
      assert.equal(top.length, Math.min(k, l.length));
      const order = Array.from(l.keys()).sort((a, b) => (l[a] === l[b] ? a - b : l[b]! - l[a]!));
      assert.deepEqual(
        top.map((t) => t.id),
        order.slice(0, k),
      );
      for (const { id, logprob } of top) {
        if (want[id] === -Infinity) assert.equal(logprob, -Infinity);
        else assert.ok(Math.abs(logprob - want[id]!) < 1e-12 * Math.max(1, Math.abs(want[id]!)), `${id}: ${logprob} vs ${want[id]}`);
        assert.equal(logprobOf(l, id), logprob);
      }
      const all = topLogprobs(l, l.length);
      assert.ok(Math.abs(all.reduce((s, t) => s + Math.exp(t.logprob), 0) - 1) < 1e-12);
    }),
  );
  // max-subtracted: huge logits do not overflow
  const big = topLogprobs(Float32Array.from([1000, 999]), 2);
  assert.ok(Math.abs(big[0]!.logprob + Math.log1p(Math.exp(-1))) < 1e-12);
  assert.ok(Math.abs(big[1]!.logprob + 1 + Math.log1p(Math.exp(-1))) < 1e-12);
  assert.deepEqual(topLogprobs(Float32Array.from([1, 2]), 0), []);
});
