import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { softmaxInPlace } from './softmax.js';

test('softmaxInPlace: matches exp(x) / sum exp(x)', () => {
  const x = Float64Array.from([0.5, -1, 2, 0]);
  const want = Array.from(x, (v) => Math.exp(v) / [0.5, -1, 2, 0].reduce((s, u) => s + Math.exp(u), 0));
  softmaxInPlace(x);
  x.forEach((v, i) => assert.ok(Math.abs(v - want[i]!) < 1e-15));
});

test('softmaxInPlace: large logits do not overflow (max subtracted)', () => {
  const x = Float32Array.from([1000, 1001, -Infinity]);
  softmaxInPlace(x);
  assert.equal(x[0], Math.fround(1 / (1 + Math.E)));
  assert.equal(x[1], Math.fround(Math.E / (1 + Math.E)));
  assert.equal(x[2], 0);
});

test('softmaxInPlace: only the given range changes; NaN propagates', () => {
  const x = Float64Array.from([9, 1, 1, 9]);
  softmaxInPlace(x, 1, 2);
  assert.deepEqual(Array.from(x), [9, 0.5, 0.5, 9]);
  const y = Float64Array.from([1, NaN, 2]);
  softmaxInPlace(y);
  assert.ok(Array.from(y).every(Number.isNaN));
  assert.throws(() => softmaxInPlace(new Float64Array(3), 2, 2), /outside 3 values/);
});

test('softmaxInPlace: sums to 1 and is shift invariant (property)', () => {
  fc.assert(
    fc.property(fc.array(fc.double({ min: -50, max: 50, noNaN: true }), { minLength: 1, maxLength: 30 }), fc.double({ min: -500, max: 500, noNaN: true }), (vals, shift) => {
      const a = Float64Array.from(vals);
      const b = Float64Array.from(vals, (v) => v + shift);
      softmaxInPlace(a);
      softmaxInPlace(b);
      assert.ok(Math.abs(a.reduce((s, v) => s + v, 0) - 1) < 1e-12);
      a.forEach((v, i) => assert.ok(Math.abs(v - b[i]!) < 1e-9 * Math.max(1, Math.abs(shift)), `${v} vs ${b[i]}`));
    }),
  );
});
