/**
 * LLaVA's vision side: the CLIP vision tower (ViT; Radford et al. 2021) and the LLaVA-1.5 MLP
 * projector (Liu et al. 2023), following HF transformers' modeling_clip.py / modeling_llava.py:
 *
 *   x = concat(class_embedding, patch_conv(pixels)) + position_embedding      (N + 1 rows)
 *   x = pre_layrnorm(x)                                                         hidden_states[0]
 *   per layer:  h = x + out_proj(attention(q_proj(n), k_proj(n), v_proj(n))),   n = layer_norm1(x)
 *               x = h + fc2(act(fc1(m))),                                       m = layer_norm2(h)
 *                                                                               hidden_states[l + 1]
 *   features = concat over the feature layers of hidden_states[layer] along channels,
 *              without the CLS row under strategy 'default'
 *   projector: linear_2(gelu(linear_1(features)))
 *
 * Attention is full (no mask), scaled by head_dim^-0.5; every linear has a bias; act is
 * quick_gelu (x * sigmoid(1.702 x)) or the exact, erf-based gelu. post_layernorm is not used
 * (LLaVA reads hidden states). Only the layers up to the deepest feature layer run.
 *
 * Numerics as in the text model: activations f32, weights any Matrix; LayerNorm, attention and
 * the activations accumulate in float64 and round once to f32; a linear's dot product is rounded
 * to f32 by `linear` and its bias is then added in f32 (one more f32 rounding). Each named op's
 * output is then rounded to the dtype the precision policy stores it in, and reported to the probe.
 * Attention scores and probabilities are float64 scratch (not a stored activation here).
 *
 * Kernels (`kernels` option; the loader sets it from LoadOptions.kernels, direct construction
 * defaults to 'reference'): matrix products follow their weights (a PackedMatrix runs the WASM SIMD
 * matmul, f32 accumulation: see matmul-float.ts); 'wasm' also runs attention on `attentionWasm`
 * (q . k and the weighted sum of V in f32 lanes, softmax in f64: see src/kernels/wasm/attention.ts
 * for its error bound). Full attention is causal attention where every token sits at the last
 * position: K and V are copied into the wasm heap as [head][position][headDim] and each token is
 * given position n - 1 of an n-position cache. 'reference' keeps the float64 loops below unchanged.
 * 'wasm' also runs LayerNorm (layerNormWasm: bit-identical), quick_gelu (quickGeluWasm: f64 with the
 * kernel's exp, within 1 f32 ulp) and the bias and residual adds (exact f32 adds, bit-identical) on
 * the elementwise kernels (src/kernels/wasm/elementwise.ts); the erf gelu stays TypeScript.
 *
 * Precision policy: op paths are `vision.<op>` (embeddings, pre_ln), `vision.layers.<l>.<op>`
 * and `projector.<op>`, matched by the policy's overrides (e.g. `vision.layers.*.fc2=f32`,
 * `projector.*=f16`). Roles: residual for embeddings and residual_*, norm for pre_ln/ln*,
 * activation otherwise. Under the `safe-f16` preset the whole vision side is kept f32 (implicit
 * overrides `vision.*`, `vision.layers.*.*`, `projector.*` = f32, placed before the policy's own
 * overrides so those still win): ViTs carry massive activations too (Darcet et al. 2024, Sun et al.
 * 2024 find them in CLIP ViT-L) and halfpipe has not measured their f16 headroom yet; the tower
 * runs once per image, so f32 costs little. `naive-f16` and `bf16` apply to it as to the text model.
 */
import { type DType, roundF32ArrayInPlace } from '../../core/dtype.js';
import { fail } from '../../core/errors.js';
import { attentionWasm } from '../../kernels/wasm/attention.js';
import { addBiasWasm, addWasm, layerNormWasm, quickGeluWasm } from '../../kernels/wasm/elementwise.js';
import { wasmHeap } from '../../kernels/wasm/heap.js';
import { type KernelChoice, linear, type Matrix } from '../../ops/linear.js';
import { softmaxInPlace } from '../../ops/softmax.js';
import { type ActivationRole, activationDtype, parsePolicy, type PrecisionPolicy } from '../../precision/policy.js';
import type { ProbeContext } from '../llama/model.js';
import {
  checkClipVisionConfig,
  checkProjectorConfig,
  type ClipActivation,
  type ClipVisionConfig,
  type FeatureStrategy,
  headDim as headDimOf,
  parseStrategy,
  patchGrid,
  type ProjectorConfig,
  resolveFeatureLayers,
} from './config.js';
import { checkClipVisionWeights, checkProjectorWeights, type ClipVisionWeights, type ProjectorWeights } from './weights.js';

export type { ProbeContext } from '../llama/model.js';

/** The named intermediates, in forward order. Layer ops report their layer, the others -1. */
export const CLIP_PROBE_NAMES = [
  'vision.embeddings',
  'vision.pre_ln',
  'vision.ln1',
  'vision.q',
  'vision.k',
  'vision.v',
  'vision.attn_out',
  'vision.o_proj',
  'vision.residual_1',
  'vision.ln2',
  'vision.fc1',
  'vision.act',
  'vision.fc2',
  'vision.residual_2',
  'projector.linear_1',
  'projector.act',
  'projector.linear_2',
] as const;
export type ClipProbeName = (typeof CLIP_PROBE_NAMES)[number];

/**
 * Called after each named op, as LlamaProbe is. `data` views the model's scratch, row-major in
 * `shape` (first dimension: the image's rows: CLS then patches, or the projector's input rows),
 * overwritten by the next op: copy what you keep. ctx.firstToken is 0.
 */
export type ClipProbe = (name: ClipProbeName, layer: number, data: Float32Array, shape: readonly number[], ctx: ProbeContext) => void;

const CLIP_PROBE_ROLES: Record<ClipProbeName, ActivationRole> = {
  'vision.embeddings': 'residual',
  'vision.pre_ln': 'norm',
  'vision.ln1': 'norm',
  'vision.q': 'activation',
  'vision.k': 'activation',
  'vision.v': 'activation',
  'vision.attn_out': 'activation',
  'vision.o_proj': 'activation',
  'vision.residual_1': 'residual',
  'vision.ln2': 'norm',
  'vision.fc1': 'activation',
  'vision.act': 'activation',
  'vision.fc2': 'activation',
  'vision.residual_2': 'residual',
  'projector.linear_1': 'activation',
  'projector.act': 'activation',
  'projector.linear_2': 'activation',
};

/** The policy path of an op: `vision.layers.<l>.<op>` inside a layer, the probe name outside (and for projector ops). */
export function clipOpPath(name: ClipProbeName, layer: number): string {
  return layer < 0 || !name.startsWith('vision.') ? name : `vision.layers.${layer}.${name.slice('vision.'.length)}`;
}

/** Overrides implied by a preset for the vision side (see the header): safe-f16 keeps it f32. */
function visionPolicy(policy: PrecisionPolicy): PrecisionPolicy {
  const preset = policy.name.split(',')[0]!.trim();
  if (preset !== 'safe-f16') return policy;
  const keep: PrecisionPolicy['overrides'] = ['vision.*', 'vision.layers.*.*', 'projector.*'].map((pattern) => ({ pattern, dtype: 'f32' }));
  return { ...policy, overrides: [...keep, ...policy.overrides] };
}

/** The dtype an op's output is stored in under `policy` (vision rules applied). */
export function clipActivationDtype(policy: PrecisionPolicy, name: ClipProbeName, layer: number): DType {
  return activationDtype(visionPolicy(policy), clipOpPath(name, layer), -1, CLIP_PROBE_ROLES[name]);
}

export interface ClipModelOptions {
  /** which dtype each activation is stored in (a preset name or a policy); default 'f32' */
  policy?: string | PrecisionPolicy;
  /** numerics monitor hook; absent: no probe work at all */
  probe?: ClipProbe;
  /**
   * 'wasm': attention on the WASM SIMD kernel (matrices run in WASM whenever they are packed, see
   * packForKernels); 'reference' (default): the float64 TypeScript loops
   */
  kernels?: KernelChoice;
}

function checkKernels(kernels: KernelChoice | undefined): KernelChoice {
  const k = kernels ?? 'reference';
  if (k !== 'wasm' && k !== 'reference') fail('usage', `kernels must be 'wasm' or 'reference', got '${String(k)}'`);
  return k;
}

export interface ClipVisionModelOptions extends ClipModelOptions {
  /** hidden_states indices (negative: from the end), concatenated along channels; default [-2] */
  featureLayers?: readonly number[];
  /** default 'default' (drop the CLS row) */
  strategy?: FeatureStrategy;
}

const NO_ROUNDING = { overflowed: 0, clamped: 0, absmax: 0 };

/** Rounds `data` to the op's dtype and reports it (the text model's emit). */
function emitTo(policy: PrecisionPolicy, probe: ClipProbe | undefined, name: ClipProbeName, layer: number, data: Float32Array, shape: readonly number[]): void {
  const dtype = clipActivationDtype(policy, name, layer);
  const counts = dtype === 'f32' ? NO_ROUNDING : roundF32ArrayInPlace(data, data.length, dtype, policy.clamp);
  if (!probe) return;
  const ctx: ProbeContext = { dtype, firstToken: 0, overflowed: counts.overflowed, clamped: counts.clamped };
  if (dtype !== 'f32') ctx.f32Absmax = counts.absmax;
  probe(name, layer, data, shape, ctx);
}

// ---- ops -------------------------------------------------------------------------------------

/** LayerNorm of `rows` rows: (x - mean) / sqrt(var + eps) * w + b, mean and (biased) variance in float64. */
export function layerNorm(out: Float32Array, x: Float32Array, w: Float32Array, b: Float32Array, eps: number, rows: number, dim: number): void {
  for (let r = 0; r < rows; r++) {
    const o = r * dim;
    let mean = 0;
    for (let i = 0; i < dim; i++) mean += x[o + i]!;
    mean /= dim;
    let v = 0;
    for (let i = 0; i < dim; i++) {
      const d = x[o + i]! - mean;
      v += d * d;
    }
    const inv = 1 / Math.sqrt(v / dim + eps);
    for (let i = 0; i < dim; i++) out[o + i] = (x[o + i]! - mean) * inv * w[i]! + b[i]!;
  }
}

/** out = x W^T + b over `rows` rows (bias added in f32 after linear's rounded dot product). */
function linearBias(out: Float32Array, x: Float32Array, rows: number, w: Matrix, b: Float32Array): void {
  linear(out, x, rows, w);
  const n = b.length;
  for (let r = 0; r < rows; r++) for (let i = 0; i < n; i++) out[r * n + i] = out[r * n + i]! + b[i]!;
}

/**
 * erf in float64: the series erf(x) = 2/sqrt(pi) e^(-x^2) sum_n (2x^2)^n x / (1*3*...*(2n+1)), whose
 * terms are all positive (no cancellation; relative error a few ulps); |x| >= 6 gives +-1 (1 - erf
 * is below 2^-53 there).
 */
export function erf(x: number): number {
  if (Number.isNaN(x)) return NaN;
  const a = Math.abs(x);
  if (a >= 6) return Math.sign(x);
  const x2 = a * a;
  let term = a;
  let sum = a;
  for (let n = 1; n < 200; n++) {
    term *= (2 * x2) / (2 * n + 1);
    sum += term;
    if (term < sum * 1e-17) break;
  }
  const r = (2 / Math.sqrt(Math.PI)) * Math.exp(-x2) * sum;
  return x < 0 ? -r : r;
}

/** GELU with erf (HF 'gelu'): x/2 (1 + erf(x / sqrt 2)). */
export function gelu(x: number): number {
  return 0.5 * x * (1 + erf(x / Math.SQRT2));
}

/** quick_gelu (HF, CLIP's original): x sigmoid(1.702 x). */
export function quickGelu(x: number): number {
  return x / (1 + Math.exp(-1.702 * x));
}

function applyActivation(act: ClipActivation, data: Float32Array, n: number): void {
  const f = act === 'gelu' ? gelu : quickGelu;
  for (let i = 0; i < n; i++) data[i] = f(data[i]!);
}

/**
 * Full (unmasked) attention on the WASM kernel: q, k, v and out are (n, nHeads * hd) rows; K and V
 * are copied to the heap at kvPtr (2 n nHeads hd f32) as [head][position][hd], and every token is
 * put at position n - 1 of an n-position cache, so it sees all n keys.
 */
function fullAttentionWasm(out: Float32Array, q: Float32Array, k: Float32Array, v: Float32Array, n: number, nHeads: number, hd: number, kvPtr: number): void {
  const heap = wasmHeap();
  const dim = nHeads * hd;
  // Views made per call: an allocation elsewhere may have grown the memory since the last one.
  const keys = heap.f32(kvPtr, n * dim);
  const values = heap.f32(kvPtr + n * dim * 4, n * dim);
  for (let j = 0; j < n; j++) {
    for (let h = 0; h < nHeads; h++) {
      const src = j * dim + h * hd;
      const dst = (h * n + j) * hd;
      keys.set(k.subarray(src, src + hd), dst);
      values.set(v.subarray(src, src + hd), dst);
    }
  }
  const headStride = n * hd;
  attentionWasm({
    out,
    q,
    keys: { dtype: 'f32', data: keys, headStride },
    values: { dtype: 'f32', data: values, headStride },
    positions: new Int32Array(n).fill(n - 1),
    length: n,
    nHeads,
    nKvHeads: nHeads,
    headDim: hd,
  });
}

// ---- the vision tower ------------------------------------------------------------------------

export class ClipVisionModel {
  readonly config: ClipVisionConfig;
  readonly weights: ClipVisionWeights;
  readonly policy: PrecisionPolicy;
  readonly probe: ClipProbe | undefined;
  /** resolved hidden_states indices, in output order */
  readonly featureLayers: readonly number[];
  readonly strategy: FeatureStrategy;
  readonly kernels: KernelChoice;
  /** rows of encode()'s output: numPatches, plus the CLS row under 'full' */
  readonly outputRows: number;
  /** columns of encode()'s output: dim x feature layers */
  readonly outputDim: number;

  constructor(config: ClipVisionConfig, weights: ClipVisionWeights, opts: ClipVisionModelOptions = {}) {
    this.config = checkClipVisionConfig(config);
    checkClipVisionWeights(config, weights);
    this.weights = weights;
    this.policy = parsePolicy(opts.policy ?? 'f32');
    this.probe = opts.probe;
    this.featureLayers = resolveFeatureLayers(opts.featureLayers ?? [-2], config.nLayers);
    this.strategy = parseStrategy(opts.strategy ?? 'default');
    this.kernels = checkKernels(opts.kernels);
    const { numPatches } = patchGrid(config);
    this.outputRows = this.strategy === 'full' ? numPatches + 1 : numPatches;
    this.outputDim = config.dim * this.featureLayers.length;
  }

  /** The same tower (shared weights, feature layers and strategy) with another probe, policy and/or kernels. */
  withOptions(opts: ClipModelOptions): ClipVisionModel {
    const probe = 'probe' in opts ? opts.probe : this.probe;
    return new ClipVisionModel(this.config, this.weights, {
      policy: opts.policy ?? this.policy,
      ...(probe ? { probe } : {}),
      featureLayers: this.featureLayers,
      strategy: this.strategy,
      kernels: opts.kernels ?? this.kernels,
    });
  }

  private emit(name: ClipProbeName, layer: number, data: Float32Array, shape: readonly number[]): void {
    emitTo(this.policy, this.probe, name, layer, data, shape);
  }

  // The elementwise ops on the chosen kernels (the WASM ones give the reference's bits, quick_gelu within 1 ulp).

  private layerNorm(out: Float32Array, x: Float32Array, w: Float32Array, b: Float32Array, eps: number, rows: number, dim: number): void {
    if (this.kernels === 'wasm') layerNormWasm(out, x, w, b, eps, rows, dim);
    else layerNorm(out, x, w, b, eps, rows, dim);
  }

  private linearBias(out: Float32Array, x: Float32Array, rows: number, w: Matrix, b: Float32Array): void {
    if (this.kernels !== 'wasm') return linearBias(out, x, rows, w, b);
    linear(out, x, rows, w);
    addBiasWasm(out, out, b, rows);
  }

  /** out[i] = a[i] + b[i] in f32 for i < n. */
  private add(out: Float32Array, a: Float32Array, b: Float32Array, n: number): void {
    if (this.kernels === 'wasm') return addWasm(out, a, b, n);
    for (let i = 0; i < n; i++) out[i] = a[i]! + b[i]!;
  }

  private activation(act: ClipActivation, data: Float32Array, n: number): void {
    if (this.kernels === 'wasm' && act === 'quick_gelu') quickGeluWasm(data, data, n);
    else applyActivation(act, data, n);
  }

  /**
   * Features of one image: `pixels` is [3, imageSize, imageSize] row-major, already normalized
   * (mean/std). Returns (outputRows, outputDim) row-major: for each kept row, the selected hidden
   * states side by side in featureLayers order.
   */
  encode(pixels: Float32Array): Float32Array {
    const kv = this.stageKv();
    try {
      const steps = this.run(pixels, kv);
      for (let r = steps.next(); ; r = steps.next()) if (r.done) return r.value;
    } finally {
      if (kv !== undefined) wasmHeap().free(kv);
    }
  }

  /**
   * encode(), giving the event loop a turn after every layer, so that a server keeps serving the
   * other requests while an image is encoded. The same result, bit for bit.
   */
  async encodeAsync(pixels: Float32Array): Promise<Float32Array> {
    const kv = this.stageKv();
    try {
      const steps = this.run(pixels, kv);
      for (let r = steps.next(); ; r = steps.next()) {
        if (r.done) return r.value;
        await new Promise<void>((resolve) => setImmediate(resolve));
      }
    } finally {
      if (kv !== undefined) wasmHeap().free(kv);
    }
  }

  /** With the WASM kernels: heap room for one layer's K and V, [head][position][headDim] each, reused by every layer. */
  private stageKv(): number | undefined {
    if (this.kernels !== 'wasm') return undefined;
    const { numPatches } = patchGrid(this.config);
    return wasmHeap().alloc(2 * (numPatches + 1) * this.config.dim * 4, 64);
  }

  /**
   * encode() with attention in the reference loops (heapKv undefined) or on the WASM kernel, K and
   * V staged at heapKv; yields after each layer and returns the features.
   */
  private *run(pixels: Float32Array, heapKv: number | undefined): Generator<void, Float32Array> {
    const c = this.config;
    const w = this.weights;
    const { dim, hiddenDim, nHeads, patchSize: p, imageSize: size, layerNormEps: eps } = c;
    const { side, numPatches } = patchGrid(c);
    if (!(pixels instanceof Float32Array) || pixels.length !== 3 * size * size) {
      fail('shape', `encode: pixels must be a Float32Array of [3, ${size}, ${size}] = ${3 * size * size} values, got ${pixels?.length}`);
    }
    const hd = headDimOf(c);
    const n = numPatches + 1; // rows: CLS, then patches in raster order
    const x = new Float32Array(n * dim); // the residual stream
    const xb = new Float32Array(n * dim); // normed input of a block
    const q = new Float32Array(n * dim);
    const k = new Float32Array(n * dim);
    const v = new Float32Array(n * dim);
    const att = new Float32Array(n * dim);
    const proj = new Float32Array(n * dim);
    const hidden = new Float32Array(n * hiddenDim);
    const patchCols = 3 * p * p;
    const patches = new Float32Array(numPatches * patchCols);
    const scores = new Float64Array(n);
    const acc = new Float64Array(hd);
    const out = new Float32Array(this.outputRows * this.outputDim);
    const lastLayer = Math.max(...this.featureLayers); // hidden_states index: run layers 0 .. lastLayer - 1
    const save = (index: number) => {
      const skip = this.strategy === 'full' ? 0 : 1;
      this.featureLayers.forEach((f, slot) => {
        if (f !== index) return;
        for (let r = skip; r < n; r++) out.set(x.subarray(r * dim, (r + 1) * dim), (r - skip) * this.outputDim + slot * dim);
      });
    };

    // Patch embedding: the stride-p conv as a matmul of each patch, flattened (channel, y, x), into rows 1..N.
    for (let py = 0; py < side; py++) {
      for (let px = 0; px < side; px++) {
        const row = (py * side + px) * patchCols;
        for (let ch = 0; ch < 3; ch++) {
          for (let yy = 0; yy < p; yy++) {
            const src = ch * size * size + (py * p + yy) * size + px * p;
            patches.set(pixels.subarray(src, src + p), row + (ch * p + yy) * p);
          }
        }
      }
    }
    linear(x.subarray(dim), patches, numPatches, w.patchEmbedding);
    // Class embedding in row 0, then position embeddings added to every row.
    x.set(w.classEmbedding, 0);
    this.add(x, x, w.positionEmbedding, n * dim);
    this.emit('vision.embeddings', -1, x, [n, dim]);
    // pre_layrnorm, whose output is the residual stream (hidden_states[0]).
    this.layerNorm(xb, x, w.preLnWeight, w.preLnBias, eps, n, dim);
    x.set(xb);
    this.emit('vision.pre_ln', -1, x, [n, dim]);
    save(0);

    const scale = 1 / Math.sqrt(hd);
    for (let l = 0; l < lastLayer; l++) {
      const lw = w.layers[l]!;
      // layer_norm1.
      this.layerNorm(xb, x, lw.ln1Weight, lw.ln1Bias, eps, n, dim);
      this.emit('vision.ln1', l, xb, [n, dim]);
      // q, k, v projections (with bias).
      this.linearBias(q, xb, n, lw.wq, lw.bq);
      this.linearBias(k, xb, n, lw.wk, lw.bk);
      this.linearBias(v, xb, n, lw.wv, lw.bv);
      this.emit('vision.q', l, q, [n, nHeads, hd]);
      this.emit('vision.k', l, k, [n, nHeads, hd]);
      this.emit('vision.v', l, v, [n, nHeads, hd]);
      if (heapKv !== undefined) {
        fullAttentionWasm(att, q, k, v, n, nHeads, hd, heapKv);
      } else {
        // Full attention per head: softmax(q k^T / sqrt(headDim)) v, float64 scores and sums.
        for (let h = 0; h < nHeads; h++) {
          const ho = h * hd;
          for (let i = 0; i < n; i++) {
            const qi = i * dim + ho;
            for (let j = 0; j < n; j++) {
              const kj = j * dim + ho;
              let s = 0;
              for (let d = 0; d < hd; d++) s += q[qi + d]! * k[kj + d]!;
              scores[j] = s * scale;
            }
            softmaxInPlace(scores, 0, n);
            acc.fill(0);
            for (let j = 0; j < n; j++) {
              const pj = scores[j]!;
              const vj = j * dim + ho;
              for (let d = 0; d < hd; d++) acc[d] = acc[d]! + pj * v[vj + d]!;
            }
            for (let d = 0; d < hd; d++) att[qi + d] = acc[d]!;
          }
        }
      }
      this.emit('vision.attn_out', l, att, [n, dim]);
      // out_proj (with bias).
      this.linearBias(proj, att, n, lw.wo, lw.bo);
      this.emit('vision.o_proj', l, proj, [n, dim]);
      // Residual connection.
      this.add(x, x, proj, n * dim);
      this.emit('vision.residual_1', l, x, [n, dim]);
      // layer_norm2.
      this.layerNorm(xb, x, lw.ln2Weight, lw.ln2Bias, eps, n, dim);
      this.emit('vision.ln2', l, xb, [n, dim]);
      // fc1 (with bias).
      this.linearBias(hidden, xb, n, lw.fc1, lw.fc1Bias);
      this.emit('vision.fc1', l, hidden, [n, hiddenDim]);
      // The MLP activation (quick_gelu or gelu), in place.
      this.activation(c.act, hidden, n * hiddenDim);
      this.emit('vision.act', l, hidden, [n, hiddenDim]);
      // fc2 (with bias).
      this.linearBias(proj, hidden, n, lw.fc2, lw.fc2Bias);
      this.emit('vision.fc2', l, proj, [n, dim]);
      // Residual connection: hidden_states[l + 1].
      this.add(x, x, proj, n * dim);
      this.emit('vision.residual_2', l, x, [n, dim]);
      save(l + 1);
      yield;
    }
    return out;
  }
}

// ---- the projector -----------------------------------------------------------------------------

export class LlavaProjector {
  readonly config: ProjectorConfig;
  readonly weights: ProjectorWeights;
  readonly policy: PrecisionPolicy;
  readonly probe: ClipProbe | undefined;
  /** recorded for withOptions; the projector's only kernels are its matrices, which follow their weights */
  readonly kernels: KernelChoice;

  constructor(config: ProjectorConfig, weights: ProjectorWeights, opts: ClipModelOptions = {}) {
    this.config = checkProjectorConfig(config);
    checkProjectorWeights(config, weights);
    this.weights = weights;
    this.policy = parsePolicy(opts.policy ?? 'f32');
    this.probe = opts.probe;
    this.kernels = checkKernels(opts.kernels);
  }

  /** The same projector (shared weights) with another probe, policy and/or kernels. */
  withOptions(opts: ClipModelOptions): LlavaProjector {
    const probe = 'probe' in opts ? opts.probe : this.probe;
    return new LlavaProjector(this.config, this.weights, { policy: opts.policy ?? this.policy, ...(probe ? { probe } : {}), kernels: opts.kernels ?? this.kernels });
  }

  /** (rows, outDim) image embeddings for the text model from (rows, inDim) vision features. */
  project(features: Float32Array, rows: number): Float32Array {
    const { inDim, hiddenDim, outDim } = this.config;
    const w = this.weights;
    if (!Number.isInteger(rows) || rows < 0) fail('shape', `project: rows must be a non-negative integer, got ${rows}`);
    if (features.length !== rows * inDim) fail('shape', `project: features hold ${features.length} values, need ${rows} x ${inDim}`);
    const h = new Float32Array(rows * hiddenDim);
    const out = new Float32Array(rows * outDim);
    const emit = (name: ClipProbeName, data: Float32Array, shape: readonly number[]) => emitTo(this.policy, this.probe, name, -1, data, shape);
    // linear_1 (with bias).
    linearBias(h, features, rows, w.linear1, w.linear1Bias);
    emit('projector.linear_1', h, [rows, hiddenDim]);
    // GELU (erf), in place.
    applyActivation('gelu', h, rows * hiddenDim);
    emit('projector.act', h, [rows, hiddenDim]);
    // linear_2 (with bias).
    linearBias(out, h, rows, w.linear2, w.linear2Bias);
    emit('projector.linear_2', out, [rows, outDim]);
    return out;
  }
}
