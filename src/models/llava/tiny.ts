/**
 * `halfpipe tiny --arch llava`: a random tiny LLaVA-1.5 — CLIP vision tower (56 px images, 14 px
 * patches, dim 32, 2 layers), the MLP projector, and the tiny llama with an `<image>` token appended
 * to its vocabulary — written deterministically as:
 *
 *   --format hf    an HF LlavaForConditionalGeneration directory (config.json with text_config and
 *                  vision_config, model.safetensors with language_model.model.* /
 *                  language_model.lm_head.weight / vision_tower.vision_model.* /
 *                  multi_modal_projector.*, tokenizer files, preprocessor_config.json)
 *   --format gguf  the text model as a llama GGUF at `out` plus a llama.cpp mmproj GGUF
 *                  (general.architecture 'clip', v.* / mm.0 / mm.2 tensors) at
 *                  `mmproj-<basename of out>` beside it, which loadModel finds on its own.
 *
 * Both forms hold the same weights, so they compute the same logits for the same image and prompt.
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { basename, dirname, join } from 'node:path';
import { type DType, encode } from '../../core/dtype.js';
import { fail } from '../../core/errors.js';
import { Tensor } from '../../core/tensor.js';
import type { GgufTypedValue } from '../../formats/gguf/types.js';
import { writeGguf } from '../../formats/gguf/writer.js';
import { writeSafetensors } from '../../formats/safetensors.js';
import { Rng } from '../../generate/rng.js';
import { TOKEN_TYPE } from '../../text/gguf-tokenizer.js';
import { tinyGenerationConfig, tinyTokenizerConfig, tinyTokenizerJson, tinyVocab, type TinyVocab } from '../../text/tiny-vocab.js';
import { llamaConfigFromHf } from '../llama/config.js';
import { ggufMetadata, ggufName, normal, permuteQkRows, randomWeights, tinyHfConfig, type TinyModel, type TinyOptions } from '../tiny.js';
import { applyLlavaStress, type ImageStressInfo, type LlavaStressKind, llavaStressGgufMetadata, llavaStressHfDefaults } from './stress.js';

/** TinyOptions whose `stress` may also be a LLaVA stress kind (see stress.ts; the text kinds are refused). */
export type TinyLlavaOptions = Omit<TinyOptions, 'stress'> & { stress?: TinyOptions['stress'] | LlavaStressKind };

/** OpenAI CLIP's normalization (CLIPImageProcessor / LLaVA-1.5). */
export const CLIP_MEAN = [0.48145466, 0.4578275, 0.40821073];
export const CLIP_STD = [0.26862954, 0.26130258, 0.27577711];

export const IMAGE_TOKEN = '<image>';

/**
 * LLaVA-1.5's conversation format ("USER: <image>\n... ASSISTANT:"), for string content or
 * [{type: 'image'}, {type: 'text', text}] parts (images become `<image>\n`, as llava-hf's template does).
 */
export const LLAVA_CHAT_TEMPLATE =
  '{{ bos_token }}{% for message in messages %}' +
  "{% if message['role'] != 'system' %}{{ message['role'] | upper }}{{ ': ' }}{% endif %}" +
  "{% if message['content'] is string %}{{ message['content'] }}{% else %}" +
  "{% for part in message['content'] %}{% if part['type'] == 'image' %}{{ '<image>\\n' }}{% else %}{{ part['text'] }}{% endif %}{% endfor %}" +
  '{% endif %}' +
  "{% if message['role'] == 'assistant' %}{{ eos_token }}{% else %}{{ ' ' }}{% endif %}" +
  "{% endfor %}{% if add_generation_prompt %}{{ 'ASSISTANT:' }}{% endif %}";

/** The tiny vocabulary with `<image>` appended as a special (control) token. */
export function tinyLlavaVocab(kind: TinyVocab['kind']): TinyVocab {
  const v = tinyVocab(kind);
  return { ...v, tokens: [...v.tokens, IMAGE_TOKEN], scores: [...v.scores, 0], tokenTypes: [...v.tokenTypes, TOKEN_TYPE.CONTROL] };
}

/** The tiny CLIP vision_config (HF CLIPVisionConfig keys). */
export function tinyVisionConfig(set: Record<string, unknown> = {}): Record<string, unknown> {
  return {
    model_type: 'clip_vision_model',
    hidden_size: 32,
    intermediate_size: 64,
    num_hidden_layers: 2,
    num_attention_heads: 2,
    image_size: 56,
    patch_size: 14,
    num_channels: 3,
    hidden_act: 'quick_gelu',
    layer_norm_eps: 1e-5,
    projection_dim: 32,
    ...set,
  };
}

/**
 * LLaVA-1.5's preprocessor_config.json (LlavaImageProcessor: pad to square with the mean colour,
 * resize the shortest edge, center crop, normalize) for `imageSize`. The tiny model writes it; an
 * mmproj GGUF is given the same one from its metadata (llava/load.ts), as llama.cpp pads LLaVA-1.5
 * images too, so both forms see the same pixels.
 */
export function clipPreprocessorConfig(imageSize: number, mean: readonly number[] = CLIP_MEAN, std: readonly number[] = CLIP_STD): Record<string, unknown> {
  return {
    image_processor_type: 'LlavaImageProcessor',
    processor_class: 'LlavaProcessor',
    do_pad: true,
    do_convert_rgb: true,
    do_resize: true,
    size: { shortest_edge: imageSize },
    resample: 3,
    do_center_crop: true,
    crop_size: { height: imageSize, width: imageSize },
    do_rescale: true,
    rescale_factor: 1 / 255,
    do_normalize: true,
    image_mean: [...mean],
    image_std: [...std],
  };
}

type Weights = Map<string, { shape: number[]; values: Float64Array }>;

/** HF-named random CLIP vision tower + projector weights (prefix-less: vision_model.* and multi_modal_projector.*). */
function randomVisionWeights(v: Record<string, unknown>, textDim: number, seed: number): Weights {
  const rng = new Rng(seed ^ 0x5eed);
  const dim = v['hidden_size'] as number;
  const hidden = v['intermediate_size'] as number;
  const p = v['patch_size'] as number;
  const side = (v['image_size'] as number) / p;
  const w: Weights = new Map();
  const put = (name: string, shape: number[], std: number, mean = 0) => {
    const n = shape.reduce((a, b) => a * b, 1);
    w.set(name, { shape, values: normal(rng, n, std).map((x) => x + mean) });
  };
  const vp = 'vision_tower.vision_model.';
  put(`${vp}embeddings.class_embedding`, [dim], 0.5);
  put(`${vp}embeddings.patch_embedding.weight`, [dim, 3, p, p], 1 / Math.sqrt(3 * p * p));
  put(`${vp}embeddings.position_embedding.weight`, [side * side + 1, dim], 0.5);
  put(`${vp}pre_layrnorm.weight`, [dim], 0.1, 1);
  put(`${vp}pre_layrnorm.bias`, [dim], 0.1);
  const layers = v['num_hidden_layers'] as number;
  for (let l = 0; l < layers; l++) {
    const at = `${vp}encoder.layers.${l}.`;
    put(`${at}layer_norm1.weight`, [dim], 0.1, 1);
    put(`${at}layer_norm1.bias`, [dim], 0.1);
    for (const m of ['q_proj', 'k_proj', 'v_proj', 'out_proj']) {
      put(`${at}self_attn.${m}.weight`, [dim, dim], 1 / Math.sqrt(dim));
      put(`${at}self_attn.${m}.bias`, [dim], 0.1);
    }
    put(`${at}layer_norm2.weight`, [dim], 0.1, 1);
    put(`${at}layer_norm2.bias`, [dim], 0.1);
    put(`${at}mlp.fc1.weight`, [hidden, dim], 1 / Math.sqrt(dim));
    put(`${at}mlp.fc1.bias`, [hidden], 0.1);
    put(`${at}mlp.fc2.weight`, [dim, hidden], 1 / Math.sqrt(hidden));
    put(`${at}mlp.fc2.bias`, [dim], 0.1);
  }
  put(`${vp}post_layernorm.weight`, [dim], 0.1, 1);
  put(`${vp}post_layernorm.bias`, [dim], 0.1);
  put('multi_modal_projector.linear_1.weight', [textDim, dim], 1 / Math.sqrt(dim));
  put('multi_modal_projector.linear_1.bias', [textDim], 0.1);
  // Image embeddings about as large as token embeddings (std 1).
  put('multi_modal_projector.linear_2.weight', [textDim, textDim], 1 / Math.sqrt(textDim));
  put('multi_modal_projector.linear_2.bias', [textDim], 0.1);
  return w;
}

/** llama.cpp mmproj name of an HF vision/projector tensor name (fc1 as ffn_up: gguf-py's map). */
function mmprojName(hf: string): string {
  const fixed: Record<string, string> = {
    'vision_tower.vision_model.embeddings.class_embedding': 'v.class_embd',
    'vision_tower.vision_model.embeddings.patch_embedding.weight': 'v.patch_embd.weight',
    'vision_tower.vision_model.embeddings.position_embedding.weight': 'v.position_embd.weight',
    'vision_tower.vision_model.pre_layrnorm.weight': 'v.pre_ln.weight',
    'vision_tower.vision_model.pre_layrnorm.bias': 'v.pre_ln.bias',
    'vision_tower.vision_model.post_layernorm.weight': 'v.post_ln.weight',
    'vision_tower.vision_model.post_layernorm.bias': 'v.post_ln.bias',
    'multi_modal_projector.linear_1.weight': 'mm.0.weight',
    'multi_modal_projector.linear_1.bias': 'mm.0.bias',
    'multi_modal_projector.linear_2.weight': 'mm.2.weight',
    'multi_modal_projector.linear_2.bias': 'mm.2.bias',
  };
  if (fixed[hf]) return fixed[hf];
  const m = /^vision_tower\.vision_model\.encoder\.layers\.(\d+)\.(.+)\.(weight|bias)$/.exec(hf);
  const parts: Record<string, string> = {
    layer_norm1: 'ln1',
    layer_norm2: 'ln2',
    'self_attn.q_proj': 'attn_q',
    'self_attn.k_proj': 'attn_k',
    'self_attn.v_proj': 'attn_v',
    'self_attn.out_proj': 'attn_out',
    'mlp.fc1': 'ffn_up',
    'mlp.fc2': 'ffn_down',
  };
  if (!m || !parts[m[2]!]) return fail('usage', `no mmproj name for ${hf}`);
  return `v.blk.${m[1]}.${parts[m[2]!]}.${m[3]}`;
}

/** Where `halfpipe tiny --arch llava --format gguf --out X` puts the mmproj file. */
export function tinyMmprojPath(textGguf: string): string {
  return join(dirname(textGguf), `mmproj-${basename(textGguf)}`);
}

const u32 = (value: number): GgufTypedValue => ({ type: 'u32', value });
const f32 = (value: number): GgufTypedValue => ({ type: 'f32', value });
const str = (value: string): GgufTypedValue => ({ type: 'string', value });
const bool = (value: boolean): GgufTypedValue => ({ type: 'bool', value });

function ggufData(values: Float64Array, dtype: DType): { type: 'F32' | 'F16' | 'BF16'; data: Uint8Array } {
  const stored = encode(dtype, values);
  return { type: ({ f32: 'F32', f16: 'F16', bf16: 'BF16' } as const)[dtype], data: new Uint8Array(stored.buffer, stored.byteOffset, stored.byteLength) };
}

/** The anyres resolutions of the tiny LLaVA-NeXT: 1x2, 2x1 and 2x2 grids of 56 px tiles. */
export const TINY_NEXT_PINPOINTS: Array<[number, number]> = [
  [56, 112],
  [112, 56],
  [112, 112],
];

/**
 * Writes the tiny LLaVA (see the file comment). `opts.set` overrides text_config keys. `variant`
 * 'llava_next' writes a LlavaNextForConditionalGeneration HF directory instead (same towers, plus
 * image_newline and image_grid_pinpoints; not available as GGUF).
 */
export function writeTinyLlava(
  opts: TinyLlavaOptions,
  variant: 'llava' | 'llava_next' = 'llava',
): TinyModel & { mmproj?: string; imageTokenId: number; imageStress?: ImageStressInfo } {
  const dtype = opts.dtype ?? 'f32';
  const seed = opts.seed ?? 0;
  if (opts.quant) fail('usage', '--quant is not supported with --arch llava');
  const isNext = variant === 'llava_next';
  if (opts.stress && isNext) fail('usage', '--stress is not supported with the tiny LLaVA-NeXT');
  const stressDefaults = opts.stress ? llavaStressHfDefaults(opts.stress) : {};
  if (isNext && opts.format !== 'hf') fail('usage', 'the tiny LLaVA-NeXT is written as an HF directory only');
  const vocab = tinyLlavaVocab(opts.vocab ?? 'llama');
  const imageTokenId = vocab.tokens.length - 1;
  const textHf = { ...tinyHfConfig(vocab, undefined, { ...stressDefaults, ...(opts.set ?? {}) }), model_type: 'llama' };
  const text = llamaConfigFromHf(textHf);
  if (text.vocabSize !== vocab.tokens.length) fail('usage', `vocab_size must be ${vocab.tokens.length} (the tiny tokenizer's size), got ${text.vocabSize}`);
  const visionHf = tinyVisionConfig();
  const hf: Record<string, unknown> = {
    architectures: ['LlavaForConditionalGeneration'],
    model_type: 'llava',
    text_config: textHf,
    vision_config: visionHf,
    image_token_index: imageTokenId,
    image_seq_length: ((visionHf['image_size'] as number) / (visionHf['patch_size'] as number)) ** 2,
    vision_feature_layer: -2,
    vision_feature_select_strategy: 'default',
    projector_hidden_act: 'gelu',
    multimodal_projector_bias: true,
    tie_word_embeddings: false,
    torch_dtype: 'float32',
  };
  if (isNext) {
    hf['architectures'] = ['LlavaNextForConditionalGeneration'];
    hf['model_type'] = 'llava_next';
    hf['image_grid_pinpoints'] = TINY_NEXT_PINPOINTS;
    delete hf['image_seq_length'];
  }
  const textWeights = randomWeights(text, seed);
  const visionWeights = randomVisionWeights(visionHf, text.dim, seed);
  const imageStress = opts.stress ? applyLlavaStress(opts.stress, textWeights, visionWeights, text) : undefined;
  if (imageStress) hf['halfpipe_stress'] = imageStress;
  const stressed = imageStress ? { imageStress } : {};
  const template = LLAVA_CHAT_TEMPLATE;

  if (opts.format === 'hf') {
    mkdirSync(opts.out, { recursive: true });
    const json = (name: string, value: unknown) => writeFileSync(join(opts.out, name), `${JSON.stringify(value, null, 2)}\n`);
    json('config.json', { ...hf, torch_dtype: { f32: 'float32', f16: 'float16', bf16: 'bfloat16' }[dtype] });
    json('generation_config.json', tinyGenerationConfig(vocab));
    json('tokenizer.json', tinyTokenizerJson(vocab));
    json('tokenizer_config.json', tinyTokenizerConfig(vocab, template));
    const size = visionHf['image_size'] as number;
    json(
      'preprocessor_config.json',
      isNext ? { ...clipPreprocessorConfig(size), image_processor_type: 'LlavaNextImageProcessor', image_grid_pinpoints: TINY_NEXT_PINPOINTS } : clipPreprocessorConfig(size),
    );
    if (isNext) {
      const rng = new Rng(seed ^ 0x1e57);
      visionWeights.set('image_newline', { shape: [text.dim], values: normal(rng, text.dim, 1) });
    }
    const tensors = [
      ...[...textWeights].map(([name, w]) => ({ name: `language_model.${name}`, tensor: Tensor.fromValues(w.values, w.shape, dtype) })),
      ...[...visionWeights].map(([name, w]) => ({ name, tensor: Tensor.fromValues(w.values, w.shape, w.shape.length === 1 ? 'f32' : dtype) })),
    ];
    writeSafetensors(join(opts.out, 'model.safetensors'), tensors, { format: 'pt' });
    return { path: opts.out, hfConfig: hf, config: text, imageTokenId, ...stressed };
  }

  // Text GGUF: exactly what `halfpipe tiny` writes for llama, with the longer vocabulary.
  const textTensors = [...textWeights].map(([name, w]) => {
    let values = w.values;
    if (name.endsWith('q_proj.weight')) values = permuteQkRows(values, text.nHeads, text.headDim, w.shape[1]!);
    if (name.endsWith('k_proj.weight')) values = permuteQkRows(values, text.nKvHeads, text.headDim, w.shape[1]!);
    return { name: ggufName(name), dims: [...w.shape].reverse(), ...ggufData(values, w.shape.length === 1 ? 'f32' : dtype) };
  });
  const textMeta: Array<[string, GgufTypedValue]> = ggufMetadata(text, textHf, vocab, template).map(([k, v]) =>
    k === 'general.name' ? [k, str('halfpipe tiny llava (text)')] : [k, v],
  );
  if (imageStress) textMeta.push(...llavaStressGgufMetadata(imageStress));
  mkdirSync(dirname(opts.out), { recursive: true });
  writeGguf(opts.out, { metadata: textMeta, tensors: textTensors });

  const mmproj = tinyMmprojPath(opts.out);
  const v = visionHf as Record<string, number>;
  const mmTensors = [...visionWeights].map(([name, w]) => ({ name: mmprojName(name), dims: [...w.shape].reverse(), ...ggufData(w.values, w.shape.length === 1 ? 'f32' : dtype) }));
  const mmMeta: Array<[string, GgufTypedValue]> = [
    ['general.architecture', str('clip')],
    ['general.name', str('halfpipe tiny llava (mmproj)')],
    ['general.alignment', u32(32)],
    ['clip.has_text_encoder', bool(false)],
    ['clip.has_vision_encoder', bool(true)],
    ['clip.projector_type', str('mlp')],
    ['clip.use_gelu', bool(false)],
    ['clip.vision.image_size', u32(v['image_size']!)],
    ['clip.vision.patch_size', u32(v['patch_size']!)],
    ['clip.vision.embedding_length', u32(v['hidden_size']!)],
    ['clip.vision.feed_forward_length', u32(v['intermediate_size']!)],
    ['clip.vision.projection_dim', u32(text.dim)],
    ['clip.vision.block_count', u32(v['num_hidden_layers']!)],
    ['clip.vision.attention.head_count', u32(v['num_attention_heads']!)],
    ['clip.vision.attention.layer_norm_epsilon', f32(v['layer_norm_eps']!)],
    ['clip.vision.image_mean', { type: 'array', itemType: 'f32', value: CLIP_MEAN }],
    ['clip.vision.image_std', { type: 'array', itemType: 'f32', value: CLIP_STD }],
  ];
  writeGguf(mmproj, { metadata: mmMeta, tensors: mmTensors });
  return { path: opts.out, hfConfig: hf, config: text, mmproj, imageTokenId, ...stressed };
}
