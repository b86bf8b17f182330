/** Helpers shared by the test files (not part of the public API). */
import assert from 'node:assert/strict';
import { HalfpipeError } from '../core/errors.js';

/** A seeded xorshift32 generator of uint32 values: the same sequence on every run. */
export function xorshift(seed: number): () => number {
  let s = seed >>> 0 || 1;
  return () => {
    s ^= s << 13;
    s >>>= 0;
    s ^= s >>> 17;
    s ^= s << 5;
    s >>>= 0;
    return s;
  };
}

/** Runs fn, which must throw a one-line HalfpipeError; returns "code: message". */
export function errorText(fn: () => unknown): string {
  try {
    fn();
  } catch (e) {
    assert.ok(e instanceof HalfpipeError, `expected a HalfpipeError, got ${String(e)}`);
    assert.ok(!e.message.includes('\n'), 'one-line message');
    return `${e.code}: ${e.message}`;
  }
  assert.fail('expected an error');
}

/** A seeded uniform generator of floats in [0, 1), from the same xorshift32 sequence. */
export function uniform(seed: number): () => number {
  const next = xorshift(seed);
  return () => next() / 2 ** 32;
}

/** The bytes of several arrays, one after another. */
export function concatBytes(parts: readonly Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

/** log-softmax of a row of logits in float64, the plain oracle: x - (max + log sum exp(x - max)). */
export function logSoftmax64(row: Float32Array): Float64Array {
  let max = -Infinity;
  for (const x of row) max = Math.max(max, x);
  let sum = 0;
  for (const x of row) sum += Math.exp(x - max);
  const lse = max + Math.log(sum);
  return Float64Array.from(row, (x) => x - lse);
}
