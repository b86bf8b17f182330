/**
 * Weights of the CLIP vision tower and the LLaVA projector: read-only after loading. Matrices are
 * (out, in) rows as checkpoints store them (y = x W^T + b); vectors are float32.
 *
 * The patch embedding is PyTorch's Conv2d weight [dim, 3, p, p] (no bias) viewed as a (dim, 3*p*p)
 * matrix: row o holds W[o, c, y, x] at column c*p*p + y*p + x, the row-major flattening of
 * [in, kh, kw]. Convolving with stride p is then one matmul with each patch flattened in the same
 * (channel, y, x) order. GGUF stores that tensor with ne = [p, p, 3, dim] (ne reversed from PyTorch):
 * the bytes are the same, so it is reinterpreted, not permuted.
 *
 * Loaders: from an HF llava checkpoint through a `get(name) => Tensor` function (names
 * `vision_tower.vision_model.*` / `multi_modal_projector.*`, or the newer `model.vision_tower.*` /
 * `model.multi_modal_projector.*`), and from a llama.cpp mmproj GgufFile (`v.*`, `mm.*`).
 * Given a loader's MatrixFinisher, each matrix is read into its heap staging region and packed for
 * the SIMD kernels at once (a matrix may then be a PackedMatrix; vectors are always float32).
 */
import { isPacked } from '../../kernels/wasm/packed.js';
import { fail } from '../../core/errors.js';
import { type Allocator, Tensor } from '../../core/tensor.js';
import { dequantize } from '../../formats/gguf/quants.js';
import { type GgufFile, type GgufTensorInfo, metaValue, readTensorBytes, readTensorInto } from '../../formats/gguf/reader.js';
import { describeMatrix, isQuantized, type Matrix, matrixShape, QUANT_TYPES, type QuantizedMatrix, type QuantType } from '../../ops/linear.js';
import type { MatrixFinisher } from '../load.js';
import { type ClipVisionConfig, patchGrid, type ProjectorConfig } from './config.js';

export interface ClipLayerWeights {
  ln1Weight: Float32Array; // (dim) layer_norm1
  ln1Bias: Float32Array; // (dim)
  wq: Matrix; // (dim, dim) q_proj
  bq: Float32Array; // (dim)
  wk: Matrix; // (dim, dim) k_proj
  bk: Float32Array; // (dim)
  wv: Matrix; // (dim, dim) v_proj
  bv: Float32Array; // (dim)
  wo: Matrix; // (dim, dim) out_proj
  bo: Float32Array; // (dim)
  ln2Weight: Float32Array; // (dim) layer_norm2
  ln2Bias: Float32Array; // (dim)
  fc1: Matrix; // (hiddenDim, dim) mlp.fc1
  fc1Bias: Float32Array; // (hiddenDim)
  fc2: Matrix; // (dim, hiddenDim) mlp.fc2
  fc2Bias: Float32Array; // (dim)
}

export interface ClipVisionWeights {
  patchEmbedding: Matrix; // (dim, 3 * p * p), columns in (channel, y, x) order
  classEmbedding: Float32Array; // (dim)
  positionEmbedding: Float32Array; // (numPatches + 1, dim) row-major; row 0 is the CLS position
  preLnWeight: Float32Array; // (dim) pre_layrnorm
  preLnBias: Float32Array; // (dim)
  layers: ClipLayerWeights[]; // (nLayers)
}

export interface ProjectorWeights {
  linear1: Matrix; // (hiddenDim, inDim)
  linear1Bias: Float32Array; // (hiddenDim)
  linear2: Matrix; // (outDim, hiddenDim)
  linear2Bias: Float32Array; // (outDim)
}

/**
 * Checkpoint access: the tensor called `name` (throws when there is none), its storage from `alloc`
 * when given (a loader's staging region: see MatrixFinisher; a getter may ignore it).
 */
export type TensorGetter = (name: string, alloc?: Allocator) => Tensor;

/**
 * How a loader makes each weight matrix final as it is read (src/models/load.ts MatrixFinisher:
 * read into the heap staging region and packed for the kernels at once, so the loaded and packed
 * copies never coexist). Absent: every matrix is kept as read, in storage of its own.
 */
export type ClipMatrixFinisher = Pick<MatrixFinisher, 'matrix'>;

// ---- checks ------------------------------------------------------------------------------------

function checkVector(name: string, v: Float32Array, n: number): void {
  if (!(v instanceof Float32Array)) fail('shape', `${name} must be a Float32Array`);
  if (v.length !== n) fail('shape', `${name} has ${v.length} values, expected (${n})`);
}

function checkMatrix(name: string, m: Matrix, rows: number, cols: number): void {
  const [r, c] = matrixShape(m);
  if (r !== rows || c !== cols) fail('shape', `${name} is ${describeMatrix(m)}, expected [${rows}, ${cols}]`);
  if (!isQuantized(m) && !isPacked(m) && !m.isContiguous) fail('layout', `${name} must be contiguous`);
}

/** Checks every tensor's shape against the config. One-line HalfpipeError naming the tensor. */
export function checkClipVisionWeights(c: ClipVisionConfig, w: ClipVisionWeights): void {
  const { dim, hiddenDim, patchSize } = c;
  const { numPatches } = patchGrid(c);
  checkMatrix('vision.patch_embedding', w.patchEmbedding, dim, 3 * patchSize * patchSize);
  checkVector('vision.class_embedding', w.classEmbedding, dim);
  checkVector('vision.position_embedding', w.positionEmbedding, (numPatches + 1) * dim);
  checkVector('vision.pre_ln.weight', w.preLnWeight, dim);
  checkVector('vision.pre_ln.bias', w.preLnBias, dim);
  if (!Array.isArray(w.layers) || w.layers.length !== c.nLayers) fail('shape', `vision weights have ${w.layers?.length} layers, config says ${c.nLayers}`);
  w.layers.forEach((l, i) => {
    const at = `vision.layers.${i}.`;
    checkVector(`${at}ln1.weight`, l.ln1Weight, dim);
    checkVector(`${at}ln1.bias`, l.ln1Bias, dim);
    for (const [n, m, b] of [['q', l.wq, l.bq], ['k', l.wk, l.bk], ['v', l.wv, l.bv], ['o', l.wo, l.bo]] as const) {
      checkMatrix(`${at}${n}_proj`, m, dim, dim);
      checkVector(`${at}${n}_proj.bias`, b, dim);
    }
    checkVector(`${at}ln2.weight`, l.ln2Weight, dim);
    checkVector(`${at}ln2.bias`, l.ln2Bias, dim);
    checkMatrix(`${at}fc1`, l.fc1, hiddenDim, dim);
    checkVector(`${at}fc1.bias`, l.fc1Bias, hiddenDim);
    checkMatrix(`${at}fc2`, l.fc2, dim, hiddenDim);
    checkVector(`${at}fc2.bias`, l.fc2Bias, dim);
  });
}

export function checkProjectorWeights(p: ProjectorConfig, w: ProjectorWeights): void {
  checkMatrix('projector.linear_1', w.linear1, p.hiddenDim, p.inDim);
  checkVector('projector.linear_1.bias', w.linear1Bias, p.hiddenDim);
  checkMatrix('projector.linear_2', w.linear2, p.outDim, p.hiddenDim);
  checkVector('projector.linear_2.bias', w.linear2Bias, p.outDim);
}

// ---- HF checkpoints ----------------------------------------------------------------------------

/** Any float tensor as a float32 vector (f16/bf16 decode exactly). */
function vectorOf(name: string, t: Tensor, n: number): Float32Array {
  if (t.numel !== n) fail('shape', `${name} has shape [${t.shape.join(', ')}], expected ${n} values`);
  return Float32Array.from(t.toFloat64Array());
}

/** A tensor as an (rows, cols) matrix in its own dtype (a view when contiguous). */
function matrixOf(name: string, t: Tensor, rows: number, cols: number): Tensor {
  if (t.numel !== rows * cols || t.shape[0] !== rows) fail('shape', `${name} has shape [${t.shape.join(', ')}], expected [${rows}, ${cols}]`);
  return (t.isContiguous ? t : t.contiguous()).reshape(rows, cols);
}

/** The matrix `name`, made final by `finisher` as it is read (read into its staging region when it has one). */
function hfMatrix(get: TensorGetter, name: string, rows: number, cols: number, finisher: ClipMatrixFinisher | undefined): Matrix {
  if (!finisher) return matrixOf(name, get(name), rows, cols);
  return finisher.matrix((staging) => matrixOf(name, get(name, staging?.allocator), rows, cols));
}

/** Prefixes of the vision tower / projector in HF llava checkpoints, older layout first. */
export const HF_VISION_PREFIXES = ['vision_tower.vision_model.', 'model.vision_tower.vision_model.'] as const;
export const HF_PROJECTOR_PREFIXES = ['multi_modal_projector.', 'model.multi_modal_projector.'] as const;

/** The first prefix whose `probe` tensor `get` finds. */
function findPrefix(get: TensorGetter, prefixes: readonly string[], probe: string, what: string): string {
  for (const p of prefixes) {
    try {
      get(p + probe);
      return p;
    } catch {
      // not this layout
    }
  }
  return fail('config', `checkpoint has no ${what} (looked for ${prefixes.map((p) => p + probe).join(', ')})`);
}

/**
 * The vision tower from an HF llava checkpoint. `prefix` defaults to whichever of
 * HF_VISION_PREFIXES holds `embeddings.class_embedding`. Loads config.nLayers layers
 * (post_layernorm, unused by LLaVA, is not read).
 */
export function clipVisionWeightsFromHf(c: ClipVisionConfig, get: TensorGetter, prefix?: string, finisher?: ClipMatrixFinisher): ClipVisionWeights {
  const p = prefix ?? findPrefix(get, HF_VISION_PREFIXES, 'embeddings.class_embedding', 'CLIP vision tower');
  const { dim, hiddenDim, patchSize } = c;
  const { numPatches } = patchGrid(c);
  const vec = (name: string, n: number) => vectorOf(p + name, get(p + name), n);
  const mat = (name: string, rows: number, cols: number) => hfMatrix(get, p + name, rows, cols, finisher);
  const layers: ClipLayerWeights[] = [];
  for (let l = 0; l < c.nLayers; l++) {
    const at = `encoder.layers.${l}.`;
    layers.push({
      ln1Weight: vec(`${at}layer_norm1.weight`, dim),
      ln1Bias: vec(`${at}layer_norm1.bias`, dim),
      wq: mat(`${at}self_attn.q_proj.weight`, dim, dim),
      bq: vec(`${at}self_attn.q_proj.bias`, dim),
      wk: mat(`${at}self_attn.k_proj.weight`, dim, dim),
      bk: vec(`${at}self_attn.k_proj.bias`, dim),
      wv: mat(`${at}self_attn.v_proj.weight`, dim, dim),
      bv: vec(`${at}self_attn.v_proj.bias`, dim),
      wo: mat(`${at}self_attn.out_proj.weight`, dim, dim),
      bo: vec(`${at}self_attn.out_proj.bias`, dim),
      ln2Weight: vec(`${at}layer_norm2.weight`, dim),
      ln2Bias: vec(`${at}layer_norm2.bias`, dim),
      fc1: mat(`${at}mlp.fc1.weight`, hiddenDim, dim),
      fc1Bias: vec(`${at}mlp.fc1.bias`, hiddenDim),
      fc2: mat(`${at}mlp.fc2.weight`, dim, hiddenDim),
      fc2Bias: vec(`${at}mlp.fc2.bias`, dim),
    });
  }
  const w: ClipVisionWeights = {
    // [dim, 3, p, p] -> (dim, 3*p*p): the row-major flattening of (channel, y, x).
    patchEmbedding: mat('embeddings.patch_embedding.weight', dim, 3 * patchSize * patchSize),
    classEmbedding: vec('embeddings.class_embedding', dim),
    positionEmbedding: vec('embeddings.position_embedding.weight', (numPatches + 1) * dim),
    // HF's attribute is spelled pre_layrnorm.
    preLnWeight: vec('pre_layrnorm.weight', dim),
    preLnBias: vec('pre_layrnorm.bias', dim),
    layers,
  };
  checkClipVisionWeights(c, w);
  return w;
}

/** The projector from an HF llava checkpoint (`linear_1`, `linear_2`, with biases). */
export function projectorWeightsFromHf(p: ProjectorConfig, get: TensorGetter, prefix?: string, finisher?: ClipMatrixFinisher): ProjectorWeights {
  const at = prefix ?? findPrefix(get, HF_PROJECTOR_PREFIXES, 'linear_1.weight', 'LLaVA multi_modal_projector');
  const w: ProjectorWeights = {
    linear1: hfMatrix(get, `${at}linear_1.weight`, p.hiddenDim, p.inDim, finisher),
    linear1Bias: vectorOf(`${at}linear_1.bias`, get(`${at}linear_1.bias`), p.hiddenDim),
    linear2: hfMatrix(get, `${at}linear_2.weight`, p.outDim, p.hiddenDim, finisher),
    linear2Bias: vectorOf(`${at}linear_2.bias`, get(`${at}linear_2.bias`), p.outDim),
  };
  checkProjectorWeights(p, w);
  return w;
}

// ---- mmproj GGUF -------------------------------------------------------------------------------

function count(dims: readonly number[]): number {
  return dims.reduce((a, b) => a * b, 1);
}

/** A GGUF tensor's bytes as an (rows, cols) Matrix. GGUF ne is [cols, rows, ...]: ne[0] is the row length. */
function ggufMatrix(file: GgufFile, info: GgufTensorInfo, rows: number, cols: number, expectedNe: readonly number[] = [cols, rows], into?: Uint8Array): Tensor | QuantizedMatrix {
  if (info.dims.length !== expectedNe.length || info.dims.some((d, i) => d !== expectedNe[i])) {
    fail('shape', `mmproj GGUF tensor ${info.name} has ne [${info.dims.join(', ')}], expected [${expectedNe.join(', ')}]`);
  }
  const n = rows * cols;
  let bytes: Uint8Array;
  if (into) {
    bytes = into.subarray(0, info.byteLength);
    readTensorInto(file, info, bytes);
  } else {
    bytes = readTensorBytes(file, info);
  }
  switch (info.type) {
    case 'F32':
      return new Tensor('f32', new Float32Array(bytes.buffer, bytes.byteOffset, n), [rows, cols]);
    case 'F16':
      return new Tensor('f16', new Uint16Array(bytes.buffer, bytes.byteOffset, n), [rows, cols]);
    case 'BF16':
      return new Tensor('bf16', new Uint16Array(bytes.buffer, bytes.byteOffset, n), [rows, cols]);
    default:
      if (!(QUANT_TYPES as readonly string[]).includes(info.type)) fail('dtype', `mmproj GGUF tensor ${info.name} has unsupported type ${info.type}`);
      if (info.dims[0] !== cols) fail('shape', `mmproj GGUF tensor ${info.name}: quantized rows must run along ne[0]`);
      return { kind: 'quantized', type: info.type as QuantType, rows, cols, rowBytes: bytes.length / rows, data: bytes };
  }
}

/** ggufMatrix made final by `finisher` as it is read (into its staging region when it has one). */
function ggufFinalMatrix(file: GgufFile, info: GgufTensorInfo, rows: number, cols: number, finisher: ClipMatrixFinisher | undefined, expectedNe?: readonly number[]): Matrix {
  if (!finisher) return ggufMatrix(file, info, rows, cols, expectedNe);
  return finisher.matrix((staging) => ggufMatrix(file, info, rows, cols, expectedNe, staging?.bytes(info.byteLength)));
}

/** A GGUF tensor of any float or quantized type as a float32 vector of n values. */
function ggufVector(file: GgufFile, info: GgufTensorInfo, n: number): Float32Array {
  if (count(info.dims) !== n) fail('shape', `mmproj GGUF tensor ${info.name} has ne [${info.dims.join(', ')}], expected ${n} values`);
  const bytes = readTensorBytes(file, info);
  const out = new Float32Array(n);
  dequantize(info.type, bytes, n, out);
  return out;
}

/** Which GGUF names hold mlp.fc1 / mlp.fc2. */
export type MmprojFfnNaming = 'legacy' | 'modern';

/**
 * The legacy converter (convert_image_encoder_to_gguf.py) wrote mlp.fc1 as `ffn_down` and mlp.fc2
 * as `ffn_up`; gguf-py's tensor map (convert_hf_to_gguf.py --mmproj) writes fc1 as `ffn_up`. The
 * shapes tell them apart (fc1 has ne [dim, hiddenDim]) unless dim = hiddenDim; then files with
 * clip.has_llava_projector (the legacy converter's key) are taken as legacy.
 */
function detectFfnNaming(file: GgufFile, c: ClipVisionConfig): MmprojFfnNaming {
  const down = file.tensors.find((t) => t.name === 'v.blk.0.ffn_down.weight');
  if (down && c.dim !== c.hiddenDim) return down.dims[0] === c.dim && down.dims[1] === c.hiddenDim ? 'legacy' : 'modern';
  return metaValue(file, 'clip.has_llava_projector') !== undefined ? 'legacy' : 'modern';
}

/**
 * The vision tower from a llama.cpp mmproj GGUF: v.patch_embd.weight (ne [p, p, 3, dim]),
 * v.class_embd (ne [dim]), v.position_embd.weight (ne [dim, numPatches + 1]), v.pre_ln.*,
 * v.blk.N.{attn_q, attn_k, attn_v, attn_out, ln1, ln2, ffn_up, ffn_down}.{weight, bias}.
 */
export function clipVisionWeightsFromGguf(file: GgufFile, c: ClipVisionConfig, naming?: MmprojFfnNaming, finisher?: ClipMatrixFinisher): ClipVisionWeights {
  const byName = new Map(file.tensors.map((t) => [t.name, t]));
  const info = (name: string): GgufTensorInfo => byName.get(name) ?? fail('config', `mmproj GGUF is missing tensor ${name}`);
  const { dim, hiddenDim, patchSize } = c;
  const { numPatches } = patchGrid(c);
  const vec = (name: string, n: number) => ggufVector(file, info(name), n);
  const mat = (name: string, rows: number, cols: number) => ggufFinalMatrix(file, info(name), rows, cols, finisher);
  const ffn = naming ?? detectFfnNaming(file, c);
  const [fc1Name, fc2Name] = ffn === 'legacy' ? ['ffn_down', 'ffn_up'] : ['ffn_up', 'ffn_down'];
  const layers: ClipLayerWeights[] = [];
  for (let l = 0; l < c.nLayers; l++) {
    const at = `v.blk.${l}.`;
    layers.push({
      ln1Weight: vec(`${at}ln1.weight`, dim),
      ln1Bias: vec(`${at}ln1.bias`, dim),
      wq: mat(`${at}attn_q.weight`, dim, dim),
      bq: vec(`${at}attn_q.bias`, dim),
      wk: mat(`${at}attn_k.weight`, dim, dim),
      bk: vec(`${at}attn_k.bias`, dim),
      wv: mat(`${at}attn_v.weight`, dim, dim),
      bv: vec(`${at}attn_v.bias`, dim),
      wo: mat(`${at}attn_out.weight`, dim, dim),
      bo: vec(`${at}attn_out.bias`, dim),
      ln2Weight: vec(`${at}ln2.weight`, dim),
      ln2Bias: vec(`${at}ln2.bias`, dim),
      fc1: mat(`${at}${fc1Name}.weight`, hiddenDim, dim),
      fc1Bias: vec(`${at}${fc1Name}.bias`, hiddenDim),
      fc2: mat(`${at}${fc2Name}.weight`, dim, hiddenDim),
      fc2Bias: vec(`${at}${fc2Name}.bias`, dim),
    });
  }
  const w: ClipVisionWeights = {
    // ne [p, p, 3, dim] is PyTorch's [dim, 3, p, p]: the same bytes as the (dim, 3*p*p) matrix.
    patchEmbedding: ggufFinalMatrix(file, info('v.patch_embd.weight'), dim, 3 * patchSize * patchSize, finisher, [patchSize, patchSize, 3, dim]),
    classEmbedding: vec('v.class_embd', dim),
    positionEmbedding: vec('v.position_embd.weight', (numPatches + 1) * dim),
    preLnWeight: vec('v.pre_ln.weight', dim),
    preLnBias: vec('v.pre_ln.bias', dim),
    layers,
  };
  checkClipVisionWeights(c, w);
  return w;
}

/** The projector from a llama.cpp mmproj GGUF: mm.0 (linear_1) and mm.2 (linear_2), weights and biases. */
export function projectorWeightsFromGguf(file: GgufFile, p: ProjectorConfig, finisher?: ClipMatrixFinisher): ProjectorWeights {
  const byName = new Map(file.tensors.map((t) => [t.name, t]));
  const info = (name: string): GgufTensorInfo => byName.get(name) ?? fail('config', `mmproj GGUF is missing tensor ${name}`);
  const w: ProjectorWeights = {
    linear1: ggufFinalMatrix(file, info('mm.0.weight'), p.hiddenDim, p.inDim, finisher),
    linear1Bias: ggufVector(file, info('mm.0.bias'), p.hiddenDim),
    linear2: ggufFinalMatrix(file, info('mm.2.weight'), p.outDim, p.hiddenDim, finisher),
    linear2Bias: ggufVector(file, info('mm.2.bias'), p.outDim),
  };
  checkProjectorWeights(p, w);
  return w;
}
