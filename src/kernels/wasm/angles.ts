/**
 * Typed glue for the cos/sin row kernel (assembly/rope_angles.ts): joins two-level float64 angle
 * tables by angle addition, one row per token, straight into the wasm heap.
 */
import { loadKernel } from './heap.js';

export interface CosSinRowsCall {
  /** byte ptr of the output rows: per token, half m*cos then half m*sin */
  out: number;
  /** element type of the output: f32 (each value rounded once) or f64 */
  outType: 'f32' | 'f64';
  /** byte ptrs of i32 per token: the position, and its row in `high` */
  positions: number;
  highRowOf: number;
  tokens: number;
  half: number;
  /** byte ptr: float64 [1024][half] cos then [1024][half] sin of lo * w_i */
  low: number;
  /** byte ptr: float64 [highRows][half] cos then [highRows][half] sin of hi * 1024 * w_i */
  high: number;
  highRows: number;
  /** the attention factor m */
  factor: number;
}

type CosSinRowsExport = (
  out: number, outF64: number, positions: number, highRowOf: number, tokens: number, half: number,
  low: number, high: number, highRows: number, factor: number,
) => void;

let kernel: CosSinRowsExport | undefined;

export function cosSinRowsWasm(c: CosSinRowsCall): void {
  kernel ??= loadKernel('rope_angles').exports['cos_sin_rows'] as CosSinRowsExport;
  kernel(c.out, c.outType === 'f64' ? 1 : 0, c.positions, c.highRowOf, c.tokens, c.half, c.low, c.high, c.highRows, c.factor);
}
