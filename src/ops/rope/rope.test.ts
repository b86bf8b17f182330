import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { type DType, roundTo, ulp } from '../../core/dtype.js';
import { HalfpipeError } from '../../core/errors.js';
import { type Allocator, jsAllocator, Tensor } from '../../core/tensor.js';
import { wasmAllocator } from '../../kernels/wasm/allocator.js';
import { pairErrorUlps, ropeAccuracyReport } from './accuracy.js';
import { ropeReference } from './reference.js';
import { ropeWasmAvailable } from './wasm.js';
import { Rope, type RopeLayout, type RopeMath, type RopePairing } from './rope.js';
import { type RopeScaling, ropeScaling } from './scaling.js';
import { uniform as xorshift } from '../../testing/helpers.js';

// ---- helpers -----------------------------------------------------------------------------------


/** Random q/k-like values in [-4, 4), a few binades wide, already representable in `dtype`. */
function randomValues(n: number, dtype: DType, seed: number): Float64Array {
  const r = xorshift(seed);
  return Float64Array.from({ length: n }, () => roundTo(dtype, (r() * 2 - 1) * 2 ** Math.floor(r() * 3)));
}

interface Dims {
  batch: number;
  seqLen: number;
  heads: number;
  headDim: number;
}

/**
 * A tensor in `layout` holding logical [b, s, h, d] values, with `pad` extra elements after each
 * head (so the head stride is not head_dim) and storage from `alloc`.
 */
function makeTensor(values: Float64Array, dims: Dims, layout: RopeLayout, dtype: DType, pad = 0, alloc: Allocator = jsAllocator): Tensor {
  const { batch, seqLen, heads, headDim } = dims;
  const physical = layout === 'bshd' ? [batch, seqLen, heads, headDim + pad] : layout === 'bhsd' ? [batch, heads, seqLen, headDim + pad] : [batch * seqLen, heads, headDim + pad];
  const t = Tensor.empty(physical, dtype, alloc).narrow(-1, 0, headDim);
  for (let b = 0; b < batch; b++)
    for (let s = 0; s < seqLen; s++)
      for (let h = 0; h < heads; h++)
        for (let d = 0; d < headDim; d++) {
          const idx = layout === 'bshd' ? [b, s, h, d] : layout === 'bhsd' ? [b, h, s, d] : [b * seqLen + s, h, d];
          t.set(idx, values[((b * seqLen + s) * heads + h) * headDim + d]!);
        }
  return t;
}

/** Logical [b, s, h, d] values of a tensor in `layout`, as float64. */
function logicalValues(t: Tensor, layout: RopeLayout): Float64Array {
  const bshd = layout === 'bshd' ? t : layout === 'bhsd' ? t.permute(0, 2, 1, 3) : t.unsqueeze(0);
  return bshd.toFloat64Array();
}

/** The raw bits of a tensor's elements in logical [b, s, h, d] order. */
function logicalBits(t: Tensor, layout: RopeLayout): number[] {
  const bshd = layout === 'bshd' ? t : layout === 'bhsd' ? t.permute(0, 2, 1, 3) : t.unsqueeze(0);
  const bits: number[] = [];
  bshd.forEachIndex((at) => bits.push(t.dtype === 'f32' ? new Uint32Array(Float32Array.of(t.data[at]!).buffer)[0]! : t.data[at]!));
  return bits;
}

/**
 * The float64 reference, written plainly: rotate pair i of each head by p * w_i, with cos and sin
 * times the attention factor m, all in float64 with float64 angles.
 */
function f64Rope(x: Float64Array, dims: Dims, positions: Int32Array, invFreq: Float64Array, m: number, pairing: RopePairing): Float64Array {
  const { batch, seqLen, heads, headDim } = dims;
  const half = invFreq.length;
  const y = Float64Array.from(x);
  for (let t = 0; t < batch * seqLen; t++) {
    for (let h = 0; h < heads; h++) {
      const at = (t * heads + h) * headDim;
      for (let i = 0; i < half; i++) {
        const angle = positions[t]! * invFreq[i]!;
        const c = m * Math.cos(angle);
        const s = m * Math.sin(angle);
        const [j1, j2] = pairing === 'neox' ? [i, i + half] : [2 * i, 2 * i + 1];
        y[at + j1] = x[at + j1]! * c - x[at + j2]! * s;
        y[at + j2] = x[at + j2]! * c + x[at + j1]! * s;
      }
    }
  }
  return y;
}

/** Worst error per rotated pair in ulps, and a check that the pass-through dims are untouched. */
function worstPairError(got: Float64Array, want: Float64Array, x: Float64Array, dims: Dims, rotaryDim: number, pairing: RopePairing, dtype: DType): number {
  const half = rotaryDim / 2;
  let worst = 0;
  for (let at = 0; at < got.length; at += dims.headDim) {
    for (let i = 0; i < half; i++) {
      const [j1, j2] = pairing === 'neox' ? [i, i + half] : [2 * i, 2 * i + 1];
      worst = Math.max(worst, pairErrorUlps(dtype, got[at + j1]!, got[at + j2]!, want[at + j1]!, want[at + j2]!));
    }
    for (let j = rotaryDim; j < dims.headDim; j++) assert.equal(got[at + j], x[at + j], 'pass-through dim changed');
  }
  return worst;
}

type ScalingName = 'default' | 'linear' | 'dynamic' | 'yarn' | 'llama3' | 'longrope';
const SCALINGS: ScalingName[] = ['default', 'linear', 'dynamic', 'yarn', 'llama3', 'longrope'];

function makeScaling(name: ScalingName, headDim: number, rotaryDim: number, base: number): RopeScaling {
  const half = rotaryDim / 2;
  const scaling: Record<ScalingName, Record<string, unknown> | undefined> = {
    default: undefined,
    linear: { rope_type: 'linear', factor: 4 },
    dynamic: { rope_type: 'dynamic', factor: 2 },
    yarn: { rope_type: 'yarn', factor: 4, original_max_position_embeddings: 4096 },
    llama3: { rope_type: 'llama3', factor: 8, low_freq_factor: 1, high_freq_factor: 4, original_max_position_embeddings: 8192 },
    longrope: {
      rope_type: 'longrope',
      short_factor: Array.from({ length: half }, (_, i) => 1 + i / half),
      long_factor: Array.from({ length: half }, (_, i) => 1 + (8 * i) / half),
      original_max_position_embeddings: 4096,
    },
  };
  const maxPositionEmbeddings = name === 'longrope' ? 131072 : name === 'yarn' ? 16384 : 4096;
  return ropeScaling({ headDim, rotaryDim, base, maxPositionEmbeddings, scaling: scaling[name] });
}

interface AccuracyCase {
  headDim: number;
  base: number;
  dtype: DType;
  pairing: RopePairing;
  partial: boolean;
  scaling: ScalingName;
  positions: number[];
  seed: number;
}

/** Runs the fused kernel on one case and returns its worst error per pair against float64. */
function fusedError(c: AccuracyCase, alloc: Allocator = jsAllocator): number {
  const rotaryDim = c.partial ? c.headDim / 2 : c.headDim;
  const rope = new Rope({ scaling: makeScaling(c.scaling, c.headDim, rotaryDim, c.base), pairing: c.pairing });
  const positions = Int32Array.from(c.positions);
  const qDims = { batch: 1, seqLen: positions.length, heads: 2, headDim: c.headDim };
  const kDims = { ...qDims, heads: 1 };
  const xq = randomValues(positions.length * 2 * c.headDim, c.dtype, c.seed);
  const xk = randomValues(positions.length * c.headDim, c.dtype, c.seed + 1);
  const q = makeTensor(xq, qDims, 'bshd', c.dtype, 0, alloc);
  const k = makeTensor(xk, kDims, 'bshd', c.dtype, 0, alloc);
  assert.equal(ropeWasmAvailable(rope.plan({ q, k, positions, layout: 'bshd' })), alloc === wasmAllocator, 'kernel choice');
  rope.fused({ q, k, positions, layout: 'bshd' });
  const { invFreq, attentionFactor } = rope.frequencies(Math.max(...c.positions) + 1);
  const eq = worstPairError(logicalValues(q, 'bshd'), f64Rope(xq, qDims, positions, invFreq, attentionFactor, c.pairing), xq, qDims, rotaryDim, c.pairing, c.dtype);
  const ek = worstPairError(logicalValues(k, 'bshd'), f64Rope(xk, kDims, positions, invFreq, attentionFactor, c.pairing), xk, kDims, rotaryDim, c.pairing, c.dtype);
  return Math.max(eq, ek);
}

const BOUND = 0.75;
const DTYPE_LIST: DType[] = ['f16', 'bf16', 'f32'];

// ---- accuracy ----------------------------------------------------------------------------------

test('accuracy: every scaling type, dtype and pairing stays within 0.75 ulp up to position 2^24', () => {
  const positions = [0, 1, 17, 4095, 4096, 70001, 2 ** 17, 2 ** 20 + 3, 2 ** 23 + 12345, 2 ** 24 - 1, 2 ** 24];
  let seed = 1;
  for (const scaling of SCALINGS)
    for (const dtype of DTYPE_LIST)
      for (const pairing of ['neox', 'gptj'] as const)
        for (const partial of [false, true]) {
          const c = { headDim: 128, base: 1e4, dtype, pairing, partial, scaling, positions, seed: seed++ };
          const err = fusedError(c);
          assert.ok(err <= BOUND, `${JSON.stringify({ ...c, positions: undefined })}: ${err.toFixed(3)} ulp`);
        }
});

test('accuracy (property): random head dims, bases, scalings and log-uniform positions to 2^24', () => {
  fc.assert(
    fc.property(
      fc.record({
        headDim: fc.constantFrom(64, 80, 96, 128, 256),
        base: fc.constantFrom(1e4, 5e5, 1e6),
        dtype: fc.constantFrom<DType>('f16', 'bf16', 'f32'),
        pairing: fc.constantFrom<RopePairing>('neox', 'gptj'),
        partial: fc.boolean(),
        scaling: fc.constantFrom(...SCALINGS),
        positions: fc.array(fc.double({ min: 0, max: 24, noNaN: true }).map((l) => Math.floor(2 ** l)), { minLength: 1, maxLength: 6 }),
        seed: fc.integer({ min: 1, max: 2 ** 30 }),
      }),
      (c) => fusedError(c) <= BOUND,
    ),
    { numRuns: 250, seed: 20261129 },
  );
});

test('accuracy holds on the WASM path too (tensors in the wasm heap)', () => {
  let seed = 100;
  for (const dtype of DTYPE_LIST)
    for (const pairing of ['neox', 'gptj'] as const)
      for (const headDim of [64, 80, 128]) {
        const c = { headDim, base: 5e5, dtype, pairing, partial: headDim === 80, scaling: 'yarn' as const, positions: [3, 2 ** 17, 2 ** 22 + 1, 2 ** 24 - 1], seed: seed++ };
        const err = fusedError(c, wasmAllocator);
        assert.ok(err <= BOUND, `${dtype} ${pairing} ${headDim}: ${err.toFixed(3)} ulp`);
      }
});

test('the bound can fail: storage-dtype arithmetic and the ggml angle exceed it at 2^17 (f16)', () => {
  const [row] = ropeAccuracyReport({ dtype: 'f16', minLog2: 17, maxLog2: 17, samples: 8 });
  assert.ok(row!.worstUlps.halfpipe <= BOUND, `halfpipe ${row!.worstUlps.halfpipe}`);
  assert.ok(row!.worstUlps['storage-dtype'] > 5, `storage-dtype ${row!.worstUlps['storage-dtype']}`);
  assert.ok(row!.worstUlps.ggml > 5, `ggml ${row!.worstUlps.ggml}`);
  // and the metric itself: a one-ulp error in one component of a unit pair reads as one ulp
  assert.equal(pairErrorUlps('f16', 1 + 2 ** -10, 0, 1, 0), 1);
});

test("hf-compatible angles are float32 position x float32 w, as HF computes them", () => {
  const scaling = ropeScaling({ headDim: 64, base: 1e4 });
  const rope = new Rope({ scaling, angles: 'hf-compatible' });
  const positions = Int32Array.of(5, 2 ** 20 + 7, 2 ** 24 - 3);
  const dims = { batch: 1, seqLen: 3, heads: 1, headDim: 64 };
  const x = randomValues(3 * 64, 'f32', 9);
  const q = makeTensor(x, dims, 'thd', 'f32');
  const k = makeTensor(x, dims, 'thd', 'f32');
  rope.fused({ q, k, positions, layout: 'thd' });
  const w = scaling.frequencies(1).invFreq;
  // The same rotation in float64 but with HF's float32 angles.
  const y = Float64Array.from(x);
  for (let t = 0; t < 3; t++)
    for (let i = 0; i < 32; i++) {
      const angle = Math.fround(Math.fround(positions[t]!) * Math.fround(w[i]!));
      const [at, c, s] = [t * 64, Math.cos(angle), Math.sin(angle)];
      y[at + i] = x[at + i]! * c - x[at + i + 32]! * s;
      y[at + i + 32] = x[at + i + 32]! * c + x[at + i]! * s;
    }
  assert.ok(worstPairError(logicalValues(q, 'thd'), y, x, dims, 64, 'neox', 'f32') <= BOUND);
  // ...which differs from the exact angles by many ulps at large positions.
  const exact = f64Rope(x, dims, positions, w, 1, 'neox');
  assert.ok(worstPairError(logicalValues(q, 'thd'), exact, x, dims, 64, 'neox', 'f32') > 1000);
});

// ---- fused vs reference ------------------------------------------------------------------------

interface LayoutCase {
  layout: RopeLayout;
  dtype: DType;
  pairing: RopePairing;
  math: RopeMath;
  inPlace: boolean;
  pad: number;
  alloc: Allocator;
}

function compareFusedWithReference(c: LayoutCase, dims: { batch: number; seqLen: number; qHeads: number; kHeads: number; headDim: number; rotaryDim: number }, positions: Int32Array, seed: number): void {
  const { batch, seqLen, headDim } = dims;
  const rope = new Rope({ scaling: ropeScaling({ headDim, rotaryDim: dims.rotaryDim, base: 1e4 }), pairing: c.pairing });
  const qDims = { batch, seqLen, heads: dims.qHeads, headDim };
  const kDims = { batch, seqLen, heads: dims.kHeads, headDim };
  if (c.layout === 'thd' && batch !== 1) return;
  const xq = randomValues(batch * seqLen * dims.qHeads * headDim, c.dtype, seed);
  const xk = randomValues(batch * seqLen * dims.kHeads * headDim, c.dtype, seed + 7);
  const run = (impl: 'fused' | 'reference', alloc: Allocator) => {
    const q = makeTensor(xq, qDims, c.layout, c.dtype, c.pad, alloc);
    const k = makeTensor(xk, kDims, c.layout, c.dtype, c.pad, alloc);
    const out = c.inPlace ? undefined : { q: makeTensor(new Float64Array(xq.length), qDims, c.layout, c.dtype, c.pad + 1, alloc), k: makeTensor(new Float64Array(xk.length), kDims, c.layout, c.dtype, 0, alloc) };
    const inputs = { q, k, positions, layout: c.layout, math: c.math, ...(out ? { out } : {}) };
    if (impl === 'fused') assert.equal(ropeWasmAvailable(rope.plan(inputs)), alloc === wasmAllocator, 'kernel choice');
    const res = impl === 'fused' ? rope.fused(inputs) : ropeReference(rope, inputs);
    if (c.inPlace) assert.ok(res.q === q && res.k === k);
    return [logicalBits(res.q, c.layout), logicalBits(res.k, c.layout)];
  };
  const fused = run('fused', c.alloc);
  const reference = run('reference', jsAllocator);
  assert.deepEqual(fused[0], reference[0], `q differs: ${JSON.stringify({ ...c, alloc: c.alloc === jsAllocator ? 'js' : 'wasm' })}`);
  assert.deepEqual(fused[1], reference[1], `k differs: ${JSON.stringify({ ...c, alloc: c.alloc === jsAllocator ? 'js' : 'wasm' })}`);
}

test('fused matches the reference bit for bit across layouts, strides, GQA, in place and out of place', () => {
  let seed = 1;
  const positions = Int32Array.from({ length: 2 * 5 }, (_, t) => (t < 5 ? t : 1000 + t)); // two sequences, different offsets
  for (const layout of ['bshd', 'bhsd', 'thd'] as const)
    for (const dtype of DTYPE_LIST)
      for (const pairing of ['neox', 'gptj'] as const)
        for (const math of ['f32', 'f64'] as const)
          for (const inPlace of [false, true])
            for (const alloc of [jsAllocator, wasmAllocator]) {
              const c = { layout, dtype, pairing, math, inPlace, pad: seed % 3 === 0 ? 0 : 8, alloc };
              const thd = layout === 'thd';
              const dims = { batch: thd ? 1 : 2, seqLen: thd ? 10 : 5, qHeads: 4, kHeads: seed % 2 ? 2 : 1, headDim: 80, rotaryDim: seed % 4 === 0 ? 40 : 80 };
              compareFusedWithReference(c, dims, thd ? Int32Array.from(positions) : positions, seed++);
            }
});

test('fused matches the reference on a LLaVA-shaped prompt: text, a 576-token image, text', () => {
  // 5 text tokens, 576 image tokens at consecutive positions, 7 more text tokens.
  const positions = Int32Array.from({ length: 5 + 576 + 7 }, (_, t) => t);
  const dims = { batch: 1, seqLen: positions.length, qHeads: 4, kHeads: 1, headDim: 128, rotaryDim: 128 };
  for (const alloc of [jsAllocator, wasmAllocator]) {
    compareFusedWithReference({ layout: 'thd', dtype: 'f16', pairing: 'neox', math: 'f32', inPlace: true, pad: 0, alloc }, dims, positions, 576);
  }
});

test('the fused kernel accepts a head_dim axis that is not contiguous (strided loop)', () => {
  const rope = new Rope({ scaling: ropeScaling({ headDim: 8, base: 1e4 }) });
  const x = randomValues(3 * 2 * 8, 'f16', 3);
  // [d, s, h] storage, viewed as [1, s, h, d]: the head_dim stride is 6.
  const storage = Tensor.empty([8, 3, 2], 'f16');
  const q = storage.permute(1, 2, 0).unsqueeze(0);
  for (let s = 0; s < 3; s++) for (let h = 0; h < 2; h++) for (let d = 0; d < 8; d++) q.set([0, s, h, d], x[(s * 2 + h) * 8 + d]!);
  const k = makeTensor(x, { batch: 1, seqLen: 3, heads: 2, headDim: 8 }, 'bshd', 'f16');
  const positions = Int32Array.of(9, 10, 11);
  rope.fused({ q, k, positions, layout: 'bshd' });
  assert.deepEqual(logicalBits(q, 'bshd'), logicalBits(k, 'bshd'));
});

// ---- properties --------------------------------------------------------------------------------

/** Rotates one [1, 1, 1, d] f32 vector at position p (math f64) and returns it as float64. */
function rotated(rope: Rope, x: Float64Array, p: number): Float64Array {
  const t = Tensor.fromValues(x, [1, 1, 1, x.length], 'f32');
  rope.fused({ q: t, k: Tensor.fromValues(x, [1, 1, 1, x.length], 'f32'), positions: Int32Array.of(p), layout: 'bshd' });
  return t.toFloat64Array();
}

const dot = (a: Float64Array, b: Float64Array) => a.reduce((s, v, i) => s + v * b[i]!, 0);

test('property: <R(m)q, R(n)k> = <q, R(n-m)k> for m up to 2^20', () => {
  const rope = new Rope({ scaling: ropeScaling({ headDim: 64, base: 1e4 }) });
  fc.assert(
    fc.property(fc.integer({ min: 0, max: 2 ** 20 }), fc.integer({ min: 0, max: 4096 }), fc.integer({ min: 1, max: 2 ** 30 }), (m, delta, seed) => {
      const q = randomValues(64, 'f32', seed);
      const k = randomValues(64, 'f32', seed + 1);
      const lhs = dot(rotated(rope, q, m), rotated(rope, k, m + delta));
      const rhs = dot(q, rotated(rope, k, delta));
      const scale = Math.sqrt(dot(q, q) * dot(k, k));
      return Math.abs(lhs - rhs) <= 1e-6 * scale;
    }),
    { numRuns: 200, seed: 7 },
  );
});

test('property: the inverse rotation recovers x within 1 ulp, and norms are preserved times m', () => {
  fc.assert(
    fc.property(
      fc.constantFrom<DType>('f16', 'bf16', 'f32'),
      fc.constantFrom<ScalingName>('default', 'yarn', 'longrope'),
      fc.integer({ min: 0, max: 2 ** 24 - 1 }),
      fc.integer({ min: 1, max: 2 ** 30 }),
      (dtype, scalingName, p, seed) => {
        const rope = new Rope({ scaling: makeScaling(scalingName, 64, 64, 1e4) });
        const x = randomValues(64, dtype, seed);
        const t = Tensor.fromValues(x, [1, 1, 64], dtype);
        rope.fused({ q: t, k: Tensor.fromValues(x, [1, 1, 64], dtype), positions: Int32Array.of(p), layout: 'thd' });
        const y = t.toFloat64Array();
        const { invFreq, attentionFactor: m } = rope.frequencies(p + 1);
        for (let i = 0; i < 32; i++) {
          const angle = p * invFreq[i]!;
          const [c, s] = [Math.cos(angle) / m, Math.sin(angle) / m];
          // R(-angle) / m applied in float64
          const x1 = y[i]! * c + y[i + 32]! * s;
          const x2 = y[i + 32]! * c - y[i]! * s;
          if (pairErrorUlps(dtype, x1, x2, x[i]!, x[i + 32]!) > 1) return false;
          const normIn = Math.hypot(x[i]!, x[i + 32]!);
          const normOut = Math.hypot(y[i]!, y[i + 32]!);
          if (Math.abs(normOut - m * normIn) > BOUND * ulp(dtype, m * normIn)) return false;
        }
        return true;
      },
    ),
    { numRuns: 300, seed: 11 },
  );
});


// ---- validation --------------------------------------------------------------------------------

function errorCase(mutate: (c: { q: Tensor; k: Tensor; positions: Int32Array; out: { q: Tensor; k: Tensor } }) => void, pattern: RegExp, opts: { positionLimit?: number; scaling?: RopeScaling; outOnly?: boolean } = {}): void {
  const scaling = opts.scaling ?? ropeScaling({ headDim: 16, base: 1e4 });
  const rope = new Rope({ scaling, ...(opts.positionLimit ? { positionLimit: opts.positionLimit } : {}) });
  const c = {
    q: Tensor.fromValues(randomValues(2 * 3 * 4 * 16, 'f16', 1), [2, 3, 4, 16], 'f16'),
    k: Tensor.fromValues(randomValues(2 * 3 * 2 * 16, 'f16', 2), [2, 3, 2, 16], 'f16'),
    positions: Int32Array.from({ length: 6 }, (_, i) => i),
    out: { q: Tensor.empty([2, 3, 4, 16], 'f16'), k: Tensor.empty([2, 3, 2, 16], 'f16') },
  };
  mutate(c);
  const before = [c.q, c.k, c.out.q, c.out.k].map((t) => Array.from(t.data));
  for (const impl of ['fused', 'reference'] as const) {
    // A problem with the outputs only shows when outputs are given; other problems show either way.
    for (const out of opts.outOnly ? [c.out] : [c.out, undefined]) {
      const inputs = { q: c.q, k: c.k, positions: c.positions, layout: 'bshd' as const, ...(out ? { out } : {}) };
      assert.throws(
        () => (impl === 'fused' ? rope.fused(inputs) : ropeReference(rope, inputs)),
        (e: unknown) => e instanceof HalfpipeError && pattern.test(e.message) && !e.message.includes('\n'),
        `${impl} should reject with ${pattern}`,
      );
    }
  }
  // Nothing was written.
  assert.deepEqual([c.q, c.k, c.out.q, c.out.k].map((t) => Array.from(t.data)), before);
}

test('validation: every bad input gets a one-line error naming the problem, and nothing is written', () => {
  errorCase((c) => (c.positions = new Int32Array(5)), /positions has 5 entries for 6 tokens/);
  errorCase((c) => (c.positions[5] = -1), /position -1 at token 5 is outside \[0, 16777217\)/);
  errorCase((c) => (c.positions[3] = 4096), /position 4096 at token 3 is outside \[0, 4096\)/, { positionLimit: 4096 });
  errorCase((c) => (c.k = Tensor.empty([1, 3, 2, 16], 'f16')), /q has batch 2 .* k has batch 1/);
  errorCase((c) => (c.k = Tensor.empty([2, 3, 3, 16], 'f16')), /q heads \(4\) must be a multiple of k heads \(3\)/);
  errorCase((c) => (c.q = Tensor.empty([2, 3, 4, 32], 'f16')), /q has head_dim 32, configured 16/);
  errorCase((c) => (c.q = Tensor.empty([6, 4, 16], 'f16')), /q must have rank 4 for layout bshd/);
  errorCase((c) => (c.k = Tensor.empty([2, 3, 2, 16], 'bf16')), /q is f16 but k is bf16/);
  errorCase((c) => (c.out.q = Tensor.empty([2, 3, 4, 16], 'f32')), /out.q is f32, expected f16/, { outOnly: true });
  errorCase((c) => (c.out.k = Tensor.empty([2, 3, 1, 16], 'f16')), /out.k has shape \[2, 3, 1, 16\], expected \[2, 3, 2, 16\]/, { outOnly: true });
});

test('validation: an odd rotary dim and a non-finite table are rejected', () => {
  const base = ropeScaling({ headDim: 16, base: 1e4 });
  const odd: RopeScaling = { ...base, rotaryDim: 15, frequencies: base.frequencies.bind(base) };
  assert.throws(() => new Rope({ scaling: odd }), /rotary dim must be even and >= 2, got 15/);
  const broken: RopeScaling = { ...base, frequencies: () => ({ invFreq: new Float64Array(8).fill(NaN), attentionFactor: 1 }) };
  errorCase(() => {}, /non-finite cos\/sin table: inv_freq\[0\] = NaN/, { scaling: broken });
  const infinite: RopeScaling = { ...base, frequencies: () => ({ invFreq: base.frequencies(1).invFreq, attentionFactor: Infinity }) };
  errorCase(() => {}, /non-finite cos\/sin table: attention factor is Infinity/, { scaling: infinite });
  const overflowing: RopeScaling = { ...base, frequencies: () => ({ invFreq: new Float64Array(8).fill(1e308), attentionFactor: 1 }) };
  errorCase(() => {}, /non-finite cos\/sin table: inv_freq\[0\] = 1e\+308 at position 5/, { scaling: overflowing });
});

test('validation: an output that overlaps its input in another layout is rejected', () => {
  const rope = new Rope({ scaling: ropeScaling({ headDim: 16, base: 1e4 }) });
  const q = Tensor.fromValues(randomValues(4 * 4 * 16, 'f16', 5), [1, 4, 4, 16], 'f16');
  const k = Tensor.fromValues(randomValues(4 * 16, 'f16', 6), [1, 4, 1, 16], 'f16');
  const before = Array.from(q.data);
  const swapped = new Tensor('f16', q.data, [1, 4, 4, 16], [256, 16, 64, 1]);
  assert.throws(
    () => rope.fused({ q, k, positions: Int32Array.of(0, 1, 2, 3), layout: 'bshd', out: { q: swapped, k: Tensor.empty([1, 4, 1, 16], 'f16') } }),
    /out.q overlaps q without being the same view/,
  );
  assert.throws(() => rope.fused({ q, k: q.narrow(2, 0, 1), positions: Int32Array.of(0, 1, 2, 3), layout: 'bshd' }), /overlap/);
  assert.deepEqual(Array.from(q.data), before);
});
