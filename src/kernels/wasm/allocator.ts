/**
 * Tensor storage inside the wasm heap, so that WASM kernels read and write it in place
 * (`Tensor.empty(shape, dtype, wasmAllocator)`). The memory goes back to the heap when the typed
 * array is garbage-collected.
 */
import type { DType, Storage } from '../../core/dtype.js';
import type { Allocator } from '../../core/tensor.js';
import { wasmHeap } from './heap.js';

const release = new FinalizationRegistry<number>((ptr) => wasmHeap().free(ptr));

export const wasmAllocator: Allocator = (dtype: DType, length: number): Storage => {
  const heap = wasmHeap();
  const bytesPerElement = dtype === 'f32' ? 4 : 2;
  const ptr = heap.alloc(length * bytesPerElement);
  const view = dtype === 'f32' ? heap.f32(ptr, length) : heap.u16(ptr, length);
  // Recycled heap memory holds old values; a new tensor starts at zero like a JS one.
  view.fill(0);
  release.register(view, ptr);
  return view;
};
