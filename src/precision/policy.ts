/**
 * Precision policies: which dtype each activation of the forward is stored in.
 *
 * halfpipe computes every op with float64 accumulation and rounds its output once to the dtype the
 * policy names for it, so a half-precision policy reproduces exactly what an engine storing that
 * activation in f16/bf16 would see, overflow to inf included. Presets:
 *
 * - `f32`: everything f32.
 * - `naive-f16`: everything f16, the residual stream and the logits included, as a GPU engine does.
 *   LLaMA-2's massive activations (a few residual channels in the thousands) leave little headroom,
 *   and an MLP down_proj output past 65504 becomes inf, then NaN.
 * - `safe-f16` (the default for f16 weights): the residual stream and the norms stay f32, q/k/v and
 *   the MLP activations are f16, and an upcast list keeps the ops that overflow in practice
 *   (mlp down_proj, whose output joins the residual stream, and the logits) in f32.
 * - `bf16`: everything bf16 (f32's range, 8 bits of mantissa).
 *
 * Overrides by name pattern refine a preset: `layers.*.down=f16`, `layers.3.*=f32`, `logits=f16`.
 * Optional clamp-on-overflow (as T5 does): a value past the dtype's max is clamped to +-max instead of
 * becoming inf, and counted.
 */
import { type DType, parseDType } from '../core/dtype.js';
import { fail } from '../core/errors.js';

export const POLICY_NAMES = ['f32', 'naive-f16', 'safe-f16', 'bf16'] as const;
export type PolicyName = (typeof POLICY_NAMES)[number];

/** Which part of the forward an activation belongs to. */
export type ActivationRole = 'residual' | 'norm' | 'activation';

export interface PrecisionPolicy {
  name: string;
  /** storage dtype of weight matrices when converting on load (undefined: as stored) */
  weights: DType | undefined;
  /** the residual stream: embeddings, residual_1, residual_2 */
  residual: DType;
  /** RMSNorm outputs */
  norms: DType;
  /** every other activation */
  activations: DType;
  /** accumulation inside ops: always float64 in halfpipe's kernels (at least f32 by the policy's contract) */
  accumulation: 'f64';
  /** KV cache storage */
  kvCache: 'f32' | 'f16';
  /** later entries win: `pattern` matches `layers.<l>.<op>` or a top-level op name; `*` is a wildcard */
  overrides: Array<{ pattern: string; dtype: DType }>;
  /** clamp values past the dtype's max instead of overflowing to inf */
  clamp: boolean;
}

const PRESETS: Record<PolicyName, Omit<PrecisionPolicy, 'overrides' | 'clamp'> & { overrides: PrecisionPolicy['overrides'] }> = {
  f32: { name: 'f32', weights: undefined, residual: 'f32', norms: 'f32', activations: 'f32', accumulation: 'f64', kvCache: 'f32', overrides: [] },
  'naive-f16': { name: 'naive-f16', weights: 'f16', residual: 'f16', norms: 'f16', activations: 'f16', accumulation: 'f64', kvCache: 'f16', overrides: [] },
  'safe-f16': {
    name: 'safe-f16',
    weights: 'f16',
    residual: 'f32',
    norms: 'f32',
    activations: 'f16',
    accumulation: 'f64',
    kvCache: 'f16',
    overrides: [
      { pattern: 'layers.*.down', dtype: 'f32' },
      { pattern: 'logits', dtype: 'f32' },
    ],
  },
  // k and v are rounded to bf16 before the cache stores them, so an f32 cache holds them exactly.
  bf16: { name: 'bf16', weights: 'bf16', residual: 'bf16', norms: 'bf16', activations: 'bf16', accumulation: 'f64', kvCache: 'f32', overrides: [] },
};

/**
 * A policy from a spec: a preset name, optionally followed by comma-separated `pattern=dtype`
 * overrides and the word `clamp`, e.g. `safe-f16,layers.0.*=f32,clamp`.
 */
export function parsePolicy(spec: string | PrecisionPolicy): PrecisionPolicy {
  if (typeof spec !== 'string') return spec;
  const [name, ...rest] = spec.split(',').map((s) => s.trim());
  if (!(POLICY_NAMES as readonly string[]).includes(name!)) fail('usage', `unknown precision policy '${name}' (supported: ${POLICY_NAMES.join(', ')})`);
  const preset = PRESETS[name as PolicyName];
  const policy: PrecisionPolicy = { ...preset, overrides: [...preset.overrides], clamp: false };
  for (const part of rest) {
    if (part === 'clamp') {
      policy.clamp = true;
      continue;
    }
    const eq = part.indexOf('=');
    if (eq <= 0) fail('usage', `policy override '${part}' must be pattern=dtype (e.g. layers.*.down=f32) or 'clamp'`);
    policy.overrides.push({ pattern: part.slice(0, eq), dtype: parseDType(part.slice(eq + 1)) });
    policy.name = spec;
  }
  if (policy.clamp) policy.name = spec;
  return policy;
}

/** The default policy for weights stored in `weightDtype`: safe-f16 for f16 weights, else f32. */
export function defaultPolicy(weightDtype: string | undefined): PrecisionPolicy {
  return parsePolicy(weightDtype === 'f16' ? 'safe-f16' : 'f32');
}

function globToRegExp(pattern: string): RegExp {
  const escaped = pattern.replace(/[.+?^${}()|[\]\\]/g, '\\$&').replace(/\*/g, '[^.]*');
  return new RegExp(`^${escaped}$`);
}

/** The qualified name of an op: `layers.<l>.<op>` inside a layer, the op name outside (layer -1). */
export function opPath(op: string, layer: number): string {
  return layer < 0 ? op : `layers.${layer}.${op}`;
}

/** The dtype an op's output is stored in under `policy`. */
export function activationDtype(policy: PrecisionPolicy, op: string, layer: number, role: ActivationRole): DType {
  let dtype = role === 'residual' ? policy.residual : role === 'norm' ? policy.norms : policy.activations;
  const path = opPath(op, layer);
  for (const { pattern, dtype: d } of policy.overrides) if (globToRegExp(pattern).test(path)) dtype = d;
  return dtype;
}
