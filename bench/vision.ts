/**
 * npm run bench:vision — encode time of a CLIP ViT-L/14-336-shaped random vision tower (24 layers,
 * dim 1024, MLP 4096, 577 tokens) in f32 and f16 weights, and the LLaVA projector.
 *
 *   --layers N       encoder layers actually run (default 2; 24 takes ~6 minutes per dtype here under the reference
 *                    kernels). The tower's time is per layer times 24 when N < 24 (every layer does the same work);
 *                    the table says which.
 *   --kernels K      wasm (default: matrices packed with packForKernels, attention on attentionWasm) or reference
 *                    (plain TypeScript ops, float64 sums)
 *   --threads N      worker threads of the wasm kernels (default 1)
 */
import { performance } from 'node:perf_hooks';
import { parseArgs } from 'node:util';
import type { DType } from '../src/core/dtype.js';
import { Tensor } from '../src/core/tensor.js';
import { Rng } from '../src/generate/rng.js';
import { setThreads } from '../src/kernels/wasm/pool.js';
import { type KernelChoice, type Matrix, packForKernels } from '../src/ops/linear.js';
import type { ClipVisionConfig, ProjectorConfig } from '../src/models/clip/config.js';
import { ClipVisionModel, LlavaProjector } from '../src/models/clip/model.js';
import type { ClipLayerWeights, ClipVisionWeights, ProjectorWeights } from '../src/models/clip/weights.js';

const { values } = parseArgs({
  options: { layers: { type: 'string', default: '2' }, kernels: { type: 'string', default: 'wasm' }, threads: { type: 'string', default: '1' } },
});
const LAYERS = Number(values.layers);
const KERNELS = values.kernels as KernelChoice;
if (KERNELS !== 'wasm' && KERNELS !== 'reference') throw new Error(`--kernels must be wasm or reference, got ${values.kernels}`);
const THREADS = Number(values.threads);
setThreads(THREADS);
const FULL: ClipVisionConfig = { imageSize: 336, patchSize: 14, channels: 3, dim: 1024, hiddenDim: 4096, nLayers: 24, nHeads: 16, layerNormEps: 1e-5, act: 'quick_gelu' };
const config: ClipVisionConfig = { ...FULL, nLayers: LAYERS };
const projector: ProjectorConfig = { inDim: 1024, hiddenDim: 768, outDim: 768, act: 'gelu' };

const rng = new Rng(1);
const vec = (n: number, std = 0.02) => Float32Array.from({ length: n }, () => (rng.nextFloat() * 2 - 1) * std * 1.7);
const mat = (rows: number, cols: number, dtype: DType) => Tensor.fromValues(vec(rows * cols, 1 / Math.sqrt(cols)), [rows, cols], dtype);

/** The weights as the loader would hand them over: packed for the wasm kernels, as made for the reference. */
function forKernels(w: { vision: ClipVisionWeights; proj: ProjectorWeights }): { vision: ClipVisionWeights; proj: ProjectorWeights } {
  const pack = (m: Matrix) => packForKernels(m, KERNELS);
  return {
    vision: {
      ...w.vision,
      patchEmbedding: pack(w.vision.patchEmbedding),
      layers: w.vision.layers.map((l) => ({ ...l, wq: pack(l.wq), wk: pack(l.wk), wv: pack(l.wv), wo: pack(l.wo), fc1: pack(l.fc1), fc2: pack(l.fc2) })),
    },
    proj: { ...w.proj, linear1: pack(w.proj.linear1), linear2: pack(w.proj.linear2) },
  };
}

function weights(dtype: DType): { vision: ClipVisionWeights; proj: ProjectorWeights } {
  const { dim, hiddenDim, patchSize: p, imageSize } = config;
  const tokens = (imageSize / p) ** 2 + 1;
  const layer = (): ClipLayerWeights => ({
    ln1Weight: vec(dim, 1), ln1Bias: vec(dim), wq: mat(dim, dim, dtype), bq: vec(dim), wk: mat(dim, dim, dtype), bk: vec(dim),
    wv: mat(dim, dim, dtype), bv: vec(dim), wo: mat(dim, dim, dtype), bo: vec(dim), ln2Weight: vec(dim, 1), ln2Bias: vec(dim),
    fc1: mat(hiddenDim, dim, dtype), fc1Bias: vec(hiddenDim), fc2: mat(dim, hiddenDim, dtype), fc2Bias: vec(dim),
  });
  return {
    vision: {
      patchEmbedding: mat(dim, 3 * p * p, dtype), classEmbedding: vec(dim), positionEmbedding: vec(tokens * dim),
      preLnWeight: vec(dim, 1), preLnBias: vec(dim), layers: Array.from({ length: config.nLayers }, layer),
    },
    proj: { linear1: mat(projector.hiddenDim, projector.inDim, dtype), linear1Bias: vec(projector.hiddenDim), linear2: mat(projector.outDim, projector.hiddenDim, dtype), linear2Bias: vec(projector.outDim) },
  };
}

const pixels = vec(3 * config.imageSize * config.imageSize, 1);
const rows: string[] = [];
for (const dtype of ['f32', 'f16'] as const) {
  const w = forKernels(weights(dtype));
  const tower = new ClipVisionModel(config, w.vision, { featureLayers: [-1], kernels: KERNELS });
  const proj = new LlavaProjector(projector, w.proj, { kernels: KERNELS });
  const t0 = performance.now();
  const features = tower.encode(pixels);
  const t1 = performance.now();
  proj.project(features, tower.outputRows);
  const t2 = performance.now();
  const perLayer = (t1 - t0) / 1000 / LAYERS;
  rows.push(`| ${dtype} | ${LAYERS} of 24 | ${((t1 - t0) / 1000).toFixed(1)} | ${(perLayer * 24).toFixed(1)}${LAYERS < 24 ? ' (24 x per layer)' : ''} | ${((t2 - t1) / 1000).toFixed(2)} |`);
}
const ops = KERNELS === 'wasm' ? 'WASM SIMD kernels (packed weights, attentionWasm)' : 'TypeScript reference ops';
console.log(`vision bench: CLIP ViT-L/14-336 shape (dim 1024, MLP 4096, 16 heads, 577 tokens), random weights, ${THREADS} thread${THREADS === 1 ? '' : 's'}, ${ops}`);
console.log('');
console.log('| weights | layers run | measured s | tower s (24 layers) | projector s (576 rows) |');
console.log('|---|---|---|---|---|');
for (const r of rows) console.log(r);
