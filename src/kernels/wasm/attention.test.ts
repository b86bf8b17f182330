import assert from 'node:assert/strict';
import { after, test } from 'node:test';
import { type DType, f16BitsToNumber } from '../../core/dtype.js';
import { KvCache } from '../../generate/kv-cache.js';
import { attention, type AttentionParams, type KvView } from '../../ops/attention.js';
import { errorText, uniform } from '../../testing/helpers.js';
import { attentionWasm } from './attention.js';
import { wasmHeap } from './heap.js';
import { poolReady, setMinChunkWork, setThreads, threadCount } from './pool.js';

const EPS = 2 ** -24;
const initialThreads = threadCount();
after(() => {
  setThreads(initialThreads);
  setMinChunkWork(1 << 15);
});

interface Case {
  nHeads: number;
  nKvHeads: number;
  headDim: number;
  kvDtype: 'f32' | 'f16';
  /** positions already cached before the new tokens */
  past: number;
  tokens: number;
  window?: number;
  scoresDtype?: DType;
  probsDtype?: DType;
  /** values that are multiples of 1/16 in [-1, 1]: every dot product is exact in f32 */
  dyadic?: boolean;
  seed: number;
}

interface Setup {
  cache: KvCache;
  params: AttentionParams;
}

/** A wasm-storage cache holding past + tokens positions of random K/V, and q for the new tokens. */
function setup(c: Case): Setup {
  const rand = uniform(c.seed);
  const value = c.dyadic ? () => Math.round((rand() * 2 - 1) * 16) / 16 : () => (rand() * 2 - 1) * 2;
  const length = c.past + c.tokens;
  const cache = new KvCache({ nLayers: 1, nKvHeads: c.nKvHeads, headDim: c.headDim, capacity: length + 5, dtype: c.kvDtype, storage: 'wasm' });
  const width = c.nKvHeads * c.headDim;
  const k = Float32Array.from({ length: length * width }, value);
  const v = Float32Array.from({ length: length * width }, value);
  cache.write(0, 0, length, k, v);
  cache.advance(length);
  const q = Float32Array.from({ length: c.tokens * c.nHeads * c.headDim }, value);
  const positions = Int32Array.from({ length: c.tokens }, (_, t) => c.past + t);
  const params: AttentionParams = {
    out: new Float32Array(q.length),
    q,
    keys: cache.keys(0),
    values: cache.values(0),
    positions,
    length,
    nHeads: c.nHeads,
    nKvHeads: c.nKvHeads,
    headDim: c.headDim,
    window: c.window,
    scoresDtype: c.scoresDtype,
    probsDtype: c.probsDtype,
  };
  return { cache, params };
}

function decoded(kv: KvView, i: number): number {
  return kv.dtype === 'f16' ? f16BitsToNumber(kv.data[i]!) : kv.data[i]!;
}

/**
 * Compares attentionWasm with the reference. Bound per output (first order, see attention.ts):
 *   |got - ref| <= [(cnt + 3) 2^-24 + 2.1 Delta] * sum_j a_j |v_jd| + 2^-24 |ref|
 * with Delta = (headDim/4 + 8) 2^-24 scale max_j sum_d |q_d k_jd| the f32 score error (the 2.1 >= 2
 * covers the second-order terms), the reference's probabilities a_j from its `record`, and 2^-24|ref|
 * for the reference's own rounding to f32. With dyadic data the dots are exact, the scores equal the
 * reference's bit for bit, so rounding them (and the probabilities) to f16/bf16 lands on the same
 * values and the same bound applies. Returns the largest error relative to sum_j a_j |v_jd|.
 */
function check(c: Case): number {
  const { cache, params: p } = setup(c);
  try {
    const { nHeads, headDim, length } = p;
    const tokens = p.positions.length;
    const ref = new Float32Array(p.out.length);
    const record = { scores: new Float32Array(tokens * nHeads * length), probs: new Float32Array(tokens * nHeads * length) };
    attention({ ...p, out: ref, record });
    const got = p.out.fill(12345.5);
    attentionWasm(p);
    const group = nHeads / p.nKvHeads;
    const scale = 1 / Math.sqrt(headDim);
    let worst = 0;
    for (let t = 0; t < tokens; t++) {
      const pos = p.positions[t]!;
      const lo = p.window === undefined ? 0 : Math.max(0, pos - p.window + 1);
      const cnt = pos - lo + 1;
      for (let h = 0; h < nHeads; h++) {
        const g = Math.floor(h / group);
        const qo = (t * nHeads + h) * headDim;
        let maxAbsDot = 0;
        for (let j = lo; j <= pos; j++) {
          let s = 0;
          for (let d = 0; d < headDim; d++) s += Math.abs(p.q[qo + d]! * decoded(p.keys, g * p.keys.headStride + j * headDim + d));
          maxAbsDot = Math.max(maxAbsDot, s);
        }
        const delta = (headDim / 4 + 8) * EPS * scale * maxAbsDot;
        for (let d = 0; d < headDim; d++) {
          let weighted = 0;
          for (let j = lo; j <= pos; j++) {
            weighted += record.probs[(t * nHeads + h) * length + j]! * Math.abs(decoded(p.values, g * p.values.headStride + j * headDim + d));
          }
          const r = ref[qo + d]!;
          const err = Math.abs(got[qo + d]! - r);
          const bound = ((cnt + 3) * EPS + 2.1 * delta) * weighted + EPS * Math.abs(r) + 1e-30;
          assert.ok(err <= bound, `${JSON.stringify(c)}: token ${t} head ${h} dim ${d}: got ${got[qo + d]}, want ${r}, error ${err} > ${bound}`);
          if (weighted > 0) worst = Math.max(worst, err / weighted);
        }
      }
    }
    return worst;
  } finally {
    cache.dispose();
  }
}

const SHAPES: Array<[number, number]> = [
  [4, 4],
  [4, 2],
  [6, 2],
  [8, 1],
];

for (const threads of [1, 2]) {
  test(`attentionWasm matches the reference within its bound (random shapes, f32/f16 KV, windows, GQA; ${threads} thread(s))`, async () => {
    setThreads(threads);
    setMinChunkWork(64); // split even small jobs over the threads
    if (threads > 1) await poolReady();
    let seed = 1;
    let worst = 0;
    for (const headDim of [12, 20, 64, 128, 7]) {
      for (const [nHeads, nKvHeads] of SHAPES) {
        for (const kvDtype of ['f32', 'f16'] as const) {
          for (const window of [undefined, 1, 5]) {
            const past = [0, 3, 40][seed % 3]!;
            worst = Math.max(worst, check({ nHeads, nKvHeads, headDim, kvDtype, past, tokens: 1 + (seed % 4), window, seed: seed++ }));
          }
        }
      }
    }
    // Long-ish context, decode step.
    worst = Math.max(worst, check({ nHeads: 4, nKvHeads: 2, headDim: 128, kvDtype: 'f16', past: 700, tokens: 1, seed: 99 }));
    worst = Math.max(worst, check({ nHeads: 4, nKvHeads: 4, headDim: 64, kvDtype: 'f32', past: 300, tokens: 3, window: 128, seed: 98 }));
    assert.ok(worst < 1e-5, `worst relative error ${worst}`);
  });

  test(`attentionWasm rounds scores and probabilities to f16/bf16 as the reference does (${threads} thread(s))`, async () => {
    setThreads(threads);
    setMinChunkWork(64);
    if (threads > 1) await poolReady();
    let seed = 200;
    for (const [scoresDtype, probsDtype] of [['f16', 'f16'], ['f16', 'f32'], ['f32', 'f16'], ['bf16', 'bf16']] as const) {
      for (const headDim of [12, 20, 128]) {
        for (const kvDtype of ['f32', 'f16'] as const) {
          check({ nHeads: 6, nKvHeads: 3, headDim, kvDtype, past: 30, tokens: 3, window: seed % 2 ? 9 : undefined, scoresDtype, probsDtype, dyadic: true, seed: seed++ });
        }
      }
    }
  });
}

/** Runs attentionWasm on p and returns a copy of the output. */
function run(p: AttentionParams): Float32Array {
  const out = new Float32Array(p.out.length).fill(-7);
  attentionWasm({ ...p, out });
  return out;
}

test('attentionWasm is batch invariant: a multi-token call equals one call per token, and 1 thread equals 2, bit for bit', async () => {
  setMinChunkWork(64);
  for (const c of [
    { nHeads: 8, nKvHeads: 2, headDim: 128, kvDtype: 'f16' as const, past: 50, tokens: 9, seed: 300 },
    { nHeads: 4, nKvHeads: 4, headDim: 20, kvDtype: 'f32' as const, past: 17, tokens: 6, window: 8, seed: 301 },
    { nHeads: 6, nKvHeads: 3, headDim: 64, kvDtype: 'f32' as const, past: 3, tokens: 5, scoresDtype: 'f16' as const, probsDtype: 'f16' as const, seed: 302 },
  ]) {
    const { cache, params } = setup(c);
    try {
      setThreads(2);
      await poolReady();
      const batched = run(params);
      setThreads(1);
      assert.deepEqual(run(params), batched, 'threads 1 vs 2');
      const width = c.nHeads * c.headDim;
      for (const threads of [1, 2]) {
        setThreads(threads);
        for (let t = 0; t < c.tokens; t++) {
          const one = run({ ...params, q: params.q.slice(t * width, (t + 1) * width), positions: params.positions.slice(t, t + 1), out: new Float32Array(width) });
          assert.deepEqual(one, batched.subarray(t * width, (t + 1) * width), `token ${t}, ${threads} thread(s)`);
        }
      }
    } finally {
      cache.dispose();
    }
  }
});

test('attentionWasm with GQA (a row = all query heads of a kv head) equals MHA over a cache with every kv head repeated, bit for bit', async () => {
  setMinChunkWork(64);
  // Long enough for several of the kernel's 32-position V blocks, odd sizes for the tails.
  for (const c of [
    { nHeads: 8, nKvHeads: 2, headDim: 128, kvDtype: 'f16' as const, past: 70, tokens: 3, seed: 600 },
    { nHeads: 6, nKvHeads: 2, headDim: 20, kvDtype: 'f32' as const, past: 40, tokens: 2, window: 33, seed: 601 },
    { nHeads: 4, nKvHeads: 1, headDim: 7, kvDtype: 'f16' as const, past: 65, tokens: 2, scoresDtype: 'f16' as const, seed: 602 },
  ]) {
    const { cache, params } = setup(c);
    const group = c.nHeads / c.nKvHeads;
    const length = params.length;
    const mha = new KvCache({ nLayers: 1, nKvHeads: c.nHeads, headDim: c.headDim, capacity: length, dtype: 'f32', storage: 'wasm' });
    try {
      // The repeated cache in f32 holds the f16 values exactly, so the MHA rows see the same K and V.
      const width = c.nHeads * c.headDim;
      const k = new Float32Array(length * width);
      const v = new Float32Array(length * width);
      for (let j = 0; j < length; j++) {
        for (let h = 0; h < c.nHeads; h++) {
          for (let d = 0; d < c.headDim; d++) {
            const from = Math.floor(h / group) * params.keys.headStride + j * c.headDim + d;
            k[(j * c.nHeads + h) * c.headDim + d] = decoded(params.keys, from);
            v[(j * c.nHeads + h) * c.headDim + d] = decoded(params.values, from);
          }
        }
      }
      mha.write(0, 0, length, k, v);
      mha.advance(length);
      for (const threads of [1, 2]) {
        setThreads(threads);
        if (threads > 1) await poolReady();
        const gqa = run(params);
        const size = c.tokens * c.nHeads * length;
        const record = { scores: new Float32Array(size), probs: new Float32Array(size) };
        const want = { scores: new Float32Array(size), probs: new Float32Array(size) };
        attentionWasm({ ...params, out: new Float32Array(gqa.length), record });
        const mhaParams = { ...params, keys: mha.keys(0), values: mha.values(0), nKvHeads: c.nHeads };
        assert.deepEqual(run(mhaParams), gqa, `${JSON.stringify(c)}, ${threads} thread(s)`);
        attentionWasm({ ...mhaParams, out: new Float32Array(gqa.length), record: want });
        assert.deepEqual(record, want, `record, ${JSON.stringify(c)}, ${threads} thread(s)`);
      }
    } finally {
      cache.dispose();
      mha.dispose();
    }
  }
});

test('attentionWasm takes q and out as heap views, delegates to the reference for JS-heap KV, and fills a record like the reference', () => {
  setThreads(1);
  const c = { nHeads: 4, nKvHeads: 2, headDim: 20, kvDtype: 'f16' as const, past: 10, tokens: 2, seed: 400 };
  const { cache, params } = setup(c);
  try {
    const expected = run(params);
    const heap = wasmHeap();
    const n = params.q.length;
    const qPtr = heap.alloc(n * 4);
    const outPtr = heap.alloc(n * 4);
    try {
      const q = heap.f32(qPtr, n);
      q.set(params.q);
      const out = heap.f32(outPtr, n).fill(0);
      attentionWasm({ ...params, q, out });
      assert.deepEqual(Float32Array.from(out), expected);
    } finally {
      heap.free(qPtr);
      heap.free(outPtr);
    }
    // KV on the JS heap: the reference's exact result.
    const jsKv = (kv: KvView): KvView => ({ ...kv, data: kv.data.slice() });
    const ref = new Float32Array(n);
    attention({ ...params, out: ref });
    assert.deepEqual(run({ ...params, keys: jsKv(params.keys), values: jsKv(params.values) }), ref);
    // record: the same output as without one; scores and probabilities where the reference puts
    // them (0 where a token does not attend), equal to it within f32 dot-product rounding.
    const size = c.tokens * c.nHeads * params.length;
    const record = { scores: new Float32Array(size).fill(NaN), probs: new Float32Array(size).fill(NaN) };
    const want = { scores: new Float32Array(size), probs: new Float32Array(size) };
    attention({ ...params, out: new Float32Array(n), record: want });
    const out = new Float32Array(n);
    attentionWasm({ ...params, out, record });
    assert.deepEqual(out, expected);
    for (let i = 0; i < size; i++) {
      assert.ok(Math.abs(record.scores[i]! - want.scores[i]!) <= 1e-5 * (1 + Math.abs(want.scores[i]!)), `score ${i}: ${record.scores[i]} vs ${want.scores[i]}`);
      assert.ok(Math.abs(record.probs[i]! - want.probs[i]!) <= 1e-5, `probability ${i}: ${record.probs[i]} vs ${want.probs[i]}`);
      if (want.probs[i] === 0) assert.equal(record.probs[i], 0);
    }
  } finally {
    cache.dispose();
  }
});

test('attentionWasm validates like the reference', () => {
  const { cache, params } = setup({ nHeads: 4, nKvHeads: 2, headDim: 12, kvDtype: 'f32', past: 2, tokens: 1, seed: 500 });
  try {
    const both = (p: Partial<AttentionParams>): void => {
      const q = { ...params, ...p };
      assert.equal(errorText(() => attentionWasm(q)), errorText(() => attention(q)));
    };
    both({ nKvHeads: 3 });
    both({ headDim: 0 });
    both({ out: new Float32Array(3) });
    both({ out: params.q.subarray(4) });
    both({ window: 0 });
    both({ positions: Int32Array.of(3) });
    both({ length: 9 });
  } finally {
    cache.dispose();
  }
});
