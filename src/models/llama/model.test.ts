/**
 * LlamaModel against an independent float64 forward written plainly here (its own RMSNorm,
 * rotate-half RoPE with float64 angles from the config's frequencies, masked attention with
 * repeat_kv, SwiGLU; none of halfpipe's ops), on tiny random models.
 *
 * Error metric: rel = max |logit - reference| / max |reference| over every token's logits.
 * Bounds, with the worst error measured over these nine models and weight seeds 1-25:
 *   f32 weights                <= 1e-5   (measured 2.8e-7: f32 activations, each op rounded once)
 *   f16 weights                <= 5e-3   (measured 1.4e-3: each weight off by up to 2^-11 relative)
 *   bf16 weights               <= 4e-2   (measured 1.2e-2: each weight off by up to 2^-8 relative)
 *   f16 KV cache, f32 weights  <= 3e-3   (measured 8.8e-4: each K and V value off by up to 2^-11)
 *   GGUF-quantized weights     <= 1e-5   against the reference run on the dequantized weights
 * Each test prints its measured errors as a diagnostic.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import type { DType } from '../../core/dtype.js';
import { HalfpipeError } from '../../core/errors.js';
import { Tensor } from '../../core/tensor.js';
import { dequantizeToF32, quantize } from '../../formats/gguf/quants.js';
import type { RopeFrequencies } from '../../ops/rope/scaling.js';
import { type LlamaConfig, llamaConfigFromHf } from './config.js';
import { packForKernels, type Matrix } from '../../ops/linear.js';
import { decodeBatch, forwardBatch, LLAMA_PROBE_NAMES, LlamaModel, type LlamaModelOptions } from './model.js';
import type { LlamaWeights, QuantizedMatrix } from './weights.js';
import { uniform as xorshift } from '../../testing/helpers.js';

const F32_BOUND = 1e-5;
const F16_BOUND = 5e-3;
const BF16_BOUND = 4e-2;
const F16_CACHE_BOUND = 3e-3;

// ---- tiny random models --------------------------------------------------------------------------


/** Float64 weights: the "true" model. Matrices are (out, in) row-major. */
interface RefLayer {
  attnNorm: Float32Array;
  wq: Float64Array;
  wk: Float64Array;
  wv: Float64Array;
  wo: Float64Array;
  mlpNorm: Float32Array;
  wGate: Float64Array;
  wUp: Float64Array;
  wDown: Float64Array;
}
interface RefWeights {
  embed: Float64Array;
  layers: RefLayer[];
  finalNorm: Float32Array;
  output: Float64Array;
}

function randomWeights(c: LlamaConfig, seed: number): RefWeights {
  const r = xorshift(seed);
  // Uniform with variance 1/in, so activations stay O(1) through the layers.
  const mat = (rows: number, cols: number) => Float64Array.from({ length: rows * cols }, () => (r() * 2 - 1) * Math.sqrt(3 / cols));
  // Norm weights are Float32Array in the model, so the reference uses the same f32 values.
  const norm = () => Float32Array.from({ length: c.dim }, () => 0.8 + 0.4 * r());
  const qDim = c.nHeads * c.headDim;
  const kvDim = c.nKvHeads * c.headDim;
  const embed = Float64Array.from({ length: c.vocabSize * c.dim }, () => r() * 2 - 1);
  const layers = Array.from({ length: c.nLayers }, () => ({
    attnNorm: norm(),
    wq: mat(qDim, c.dim),
    wk: mat(kvDim, c.dim),
    wv: mat(kvDim, c.dim),
    wo: mat(c.dim, qDim),
    mlpNorm: norm(),
    wGate: mat(c.hiddenDim, c.dim),
    wUp: mat(c.hiddenDim, c.dim),
    wDown: mat(c.dim, c.hiddenDim),
  }));
  return { embed, layers, finalNorm: norm(), output: c.tiedEmbeddings ? embed : mat(c.vocabSize, c.dim) };
}

/** The model's weights: every matrix rounded once to `dtype`; the tied output is the embedding object. */
function modelWeights(c: LlamaConfig, w: RefWeights, dtype: DType): LlamaWeights {
  const t = (v: Float64Array, rows: number, cols: number) => Tensor.fromValues(v, [rows, cols], dtype);
  const qDim = c.nHeads * c.headDim;
  const kvDim = c.nKvHeads * c.headDim;
  const tokenEmbedding = t(w.embed, c.vocabSize, c.dim);
  return {
    tokenEmbedding,
    layers: w.layers.map((l) => ({
      attnNorm: l.attnNorm,
      wq: t(l.wq, qDim, c.dim),
      wk: t(l.wk, kvDim, c.dim),
      wv: t(l.wv, kvDim, c.dim),
      wo: t(l.wo, c.dim, qDim),
      mlpNorm: l.mlpNorm,
      wGate: t(l.wGate, c.hiddenDim, c.dim),
      wUp: t(l.wUp, c.hiddenDim, c.dim),
      wDown: t(l.wDown, c.dim, c.hiddenDim),
    })),
    finalNorm: w.finalNorm,
    output: c.tiedEmbeddings ? tokenEmbedding : t(w.output, c.vocabSize, c.dim),
  };
}

/** The weights as the WASM kernels read them: every matrix packed into the wasm heap, as loadModel does. */
function packedWeights(w: LlamaWeights): LlamaWeights {
  const pack = (m: Matrix) => packForKernels(m, 'wasm');
  return { ...w, layers: w.layers.map((l) => ({ ...l, wq: pack(l.wq), wk: pack(l.wk), wv: pack(l.wv), wo: pack(l.wo), wGate: pack(l.wGate), wUp: pack(l.wUp), wDown: pack(l.wDown) })), output: pack(w.output) };
}

// ---- the float64 reference forward -----------------------------------------------------------------

function matvec(w: Float64Array, x: ArrayLike<number>, rows: number, cols: number): Float64Array {
  const y = new Float64Array(rows);
  for (let o = 0; o < rows; o++) {
    let s = 0;
    for (let i = 0; i < cols; i++) s += w[o * cols + i]! * x[i]!;
    y[o] = s;
  }
  return y;
}

function refRmsNorm(x: Float64Array, weight: Float32Array, eps: number): Float64Array {
  const ms = x.reduce((s, v) => s + v * v, 0) / x.length;
  return x.map((v, i) => (v / Math.sqrt(ms + eps)) * weight[i]!);
}

/** HF's apply_rotary_pos_emb for one head: x * cos + rotate_half(x) * sin, cos/sin = cat(freqs, freqs). */
function rotateHalf(x: Float64Array, pos: number, f: RopeFrequencies): Float64Array {
  const d = x.length;
  const half = d / 2;
  const out = new Float64Array(d);
  for (let j = 0; j < d; j++) {
    const angle = pos * f.invFreq[j % half]!;
    const rot = j < half ? -x[j + half]! : x[j - half]!;
    out[j] = x[j]! * Math.cos(angle) * f.attentionFactor + rot * Math.sin(angle) * f.attentionFactor;
  }
  return out;
}

interface RefOptions {
  /** overrides the config's sliding window (null: none) */
  window?: number | null;
  /** overrides the config's frequencies */
  freqs?: RopeFrequencies;
}

/** Logits of every token (tokens x vocab), one forward over the whole sequence from position 0. */
function reference(c: LlamaConfig, w: RefWeights, tokens: number[], opts: RefOptions = {}): Float64Array {
  const { dim, nHeads, nKvHeads, headDim, hiddenDim, vocabSize, normEps } = c;
  const n = tokens.length;
  const freqs = opts.freqs ?? c.rope.frequencies(n);
  const window = opts.window === undefined ? c.slidingWindow : opts.window ?? undefined;
  const rep = nHeads / nKvHeads;
  let x = tokens.map((t) => w.embed.slice(t * dim, (t + 1) * dim));
  for (const l of w.layers) {
    const h = x.map((row) => refRmsNorm(row, l.attnNorm, normEps));
    const heads = (v: Float64Array, count: number) => Array.from({ length: count }, (_, i) => v.slice(i * headDim, (i + 1) * headDim));
    const q = h.map((row, p) => heads(matvec(l.wq, row, nHeads * headDim, dim), nHeads).map((hv) => rotateHalf(hv, p, freqs)));
    const k = h.map((row, p) => heads(matvec(l.wk, row, nKvHeads * headDim, dim), nKvHeads).map((hv) => rotateHalf(hv, p, freqs)));
    const v = h.map((row) => heads(matvec(l.wv, row, nKvHeads * headDim, dim), nKvHeads));
    x = x.map((row, p) => {
      const att = new Float64Array(nHeads * headDim);
      for (let hd = 0; hd < nHeads; hd++) {
        const g = Math.floor(hd / rep);
        // Causal mask, plus Mistral's window: key j visible when p - window < j <= p.
        const scores = k.map((kj, j) => (j <= p && (window === undefined || j > p - window) ? q[p]![hd]!.reduce((s, qv, d) => s + qv * kj[g]![d]!, 0) / Math.sqrt(headDim) : -Infinity));
        const mx = Math.max(...scores);
        const e = scores.map((s) => Math.exp(s - mx));
        const z = e.reduce((a, b) => a + b, 0);
        for (let d = 0; d < headDim; d++) att[hd * headDim + d] = e.reduce((s, wj, j) => s + (wj / z) * v[j]![g]![d]!, 0);
      }
      const o = matvec(l.wo, att, dim, nHeads * headDim);
      return row.map((xv, i) => xv + o[i]!);
    });
    x = x.map((row) => {
      const m = refRmsNorm(row, l.mlpNorm, normEps);
      const gate = matvec(l.wGate, m, hiddenDim, dim);
      const up = matvec(l.wUp, m, hiddenDim, dim);
      const act = gate.map((g, i) => (g / (1 + Math.exp(-g))) * up[i]!);
      const down = matvec(l.wDown, act, dim, hiddenDim);
      return row.map((xv, i) => xv + down[i]!);
    });
  }
  const logits = new Float64Array(n * vocabSize);
  x.forEach((row, p) => logits.set(matvec(w.output, refRmsNorm(row, w.finalNorm, normEps), vocabSize, dim), p * vocabSize));
  return logits;
}

function relErr(got: ArrayLike<number>, want: ArrayLike<number>): number {
  assert.equal(got.length, want.length);
  let diff = 0;
  let scale = 0;
  for (let i = 0; i < want.length; i++) {
    assert.ok(Number.isFinite(got[i]!), `logit ${i} is ${got[i]}`);
    diff = Math.max(diff, Math.abs(got[i]! - want[i]!));
    scale = Math.max(scale, Math.abs(want[i]!));
  }
  return diff / scale;
}

// ---- the configs -------------------------------------------------------------------------------

const base = {
  architectures: ['LlamaForCausalLM'],
  num_hidden_layers: 2,
  rms_norm_eps: 1e-5,
  max_position_embeddings: 64,
  bos_token_id: 1,
  eos_token_id: 2,
};
const scaled = { ...base, hidden_size: 64, intermediate_size: 96, num_attention_heads: 4, num_key_value_heads: 2, vocab_size: 48, rope_theta: 500 };

interface Case {
  name: string;
  hf: Record<string, unknown>;
  tokens: number;
  /** frequencies depend on the sequence length, so decode and a single pass legitimately differ */
  lengthDependent?: boolean;
  /** overrides the resolved context length (dynamic NTK exists to run past max_position_embeddings) */
  contextLength?: number;
}

const CASES: Case[] = [
  { name: 'llama MHA, untied', hf: { ...base, hidden_size: 32, intermediate_size: 64, num_attention_heads: 4, vocab_size: 40 }, tokens: 11 },
  { name: 'llama GQA, tied', hf: { ...base, hidden_size: 48, intermediate_size: 96, num_attention_heads: 6, num_key_value_heads: 2, vocab_size: 50, tie_word_embeddings: true }, tokens: 11 },
  { name: 'llama GQA, explicit head_dim != dim / heads', hf: { ...base, hidden_size: 32, intermediate_size: 48, num_attention_heads: 4, num_key_value_heads: 2, head_dim: 16, vocab_size: 40 }, tokens: 9 },
  { name: 'rope linear', hf: { ...scaled, rope_scaling: { rope_type: 'linear', factor: 4 } }, tokens: 12 },
  { name: 'rope dynamic (past max positions)', hf: { ...scaled, max_position_embeddings: 8, rope_scaling: { rope_type: 'dynamic', factor: 2 } }, tokens: 14, lengthDependent: true, contextLength: 32 },
  { name: 'rope yarn', hf: { ...scaled, max_position_embeddings: 32, rope_scaling: { rope_type: 'yarn', factor: 4, original_max_position_embeddings: 8 } }, tokens: 12 },
  { name: 'rope llama3', hf: { ...scaled, rope_scaling: { rope_type: 'llama3', factor: 8, low_freq_factor: 1, high_freq_factor: 4, original_max_position_embeddings: 8 } }, tokens: 12 },
  {
    name: 'rope longrope (long factors)',
    hf: { ...scaled, max_position_embeddings: 32, original_max_position_embeddings: 8, rope_scaling: { rope_type: 'longrope', short_factor: [1, 1.1, 1.3, 1.6, 2, 2.5, 3, 4], long_factor: [1, 1.5, 2, 3, 4, 6, 8, 12] } },
    tokens: 12,
    lengthDependent: true,
  },
  { name: 'mistral, sliding window 4 < 12 tokens', hf: { ...scaled, architectures: ['MistralForCausalLM'], sliding_window: 4 }, tokens: 12 },
];

function setup(k: Case, seed = 1) {
  const config = { ...llamaConfigFromHf(k.hf), ...(k.contextLength === undefined ? {} : { contextLength: k.contextLength }) };
  const ref = randomWeights(config, seed);
  const r = xorshift(seed + 1000);
  const tokens = Array.from({ length: k.tokens }, () => Math.floor(r() * config.vocabSize));
  return { config, ref, tokens };
}

function runModel(config: LlamaConfig, weights: LlamaWeights, tokens: number[], opts: LlamaModelOptions = {}): Float32Array {
  return new LlamaModel(config, weights, opts).newSession().forward(tokens, { allLogits: true });
}

// ---- accuracy against the reference -------------------------------------------------------------

for (const k of CASES) {
  test(`LlamaModel ${k.name}: f32 / f16 / bf16 weights and an f16 KV cache against the float64 reference`, (t) => {
    const { config, ref, tokens } = setup(k);
    const want = reference(config, ref, tokens);
    const errs: Record<string, number> = {};
    errs['f32'] = relErr(runModel(config, modelWeights(config, ref, 'f32'), tokens), want);
    errs['f16'] = relErr(runModel(config, modelWeights(config, ref, 'f16'), tokens), want);
    errs['bf16'] = relErr(runModel(config, modelWeights(config, ref, 'bf16'), tokens), want);
    errs['f16 cache'] = relErr(runModel(config, modelWeights(config, ref, 'f32'), tokens, { kvCache: 'f16' }), want);
    t.diagnostic(`relative error: ${Object.entries(errs).map(([n, e]) => `${n} ${e.toExponential(2)}`).join(', ')}`);
    assert.ok(errs['f32']! <= F32_BOUND, `f32 weights: ${errs['f32']}`);
    assert.ok(errs['f16']! <= F16_BOUND, `f16 weights: ${errs['f16']}`);
    assert.ok(errs['bf16']! <= BF16_BOUND, `bf16 weights: ${errs['bf16']}`);
    assert.ok(errs['f16 cache']! <= F16_CACHE_BOUND, `f16 KV cache: ${errs['f16 cache']}`);
  });
}

test('the reference is sensitive to what the cases exercise (so the comparisons above can fail)', () => {
  for (const k of CASES) {
    const { config, ref, tokens } = setup(k);
    const want = reference(config, ref, tokens);
    // A rope scaling type must change the logits compared with plain RoPE at the same base.
    if (config.rope.type !== 'default') {
      const plain = llamaConfigFromHf({ ...k.hf, rope_scaling: null }).rope.frequencies(tokens.length);
      assert.ok(relErr(reference(config, ref, tokens, { freqs: plain }), want) > 1e-3, `${k.name}: scaling has no effect`);
    }
    // The window must change the logits compared with full causal attention.
    if (config.slidingWindow !== undefined) {
      assert.ok(config.slidingWindow < tokens.length);
      assert.ok(relErr(reference(config, ref, tokens, { window: null }), want) > 1e-3, `${k.name}: window has no effect`);
    }
  }
  // The f32 bound is tight enough to catch a wrong eps or a missing attention scale factor.
  const { config, ref, tokens } = setup(CASES[0]!);
  const want = reference(config, ref, tokens);
  assert.ok(relErr(reference({ ...config, normEps: 1e-4 }, ref, tokens), want) > F32_BOUND);
});

test('quantized (GGUF) weights: logits match the float64 reference run on the dequantized weights', (t) => {
  const config = llamaConfigFromHf(scaled);
  const ref = randomWeights(config, 5);
  const { dim, hiddenDim, vocabSize } = config;
  const qDim = config.nHeads * config.headDim;
  const kvDim = config.nKvHeads * config.headDim;
  // Each matrix quantized; the reference gets exactly the values the blocks decode to.
  const deq: RefWeights = { ...ref, layers: [] };
  const quant = (v: Float64Array, rows: number, cols: number, type: QuantizedMatrix['type']): QuantizedMatrix => {
    const data = quantize(type, Float32Array.from(v));
    v.set(dequantizeToF32(type, data, rows * cols));
    return { kind: 'quantized', type, rows, cols, rowBytes: data.length / rows, data };
  };
  const copy = (v: Float64Array) => v.slice();
  deq.embed = copy(ref.embed);
  deq.output = copy(ref.output);
  const weights: LlamaWeights = {
    tokenEmbedding: quant(deq.embed, vocabSize, dim, 'Q8_0'),
    layers: ref.layers.map((l) => {
      const d = { ...l, wq: copy(l.wq), wk: copy(l.wk), wv: copy(l.wv), wo: copy(l.wo), wGate: copy(l.wGate), wUp: copy(l.wUp), wDown: copy(l.wDown) };
      deq.layers.push(d);
      return {
        attnNorm: l.attnNorm,
        wq: quant(d.wq, qDim, dim, 'Q4_0'),
        wk: quant(d.wk, kvDim, dim, 'Q4_1'),
        wv: quant(d.wv, kvDim, dim, 'Q5_0'),
        wo: quant(d.wo, dim, qDim, 'Q5_1'),
        mlpNorm: l.mlpNorm,
        wGate: quant(d.wGate, hiddenDim, dim, 'Q8_0'),
        wUp: quant(d.wUp, hiddenDim, dim, 'Q4_0'),
        wDown: quant(d.wDown, dim, hiddenDim, 'Q5_1'),
      };
    }),
    finalNorm: ref.finalNorm,
    output: quant(deq.output, vocabSize, dim, 'Q8_0'),
  };
  const tokens = [3, 17, 0, 41, 9, 9, 28, 12];
  const err = relErr(runModel(config, weights, tokens), reference(config, deq, tokens));
  t.diagnostic(`relative error: ${err.toExponential(2)}`);
  assert.ok(err <= F32_BOUND, `${err}`);
  // The quantization itself is visible against the unquantized model.
  assert.ok(relErr(reference(config, ref, tokens), reference(config, deq, tokens)) > 1e-3);
});

// ---- equivalences -------------------------------------------------------------------------------

for (const k of CASES) {
  test(`LlamaModel ${k.name}, WASM kernels and packed weights: f32 / f16 weights, f16 KV cache, safe-f16 against the float64 reference`, (t) => {
    const { config, ref, tokens } = setup(k);
    const want = reference(config, ref, tokens);
    const wasm = { kernels: 'wasm' as const };
    const errs: Record<string, number> = {};
    errs['f32'] = relErr(runModel(config, packedWeights(modelWeights(config, ref, 'f32')), tokens, wasm), want);
    errs['f16'] = relErr(runModel(config, packedWeights(modelWeights(config, ref, 'f16')), tokens, wasm), want);
    errs['f16 cache'] = relErr(runModel(config, packedWeights(modelWeights(config, ref, 'f32')), tokens, { ...wasm, kvCache: 'f16' }), want);
    errs['safe-f16'] = relErr(runModel(config, packedWeights(modelWeights(config, ref, 'f16')), tokens, { ...wasm, policy: 'safe-f16' }), want);
    t.diagnostic(`relative error: ${Object.entries(errs).map(([n, e]) => `${n} ${e.toExponential(2)}`).join(', ')}`);
    assert.ok(errs['f32']! <= F32_BOUND, `f32 weights: ${errs['f32']}`);
    assert.ok(errs['f16']! <= F16_BOUND, `f16 weights: ${errs['f16']}`);
    assert.ok(errs['f16 cache']! <= F16_CACHE_BOUND, `f16 KV cache: ${errs['f16 cache']}`);
    assert.ok(errs['safe-f16']! <= F16_BOUND, `safe-f16: ${errs['safe-f16']}`);
  });
}

test('safe-f16 with the WASM kernels rounds exactly as the reference ops do: same logits within f32 accumulation noise, same greedy tokens', () => {
  const { config, ref, tokens } = setup(CASES[1]!);
  const weights = modelWeights(config, ref, 'f16');
  const a = runModel(config, weights, tokens, { policy: 'safe-f16' });
  const b = runModel(config, packedWeights(weights), tokens, { policy: 'safe-f16', kernels: 'wasm' });
  assert.ok(relErr(b, Float64Array.from(a)) <= 2e-3, `relative difference ${relErr(b, Float64Array.from(a))}`);
});

test('decodeBatch: one pass over several sequences equals each one decoding alone, bit for bit', () => {
  for (const kernels of ['reference', 'wasm'] as const) {
    for (const k of CASES) {
      const { config, ref, tokens } = setup(k);
      const f32 = modelWeights(config, ref, 'f32');
      const model = new LlamaModel(config, kernels === 'wasm' ? packedWeights(f32) : f32, { kernels, kvCache: 'f16' });
      // Three sequences at different lengths (so different positions, cache sizes and windows).
      const prompts = [tokens.slice(0, 2), tokens.slice(1, 6), tokens.slice(3, 6)];
      const batched = prompts.map(() => model.newSession());
      const alone = prompts.map(() => model.newSession());
      prompts.forEach((p, i) => {
        batched[i]!.forward(p);
        alone[i]!.forward(p);
      });
      for (let step = 0; step < 3; step++) {
        const next = prompts.map((_, i) => tokens[(i * 5 + step) % tokens.length]!);
        const together = decodeBatch(batched, next);
        const apart = alone.map((session, i) => session.forward([next[i]!]));
        for (let i = 0; i < prompts.length; i++) assert.deepEqual(together[i], apart[i], `${kernels} ${k.name}: sequence ${i}, step ${step}`);
      }
      assert.deepEqual(batched.map((s) => s.length), alone.map((s) => s.length));
      for (const s of [...batched, ...alone]) s.dispose();
    }
  }
});

const usage = (pattern: RegExp) => (e: unknown) => e instanceof HalfpipeError && e.code === 'usage' && pattern.test(e.message) && !e.message.includes('\n');

test('forwardBatch: prompt chunks and decode tokens of several sequences in one pass equal each sequence alone, bit for bit', () => {
  for (const kernels of ['reference', 'wasm'] as const) {
    for (const k of CASES) {
      const { config, ref, tokens } = setup(k);
      const f32 = modelWeights(config, ref, 'f32');
      const model = new LlamaModel(config, kernels === 'wasm' ? packedWeights(f32) : f32, { kernels });
      // Rounds of (sequence, tokens appended): a prompt read in chunks beside others decoding.
      const ids = (from: number, to: number) => Array.from({ length: to - from }, (_, i) => tokens[(from + i) % tokens.length]!);
      const rounds = [
        [[0, ids(0, 4)], [1, ids(2, 3)]],
        [[0, ids(4, 5)], [1, ids(3, 9)], [2, ids(1, 3)]],
        [[2, ids(3, 4)], [0, ids(5, 7)], [1, ids(9, 10)]],
      ] as const;
      const batched = [0, 1, 2].map(() => model.newSession());
      const alone = [0, 1, 2].map(() => model.newSession());
      rounds.forEach((round, r) => {
        const together = forwardBatch(round.map(([i, ids]) => ({ session: batched[i]!, tokens: ids })));
        round.forEach(([i, ids], j) => assert.deepEqual(together[j], alone[i]!.forward(ids), `${kernels} ${k.name}: round ${r}, sequence ${i}`));
      });
      for (const s of [...batched, ...alone]) s.dispose();
    }
  }
});

test('decodeBatch errors are one-line usage errors before anything runs', () => {
  const { config, ref } = setup(CASES[0]!);
  const model = new LlamaModel(config, modelWeights(config, ref, 'f32'));
  const other = new LlamaModel(config, modelWeights(config, ref, 'f32'));
  const [a, b] = [model.newSession(), model.newSession()];
  a.forward([1, 2]);
  assert.throws(() => decodeBatch([a, b], [1]), usage(/2 sessions but 1 tokens/));
  assert.throws(() => decodeBatch([a, a], [1, 2]), usage(/appears twice/));
  assert.throws(() => decodeBatch([a, other.newSession()], [1, 2]), usage(/same model/));
  assert.throws(() => decodeBatch([a, b], [1, config.vocabSize]), usage(/outside the vocabulary/));
  assert.equal(a.length, 2);
  assert.equal(b.length, 0);
  assert.deepEqual(decodeBatch([], []), []);
});

test('chunked prefill == single pass == token-by-token decode, bit for bit', () => {
  for (const k of CASES) {
    const { config, ref, tokens } = setup(k);
    const weights = modelWeights(config, ref, 'f32');
    const single = runModel(config, weights, tokens, { prefillChunk: 64 });
    for (const chunk of [1, 3, 5]) assert.deepEqual(runModel(config, weights, tokens, { prefillChunk: chunk }), single, `${k.name}: prefillChunk ${chunk}`);
    // Last-token logits equal the last row of all logits.
    const last = new LlamaModel(config, weights, { prefillChunk: 4 }).newSession().forward(tokens);
    assert.deepEqual(last, single.subarray((tokens.length - 1) * config.vocabSize));
    if (k.lengthDependent) continue;
    // Decoding one token per call (a prompt of 3, then single tokens) gives the same rows.
    const session = new LlamaModel(config, weights).newSession();
    const rows = [session.forward(tokens.slice(0, 3), { allLogits: true })];
    for (let i = 3; i < tokens.length; i++) rows.push(session.forward([tokens[i]!]));
    assert.equal(session.length, tokens.length);
    const decoded = new Float32Array(single.length);
    let at = 0;
    for (const row of rows) {
      decoded.set(row, at);
      at += row.length;
    }
    assert.deepEqual(decoded, single, `${k.name}: decode`);
  }
});

test('chunked prefill == single pass for random chunk sizes and splits (property)', () => {
  const k = CASES[1]!;
  const { config, ref, tokens } = setup(k);
  const weights = modelWeights(config, ref, 'bf16');
  const want = runModel(config, weights, tokens);
  fc.assert(
    fc.property(fc.integer({ min: 1, max: 12 }), fc.integer({ min: 1, max: tokens.length - 1 }), (chunk, split) => {
      const session = new LlamaModel(config, weights, { prefillChunk: chunk }).newSession();
      const a = session.forward(tokens.slice(0, split), { allLogits: true });
      const b = session.forward(tokens.slice(split), { allLogits: true });
      assert.deepEqual(Float32Array.from([...a, ...b]), want);
    }),
    { numRuns: 25 },
  );
});

test("'gptj' pairing with GGUF-permuted Q/K rows == 'neox' with the rows as in HF", () => {
  for (const k of [CASES[1]!, CASES[6]!]) {
    const { config, ref, tokens } = setup(k);
    // convert_hf_to_gguf.py: w.reshape(heads, 2, headDim / 2, in).swapaxes(1, 2).reshape(w.shape)
    const permute = (w: Float64Array, heads: number): Float64Array => {
      const { headDim, dim } = config;
      const half = headDim / 2;
      const out = new Float64Array(w.length);
      for (let h = 0; h < heads; h++)
        for (let i = 0; i < half; i++)
          for (let j = 0; j < 2; j++) out.set(w.subarray((h * headDim + j * half + i) * dim, (h * headDim + j * half + i + 1) * dim), (h * headDim + 2 * i + j) * dim);
      return out;
    };
    const permuted: RefWeights = { ...ref, layers: ref.layers.map((l) => ({ ...l, wq: permute(l.wq, config.nHeads), wk: permute(l.wk, config.nKvHeads) })) };
    const neox = runModel(config, modelWeights(config, ref, 'f16'), tokens);
    const gptjConfig: LlamaConfig = { ...config, ropePairing: 'gptj' };
    const gptj = runModel(gptjConfig, modelWeights(config, permuted, 'f16'), tokens);
    // Same products and rotations, only the order of the q.k sums differs: float64 rounding.
    assert.ok(relErr(gptj, neox) <= 1e-6, `${k.name}: ${relErr(gptj, neox)}`);
    // The permutation matters: permuted rows under 'neox' pairing are a different model.
    assert.ok(relErr(runModel(config, modelWeights(config, permuted, 'f16'), tokens), neox) > 1e-3);
  }
});

test('determinism: two models and sessions give identical logits', () => {
  const { config, ref, tokens } = setup(CASES[8]!);
  const weights = modelWeights(config, ref, 'f16');
  assert.deepEqual(runModel(config, weights, tokens), runModel(config, weights, tokens));
  const model = new LlamaModel(config, weights);
  const [a, b] = [model.newSession(), model.newSession()];
  const la = a.forward(tokens.slice(0, 5));
  b.forward([tokens[0]!]);
  assert.deepEqual(a.forward(tokens.slice(5)), (b.truncate(0), b.forward(tokens.slice(0, 5)), b.forward(tokens.slice(5))));
  assert.equal(la.length, config.vocabSize);
});

test('truncate rewinds: re-running the dropped tokens reproduces the logits', () => {
  const { config, ref, tokens } = setup(CASES[2]!);
  const session = new LlamaModel(config, modelWeights(config, ref, 'f32'), { kvCache: 'f16' }).newSession();
  const all = session.forward(tokens, { allLogits: true });
  session.truncate(4);
  assert.equal(session.length, 4);
  const again = session.forward(tokens.slice(4), { allLogits: true });
  assert.deepEqual(again, all.subarray(4 * config.vocabSize));
  // A different continuation after rewinding matches a fresh session fed that sequence.
  session.truncate(2);
  const other = [...tokens.slice(0, 2), 5, 6, 7];
  const fresh = new LlamaModel(config, modelWeights(config, ref, 'f32'), { kvCache: 'f16' }).newSession().forward(other);
  assert.deepEqual(session.forward(other.slice(2)), fresh);
  assert.throws(() => session.truncate(6), /truncate\(6\): the cache holds 5 positions/);
});

// ---- errors -------------------------------------------------------------------------------------


test('bad token ids are one-line errors before anything runs', () => {
  const { config, ref } = setup(CASES[0]!);
  const session = new LlamaModel(config, modelWeights(config, ref, 'f32')).newSession();
  session.forward([3, 4]);
  for (const [tokens, msg] of [
    [[1, 40], /token id 40 at index 1 is outside the vocabulary \[0, 40\)/],
    [[-1], /token id -1 at index 0 is outside/],
    [[2, 3, 1.5], /token id 1.5 at index 2/],
    [[NaN], /token id NaN/],
    [[], /forward needs at least one token/],
  ] as [number[], RegExp][]) {
    assert.throws(() => session.forward(tokens), usage(msg));
    assert.equal(session.length, 2, 'nothing ran');
  }
});

test('overflowing the context is an error before anything runs', () => {
  const { config, ref, tokens } = setup(CASES[0]!);
  const small: LlamaConfig = { ...config, contextLength: 8 };
  const session = new LlamaModel(small, modelWeights(config, ref, 'f32'), { prefillChunk: 3 }).newSession();
  assert.throws(() => session.forward(tokens.slice(0, 9)), usage(/^prompt longer than the context \(9 > 8\)$/));
  assert.equal(session.length, 0);
  session.forward(tokens.slice(0, 6));
  assert.throws(() => session.forward(tokens.slice(0, 3)), usage(/^prompt longer than the context \(9 > 8\)$/));
  assert.equal(session.length, 6);
  session.forward(tokens.slice(0, 2));
  assert.equal(session.length, 8);
});

test('constructor errors: weights that do not fit the config, bad options', () => {
  const { config, ref } = setup(CASES[0]!);
  const weights = modelWeights(config, ref, 'f32');
  assert.throws(() => new LlamaModel({ ...config, hiddenDim: 65 }, weights), /layers\.0\.w_gate is f32 \[64, 32\], expected \(65, 32\)/);
  assert.throws(() => new LlamaModel(config, weights, { prefillChunk: 0 }), usage(/prefillChunk must be a positive integer/));
  assert.throws(() => new LlamaModel(config, weights, { kvCache: 'bf16' as 'f16' }), usage(/kvCache must be 'f32' or 'f16'/));
  assert.throws(() => llamaConfigFromHf({ ...CASES[0]!.hf, architectures: ['GPT2LMHeadModel'] }), /unsupported architecture "GPT2LMHeadModel" \(supported: LlamaForCausalLM, MistralForCausalLM\)/);
});

// ---- probes -------------------------------------------------------------------------------------

test('probe: every named op, in order, with its layer and shape; data views the live values', () => {
  const k = CASES[1]!;
  const { config, ref, tokens } = setup(k);
  const { dim, nHeads, nKvHeads, headDim, hiddenDim, vocabSize } = config;
  const seen: { name: string; layer: number; shape: readonly number[]; copy: Float32Array }[] = [];
  const model = new LlamaModel(config, modelWeights(config, ref, 'f32'), {
    prefillChunk: 4,
    probe: (name, layer, data, shape) => seen.push({ name, layer, shape, copy: data.slice() }),
  });
  const logits = model.newSession().forward(tokens.slice(0, 6));
  const perLayer = ['attn_norm', 'q', 'k', 'v', 'q_rope', 'k_rope', 'scores', 'probs', 'attn_out', 'o_proj', 'residual_1', 'mlp_norm', 'gate', 'up', 'act', 'down', 'residual_2'];
  const chunk = (m: number) => [
    ['embeddings', -1],
    ...[0, 1].flatMap((l) => perLayer.map((n) => [n, l])),
  ].map(([n, l]) => `${n}@${l}/${m}`);
  // Chunks of 4 and 2 tokens; the head runs on the last token only.
  const want = [...chunk(4), ...chunk(2), 'final_norm@-1/1', 'logits@-1/1'];
  assert.deepEqual(seen.map((s) => `${s.name}@${s.layer}/${s.shape[0]}`), want);
  for (const s of seen) {
    assert.ok((LLAMA_PROBE_NAMES as readonly string[]).includes(s.name));
    assert.equal(s.copy.length, s.shape.reduce((a, b) => a * b, 1), `${s.name} data matches its shape`);
  }
  const shapeOf = (name: string) => seen.find((s) => s.name === name)!.shape;
  assert.deepEqual(shapeOf('q'), [4, nHeads, headDim]);
  assert.deepEqual(shapeOf('k_rope'), [4, nKvHeads, headDim]);
  assert.deepEqual(shapeOf('act'), [4, hiddenDim]);
  // scores and probs are (tokens, heads, positions): causal, each probability row sums to 1.
  assert.deepEqual(shapeOf('scores'), [4, nHeads, 4]);
  const probs = seen.find((s) => s.name === 'probs')!.copy;
  for (let t = 0; t < 4; t++)
    for (let h = 0; h < nHeads; h++) {
      const row = probs.subarray((t * nHeads + h) * 4, (t * nHeads + h + 1) * 4);
      assert.ok(Math.abs(row.reduce((a, b) => a + b, 0) - 1) < 1e-6);
      for (let j = t + 1; j < 4; j++) assert.equal(row[j], 0, 'a token does not see later positions');
    }
  assert.deepEqual(shapeOf('residual_2'), [4, dim]);
  assert.deepEqual(shapeOf('logits'), [1, vocabSize]);
  assert.deepEqual(seen.at(-1)!.copy, logits);
  // q at position 0 is not rotated; at position 1 it is.
  const q = seen.find((s) => s.name === 'q')!.copy;
  const qRope = seen.find((s) => s.name === 'q_rope')!.copy;
  const width = nHeads * headDim;
  assert.deepEqual(qRope.subarray(0, width), q.subarray(0, width));
  assert.notDeepEqual(qRope.subarray(width, 2 * width), q.subarray(width, 2 * width));
  // A probe changes nothing.
  assert.deepEqual(new LlamaModel(config, modelWeights(config, ref, 'f32'), { prefillChunk: 4 }).newSession().forward(tokens.slice(0, 6)), logits);
});
