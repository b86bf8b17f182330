/**
 * The unfused reference RoPE, written the textbook way (as HF transformers' apply_rotary_pos_emb):
 * build cos/sin for the positions, transpose q and k (separately) to [batch, heads, seq, head_dim],
 * split off the rotary dims, compute x * cos + rotate(x) * sin, concatenate the pass-through dims,
 * and transpose back. It is slow and obvious on purpose: the fused kernel is tested against it.
 *
 * rotate(x) is rotate_half for NeoX pairing, (-x2, x1) for each half, and rotate_every_two for
 * GPT-J pairing, (-x_{2i+1}, x_{2i}) for each pair. cos/sin are widened to the full rotary width.
 */
import { type DType, load, store } from '../../core/dtype.js';
import { Tensor } from '../../core/tensor.js';
import { planTable, type Rope, type RopeInputs, type RopeOutputs, type RopePairing } from './rope.js';

/** cos/sin per token widened to rotaryDim columns: [c0..c_{h-1}, c0..c_{h-1}] (NeoX) or [c0, c0, c1, c1, ...] (GPT-J). */
function widen(table: Float64Array, tokens: number, rotaryDim: number, pairing: RopePairing, round: (v: number) => number) {
  const half = rotaryDim / 2;
  const cos = new Float64Array(tokens * rotaryDim);
  const sin = new Float64Array(tokens * rotaryDim);
  for (let t = 0; t < tokens; t++) {
    for (let j = 0; j < rotaryDim; j++) {
      const i = pairing === 'neox' ? j % half : j >> 1;
      cos[t * rotaryDim + j] = round(table[t * rotaryDim + i]!);
      sin[t * rotaryDim + j] = round(table[t * rotaryDim + half + i]!);
    }
  }
  return { cos, sin };
}

/** rotate_half / rotate_every_two of one head's rotary dims (values already decoded). */
function rotate(x: Float64Array, pairing: RopePairing): Float64Array {
  const n = x.length;
  const half = n / 2;
  const out = new Float64Array(n);
  for (let j = 0; j < n; j++) {
    if (pairing === 'neox') out[j] = j < half ? -x[j + half]! : x[j - half]!;
    else out[j] = j % 2 === 0 ? -x[j + 1]! : x[j - 1]!;
  }
  return out;
}

/** Rotates one tensor given as [batch, heads, seq, head_dim] (contiguous) and returns a new one. */
function rotateBhsd(
  x: Tensor,
  cos: Float64Array,
  sin: Float64Array,
  rotaryDim: number,
  pairing: RopePairing,
  round: (v: number) => number,
): Tensor {
  const [batch, heads, seqLen, headDim] = x.shape as [number, number, number, number];
  const dtype: DType = x.dtype;
  const y = x.copy(); // the pass-through dims keep their raw bits
  const xr = new Float64Array(rotaryDim);
  for (let b = 0; b < batch; b++) {
    for (let h = 0; h < heads; h++) {
      for (let s = 0; s < seqLen; s++) {
        const at = ((b * heads + h) * seqLen + s) * headDim;
        const row = (b * seqLen + s) * rotaryDim;
        for (let j = 0; j < rotaryDim; j++) xr[j] = load(dtype, x.data, at + j);
        const rot = rotate(xr, pairing);
        for (let j = 0; j < rotaryDim; j++) {
          store(dtype, y.data, at + j, round(round(xr[j]! * cos[row + j]!) + round(rot[j]! * sin[row + j]!)));
        }
      }
    }
  }
  return y;
}

/** Copies raw elements from src to dst (same shape), whatever their strides. */
function copyInto(dst: Tensor, src: Tensor): void {
  const order: number[] = [];
  src.forEachIndex((at) => order.push(at));
  dst.forEachIndex((at, i) => (dst.data[at] = src.data[order[i]!]!));
}

/** The reference RoPE: validates exactly like `rope.fused`, then rotates q and k one at a time. */
export function ropeReference(rope: Rope, inputs: RopeInputs): RopeOutputs {
  const plan = rope.plan(inputs);
  const { rotaryDim, pairing } = plan;
  const tokens = plan.q.input.batch * plan.q.input.seqLen;
  const round = plan.math === 'f32' ? Math.fround : (v: number) => v;
  const { cos, sin } = widen(planTable(plan), tokens, rotaryDim, pairing, round);
  for (const { input, output } of [plan.q, plan.k]) {
    // [b, s, h, d] -> [b, h, s, d], rotate, and back.
    const bhsd = input.tensor.permute(0, 2, 1, 3).contiguous();
    const rotated = rotateBhsd(bhsd, cos, sin, rotaryDim, pairing, round);
    copyInto(output.tensor, rotated.permute(0, 2, 1, 3));
  }
  return plan.outputs;
}
