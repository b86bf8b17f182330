/**
 * LLaVA hyperparameters from an HF config.json (transformers' LlavaConfig / LlavaNextConfig):
 *
 *   architectures                  LlavaForConditionalGeneration | LlavaNextForConditionalGeneration
 *   text_config                    the language model's LlamaConfig (model_type llama or mistral;
 *                                  LlamaConfig defaults for missing keys, as transformers does)
 *   vision_config                  CLIPVisionConfig (parsed by ../clip/config.ts)
 *   image_token_index              the `<image>` placeholder id (alias image_token_id; default 32000)
 *   vision_feature_layer           int or list (default -2)
 *   vision_feature_select_strategy 'default' (drop CLS) | 'full'
 *   projector_hidden_act           'gelu'
 *   image_grid_pinpoints           NeXT only: [[h, w], ...] candidate anyres resolutions
 */
import { fail } from '../../core/errors.js';
import { type FeatureStrategy, type LlavaVisionConfig, llavaVisionConfigFromHf } from '../clip/config.js';
import { llamaConfigFromHf, type LlamaConfig } from '../llama/config.js';

export type LlavaArch = 'llava' | 'llava_next';

export const SUPPORTED_LLAVA_ARCHITECTURES: Readonly<Record<string, LlavaArch>> = Object.freeze({
  LlavaForConditionalGeneration: 'llava',
  LlavaNextForConditionalGeneration: 'llava_next',
});

export interface LlavaNextConfig {
  /** candidate (height, width) resolutions of the anyres grid */
  gridPinpoints: Array<[number, number]>;
  /** how the grid's features are packed: 'spatial_unpad' (HF LlavaNext) */
  mergeType: 'spatial_unpad';
}

export interface LlavaConfig {
  arch: LlavaArch;
  text: LlamaConfig;
  vision: LlavaVisionConfig;
  imageTokenId: number;
  /** as in vision.featureLayers (hidden_states indices, negative from the end) */
  featureLayers: number[];
  strategy: FeatureStrategy;
  projectorAct: 'gelu';
  next?: LlavaNextConfig;
}

/** transformers' LlamaConfig defaults, for the keys a llava text_config leaves out. */
const LLAMA_DEFAULTS: Record<string, unknown> = {
  vocab_size: 32000,
  hidden_size: 4096,
  intermediate_size: 11008,
  num_hidden_layers: 32,
  num_attention_heads: 32,
  max_position_embeddings: 2048,
  rms_norm_eps: 1e-6,
};

const TEXT_ARCHS: Record<string, string> = { llama: 'LlamaForCausalLM', mistral: 'MistralForCausalLM' };

/** Whether an HF config.json describes a LLaVA model (by its architectures). */
export function isLlavaHfConfig(config: Record<string, unknown>): boolean {
  const archs = config['architectures'];
  return Array.isArray(archs) && archs.some((a) => typeof a === 'string' && Object.hasOwn(SUPPORTED_LLAVA_ARCHITECTURES, a));
}

function llavaArch(config: Record<string, unknown>): LlavaArch {
  const supported = Object.keys(SUPPORTED_LLAVA_ARCHITECTURES).join(', ');
  const archs = config['architectures'];
  if (!Array.isArray(archs) || archs.length === 0) fail('config', `config.json has no "architectures" (supported: ${supported})`);
  for (const a of archs) if (typeof a === 'string' && Object.hasOwn(SUPPORTED_LLAVA_ARCHITECTURES, a)) return SUPPORTED_LLAVA_ARCHITECTURES[a]!;
  return fail('config', `unsupported architecture ${archs.map((a) => JSON.stringify(a)).join(', ')} (supported: ${supported})`);
}

/** The language model's config from text_config (with the top-level ids a llava config carries). */
function textConfig(config: Record<string, unknown>): LlamaConfig {
  const tc = config['text_config'] ?? {};
  if (typeof tc !== 'object' || tc === null || Array.isArray(tc)) fail('config', 'llava config text_config must be an object');
  const t = tc as Record<string, unknown>;
  const modelType = t['model_type'] ?? 'llama';
  const arch = typeof modelType === 'string' ? TEXT_ARCHS[modelType] : undefined;
  if (!arch) fail('config', `llava text_config model_type ${JSON.stringify(modelType)} is not supported (supported: ${Object.keys(TEXT_ARCHS).join(', ')})`);
  const merged: Record<string, unknown> = { ...LLAMA_DEFAULTS, ...t, architectures: [arch] };
  // Some llava configs keep the ids and tying flag at the top level only.
  for (const key of ['bos_token_id', 'eos_token_id', 'tie_word_embeddings']) {
    if (!(key in t) && key in config) merged[key] = config[key];
  }
  return llamaConfigFromHf(merged);
}

function pinpoints(v: unknown): Array<[number, number]> {
  if (!Array.isArray(v) || v.length === 0) fail('config', `image_grid_pinpoints must be a non-empty list of [height, width], got ${JSON.stringify(v)}`);
  return v.map((p) => {
    if (!Array.isArray(p) || p.length !== 2 || !p.every((x) => typeof x === 'number' && Number.isInteger(x) && x > 0)) {
      fail('config', `image_grid_pinpoints entries must be [height, width] positive integers, got ${JSON.stringify(p)}`);
    }
    return [p[0], p[1]] as [number, number];
  });
}

/** A resolved LlavaConfig from a parsed HF config.json; one-line HalfpipeError('config') on problems. */
export function llavaConfigFromHf(config: Record<string, unknown>): LlavaConfig {
  if (typeof config !== 'object' || config === null || Array.isArray(config)) fail('config', 'config must be an object (a parsed config.json)');
  const arch = llavaArch(config);
  const text = textConfig(config);
  const vision = llavaVisionConfigFromHf(config);
  if (vision.projector.outDim !== text.dim) fail('config', `the projector outputs ${vision.projector.outDim} values but the text model's hidden_size is ${text.dim}`);
  const rawId = config['image_token_index'] ?? config['image_token_id'] ?? 32000;
  if (typeof rawId !== 'number' || !Number.isInteger(rawId) || rawId < 0 || rawId >= text.vocabSize) {
    fail('config', `image_token_index must be a token id in [0, ${text.vocabSize}), got ${JSON.stringify(rawId)}`);
  }
  const out: LlavaConfig = {
    arch,
    text,
    vision,
    imageTokenId: rawId,
    featureLayers: [...vision.featureLayers],
    strategy: vision.strategy,
    projectorAct: vision.projector.act,
  };
  if (arch === 'llava_next') {
    const grid = config['image_grid_pinpoints'] ?? [[336, 672], [672, 336], [672, 672], [1008, 336], [336, 1008]];
    out.next = { gridPinpoints: pinpoints(grid), mergeType: 'spatial_unpad' };
  }
  return out;
}
