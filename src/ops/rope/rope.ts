/**
 * Rotary position embedding (RoPE, Su et al. 2021): one configuration, two implementations.
 *
 * For rotary dims d_r, pair i in [0, d_r/2) at integer position p is rotated by the angle p * w_i:
 *   y1 = x1 cos(p w_i) - x2 sin(p w_i),   y2 = x2 cos(p w_i) + x1 sin(p w_i),
 * with cos and sin multiplied by the attention factor m. Pairs are (x_i, x_{i + d_r/2}) for NeoX /
 * rotate-half (HF checkpoints) and (x_{2i}, x_{2i+1}) for GPT-J / interleaved (GGUF 'llama').
 * Dims beyond d_r pass through bit-exact. w_i and m come from the scaling type (scaling.ts).
 *
 * - `rope.fused(...)` rotates q and k in one pass, any layout described by strides, per-token
 *   positions, in place or out of place; the WASM SIMD kernel runs it when the tensors live in the
 *   wasm heap, a strided TypeScript loop with identical rounding otherwise.
 * - `ropeReference(...)` (reference.ts) is the textbook unfused path it is tested against.
 *
 * Precision: angles are float64-accurate at any position ('exact', angles.ts); the rotation runs in
 * f32 for f16/bf16 storage and f64 for f32 storage, and the result is rounded once on store.
 */
import { type DType, load, store } from '../../core/dtype.js';
import { fail } from '../../core/errors.js';
import { Tensor } from '../../core/tensor.js';
import { ropeWasmAvailable, runRopeWasm } from './wasm.js';
import { type AngleMode, fillCosSin } from './angles.js';
import type { RopeFrequencies, RopeScaling } from './scaling.js';

export type RopePairing = 'neox' | 'gptj';
export type RopeMath = 'f32' | 'f64';
/**
 * How q and k are laid out: [batch, seq, heads, head_dim], [batch, heads, seq, head_dim], or packed
 * tokens [tokens, heads, head_dim]. Strides come from the tensors; only the axis order is named.
 */
export type RopeLayout = 'bshd' | 'bhsd' | 'thd';
export const ROPE_LAYOUTS: readonly RopeLayout[] = ['bshd', 'bhsd', 'thd'];

/** Positions 0 .. 2^24: every one is exact in float32 (HF's angle mode needs that), and accuracy is tested up to there. */
export const DEFAULT_POSITION_LIMIT = 2 ** 24 + 1;

export interface RopeOptions {
  scaling: RopeScaling;
  /** default 'neox' */
  pairing?: RopePairing;
  /** default 'exact' */
  angles?: AngleMode;
  /** positions must lie in [0, positionLimit); default 2^24 + 1 */
  positionLimit?: number;
}

export interface RopeInputs {
  q: Tensor;
  k: Tensor;
  /** one position per token, token t = b * seqLen + s */
  positions: Int32Array;
  layout: RopeLayout;
  /** output tensors (same shapes and dtype as q and k); omitted: rotate in place */
  out?: { q: Tensor; k: Tensor };
  /** the longest sequence's length, for dynamic NTK and LongRoPE; default max(positions) + 1 */
  seqLen?: number;
  /** arithmetic precision; default f32 for f16/bf16 storage, f64 for f32 storage */
  math?: RopeMath;
}

export interface RopeOutputs {
  q: Tensor;
  k: Tensor;
}

/** q or k seen as [batch, seq, heads, head_dim], whatever its layout. */
export interface Bshd {
  tensor: Tensor;
  batch: number;
  seqLen: number;
  heads: number;
  headDim: number;
}

/** A validated call: everything a kernel needs, nothing left to check. */
export interface RopePlan {
  dtype: DType;
  math: RopeMath;
  rotaryDim: number;
  pairing: RopePairing;
  q: { input: Bshd; output: Bshd };
  k: { input: Bshd; output: Bshd };
  positions: Int32Array;
  freqs: RopeFrequencies;
  angles: AngleMode;
  outputs: RopeOutputs;
}

export function defaultMath(dtype: DType): RopeMath {
  return dtype === 'f32' ? 'f64' : 'f32';
}

/** Views a q/k tensor in `layout` as [batch, seq, heads, head_dim] (no copy). */
export function asBshd(t: Tensor, layout: RopeLayout, what: string): Bshd {
  const wantRank = layout === 'thd' ? 3 : 4;
  if (t.rank !== wantRank) fail('shape', `${what} must have rank ${wantRank} for layout ${layout}, got shape [${t.shape.join(', ')}]`);
  const v = layout === 'bshd' ? t : layout === 'bhsd' ? t.permute(0, 2, 1, 3) : t.unsqueeze(0);
  const [batch, seqLen, heads, headDim] = v.shape as [number, number, number, number];
  return { tensor: v, batch, seqLen, heads, headDim };
}

/** A resolved RoPE configuration. `fused` runs it; `plan` validates a call without running it. */
export class Rope {
  readonly scaling: RopeScaling;
  readonly pairing: RopePairing;
  readonly angles: AngleMode;
  readonly positionLimit: number;

  constructor(opts: RopeOptions) {
    this.scaling = opts.scaling;
    this.pairing = opts.pairing ?? 'neox';
    this.angles = opts.angles ?? 'exact';
    this.positionLimit = opts.positionLimit ?? DEFAULT_POSITION_LIMIT;
    if (this.pairing !== 'neox' && this.pairing !== 'gptj') fail('rope', `unknown pairing '${String(this.pairing)}' (supported: neox, gptj)`);
    if (this.angles !== 'exact' && this.angles !== 'hf-compatible') fail('rope', `unknown angle mode '${String(this.angles)}' (supported: exact, hf-compatible)`);
    if (!Number.isInteger(this.positionLimit) || this.positionLimit < 1 || this.positionLimit > 2 ** 31) {
      fail('rope', `position limit must be an integer in [1, 2^31], got ${this.positionLimit}`);
    }
    const { rotaryDim, headDim } = this.scaling;
    if (!Number.isInteger(rotaryDim) || rotaryDim < 2 || rotaryDim % 2 !== 0) fail('rope', `rotary dim must be even and >= 2, got ${rotaryDim}`);
    if (rotaryDim > headDim) fail('rope', `rotary dim ${rotaryDim} exceeds head_dim ${headDim}`);
  }

  get rotaryDim(): number {
    return this.scaling.rotaryDim;
  }

  get headDim(): number {
    return this.scaling.headDim;
  }

  /** Frequencies and attention factor for a call whose longest sequence has seqLen tokens. */
  frequencies(seqLen: number): RopeFrequencies {
    return this.scaling.frequencies(seqLen);
  }

  /**
   * The frequencies for a call over `positions` (validated here), after checking that they give a
   * finite cos/sin table. seqLen defaults to max(positions) + 1.
   */
  frequenciesFor(positions: Int32Array, seqLen?: number): RopeFrequencies {
    this.checkPositions(positions, positions.length);
    const maxPosition = maxOf(positions);
    const len = seqLen ?? maxPosition + 1;
    if (!Number.isInteger(len) || len < 1) fail('rope', `seqLen must be a positive integer, got ${len}`);
    const freqs = this.frequencies(len);
    const { invFreq, attentionFactor } = freqs;
    if (invFreq.length * 2 !== this.rotaryDim) fail('rope', `scaling gave ${invFreq.length} frequencies for rotary dim ${this.rotaryDim}`);
    // cos and sin of a finite angle are finite, so checking the factors checks the whole table.
    if (!Number.isFinite(attentionFactor)) fail('rope', `non-finite cos/sin table: attention factor is ${attentionFactor}`);
    for (let i = 0; i < invFreq.length; i++) {
      if (!Number.isFinite(invFreq[i]! * maxPosition) || !Number.isFinite(invFreq[i]!)) {
        fail('rope', `non-finite cos/sin table: inv_freq[${i}] = ${invFreq[i]} at position ${maxPosition}; check the scaling parameters`);
      }
    }
    return freqs;
  }

  /** cos/sin rows for `positions`: rotaryDim/2 values m cos then m sin per token, in float64. */
  cosSin(positions: Int32Array, seqLen?: number): Float64Array {
    const freqs = this.frequenciesFor(positions, seqLen);
    const table = new Float64Array(positions.length * this.rotaryDim);
    fillCosSin(table, positions, freqs, this.angles);
    return table;
  }

  checkPositions(positions: Int32Array, tokens: number): void {
    if (!(positions instanceof Int32Array)) fail('rope', 'positions must be an Int32Array');
    if (positions.length !== tokens) fail('rope', `positions has ${positions.length} entries for ${tokens} tokens`);
    for (let t = 0; t < positions.length; t++) {
      const p = positions[t]!;
      if (p < 0 || p >= this.positionLimit) fail('rope', `position ${p} at token ${t} is outside [0, ${this.positionLimit})`);
    }
  }

  /** Validates a call. Throws before anything is written. */
  plan(inputs: RopeInputs): RopePlan {
    const { layout } = inputs;
    if (!ROPE_LAYOUTS.includes(layout)) fail('rope', `unknown layout '${String(layout)}' (supported: ${ROPE_LAYOUTS.join(', ')})`);
    const q = asBshd(inputs.q, layout, 'q');
    const k = asBshd(inputs.k, layout, 'k');
    const dtype = inputs.q.dtype;
    if (inputs.k.dtype !== dtype) fail('rope', `q is ${dtype} but k is ${inputs.k.dtype}`);
    if (q.batch !== k.batch || q.seqLen !== k.seqLen) {
      fail('shape', `q has batch ${q.batch} and ${q.seqLen} tokens per sequence but k has batch ${k.batch} and ${k.seqLen}`);
    }
    for (const [name, v] of [['q', q], ['k', k]] as const) {
      if (v.headDim !== this.headDim) fail('shape', `${name} has head_dim ${v.headDim}, configured ${this.headDim}`);
      if (v.heads < 1) fail('shape', `${name} has no heads`);
    }
    if (q.heads % k.heads !== 0) fail('shape', `q heads (${q.heads}) must be a multiple of k heads (${k.heads})`);
    const out = inputs.out ?? { q: inputs.q, k: inputs.k };
    const qOut = asBshd(out.q, layout, 'out.q');
    const kOut = asBshd(out.k, layout, 'out.k');
    for (const [name, o, i] of [['out.q', out.q, inputs.q], ['out.k', out.k, inputs.k]] as const) {
      if (o.dtype !== dtype) fail('rope', `${name} is ${o.dtype}, expected ${dtype}`);
      if (o.shape.join() !== i.shape.join()) fail('shape', `${name} has shape [${o.shape.join(', ')}], expected [${i.shape.join(', ')}]`);
    }
    checkOverlaps([
      ['q', inputs.q, out.q],
      ['k', inputs.k, out.k],
    ]);
    const math = inputs.math ?? defaultMath(dtype);
    if (math !== 'f32' && math !== 'f64') fail('rope', `unknown math precision '${String(math)}' (supported: f32, f64)`);
    this.checkPositions(inputs.positions, q.batch * q.seqLen);
    const freqs = this.frequenciesFor(inputs.positions, inputs.seqLen);
    return {
      dtype,
      math,
      rotaryDim: this.rotaryDim,
      pairing: this.pairing,
      q: { input: q, output: qOut },
      k: { input: k, output: kOut },
      positions: inputs.positions,
      freqs,
      angles: this.angles,
      outputs: { q: out.q, k: out.k },
    };
  }

  /** Rotates q and k in one pass. Returns the output tensors (q and k themselves when in place). */
  fused(inputs: RopeInputs): RopeOutputs {
    const plan = this.plan(inputs);
    if (ropeWasmAvailable(plan)) runRopeWasm(plan);
    else rotateStrided(plan);
    return plan.outputs;
  }
}

/** A plan's cos/sin rows in float64 (the TypeScript paths; the WASM path builds its own in the heap). */
export function planTable(plan: RopePlan): Float64Array {
  const table = new Float64Array(plan.positions.length * plan.rotaryDim);
  fillCosSin(table, plan.positions, plan.freqs, plan.angles);
  return table;
}

function maxOf(a: Int32Array): number {
  let m = 0;
  for (let i = 0; i < a.length; i++) if (a[i]! > m) m = a[i]!;
  return m;
}

/** The storage range [lo, hi] a view can touch. */
function span(t: Tensor): [number, number] {
  let lo = t.offset;
  let hi = t.offset;
  t.shape.forEach((d, i) => {
    const s = t.strides[i]! * (d - 1);
    if (s < 0) lo += s;
    else hi += s;
  });
  return [lo, hi];
}

function sameView(a: Tensor, b: Tensor): boolean {
  return a.data === b.data && a.offset === b.offset && a.strides.join() === b.strides.join();
}

function sharesMemory(a: Tensor, b: Tensor): boolean {
  if (a.data.buffer !== b.data.buffer) return false;
  const [alo, ahi] = span(a).map((i) => a.data.byteOffset + i * a.data.BYTES_PER_ELEMENT) as [number, number];
  const [blo, bhi] = span(b).map((i) => b.data.byteOffset + i * b.data.BYTES_PER_ELEMENT) as [number, number];
  return alo <= bhi + b.data.BYTES_PER_ELEMENT - 1 && blo <= ahi + a.data.BYTES_PER_ELEMENT - 1;
}

/**
 * An output may be its own input (in place) or fully separate memory. Anything else (an output
 * overlapping another operand, or its input under a different layout) would read rotated values.
 */
function checkOverlaps(pairs: [string, Tensor, Tensor][]): void {
  for (const [name, input, output] of pairs) {
    if (!sameView(input, output) && sharesMemory(input, output)) fail('layout', `out.${name} overlaps ${name} without being the same view: use separate memory or rotate in place`);
  }
  const [[, qIn, qOut], [, kIn, kOut]] = pairs as [[string, Tensor, Tensor], [string, Tensor, Tensor]];
  if (sharesMemory(qOut, kOut)) fail('layout', 'out.q and out.k overlap');
  if (sharesMemory(qOut, kIn)) fail('layout', 'out.q overlaps k');
  if (sharesMemory(kOut, qIn)) fail('layout', 'out.k overlaps q');
}

/**
 * The fused loop over any strides, in TypeScript. Rounds exactly like the WASM kernel: each
 * product and sum in `math` precision (no fused multiply-add), then one rounding on store.
 */
export function rotateStrided(plan: RopePlan): void {
  const { dtype, rotaryDim, pairing } = plan;
  const table = planTable(plan);
  const half = rotaryDim / 2;
  const f32 = plan.math === 'f32';
  const r = f32 ? Math.fround : (x: number) => x;
  const { batch, seqLen, headDim } = plan.q.input;
  for (let b = 0; b < batch; b++) {
    for (let s = 0; s < seqLen; s++) {
      const row = (b * seqLen + s) * rotaryDim;
      for (const { input, output } of [plan.q, plan.k]) {
        const src = input.tensor;
        const dst = output.tensor;
        for (let h = 0; h < input.heads; h++) {
          const i0 = src.offset + b * src.strides[0]! + s * src.strides[1]! + h * src.strides[2]!;
          const o0 = dst.offset + b * dst.strides[0]! + s * dst.strides[1]! + h * dst.strides[2]!;
          const sd = src.strides[3]!;
          const od = dst.strides[3]!;
          for (let i = 0; i < half; i++) {
            const j1 = pairing === 'neox' ? i : 2 * i;
            const j2 = pairing === 'neox' ? i + half : 2 * i + 1;
            const x1 = load(dtype, src.data, i0 + j1 * sd);
            const x2 = load(dtype, src.data, i0 + j2 * sd);
            const c = r(table[row + i]!);
            const sn = r(table[row + half + i]!);
            store(dtype, dst.data, o0 + j1 * od, r(r(x1 * c) - r(x2 * sn)));
            store(dtype, dst.data, o0 + j2 * od, r(r(x2 * c) + r(x1 * sn)));
          }
          // The pass-through dims keep their raw bits.
          if (src.data !== dst.data || i0 !== o0 || sd !== od) {
            for (let j = rotaryDim; j < headDim; j++) dst.data[o0 + j * od] = src.data[i0 + j * sd]!;
          }
        }
      }
    }
  }
}
