/**
 * The key/value cache of one sequence: for every layer, the rotated keys and the values of every
 * position so far, so each new token attends to them without recomputing.
 *
 * Layout: one K and one V array per layer, [kvHead][position][headDim] inside (a head's keys are
 * contiguous, which is the order attention reads them). Storage is 'f32' (exact) or 'f16' (each
 * value rounded once, to nearest-even, on store; half the memory). Capacity is the model's context
 * length; the arrays start small and double as positions are written, so a short chat with a
 * 128k-context model does not reserve gigabytes.
 *
 * Storage 'js' keeps the arrays on the JS heap; 'wasm' keeps them in the shared wasm heap, so the
 * wasm attention kernel (src/kernels/wasm/attention.ts) reads them in place (free them with
 * dispose()). Either way f16 stores go through the wasm kernel kv_store_f16 (attention.wasm),
 * bit-identical to numberToF16Bits on f32 inputs and far faster than it.
 */
import { fail } from '../core/errors.js';
import { loadKernel, wasmHeap } from '../kernels/wasm/heap.js';
import type { KvView } from '../ops/attention.js';

export type KvCacheDType = 'f32' | 'f16';
export type KvCacheStorage = 'js' | 'wasm';

export interface KvCacheOptions {
  nLayers: number;
  nKvHeads: number;
  headDim: number;
  /** the most positions it can hold: the context length */
  capacity: number;
  /** default 'f32' */
  dtype?: KvCacheDType;
  /** where the arrays live: 'js' (default) or the wasm heap ('wasm', free with dispose()) */
  storage?: KvCacheStorage;
}

interface StoreKernel {
  kv_store_f16(src: number, dst: number, tokens: number, nKvHeads: number, headDim: number, stride: number, start: number): void;
}

/** Heap scratch shared by every cache for f16 stores (f32 source, and f16 rows for 'js' storage). */
let storeScratchPtr = 0;
let storeScratchBytes = 0;

function storeScratch(bytes: number): number {
  if (bytes > storeScratchBytes) {
    const heap = wasmHeap();
    if (storeScratchBytes > 0) heap.free(storeScratchPtr);
    const n = Math.max(bytes, 2 * storeScratchBytes);
    storeScratchPtr = heap.alloc(n, 64);
    storeScratchBytes = n;
  }
  return storeScratchPtr;
}

/** Positions allocated at first, before doubling. */
const INITIAL_POSITIONS = 256;

/**
 * A 'wasm' cache that is dropped without dispose() still gives its blocks back when collected (the
 * held arrays are the cache's own pointer lists, updated in place as it grows). dispose() frees
 * them at once, which a server with many sequences wants.
 */
const collected = new FinalizationRegistry<{ k: number[]; v: number[] }>(({ k, v }) => {
  const heap = wasmHeap();
  for (const ptr of [...k, ...v]) heap.free(ptr);
});

export class KvCache {
  readonly nLayers: number;
  readonly nKvHeads: number;
  readonly headDim: number;
  readonly capacity: number;
  readonly dtype: KvCacheDType;
  readonly storage: KvCacheStorage;
  private len = 0;
  private disposed = false;
  /** 'wasm' storage: heap pointers of k[l] and v[l] */
  private readonly kPtr: number[] = [];
  private readonly vPtr: number[] = [];
  /** positions each array has room for */
  private allocated = 0;
  private readonly k: (Float32Array | Uint16Array)[] = [];
  private readonly v: (Float32Array | Uint16Array)[] = [];

  constructor(opts: KvCacheOptions) {
    const { nLayers, nKvHeads, headDim, capacity } = opts;
    for (const [name, n] of Object.entries({ nLayers, nKvHeads, headDim, capacity })) {
      if (!Number.isInteger(n) || n <= 0) fail('shape', `KvCache: ${name} must be a positive integer, got ${n}`);
    }
    const dtype = opts.dtype ?? 'f32';
    if (dtype !== 'f32' && dtype !== 'f16') fail('dtype', `KvCache: unsupported dtype '${String(dtype)}' (supported: f32, f16)`);
    const storage = opts.storage ?? 'js';
    if (storage !== 'js' && storage !== 'wasm') fail('usage', `KvCache: unsupported storage '${String(storage)}' (supported: js, wasm)`);
    this.storage = storage;
    if (storage === 'wasm') collected.register(this, { k: this.kPtr, v: this.vPtr }, this);
    this.nLayers = nLayers;
    this.nKvHeads = nKvHeads;
    this.headDim = headDim;
    this.capacity = capacity;
    this.dtype = dtype;
  }

  /** Positions held (written and committed with advance()). */
  get length(): number {
    this.live();
    return this.len;
  }

  /** Throws, before anything is written, unless `tokens` more positions fit. */
  checkFits(tokens: number): void {
    this.live();
    if (this.len + tokens > this.capacity) fail('usage', `prompt longer than the context (${this.len + tokens} > ${this.capacity})`);
  }

  /**
   * Stores keys and values for positions [start, start + tokens) of `layer`; k and v are
   * (tokens, nKvHeads, headDim). start must be <= length (positions past it are overwritten).
   * The positions become part of `length` only with advance().
   */
  write(layer: number, start: number, tokens: number, k: Float32Array, v: Float32Array): void {
    this.live();
    if (!Number.isInteger(layer) || layer < 0 || layer >= this.nLayers) fail('shape', `KvCache: layer ${layer} outside [0, ${this.nLayers})`);
    if (!Number.isInteger(start) || start < 0 || start > this.len) fail('shape', `KvCache: write at ${start} leaves a gap after ${this.len} positions`);
    if (!Number.isInteger(tokens) || tokens < 0) fail('shape', `KvCache: invalid token count ${tokens}`);
    if (start + tokens > this.capacity) fail('usage', `prompt longer than the context (${start + tokens} > ${this.capacity})`);
    const width = this.nKvHeads * this.headDim;
    if (k.length < tokens * width || v.length < tokens * width) fail('shape', `KvCache: k and v need ${tokens} x ${width} values, have ${k.length} and ${v.length}`);
    this.reserve(start + tokens);
    const { headDim, nKvHeads } = this;
    const stride = this.allocated * headDim;
    if (this.dtype === 'f16') {
      this.storeF16(layer, start, tokens, k, v);
      return;
    }
    for (const [src, dst] of [[k, this.k[layer]!], [v, this.v[layer]!]] as const) {
      for (let t = 0; t < tokens; t++) {
        for (let h = 0; h < nKvHeads; h++) {
          const from = (t * nKvHeads + h) * headDim;
          dst.set(src.subarray(from, from + headDim), h * stride + (start + t) * headDim);
        }
      }
    }
  }

  /** f16 store in wasm: the kernel writes into the cache ('wasm') or into scratch copied out ('js'). */
  private storeF16(layer: number, start: number, tokens: number, k: Float32Array, v: Float32Array): void {
    if (tokens === 0) return;
    const { headDim, nKvHeads } = this;
    const n = tokens * nKvHeads * headDim;
    const heap = wasmHeap();
    const kernel = loadKernel('attention').exports as unknown as StoreKernel;
    const srcBytes = Math.ceil((n * 4) / 64) * 64;
    const base = storeScratch(srcBytes + (this.storage === 'js' ? n * 2 : 0));
    const stride = this.allocated * headDim;
    for (const [src, dst, dstPtr] of [[k, this.k[layer]!, this.kPtr[layer]], [v, this.v[layer]!, this.vPtr[layer]]] as const) {
      heap.f32(base, n).set(src.length === n ? src : src.subarray(0, n));
      if (dstPtr !== undefined) {
        kernel.kv_store_f16(base, dstPtr, tokens, nKvHeads, headDim, stride, start);
        continue;
      }
      // 'js': convert in the source order (as one head of tokens * nKvHeads rows), then scatter the rows.
      const rowsPtr = base + srcBytes;
      kernel.kv_store_f16(base, rowsPtr, tokens * nKvHeads, 1, headDim, 0, 0);
      const rows = heap.u16(rowsPtr, n);
      for (let t = 0; t < tokens; t++) {
        for (let h = 0; h < nKvHeads; h++) {
          const from = (t * nKvHeads + h) * headDim;
          dst.set(rows.subarray(from, from + headDim), h * stride + (start + t) * headDim);
        }
      }
    }
  }

  /** Commits `tokens` positions written after the current length. */
  advance(tokens: number): void {
    this.live();
    this.checkFits(tokens);
    if (this.len + tokens > this.allocated) fail('shape', `KvCache: advance(${tokens}) past the ${this.allocated} positions written`);
    this.len += tokens;
  }

  /** Rewinds to the first n positions (0 <= n <= length); the rest is forgotten. */
  truncate(n: number): void {
    this.live();
    if (!Number.isInteger(n) || n < 0 || n > this.len) fail('usage', `truncate(${n}): the cache holds ${this.len} positions`);
    this.len = n;
  }

  /** Keys of `layer` (valid until the next write, which may reallocate). */
  keys(layer: number): KvView {
    this.live();
    return { dtype: this.dtype, data: this.k[layer] ?? this.empty(), headStride: this.allocated * this.headDim };
  }

  /** Values of `layer` (valid until the next write, which may reallocate). */
  values(layer: number): KvView {
    this.live();
    return { dtype: this.dtype, data: this.v[layer] ?? this.empty(), headStride: this.allocated * this.headDim };
  }

  /** Bytes allocated for all layers' K and V. */
  get bytes(): number {
    this.live();
    return 2 * this.nLayers * this.nKvHeads * this.allocated * this.headDim * (this.dtype === 'f32' ? 4 : 2);
  }

  /** Frees the wasm heap blocks ('wasm' storage) and drops the arrays; idempotent. Any later use throws. */
  dispose(): void {
    if (this.disposed) return;
    this.disposed = true;
    collected.unregister(this);
    const heap = wasmHeap();
    for (const ptr of [...this.kPtr, ...this.vPtr]) heap.free(ptr);
    this.kPtr.length = 0;
    this.vPtr.length = 0;
    this.k.length = 0;
    this.v.length = 0;
  }

  private live(): void {
    if (this.disposed) fail('usage', 'KvCache: used after dispose()');
  }

  private empty(): Float32Array | Uint16Array {
    return this.dtype === 'f32' ? new Float32Array(0) : new Uint16Array(0);
  }

  /** Grows every array (doubling, up to capacity) to hold `positions`, keeping the layout. */
  private reserve(positions: number): void {
    if (positions <= this.allocated) return;
    let size = Math.max(this.allocated, Math.min(INITIAL_POSITIONS, this.capacity));
    while (size < positions) size = Math.min(size * 2, this.capacity);
    const { headDim, nKvHeads } = this;
    const elements = nKvHeads * size * headDim;
    const heap = this.storage === 'wasm' ? wasmHeap() : undefined;
    const grow = (old: Float32Array | Uint16Array | undefined, ptrs: number[], l: number): Float32Array | Uint16Array => {
      let fresh: Float32Array | Uint16Array;
      if (heap) {
        // Zeroed like a JS array, so nothing depends on what the heap held before.
        const ptr = heap.alloc(elements * (this.dtype === 'f32' ? 4 : 2), 64);
        fresh = this.dtype === 'f32' ? heap.f32(ptr, elements) : heap.u16(ptr, elements);
        fresh.fill(0);
        ptrs[l] = ptr;
      } else {
        fresh = this.dtype === 'f32' ? new Float32Array(elements) : new Uint16Array(elements);
      }
      // Each head's positions (uncommitted writes included) move to the head's new start.
      const oldStride = this.allocated * headDim;
      if (old) for (let h = 0; h < nKvHeads; h++) fresh.set(old.subarray(h * oldStride, (h + 1) * oldStride), h * size * headDim);
      return fresh;
    };
    for (let l = 0; l < this.nLayers; l++) {
      const oldK = this.kPtr[l];
      const oldV = this.vPtr[l];
      this.k[l] = grow(this.k[l], this.kPtr, l);
      this.v[l] = grow(this.v[l], this.vPtr, l);
      // Freed only after the copy: the old block is the copy's source.
      if (heap && oldK !== undefined) heap.free(oldK);
      if (heap && oldV !== undefined) heap.free(oldV);
    }
    this.allocated = size;
  }
}
