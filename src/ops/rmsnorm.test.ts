import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { rmsNorm } from './rmsnorm.js';

test('rmsNorm: matches the formula row by row', () => {
  const [rows, dim] = [3, 5];
  const x = Float32Array.from({ length: rows * dim }, (_, i) => Math.cos(i * 1.7) * (i + 1));
  const w = Float32Array.from({ length: dim }, (_, i) => 0.5 + i / 4);
  const out = new Float32Array(rows * dim);
  rmsNorm(out, x, w, 1e-5, rows, dim);
  for (let r = 0; r < rows; r++) {
    const row = Array.from(x.subarray(r * dim, (r + 1) * dim));
    const rms = Math.sqrt(row.reduce((s, v) => s + v * v, 0) / dim + 1e-5);
    row.forEach((v, i) => assert.equal(out[r * dim + i], Math.fround((v / rms) * w[i]!)));
  }
});

test('rmsNorm: float64 sum of squares (f32 squares of 1e20 would overflow to inf)', () => {
  const x = new Float32Array(4).fill(1e20);
  const w = Float32Array.from([1, 2, 3, 4]);
  const out = new Float32Array(4);
  rmsNorm(out, x, w, 1e-6, 1, 4);
  assert.deepEqual(Array.from(out), [1, 2, 3, 4]);
});

test('rmsNorm: in place, and unit rms output with unit weights (property)', () => {
  fc.assert(
    fc.property(fc.array(fc.float({ min: -100, max: 100, noNaN: true }), { minLength: 1, maxLength: 40 }), (vals) => {
      if (vals.every((v) => Math.abs(v) < 1e-3)) return;
      const x = Float32Array.from(vals);
      const dim = x.length;
      rmsNorm(x, x, new Float32Array(dim).fill(1), 0, 1, dim);
      const ms = x.reduce((s, v) => s + v * v, 0) / dim;
      assert.ok(Math.abs(ms - 1) < 1e-6, `mean square ${ms}`);
    }),
  );
});

test('rmsNorm: shape errors', () => {
  assert.throws(() => rmsNorm(new Float32Array(4), new Float32Array(4), new Float32Array(3), 1e-5, 1, 4), /weight has 3 values, expected 4/);
  assert.throws(() => rmsNorm(new Float32Array(4), new Float32Array(4), new Float32Array(4), 1e-5, 2, 4), /need 2 x 4 values/);
});
