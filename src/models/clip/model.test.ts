/**
 * The CLIP vision tower and LLaVA projector against a float64 reference written plainly here
 * (its own convolution, LayerNorm, attention, quick_gelu and erf-GELU), on tiny random models;
 * the HF-name and GGUF-name loaders against each other through real files.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { encode, roundTo } from '../../core/dtype.js';
import { Tensor } from '../../core/tensor.js';
import { readGguf } from '../../formats/gguf/reader.js';
import type { GgufTypedValue } from '../../formats/gguf/types.js';
import { type GgufTensorInput, writeGguf } from '../../formats/gguf/writer.js';
import { loadTensor, readSafetensorsHeader, writeSafetensors } from '../../formats/safetensors.js';
import { isPacked } from '../../kernels/wasm/packed.js';
import { setThreads, threadCount } from '../../kernels/wasm/pool.js';
import { parsePolicy } from '../../precision/policy.js';
import { MatrixFinisher } from '../load.js';
import { type ClipVisionConfig, type FeatureStrategy, llavaVisionConfigFromGguf, llavaVisionConfigFromHf, type ProjectorConfig } from './config.js';
import { CLIP_PROBE_NAMES, type ClipProbeName, clipActivationDtype, ClipVisionModel, erf, LlavaProjector } from './model.js';
import { clipVisionWeightsFromGguf, clipVisionWeightsFromHf, projectorWeightsFromGguf, projectorWeightsFromHf, type TensorGetter } from './weights.js';

// ---- tiny random models ------------------------------------------------------------------------

/** xorshift32: deterministic uniform numbers in [0, 1). */
function rng(seed: number): () => number {
  let s = seed >>> 0 || 1;
  return () => {
    s ^= s << 13;
    s >>>= 0;
    s ^= s >>> 17;
    s ^= s << 5;
    s >>>= 0;
    return s / 2 ** 32;
  };
}

interface Named {
  shape: number[];
  data: Float64Array; // values exactly representable in f32
}

/** HF-named weights (relative to vision_model. / multi_modal_projector.), uniform random, f32-exact. */
function randomWeights(c: ClipVisionConfig, p: ProjectorConfig, seed: number): { vision: Map<string, Named>; projector: Map<string, Named> } {
  const r = rng(seed);
  const make = (shape: number[], scale: number, center = 0): Named => {
    const n = shape.reduce((a, b) => a * b, 1);
    const data = new Float64Array(n);
    for (let i = 0; i < n; i++) data[i] = Math.fround(center + scale * (2 * r() - 1));
    return { shape, data };
  };
  const { dim, hiddenDim, patchSize: ps } = c;
  const np = (c.imageSize / ps) ** 2;
  const v = new Map<string, Named>();
  v.set('embeddings.patch_embedding.weight', make([dim, 3, ps, ps], Math.sqrt(3 / (3 * ps * ps))));
  v.set('embeddings.class_embedding', make([dim], 1));
  v.set('embeddings.position_embedding.weight', make([np + 1, dim], 0.5));
  v.set('pre_layrnorm.weight', make([dim], 0.2, 1));
  v.set('pre_layrnorm.bias', make([dim], 0.1));
  for (let l = 0; l < c.nLayers; l++) {
    const at = `encoder.layers.${l}.`;
    for (const ln of ['layer_norm1', 'layer_norm2']) {
      v.set(`${at}${ln}.weight`, make([dim], 0.2, 1));
      v.set(`${at}${ln}.bias`, make([dim], 0.1));
    }
    for (const pr of ['q_proj', 'k_proj', 'v_proj', 'out_proj']) {
      v.set(`${at}self_attn.${pr}.weight`, make([dim, dim], Math.sqrt(3 / dim) * (pr === 'q_proj' || pr === 'k_proj' ? 2 : 1)));
      v.set(`${at}self_attn.${pr}.bias`, make([dim], 0.1));
    }
    v.set(`${at}mlp.fc1.weight`, make([hiddenDim, dim], Math.sqrt(3 / dim)));
    v.set(`${at}mlp.fc1.bias`, make([hiddenDim], 0.1));
    v.set(`${at}mlp.fc2.weight`, make([dim, hiddenDim], Math.sqrt(3 / hiddenDim)));
    v.set(`${at}mlp.fc2.bias`, make([dim], 0.1));
  }
  const pj = new Map<string, Named>();
  pj.set('linear_1.weight', make([p.hiddenDim, p.inDim], Math.sqrt(3 / p.inDim)));
  pj.set('linear_1.bias', make([p.hiddenDim], 0.1));
  pj.set('linear_2.weight', make([p.outDim, p.hiddenDim], Math.sqrt(3 / p.hiddenDim)));
  pj.set('linear_2.bias', make([p.outDim], 0.1));
  return { vision: v, projector: pj };
}

function randomPixels(size: number, seed: number): Float32Array {
  const r = rng(seed);
  return Float32Array.from({ length: 3 * size * size }, () => 4 * r() - 2);
}

/** A getter over named values as tensors of `dtype`, under `prefix`. */
function getterOf(maps: Array<[string, Map<string, Named>]>, dtype: 'f32' | 'f16'): TensorGetter {
  const all = new Map<string, Tensor>();
  for (const [prefix, m] of maps) for (const [name, t] of m) all.set(prefix + name, Tensor.fromValues(t.data, t.shape, dtype));
  return (name) => {
    const t = all.get(name);
    if (!t) throw new Error(`no tensor ${name}`);
    return t;
  };
}

// ---- the float64 reference ---------------------------------------------------------------------

type W = (name: string) => Float64Array;

function refLayerNorm(x: Float64Array[], w: Float64Array, b: Float64Array, eps: number): Float64Array[] {
  return x.map((row) => {
    const n = row.length;
    const mean = row.reduce((a, v) => a + v, 0) / n;
    const variance = row.reduce((a, v) => a + (v - mean) ** 2, 0) / n;
    return row.map((v, i) => ((v - mean) / Math.sqrt(variance + eps)) * w[i]! + b[i]!);
  });
}

/** y = x W^T + b with W (out, in) row-major. */
function refLinear(x: Float64Array[], w: Float64Array, b: Float64Array): Float64Array[] {
  const outF = b.length;
  return x.map((row) => {
    const inF = row.length;
    const y = new Float64Array(outF);
    for (let o = 0; o < outF; o++) {
      let s = b[o]!;
      for (let i = 0; i < inF; i++) s += row[i]! * w[o * inF + i]!;
      y[o] = s;
    }
    return y;
  });
}

/** erf from its Maclaurin series (alternating; fine to 1e-12 for |x| < 4) and +-1 beyond 6. */
function refErf(x: number): number {
  if (Math.abs(x) > 6) return Math.sign(x);
  let sum = 0;
  let pow = x; // x^(2n+1) / n!
  for (let n = 0; n < 150; n++) {
    sum += ((n % 2 === 0 ? 1 : -1) * pow) / (2 * n + 1);
    pow *= (x * x) / (n + 1);
  }
  return (2 / Math.sqrt(Math.PI)) * sum;
}

const refGelu = (x: number) => 0.5 * x * (1 + refErf(x / Math.SQRT2));
const refQuickGelu = (x: number) => x * (1 / (1 + Math.exp(-1.702 * x)));

/** hidden_states[0 .. nLayers] of the CLIP vision tower, each (N + 1, dim). */
function refHiddenStates(c: ClipVisionConfig, w: W, pixels: Float32Array): Float64Array[][] {
  const { dim, patchSize: ps, imageSize: size, nHeads, layerNormEps: eps } = c;
  const side = size / ps;
  const conv = w('embeddings.patch_embedding.weight'); // [dim, 3, ps, ps]
  const pix = (ch: number, y: number, x: number) => pixels[(ch * size + y) * size + x]!;
  const pos = w('embeddings.position_embedding.weight');
  const cls = w('embeddings.class_embedding');
  let x: Float64Array[] = [];
  x.push(cls.map((v, i) => v + pos[i]!));
  for (let py = 0; py < side; py++) {
    for (let px = 0; px < side; px++) {
      const row = new Float64Array(dim);
      for (let o = 0; o < dim; o++) {
        let s = 0;
        for (let ch = 0; ch < 3; ch++) for (let ky = 0; ky < ps; ky++) for (let kx = 0; kx < ps; kx++) s += conv[((o * 3 + ch) * ps + ky) * ps + kx]! * pix(ch, py * ps + ky, px * ps + kx);
        row[o] = s + pos[(1 + py * side + px) * dim + o]!;
      }
      x.push(row);
    }
  }
  x = refLayerNorm(x, w('pre_layrnorm.weight'), w('pre_layrnorm.bias'), eps);
  const states = [x];
  const hd = dim / nHeads;
  for (let l = 0; l < c.nLayers; l++) {
    const at = `encoder.layers.${l}.`;
    const n1 = refLayerNorm(x, w(`${at}layer_norm1.weight`), w(`${at}layer_norm1.bias`), eps);
    const q = refLinear(n1, w(`${at}self_attn.q_proj.weight`), w(`${at}self_attn.q_proj.bias`)).map((r) => r.map((v) => v * hd ** -0.5));
    const k = refLinear(n1, w(`${at}self_attn.k_proj.weight`), w(`${at}self_attn.k_proj.bias`));
    const v = refLinear(n1, w(`${at}self_attn.v_proj.weight`), w(`${at}self_attn.v_proj.bias`));
    const att = x.map(() => new Float64Array(dim));
    for (let h = 0; h < nHeads; h++) {
      for (let i = 0; i < x.length; i++) {
        const s = k.map((kj) => {
          let d = 0;
          for (let e = 0; e < hd; e++) d += q[i]![h * hd + e]! * kj[h * hd + e]!;
          return d;
        });
        const m = Math.max(...s);
        const ex = s.map((z) => Math.exp(z - m));
        const tot = ex.reduce((a, b) => a + b, 0);
        for (let j = 0; j < x.length; j++) for (let e = 0; e < hd; e++) att[i]![h * hd + e] += (ex[j]! / tot) * v[j]![h * hd + e]!;
      }
    }
    const o = refLinear(att, w(`${at}self_attn.out_proj.weight`), w(`${at}self_attn.out_proj.bias`));
    const h1 = x.map((r, i) => r.map((val, j) => val + o[i]![j]!));
    const n2 = refLayerNorm(h1, w(`${at}layer_norm2.weight`), w(`${at}layer_norm2.bias`), eps);
    const act = c.act === 'gelu' ? refGelu : refQuickGelu;
    const f1 = refLinear(n2, w(`${at}mlp.fc1.weight`), w(`${at}mlp.fc1.bias`)).map((r) => r.map(act));
    const f2 = refLinear(f1, w(`${at}mlp.fc2.weight`), w(`${at}mlp.fc2.bias`));
    x = h1.map((r, i) => r.map((val, j) => val + f2[i]![j]!));
    states.push(x);
  }
  return states;
}

/** LLaVA's feature selection: hidden_states[layers] concatenated on channels; CLS dropped under 'default'. */
function refFeatures(states: Float64Array[][], layers: number[], strategy: FeatureStrategy): Float64Array[] {
  const picked = layers.map((l) => states[l < 0 ? states.length + l : l]!);
  const rows = picked[0]!.map((_, r) => {
    const parts = picked.map((s) => s[r]!);
    const out = new Float64Array(parts.reduce((a, p) => a + p.length, 0));
    let off = 0;
    for (const p of parts) {
      out.set(p, off);
      off += p.length;
    }
    return out;
  });
  return strategy === 'default' ? rows.slice(1) : rows;
}

function refProject(features: Float64Array[], w: W): Float64Array[] {
  const h = refLinear(features, w('linear_1.weight'), w('linear_1.bias')).map((r) => r.map(refGelu));
  return refLinear(h, w('linear_2.weight'), w('linear_2.bias'));
}

/** max |a - b| / max |b|: the error relative to the output's scale. */
function relError(got: Float32Array, want: Float64Array[]): number {
  const flat = new Float64Array(want.reduce((a, r) => a + r.length, 0));
  let off = 0;
  for (const r of want) {
    flat.set(r, off);
    off += r.length;
  }
  assert.equal(got.length, flat.length, 'output size');
  let err = 0;
  let scale = 0;
  for (let i = 0; i < flat.length; i++) {
    assert.ok(Number.isFinite(got[i]!), `non-finite output at ${i}`);
    err = Math.max(err, Math.abs(got[i]! - flat[i]!));
    scale = Math.max(scale, Math.abs(flat[i]!));
  }
  return err / scale;
}

// ---- configs -----------------------------------------------------------------------------------

interface Case {
  name: string;
  vision: ClipVisionConfig;
  layers: number[];
  strategy: FeatureStrategy;
}

const SMALL: ClipVisionConfig = { imageSize: 28, patchSize: 14, channels: 3, dim: 32, hiddenDim: 64, nLayers: 2, nHeads: 4, layerNormEps: 1e-5, act: 'quick_gelu' };
const LARGER: ClipVisionConfig = { imageSize: 56, patchSize: 14, channels: 3, dim: 64, hiddenDim: 96, nLayers: 2, nHeads: 4, layerNormEps: 1e-5, act: 'gelu' };

const CASES: Case[] = [];
for (const vision of [SMALL, LARGER]) {
  for (const layers of [[-2], [-2, -1]]) {
    for (const strategy of ['default', 'full'] as const) {
      CASES.push({ name: `${vision.imageSize}px dim ${vision.dim} ${vision.act}, layers [${layers.join(', ')}], ${strategy}`, vision, layers, strategy });
    }
  }
}

function projectorFor(c: Case): ProjectorConfig {
  return { inDim: c.vision.dim * c.layers.length, hiddenDim: 48, outDim: 40, act: 'gelu' };
}

function weightFn(m: Map<string, Named>, round?: 'f16'): W {
  return (name) => {
    const t = m.get(name);
    if (!t) throw new Error(`reference: no weight ${name}`);
    return round ? t.data.map((v) => roundTo(round, v)) : t.data;
  };
}

// ---- tests -------------------------------------------------------------------------------------

describe('CLIP vision tower + LLaVA projector vs a float64 reference', () => {
  for (const [ci, c] of CASES.entries()) {
    it(`f32: ${c.name} within 1e-5 relative`, () => {
      const p = projectorFor(c);
      const { vision, projector } = randomWeights(c.vision, p, 100 + ci);
      const get = getterOf([['vision_tower.vision_model.', vision], ['multi_modal_projector.', projector]], 'f32');
      const model = new ClipVisionModel(c.vision, clipVisionWeightsFromHf(c.vision, get), { featureLayers: c.layers, strategy: c.strategy });
      const proj = new LlavaProjector(p, projectorWeightsFromHf(p, get));
      const pixels = randomPixels(c.vision.imageSize, 7 + ci);
      const feats = model.encode(pixels);
      const np = (c.vision.imageSize / c.vision.patchSize) ** 2;
      assert.equal(model.outputRows, c.strategy === 'full' ? np + 1 : np);
      assert.equal(model.outputDim, c.vision.dim * c.layers.length);
      const wantFeats = refFeatures(refHiddenStates(c.vision, weightFn(vision), pixels), c.layers, c.strategy);
      const fErr = relError(feats, wantFeats);
      assert.ok(fErr < 1e-5, `features: relative error ${fErr}`);
      const out = proj.project(feats, model.outputRows);
      const pErr = relError(out, refProject(wantFeats, weightFn(projector)));
      assert.ok(pErr < 1e-5, `projector: relative error ${pErr}`);
    });
  }

  // Measured over the 8 cases (these seeds), as max |error| / max |reference|: f32 <= 2.3e-7;
  // f16 weights under the f32 policy <= 1.6e-7 (f16 weights decode exactly, so this is the f32
  // error again, against a reference on the f16-rounded weights); naive-f16 (every activation, the
  // residual stream included, stored in f16) <= 2.7e-3 on the features (~5 f16 half-ulps, 2^-12 =
  // 2.4e-4, of the output's scale, after 2 layers) and <= 1.3e-3 end to end through the projector.
  // The bounds leave 3x headroom.
  const F16_FEATURE_BOUND = 8e-3;
  const F16_PROJECTOR_BOUND = 4e-3;
  for (const [ci, c] of CASES.entries()) {
    it(`f16 weights: ${c.name}: exact decode under f32, bounded under naive-f16`, () => {
      const p = projectorFor(c);
      const { vision, projector } = randomWeights(c.vision, p, 200 + ci);
      const get = getterOf([['vision_tower.vision_model.', vision], ['multi_modal_projector.', projector]], 'f16');
      const vw = clipVisionWeightsFromHf(c.vision, get);
      const pw = projectorWeightsFromHf(p, get);
      const pixels = randomPixels(c.vision.imageSize, 17 + ci);
      const wantFeats = refFeatures(refHiddenStates(c.vision, weightFn(vision, 'f16'), pixels), c.layers, c.strategy);
      const wantOut = refProject(wantFeats, weightFn(projector, 'f16'));

      const exact = new ClipVisionModel(c.vision, vw, { featureLayers: c.layers, strategy: c.strategy }).encode(pixels);
      assert.ok(relError(exact, wantFeats) < 1e-5, 'f16 weights, f32 activations');

      const opts = { featureLayers: c.layers, strategy: c.strategy, policy: 'naive-f16' };
      const feats = new ClipVisionModel(c.vision, vw, opts).encode(pixels);
      const fErr = relError(feats, wantFeats);
      assert.ok(fErr < F16_FEATURE_BOUND, `naive-f16 features: relative error ${fErr}`);
      assert.ok(fErr > 0, 'naive-f16 must actually round');
      const out = new LlavaProjector(p, pw, { policy: 'naive-f16' }).project(feats, feats.length / p.inDim);
      const pErr = relError(out, wantOut);
      assert.ok(pErr < F16_PROJECTOR_BOUND, `naive-f16 projector: relative error ${pErr}`);
      for (const v of out) assert.equal(v, roundTo('f16', v), 'projector output stored in f16');
    });
  }
});

describe('CLIP on the WASM kernels (packed weights + attentionWasm) vs the float64 reference', () => {
  // One more shape with more tokens (65, odd) and wider heads (headDim 32) than CASES.
  const WIDE: ClipVisionConfig = { imageSize: 112, patchSize: 14, channels: 3, dim: 64, hiddenDim: 160, nLayers: 2, nHeads: 2, layerNormEps: 1e-5, act: 'quick_gelu' };
  const cases: Case[] = [...CASES, { name: `112px dim 64 headDim 32, layers [-2, -1], full`, vision: WIDE, layers: [-2, -1], strategy: 'full' }];
  const threadsBefore = threadCount();
  after(() => setThreads(threadsBefore));

  // Bound. Every op but the matmuls and attention is the same TypeScript code under both kernels.
  // The packed matmul sums in f32 lanes: |err| <= (cp/4 + 4) 2^-24 sum|x W| (matmul-float.ts), at
  // most 152 * 2^-24 = 9.1e-6 of sum|x W| here (the patch conv, 588 columns), <= 44 * 2^-24 = 2.6e-6
  // for the other matrices (<= 160 columns). attentionWasm: (cnt + 3) 2^-24 + 2 Delta of
  // sum a|v|, cnt <= 65 keys and Delta = (headDim/4 + 8) 2^-24 scale max sum|q k| (attention.ts),
  // about 1e-5 relative on these shapes. Each is a worst case per op; the model's output
  // carries several such errors through two residual layers and their LayerNorms, so the bound
  // below allows 5x the largest per-op worst case (5e-5) on top of the 1e-5 the float64 path gets.
  // Measured over these 18 runs: features <= 8.5e-7, projector <= 6.9e-7, attention alone 5.6e-7
  // (max |error| / max |reference|), about 70x below the bound.
  const WASM_BOUND = 6e-5;
  for (const [ci, c] of cases.entries()) {
    for (const mats of ['f32', 'f16'] as const) {
      it(`${mats} weights: ${c.name}: within ${WASM_BOUND} relative, bit-identical on 1 and 2 threads`, () => {
        const p = projectorFor(c);
        const { vision, projector } = randomWeights(c.vision, p, 600 + ci);
        const get = getterOf([['vision_tower.vision_model.', vision], ['multi_modal_projector.', projector]], mats);
        const finisher = new MatrixFinisher('wasm', undefined, 1 << 20);
        let vw, pw;
        try {
          vw = clipVisionWeightsFromHf(c.vision, get, undefined, finisher);
          pw = projectorWeightsFromHf(p, get, undefined, finisher);
        } finally {
          finisher.done();
        }
        for (const m of [vw.patchEmbedding, vw.layers[0]!.wq, vw.layers[1]!.fc2, pw.linear1, pw.linear2]) assert.ok(isPacked(m), 'packed for the kernels');
        const model = new ClipVisionModel(c.vision, vw, { featureLayers: c.layers, strategy: c.strategy, kernels: 'wasm' });
        const proj = new LlavaProjector(p, pw, { kernels: 'wasm' });
        const pixels = randomPixels(c.vision.imageSize, 70 + ci);
        const round = mats === 'f16' ? 'f16' : undefined;
        const wantFeats = refFeatures(refHiddenStates(c.vision, weightFn(vision, round), pixels), c.layers, c.strategy);
        const wantOut = refProject(wantFeats, weightFn(projector, round));

        setThreads(1);
        const feats = model.encode(pixels);
        const out = proj.project(feats, model.outputRows);
        const fErr = relError(feats, wantFeats);
        assert.ok(fErr < WASM_BOUND, `features: relative error ${fErr}`);
        const pErr = relError(out, wantOut);
        assert.ok(pErr < WASM_BOUND, `projector: relative error ${pErr}`);
        // Rows split over threads: every row is computed whole by one thread, so nothing changes.
        setThreads(2);
        assert.deepEqual(model.encode(pixels), feats);
        assert.deepEqual(proj.project(feats, model.outputRows), out);
        setThreads(threadsBefore);
        // The WASM path really is another computation than the float64 one (f32 sums).
        const refModel = new ClipVisionModel(c.vision, clipVisionWeightsFromHf(c.vision, get), { featureLayers: c.layers, strategy: c.strategy });
        assert.equal(refModel.kernels, 'reference', 'direct construction defaults to the reference kernels');
        assert.ok(relError(refModel.encode(pixels), wantFeats) < 1e-5);
      });
    }
  }

  it('attention alone: unpacked weights, wasm attention vs the reference loops; withOptions keeps the kernels', () => {
    const c = cases[cases.length - 1]!;
    const p = projectorFor(c);
    const { vision } = randomWeights(c.vision, p, 650);
    const get = getterOf([['vision_tower.vision_model.', vision]], 'f32');
    const vw = clipVisionWeightsFromHf(c.vision, get);
    const pixels = randomPixels(c.vision.imageSize, 651);
    const wasm = new ClipVisionModel(c.vision, vw, { featureLayers: c.layers, strategy: c.strategy, kernels: 'wasm' });
    const ref = new ClipVisionModel(c.vision, vw, { featureLayers: c.layers, strategy: c.strategy });
    const want = refFeatures(refHiddenStates(c.vision, weightFn(vision), pixels), c.layers, c.strategy);
    const a = wasm.encode(pixels);
    const b = ref.encode(pixels);
    assert.notDeepEqual(a, b, 'the attention kernel sums in f32: some output differs in the last bits');
    assert.ok(relError(a, want) < WASM_BOUND, `relative error ${relError(a, want)}`);
    assert.equal(wasm.withOptions({ policy: 'f32' }).kernels, 'wasm');
    assert.deepEqual(wasm.withOptions({ probe: () => {} }).encode(pixels), a);
    assert.throws(() => new ClipVisionModel(c.vision, vw, { kernels: 'gpu' as never }), /kernels must be/);
  });
});

describe('CLIP precision policy and probes', () => {
  const c = CASES[2]!; // 28 px, layers [-2, -1], default: runs both layers
  const p = projectorFor(c);
  const { vision, projector } = randomWeights(c.vision, p, 300);
  const get = getterOf([['vision_tower.vision_model.', vision], ['multi_modal_projector.', projector]], 'f32');
  const vw = clipVisionWeightsFromHf(c.vision, get);
  const pw = projectorWeightsFromHf(p, get);
  const pixels = randomPixels(c.vision.imageSize, 3);

  it('emits every op once per layer, in forward order, with shapes', () => {
    const seen: string[] = [];
    const n = 5;
    const probe = (name: ClipProbeName, layer: number, data: Float32Array, shape: readonly number[]) => {
      seen.push(`${name}@${layer}`);
      assert.equal(data.length, shape.reduce((a, b) => a * b, 1), `${name} shape`);
      assert.equal(shape[0], name.startsWith('projector.') ? 4 : n);
    };
    const feats = new ClipVisionModel(c.vision, vw, { featureLayers: c.layers, strategy: c.strategy, probe }).encode(pixels);
    new LlavaProjector(p, pw, { probe }).project(feats, 4);
    const layerOps = CLIP_PROBE_NAMES.filter((x) => x.startsWith('vision.') && x !== 'vision.embeddings' && x !== 'vision.pre_ln');
    const want = [
      'vision.embeddings@-1',
      'vision.pre_ln@-1',
      ...[0, 1].flatMap((l) => layerOps.map((op) => `${op}@${l}`)),
      'projector.linear_1@-1',
      'projector.act@-1',
      'projector.linear_2@-1',
    ];
    assert.deepEqual(seen, want);
  });

  it('runs only the layers up to the deepest feature layer', () => {
    const layers = new Set<number>();
    new ClipVisionModel(c.vision, vw, { featureLayers: [-3], probe: (_n, l) => layers.add(l) }).encode(pixels);
    assert.deepEqual([...layers], [-1]); // hidden_states[0]: embeddings and pre_ln only
  });

  it('safe-f16 keeps the vision side f32; naive-f16 and overrides reach it', () => {
    const safe = parsePolicy('safe-f16');
    for (const name of CLIP_PROBE_NAMES) for (const l of [-1, 0, 5]) assert.equal(clipActivationDtype(safe, name, l), 'f32', `${name}@${l}`);
    const naive = parsePolicy('naive-f16');
    assert.equal(clipActivationDtype(naive, 'vision.q', 0), 'f16');
    assert.equal(clipActivationDtype(naive, 'vision.residual_2', 1), 'f16');
    const opted = parsePolicy('safe-f16,vision.layers.*.q=f16,projector.*=bf16');
    assert.equal(clipActivationDtype(opted, 'vision.q', 3), 'f16');
    assert.equal(clipActivationDtype(opted, 'vision.k', 3), 'f32');
    assert.equal(clipActivationDtype(opted, 'projector.act', -1), 'bf16');
    const upcast = parsePolicy('naive-f16,vision.layers.*.fc2=f32');
    assert.equal(clipActivationDtype(upcast, 'vision.fc2', 1), 'f32');
    assert.equal(clipActivationDtype(upcast, 'vision.fc1', 1), 'f16');
    // The text model's patterns do not leak into the vision side.
    assert.equal(clipActivationDtype(parsePolicy('naive-f16,layers.*.*=f32'), 'vision.q', 0), 'f16');
  });

  it('probe context reports the storage dtype and the rounding', () => {
    const dtypes = new Map<string, string>();
    new ClipVisionModel(c.vision, vw, {
      featureLayers: [-1],
      policy: 'naive-f16',
      probe: (name, _l, data, _s, ctx) => {
        dtypes.set(name, ctx.dtype);
        assert.equal(ctx.firstToken, 0);
        assert.ok(ctx.f32Absmax !== undefined && ctx.f32Absmax > 0);
        for (const v of data) assert.equal(v, roundTo('f16', v), `${name} stored in f16`);
      },
    }).encode(pixels);
    assert.equal(dtypes.size, 14);
    for (const d of dtypes.values()) assert.equal(d, 'f16');
  });

  it('rejects wrong pixel counts and bad feature layers', () => {
    const m = new ClipVisionModel(c.vision, vw);
    assert.throws(() => m.encode(new Float32Array(10)), /pixels must be/);
    assert.throws(() => new ClipVisionModel(c.vision, vw, { featureLayers: [3] }), /outside hidden_states/);
    assert.throws(() => new ClipVisionModel(c.vision, vw, { featureLayers: [-4] }), /outside hidden_states/);
    assert.throws(() => new LlavaProjector(p, pw).project(new Float32Array(3), 1), /project: features/);
  });
});

describe('erf', () => {
  it('matches known values to a few ulps', () => {
    const known: Array<[number, number]> = [
      [0, 0],
      [0.1, 0.1124629160182849],
      [0.5, 0.5204998778130465],
      [1, 0.8427007929497149],
      [2, 0.9953222650189527],
      [3, 0.9999779095030014],
      [-1.5, -0.9661051464753108],
    ];
    for (const [x, want] of known) assert.ok(Math.abs(erf(x) - want) <= 4e-16 * Math.max(1, Math.abs(want)), `erf(${x}) = ${erf(x)}, want ${want}`);
    assert.equal(erf(7), 1);
    assert.equal(erf(-7), -1);
  });
});

// ---- loaders from files ------------------------------------------------------------------------

/** GGUF ne of a PyTorch shape: reversed. */
const ne = (shape: number[]) => [...shape].reverse();

function ggufTensor(name: string, t: Named, type: 'F32' | 'F16'): GgufTensorInput {
  const data = type === 'F32' ? new Uint8Array(Float32Array.from(t.data).buffer) : new Uint8Array((encode('f16', t.data) as Uint16Array).buffer);
  return { name, type, dims: ne(t.shape), data };
}

/** An mmproj GGUF as llama.cpp's converters name it (legacy: fc1 -> ffn_down; modern: fc1 -> ffn_up). */
function writeMmproj(path: string, c: ClipVisionConfig, vision: Map<string, Named>, projector: Map<string, Named>, naming: 'legacy' | 'modern', layers: number[] | undefined, mats: 'F32' | 'F16'): void {
  const tensors: GgufTensorInput[] = [];
  const v = (name: string) => vision.get(name)!;
  const vecType = 'F32';
  // The patch conv is f16 in every file the legacy converter writes.
  tensors.push(ggufTensor('v.patch_embd.weight', v('embeddings.patch_embedding.weight'), 'F16'));
  tensors.push(ggufTensor('v.class_embd', v('embeddings.class_embedding'), vecType));
  tensors.push(ggufTensor('v.position_embd.weight', v('embeddings.position_embedding.weight'), vecType));
  tensors.push(ggufTensor('v.pre_ln.weight', v('pre_layrnorm.weight'), vecType));
  tensors.push(ggufTensor('v.pre_ln.bias', v('pre_layrnorm.bias'), vecType));
  const [fc1, fc2] = naming === 'legacy' ? ['ffn_down', 'ffn_up'] : ['ffn_up', 'ffn_down'];
  for (let l = 0; l < c.nLayers; l++) {
    const hf = `encoder.layers.${l}.`;
    const gg = `v.blk.${l}.`;
    const pairs: Array<[string, string]> = [
      ['layer_norm1', 'ln1'],
      ['self_attn.q_proj', 'attn_q'],
      ['self_attn.k_proj', 'attn_k'],
      ['self_attn.v_proj', 'attn_v'],
      ['self_attn.out_proj', 'attn_out'],
      ['layer_norm2', 'ln2'],
      ['mlp.fc1', fc1],
      ['mlp.fc2', fc2],
    ];
    for (const [h, g] of pairs) {
      const isMatrix = v(`${hf}${h}.weight`).shape.length === 2;
      tensors.push(ggufTensor(`${gg}${g}.weight`, v(`${hf}${h}.weight`), isMatrix ? mats : vecType));
      tensors.push(ggufTensor(`${gg}${g}.bias`, v(`${hf}${h}.bias`), vecType));
    }
  }
  tensors.push(ggufTensor('mm.0.weight', projector.get('linear_1.weight')!, mats));
  tensors.push(ggufTensor('mm.0.bias', projector.get('linear_1.bias')!, vecType));
  tensors.push(ggufTensor('mm.2.weight', projector.get('linear_2.weight')!, mats));
  tensors.push(ggufTensor('mm.2.bias', projector.get('linear_2.bias')!, vecType));
  const u32 = (value: number): GgufTypedValue => ({ type: 'u32', value });
  const metadata: Array<[string, GgufTypedValue]> = [
    ['general.architecture', { type: 'string', value: 'clip' }],
    ['clip.has_text_encoder', { type: 'bool', value: false }],
    ['clip.has_vision_encoder', { type: 'bool', value: true }],
    ['clip.projector_type', { type: 'string', value: 'mlp' }],
    ['clip.vision.image_size', u32(c.imageSize)],
    ['clip.vision.patch_size', u32(c.patchSize)],
    ['clip.vision.embedding_length', u32(c.dim)],
    ['clip.vision.feed_forward_length', u32(c.hiddenDim)],
    ['clip.vision.projection_dim', u32(768)],
    ['clip.vision.attention.head_count', u32(c.nHeads)],
    ['clip.vision.attention.layer_norm_epsilon', { type: 'f32', value: c.layerNormEps }],
    ['clip.vision.block_count', u32(c.nLayers)],
    ['clip.vision.image_mean', { type: 'array', itemType: 'f32', value: [0.48145466, 0.4578275, 0.40821073] }],
    ['clip.vision.image_std', { type: 'array', itemType: 'f32', value: [0.26862954, 0.26130258, 0.27577711] }],
    ['clip.use_gelu', { type: 'bool', value: c.act === 'gelu' }],
  ];
  if (naming === 'legacy') metadata.push(['clip.has_llava_projector', { type: 'bool', value: true }]);
  // The converter stores feature layers as non-negative hidden_states indices.
  if (layers) metadata.push(['clip.vision.feature_layer', { type: 'array', itemType: 'i32', value: layers.map((l) => (l < 0 ? c.nLayers + 1 + l : l)) }]);
  writeGguf(path, { metadata, tensors });
}

/** An HF llava safetensors file (patch conv in f16 too, to match the GGUF file's). */
function writeHf(path: string, vision: Map<string, Named>, projector: Map<string, Named>, prefix: string, mats: 'f32' | 'f16'): void {
  const tensors: Array<{ name: string; tensor: Tensor }> = [];
  for (const [name, t] of vision) {
    const dtype = name === 'embeddings.patch_embedding.weight' ? 'f16' : t.shape.length === 2 && !name.includes('position') ? mats : 'f32';
    tensors.push({ name: `${prefix}vision_tower.vision_model.${name}`, tensor: Tensor.fromValues(t.data, t.shape, dtype) });
  }
  for (const [name, t] of projector) tensors.push({ name: `${prefix}multi_modal_projector.${name}`, tensor: Tensor.fromValues(t.data, t.shape, t.shape.length === 2 ? mats : 'f32') });
  writeSafetensors(path, tensors);
}

function fileGetter(path: string): TensorGetter {
  const infos = new Map(readSafetensorsHeader(path).tensors.map((t) => [t.name, t]));
  return (name, alloc) => {
    const info = infos.get(name);
    if (!info) throw new Error(`no tensor ${name}`);
    return loadTensor(info, alloc ? { alloc } : {});
  };
}

describe('HF and GGUF loaders give identical models', () => {
  let dir = '';
  before(() => {
    dir = mkdtempSync(join(tmpdir(), 'halfpipe-clip-'));
  });
  after(() => rmSync(dir, { recursive: true, force: true }));

  const variants = [
    { c: CASES[0]!, naming: 'legacy' as const, prefix: '', mats: 'f32' as const },
    { c: CASES[7]!, naming: 'modern' as const, prefix: 'model.', mats: 'f16' as const },
    { c: CASES[6]!, naming: 'legacy' as const, prefix: 'model.', mats: 'f16' as const },
  ];
  for (const [vi, { c, naming, prefix, mats }] of variants.entries()) {
    it(`${c.name}: ${naming} GGUF names vs ${prefix || 'plain '}HF names, ${mats} matrices`, () => {
      const p = projectorFor(c);
      const { vision, projector } = randomWeights(c.vision, p, 400 + vi);
      const st = join(dir, `hf-${vi}.safetensors`);
      const gg = join(dir, `mmproj-${vi}.gguf`);
      writeHf(st, vision, projector, prefix, mats);
      writeMmproj(gg, c.vision, vision, projector, naming, c.layers, mats === 'f32' ? 'F32' : 'F16');

      const hfConfig = llavaVisionConfigFromHf({
        vision_config: {
          hidden_size: c.vision.dim,
          intermediate_size: c.vision.hiddenDim,
          num_hidden_layers: c.vision.nLayers,
          num_attention_heads: c.vision.nHeads,
          image_size: c.vision.imageSize,
          patch_size: c.vision.patchSize,
          hidden_act: c.vision.act,
        },
        vision_feature_layer: c.layers.length === 1 ? c.layers[0] : c.layers,
        vision_feature_select_strategy: c.strategy,
        text_config: { hidden_size: p.outDim },
      });
      const file = readGguf(gg);
      const ggConfig = llavaVisionConfigFromGguf(file, { strategy: c.strategy });
      assert.deepEqual(ggConfig.vision, hfConfig.vision);
      assert.equal(ggConfig.projector.inDim, hfConfig.projector.inDim);
      assert.equal(ggConfig.projector.outDim, hfConfig.projector.outDim);
      assert.deepEqual(ggConfig.featureLayers.map((l) => (l < 0 ? c.vision.nLayers + 1 + l : l)), hfConfig.featureLayers.map((l) => (l < 0 ? c.vision.nLayers + 1 + l : l)));
      // The HF config says hidden = outDim; the test's projector has its own hidden size, as the GGUF shapes say.
      const pc: ProjectorConfig = ggConfig.projector;
      assert.equal(pc.hiddenDim, p.hiddenDim);

      const get = fileGetter(st);
      const hfModel = new ClipVisionModel(hfConfig.vision, clipVisionWeightsFromHf(hfConfig.vision, get), { featureLayers: hfConfig.featureLayers, strategy: hfConfig.strategy });
      const ggModel = new ClipVisionModel(ggConfig.vision, clipVisionWeightsFromGguf(file, ggConfig.vision), { featureLayers: ggConfig.featureLayers, strategy: ggConfig.strategy });
      const pixels = randomPixels(c.vision.imageSize, 50 + vi);
      const a = hfModel.encode(pixels);
      const b = ggModel.encode(pixels);
      assert.deepEqual(b, a);
      const rows = hfModel.outputRows;
      const pa = new LlavaProjector(pc, projectorWeightsFromHf(pc, get)).project(a, rows);
      const pb = new LlavaProjector(pc, projectorWeightsFromGguf(file, pc)).project(b, rows);
      assert.deepEqual(pb, pa);
      // And both are the reference computation (patch conv rounded to f16, as stored).
      const conv = 'embeddings.patch_embedding.weight';
      const rounded = (name: string) => {
        const t = vision.get(name)!;
        return name === conv || (mats === 'f16' && t.shape.length === 2 && !name.includes('position')) ? t.data.map((x) => roundTo('f16', x)) : t.data;
      };
      const want = refFeatures(refHiddenStates(c.vision, rounded, pixels), c.layers, c.strategy);
      assert.ok(relError(a, want) < 1e-5);

      // As the loader reads them for the WASM kernels: each matrix read into the staging region and
      // packed there; both files hold the same types, so the packed models are identical too.
      const packedHf = new MatrixFinisher('wasm', undefined, 1 << 16);
      const packedGg = new MatrixFinisher('wasm', undefined, 1 << 16);
      try {
        const hfWasm = new ClipVisionModel(hfConfig.vision, clipVisionWeightsFromHf(hfConfig.vision, get, undefined, packedHf), { featureLayers: hfConfig.featureLayers, strategy: hfConfig.strategy, kernels: 'wasm' });
        const ggWasm = new ClipVisionModel(ggConfig.vision, clipVisionWeightsFromGguf(file, ggConfig.vision, undefined, packedGg), { featureLayers: ggConfig.featureLayers, strategy: ggConfig.strategy, kernels: 'wasm' });
        assert.ok(isPacked(hfWasm.weights.layers[0]!.fc1) && isPacked(ggWasm.weights.layers[0]!.fc1));
        const wa = hfWasm.encode(pixels);
        assert.deepEqual(ggWasm.encode(pixels), wa);
        assert.ok(relError(wa, want) < 6e-5);
        const pwa = new LlavaProjector(pc, projectorWeightsFromHf(pc, get, undefined, packedHf)).project(wa, rows);
        const pwb = new LlavaProjector(pc, projectorWeightsFromGguf(file, pc, packedGg)).project(wa, rows);
        assert.deepEqual(pwb, pwa);
      } finally {
        packedHf.done();
        packedGg.done();
      }
    });
  }

  it('a GGUF file without clip.vision.feature_layer defaults to -2; wrong shapes are named', () => {
    const c = CASES[0]!;
    const p = projectorFor(c);
    const { vision, projector } = randomWeights(c.vision, p, 500);
    const gg = join(dir, 'mmproj-nolayers.gguf');
    writeMmproj(gg, c.vision, vision, projector, 'legacy', undefined, 'F32');
    const file = readGguf(gg);
    const cfg = llavaVisionConfigFromGguf(file);
    assert.deepEqual(cfg.featureLayers, [-2]);
    assert.equal(cfg.strategy, 'default');
    assert.equal(cfg.vision.act, 'quick_gelu');
    assert.equal(cfg.imageMean?.length, 3);
    assert.throws(() => clipVisionWeightsFromGguf(file, { ...cfg.vision, hiddenDim: 65 }), /ffn_(down|up)\.weight has ne/);
    assert.throws(() => llavaVisionConfigFromGguf(file, { featureLayers: [-2, -1] }), /mm\.0\.weight takes 32 inputs/);
  });
});

describe('config parsing', () => {
  it('fills CLIP defaults and LLaVA defaults', () => {
    const cfg = llavaVisionConfigFromHf({ vision_config: { hidden_size: 1024, patch_size: 14, image_size: 336, num_hidden_layers: 24, num_attention_heads: 16, intermediate_size: 4096 } });
    assert.equal(cfg.vision.act, 'quick_gelu');
    assert.equal(cfg.vision.layerNormEps, 1e-5);
    assert.deepEqual(cfg.featureLayers, [-2]);
    assert.equal(cfg.strategy, 'default');
    assert.deepEqual(cfg.projector, { inDim: 1024, hiddenDim: 4096, outDim: 4096, act: 'gelu' });
    const none = llavaVisionConfigFromHf({ text_config: { hidden_size: 5120 }, vision_feature_layer: [-2, -5, 3], vision_feature_select_strategy: 'full' });
    assert.equal(none.vision.imageSize, 336);
    assert.equal(none.projector.inDim, 3 * 1024);
    assert.equal(none.projector.outDim, 5120);
    assert.equal(none.strategy, 'full');
    const bare = llavaVisionConfigFromHf({ vision_config: {} });
    assert.equal(bare.vision.dim, 768);
    assert.equal(bare.vision.patchSize, 32);
  });

  it('rejects what it cannot run', () => {
    assert.throws(() => llavaVisionConfigFromHf({ vision_config: { hidden_act: 'silu' } }), /hidden_act 'silu'/);
    assert.throws(() => llavaVisionConfigFromHf({ vision_feature_select_strategy: 'cls' }), /strategy/);
    assert.throws(() => llavaVisionConfigFromHf({ vision_feature_layer: 30 }), /outside hidden_states/);
    assert.throws(() => llavaVisionConfigFromHf({ projector_hidden_act: 'relu' }), /projector_hidden_act/);
    assert.throws(() => llavaVisionConfigFromHf({ vision_config: { image_size: 30, patch_size: 14 } }), /not a multiple/);
  });
});
