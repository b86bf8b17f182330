/**
 * Token embedding lookup, the reference kernel:
 *
 *     out[outOffset + i] = W[id, i]      i < dim
 *
 * W is the (vocab, dim) embedding matrix in any storage; f16/bf16 rows are decoded exactly, and
 * quantized rows are dequantized by the GGUF quant kernels (bit for bit as ggml does).
 */
import { load } from '../core/dtype.js';
import { fail } from '../core/errors.js';
import { dequantize } from '../formats/gguf/quants.js';
import { isPacked } from '../kernels/wasm/packed.js';
import { isQuantized, type Matrix, matrixShape } from './linear.js';

/** Writes row `id` of `w` into out[outOffset, outOffset + dim). */
export function embeddingRow(out: Float32Array, w: Matrix, id: number, outOffset = 0): void {
  const [vocab, dim] = matrixShape(w);
  if (!Number.isInteger(id) || id < 0 || id >= vocab) fail('usage', `token id ${id} is outside the vocabulary [0, ${vocab})`);
  if (!Number.isInteger(outOffset) || outOffset < 0 || outOffset + dim > out.length) {
    fail('shape', `embeddingRow: out holds ${out.length} values, need ${dim} at offset ${outOffset}`);
  }
  if (isPacked(w)) fail('layout', 'embeddingRow: the embedding matrix stays unpacked (packed matrices serve matmuls only)');
  if (isQuantized(w)) {
    dequantize(w.type, w.data.subarray(id * w.rowBytes, (id + 1) * w.rowBytes), dim, out, outOffset);
    return;
  }
  if (!w.isContiguous) fail('layout', `embeddingRow: the embedding matrix must be contiguous`);
  const at = w.offset + id * dim;
  if (w.dtype === 'f32') {
    out.set((w.data as Float32Array).subarray(at, at + dim), outOffset);
    return;
  }
  for (let i = 0; i < dim; i++) out[outOffset + i] = load(w.dtype, w.data, at + i);
}
