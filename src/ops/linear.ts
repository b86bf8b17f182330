/**
 * Linear layer without bias, the reference kernel (fast kernels are tested against it):
 *
 *     out[r * outF + o] = sum_{i < inF} x[r * inF + i] * W[o, i]      r < rows, o < outF
 *
 * W is stored as (out, in) rows, as checkpoints store it (y = x W^T). f16 and bf16 weights are
 * decoded exactly (every one is an f32); each row's sum accumulates in JS numbers (float64), where
 * the f32 x f32 products are exact, and is rounded once to f32 on store. Quantized (GGUF) rows go
 * through the quant kernels' row dot product (`dotQuantRow`: float64 sums block by block, with the
 * block scales factored out), also rounded once on store.
 */
import { bf16BitsToNumber, f16BitsToNumber } from '../core/dtype.js';
import { fail } from '../core/errors.js';
import type { Tensor } from '../core/tensor.js';
import { dotQuantRow } from '../formats/gguf/quants.js';
import { matmulPacked, packMatrix } from '../kernels/wasm/matmul.js';
import { isPacked, type PackedMatrix } from '../kernels/wasm/packed.js';
import type { GgmlType } from '../formats/gguf/types.js';

/** GGUF block-quantized types the LLaMA models use. */
export type QuantType = Extract<GgmlType, 'Q8_0' | 'Q4_0' | 'Q4_1' | 'Q5_0' | 'Q5_1' | 'Q4_K' | 'Q5_K' | 'Q6_K'>;
export const QUANT_TYPES: readonly QuantType[] = ['Q8_0', 'Q4_0', 'Q4_1', 'Q5_0', 'Q5_1', 'Q4_K', 'Q5_K', 'Q6_K'];

/** GGUF-quantized rows: row o occupies data[o * rowBytes, (o + 1) * rowBytes). */
export interface QuantizedMatrix {
  kind: 'quantized';
  type: QuantType;
  rows: number;
  cols: number;
  rowBytes: number;
  data: Uint8Array;
}

/**
 * A weight matrix stored as (out, in) rows: a contiguous 2-D Tensor in f32/f16/bf16, GGUF-quantized
 * rows, or either repacked into the wasm heap for the SIMD kernels (see packForKernels).
 */
export type Matrix = Tensor | QuantizedMatrix | PackedMatrix;

export function isQuantized(m: Matrix): m is QuantizedMatrix {
  return (m as QuantizedMatrix).kind === 'quantized';
}

/** [rows, cols] = [out, in] of a matrix. */
export function matrixShape(m: Matrix): [number, number] {
  if (isQuantized(m) || isPacked(m)) return [m.rows, m.cols];
  if (m.rank !== 2) fail('shape', `a weight matrix must be 2-D, got shape [${m.shape.join(', ')}]`);
  return [m.shape[0]!, m.shape[1]!];
}

/** A short description for error messages: "f16 [64, 32]" or "Q4_K [64, 256]". */
export function describeMatrix(m: Matrix): string {
  const [rows, cols] = matrixShape(m);
  if (isPacked(m)) return `${m.type} (packed) [${rows}, ${cols}]`;
  return `${isQuantized(m) ? m.type : m.dtype} [${rows}, ${cols}]`;
}

/** Decoded-row scratch, grown as needed and shared by every call (kernels are synchronous). */
let rowScratch = new Float32Array(0);

/** out (rows, outF) = x (rows, inF) W^T. `out` must not overlap `x`. */
export function linear(out: Float32Array, x: Float32Array, rows: number, w: Matrix): void {
  const [outF, inF] = matrixShape(w);
  if (!Number.isInteger(rows) || rows < 0) fail('shape', `linear: rows must be a non-negative integer, got ${rows}`);
  if (x.length < rows * inF) fail('shape', `linear: x holds ${x.length} values, need ${rows} x ${inF}`);
  if (out.length < rows * outF) fail('shape', `linear: out holds ${out.length} values, need ${rows} x ${outF}`);
  if (out.buffer === x.buffer && out.byteOffset < x.byteOffset + x.byteLength && x.byteOffset < out.byteOffset + out.byteLength) {
    fail('layout', 'linear: out overlaps x');
  }

  if (isPacked(w)) {
    matmulPacked(out, x, rows, w);
    return;
  }
  if (isQuantized(w)) {
    if (!QUANT_TYPES.includes(w.type)) fail('dtype', `linear: unsupported quantized type '${String(w.type)}' (supported: ${QUANT_TYPES.join(', ')})`);
    for (let r = 0; r < rows; r++) {
      const xr = x.subarray(r * inF, (r + 1) * inF);
      for (let o = 0; o < outF; o++) out[r * outF + o] = dotQuantRow(w.type, w.data, o * w.rowBytes, xr, inF);
    }
    return;
  }
  if (!w.isContiguous) fail('layout', `linear: weight ${describeMatrix(w)} must be contiguous`);

  const data = w.data;
  const base = w.offset;
  if (w.dtype === 'f32') {
    for (let o = 0; o < outF; o++) {
      const wo = base + o * inF;
      for (let r = 0; r < rows; r++) {
        const xr = r * inF;
        let sum = 0;
        for (let i = 0; i < inF; i++) sum += x[xr + i]! * data[wo + i]!;
        out[r * outF + o] = sum;
      }
    }
    return;
  }

  // f16/bf16: decode each weight row once (exactly, into f32), then dot it with every x row.
  if (rowScratch.length < inF) rowScratch = new Float32Array(inF);
  const row = rowScratch;
  const decodeBits = w.dtype === 'f16' ? f16BitsToNumber : bf16BitsToNumber;
  for (let o = 0; o < outF; o++) {
    const wo = base + o * inF;
    for (let i = 0; i < inF; i++) row[i] = decodeBits(data[wo + i]!);
    for (let r = 0; r < rows; r++) {
      const xr = r * inF;
      let sum = 0;
      for (let i = 0; i < inF; i++) sum += x[xr + i]! * row[i]!;
      out[r * outF + o] = sum;
    }
  }
}

/** Which matrix kernels a model runs: the WASM SIMD ones on worker threads, or these plain references. */
export type KernelChoice = 'wasm' | 'reference';

/**
 * The matrix in the form the chosen kernels read: repacked into the wasm heap for 'wasm' (types the
 * SIMD kernels do not cover stay as they are and run here), unchanged for 'reference'.
 */
export function packForKernels(m: Matrix, kernels: KernelChoice): Matrix {
  if (kernels === 'reference' || isPacked(m)) return m;
  return packMatrix(m) ?? m;
}
