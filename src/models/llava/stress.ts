/**
 * The tiny LLaVA's stress edit: `writeTinyLlava({ ..., stress: 'image-overflow' })` (`halfpipe tiny
 * --arch llava --stress image-overflow`) reproduces the failure halfpipe was founded on: image
 * features whose tokens carry a few huge channels (LLaVA-style projected CLIP features have norms
 * far above text embeddings) go through the language model fine in f32, but a downstream MLP
 * down_proj output on the image tokens passes 65504 and an engine that stores activations in f16
 * turns it into inf, then NaN (the next layer's RMSNorm divides inf by inf). Text-only prompts never
 * come near the f16 range: the edit is exactly silent on text tokens.
 *
 * Notation: C = {c1, c2} the massive channels (round(5 dim / 16), round(11 dim / 16)), o the overflow
 * channel (round(3 dim / 16)), L = nLayers - 2 the overflow layer (one layer follows it, so the inf
 * reaches attention and turns into NaN), hO = floor(3 hiddenDim / 4) the MLP hidden unit used in L,
 * g_L the post_attention_layernorm weight of layer L, matrices (out, in) as HF stores them. Edits,
 * all in float64 before the weights are written (so HF and GGUF forms hold the same values):
 *
 *  1. Massive image channels. multi_modal_projector.linear_2.weight[c, :] = 0 and
 *     linear_2.bias[c] = MASSIVE (2500) for c in C: every image token's projected feature holds
 *     exactly MASSIVE in C (2500 is exact in f16 too, so naive-f16's f16 projector gives the same).
 *  2. Silent text. embed_tokens[t, c] = 0 for every token t, and self_attn.o_proj[c, :] = 0 and
 *     mlp.down_proj[c, :] = 0 in every layer (c in C): nothing but the image features writes C, so a
 *     text token holds exactly 0 in C in every layer and an image token exactly MASSIVE.
 *  3. Overflow unit (layer L, unit hO). gate[hO, :] = up[hO, :] = 0 but for gate[hO, c] = up[hO, c] =
 *     s / g_L[c] with s = OVERFLOW_GATE / sqrt(2 dim), so gate = up = s (x[c1] + x[c2]) / rms(x):
 *     exactly 0 on a text token (silu(0) * 0 = 0: the unit adds exactly 0 there) and, on an image
 *     token, 2 s MASSIVE / rms(x) = OVERFLOW_GATE (45) * (1 - O(r^2 / 4 MASSIVE^2)), r^2 the sum of
 *     squares of the other channels (~1e-5 relative). down[:, hO] = 0 but for down[o, hO] =
 *     OVERFLOW / (silu(45) * 45): the down_proj output in channel o is ~OVERFLOW (80000) on every
 *     image token, 0 from this unit elsewhere.
 *  4. Decisive logits. model.norm.weight *= LOGIT_GAIN (4): random weights give logits of std ~1
 *     whose top two are often within f16 rounding of each other; std ~4 separates greedy choices,
 *     so safe-f16 and f32 pick the same tokens.
 *
 * Under f32 the overflow value stays finite (~8e4) and the model is an ordinary (if odd) model;
 * naive-f16 rounds down_proj's output to f16 (inf at layer L on the image tokens, then NaN); safe-f16
 * keeps down_proj, the residual stream and the vision side in f32 and stays finite.
 */
import { fail } from '../../core/errors.js';
import type { GgufTypedValue } from '../../formats/gguf/types.js';
import type { LlamaConfig } from '../llama/config.js';

export const LLAVA_STRESS_KINDS = ['image-overflow'] as const;
export type LlavaStressKind = (typeof LLAVA_STRESS_KINDS)[number];

export interface ImageStressInfo {
  kind: LlavaStressKind;
  /** text-model residual channels that hold massiveValue on every image token, in every layer (0 on text tokens) */
  massiveChannels: number[];
  /** their value on image tokens (the projector's output there) */
  massiveValue: number;
  /** the layer whose MLP down_proj output passes 65504 on the image tokens */
  overflowLayer: number;
  /** the channel of that down_proj output */
  overflowChannel: number;
  /** the MLP hidden unit of overflowLayer that produces it */
  overflowUnit: number;
  /** the design value of that output on an image token (actual: within ~1e-4 of it in f32) */
  overflowValue: number;
}

/** HF-named float64 weights as tiny.ts makes them: (out, in) row-major. */
export type HfWeights = Map<string, { shape: number[]; values: Float64Array }>;

/** Layers an image-overflow model needs: the overflow layer and one after it. */
export const IMAGE_STRESS_MIN_LAYERS = 2;
/** The text layer count the image-overflow model uses unless num_hidden_layers is set. */
export const IMAGE_STRESS_DEFAULT_LAYERS = 4;

const MASSIVE = 2500;
const OVERFLOW = 80000;
const OVERFLOW_GATE = 45;
const LOGIT_GAIN = 4;

function checkKind(kind: string): asserts kind is LlavaStressKind {
  if (!(LLAVA_STRESS_KINDS as readonly string[]).includes(kind)) fail('usage', `--stress ${kind} is not supported with --arch llava (supported: ${LLAVA_STRESS_KINDS.join(', ')})`);
}

/** text_config values the stress kind needs unless the user sets them. */
export function llavaStressHfDefaults(kind: string): Record<string, unknown> {
  checkKind(kind);
  return { num_hidden_layers: IMAGE_STRESS_DEFAULT_LAYERS };
}

/** The ImageStressInfo as GGUF metadata of the text GGUF: halfpipe.stress.kind, ... */
export function llavaStressGgufMetadata(info: ImageStressInfo): Array<[string, GgufTypedValue]> {
  const u32 = (value: number): GgufTypedValue => ({ type: 'u32', value });
  const f32 = (value: number): GgufTypedValue => ({ type: 'f32', value });
  return [
    ['halfpipe.stress.kind', { type: 'string', value: info.kind }],
    ['halfpipe.stress.massive_channels', { type: 'array', itemType: 'u32', value: info.massiveChannels }],
    ['halfpipe.stress.massive_value', f32(info.massiveValue)],
    ['halfpipe.stress.overflow_layer', u32(info.overflowLayer)],
    ['halfpipe.stress.overflow_channel', u32(info.overflowChannel)],
    ['halfpipe.stress.overflow_unit', u32(info.overflowUnit)],
    ['halfpipe.stress.overflow_value', f32(info.overflowValue)],
  ];
}

/**
 * Edits the tiny LLaVA's HF-named float64 weights in place (see the file comment): `text` holds
 * model.* / lm_head.* names (no language_model. prefix), `vision` multi_modal_projector.* among others.
 */
export function applyLlavaStress(kind: string, text: HfWeights, vision: HfWeights, c: LlamaConfig): ImageStressInfo {
  checkKind(kind);
  const { dim, hiddenDim, nLayers } = c;
  if (nLayers < IMAGE_STRESS_MIN_LAYERS) fail('usage', `--stress ${kind} needs at least ${IMAGE_STRESS_MIN_LAYERS} text layers, got ${nLayers}`);
  if (dim < 8) fail('usage', `--stress ${kind} needs hidden_size >= 8 (three distinct channels), got ${dim}`);
  const get = (w: HfWeights, name: string) => w.get(name) ?? fail('config', `applyLlavaStress: missing weight ${name}`);
  const layer = (l: number, name: string) => get(text, `model.layers.${l}.${name}.weight`).values;
  const massive = [Math.round((5 * dim) / 16), Math.round((11 * dim) / 16)];
  const overflowChannel = Math.round((3 * dim) / 16);
  const overflowLayer = nLayers - 2;
  const unit = Math.floor((3 * hiddenDim) / 4);

  // 1. Massive image channels: the projector's last linear writes the constant MASSIVE to C.
  const w2 = get(vision, 'multi_modal_projector.linear_2.weight');
  const b2 = get(vision, 'multi_modal_projector.linear_2.bias').values;
  const cols = w2.shape[1]!;
  if (w2.shape[0] !== dim) fail('config', `applyLlavaStress: the projector writes ${w2.shape[0]} channels, the text model has ${dim}`);
  for (const ch of massive) {
    w2.values.fill(0, ch * cols, (ch + 1) * cols);
    b2[ch] = MASSIVE;
  }

  // 2. Silent text: no token embedding, attention output or MLP output writes C.
  const embed = get(text, 'model.embed_tokens.weight').values;
  for (let t = 0; t < c.vocabSize; t++) for (const ch of massive) embed[t * dim + ch] = 0;
  for (let l = 0; l < nLayers; l++) {
    for (const [name, n] of [['self_attn.o_proj', c.nHeads * c.headDim], ['mlp.down_proj', hiddenDim]] as const) {
      const w = layer(l, name);
      for (const ch of massive) w.fill(0, ch * n, (ch + 1) * n);
    }
  }

  // 3. Overflow unit: gate = up = OVERFLOW_GATE on image tokens, 0 on text tokens.
  const norm = layer(overflowLayer, 'post_attention_layernorm');
  const s = OVERFLOW_GATE / Math.sqrt(2 * dim);
  for (const w of [layer(overflowLayer, 'mlp.gate_proj'), layer(overflowLayer, 'mlp.up_proj')]) {
    w.fill(0, unit * dim, (unit + 1) * dim);
    for (const ch of massive) w[unit * dim + ch] = s / norm[ch]!;
  }
  const act = (OVERFLOW_GATE / (1 + Math.exp(-OVERFLOW_GATE))) * OVERFLOW_GATE;
  const down = layer(overflowLayer, 'mlp.down_proj');
  for (let ch = 0; ch < dim; ch++) down[ch * hiddenDim + unit] = 0;
  down[overflowChannel * hiddenDim + unit] = OVERFLOW / act;

  // 4. Decisive logits.
  const finalNorm = get(text, 'model.norm.weight').values;
  for (let i = 0; i < dim; i++) finalNorm[i] = finalNorm[i]! * LOGIT_GAIN;

  return { kind, massiveChannels: massive, massiveValue: MASSIVE, overflowLayer, overflowChannel, overflowUnit: unit, overflowValue: OVERFLOW };
}
