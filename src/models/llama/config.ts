/**
 * The LLaMA-family hyperparameters, resolved once from a raw checkpoint config (candle's `Config`):
 * every default applied, every relation checked, so the model and the weight checks never look at
 * the raw file again. Hugging Face `config.json` is read here; GGUF metadata will resolve into the
 * same `LlamaConfig`.
 *
 * Field names and defaults follow transformers' `LlamaConfig` and `MistralConfig`
 * (configuration_llama.py, configuration_mistral.py).
 */
import { fail } from '../../core/errors.js';
import type { RopePairing } from '../../ops/rope/rope.js';
import { type RopeScaling, ropeScalingFromHfConfig } from '../../ops/rope/scaling.js';

export type LlamaArch = 'llama' | 'mistral';

/** HF `architectures` entries this model implements, and the arch each resolves to. */
export const SUPPORTED_HF_ARCHITECTURES: Readonly<Record<string, LlamaArch>> = Object.freeze({
  LlamaForCausalLM: 'llama',
  MistralForCausalLM: 'mistral',
});

export interface LlamaConfig {
  arch: LlamaArch;
  /** hidden size (the residual stream width) */
  dim: number;
  nLayers: number;
  /** query heads */
  nHeads: number;
  /** key/value heads (GQA when < nHeads); nHeads % nKvHeads === 0 */
  nKvHeads: number;
  /** per head; nHeads * headDim may differ from dim when the checkpoint sets head_dim */
  headDim: number;
  /** the MLP's intermediate size */
  hiddenDim: number;
  vocabSize: number;
  /** RMSNorm epsilon */
  normEps: number;
  /** positions the KV cache holds: max_position_embeddings */
  contextLength: number;
  rope: RopeScaling;
  /**
   * 'neox' for HF weights, 'gptj' for GGUF weights whose Q/K rows are stored permuted
   * (convert_hf_to_gguf.py's permute). The model never permutes rows, it picks the pairing.
   */
  ropePairing: RopePairing;
  /** a token attends to the last `slidingWindow` positions, itself included (Mistral); absent: all */
  slidingWindow?: number;
  /** the output projection is the token embedding */
  tiedEmbeddings: boolean;
  bosId?: number;
  eosIds: number[];
}

/**
 * From a parsed HF config.json (LlamaForCausalLM or MistralForCausalLM). Throws a one-line
 * HalfpipeError (code 'config') naming the offending field.
 */
export function llamaConfigFromHf(config: Record<string, unknown>): LlamaConfig {
  if (typeof config !== 'object' || config === null || Array.isArray(config)) fail('config', 'config must be an object (a parsed config.json)');
  const arch = hfArch(config);

  const dim = positiveInt(config, 'hidden_size');
  const nLayers = positiveInt(config, 'num_hidden_layers');
  const nHeads = positiveInt(config, 'num_attention_heads');
  const nKvHeads = config['num_key_value_heads'] == null ? nHeads : positiveInt(config, 'num_key_value_heads');
  // HF: `getattr(config, "head_dim", None) or hidden_size // num_attention_heads`.
  let headDim: number;
  if (config['head_dim'] != null) {
    headDim = positiveInt(config, 'head_dim');
  } else {
    if (dim % nHeads !== 0) fail('config', `hidden_size ${dim} is not divisible by num_attention_heads ${nHeads} and head_dim is not set`);
    headDim = dim / nHeads;
  }
  const hiddenDim = positiveInt(config, 'intermediate_size');
  const vocabSize = positiveInt(config, 'vocab_size');
  const normEps = config['rms_norm_eps'] == null ? 1e-6 : positiveNumber(config, 'rms_norm_eps');
  const defaultContext = arch === 'mistral' ? 4096 * 32 : 2048;
  const contextLength = config['max_position_embeddings'] == null ? defaultContext : positiveInt(config, 'max_position_embeddings');

  // Features these architectures have flags for but this model does not implement.
  const act = config['hidden_act'] ?? 'silu';
  if (act !== 'silu') fail('config', `hidden_act ${JSON.stringify(act)} is not supported (only "silu")`);
  for (const key of ['attention_bias', 'mlp_bias']) {
    if (config[key] === true) fail('config', `${key}: true is not supported (no bias weights)`);
  }

  // MistralConfig defaults sliding_window to 4096; an explicit null turns it off. Llama has none.
  let slidingWindow: number | undefined;
  if (arch === 'mistral') {
    if (!('sliding_window' in config)) slidingWindow = 4096;
    else if (config['sliding_window'] !== null) slidingWindow = positiveInt(config, 'sliding_window');
  }

  const rope = ropeScalingFromHfConfig({ ...config, head_dim: headDim, max_position_embeddings: contextLength });
  if (rope.rotaryDim !== headDim) fail('config', `partial rotary embeddings (rotary dim ${rope.rotaryDim} < head_dim ${headDim}) are not supported by ${arch}`);

  const bos = config['bos_token_id'] === undefined ? 1 : config['bos_token_id'];
  const eos = config['eos_token_id'] === undefined ? 2 : config['eos_token_id'];
  const resolved: LlamaConfig = {
    arch,
    dim,
    nLayers,
    nHeads,
    nKvHeads,
    headDim,
    hiddenDim,
    vocabSize,
    normEps,
    contextLength,
    rope,
    ropePairing: 'neox',
    tiedEmbeddings: config['tie_word_embeddings'] === true,
    eosIds: tokenIds(eos, 'eos_token_id'),
  };
  if (bos !== null) resolved.bosId = tokenIds(bos, 'bos_token_id')[0];
  if (slidingWindow !== undefined) resolved.slidingWindow = slidingWindow;
  return checkLlamaConfig(resolved);
}

/**
 * Checks the relations between the fields of a resolved config (from any source) and returns it.
 * One-line HalfpipeError (code 'config') on the first violation.
 */
export function checkLlamaConfig(c: LlamaConfig): LlamaConfig {
  if (c.arch !== 'llama' && c.arch !== 'mistral') fail('config', `unknown arch ${JSON.stringify(c.arch)} (supported: llama, mistral)`);
  for (const key of ['dim', 'nLayers', 'nHeads', 'nKvHeads', 'headDim', 'hiddenDim', 'vocabSize', 'contextLength'] as const) {
    if (!Number.isInteger(c[key]) || c[key] <= 0) fail('config', `${key} must be a positive integer, got ${c[key]}`);
  }
  if (c.nHeads % c.nKvHeads !== 0) fail('config', `nHeads ${c.nHeads} is not a multiple of nKvHeads ${c.nKvHeads}`);
  if (c.headDim % 2 !== 0) fail('config', `headDim ${c.headDim} must be even for RoPE`);
  if (!(c.normEps > 0) || !Number.isFinite(c.normEps)) fail('config', `normEps must be a finite number > 0, got ${c.normEps}`);
  if (c.rope.headDim !== c.headDim) fail('config', `rope head_dim ${c.rope.headDim} differs from headDim ${c.headDim}`);
  if (c.ropePairing !== 'neox' && c.ropePairing !== 'gptj') fail('config', `unknown rope pairing ${JSON.stringify(c.ropePairing)} (supported: neox, gptj)`);
  if (c.slidingWindow !== undefined && (!Number.isInteger(c.slidingWindow) || c.slidingWindow <= 0)) {
    fail('config', `slidingWindow must be a positive integer, got ${c.slidingWindow}`);
  }
  for (const id of [...(c.bosId === undefined ? [] : [c.bosId]), ...c.eosIds]) {
    if (!Number.isInteger(id) || id < 0 || id >= c.vocabSize) fail('config', `special token id ${id} is outside the vocabulary [0, ${c.vocabSize})`);
  }
  return c;
}

function hfArch(config: Record<string, unknown>): LlamaArch {
  const supported = Object.keys(SUPPORTED_HF_ARCHITECTURES).join(', ');
  const archs = config['architectures'];
  if (archs == null) fail('config', `config.json has no "architectures" (supported: ${supported})`);
  if (!Array.isArray(archs) || archs.length === 0) fail('config', `"architectures" must be a non-empty array (supported: ${supported})`);
  for (const name of archs) {
    if (typeof name === 'string' && Object.hasOwn(SUPPORTED_HF_ARCHITECTURES, name)) return SUPPORTED_HF_ARCHITECTURES[name]!;
  }
  return fail('config', `unsupported architecture ${archs.map((a) => JSON.stringify(a)).join(', ')} (supported: ${supported})`);
}

function positiveInt(config: Record<string, unknown>, key: string): number {
  const v = config[key];
  if (v === undefined || v === null) fail('config', `${key} is missing`);
  if (typeof v !== 'number' || !Number.isInteger(v) || v <= 0) fail('config', `${key} must be a positive integer, got ${JSON.stringify(v)}`);
  return v;
}

function positiveNumber(config: Record<string, unknown>, key: string): number {
  const v = config[key];
  if (typeof v !== 'number' || !Number.isFinite(v) || v <= 0) fail('config', `${key} must be a finite number > 0, got ${JSON.stringify(v)}`);
  return v;
}

/** An id or a list of ids (HF allows both for eos_token_id); null means none. */
function tokenIds(v: unknown, key: string): number[] {
  if (v === null) return [];
  const ids = Array.isArray(v) ? v : [v];
  for (const id of ids) {
    if (typeof id !== 'number' || !Number.isInteger(id) || id < 0) fail('config', `${key} must be a token id or a list of them, got ${JSON.stringify(v)}`);
  }
  return ids as number[];
}
