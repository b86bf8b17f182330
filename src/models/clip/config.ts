/**
 * Hyperparameters of LLaVA's vision side: the CLIP vision tower (Radford et al. 2021; ViT,
 * Dosovitskiy et al. 2021) and the LLaVA-1.5 MLP projector (Liu et al. 2023), following HF
 * transformers' modeling_clip.py / modeling_llava.py, read from an HF llava config.json or from
 * llama.cpp's mmproj GGUF metadata (`clip.*` keys).
 *
 * Feature layers index HF's `hidden_states` tuple: index 0 is the embeddings after pre_layrnorm,
 * index i (1..nLayers) the output of encoder layer i - 1; negative indices count from the end
 * (-1 = the last layer's output, -2 = LLaVA's default, the second to last).
 */
import { fail } from '../../core/errors.js';
import { type GgufFile, type GgufTensorInfo, metaValue } from '../../formats/gguf/reader.js';

export type ClipActivation = 'quick_gelu' | 'gelu';

export interface ClipVisionConfig {
  imageSize: number; // square input side, in pixels
  patchSize: number; // square patch side, in pixels (the conv's kernel and stride)
  channels: 3;
  dim: number; // hidden_size
  hiddenDim: number; // intermediate_size (MLP)
  nLayers: number; // encoder layers present in the weights
  nHeads: number;
  layerNormEps: number;
  act: ClipActivation; // hidden_act of the encoder MLP
}

export interface ProjectorConfig {
  inDim: number; // vision dim x number of feature layers
  hiddenDim: number; // linear_1 output
  outDim: number; // linear_2 output: the text model's embedding size
  act: 'gelu'; // projector_hidden_act (exact, erf-based GELU)
}

/** 'default' drops the CLS token (row 0) of each selected hidden state, 'full' keeps it. */
export type FeatureStrategy = 'default' | 'full';

/** Everything the vision side of a LLaVA model needs besides weights. */
export interface LlavaVisionConfig {
  vision: ClipVisionConfig;
  projector: ProjectorConfig;
  /** hidden_states indices as given (negative: from the end), concatenated along channels in this order */
  featureLayers: number[];
  strategy: FeatureStrategy;
  /** per-channel normalization the pixels were prepared with, when the source says */
  imageMean?: number[];
  imageStd?: number[];
}

/** Patches per image side and in all. */
export function patchGrid(c: ClipVisionConfig): { side: number; numPatches: number } {
  const side = c.imageSize / c.patchSize;
  return { side, numPatches: side * side };
}

export function headDim(c: ClipVisionConfig): number {
  return c.dim / c.nHeads;
}

function positiveInt(name: string, v: unknown): number {
  if (typeof v !== 'number' || !Number.isInteger(v) || v <= 0) fail('config', `${name} must be a positive integer, got ${String(v)}`);
  return v;
}

/** Checks the config is self-consistent; returns it. */
export function checkClipVisionConfig(c: ClipVisionConfig): ClipVisionConfig {
  for (const k of ['imageSize', 'patchSize', 'dim', 'hiddenDim', 'nLayers', 'nHeads'] as const) positiveInt(`clip vision ${k}`, c[k]);
  if (c.channels !== 3) fail('config', `clip vision channels must be 3, got ${String(c.channels)}`);
  if (c.imageSize % c.patchSize !== 0) fail('config', `clip vision image size ${c.imageSize} is not a multiple of the patch size ${c.patchSize}`);
  if (c.dim % c.nHeads !== 0) fail('config', `clip vision dim ${c.dim} is not a multiple of the ${c.nHeads} heads`);
  if (typeof c.layerNormEps !== 'number' || !(c.layerNormEps > 0)) fail('config', `clip vision layer norm eps must be positive, got ${String(c.layerNormEps)}`);
  if (c.act !== 'quick_gelu' && c.act !== 'gelu') fail('config', `clip vision activation must be quick_gelu or gelu, got '${String(c.act)}'`);
  return c;
}

export function checkProjectorConfig(p: ProjectorConfig): ProjectorConfig {
  for (const k of ['inDim', 'hiddenDim', 'outDim'] as const) positiveInt(`projector ${k}`, p[k]);
  if (p.act !== 'gelu') fail('config', `projector activation must be gelu, got '${String(p.act)}'`);
  return p;
}

/**
 * Feature layer indices resolved to hidden_states indices in [0, nLayers]. Duplicates are kept
 * (HF concatenates whatever list it is given).
 */
export function resolveFeatureLayers(layers: readonly number[], nLayers: number): number[] {
  if (layers.length === 0) fail('config', 'at least one vision feature layer is needed');
  return layers.map((l) => {
    if (!Number.isInteger(l)) fail('config', `vision feature layer must be an integer, got ${l}`);
    const i = l < 0 ? nLayers + 1 + l : l;
    if (i < 0 || i > nLayers) fail('config', `vision feature layer ${l} is outside hidden_states [0, ${nLayers}] (-${nLayers + 1}..${nLayers})`);
    return i;
  });
}

export function parseStrategy(v: unknown): FeatureStrategy {
  if (v === 'default' || v === 'full') return v;
  return fail('config', `vision_feature_select_strategy must be 'default' or 'full', got '${String(v)}'`);
}

function parseActivation(v: unknown, where: string): ClipActivation {
  if (v === 'quick_gelu' || v === 'gelu') return v;
  return fail('config', `${where} '${String(v)}' is not supported (supported: quick_gelu, gelu)`);
}

type Json = Record<string, unknown>;

function num(obj: Json, key: string, fallback: number): number {
  const v = obj[key];
  if (v === undefined || v === null) return fallback;
  if (typeof v !== 'number' || !Number.isFinite(v)) fail('config', `config ${key} must be a number, got ${JSON.stringify(v)}`);
  return v;
}

/** HF CLIPVisionConfig's defaults (transformers configuration_clip.py), for keys a config leaves out. */
const CLIP_VISION_DEFAULTS = {
  hidden_size: 768,
  intermediate_size: 3072,
  num_hidden_layers: 12,
  num_attention_heads: 12,
  image_size: 224,
  patch_size: 32,
  hidden_act: 'quick_gelu',
  layer_norm_eps: 1e-5,
} as const;

/** LlavaConfig's vision tower when config.json has no vision_config at all: CLIP ViT-L/14 at 336 px. */
const LLAVA_DEFAULT_VISION: Json = {
  hidden_size: 1024,
  intermediate_size: 4096,
  num_hidden_layers: 24,
  num_attention_heads: 16,
  image_size: 336,
  patch_size: 14,
  hidden_act: 'quick_gelu',
  layer_norm_eps: 1e-5,
};

/** A ClipVisionConfig from an HF CLIPVisionConfig dict (a llava config's `vision_config`). */
export function clipVisionConfigFromHf(v: Json): ClipVisionConfig {
  const channels = num(v, 'num_channels', 3);
  if (channels !== 3) fail('config', `vision_config num_channels must be 3, got ${channels}`);
  return checkClipVisionConfig({
    imageSize: num(v, 'image_size', CLIP_VISION_DEFAULTS.image_size),
    patchSize: num(v, 'patch_size', CLIP_VISION_DEFAULTS.patch_size),
    channels: 3,
    dim: num(v, 'hidden_size', CLIP_VISION_DEFAULTS.hidden_size),
    hiddenDim: num(v, 'intermediate_size', CLIP_VISION_DEFAULTS.intermediate_size),
    nLayers: num(v, 'num_hidden_layers', CLIP_VISION_DEFAULTS.num_hidden_layers),
    nHeads: num(v, 'num_attention_heads', CLIP_VISION_DEFAULTS.num_attention_heads),
    layerNormEps: num(v, 'layer_norm_eps', CLIP_VISION_DEFAULTS.layer_norm_eps),
    act: parseActivation(v.hidden_act ?? CLIP_VISION_DEFAULTS.hidden_act, 'vision_config hidden_act'),
  });
}

/**
 * The vision side of an HF llava config.json: vision_config (CLIP defaults for missing keys;
 * LlavaConfig's ViT-L/14-336 when absent), vision_feature_layer (int or list, default -2),
 * vision_feature_select_strategy (default 'default'), projector_hidden_act (default 'gelu'); the
 * projector maps dim x layers -> text hidden_size -> text hidden_size (LlamaConfig default 4096).
 */
export function llavaVisionConfigFromHf(config: Json): LlavaVisionConfig {
  const vc = config.vision_config;
  if (vc !== undefined && (typeof vc !== 'object' || vc === null)) fail('config', 'llava config vision_config must be an object');
  const vision = clipVisionConfigFromHf((vc as Json | undefined) ?? LLAVA_DEFAULT_VISION);
  const raw = config.vision_feature_layer ?? -2;
  const layers = Array.isArray(raw) ? raw : [raw];
  for (const l of layers) if (typeof l !== 'number') fail('config', `vision_feature_layer must be an integer or a list of them, got ${JSON.stringify(raw)}`);
  const featureLayers = layers as number[];
  resolveFeatureLayers(featureLayers, vision.nLayers);
  const strategy = parseStrategy(config.vision_feature_select_strategy ?? 'default');
  const act = config.projector_hidden_act ?? 'gelu';
  if (act !== 'gelu') fail('config', `projector_hidden_act '${String(act)}' is not supported (supported: gelu)`);
  if (config.multimodal_projector_bias === false) fail('config', 'multimodal_projector_bias = false is not supported (LLaVA projectors have biases)');
  const tc = (config.text_config ?? {}) as Json;
  const outDim = num(tc, 'hidden_size', 4096);
  return {
    vision,
    projector: checkProjectorConfig({ inDim: vision.dim * featureLayers.length, hiddenDim: outDim, outDim, act: 'gelu' }),
    featureLayers: [...featureLayers],
    strategy,
  };
}

// ---- mmproj GGUF -------------------------------------------------------------------------------

function ggufInt(file: GgufFile, key: string, fallback?: number): number {
  const v = metaValue(file, key);
  if (v === undefined) {
    if (fallback !== undefined) return fallback;
    fail('config', `mmproj GGUF metadata ${key} is missing`);
  }
  const n = typeof v === 'bigint' ? Number(v) : v;
  if (typeof n !== 'number' || !Number.isInteger(n)) fail('config', `mmproj GGUF metadata ${key} must be an integer, got ${String(v)}`);
  return n;
}

function ggufFloats(file: GgufFile, key: string): number[] | undefined {
  const v = metaValue(file, key);
  if (v === undefined) return undefined;
  if (!Array.isArray(v) || !v.every((x) => typeof x === 'number')) fail('config', `mmproj GGUF metadata ${key} must be an array of numbers`);
  return v as number[];
}

/**
 * The converter writes HF's decimal eps (1e-5) as an f32 (9.99999975e-6). The shortest decimal of
 * at most 7 significant digits that rounds to the same f32 recovers it, so HF and GGUF models
 * compute the same LayerNorm; any other f32 is kept as stored.
 */
function decimalOfF32(v: number): number {
  for (let digits = 1; digits <= 7; digits++) {
    const d = Number(v.toPrecision(digits));
    if (Math.fround(d) === v) return d;
  }
  return v;
}

function tensorInfo(file: GgufFile, name: string): GgufTensorInfo {
  return file.tensors.find((t) => t.name === name) ?? fail('config', `mmproj GGUF is missing tensor ${name}`);
}

export interface MmprojConfigOptions {
  /** overrides clip.vision.feature_layer (or its absence) */
  featureLayers?: number[];
  /** default 'default' (llama.cpp's LLaVA graph drops the CLS row) */
  strategy?: FeatureStrategy;
}

/**
 * The vision side of a llama.cpp mmproj GGUF (legacy convert_image_encoder_to_gguf.py layout):
 * clip.vision.{image_size, patch_size, embedding_length, feed_forward_length, block_count,
 * attention.head_count, attention.layer_norm_epsilon (f32; its decimal recovered, see decimalOfF32)}, clip.use_gelu (else quick_gelu),
 * clip.vision.image_mean/std. clip.vision.projection_dim is CLIP's own visual projection, not
 * LLaVA's: the projector's dims come from the shapes of mm.0.weight (ne [in, hidden]) and
 * mm.2.weight (ne [hidden, out]).
 *
 * Feature layers: clip.vision.feature_layer when present (the converter stores them as
 * non-negative hidden_states indices); else -2 relative to the file's block_count, which is what
 * llama.cpp's LLaVA graph runs for files without the key (all blocks but the last). Files cut by
 * an older converter to n - 1 blocks need `featureLayers: [-1]`.
 */
export function llavaVisionConfigFromGguf(file: GgufFile, opts: MmprojConfigOptions = {}): LlavaVisionConfig {
  const useGelu = metaValue(file, 'clip.use_gelu');
  const vision = checkClipVisionConfig({
    imageSize: ggufInt(file, 'clip.vision.image_size'),
    patchSize: ggufInt(file, 'clip.vision.patch_size'),
    channels: 3,
    dim: ggufInt(file, 'clip.vision.embedding_length'),
    hiddenDim: ggufInt(file, 'clip.vision.feed_forward_length'),
    nLayers: ggufInt(file, 'clip.vision.block_count'),
    nHeads: ggufInt(file, 'clip.vision.attention.head_count'),
    layerNormEps: (() => {
      const v = metaValue(file, 'clip.vision.attention.layer_norm_epsilon');
      if (v === undefined) return 1e-5;
      if (typeof v !== 'number' || !(v > 0)) fail('config', 'mmproj GGUF metadata clip.vision.attention.layer_norm_epsilon must be a positive number');
      return decimalOfF32(v);
    })(),
    act: useGelu === true ? 'gelu' : 'quick_gelu',
  });
  let featureLayers = opts.featureLayers;
  if (featureLayers === undefined) {
    const stored = metaValue(file, 'clip.vision.feature_layer');
    if (stored !== undefined) {
      if (!Array.isArray(stored) || !stored.every((x) => typeof x === 'number')) fail('config', 'mmproj GGUF metadata clip.vision.feature_layer must be an array of integers');
      featureLayers = stored as number[];
    } else featureLayers = [-2];
  }
  resolveFeatureLayers(featureLayers, vision.nLayers);
  const mm0 = tensorInfo(file, 'mm.0.weight');
  const mm2 = tensorInfo(file, 'mm.2.weight');
  if (mm0.dims.length !== 2 || mm2.dims.length !== 2) fail('shape', 'mmproj GGUF mm.0.weight and mm.2.weight must be 2-D');
  const [inDim, hiddenDim] = mm0.dims as [number, number];
  const [hidden2, outDim] = mm2.dims as [number, number];
  if (hidden2 !== hiddenDim) fail('shape', `mmproj GGUF mm.0.weight has ne [${mm0.dims.join(', ')}] but mm.2.weight has ne [${mm2.dims.join(', ')}]`);
  if (inDim !== vision.dim * featureLayers.length) {
    fail('shape', `mmproj GGUF mm.0.weight takes ${inDim} inputs, but ${featureLayers.length} feature layer(s) of ${vision.dim} give ${vision.dim * featureLayers.length}`);
  }
  const out: LlavaVisionConfig = {
    vision,
    projector: checkProjectorConfig({ inDim, hiddenDim, outDim, act: 'gelu' }),
    featureLayers: [...featureLayers],
    strategy: opts.strategy ?? 'default',
  };
  const mean = ggufFloats(file, 'clip.vision.image_mean');
  const std = ggufFloats(file, 'clip.vision.image_std');
  if (mean) out.imageMean = mean;
  if (std) out.imageStd = std;
  return out;
}
