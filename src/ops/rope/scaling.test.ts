import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { HalfpipeError } from '../../core/errors.js';
import { ROPE_SCALING_TYPES, RopeConfigError, ropeScaling, ropeScalingFromHfConfig } from './scaling.js';
import type { RopeScaling } from './scaling.js';

// ---------------------------------------------------------------------------------------------
// Float64 reference formulas, one plain loop per rope type (HF modeling_rope_utils, on paper)
// ---------------------------------------------------------------------------------------------

/** w_i = base^(-2i/d) */
function refDefault(base: number, dim: number): number[] {
  const w: number[] = [];
  for (let k = 0; k < dim; k += 2) w.push(Math.pow(base, -k / dim));
  return w;
}

function refLinear(base: number, dim: number, factor: number): number[] {
  return refDefault(base, dim).map((w) => w / factor);
}

function refDynamic(base: number, dim: number, factor: number, maxPos: number, seqLen: number): number[] {
  const len = seqLen > maxPos ? seqLen : maxPos;
  const scaledBase = base * Math.pow((factor * len) / maxPos - factor + 1, dim / (dim - 2));
  return refDefault(scaledBase, dim);
}

function refLlama3(base: number, dim: number, factor: number, low: number, high: number, old: number): number[] {
  return refDefault(base, dim).map((w) => {
    const wavelength = (2 * Math.PI) / w;
    if (wavelength < old / high) return w;
    if (wavelength > old / low) return w / factor;
    const s = (old / wavelength - low) / (high - low);
    return ((1 - s) * w) / factor + s * w;
  });
}

interface YarnRef {
  base: number;
  dim: number;
  factor: number;
  orig: number;
  betaFast?: number;
  betaSlow?: number;
  truncate?: boolean;
}
function refYarn({ base, dim, factor, orig, betaFast = 32, betaSlow = 1, truncate = true }: YarnRef): number[] {
  const correction = (rotations: number) => (dim * Math.log(orig / (rotations * 2 * Math.PI))) / (2 * Math.log(base));
  let lo = correction(betaFast);
  let hi = correction(betaSlow);
  if (truncate) {
    lo = Math.floor(lo);
    hi = Math.ceil(hi);
  }
  lo = Math.max(lo, 0);
  hi = Math.min(hi, dim - 1);
  if (lo === hi) hi += 0.001;
  const w: number[] = [];
  for (let i = 0; i < dim / 2; i++) {
    const unscaled = Math.pow(base, -(2 * i) / dim);
    const ramp = Math.min(1, Math.max(0, (i - lo) / (hi - lo)));
    w.push(ramp * (unscaled / factor) + (1 - ramp) * unscaled);
  }
  return w;
}

function refLongrope(base: number, dim: number, ext: number[]): number[] {
  return refDefault(base, dim).map((w, i) => w / ext[i]!);
}

// ---------------------------------------------------------------------------------------------
// Helpers and configs
// ---------------------------------------------------------------------------------------------

/** Element-wise relative closeness: the references use another (equally valid) float64 order. */
function assertClose(actual: ArrayLike<number>, expected: ArrayLike<number>, rel = 1e-13): void {
  assert.equal(actual.length, expected.length, 'length');
  for (let i = 0; i < expected.length; i++) {
    const a = actual[i]!;
    const e = expected[i]!;
    assert.ok(Math.abs(a - e) <= rel * Math.abs(e), `pair ${i}: got ${a}, expected ${e}`);
  }
}

function assertNear(actual: number, expected: number, rel = 1e-14): void {
  assert.ok(Math.abs(actual - expected) <= rel * Math.abs(expected), `got ${actual}, expected ${expected}`);
}

function maxRelDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i]! - b[i]!) / Math.abs(b[i]!));
  return m;
}

const LLAMA2 = { hidden_size: 4096, num_attention_heads: 32, max_position_embeddings: 4096, rope_theta: 10000 };
const LLAMA3 = { hidden_size: 4096, num_attention_heads: 32, max_position_embeddings: 8192, rope_theta: 500000 };
const LLAMA31_SCALING = {
  factor: 8.0,
  low_freq_factor: 1.0,
  high_freq_factor: 4.0,
  original_max_position_embeddings: 8192,
  rope_type: 'llama3',
};
const LLAMA31 = { ...LLAMA3, max_position_embeddings: 131072, rope_scaling: LLAMA31_SCALING };
const YARN_BASE = { ...LLAMA2, max_position_embeddings: 16384 };
const yarn = (extra: Record<string, unknown>, top: Record<string, unknown> = {}) => ({
  ...YARN_BASE,
  ...top,
  rope_scaling: { rope_type: 'yarn', factor: 4.0, original_max_position_embeddings: 4096, ...extra },
});

// Phi-3-mini-128k-like: head_dim 96 (48 pairs), original 4096 at the top level, max 131072.
const SHORT = Array.from({ length: 48 }, (_, i) => 1 + 0.02 * i);
const LONG = Array.from({ length: 48 }, (_, i) => 1 + 1.25 * i);
const PHI3 = {
  hidden_size: 3072,
  num_attention_heads: 32,
  max_position_embeddings: 131072,
  original_max_position_embeddings: 4096,
  rope_theta: 10000.0,
  rope_scaling: { type: 'longrope', short_factor: SHORT, long_factor: LONG },
};

/** Runs fn, checks it throws a one-line RopeConfigError, and returns the message. */
function configError(fn: () => unknown, ...mustContain: string[]): string {
  let caught: unknown;
  try {
    fn();
  } catch (e) {
    caught = e;
  }
  assert.ok(caught instanceof RopeConfigError, `expected RopeConfigError, got ${String(caught)}`);
  assert.ok(caught instanceof HalfpipeError && caught.code === 'config');
  assert.ok(!caught.message.includes('\n'), 'message must be one line');
  for (const s of mustContain) assert.ok(caught.message.includes(s), `"${caught.message}" should mention ${s}`);
  return caught.message;
}

/** configError for ropeScalingFromHfConfig(config). */
function hfError(config: Record<string, unknown>, ...mustContain: string[]): string {
  return configError(() => ropeScalingFromHfConfig(config), ...mustContain);
}

// ---------------------------------------------------------------------------------------------
// Plain RoPE
// ---------------------------------------------------------------------------------------------

test('Llama-2 default: theta 1e4, head_dim 128 from hidden_size / heads', () => {
  const r = ropeScalingFromHfConfig({ ...LLAMA2, rope_scaling: null });
  assert.equal(r.type, 'default');
  assert.equal(r.base, 10000);
  assert.equal(r.headDim, 128);
  assert.equal(r.rotaryDim, 128);
  assert.equal(r.maxPositionEmbeddings, 4096);
  assert.equal(r.dependsOnSeqLen, false);
  const f = r.frequencies(10);
  assert.equal(f.attentionFactor, 1);
  assertClose(f.invFreq, refDefault(10000, 128));
  // w_0 = 1 exactly; w_1 = 10000^(-1/64).
  assert.equal(f.invFreq[0], 1);
  assertNear(f.invFreq[1]!, Math.exp(-Math.log(10000) / 64));
  // Constant types hand back the same cached object whatever the length.
  assert.equal(r.frequencies(1), r.frequencies(1_000_000));
});

test('Llama-3: theta 5e5, explicit head_dim wins over hidden_size / heads', () => {
  const r = ropeScalingFromHfConfig({ ...LLAMA3, head_dim: 64 });
  assert.equal(r.base, 500000);
  assert.equal(r.headDim, 64);
  assertClose(r.frequencies(1).invFreq, refDefault(500000, 64));
  // head_dim: null falls back to the derived 128.
  assert.equal(ropeScalingFromHfConfig({ ...LLAMA3, head_dim: null }).headDim, 128);
});

test('rope_type "default", type "default", empty rope_scaling and none at all agree', () => {
  const expected = refDefault(10000, 128);
  for (const rope_scaling of [undefined, null, {}, { rope_type: 'default' }, { type: 'default' }]) {
    const r = ropeScalingFromHfConfig({ ...LLAMA2, rope_scaling });
    assert.equal(r.type, 'default');
    assertClose(r.frequencies(5).invFreq, expected);
  }
  // rope_theta defaults to 10000 when the config has none.
  const { rope_theta: _unused, ...noTheta } = LLAMA2;
  assert.equal(ropeScalingFromHfConfig(noTheta).base, 10000);
});

// ---------------------------------------------------------------------------------------------
// Llama 3.1, linear, dynamic
// ---------------------------------------------------------------------------------------------

test('Llama-3.1 llama3 scaling matches the reference and its three bands', () => {
  const r = ropeScalingFromHfConfig(LLAMA31);
  assert.equal(r.type, 'llama3');
  assert.equal(r.dependsOnSeqLen, false);
  const f = r.frequencies(100_000);
  assert.equal(f.attentionFactor, 1);
  assertClose(f.invFreq, refLlama3(500000, 128, 8, 1, 4, 8192));

  // Hand-derived bands: wavelength 2*pi*5e5^(i/64) < 8192/4 for i <= 28, > 8192/1 for i >= 35.
  const plain = refDefault(500000, 128);
  assert.equal(f.invFreq[0], 1, 'highest frequency unchanged');
  for (let i = 0; i <= 28; i++) assertNear(f.invFreq[i]!, plain[i]!);
  for (let i = 35; i < 64; i++) assertNear(f.invFreq[i]!, plain[i]! / 8);
  for (let i = 29; i <= 34; i++) {
    assert.ok(f.invFreq[i]! < plain[i]! && f.invFreq[i]! > plain[i]! / 8, `pair ${i} is smoothed`);
  }
  assertNear(f.invFreq[63]!, Math.pow(500000, -126 / 128) / 8);
});

test('linear factor 4 divides every default frequency by 4 (type and rope_type keys)', () => {
  for (const key of ['type', 'rope_type']) {
    const r = ropeScalingFromHfConfig({ ...LLAMA2, rope_scaling: { [key]: 'linear', factor: 4.0 } });
    assert.equal(r.type, 'linear');
    const f = r.frequencies(16384);
    assert.equal(f.attentionFactor, 1);
    assertClose(f.invFreq, refLinear(10000, 128, 4));
    assert.equal(f.invFreq[0], 0.25);
  }
});

test('dynamic NTK factor 2: unchanged up to max positions, rescaled base above', () => {
  const r = ropeScalingFromHfConfig({ ...LLAMA2, rope_scaling: { type: 'dynamic', factor: 2.0 } });
  assert.equal(r.type, 'dynamic');
  assert.equal(r.dependsOnSeqLen, true);

  // seq_len = max(seqLen, 4096): below and at max the base is 1e4 * (2 - 1)^(128/126) = 1e4.
  const below = r.frequencies(100);
  assertClose(below.invFreq, refDefault(10000, 128));
  assert.equal(r.frequencies(4096), below);
  assert.equal(below.attentionFactor, 1);

  // At 8192 tokens: base' = 1e4 * (2 * 8192 / 4096 - 1)^(128/126) = 1e4 * 3^(64/63).
  const above = r.frequencies(8192);
  assertClose(above.invFreq, refDynamic(10000, 128, 2, 4096, 8192));
  assertNear(above.invFreq[1]!, Math.pow(10000 * Math.pow(3, 64 / 63), -1 / 64));
  assert.equal(above.attentionFactor, 1);
  assert.equal(r.frequencies(8192), above, 'repeated call is cached');
  assertClose(r.frequencies(5000).invFreq, refDynamic(10000, 128, 2, 4096, 5000));
  // Back below max gives the original frequencies again (HF's reset).
  assert.equal(r.frequencies(10), below);
});

// ---------------------------------------------------------------------------------------------
// YaRN
// ---------------------------------------------------------------------------------------------

test('YaRN factor 4: ramp uses original_max_position_embeddings (4096), not max (16384)', () => {
  const r = ropeScalingFromHfConfig(yarn({}));
  assert.equal(r.type, 'yarn');
  assert.equal(r.dependsOnSeqLen, false);
  assert.equal(r.maxPositionEmbeddings, 16384);
  const f = r.frequencies(16384);
  const expected = refYarn({ base: 10000, dim: 128, factor: 4, orig: 4096 });
  assertClose(f.invFreq, expected);
  assert.ok(maxRelDiff(f.invFreq, refYarn({ base: 10000, dim: 128, factor: 4, orig: 16384 })) > 0.1);

  // Hand-derived: corr(32) = 20.94 -> low 20, corr(1) = 45.03 -> high 46.
  const plain = refDefault(10000, 128);
  for (let i = 0; i <= 20; i++) assertNear(f.invFreq[i]!, plain[i]!);
  for (let i = 46; i < 64; i++) assertNear(f.invFreq[i]!, plain[i]! / 4);
  assertNear(f.invFreq[33]!, plain[33]! * (1 - 13 / 26) + (plain[33]! / 4) * (13 / 26));
  // Default attention factor = 0.1 ln(s) + 1.
  assertNear(f.attentionFactor, 0.1 * Math.log(4) + 1);
});

test('YaRN original_max_position_embeddings: top level wins, max_position_embeddings is the fallback', () => {
  const expected = refYarn({ base: 10000, dim: 128, factor: 4, orig: 4096 });
  const top = ropeScalingFromHfConfig(
    yarn({ original_max_position_embeddings: 999 }, { original_max_position_embeddings: 4096 }),
  );
  assertClose(top.frequencies(1).invFreq, expected);
  const fallback = ropeScalingFromHfConfig({ ...LLAMA2, rope_scaling: { type: 'yarn', factor: 4.0 } });
  assertClose(fallback.frequencies(1).invFreq, expected);
});

test('YaRN attention factor: mscale / mscale_all_dim, explicit attention_factor, zero means unset', () => {
  const ratio = ropeScalingFromHfConfig(yarn({ mscale: 1.0, mscale_all_dim: 0.5 })).frequencies(1);
  assertNear(ratio.attentionFactor, (0.1 * Math.log(4) + 1) / (0.05 * Math.log(4) + 1));
  // DeepSeek-V3 style: equal mscale and mscale_all_dim cancel to exactly 1.
  const deepseek = ropeScalingFromHfConfig(yarn({ factor: 40, mscale: 1.0, mscale_all_dim: 1.0 }));
  assert.equal(deepseek.frequencies(1).attentionFactor, 1);
  // Only one of the two given (or a zero) falls back to 0.1 ln(s) + 1.
  for (const extra of [{ mscale: 0.707 }, { mscale: 1.0, mscale_all_dim: 0 }]) {
    assertNear(ropeScalingFromHfConfig(yarn(extra)).frequencies(1).attentionFactor, 0.1 * Math.log(4) + 1);
  }
  // An explicit attention_factor is used as is, and does not change the frequencies.
  const explicit = ropeScalingFromHfConfig(yarn({ attention_factor: 1.5, mscale: 1, mscale_all_dim: 0.5 }));
  assert.equal(explicit.frequencies(1).attentionFactor, 1.5);
  assertClose(explicit.frequencies(1).invFreq, refYarn({ base: 10000, dim: 128, factor: 4, orig: 4096 }));
});

test('YaRN beta_fast / beta_slow and truncate: false', () => {
  const betas = ropeScalingFromHfConfig(yarn({ beta_fast: 16, beta_slow: 2 }));
  const betasRef = refYarn({ base: 10000, dim: 128, factor: 4, orig: 4096, betaFast: 16, betaSlow: 2 });
  assertClose(betas.frequencies(1).invFreq, betasRef);
  // 0 / null betas mean the defaults 32 / 1, as HF's `or` does.
  const zeros = ropeScalingFromHfConfig(yarn({ beta_fast: 0, beta_slow: null }));
  assertClose(zeros.frequencies(1).invFreq, refYarn({ base: 10000, dim: 128, factor: 4, orig: 4096 }));

  const untruncated = ropeScalingFromHfConfig(yarn({ truncate: false })).frequencies(1).invFreq;
  assertClose(untruncated, refYarn({ base: 10000, dim: 128, factor: 4, orig: 4096, truncate: false }));
  assert.ok(maxRelDiff(untruncated, refYarn({ base: 10000, dim: 128, factor: 4, orig: 4096 })) > 1e-3);
  // truncate: true is the default.
  assertClose(
    ropeScalingFromHfConfig(yarn({ truncate: true })).frequencies(1).invFreq,
    ropeScalingFromHfConfig(yarn({})).frequencies(1).invFreq,
  );
});

test('YaRN low == high: the 0.001 guard makes a step instead of 0/0', () => {
  const plain = refDefault(10000, 128);
  // Untruncated equal betas: low = high = corr(8) = 30.58, so the step falls between pairs 30 and 31.
  const f = ropeScalingFromHfConfig(yarn({ truncate: false, beta_fast: 8, beta_slow: 8 })).frequencies(1);
  for (let i = 0; i <= 30; i++) assertNear(f.invFreq[i]!, plain[i]!);
  for (let i = 31; i < 64; i++) assertNear(f.invFreq[i]!, plain[i]! / 4);
  const stepRef = refYarn({ base: 10000, dim: 128, factor: 4, orig: 4096, betaFast: 8, betaSlow: 8, truncate: false });
  assertClose(f.invFreq, stepRef);
  // Truncated and clamped: corr(1000) = -2.97 -> low 0, corr(700) = -0.69 -> high ceil = 0. Pair 0 would be 0/0.
  const g = ropeScalingFromHfConfig(yarn({ beta_fast: 1000, beta_slow: 700 })).frequencies(1);
  assert.equal(g.invFreq[0], 1);
  for (let i = 1; i < 64; i++) assertNear(g.invFreq[i]!, plain[i]! / 4);
});

test('YaRN factor: null is max / original; an explicit factor wins over the ratio', () => {
  const derived = ropeScalingFromHfConfig(yarn({ factor: null, original_max_position_embeddings: 2048 }));
  assertNear(derived.frequencies(1).attentionFactor, 0.1 * Math.log(8) + 1);
  assertClose(derived.frequencies(1).invFreq, refYarn({ base: 10000, dim: 128, factor: 8, orig: 2048 }));
  const explicit = ropeScalingFromHfConfig(yarn({ factor: 4, original_max_position_embeddings: 2048 }));
  assertNear(explicit.frequencies(1).attentionFactor, 0.1 * Math.log(4) + 1);
  assertClose(explicit.frequencies(1).invFreq, refYarn({ base: 10000, dim: 128, factor: 4, orig: 2048 }));
});

// ---------------------------------------------------------------------------------------------
// LongRoPE
// ---------------------------------------------------------------------------------------------

test('longrope (Phi-3-mini-128k-like): short factors up to 4096 tokens, long factors above', () => {
  const r = ropeScalingFromHfConfig(PHI3);
  assert.equal(r.type, 'longrope');
  assert.equal(r.headDim, 96);
  assert.equal(r.dependsOnSeqLen, true);
  const short = r.frequencies(4096);
  const long = r.frequencies(4097);
  assertClose(short.invFreq, refLongrope(10000, 96, SHORT));
  assertClose(long.invFreq, refLongrope(10000, 96, LONG));
  assert.equal(r.frequencies(0), short);
  assert.equal(r.frequencies(131072), long);
  // factor = 131072 / 4096 = 32: sqrt(1 + ln 32 / ln 4096) = sqrt(1 + 5/12), for both arrays.
  assertNear(short.attentionFactor, Math.sqrt(17 / 12));
  assert.equal(long.attentionFactor, short.attentionFactor);
});

test('longrope: top-level original wins, explicit factor / attention_factor, no original at all', () => {
  // A dict original of 8192 is overridden by the top-level 4096 (HF standardization).
  const dictOrig = { ...PHI3, rope_scaling: { ...PHI3.rope_scaling, original_max_position_embeddings: 8192 } };
  assertClose(ropeScalingFromHfConfig(dictOrig).frequencies(5000).invFreq, refLongrope(10000, 96, LONG));

  const withFactor = { ...PHI3, rope_scaling: { ...PHI3.rope_scaling, factor: 16 } };
  assertNear(ropeScalingFromHfConfig(withFactor).frequencies(1).attentionFactor, Math.sqrt(4 / 3));
  const withAttention = { ...PHI3, rope_scaling: { ...PHI3.rope_scaling, attention_factor: 1.25 } };
  assert.equal(ropeScalingFromHfConfig(withAttention).frequencies(1).attentionFactor, 1.25);

  // Without any original, it is max_position_embeddings: factor 1, attention 1, short all the way.
  const { original_max_position_embeddings: _unused, ...noOrig } = PHI3;
  const r = ropeScalingFromHfConfig(noOrig);
  assert.equal(r.frequencies(1).attentionFactor, 1);
  assertClose(r.frequencies(131072).invFreq, refLongrope(10000, 96, SHORT));
  assertClose(r.frequencies(131073).invFreq, refLongrope(10000, 96, LONG));
});

// ---------------------------------------------------------------------------------------------
// partial_rotary_factor, rope_parameters, the direct builder
// ---------------------------------------------------------------------------------------------

test('partial_rotary_factor 0.5: rotary dim 64 of head_dim 128, exponent over the rotary dim', () => {
  const r = ropeScalingFromHfConfig({ ...LLAMA2, partial_rotary_factor: 0.5 });
  assert.equal(r.headDim, 128);
  assert.equal(r.rotaryDim, 64);
  const f = r.frequencies(1);
  assert.equal(f.invFreq.length, 32);
  assertClose(f.invFreq, refDefault(10000, 64));
  assertNear(f.invFreq[1]!, Math.pow(10000, -2 / 64));
  // Inside rope_parameters too; the top-level value wins when both are set.
  const halfInDict = { rope_type: 'default', partial_rotary_factor: 0.5 };
  assert.equal(ropeScalingFromHfConfig({ ...LLAMA2, rope_parameters: halfInDict }).rotaryDim, 64);
  assert.equal(ropeScalingFromHfConfig({ ...LLAMA2, partial_rotary_factor: 0.25, rope_parameters: halfInDict }).rotaryDim, 32);
  // Phi-2: int(80 * 0.4) = int(32.00000000000001) = 32; yarn over a partial dim uses it too.
  const phi2 = { hidden_size: 2560, num_attention_heads: 32, partial_rotary_factor: 0.4 };
  assert.equal(ropeScalingFromHfConfig(phi2).rotaryDim, 32);
  const partialYarn = ropeScalingFromHfConfig({ ...yarn({}), partial_rotary_factor: 0.5 });
  assertClose(partialYarn.frequencies(1).invFreq, refYarn({ base: 10000, dim: 64, factor: 4, orig: 4096 }));
});

test('rope_parameters (new-style key) carries rope_theta and rope_type', () => {
  const { rope_scaling: _unused, rope_theta: _theta, ...bare } = LLAMA31;
  const r = ropeScalingFromHfConfig({ ...bare, rope_parameters: { ...LLAMA31_SCALING, rope_theta: 500000.0 } });
  assert.equal(r.type, 'llama3');
  assert.equal(r.base, 500000);
  assertClose(r.frequencies(1).invFreq, refLlama3(500000, 128, 8, 1, 4, 8192));
  // The dict's rope_theta wins over a top-level one; a non-empty rope_scaling wins over rope_parameters.
  const dictTheta = { ...LLAMA2, rope_parameters: { rope_type: 'default', rope_theta: 1e6 } };
  assert.equal(ropeScalingFromHfConfig(dictTheta).base, 1e6);
  const both = { ...LLAMA2, rope_scaling: { type: 'linear', factor: 2.0 }, rope_parameters: { rope_type: 'default' } };
  assert.equal(ropeScalingFromHfConfig(both).type, 'linear');
});

test('ropeScaling builds the same thing without an HF config', () => {
  const plain = ropeScaling({ headDim: 128 });
  assert.equal(plain.type, 'default');
  assert.equal(plain.base, 10000);
  assert.equal(plain.rotaryDim, 128);
  assert.equal(plain.maxPositionEmbeddings, Infinity);
  assertClose(plain.frequencies(1).invFreq, refDefault(10000, 128));

  const partial = ropeScaling({ headDim: 128, rotaryDim: 64, base: 500000 });
  assertClose(partial.frequencies(1).invFreq, refDefault(500000, 64));

  const llama = ropeScaling({ headDim: 128, base: 500000, maxPositionEmbeddings: 131072, scaling: LLAMA31_SCALING });
  assert.deepEqual(llama.frequencies(1).invFreq, ropeScalingFromHfConfig(LLAMA31).frequencies(1).invFreq);

  const dynamic = ropeScaling({ headDim: 128, maxPositionEmbeddings: 4096, scaling: { type: 'dynamic', factor: 2 } });
  assertClose(dynamic.frequencies(8192).invFreq, refDynamic(10000, 128, 2, 4096, 8192));
});

test('every scaled frequency lies between w_i / factor and w_i (linear, yarn, llama3)', () => {
  const inBracket = (r: RopeScaling, base: number, dim: number, factor: number): boolean => {
    const plain = refDefault(base, dim);
    const w = r.frequencies(1).invFreq;
    return plain.every((p, i) => w[i]! >= (p / factor) * (1 - 1e-12) && w[i]! <= p * (1 + 1e-12));
  };
  fc.assert(
    fc.property(
      fc.double({ min: 100, max: 1e7, noNaN: true }),
      fc.integer({ min: 2, max: 128 }).map((n) => 2 * n),
      fc.double({ min: 1, max: 64, noNaN: true }),
      fc.integer({ min: 256, max: 65536 }),
      fc.double({ min: 0.25, max: 2, noNaN: true }),
      fc.double({ min: 0.5, max: 8, noNaN: true }),
      (base, dim, factor, orig, low, gap) => {
        const common = { headDim: dim, base, maxPositionEmbeddings: orig * 4 };
        const linear = ropeScaling({ ...common, scaling: { type: 'linear', factor } });
        const original_max_position_embeddings = orig;
        const yarnR = ropeScaling({ ...common, scaling: { type: 'yarn', factor, original_max_position_embeddings } });
        const llama3 = { low_freq_factor: low, high_freq_factor: low + gap, original_max_position_embeddings };
        const llama = ropeScaling({ ...common, scaling: { rope_type: 'llama3', factor, ...llama3 } });
        return [linear, yarnR, llama].every((r) => inBracket(r, base, dim, factor));
      },
    ),
    { numRuns: 300, seed: 20240731 },
  );
});

// ---------------------------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------------------------

test('unknown rope type names itself and the supported list', () => {
  hfError({ ...LLAMA2, rope_scaling: { type: 'su', factor: 2 } }, '"su"', ...ROPE_SCALING_TYPES);
  hfError({ ...LLAMA2, rope_scaling: { rope_type: 'proportional' } }, 'proportional', 'longrope');
  hfError({ ...LLAMA2, rope_scaling: { rope_type: 3 } }, 'rope type', 'yarn');
});

test('missing required fields', () => {
  for (const type of ['linear', 'dynamic', 'yarn', 'llama3']) {
    const noFactor = { ...LLAMA31_SCALING, rope_type: type, factor: undefined };
    hfError({ ...LLAMA31, rope_scaling: noFactor }, 'factor', 'missing', type);
  }
  hfError({ ...LLAMA2, rope_scaling: { type: 'linear' } }, 'rope_scaling.factor');
  hfError({ ...LLAMA2, rope_parameters: { rope_type: 'linear' } }, 'rope_parameters.factor');
  for (const key of ['low_freq_factor', 'high_freq_factor']) {
    hfError({ ...LLAMA31, rope_scaling: { ...LLAMA31_SCALING, [key]: undefined } }, key, 'missing');
  }
  for (const key of ['short_factor', 'long_factor']) {
    hfError({ ...PHI3, rope_scaling: { ...PHI3.rope_scaling, [key]: undefined } }, key, 'missing');
  }
  hfError({ num_attention_heads: 32 }, 'head_dim', 'hidden_size');
  // Types that read a context length need one of the two.
  configError(() => ropeScaling({ headDim: 128, scaling: { type: 'dynamic', factor: 2 } }), 'max_position_embeddings');
  const llamaNoOrig = { ...LLAMA31_SCALING, original_max_position_embeddings: undefined };
  configError(() => ropeScaling({ headDim: 128, scaling: llamaNoOrig }), 'original_max_position_embeddings');
  const longrope = { type: 'longrope', short_factor: SHORT, long_factor: LONG };
  configError(() => ropeScaling({ headDim: 96, scaling: longrope }), 'max_position_embeddings');
});

test('factor < 1 and non-numeric fields are rejected', () => {
  for (const [type, extra] of [
    ['linear', {}],
    ['dynamic', {}],
    ['yarn', {}],
    ['llama3', { low_freq_factor: 1, high_freq_factor: 4, original_max_position_embeddings: 8192 }],
  ] as const) {
    hfError({ ...LLAMA31, rope_scaling: { rope_type: type, factor: 0.5, ...extra } }, '>= 1', type, '0.5');
  }
  hfError({ ...PHI3, rope_scaling: { ...PHI3.rope_scaling, factor: 0.5 } }, '>= 1', 'longrope');
  hfError({ ...LLAMA2, rope_scaling: { type: 'linear', factor: '4' } }, 'factor', 'finite number');
  hfError(yarn({ attention_factor: -1 }), 'attention_factor', '>= 0');
  hfError(yarn({ mscale: 'big', mscale_all_dim: 1 }), 'mscale');
  hfError({ ...LLAMA2, rope_scaling: 'linear' }, 'rope_scaling', 'object');
  hfError({ ...LLAMA2, head_dim: 64.5 }, 'head_dim', 'positive integer');
});

test('bad rotary dims: odd, too small, larger than head_dim', () => {
  hfError({ ...LLAMA2, head_dim: 126, partial_rotary_factor: 0.5 }, 'rotary dim', '63');
  hfError({ ...LLAMA2, head_dim: 7 }, 'rotary dim', '7');
  hfError({ ...LLAMA2, partial_rotary_factor: 0.01 }, 'rotary dim', '1');
  hfError({ ...LLAMA2, partial_rotary_factor: 0 }, 'partial_rotary_factor');
  hfError({ ...LLAMA2, partial_rotary_factor: 1.5 }, 'partial_rotary_factor');
  configError(() => ropeScaling({ headDim: 128, rotaryDim: 63 }), 'rotary dim', '63');
  configError(() => ropeScaling({ headDim: 64, rotaryDim: 128 }), 'exceeds head_dim');
  // dynamic's exponent d / (d - 2) is undefined for d = 2.
  const dynamic = { type: 'dynamic', factor: 2 };
  configError(() => ropeScaling({ headDim: 2, maxPositionEmbeddings: 4096, scaling: dynamic }), 'dynamic', 'rotary dim');
});

test('non-positive or non-finite base', () => {
  for (const rope_theta of [0, -10000, Infinity, NaN, '10000']) {
    hfError({ ...LLAMA2, rope_theta }, 'rope_theta');
  }
  configError(() => ropeScaling({ headDim: 128, base: -1 }), 'rope_theta', '-1');
});

test('longrope factor arrays must hold rotaryDim/2 positive numbers', () => {
  const bad = (patch: Record<string, unknown>) => ({ ...PHI3, rope_scaling: { ...PHI3.rope_scaling, ...patch } });
  hfError(bad({ short_factor: SHORT.slice(1) }), 'short_factor', '47', '48');
  hfError(bad({ long_factor: [...LONG, 2] }), 'long_factor', '49', '48');
  // With partial_rotary_factor 0.5 the arrays must shrink to 24.
  hfError({ ...PHI3, partial_rotary_factor: 0.5 }, 'short_factor', '24');
  hfError(bad({ long_factor: LONG.map((x, i) => (i === 7 ? 0 : x)) }), 'long_factor[7]');
  hfError(bad({ short_factor: 'ones' }), 'short_factor', 'array');
});

test('non-finite results are reported instead of returned', () => {
  // YaRN divides by ln(rope_theta): theta 1 gives an infinite correction range (HF: ZeroDivisionError).
  hfError(yarn({}, { rope_theta: 1 }), 'yarn', 'non-finite');
  // mscale_all_dim = -10 / ln(e) zeroes the denominator of the attention factor.
  hfError(yarn({ factor: Math.E, mscale: 1, mscale_all_dim: -10 }), 'attention factor', 'non-finite');
  // longrope with original 1 divides by ln(1) = 0.
  hfError({ ...PHI3, original_max_position_embeddings: 1 }, 'attention factor', 'non-finite');
  // dynamic: factor - (factor - 1) cancels to 0 once factor > 2^53, so base' = 0 already at max.
  hfError({ ...LLAMA2, rope_scaling: { type: 'dynamic', factor: 1e300 } }, 'dynamic', '4096');
  // ...and base' overflows when seqLen grows far enough (d = 4: base' = base * (2 L / max - 1)^2).
  const dynamic = { type: 'dynamic', factor: 2 };
  const huge = ropeScaling({ headDim: 4, base: 1e300, maxPositionEmbeddings: 4096, scaling: dynamic });
  assert.equal(huge.frequencies(4096).invFreq[0], 1);
  configError(() => huge.frequencies(4096 * 2 ** 40), 'dynamic', 'non-finite', String(4096 * 2 ** 40));
});

test('per-layer-type rope_parameters are refused with a pointer to ropeScaling()', () => {
  const gemma = {
    ...LLAMA2,
    layer_types: ['sliding_attention', 'full_attention'],
    rope_parameters: {
      sliding_attention: { rope_type: 'default' },
      full_attention: { rope_type: 'linear', factor: 8 },
    },
  };
  hfError(gemma, 'per-layer', 'ropeScaling()');
});

test('frequencies() rejects a negative or fractional seqLen', () => {
  for (const r of [ropeScalingFromHfConfig(LLAMA2), ropeScalingFromHfConfig(PHI3)]) {
    for (const bad of [-1, 1.5, NaN]) {
      assert.throws(
        () => r.frequencies(bad),
        (e: unknown) => e instanceof HalfpipeError && e.code === 'rope' && e.message.includes('seqLen'),
      );
    }
  }
});
