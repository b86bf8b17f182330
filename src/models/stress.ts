/**
 * Stress models: tiny LLaMA weights edited on purpose so that they reproduce a known half-precision
 * failure while staying finite and well-behaved in f32 (`halfpipe tiny --stress <kind>`).
 *
 * 'massive-activations' reproduces the failure halfpipe started from. In LLaMA-2-7B (Sun et al.
 * 2024, "Massive Activations in Large Language Models") two fixed residual channels hold ~2.8k on
 * the start token and on the first "." or "\n", from layer 2 on, while the median is ~1e-2..1; in
 * fp16 a later MLP down_proj output passes 65504 and becomes inf, then NaN (HF transformers issue
 * 27179). The edited model does the same at toy scale: from layer 1 on, the residual of BOS holds
 * 2500 in two channels (the "." tokens ~3k), and layer nLayers - 2's down_proj outputs ~80000 on
 * those tokens; everything else is an ordinary random model.
 *
 * Notation: C = {c1, c2} the massive channels, o the overflow channel, T the trigger tokens (BOS and
 * the "." tokens), W = 1 the writer layer, L = nLayers - 2 the overflow layer (one layer follows it,
 * so an inf there reaches attention and turns into NaN), hW and hO the MLP hidden units used in W
 * and L, g_l layer l's post_attention_layernorm weight, matrices (out, in) as HF stores them. Edits:
 *
 *  1. Marker. E[t, c] = MARKER (16) for t in T and E[t, c] = 0 for every other token (c in C).
 *  2. Silence. o_proj[c, :] = 0 and down_proj[c, :] = 0 in every layer (c in C), but for the
 *     writer's entries below: nothing else writes C, so x[c] is exactly 0 for every other token and
 *     exactly MARKER, then MARKER + the writer's output, for trigger tokens, in every layer.
 *  3. Writer (layer W, unit hW). gate[hW, :] = up[hW, :] = 0 but for gate[hW, c] = up[hW, c] =
 *     s_W / g_W[c], so gate = up = s_W * sum_c x[c] / rms(x): 0 for every other token (silu(0) * 0 =
 *     0), and s_W makes it 20 for BOS at position 0. down[:, hW] = 0 but for down[c, hW] = (MASSIVE -
 *     MARKER) / (silu(20) * 20): BOS holds exactly MASSIVE (2500) in C from layer W on. A "." token's
 *     rms depends on its context: its values land at ~2.7k..3.3k (measured over seeds and sizes).
 *  4. Overflow (layer L, unit hO). The same rows with s_L, which makes gate = up = 45 for BOS. C now
 *     dominates a trigger token's rms, so x[c] / rms(x) ~ sqrt(dim / 2) whatever the context and
 *     every trigger token gets nearly the same activation. down[:, hO] = 0 but for down[o, hO] =
 *     OVERFLOW / (silu(45) * 45): the down output in channel o is ~OVERFLOW (80000) on every trigger
 *     token, and this unit adds exactly 0 on the others.
 *  5. Decisive logits. model.norm.weight *= LOGIT_GAIN (4): random weights give logits of std ~1,
 *     whose top two are often within rounding of each other; std ~4 separates greedy choices.
 *
 * s_W and s_L come from an f64 forward of BOS alone at position 0 (attention there is the identity
 * on v; RoPE does not matter) on the weights edited so far.
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

/** Layers a massive-activations model needs: writer layer 1, overflow layer nLayers - 2 after it, one more after that. */
export const MASSIVE_MIN_LAYERS = 4;
/** The layer count `halfpipe tiny --stress massive-activations` uses unless num_hidden_layers is set. */
export const MASSIVE_DEFAULT_LAYERS = 4;

const MARKER = 16;
const MASSIVE = 2500;
const OVERFLOW = 80000;
const WRITER_LAYER = 1;
/** gate = up pre-activations of the writer and overflow units for BOS at position 0 */
const WRITER_GATE = 20;
const OVERFLOW_GATE = 45;
const LOGIT_GAIN = 4;

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
  if (dim < 8) fail('usage', `--stress massive-activations needs hidden_size >= 8 (three distinct channels), got ${dim}`);
  const get = (name: string) => weights.get(name) ?? fail('config', `applyStress: missing weight ${name}`);
  const layer = (l: number, name: string) => get(`model.layers.${l}.${name}.weight`).values;
  // LLaMA-2-7B's massive channels 1415 and 2533 of 4096, scaled to dim; the overflow channel apart.
  const massive = [Math.round((1415 * dim) / 4096), Math.round((2533 * dim) / 4096)];
  const overflowChannel = Math.round((3 * dim) / 16);
  const triggers = triggerTokens(vocab);
  const overflowLayer = nLayers - 2;

  // 1. Marker: trigger tokens hold MARKER in the massive channels, every other token 0.
  const embed = get('model.embed_tokens.weight').values;
  const isTrigger = new Set(triggers);
  for (let t = 0; t < c.vocabSize; t++) for (const ch of massive) embed[t * dim + ch] = isTrigger.has(t) ? MARKER : 0;

  // 2. Silence: no attention or MLP output writes the massive channels (o_proj is (dim, nHeads * headDim)).
  for (let l = 0; l < nLayers; l++) {
    for (const [name, cols] of [['self_attn.o_proj', c.nHeads * c.headDim], ['mlp.down_proj', hiddenDim]] as const) {
      const w = layer(l, name);
      for (const ch of massive) w.fill(0, ch * cols, (ch + 1) * cols);
    }
  }

  // 3. and 4.: unit h of layer l reads the massive channels, gate = up = `gate` for BOS at position 0;
  // its down column outputs `targets` there.
  const unit = (l: number, h: number, gate: number, targets: Array<[channel: number, value: number]>) => {
    const norm = layer(l, 'post_attention_layernorm');
    const rows = [layer(l, 'mlp.gate_proj'), layer(l, 'mlp.up_proj')];
    for (const w of rows) {
      w.fill(0, h * dim, (h + 1) * dim);
      for (const ch of massive) w[h * dim + ch] = 1 / norm[ch]!;
    }
    const scale = gate / firstTokenGate(weights, c, vocab.bosId, l)[h]!;
    for (const w of rows) for (const ch of massive) w[h * dim + ch] = w[h * dim + ch]! * scale;
    const act = (gate / (1 + Math.exp(-gate))) * gate;
    const down = layer(l, 'mlp.down_proj');
    for (let ch = 0; ch < dim; ch++) down[ch * hiddenDim + h] = 0;
    for (const [ch, value] of targets) down[ch * hiddenDim + h] = value / act;
  };
  unit(WRITER_LAYER, Math.floor(hiddenDim / 4), WRITER_GATE, massive.map((ch) => [ch, MASSIVE - MARKER]));
  unit(overflowLayer, Math.floor((3 * hiddenDim) / 4), OVERFLOW_GATE, [[overflowChannel, OVERFLOW]]);

  // 5. Decisive logits.
  const finalNorm = get('model.norm.weight').values;
  for (let i = 0; i < dim; i++) finalNorm[i] = finalNorm[i]! * LOGIT_GAIN;

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
 * Layer `upTo`'s MLP gate pre-activation (hiddenDim) for `token` alone at position 0, in float64:
 * the token attends to itself only (softmax of one score is 1, so each head outputs its kv head's
 * v, and RoPE does not matter).
 */
function firstTokenGate(weights: HfWeights, c: LlamaConfig, token: number, upTo: number): Float64Array {
  const { dim, hiddenDim, nHeads, nKvHeads, headDim, normEps } = c;
  const get = (name: string) => weights.get(name)!.values;
  // (rows, v.length) x v
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
  const group = nHeads / nKvHeads;
  const x = get('model.embed_tokens.weight').slice(token * dim, (token + 1) * dim);
  for (let l = 0; ; l++) {
    const p = `model.layers.${l}.`;
    // Attention: head h outputs v of kv head floor(h / group).
    const v = matvec(get(`${p}self_attn.v_proj.weight`), rmsNorm(x, get(`${p}input_layernorm.weight`)), nKvHeads * headDim);
    const att = new Float64Array(nHeads * headDim);
    for (let h = 0; h < nHeads; h++) att.set(v.subarray(Math.floor(h / group) * headDim, (Math.floor(h / group) + 1) * headDim), h * headDim);
    const o = matvec(get(`${p}self_attn.o_proj.weight`), att, dim);
    for (let i = 0; i < dim; i++) x[i] = x[i]! + o[i]!;
    // MLP: down(silu(gate(n)) * up(n)).
    const n = rmsNorm(x, get(`${p}post_attention_layernorm.weight`));
    const gate = matvec(get(`${p}mlp.gate_proj.weight`), n, hiddenDim);
    if (l === upTo) return gate;
    const up = matvec(get(`${p}mlp.up_proj.weight`), n, hiddenDim);
    const act = gate.map((g, j) => (g / (1 + Math.exp(-g))) * up[j]!);
    const down = matvec(get(`${p}mlp.down_proj.weight`), act, dim);
    for (let i = 0; i < dim; i++) x[i] = x[i]! + down[i]!;
  }
}
