/**
 * Weight matrices repacked into the wasm heap for the SIMD matmul kernels: the layout the kernels
 * stream best (rows interleaved in groups, blocks kept whole), made once at load. The packed copy
 * replaces the loaded matrix; the TypeScript reference ops never see it.
 */
export type PackedType = 'f32' | 'f16' | 'bf16' | 'Q8_0' | 'Q4_0' | 'Q4_K' | 'Q6_K';

export interface PackedMatrix {
  readonly kind: 'packed';
  readonly type: PackedType;
  /** output features (the matrix's rows) */
  readonly rows: number;
  /** input features (the matrix's columns) */
  readonly cols: number;
  /** byte pointer of the packed data in the wasm heap */
  readonly ptr: number;
  readonly bytes: number;
}

export function isPacked(m: unknown): m is PackedMatrix {
  return typeof m === 'object' && m !== null && (m as { kind?: unknown }).kind === 'packed';
}
