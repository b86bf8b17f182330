import { test } from 'node:test';
import assert from 'node:assert/strict';
import { FORMATS } from '../core/dtype.js';
import { computeStats, headroomBits, mergeStats } from './stats.js';

test('stats: NaN / +inf / -inf / subnormal / zero / near-max counts depend on the dtype', () => {
  const minNormal16 = FORMATS.f16.minNormal; // 2^-14
  const data = Float32Array.from([NaN, Infinity, -Infinity, 2 ** -20, minNormal16 / 2, 0, 40000, -33000, 1, -2]);
  const s = computeStats(data, [2, 5], { dtype: 'f16', firstToken: 3 });
  assert.equal(s.count, 10);
  assert.equal(s.tokens, 2);
  assert.equal(s.nan, 1);
  assert.equal(s.posInf, 1);
  assert.equal(s.negInf, 1);
  assert.equal(s.nonFinite, 3);
  assert.equal(s.subnormal, 2, 'two values below the f16 minimum normal');
  assert.equal(s.zeros, 1);
  assert.equal(s.nearMax, 2, '40000 and -33000 are >= 65504 / 2 = 32752; the infinities are not counted here');
  assert.equal(s.absmax, Infinity);
  assert.deepEqual(s.absmaxAt, { token: 3, head: null, channel: 1, value: Infinity });
  assert.equal(s.finiteAbsmax, 40000);
  assert.equal(s.headroomBits, -Infinity);
  assert.deepEqual(s.firstNonFinite, { token: 3, head: null, channel: 0, value: NaN });
  assert.equal(s.min, -Infinity);
  assert.equal(s.max, Infinity);
  // mean / rms over the 7 finite values
  const finite = [2 ** -20, minNormal16 / 2, 0, 40000, -33000, 1, -2];
  assert.equal(s.mean, finite.reduce((a, b) => a + b, 0) / 7);
  assert.equal(s.rms, Math.sqrt(finite.reduce((a, b) => a + b * b, 0) / 7));

  // The same values as f32: nothing is subnormal, nothing near the f32 max.
  const t = computeStats(data, [2, 5], { dtype: 'f32' });
  assert.equal(t.subnormal, 0);
  assert.equal(t.nearMax, 0);
  assert.equal(t.nan, 1);
  // bf16 shares f32's exponent range: 2^-20 is normal there too.
  assert.equal(computeStats(Float32Array.from([2 ** -20, 2 ** -130]), [1, 2], { dtype: 'bf16' }).subnormal, 1);
});

test('stats: absmax location for [tokens, channels] and [tokens, heads, headDim]', () => {
  const a = new Float32Array(12).fill(0.5);
  a[2 * 4 + 1] = -7; // row 2, channel 1
  a[0 * 4 + 3] = 7; // the same magnitude, earlier in token-major order
  const s2 = computeStats(a, [3, 4], { firstToken: 10 });
  assert.deepEqual(s2.absmaxAt, { token: 10, head: null, channel: 3, value: 7 }, 'ties go to the first in token-major order');
  a[0 * 4 + 3] = 6;
  const t2 = computeStats(a, [3, 4], { firstToken: 10 });
  assert.deepEqual(t2.absmaxAt, { token: 12, head: null, channel: 1, value: -7 });
  assert.equal(t2.min, -7);
  assert.equal(t2.max, 6);

  const b = new Float32Array(2 * 3 * 4).fill(-0.25);
  b[1 * 12 + 2 * 4 + 3] = -100; // token 1, head 2, channel 3
  b[0 * 12 + 1 * 4 + 0] = Infinity; // token 0, head 1, channel 0: the first non-finite
  const s3 = computeStats(b, [2, 3, 4], { firstToken: 5 });
  assert.deepEqual(s3.firstNonFinite, { token: 5, head: 1, channel: 0, value: Infinity });
  assert.equal(s3.finiteAbsmax, 100);
  b[0 * 12 + 1 * 4 + 0] = 1;
  const t3 = computeStats(b, [2, 3, 4], { firstToken: 5 });
  assert.deepEqual(t3.absmaxAt, { token: 6, head: 2, channel: 3, value: -100 });
  assert.equal(t3.firstNonFinite, null);
  assert.throws(() => computeStats(b, [3, 3, 4]), /do not fill shape/);
});

test('stats: headroom in bits', () => {
  const h = computeStats(Float32Array.from([1024, -3]), [1, 2], { dtype: 'f16' });
  assert.equal(h.headroomBits, Math.log2(65504 / 1024));
  assert.ok(Math.abs(h.headroomBits - 6) < 1e-3);
  assert.equal(computeStats(new Float32Array(4), [2, 2], { dtype: 'f16' }).headroomBits, Infinity, 'all zero: unbounded headroom');
  const allNan = computeStats(Float32Array.from([NaN, NaN]), [1, 2], { dtype: 'f16' });
  assert.ok(Number.isNaN(allNan.absmax));
  assert.ok(Number.isNaN(allNan.headroomBits));
  assert.ok(Number.isNaN(allNan.mean));
  assert.equal(allNan.absmaxAt, null);
  assert.equal(computeStats(Float32Array.from([1]), [1, 1], { dtype: 'bf16' }).headroomBits, Math.log2(FORMATS.bf16.max));
  // Over the max of the reported dtype (values not rounded to it): negative headroom.
  assert.ok(computeStats(Float32Array.from([131008]), [1, 1], { dtype: 'f16' }).headroomBits < -0.99);
  assert.equal(headroomBits('f16', 65504), 0);
});

test('stats: mean and rms accumulate in float64', () => {
  // In float32, 1e8 + 1 rounds back to 1e8, so a float32 sum gives mean 0.25 instead of 0.5.
  const s = computeStats(Float32Array.from([1e8, 1, -1e8, 1]), [1, 4]);
  assert.equal(s.mean, 0.5);
  let f32 = 0;
  for (const x of [1e8, 1, -1e8, 1]) f32 = Math.fround(f32 + x);
  assert.notEqual(f32 / 4, s.mean, 'the test data does separate f32 from f64 accumulation');
  // A long sum of 0.1f: float32 accumulation drifts by far more than 1e-6; float64 stays within 1e-9.
  const n = 1 << 20;
  const tenth = Math.fround(0.1);
  let acc32 = 0;
  for (let i = 0; i < n; i++) acc32 = Math.fround(acc32 + tenth);
  assert.ok(Math.abs(acc32 / n - tenth) / tenth > 1e-6, 'float32 accumulation drifts on this data');
  const t = computeStats(new Float32Array(n).fill(tenth), [n >> 4, 16]);
  assert.ok(Math.abs(t.mean - tenth) / tenth < 1e-9, `mean ${t.mean}`);
  assert.ok(Math.abs(t.rms - tenth) / tenth < 1e-9, `rms ${t.rms}`);
});

test('stats: merging the chunks of a forward equals the stats of the whole', () => {
  const rows = 6;
  const width = 5;
  const data = Float32Array.from({ length: rows * width }, (_, i) => Math.sin(i * 1.7) * (i + 1));
  data[17] = NaN;
  data[23] = -Infinity;
  const whole = computeStats(data, [rows, width], { firstToken: 4, dtype: 'f16' });
  const a = computeStats(data.subarray(0, 3 * width), [3, width], { firstToken: 4, dtype: 'f16' });
  const b = computeStats(data.subarray(3 * width), [3, width], { firstToken: 7, dtype: 'f16', overflowed: 1 });
  const m = mergeStats(a, b);
  for (const k of ['count', 'tokens', 'nan', 'posInf', 'negInf', 'subnormal', 'nearMax', 'zeros', 'absmax', 'finiteAbsmax', 'min', 'max', 'firstToken', 'lastToken'] as const) {
    assert.equal(m[k], whole[k], k);
  }
  assert.deepEqual(m.absmaxAt, whole.absmaxAt);
  assert.deepEqual(m.firstNonFinite, { token: 7, head: null, channel: 2, value: NaN });
  assert.deepEqual(m.firstNonFinite, whole.firstNonFinite);
  assert.ok(Math.abs(m.mean - whole.mean) <= 1e-12 * Math.abs(whole.rms));
  assert.ok(Math.abs(m.rms - whole.rms) <= 1e-12 * whole.rms);
  assert.equal(m.calls, 2);
  assert.equal(m.overflowed, 1);
});
