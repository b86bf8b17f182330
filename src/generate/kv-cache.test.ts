import { test } from 'node:test';
import assert from 'node:assert/strict';
import { f16BitsToNumber, numberToF16Bits, roundTo } from '../core/dtype.js';
import { HalfpipeError } from '../core/errors.js';
import { wasmHeap } from '../kernels/wasm/heap.js';
import { xorshift } from '../testing/helpers.js';
import { KvCache, type KvCacheStorage } from './kv-cache.js';

const dims = { nLayers: 2, nKvHeads: 3, headDim: 4 };
const width = dims.nKvHeads * dims.headDim;

/** (tokens, nKvHeads, headDim) values that encode layer, position, head and dim, plus a fraction f16 must round. */
function rows(layer: number, start: number, tokens: number, which: number): Float32Array {
  return Float32Array.from({ length: tokens * width }, (_, i) => {
    const t = start + Math.floor(i / width);
    return which * 1000 + layer * 100 + t + (i % width) / 16 + 1 / 3;
  });
}

/** Element (head, pos, d) of a layer's keys or values, decoded. */
function at(cache: KvCache, layer: number, which: 'keys' | 'values', h: number, p: number, d: number): number {
  const v = which === 'keys' ? cache.keys(layer) : cache.values(layer);
  const raw = v.data[h * v.headStride + p * dims.headDim + d]!;
  return v.dtype === 'f16' ? f16BitsToNumber(raw) : raw;
}

function expectedAt(layer: number, which: 'keys' | 'values', h: number, p: number, d: number): number {
  return Math.fround((which === 'keys' ? 0 : 1) * 1000 + layer * 100 + p + (h * dims.headDim + d) / 16 + 1 / 3);
}

/** Writes positions [start, start + tokens) of every layer and commits them. */
function append(cache: KvCache, start: number, tokens: number): void {
  for (let l = 0; l < dims.nLayers; l++) cache.write(l, start, tokens, rows(l, start, tokens, 0), rows(l, start, tokens, 1));
  cache.advance(tokens);
}

function checkAll(cache: KvCache, round: (x: number) => number): void {
  for (let l = 0; l < dims.nLayers; l++)
    for (const which of ['keys', 'values'] as const)
      for (let h = 0; h < dims.nKvHeads; h++)
        for (let p = 0; p < cache.length; p++)
          for (let d = 0; d < dims.headDim; d++) assert.equal(at(cache, l, which, h, p, d), round(expectedAt(l, which, h, p, d)), `layer ${l} ${which} head ${h} pos ${p} dim ${d}`);
}

for (const storage of ['js', 'wasm'] as const satisfies readonly KvCacheStorage[]) {
test(`KvCache f32 (${storage}): [kvHead][position][headDim] layout, exact, kept across growth`, () => {
  const cache = new KvCache({ ...dims, capacity: 700, storage });
  append(cache, 0, 5);
  assert.equal(cache.length, 5);
  checkAll(cache, (x) => x);
  // Past the first 256-position allocation: doubling must move each head's rows intact.
  for (let start = 5; start < 600; start += 99) append(cache, start, Math.min(99, 600 - start));
  assert.equal(cache.length, 600);
  assert.equal(cache.keys(0).headStride, 700 * dims.headDim);
  checkAll(cache, (x) => x);
});

test(`KvCache f16 (${storage}): each value rounded once to nearest f16, kept across growth`, () => {
  const cache = new KvCache({ ...dims, capacity: 600, dtype: 'f16', storage });
  append(cache, 0, 7);
  append(cache, 7, 1);
  assert.ok(cache.keys(1).data instanceof Uint16Array);
  checkAll(cache, (x) => roundTo('f16', x));
  assert.equal(cache.bytes, 2 * dims.nLayers * dims.nKvHeads * 256 * dims.headDim * 2);
  for (let start = 8; start < 500; start += 123) append(cache, start, Math.min(123, 500 - start));
  checkAll(cache, (x) => roundTo('f16', x));
});

test(`KvCache (${storage}): truncate rewinds, and later writes replace the forgotten positions`, () => {
  const cache = new KvCache({ ...dims, capacity: 16, storage });
  append(cache, 0, 10);
  cache.truncate(4);
  assert.equal(cache.length, 4);
  for (let l = 0; l < dims.nLayers; l++) cache.write(l, 4, 1, new Float32Array(width).fill(-1), new Float32Array(width).fill(-2));
  cache.advance(1);
  assert.equal(at(cache, 1, 'keys', 2, 4, 3), -1);
  assert.equal(at(cache, 1, 'values', 2, 4, 3), -2);
  assert.equal(at(cache, 1, 'keys', 2, 3, 3), expectedAt(1, 'keys', 2, 3, 3));
  assert.throws(() => cache.truncate(6), /truncate\(6\): the cache holds 5 positions/);
  assert.throws(() => cache.write(0, 7, 1, new Float32Array(width), new Float32Array(width)), /leaves a gap after 5 positions/);
});
}

test('KvCache wasm: arrays are wasm heap views, growth frees the old blocks, dispose frees all and is idempotent', () => {
  const heap = wasmHeap();
  // Warm the shared f16 store scratch to its size for the writes below, so it does not show up as growth.
  const warm = new KvCache({ ...dims, capacity: 1000, dtype: 'f16' });
  append(warm, 0, 600);
  const before = heap.bytesInUse;
  const cache = new KvCache({ ...dims, capacity: 1000, dtype: 'f16', storage: 'wasm' });
  append(cache, 0, 3);
  assert.equal(heap.bytesInUse - before, cache.bytes);
  assert.equal(cache.bytes, 2 * dims.nLayers * dims.nKvHeads * 256 * dims.headDim * 2);
  assert.ok(heap.ptrOf(cache.keys(1).data) !== undefined && heap.ptrOf(cache.values(0).data) !== undefined);
  append(cache, 3, 600);
  // Doubled 256 -> 512 -> 1000 (the capacity); the old blocks were freed.
  assert.equal(cache.bytes, 2 * dims.nLayers * dims.nKvHeads * 1000 * dims.headDim * 2);
  assert.equal(heap.bytesInUse - before, cache.bytes);
  checkAll(cache, (x) => roundTo('f16', x));
  cache.dispose();
  assert.equal(heap.bytesInUse, before);
  cache.dispose();
  const disposed = (e: unknown) => e instanceof HalfpipeError && e.code === 'usage' && /used after dispose/.test(e.message);
  assert.throws(() => cache.keys(0), disposed);
  assert.throws(() => cache.length, disposed);
  assert.throws(() => append(cache, 603, 1), disposed);
  // js storage: dispose just drops the arrays.
  const js = new KvCache({ ...dims, capacity: 8 });
  append(js, 0, 2);
  js.dispose();
  assert.throws(() => js.values(0), disposed);
});

test('KvCache f16 store is bit-identical to numberToF16Bits (specials, boundaries, random bits; both storages)', () => {
  const next = xorshift(7);
  const bits = new Uint32Array(4096 * 3);
  const special = [
    0, 0x80000000, 0x7f800000, 0xff800000, 0x7fc00000, 0x477fe000, 0x477fefff, 0x477ff000, 0x477ff001, 0x47800000, 0x38800000, 0x387fffff,
    0x33800000, 0x33000000, 0x33000001, 0x32ffffff, 0x00000001, 0x3f800000, 0x3f801000, 0x3f803000, 0x3f802fff, 0xc77ff000,
  ];
  for (let i = 0; i < bits.length; i++) {
    if (i < special.length) bits[i] = special[i]!;
    // Mostly in and around the f16 range, with halfway and near-halfway mantissas.
    else if (i % 3 === 0) bits[i] = next();
    else bits[i] = ((next() % 0x1a000000) + 0x2c000000 + (i % 3 === 1 ? 0 : 0x80000000)) & ~(i % 7 === 0 ? 0xfff : 0) | (i % 7 === 0 ? 0x1000 : 0);
  }
  const values = new Float32Array(bits.buffer);
  const headDim = 12;
  const nKvHeads = 4;
  const tokens = values.length / (nKvHeads * headDim);
  for (const storage of ['js', 'wasm'] as const) {
    const cache = new KvCache({ nLayers: 1, nKvHeads, headDim, capacity: tokens, dtype: 'f16', storage });
    cache.write(0, 0, tokens, values, values);
    cache.advance(tokens);
    const stored = cache.keys(0);
    for (let t = 0; t < tokens; t++) {
      for (let h = 0; h < nKvHeads; h++) {
        for (let d = 0; d < headDim; d++) {
          const x = values[(t * nKvHeads + h) * headDim + d]!;
          const got = stored.data[h * stored.headStride + t * headDim + d]!;
          const want = Number.isNaN(x) ? (got & 0x8000) | 0x7e00 : numberToF16Bits(x);
          assert.equal(got, want, `${storage}: ${x} (bits 0x${bits[(t * nKvHeads + h) * headDim + d]!.toString(16)})`);
        }
      }
    }
    cache.dispose();
  }
});

test('KvCache: overflowing the context is a one-line usage error', () => {
  const cache = new KvCache({ ...dims, capacity: 8 });
  append(cache, 0, 6);
  const overflow = (e: unknown) => e instanceof HalfpipeError && e.code === 'usage' && e.message === 'prompt longer than the context (9 > 8)';
  assert.throws(() => cache.checkFits(3), overflow);
  assert.throws(() => cache.write(0, 6, 3, new Float32Array(3 * width), new Float32Array(3 * width)), overflow);
  assert.throws(() => cache.advance(3), overflow);
  cache.checkFits(2);
  assert.equal(cache.length, 6);
});

test('KvCache: invalid construction', () => {
  assert.throws(() => new KvCache({ ...dims, capacity: 0 }), /capacity must be a positive integer/);
  assert.throws(() => new KvCache({ ...dims, capacity: 4, dtype: 'bf16' as 'f16' }), /unsupported dtype 'bf16'/);
});
