/**
 * A strided view over typed storage: shape, strides (in elements), offset and dtype.
 *
 * Views (reshape, permute, transpose, narrow, unsqueeze) share storage and never copy; contiguous()
 * and to() copy. Kernels read the strides they are given: they either honour them or reject the
 * layout with a HalfpipeError, and never assume one.
 */
import { allocStorage, type DType, load, type Storage, storageMatches, store } from './dtype.js';
import { fail } from './errors.js';

export type Shape = readonly number[];

/** Allocates the storage of a new tensor (the wasm heap provides one that kernels read in place). */
export type Allocator = (dtype: DType, length: number) => Storage;
export const jsAllocator: Allocator = allocStorage;

export function numel(shape: Shape): number {
  return shape.reduce((n, d) => n * d, 1);
}

/** Row-major strides: the last dimension is contiguous. */
export function contiguousStrides(shape: Shape): number[] {
  const strides = new Array<number>(shape.length);
  let step = 1;
  for (let i = shape.length - 1; i >= 0; i--) {
    strides[i] = step;
    step *= shape[i]!;
  }
  return strides;
}

function checkShape(shape: Shape): void {
  for (const d of shape) {
    if (!Number.isInteger(d) || d < 0) fail('shape', `invalid shape [${shape.join(', ')}]: sizes must be integers >= 0`);
  }
}

function normalizeDim(dim: number, rank: number): number {
  const d = dim < 0 ? dim + rank : dim;
  if (!Number.isInteger(d) || d < 0 || d >= rank) fail('shape', `dimension ${dim} out of range for rank ${rank}`);
  return d;
}

export class Tensor {
  readonly shape: Shape;
  readonly strides: readonly number[];

  constructor(
    readonly dtype: DType,
    readonly data: Storage,
    shape: Shape,
    strides: readonly number[] = contiguousStrides(shape),
    readonly offset = 0,
  ) {
    checkShape(shape);
    if (!storageMatches(dtype, data)) fail('dtype', `${dtype} tensor needs ${dtype === 'f32' ? 'a Float32Array' : 'a Uint16Array'}`);
    if (strides.length !== shape.length) fail('shape', `${strides.length} strides for a rank-${shape.length} shape`);
    if (!Number.isInteger(offset) || offset < 0) fail('shape', `invalid offset ${offset}`);
    // Every element the view can address must lie inside the storage.
    if (numel(shape) > 0) {
      let lo = offset;
      let hi = offset;
      shape.forEach((d, i) => {
        const s = strides[i]!;
        if (!Number.isInteger(s)) fail('shape', `invalid stride ${s}`);
        if (s < 0) lo += s * (d - 1);
        else hi += s * (d - 1);
      });
      if (lo < 0 || hi >= data.length) {
        fail('shape', `view [${shape.join(', ')}] with strides [${strides.join(', ')}] and offset ${offset} reaches outside its ${data.length}-element storage`);
      }
    }
    this.shape = Object.freeze([...shape]);
    this.strides = Object.freeze([...strides]);
  }

  static empty(shape: Shape, dtype: DType, alloc: Allocator = jsAllocator): Tensor {
    checkShape(shape);
    return new Tensor(dtype, alloc(dtype, numel(shape)), shape);
  }

  /** A contiguous tensor holding `values` (row-major), each rounded once to `dtype`. */
  static fromValues(values: ArrayLike<number>, shape: Shape, dtype: DType, alloc: Allocator = jsAllocator): Tensor {
    checkShape(shape);
    if (values.length !== numel(shape)) fail('shape', `${values.length} values for shape [${shape.join(', ')}] (${numel(shape)} elements)`);
    const t = Tensor.empty(shape, dtype, alloc);
    for (let i = 0; i < values.length; i++) store(dtype, t.data, i, values[i]!);
    return t;
  }

  get rank(): number {
    return this.shape.length;
  }

  get numel(): number {
    return numel(this.shape);
  }

  get isContiguous(): boolean {
    const want = contiguousStrides(this.shape);
    return this.shape.every((d, i) => d === 1 || this.strides[i] === want[i]);
  }

  /** The storage index of a multi-index. */
  index(idx: readonly number[]): number {
    if (idx.length !== this.rank) fail('shape', `${idx.length} indices for a rank-${this.rank} tensor`);
    let at = this.offset;
    idx.forEach((v, i) => {
      if (!Number.isInteger(v) || v < 0 || v >= this.shape[i]!) fail('shape', `index ${v} out of range for dimension ${i} of size ${this.shape[i]}`);
      at += v * this.strides[i]!;
    });
    return at;
  }

  get(...idx: number[]): number {
    return load(this.dtype, this.data, this.index(idx));
  }

  set(idx: readonly number[], value: number): void {
    store(this.dtype, this.data, this.index(idx), value);
  }

  /** Visits every element in row-major logical order with its storage index. */
  forEachIndex(fn: (storageIndex: number, logicalIndex: number) => void): void {
    const n = this.numel;
    if (n === 0) return;
    const rank = this.rank;
    const counter = new Array<number>(rank).fill(0);
    let at = this.offset;
    for (let i = 0; i < n; i++) {
      fn(at, i);
      // Odometer increment: bump the last dimension, carry into earlier ones.
      for (let d = rank - 1; d >= 0; d--) {
        if (++counter[d]! < this.shape[d]!) {
          at += this.strides[d]!;
          break;
        }
        at -= this.strides[d]! * (this.shape[d]! - 1);
        counter[d] = 0;
      }
    }
  }

  /** All elements as float64, in row-major logical order. */
  toFloat64Array(): Float64Array {
    const out = new Float64Array(this.numel);
    this.forEachIndex((at, i) => (out[i] = load(this.dtype, this.data, at)));
    return out;
  }

  // ---- views -------------------------------------------------------------------------------

  /** Reorders dimensions: result dimension i is input dimension dims[i]. */
  permute(...dims: number[]): Tensor {
    if (dims.length !== this.rank) fail('shape', `permute needs ${this.rank} dimensions, got ${dims.length}`);
    const order = dims.map((d) => normalizeDim(d, this.rank));
    if (new Set(order).size !== order.length) fail('shape', `permute dimensions [${dims.join(', ')}] repeat`);
    return new Tensor(this.dtype, this.data, order.map((d) => this.shape[d]!), order.map((d) => this.strides[d]!), this.offset);
  }

  transpose(a: number, b: number): Tensor {
    const order = this.shape.map((_, i) => i);
    const [i, j] = [normalizeDim(a, this.rank), normalizeDim(b, this.rank)];
    [order[i], order[j]] = [order[j]!, order[i]!];
    return this.permute(...order);
  }

  /** Elements [start, start + length) of dimension dim. */
  narrow(dim: number, start: number, length: number): Tensor {
    const d = normalizeDim(dim, this.rank);
    const size = this.shape[d]!;
    if (!Number.isInteger(start) || !Number.isInteger(length) || start < 0 || length < 0 || start + length > size) {
      fail('shape', `narrow(${dim}, ${start}, ${length}) out of range for dimension of size ${size}`);
    }
    const shape = [...this.shape];
    shape[d] = length;
    return new Tensor(this.dtype, this.data, shape, this.strides, this.offset + start * this.strides[d]!);
  }

  unsqueeze(dim: number): Tensor {
    const d = normalizeDim(dim, this.rank + 1);
    const shape = [...this.shape];
    const strides = [...this.strides];
    shape.splice(d, 0, 1);
    strides.splice(d, 0, d < this.rank ? this.strides[d]! * this.shape[d]! : 1);
    return new Tensor(this.dtype, this.data, shape, strides, this.offset);
  }

  /**
   * The same elements under a new shape (one size may be -1). A view when the strides allow it,
   * otherwise an error: call contiguous() first to copy. Never silently reinterprets a layout.
   */
  view(...shape: number[]): Tensor {
    const resolved = resolveShape(shape, this.numel);
    if (!this.isContiguous) {
      fail('layout', `view [${resolved.join(', ')}] of a non-contiguous tensor (strides [${this.strides.join(', ')}]): call contiguous() first`);
    }
    return new Tensor(this.dtype, this.data, resolved, contiguousStrides(resolved), this.offset);
  }

  /** Like view(), but copies when the layout does not allow a view (as torch.reshape does). */
  reshape(...shape: number[]): Tensor {
    return this.isContiguous ? this.view(...shape) : this.contiguous().view(...shape);
  }

  /** A row-major copy, or this tensor if it already is one. */
  contiguous(alloc: Allocator = jsAllocator): Tensor {
    return this.isContiguous ? this : this.copy(this.dtype, alloc);
  }

  /** A copy in `dtype`, each value rounded once (this tensor itself when the dtype already matches). */
  to(dtype: DType, alloc: Allocator = jsAllocator): Tensor {
    return dtype === this.dtype ? this : this.copy(dtype, alloc);
  }

  /** A fresh row-major copy in `dtype`. Same-dtype copies move raw bits, so NaN payloads survive. */
  copy(dtype: DType = this.dtype, alloc: Allocator = jsAllocator): Tensor {
    const out = Tensor.empty(this.shape, dtype, alloc);
    if (dtype === this.dtype) this.forEachIndex((at, i) => (out.data[i] = this.data[at]!));
    else this.forEachIndex((at, i) => store(dtype, out.data, i, load(this.dtype, this.data, at)));
    return out;
  }
}

function resolveShape(shape: readonly number[], count: number): number[] {
  const unknown = shape.filter((d) => d === -1).length;
  if (unknown > 1) fail('shape', `only one size may be -1 in [${shape.join(', ')}]`);
  const known = shape.reduce((n, d) => (d === -1 ? n : n * d), 1);
  const resolved = shape.map((d) => (d === -1 && known > 0 ? count / known : d));
  checkShape(resolved);
  if (numel(resolved) !== count) fail('shape', `cannot view ${count} elements as [${shape.join(', ')}]`);
  return resolved;
}
