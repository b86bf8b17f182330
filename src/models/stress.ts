/**
 * Stress models: tiny LLaMA weights edited on purpose so that they reproduce a known half-precision
 * failure while staying finite and well-behaved in f32 (`halfpipe tiny --stress <kind>`).
 *
 * 'massive-activations' reproduces the failure halfpipe started from (Sun et al. 2024, "Massive
 * Activations in Large Language Models"; HF transformers issue 27179): LLaMA-2-7B's residual stream
 * holds a few values ~2.8k in two fixed channels, on the start token and on "." / "\n", from layer 2
 * on, and in fp16 a later MLP down_proj output passes 65504 and becomes inf, then NaN.
 *
 * Notation: C = {c1, c2} the massive channels, o the overflow channel, T the trigger tokens (BOS and
 * the "." tokens), W = 1 the layer whose MLP writes the massive values, L = nLayers - 1 the overflow
 * layer, hW and hO the MLP hidden units used in W and L, g_l the post_attention_layernorm weight of
 * layer l, rows (out, in) as HF stores them. The edits:
 *
 *  1. Marker. E[t, c] = MARKER for t in T, E[t, c] = 0 for every other token (c in C): only the
 *     trigger tokens carry anything in the massive channels.
 *  2. Silence. o_proj[c, :] = 0 and down_proj[c, :] = 0 in every layer (c in C), except the writer's
 *     column below: nothing else ever writes C, so for other tokens x[c] stays exactly 0 and for
 *     trigger tokens x[c] is MARKER, then MARKER + the writer's output, in every layer.
 *  3. Writer (layer W, unit hW): gate[hW, :] = 0 but gate[hW, c] = WRITER_GAIN / g_W[c], the same for
 *     up, so gate = up = WRITER_GAIN * sum_c x[c] / rms(x): exactly 0 (silu(0) * 0 = 0) for every
 *     non-trigger token, a ~20 for trigger tokens. down[:, hW] = 0 but down[c, hW] = (MASSIVE -
 *     MARKER) / a_W, a_W the unit's activation for BOS at position 0: the residual of BOS holds
 *     exactly MASSIVE in both channels from layer W on; "." tokens, whose rms depends on their
 *     context, land within ~15% of it.
 *  4. Overflow (layer L, unit hO): gate/up rows as in 3 with OVERFLOW_GAIN / g_L[c]. A trigger
 *     token's rms is now dominated by C, so x[c] / rms(x) ~ sqrt(dim / 2) whatever the context, and
 *     the unit's activation a is nearly the same on every trigger token. down[:, hO] = 0 but
 *     down[o, hO] = OVERFLOW / a_L (a_L: BOS at position 0): the down output in channel o reaches
 *     ~OVERFLOW > 65504 on trigger tokens and is exactly 0 from this unit on the others.
 *
 * Every value stays finite in f32; the f32 model is an ordinary random model on the other tokens.
 * a_W and a_L come from an f64 forward of one token at position 0 (attention there is the identity
 * on v, RoPE a no-op), on the edited weights.
 */
import { fail } from '../core/errors.js';
import type { GgufTypedValue } from '../formats/gguf/types.js';
import type { TinyVocab } from '../text/tiny-vocab.js';
import type { LlamaConfig } from './llama/config.js';

export const STRESS_KINDS = ['massive-activations'] as const;
export type StressKind = (typeof STRESS_KINDS)[number];

export interface StressInfo {
  kind: StressKind;
  /** residual channels that hold ~MASSIVE on the trigger tokens from massiveLayer on */
  massiveChannels: number[];
  /** token ids that carry them: BOS, then the "." tokens */
  triggerTokens: number[];
  /** the layer whose MLP writes the massive channels */
  massiveLayer: number;
  /** the layer whose MLP down_proj output passes 65504 on the trigger tokens */
  overflowLayer: number;
  /** the channel of that down_proj output */
  overflowChannel: number;
  /** the massive channels' value on BOS at position 0, from massiveLayer on */
  massiveValue: number;
  /** the overflow layer's down_proj output in overflowChannel on BOS at position 0 */
  overflowValue: number;
}

/** HF-named weights as tiny.ts makes them: (out, in) row-major, float64. */
export type HfWeights = Map<string, { shape: number[]; values: Float64Array }>;

/** Layers a massive-activations model needs: the writer layer 1, at least one after it for the overflow. */
export const MASSIVE_MIN_LAYERS = 3;
/** The layer count `halfpipe tiny --stress massive-activations` uses unless num_hidden_layers is set. */
export const MASSIVE_DEFAULT_LAYERS = 4;

const MARKER = 16;
const MASSIVE = 2500;
const OVERFLOW = 80000;
const WRITER_GAIN = 2;
const OVERFLOW_GAIN = 4;
const WRITER_LAYER = 1;

/**
 * The trigger tokens of a tiny vocabulary: BOS, then every token whose text is "." (a SentencePiece
 * byte-fallback "<0x2E>" included), optionally followed by newlines (byte-level ".\n").
 */
export function triggerTokens(vocab: TinyVocab): number[] {
  const ids = [vocab.bosId];
  vocab.tokens.forEach((t, id) => {
    if (id !== vocab.bosId && /^(\.|<0x2E>)(\n|Ċ)*$/.test(t)) ids.push(id);
  });
  return ids;
}

/** HF config.json values a stress kind needs unless the user sets them. */
export function stressHfDefaults(kind: StressKind): Record<string, unknown> {
  if (kind !== 'massive-activations') fail('usage', `unknown stress kind '${String(kind)}' (supported: ${STRESS_KINDS.join(', ')})`);
  return { num_hidden_layers: MASSIVE_DEFAULT_LAYERS };
}

/** The StressInfo as GGUF metadata: halfpipe.stress.kind, halfpipe.stress.massive_channels, ... */
export function stressGgufMetadata(info: StressInfo): Array<[string, GgufTypedValue]> {
  const u32 = (value: number): GgufTypedValue => ({ type: 'u32', value });
  const u32s = (value: number[]): GgufTypedValue => ({ type: 'array', itemType: 'u32', value });
  const f32 = (value: number): GgufTypedValue => ({ type: 'f32', value });
  return [
    ['halfpipe.stress.kind', { type: 'string', value: info.kind }],
    ['halfpipe.stress.massive_channels', u32s(info.massiveChannels)],
    ['halfpipe.stress.trigger_tokens', u32s(info.triggerTokens)],
    ['halfpipe.stress.massive_layer', u32(info.massiveLayer)],
    ['halfpipe.stress.overflow_layer', u32(info.overflowLayer)],
    ['halfpipe.stress.overflow_channel', u32(info.overflowChannel)],
    ['halfpipe.stress.massive_value', f32(info.massiveValue)],
    ['halfpipe.stress.overflow_value', f32(info.overflowValue)],
  ];
}

/** Edits HF-named float64 weights (as tiny.ts's randomWeights makes them) in place. */
export function applyStress(kind: StressKind, weights: HfWeights, config: LlamaConfig, vocab: TinyVocab): StressInfo {
  if (kind !== 'massive-activations') fail('usage', `unknown stress kind '${String(kind)}' (supported: ${STRESS_KINDS.join(', ')})`);
  return massiveActivations(weights, config, vocab);
}

function massiveActivations(weights: HfWeights, c: LlamaConfig, vocab: TinyVocab): StressInfo {
  const { dim, hiddenDim, nLayers } = c;
  if (nLayers < MASSIVE_MIN_LAYERS) fail('usage', `--stress massive-activations needs at least ${MASSIVE_MIN_LAYERS} layers, got ${nLayers}`);
  if (dim < 8) fail('usage', `--stress massive-activations needs hidden_size >= 8, got ${dim}`);
  const get = (name: string) => weights.get(name) ?? fail('config', `applyStress: missing weight ${name}`);
  // LLaMA-2-7B's channels 1415 and 2533 of 4096, scaled to dim; the overflow channel away from both.
  const massive = [Math.round((1415 * dim) / 4096), Math.round((2533 * dim) / 4096)];
  const overflowChannel = Math.round((3 * dim) / 16);
  const triggers = triggerTokens(vocab);
  const overflowLayer = nLayers - 1;
  const writerUnit = Math.floor(hiddenDim / 4);
  const overflowUnit = Math.floor((3 * hiddenDim) / 4);
  const layer = (l: number, name: string) => get(`model.layers.${l}.${name}.weight`);

  // 1. Marker: trigger tokens hold MARKER in the massive channels, every other token 0.
  const embed = get('model.embed_tokens.weight');
  const isTrigger = new Set(triggers);
  for (let t = 0; t < c.vocabSize; t++) for (const ch of massive) embed.values[t * dim + ch] = isTrigger.has(t) ? MARKER : 0;

  // 2. Silence: no attention or MLP output writes the massive channels.
  for (let l = 0; l < nLayers; l++) {
    for (const name of ['self_attn.o_proj', 'mlp.down_proj']) {
      const w = layer(l, name);
      const cols = w.shape[1]!;
      for (const ch of massive) w.values.fill(0, ch * cols, (ch + 1) * cols);
    }
  }

  // 3. and 4.: unit h of layer l reads the massive channels; its down column outputs `targets` for BOS at position 0.
  const unit = (l: number, h: number, gain: number, targets: Array<[channel: number, value: number]>) => {
    const norm = layer(l, 'post_attention_layernorm').values;
    for (const name of ['mlp.gate_proj', 'mlp.up_proj']) {
      const w = layer(l, name).values;
      w.fill(0, h * dim, (h + 1) * dim);
      for (const ch of massive) w[h * dim + ch] = gain / norm[ch]!;
    }
    const down = layer(l, 'mlp.down_proj').values;
    for (let ch = 0; ch < dim; ch++) down[ch * hiddenDim + h] = 0;
    const act = firstTokenActivation(weights, c, vocab.bosId, l)[h]!;
    for (const [ch, value] of targets) down[ch * hiddenDim + h] = value / act;
  };
  unit(WRITER_LAYER, writerUnit, WRITER_GAIN, massive.map((ch) => [ch, MASSIVE - MARKER]));
  unit(overflowLayer, overflowUnit, OVERFLOW_GAIN, [[overflowChannel, OVERFLOW]]);

  return {
    kind: 'massive-activations',
    massiveChannels: massive,
    triggerTokens: triggers,
    massiveLayer: WRITER_LAYER,
    overflowLayer,
    overflowChannel,
    massiveValue: MASSIVE,
    overflowValue: OVERFLOW,
  };
}

/**
 * Layer `upTo`'s MLP activation silu(gate) * up (hiddenDim) for one token at position 0, in float64:
 * the token attends to itself only (softmax of one score is 1, so each head outputs its kv head's
 * v, and RoPE does not matter).
 */
function firstTokenActivation(weights: HfWeights, c: LlamaConfig, token: number, upTo: number): Float64Array {
  const { dim, hiddenDim, nHeads, nKvHeads, headDim, normEps } = c;
  const get = (name: string) => weights.get(name)!.values;
  const matvec = (w: Float64Array, v: Float64Array, rows: number) => {
    const out = new Float64Array(rows);
    for (let r = 0; r < rows; r++) {
      let s = 0;
      for (let i = 0; i < v.length; i++) s += w[r * v.length + i]! * v[i]!;
      out[r] = s;
    }
    return out;
  };
  const rmsNorm = (v: Float64Array, g: Float64Array) => {
    let ss = 0;
    for (const a of v) ss += a * a;
    const scale = 1 / Math.sqrt(ss / v.length + normEps);
    return v.map((a, i) => a * scale * g[i]!);
  };
  const x = get('model.embed_tokens.weight').slice(token * dim, (token + 1) * dim);
  for (let l = 0; ; l++) {
    const p = `model.layers.${l}.`;
    const v = matvec(get(`${p}self_attn.v_proj.weight`), rmsNorm(x, get(`${p}input_layernorm.weight`)), nKvHeads * headDim);
    const att = new Float64Array(nHeads * headDim);
    const group = nHeads / nKvHeads;
    for (let h = 0; h < nHeads; h++) {
      const kv = Math.floor(h / group);
      att.set(v.subarray(kv * headDim, (kv + 1) * headDim), h * headDim);
    }
    const o = matvec(get(`${p}self_attn.o_proj.weight`), att, dim);
    for (let i = 0; i < dim; i++) x[i] = x[i]! + o[i]!;
    const n = rmsNorm(x, get(`${p}post_attention_layernorm.weight`));
    const gate = matvec(get(`${p}mlp.gate_proj.weight`), n, hiddenDim);
    const up = matvec(get(`${p}mlp.up_proj.weight`), n, hiddenDim);
    const act = gate.map((g, j) => (g / (1 + Math.exp(-g))) * up[j]!);
    if (l === upTo) return act;
    const down = matvec(get(`${p}mlp.down_proj.weight`), act, dim);
    for (let i = 0; i < dim; i++) x[i] = x[i]! + down[i]!;
  }
}
