import { test } from 'node:test';
import assert from 'node:assert/strict';
import { f16BitsToNumber, roundTo } from '../core/dtype.js';
import { HalfpipeError } from '../core/errors.js';
import { KvCache } from './kv-cache.js';

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

test('KvCache f32: [kvHead][position][headDim] layout, exact, kept across growth', () => {
  const cache = new KvCache({ ...dims, capacity: 700 });
  append(cache, 0, 5);
  assert.equal(cache.length, 5);
  checkAll(cache, (x) => x);
  // Past the first 256-position allocation: doubling must move each head's rows intact.
  for (let start = 5; start < 600; start += 99) append(cache, start, Math.min(99, 600 - start));
  assert.equal(cache.length, 600);
  assert.equal(cache.keys(0).headStride, 700 * dims.headDim);
  checkAll(cache, (x) => x);
});

test('KvCache f16: each value rounded once to nearest f16', () => {
  const cache = new KvCache({ ...dims, capacity: 40, dtype: 'f16' });
  append(cache, 0, 7);
  append(cache, 7, 1);
  assert.ok(cache.keys(1).data instanceof Uint16Array);
  checkAll(cache, (x) => roundTo('f16', x));
  assert.equal(cache.bytes, 2 * dims.nLayers * dims.nKvHeads * 40 * dims.headDim * 2);
});

test('KvCache: truncate rewinds, and later writes replace the forgotten positions', () => {
  const cache = new KvCache({ ...dims, capacity: 16 });
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
