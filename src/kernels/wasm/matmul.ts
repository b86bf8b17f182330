/**
 * The SIMD matrix kernels behind one entry point: repack a weight matrix into the wasm heap once
 * (packMatrix), then multiply by it (matmulPacked). Float weights (f32, f16, bf16) and the GGUF
 * block types Q8_0, Q4_0, Q4_K and Q6_K are covered; other types stay with the reference ops.
 */
import { Tensor } from '../../core/tensor.js';
import type { QuantizedMatrix } from '../../ops/linear.js';
import { matmulFloat, packFloatMatrix } from './matmul-float.js';
import { matmulQuant, PACKED_QUANT_TYPES, packQuantMatrix } from './matmul-quant.js';
import type { PackedMatrix } from './packed.js';

/** The packed form of `m`, or undefined when no SIMD kernel reads its type. */
export function packMatrix(m: Tensor | QuantizedMatrix): PackedMatrix | undefined {
  if (m instanceof Tensor) return packFloatMatrix(m);
  return (PACKED_QUANT_TYPES as readonly string[]).includes(m.type) ? packQuantMatrix(m) : undefined;
}

/** out (tokens, rows) = x (tokens, cols) W^T for a packed W. */
export function matmulPacked(out: Float32Array, x: Float32Array, tokens: number, w: PackedMatrix): void {
  if (w.type === 'f32' || w.type === 'f16' || w.type === 'bf16') matmulFloat(out, x, tokens, w);
  else matmulQuant(out, x, tokens, w);
}
