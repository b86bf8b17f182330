/**
 * Weight matrices repacked into the wasm heap for the SIMD matmul kernels: the layout the kernels
 * stream best (rows interleaved in groups, blocks kept whole), made once at load. The packed copy
 * replaces the loaded matrix; the TypeScript reference ops never see it.
 */
import type { DType, Storage } from '../../core/dtype.js';
import type { Allocator } from '../../core/tensor.js';
import { wasmHeap } from './heap.js';

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

/**
 * A heap region that each weight matrix is read into right before it is packed, reused for every
 * matrix of a load: the loaded bytes never outlive their packing, so the whole loaded model and
 * the packed model never coexist (peak = packed weights + the largest matrix). `reserve` it for
 * the largest matrix first, so that it sits below the packed copies and, once released, leaves one
 * hole that later heap allocations (KV cache, scratch) reuse.
 */
export class PackStaging {
  private ptr = 0;
  private capacity = 0;

  /** Makes room for `bytes` (a bigger region replaces the current one). */
  reserve(bytes: number): void {
    if (bytes <= this.capacity) return;
    const heap = wasmHeap();
    if (this.capacity > 0) heap.free(this.ptr);
    this.capacity = 0;
    this.ptr = heap.alloc(Math.max(bytes, 16), 64);
    this.capacity = bytes;
  }

  /** A heap view of the first `bytes` bytes; valid until the next reserve, bytes or release. Not cleared. */
  bytes(bytes: number): Uint8Array {
    this.reserve(bytes);
    return wasmHeap().u8(this.ptr, bytes);
  }

  /** Tensor storage in the staging region (`loadTensor(info, { alloc: staging.allocator })`); not cleared. */
  readonly allocator: Allocator = (dtype: DType, length: number): Storage => {
    const view = this.bytes(length * (dtype === 'f32' ? 4 : 2));
    return dtype === 'f32' ? new Float32Array(view.buffer, view.byteOffset, length) : new Uint16Array(view.buffer, view.byteOffset, length);
  };

  /** Whether `view` lies in the staging region (a matrix read there must be copied out to be kept). */
  holds(view: ArrayBufferView): boolean {
    const at = wasmHeap().ptrOf(view);
    return this.capacity > 0 && at !== undefined && at >= this.ptr && at < this.ptr + this.capacity;
  }

  /** Gives the region back to the heap. */
  release(): void {
    if (this.capacity > 0) wasmHeap().free(this.ptr);
    this.capacity = 0;
  }
}
