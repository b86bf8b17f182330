/**
 * Softmax over x[offset, offset + length), in place:
 *
 *     x_i <- exp(x_i - m) / sum_j exp(x_j - m),      m = max_j x_j
 *
 * Subtracting the maximum keeps every exp in (0, 1], so large logits never overflow; the result is
 * the same function. exp and the sum run in float64 (JS numbers), each value is rounded once on
 * store when x is a Float32Array. NaN in, NaN out; an all -Infinity row has no softmax and gives NaN.
 */
import { fail } from '../core/errors.js';

export function softmaxInPlace(x: Float32Array | Float64Array, offset = 0, length = x.length - offset): void {
  if (!Number.isInteger(offset) || !Number.isInteger(length) || offset < 0 || length < 0 || offset + length > x.length) {
    fail('shape', `softmaxInPlace: range [${offset}, ${offset + length}) outside ${x.length} values`);
  }
  const end = offset + length;
  let max = -Infinity;
  for (let i = offset; i < end; i++) if (x[i]! > max || Number.isNaN(x[i]!)) max = x[i]!;
  let sum = 0;
  for (let i = offset; i < end; i++) sum += Math.exp(x[i]! - max);
  for (let i = offset; i < end; i++) x[i] = Math.exp(x[i]! - max) / sum;
}
