/**
 * Rotary-embedding frequencies resolved from a Hugging Face `config.json`, following
 * transformers' `modeling_rope_utils.py` (the v5 layout: `_compute_*_parameters`,
 * `RotaryEmbeddingConfigMixin.standardize_rope_params` and the `dynamic_rope_update` rules).
 *
 * Every rope type yields `w_i` for pair `i` of the first `rotaryDim` channels, and an
 * `attentionFactor` that multiplies both cos and sin. The base frequencies are
 *
 *     w_i = 1 / base^(2i / d),   i in [0, d/2),   d = rotaryDim
 *
 * All arithmetic is float64. HF evaluates the same expressions on float32 tensors; rounding to
 * f32 ("hf-compatible" mode) is done elsewhere. Where HF only logs a warning for a nonsensical value
 * (factor < 1, wrong longrope length, ...) we throw a RopeConfigError instead.
 *
 * Config precedence follows HF's standardization: a non-empty `rope_scaling` wins over
 * `rope_parameters`; the dict's `rope_theta` wins over the top-level one; a top-level
 * `partial_rotary_factor` and `original_max_position_embeddings` win over the dict's.
 */
import { fail, HalfpipeError } from '../../core/errors.js';

/** The rope types HF ships in `ROPE_INIT_FUNCTIONS` (plus 'default'), minus 'proportional'. */
export type RopeScalingType = 'default' | 'linear' | 'dynamic' | 'yarn' | 'llama3' | 'longrope';

export const ROPE_SCALING_TYPES: readonly RopeScalingType[] = [
  'default',
  'linear',
  'dynamic',
  'yarn',
  'llama3',
  'longrope',
];

export interface RopeFrequencies {
  /**
   * w_i = angle per position for pair i, i in [0, rotaryDim/2); float64.
   * Shared with the RopeScaling's cache: callers must not mutate it.
   */
  readonly invFreq: Float64Array;
  /** multiplies both cos and sin (YaRN/longrope "mscale"); 1 otherwise */
  readonly attentionFactor: number;
}

export interface RopeScaling {
  readonly type: RopeScalingType;
  readonly base: number; // rope_theta (default 10000)
  readonly headDim: number;
  readonly rotaryDim: number; // headDim * partial_rotary_factor, must be even and >= 2
  /** max_position_embeddings; Infinity when not given (only allowed for types that never read it) */
  readonly maxPositionEmbeddings: number;
  /** true for dynamic and longrope: frequencies change with the sequence length */
  readonly dependsOnSeqLen: boolean;
  /**
   * Frequencies for a call whose longest sequence holds seqLen tokens (max position + 1).
   * The result is cached per effective state and shared: do not mutate `invFreq`.
   * A negative or fractional seqLen throws HalfpipeError code 'rope'.
   */
  frequencies(seqLen: number): RopeFrequencies;
}

/** A rope configuration that HF would reject or that makes no numeric sense. One-line message. */
/** A bad RoPE configuration: a HalfpipeError with code 'config', so the CLI reports it in one line. */
export class RopeConfigError extends HalfpipeError {
  constructor(message: string) {
    super('config', message);
  }
}

/** From a parsed HF config.json object. Throws RopeConfigError naming the problem. */
export function ropeScalingFromHfConfig(config: Record<string, unknown>): RopeScaling {
  if (!isObject(config)) throw new RopeConfigError('config must be an object (a parsed config.json)');
  // HF: `rope_scaling or rope_parameters` — a non-empty old-style dict wins over the new key.
  let dictName = 'rope_scaling';
  let dict = config['rope_scaling'];
  if (!pyTruthy(dict)) {
    dictName = 'rope_parameters';
    dict = config['rope_parameters'];
  }
  if (!pyTruthy(dict)) dict = {};
  if (!isObject(dict)) throw new RopeConfigError(`${dictName} must be an object, got ${show(dict)}`);

  // Per-layer-type dicts (Gemma-style {full_attention: {...}, ...}) need a layer to be chosen first.
  const layerTypes = config['layer_types'];
  const keys = Object.keys(dict);
  if (Array.isArray(layerTypes) && keys.length > 0 && keys.every((k) => layerTypes.includes(k))) {
    throw new RopeConfigError(
      `per-layer-type ${dictName} (${keys.join(', ')}) are not supported here; pass one layer's dict to ropeScaling()`,
    );
  }

  return resolve({
    dict,
    dictName,
    headDim: configHeadDim(config),
    topTheta: config['rope_theta'],
    topPartial: config['partial_rotary_factor'],
    rotaryDim: undefined,
    maxPositions: config['max_position_embeddings'],
    topOriginalMax: config['original_max_position_embeddings'],
  });
}

/**
 * Same, built directly without an HF config. `base` plays the role of the top-level `rope_theta`
 * (a `rope_theta` inside `scaling` wins, as in HF); an explicit `rotaryDim` overrides any
 * `partial_rotary_factor` in `scaling`.
 */
export function ropeScaling(opts: {
  headDim: number;
  rotaryDim?: number;
  base?: number;
  maxPositionEmbeddings?: number;
  scaling?: Record<string, unknown> /* an HF rope_scaling object, or undefined for default */;
}): RopeScaling {
  const scaling = opts.scaling ?? {};
  if (!isObject(scaling)) throw new RopeConfigError(`scaling must be an object, got ${show(scaling)}`);
  return resolve({
    dict: scaling,
    dictName: 'rope_scaling',
    headDim: positiveInt(opts.headDim, 'headDim'),
    topTheta: opts.base,
    topPartial: undefined,
    rotaryDim: opts.rotaryDim,
    maxPositions: opts.maxPositionEmbeddings,
    topOriginalMax: undefined,
  });
}

// ---------------------------------------------------------------------------------------------
// Resolution: HF config fields -> one validated parameter set
// ---------------------------------------------------------------------------------------------

interface RawRope {
  readonly dict: Record<string, unknown>;
  readonly dictName: string;
  readonly headDim: number;
  readonly topTheta: unknown;
  readonly topPartial: unknown;
  readonly rotaryDim: unknown;
  readonly maxPositions: unknown;
  readonly topOriginalMax: unknown;
}

interface Common {
  readonly type: RopeScalingType;
  readonly base: number;
  readonly headDim: number;
  readonly rotaryDim: number;
  readonly maxPositionEmbeddings: number;
}

/** HF: `getattr(config, "head_dim", None) or hidden_size // num_attention_heads`. */
function configHeadDim(config: Record<string, unknown>): number {
  const explicit = config['head_dim'];
  if (explicit !== undefined && explicit !== null) return positiveInt(explicit, 'head_dim');
  if (config['hidden_size'] === undefined || config['num_attention_heads'] === undefined) {
    throw new RopeConfigError('head_dim is missing and cannot be derived: need hidden_size and num_attention_heads');
  }
  const hidden = positiveInt(config['hidden_size'], 'hidden_size');
  const heads = positiveInt(config['num_attention_heads'], 'num_attention_heads');
  return Math.floor(hidden / heads);
}

function resolve(raw: RawRope): RopeScaling {
  const { dict, dictName } = raw;

  // BC: "rope_type" was originally "type"; no dict (or neither key) means plain RoPE.
  const typeValue = dict['rope_type'] ?? dict['type'] ?? 'default';
  if (typeof typeValue !== 'string' || !(ROPE_SCALING_TYPES as readonly string[]).includes(typeValue)) {
    throw new RopeConfigError(
      `unknown rope type ${show(typeValue)} in ${dictName}; supported: ${ROPE_SCALING_TYPES.join(', ')}`,
    );
  }
  const type = typeValue as RopeScalingType;

  // HF standardization: the dict's rope_theta wins over the top-level one; the default is 10000.
  const baseValue = dict['rope_theta'] ?? raw.topTheta ?? 10000;
  if (typeof baseValue !== 'number' || !Number.isFinite(baseValue) || baseValue <= 0) {
    throw new RopeConfigError(`rope_theta must be a finite number > 0, got ${show(baseValue)}`);
  }

  // HF standardization copies a top-level partial_rotary_factor over the dict's one.
  let rotaryDim: number;
  if (raw.rotaryDim !== undefined) {
    rotaryDim = checkRotaryDim(raw.rotaryDim, raw.headDim, 'rotaryDim');
  } else {
    const partial = raw.topPartial ?? dict['partial_rotary_factor'] ?? 1;
    if (typeof partial !== 'number' || !(partial > 0 && partial <= 1)) {
      throw new RopeConfigError(`partial_rotary_factor must be a number in (0, 1], got ${show(partial)}`);
    }
    // HF: dim = int(head_dim * partial_rotary_factor), truncating toward zero.
    const dim = Math.trunc(raw.headDim * partial);
    rotaryDim = checkRotaryDim(dim, raw.headDim, `head_dim ${raw.headDim} * partial_rotary_factor ${partial}`);
  }

  let maxPositionEmbeddings = Infinity;
  if (raw.maxPositions !== undefined && raw.maxPositions !== null) {
    maxPositionEmbeddings = positiveInt(raw.maxPositions, 'max_position_embeddings');
  }

  const common: Common = { type, base: baseValue, headDim: raw.headDim, rotaryDim, maxPositionEmbeddings };
  switch (type) {
    case 'default':
      return constant(common, defaultInvFreq(baseValue, rotaryDim), 1);
    case 'linear':
      return buildLinear(common, raw);
    case 'dynamic':
      return buildDynamic(common, raw);
    case 'yarn':
      return buildYarn(common, raw);
    case 'llama3':
      return buildLlama3(common, raw);
    case 'longrope':
      return buildLongrope(common, raw);
  }
}

function checkRotaryDim(value: unknown, headDim: number, what: string): number {
  if (typeof value !== 'number' || !Number.isInteger(value) || value < 2 || value % 2 !== 0) {
    throw new RopeConfigError(`rotary dim must be an even integer >= 2, got ${show(value)} (${what})`);
  }
  if (value > headDim) throw new RopeConfigError(`rotary dim ${value} exceeds head_dim ${headDim}`);
  return value;
}

/**
 * HF standardization for llama3/yarn/longrope: a top-level `original_max_position_embeddings`
 * (Phi-3 style) wins, then the dict's own, then `max_position_embeddings`.
 */
function originalMax(common: Common, raw: RawRope): number {
  const value = raw.topOriginalMax ?? raw.dict['original_max_position_embeddings'];
  if (value !== undefined && value !== null) return positiveInt(value, 'original_max_position_embeddings');
  if (common.maxPositionEmbeddings === Infinity) {
    throw new RopeConfigError(
      `rope type "${common.type}" needs original_max_position_embeddings or max_position_embeddings; neither is set`,
    );
  }
  return common.maxPositionEmbeddings;
}

/** `factor` is required by HF for linear, dynamic, yarn and llama3, and must be >= 1. */
function requiredFactor(raw: RawRope, type: RopeScalingType): number {
  if (raw.dict['factor'] === undefined) {
    throw new RopeConfigError(`${raw.dictName}.factor is missing (required for rope type "${type}")`);
  }
  return factorAtLeastOne(raw.dict['factor'], raw.dictName, type);
}

function factorAtLeastOne(value: unknown, dictName: string, type: RopeScalingType): number {
  const factor = finiteNumber(value, `${dictName}.factor`);
  if (factor < 1) throw new RopeConfigError(`${dictName}.factor must be >= 1 for rope type "${type}", got ${factor}`);
  return factor;
}

// ---------------------------------------------------------------------------------------------
// The per-type formulas (HF modeling_rope_utils)
// ---------------------------------------------------------------------------------------------

/**
 * `_compute_default_rope_parameters`: w_i = 1 / base^(2i/d). Evaluated as HF does,
 * `1 / (base ** (arange(0, d, 2) / d))`, so a float64 port of HF gives the same bits.
 */
export function defaultInvFreq(base: number, rotaryDim: number): Float64Array {
  const out = new Float64Array(rotaryDim / 2);
  for (let i = 0; i < out.length; i++) out[i] = 1 / base ** ((2 * i) / rotaryDim);
  return out;
}

/** `_compute_linear_scaling_rope_parameters`: w_i = default_i / factor (position interpolation). */
function buildLinear(common: Common, raw: RawRope): RopeScaling {
  const factor = requiredFactor(raw, 'linear');
  const inv = defaultInvFreq(common.base, common.rotaryDim);
  for (let i = 0; i < inv.length; i++) inv[i] = inv[i]! / factor;
  return constant(common, inv, 1);
}

/**
 * `_compute_dynamic_ntk_parameters` with `dynamic_rope_update`:
 *   L = max(seqLen, max_position_embeddings)
 *   base' = base * ((factor * L / max_position_embeddings) - (factor - 1)) ^ (d / (d - 2))
 *   w_i = 1 / base'^(2i/d)
 * HF also evaluates the formula (not the plain default) at L = max_position_embeddings.
 * HF's module keeps the grown frequencies until a call drops below max positions; here they are a
 * pure function of seqLen, so a call never depends on the calls before it.
 */
function buildDynamic(common: Common, raw: RawRope): RopeScaling {
  const factor = requiredFactor(raw, 'dynamic');
  const maxPos = common.maxPositionEmbeddings;
  if (maxPos === Infinity) throw new RopeConfigError('rope type "dynamic" needs max_position_embeddings');
  const d = common.rotaryDim;
  // d / (d - 2) divides by zero at d = 2 (HF raises ZeroDivisionError there).
  if (d === 2) throw new RopeConfigError('rope type "dynamic" needs rotary dim > 2, got 2');

  /** len is HF's effective seq_len, already max(seqLen, max_position_embeddings). */
  const compute = (len: number): RopeFrequencies => {
    const base = common.base * ((factor * len) / maxPos - (factor - 1)) ** (d / (d - 2));
    if (!Number.isFinite(base) || base <= 0) {
      throw new RopeConfigError(`dynamic NTK base is non-finite or non-positive (${base}) at seqLen ${len}`);
    }
    return freeze(checkFinite(defaultInvFreq(base, d), 'dynamic'), 1);
  };
  const atMax = compute(maxPos);
  let last: { len: number; freqs: RopeFrequencies } | undefined;

  return {
    ...common,
    dependsOnSeqLen: true,
    frequencies(seqLen: number): RopeFrequencies {
      checkSeqLen(seqLen);
      const len = Math.max(seqLen, maxPos);
      // At or below max positions every call gets the same frequencies; above, the last one is kept.
      if (len === maxPos) return atMax;
      if (last?.len !== len) last = { len, freqs: compute(len) };
      return last.freqs;
    },
  };
}

/** YaRN's `get_mscale`: 1 for scale <= 1, else 0.1 * m * ln(scale) + 1. */
function yarnMscale(scale: number, m = 1): number {
  return scale <= 1 ? 1 : 0.1 * m * Math.log(scale) + 1;
}

/**
 * `_compute_yarn_parameters` (arXiv 2309.00071). With O = original_max_position_embeddings:
 *   factor: explicit (v5; some 4.x releases replaced it by max_position_embeddings / O whenever O
 *     was set); `null` means max_position_embeddings / O (HF: `if factor is None`)
 *   attentionFactor = attention_factor, or mscale(f, mscale) / mscale(f, mscale_all_dim) when both
 *     are truthy, else mscale(f) = 0.1 ln f + 1
 *   corr(r) = d * ln(O / (2 pi r)) / (2 ln base); low = corr(beta_fast || 32), high = corr(beta_slow || 1),
 *     floor/ceil unless `truncate` is false, then low = max(low, 0), high = min(high, d - 1)
 *   ramp_i = clamp((i - low) / (high - low), 0, 1), with high += 0.001 when low == high
 *   e_i = 1 - ramp_i;  w_i = (1 / (f p_i)) (1 - e_i) + (1 / p_i) e_i,  p_i = base^(2i/d)
 */
function buildYarn(common: Common, raw: RawRope): RopeScaling {
  const { dict, dictName } = raw;
  // HF requires the key; an explicit null is derived below (`if factor is None`).
  if (dict['factor'] === undefined) {
    throw new RopeConfigError(`${dictName}.factor is missing (required for rope type "yarn")`);
  }
  const origMax = originalMax(common, raw);
  let factor: number;
  if (dict['factor'] === null) {
    if (common.maxPositionEmbeddings === Infinity) {
      throw new RopeConfigError(`${dictName}.factor is null and max_position_embeddings is not set to derive it`);
    }
    factor = common.maxPositionEmbeddings / origMax;
  } else {
    factor = factorAtLeastOne(dict['factor'], dictName, 'yarn');
  }

  let attentionFactor = optionalNumber(dict['attention_factor'], `${dictName}.attention_factor`);
  if (attentionFactor !== undefined && attentionFactor < 0) {
    throw new RopeConfigError(`${dictName}.attention_factor must be >= 0, got ${attentionFactor}`);
  }
  if (attentionFactor === undefined) {
    const mscale = optionalNumber(dict['mscale'], `${dictName}.mscale`);
    const mscaleAllDim = optionalNumber(dict['mscale_all_dim'], `${dictName}.mscale_all_dim`);
    // Python truthiness: 0 or None for either falls back to the plain paper formula.
    attentionFactor =
      mscale && mscaleAllDim ? yarnMscale(factor, mscale) / yarnMscale(factor, mscaleAllDim) : yarnMscale(factor);
    if (!Number.isFinite(attentionFactor)) {
      throw new RopeConfigError(
        `yarn attention factor is non-finite (${attentionFactor}); check mscale/mscale_all_dim`,
      );
    }
  }

  // `or` defaults in HF: 0 and None both mean the paper's 32 / 1.
  const betaFast = optionalNumber(dict['beta_fast'], `${dictName}.beta_fast`) || 32;
  const betaSlow = optionalNumber(dict['beta_slow'], `${dictName}.beta_slow`) || 1;
  // HF: `rope_parameters.get("truncate", True)`, then Python truthiness.
  const truncate = dict['truncate'] === undefined ? true : pyTruthy(dict['truncate']);

  const d = common.rotaryDim;
  const base = common.base;
  const correctionDim = (rotations: number): number =>
    (d * Math.log(origMax / (rotations * 2 * Math.PI))) / (2 * Math.log(base));
  let low = correctionDim(betaFast);
  let high = correctionDim(betaSlow);
  // Python raises (log of <= 0, division by log(1) = 0, floor(inf)) where JS would go non-finite.
  if (!Number.isFinite(low) || !Number.isFinite(high)) {
    throw new RopeConfigError(
      `yarn correction range is non-finite (low ${low}, high ${high}); check rope_theta, beta_fast, beta_slow`,
    );
  }
  if (truncate) {
    low = Math.floor(low);
    high = Math.ceil(high);
  }
  low = Math.max(low, 0);
  high = Math.min(high, d - 1);
  // Prevent the 0/0 of a zero-width ramp, exactly as HF does.
  if (low === high) high += 0.001;

  const inv = new Float64Array(d / 2);
  for (let i = 0; i < inv.length; i++) {
    const posFreq = base ** ((2 * i) / d);
    const extrapolation = 1 / posFreq;
    const interpolation = 1 / (factor * posFreq);
    const ramp = Math.min(Math.max((i - low) / (high - low), 0), 1);
    const extrapolationWeight = 1 - ramp;
    inv[i] = interpolation * (1 - extrapolationWeight) + extrapolation * extrapolationWeight;
  }
  return constant(common, inv, attentionFactor);
}

/**
 * `_compute_llama3_parameters` (Llama 3.1). With O = original_max_position_embeddings and
 * lambda_i = 2 pi / w_i (wavelength of the default frequency w_i):
 *   lambda_i < O / high_freq_factor:  w_i unchanged
 *   lambda_i > O / low_freq_factor:   w_i / factor
 *   otherwise: s = (O / lambda_i - low) / (high - low);  w_i = (1 - s) w_i / factor + s w_i
 */
function buildLlama3(common: Common, raw: RawRope): RopeScaling {
  const { dict, dictName } = raw;
  const factor = requiredFactor(raw, 'llama3');
  const lowFreqFactor = requiredNumber(dict, 'low_freq_factor', dictName, 'llama3');
  const highFreqFactor = requiredNumber(dict, 'high_freq_factor', dictName, 'llama3');
  const oldContext = originalMax(common, raw);

  const lowFreqWavelen = oldContext / lowFreqFactor;
  const highFreqWavelen = oldContext / highFreqFactor;
  const inv = defaultInvFreq(common.base, common.rotaryDim);
  for (let i = 0; i < inv.length; i++) {
    const w = inv[i]!;
    const wavelen = (2 * Math.PI) / w;
    if (wavelen < highFreqWavelen) continue;
    if (wavelen > lowFreqWavelen) {
      inv[i] = w / factor;
    } else {
      const smooth = (oldContext / wavelen - lowFreqFactor) / (highFreqFactor - lowFreqFactor);
      inv[i] = ((1 - smooth) * w) / factor + smooth * w;
    }
  }
  return constant(common, checkFinite(inv, 'llama3'), 1);
}

/**
 * `_compute_longrope_parameters` with `dynamic_rope_update` (Phi-3 LongRoPE). With
 * O = original_max_position_embeddings:
 *   ext = long_factor if seqLen > O else short_factor;  w_i = 1 / (ext_i * base^(2i/d))
 *   factor = factor, or max_position_embeddings / O when absent
 *   attentionFactor = attention_factor, or 1 for factor <= 1, else sqrt(1 + ln(factor) / ln(O))
 */
function buildLongrope(common: Common, raw: RawRope): RopeScaling {
  const { dict, dictName } = raw;
  const origMax = originalMax(common, raw);
  const shortFactor = factorArray(dict, 'short_factor', dictName, common.rotaryDim);
  const longFactor = factorArray(dict, 'long_factor', dictName, common.rotaryDim);

  let factor: number;
  const explicitFactor = dict['factor'];
  if (explicitFactor !== undefined && explicitFactor !== null) {
    factor = factorAtLeastOne(explicitFactor, dictName, 'longrope');
  } else if (common.maxPositionEmbeddings !== Infinity) {
    factor = common.maxPositionEmbeddings / origMax;
  } else {
    throw new RopeConfigError(`rope type "longrope" needs ${dictName}.factor or max_position_embeddings`);
  }

  let attentionFactor = optionalNumber(dict['attention_factor'], `${dictName}.attention_factor`);
  if (attentionFactor !== undefined && attentionFactor < 0) {
    throw new RopeConfigError(`${dictName}.attention_factor must be >= 0, got ${attentionFactor}`);
  }
  if (attentionFactor === undefined) {
    attentionFactor = factor <= 1 ? 1 : Math.sqrt(1 + Math.log(factor) / Math.log(origMax));
    if (!Number.isFinite(attentionFactor)) {
      throw new RopeConfigError(
        `longrope attention factor is non-finite (${attentionFactor}); check original_max_position_embeddings`,
      );
    }
  }

  const scaled = (ext: readonly number[], which: string): RopeFrequencies => {
    const d = common.rotaryDim;
    const inv = new Float64Array(d / 2);
    for (let i = 0; i < inv.length; i++) inv[i] = 1 / (ext[i]! * common.base ** ((2 * i) / d));
    return freeze(checkFinite(inv, `longrope ${which}`), attentionFactor);
  };
  const short = scaled(shortFactor, 'short_factor');
  const long = scaled(longFactor, 'long_factor');

  return {
    ...common,
    dependsOnSeqLen: true,
    frequencies(seqLen: number): RopeFrequencies {
      checkSeqLen(seqLen);
      // HF switches to long factors only once the sequence outgrows the pretraining length.
      return seqLen > origMax ? long : short;
    },
  };
}

function factorArray(dict: Record<string, unknown>, key: string, dictName: string, rotaryDim: number): number[] {
  const value = dict[key];
  if (value === undefined || value === null) {
    throw new RopeConfigError(`${dictName}.${key} is missing (required for rope type "longrope")`);
  }
  if (!Array.isArray(value)) throw new RopeConfigError(`${dictName}.${key} must be an array of numbers`);
  if (value.length !== rotaryDim / 2) {
    throw new RopeConfigError(
      `${dictName}.${key} has ${value.length} entries, expected rotaryDim/2 = ${rotaryDim / 2}`,
    );
  }
  value.forEach((x, i) => {
    if (typeof x !== 'number' || !Number.isFinite(x) || x <= 0) {
      throw new RopeConfigError(`${dictName}.${key}[${i}] must be a finite number > 0, got ${show(x)}`);
    }
  });
  return value as number[];
}

// ---------------------------------------------------------------------------------------------
// Small helpers
// ---------------------------------------------------------------------------------------------

/** A RopeScaling whose frequencies never depend on the sequence length. */
function constant(common: Common, inv: Float64Array, attentionFactor: number): RopeScaling {
  const freqs = freeze(checkFinite(inv, common.type), attentionFactor);
  return {
    ...common,
    dependsOnSeqLen: false,
    frequencies(seqLen: number): RopeFrequencies {
      checkSeqLen(seqLen);
      return freqs;
    },
  };
}

function freeze(invFreq: Float64Array, attentionFactor: number): RopeFrequencies {
  // The typed array itself cannot be frozen; the wrapper can.
  return Object.freeze({ invFreq, attentionFactor });
}

function checkFinite(inv: Float64Array, what: string): Float64Array {
  for (let i = 0; i < inv.length; i++) {
    if (!Number.isFinite(inv[i]!)) {
      throw new RopeConfigError(`${what} rope produced a non-finite frequency ${inv[i]} at pair ${i}`);
    }
  }
  return inv;
}

/** A bad call argument rather than a bad config: reported like the rest of the rope op. */
function checkSeqLen(seqLen: number): void {
  if (!Number.isInteger(seqLen) || seqLen < 0) fail('rope', `seqLen must be a non-negative integer, got ${show(seqLen)}`);
}

function requiredNumber(dict: Record<string, unknown>, key: string, dictName: string, type: string): number {
  if (dict[key] === undefined || dict[key] === null) {
    throw new RopeConfigError(`${dictName}.${key} is missing (required for rope type "${type}")`);
  }
  return finiteNumber(dict[key], `${dictName}.${key}`);
}

function optionalNumber(value: unknown, what: string): number | undefined {
  return value === undefined || value === null ? undefined : finiteNumber(value, what);
}

function finiteNumber(value: unknown, what: string): number {
  if (typeof value !== 'number' || !Number.isFinite(value)) {
    throw new RopeConfigError(`${what} must be a finite number, got ${show(value)}`);
  }
  return value;
}

function positiveInt(value: unknown, what: string): number {
  if (typeof value !== 'number' || !Number.isInteger(value) || value <= 0) {
    throw new RopeConfigError(`${what} must be a positive integer, got ${show(value)}`);
  }
  return value;
}

/** Python's bool(): false for None, False, 0, "", [] and {}. */
function pyTruthy(value: unknown): boolean {
  if (Array.isArray(value)) return value.length > 0;
  if (isObject(value)) return Object.keys(value).length > 0;
  return Boolean(value);
}

function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

function show(value: unknown): string {
  if (typeof value === 'string') return JSON.stringify(value);
  if (typeof value === 'number' || typeof value === 'boolean' || value === null || value === undefined) {
    return String(value);
  }
  try {
    const text = JSON.stringify(value);
    return text.length > 60 ? `${text.slice(0, 57)}...` : text;
  } catch {
    return Object.prototype.toString.call(value);
  }
}
