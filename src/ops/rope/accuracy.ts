/**
 * How accurate is a RoPE? Error per rotated pair, in ulps of the output dtype relative to the
 * pair's norm, against a float64 rotation with float64 angles. Rounding each component once costs
 * up to sqrt(2)/2 ~ 0.71 ulp; that is the best any kernel storing to that dtype can do.
 *
 * Besides halfpipe's fused kernel this module emulates how other engines compute RoPE, so that
 * `halfpipe rope-report` can show the difference (../shared/notes/rope-numerics.md):
 * - 'storage-dtype': the cos/sin table cast to the model dtype, x cos - y sin computed in that dtype
 *   with a rounding after each operation, angles as float32 position x float32 w (HF transformers,
 *   candle, the fused kernel mistral.rs used in 2024);
 * - 'f32-angle': float32 angles as HF computes them, the rotation in f32 rounded once
 *   (halfpipe's 'hf-compatible' mode): the angle error alone;
 * - 'ggml': llama.cpp's iterated float32 angle, theta_i = p * theta_scale^i by repeated multiplication,
 *   the rotation in f32, rounded once on store.
 */
import { type DType, roundTo, ulp } from '../../core/dtype.js';
import { Tensor } from '../../core/tensor.js';
import { DEFAULT_POSITION_LIMIT, Rope } from './rope.js';
import { ropeScaling } from './scaling.js';

export type RopeMethod = 'halfpipe' | 'storage-dtype' | 'f32-angle' | 'ggml';
export const ROPE_METHODS: readonly RopeMethod[] = ['halfpipe', 'storage-dtype', 'f32-angle', 'ggml'];

/** |y - r| / ulp(|r|): the error of the rotated pair y against the exact pair r, in ulps of `dtype`. */
export function pairErrorUlps(dtype: DType, y1: number, y2: number, r1: number, r2: number): number {
  const norm = Math.hypot(r1, r2);
  return Math.hypot(y1 - r1, y2 - r2) / ulp(dtype, norm);
}

/** One token's head vector rotated by each method (NeoX pairing), values decoded to float64. */
function rotateByMethod(method: RopeMethod, dtype: DType, x: Float64Array, position: number, ropes: Record<'halfpipe' | 'f32-angle', Rope>): Float64Array {
  const { invFreq } = ropes.halfpipe.frequencies(1);
  const base = ropes.halfpipe.scaling.base;
  const half = invFreq.length;
  const y = Float64Array.from(x);
  if (method === 'halfpipe' || method === 'f32-angle') {
    const rope = ropes[method];
    const t = Tensor.fromValues(x, [1, 1, x.length], dtype);
    const k = Tensor.fromValues(x, [1, 1, x.length], dtype);
    rope.fused({ q: t, k, positions: Int32Array.of(position), layout: 'thd', math: dtype === 'f32' ? 'f64' : 'f32' });
    return t.toFloat64Array();
  }
  const rd = (v: number) => roundTo(dtype, v);
  const f = Math.fround;
  // ggml: theta starts at p and is multiplied by theta_scale = base^(-2/d) once per pair, in f32.
  const thetaScale = f(base ** (-2 / (2 * half)));
  let theta = f(position);
  for (let i = 0; i < half; i++) {
    const x1 = x[i]!;
    const x2 = x[i + half]!;
    if (method === 'storage-dtype') {
      const angle = f(f(position) * f(invFreq[i]!));
      const c = rd(f(Math.cos(angle)));
      const s = rd(f(Math.sin(angle)));
      y[i] = rd(rd(x1 * c) - rd(x2 * s));
      y[i + half] = rd(rd(x2 * c) + rd(x1 * s));
    } else {
      const c = f(Math.cos(theta));
      const s = f(Math.sin(theta));
      y[i] = rd(f(f(x1 * c) - f(x2 * s)));
      y[i + half] = rd(f(f(x2 * c) + f(x1 * s)));
      theta = f(theta * thetaScale);
    }
  }
  return y;
}

export interface RopeAccuracyRow {
  /** k: the bucket holds 2^k and random positions within 2^k +- 25% */
  log2Position: number;
  /** worst error per rotated pair, in ulps, per method */
  worstUlps: Record<RopeMethod, number>;
}

export interface RopeAccuracyOptions {
  dtype: DType;
  headDim?: number;
  base?: number;
  /** positions 2^minLog2 .. 2^maxLog2 */
  minLog2?: number;
  maxLog2?: number;
  /** positions sampled per bucket, each with a fresh random vector */
  samples?: number;
  seed?: number;
}

/** Worst-case error per method at positions 2^4 .. 2^24 (each bucket: 2^k and random positions around it). */
export function ropeAccuracyReport(opts: RopeAccuracyOptions): RopeAccuracyRow[] {
  const { dtype, headDim = 128, base = 10000, minLog2 = 4, maxLog2 = 24, samples = 24, seed = 1 } = opts;
  const scaling = ropeScaling({ headDim, base });
  const invFreq = scaling.frequencies(1).invFreq;
  const ropes = { halfpipe: new Rope({ scaling }), 'f32-angle': new Rope({ scaling, angles: 'hf-compatible' }) };
  let state = seed >>> 0 || 1;
  const random = () => {
    state ^= state << 13;
    state ^= state >>> 17;
    state ^= state << 5;
    return (state >>> 0) / 2 ** 32;
  };
  const rows: RopeAccuracyRow[] = [];
  for (let k = minLog2; k <= maxLog2; k++) {
    const worst = Object.fromEntries(ROPE_METHODS.map((m) => [m, 0])) as Record<RopeMethod, number>;
    for (let n = 0; n < samples; n++) {
      // 2^k itself, then random positions within 2^k +- 25%, never past the position limit
      const position = n === 0 ? 2 ** k : Math.min(Math.round(2 ** k * (0.75 + 0.5 * random())), DEFAULT_POSITION_LIMIT - 1);
      // Inputs in the storage dtype, spread over a few binades as real q/k are.
      const x = Float64Array.from({ length: headDim }, () => roundTo(dtype, (random() * 2 - 1) * 2 ** Math.floor(random() * 4)));
      for (const method of ROPE_METHODS) {
        const y = rotateByMethod(method, dtype, x, position, ropes);
        for (let i = 0; i < headDim / 2; i++) {
          const angle = position * invFreq[i]!;
          const [c, s] = [Math.cos(angle), Math.sin(angle)];
          const [x1, x2] = [x[i]!, x[i + headDim / 2]!];
          const err = pairErrorUlps(dtype, y[i]!, y[i + headDim / 2]!, x1 * c - x2 * s, x2 * c + x1 * s);
          if (err > worst[method]) worst[method] = err;
        }
      }
    }
    rows.push({ log2Position: k, worstUlps: worst });
  }
  return rows;
}
