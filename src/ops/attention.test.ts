import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { f16BitsToNumber, numberToF16Bits } from '../core/dtype.js';
import { attention, type KvView } from './attention.js';
import { uniform as xorshift } from '../testing/helpers.js';


interface Case {
  nHeads: number;
  nKvHeads: number;
  headDim: number;
  /** positions in the cache */
  length: number;
  /** the chunk's positions: the last `tokens` ones */
  tokens: number;
  window?: number;
  seed: number;
}

/** Keys/values per position as float64: kv[g][j] is a headDim vector. */
function randomKv(c: Case, r: () => number): number[][][] {
  return Array.from({ length: c.nKvHeads }, () => Array.from({ length: c.length }, () => Array.from({ length: c.headDim }, () => Math.fround(r() * 4 - 2))));
}

/** A KvView with `pad` unused positions per head, so headStride is not length * headDim. */
function view(kv: number[][][], c: Case, dtype: 'f32' | 'f16', pad = 3): KvView {
  const headStride = (c.length + pad) * c.headDim;
  const data = dtype === 'f32' ? new Float32Array(c.nKvHeads * headStride).fill(NaN) : new Uint16Array(c.nKvHeads * headStride).fill(0x7e00);
  kv.forEach((head, g) => head.forEach((vec, j) => vec.forEach((v, d) => (data[g * headStride + j * c.headDim + d] = dtype === 'f32' ? v : numberToF16Bits(v)))));
  return { dtype, data, headStride };
}

/** The textbook computation: repeat_kv, full score row, causal/window mask, softmax, weighted sum. */
function naive(q: Float32Array, K: number[][][], V: number[][][], c: Case, positions: number[]): Float64Array {
  const { nHeads, nKvHeads, headDim } = c;
  const rep = nHeads / nKvHeads;
  const out = new Float64Array(positions.length * nHeads * headDim);
  positions.forEach((p, t) => {
    for (let h = 0; h < nHeads; h++) {
      const kh = K[Math.floor(h / rep)]!;
      const vh = V[Math.floor(h / rep)]!;
      const qv = Array.from(q.subarray((t * nHeads + h) * headDim, (t * nHeads + h + 1) * headDim));
      const scores = kh.map((kv, j) => {
        const visible = j <= p && (c.window === undefined || p - j < c.window);
        return visible ? qv.reduce((s, x, d) => s + x * kv[d]!, 0) / Math.sqrt(headDim) : -Infinity;
      });
      const m = Math.max(...scores);
      const e = scores.map((s) => Math.exp(s - m));
      const z = e.reduce((a, b) => a + b, 0);
      for (let d = 0; d < headDim; d++) out[(t * nHeads + h) * headDim + d] = e.reduce((s, w, j) => s + (w / z) * vh[j]![d]!, 0);
    }
  });
  return out;
}

function run(c: Case, dtype: 'f32' | 'f16' = 'f32') {
  const r = xorshift(c.seed);
  const K = randomKv(c, r);
  const V = randomKv(c, r);
  const positions = Array.from({ length: c.tokens }, (_, t) => c.length - c.tokens + t);
  const q = Float32Array.from({ length: c.tokens * c.nHeads * c.headDim }, () => r() * 4 - 2);
  const out = new Float32Array(q.length);
  attention({
    out,
    q,
    keys: view(K, c, dtype),
    values: view(V, c, dtype),
    positions: Int32Array.from(positions),
    length: c.length,
    nHeads: c.nHeads,
    nKvHeads: c.nKvHeads,
    headDim: c.headDim,
    ...(c.window === undefined ? {} : { window: c.window }),
  });
  const round = dtype === 'f16' ? (v: number) => f16BitsToNumber(numberToF16Bits(v)) : (v: number) => v;
  const want = naive(q, K.map((h) => h.map((v) => v.map(round))), V.map((h) => h.map((v) => v.map(round))), c, positions);
  return { out, want };
}

function maxRelErr(out: Float32Array, want: Float64Array): number {
  let err = 0;
  want.forEach((w, i) => (err = Math.max(err, Math.abs(out[i]! - w) / Math.max(1, Math.abs(w)))));
  return err;
}

test('attention: MHA, GQA and MQA match the textbook computation', () => {
  for (const [nHeads, nKvHeads] of [[4, 4], [6, 2], [4, 1]] as const) {
    const { out, want } = run({ nHeads, nKvHeads, headDim: 8, length: 9, tokens: 4, seed: nHeads * 10 + nKvHeads });
    assert.ok(maxRelErr(out, want) <= 2 ** -24, `${nHeads}/${nKvHeads}: ${maxRelErr(out, want)}`);
  }
});

test('attention: the sliding window sees the last `window` positions, itself included', () => {
  const c: Case = { nHeads: 2, nKvHeads: 1, headDim: 4, length: 10, tokens: 10, window: 3, seed: 7 };
  const { out, want } = run(c);
  assert.ok(maxRelErr(out, want) <= 2 ** -24);
  // window = 1: each token sees only itself, so the output is its own value vector.
  const one = run({ ...c, window: 1 });
  assert.ok(maxRelErr(one.out, one.want) <= 2 ** -24);
  // A window covering everything is plain causal attention.
  const wide = run({ ...c, window: 10 });
  const full = run({ ...c, window: undefined } as Case);
  assert.deepEqual(wide.out, full.out);
  assert.notDeepEqual(run(c).out, full.out);
});

test('attention: f16 keys and values are decoded exactly', () => {
  const { out, want } = run({ nHeads: 4, nKvHeads: 2, headDim: 8, length: 6, tokens: 2, seed: 11 }, 'f16');
  assert.ok(maxRelErr(out, want) <= 2 ** -24);
});

test('attention: random shapes and windows (property)', () => {
  fc.assert(
    fc.property(
      fc.record({
        kv: fc.integer({ min: 1, max: 3 }),
        rep: fc.integer({ min: 1, max: 3 }),
        half: fc.integer({ min: 1, max: 6 }),
        length: fc.integer({ min: 1, max: 12 }),
        window: fc.option(fc.integer({ min: 1, max: 14 }), { nil: undefined }),
        seed: fc.integer(),
      }),
      ({ kv, rep, half, length, window, seed }) => {
        const c: Case = { nHeads: kv * rep, nKvHeads: kv, headDim: 2 * half, length, tokens: Math.ceil(length / 2), seed, ...(window === undefined ? {} : { window }) };
        const { out, want } = run(c);
        assert.ok(maxRelErr(out, want) <= 2 ** -24);
      },
    ),
    { numRuns: 60 },
  );
});

test('attention: rejects positions beyond the cache and overlapping buffers', () => {
  const kv: KvView = { dtype: 'f32', data: new Float32Array(8), headStride: 8 };
  const base = { keys: kv, values: kv, length: 2, nHeads: 1, nKvHeads: 1, headDim: 4 };
  assert.throws(() => attention({ ...base, out: new Float32Array(4), q: new Float32Array(4), positions: Int32Array.from([2]) }), /position 2 of token 0 is outside the 2 cached positions/);
  const buf = new Float32Array(8);
  assert.throws(() => attention({ ...base, out: buf.subarray(2, 6), q: buf.subarray(0, 4), positions: Int32Array.from([1]) }), /out overlaps q/);
  assert.throws(() => attention({ ...base, length: 3, out: new Float32Array(4), q: new Float32Array(4), positions: Int32Array.from([1]) }), /hold fewer than 3 positions/);
});
