/**
 * The key/value cache of one sequence: for every layer, the rotated keys and the values of every
 * position so far, so each new token attends to them without recomputing.
 *
 * Layout: one K and one V array per layer, [kvHead][position][headDim] inside (a head's keys are
 * contiguous, which is the order attention reads them). Storage is 'f32' (exact) or 'f16' (each
 * value rounded once, to nearest-even, on store; half the memory). Capacity is the model's context
 * length; the arrays start small and double as positions are written, so a short chat with a
 * 128k-context model does not reserve gigabytes.
 */
import { numberToF16Bits } from '../core/dtype.js';
import { fail } from '../core/errors.js';
import type { KvView } from '../ops/attention.js';

export type KvCacheDType = 'f32' | 'f16';

export interface KvCacheOptions {
  nLayers: number;
  nKvHeads: number;
  headDim: number;
  /** the most positions it can hold: the context length */
  capacity: number;
  /** default 'f32' */
  dtype?: KvCacheDType;
}

/** Positions allocated at first, before doubling. */
const INITIAL_POSITIONS = 256;

export class KvCache {
  readonly nLayers: number;
  readonly nKvHeads: number;
  readonly headDim: number;
  readonly capacity: number;
  readonly dtype: KvCacheDType;
  private len = 0;
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
    this.nLayers = nLayers;
    this.nKvHeads = nKvHeads;
    this.headDim = headDim;
    this.capacity = capacity;
    this.dtype = dtype;
  }

  /** Positions held (written and committed with advance()). */
  get length(): number {
    return this.len;
  }

  /** Throws, before anything is written, unless `tokens` more positions fit. */
  checkFits(tokens: number): void {
    if (this.len + tokens > this.capacity) fail('usage', `prompt longer than the context (${this.len + tokens} > ${this.capacity})`);
  }

  /**
   * Stores keys and values for positions [start, start + tokens) of `layer`; k and v are
   * (tokens, nKvHeads, headDim). start must be <= length (positions past it are overwritten).
   * The positions become part of `length` only with advance().
   */
  write(layer: number, start: number, tokens: number, k: Float32Array, v: Float32Array): void {
    if (!Number.isInteger(layer) || layer < 0 || layer >= this.nLayers) fail('shape', `KvCache: layer ${layer} outside [0, ${this.nLayers})`);
    if (!Number.isInteger(start) || start < 0 || start > this.len) fail('shape', `KvCache: write at ${start} leaves a gap after ${this.len} positions`);
    if (!Number.isInteger(tokens) || tokens < 0) fail('shape', `KvCache: invalid token count ${tokens}`);
    if (start + tokens > this.capacity) fail('usage', `prompt longer than the context (${start + tokens} > ${this.capacity})`);
    const width = this.nKvHeads * this.headDim;
    if (k.length < tokens * width || v.length < tokens * width) fail('shape', `KvCache: k and v need ${tokens} x ${width} values, have ${k.length} and ${v.length}`);
    this.reserve(start + tokens);
    const { headDim, nKvHeads } = this;
    const stride = this.allocated * headDim;
    for (const [src, dst] of [[k, this.k[layer]!], [v, this.v[layer]!]] as const) {
      for (let t = 0; t < tokens; t++) {
        for (let h = 0; h < nKvHeads; h++) {
          const from = (t * nKvHeads + h) * headDim;
          const to = h * stride + (start + t) * headDim;
          if (dst instanceof Float32Array) dst.set(src.subarray(from, from + headDim), to);
          else for (let d = 0; d < headDim; d++) dst[to + d] = numberToF16Bits(src[from + d]!);
        }
      }
    }
  }

  /** Commits `tokens` positions written after the current length. */
  advance(tokens: number): void {
    this.checkFits(tokens);
    if (this.len + tokens > this.allocated) fail('shape', `KvCache: advance(${tokens}) past the ${this.allocated} positions written`);
    this.len += tokens;
  }

  /** Rewinds to the first n positions (0 <= n <= length); the rest is forgotten. */
  truncate(n: number): void {
    if (!Number.isInteger(n) || n < 0 || n > this.len) fail('usage', `truncate(${n}): the cache holds ${this.len} positions`);
    this.len = n;
  }

  /** Keys of `layer` (valid until the next write, which may reallocate). */
  keys(layer: number): KvView {
    return { dtype: this.dtype, data: this.k[layer] ?? this.empty(), headStride: this.allocated * this.headDim };
  }

  /** Values of `layer` (valid until the next write, which may reallocate). */
  values(layer: number): KvView {
    return { dtype: this.dtype, data: this.v[layer] ?? this.empty(), headStride: this.allocated * this.headDim };
  }

  /** Bytes allocated for all layers' K and V. */
  get bytes(): number {
    return 2 * this.nLayers * this.nKvHeads * this.allocated * this.headDim * (this.dtype === 'f32' ? 4 : 2);
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
    const grow = (old: Float32Array | Uint16Array | undefined): Float32Array | Uint16Array => {
      const fresh = this.dtype === 'f32' ? new Float32Array(nKvHeads * size * headDim) : new Uint16Array(nKvHeads * size * headDim);
      // Each head's positions (uncommitted writes included) move to the head's new start.
      const oldStride = this.allocated * headDim;
      if (old) for (let h = 0; h < nKvHeads; h++) fresh.set(old.subarray(h * oldStride, (h + 1) * oldStride), h * size * headDim);
      return fresh;
    };
    for (let l = 0; l < this.nLayers; l++) {
      this.k[l] = grow(this.k[l]);
      this.v[l] = grow(this.v[l]);
    }
    this.allocated = size;
  }
}
