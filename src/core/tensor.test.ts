import { test } from 'node:test';
import assert from 'node:assert/strict';
import { HalfpipeError } from './errors.js';
import { Tensor } from './tensor.js';

const iota = (n: number) => Array.from({ length: n }, (_, i) => i);
const rejects = (fn: () => unknown, pattern: RegExp) =>
  assert.throws(fn, (e: unknown) => e instanceof HalfpipeError && pattern.test(e.message));

test('a tensor reads its elements through shape, strides and offset', () => {
  const t = Tensor.fromValues(iota(24), [2, 3, 4], 'f32');
  assert.deepEqual(t.strides, [12, 4, 1]);
  assert.equal(t.get(1, 2, 3), 23);
  assert.equal(t.get(1, 0, 2), 14);
  assert.ok(t.isContiguous);
});

test('permute and transpose are views that read the permuted elements', () => {
  const t = Tensor.fromValues(iota(24), [2, 3, 4], 'f16');
  const p = t.permute(2, 0, 1);
  assert.deepEqual(p.shape, [4, 2, 3]);
  assert.equal(p.data, t.data);
  assert.ok(!p.isContiguous);
  for (let a = 0; a < 2; a++) for (let b = 0; b < 3; b++) for (let c = 0; c < 4; c++) assert.equal(p.get(c, a, b), t.get(a, b, c));
  const tt = t.transpose(0, 2);
  assert.equal(tt.get(3, 1, 0), t.get(0, 1, 3));
  assert.deepEqual([...p.contiguous().toFloat64Array()], [...p.toFloat64Array()]);
  assert.ok(p.contiguous().isContiguous);
});

test('narrow moves the offset; unsqueeze adds a unit dimension', () => {
  const t = Tensor.fromValues(iota(24), [2, 3, 4], 'bf16');
  const n = t.narrow(2, 1, 2).narrow(1, 1, 2);
  assert.deepEqual(n.shape, [2, 2, 2]);
  assert.deepEqual([...n.toFloat64Array()], [5, 6, 9, 10, 17, 18, 21, 22]);
  const u = t.unsqueeze(0);
  assert.deepEqual(u.shape, [1, 2, 3, 4]);
  assert.equal(u.get(0, 1, 2, 3), 23);
  assert.deepEqual(t.unsqueeze(3).shape, [2, 3, 4, 1]);
});

test('view refuses a non-contiguous layout; reshape copies instead', () => {
  const t = Tensor.fromValues(iota(6), [2, 3], 'f32');
  assert.deepEqual([...t.view(3, -1).toFloat64Array()], iota(6));
  const tr = t.transpose(0, 1);
  rejects(() => tr.view(6), /non-contiguous.*contiguous\(\)/);
  assert.deepEqual([...tr.reshape(6).toFloat64Array()], [0, 3, 1, 4, 2, 5]);
  rejects(() => t.view(4, 2), /cannot view 6 elements/);
});

test('dtype casts round once and same-dtype copies keep raw bits', () => {
  const t = Tensor.fromValues([1 + 2 ** -12, 70000, -3.5], [3], 'f32');
  assert.deepEqual([...t.to('f16').toFloat64Array()], [1, Infinity, -3.5]);
  assert.deepEqual([...t.to('bf16').toFloat64Array()], [1, 70144, -3.5]);
  const nan = new Tensor('f16', new Uint16Array([0x7d01]), [1]);
  assert.equal(nan.copy().data[0], 0x7d01);
});

test('views that reach outside storage, bad shapes and bad indices are rejected', () => {
  rejects(() => new Tensor('f32', new Float32Array(10), [3, 4]), /reaches outside/);
  rejects(() => new Tensor('f32', new Float32Array(12), [3, 4], [4, 1], 1), /reaches outside/);
  rejects(() => new Tensor('f16', new Float32Array(4), [4]), /Uint16Array/);
  rejects(() => Tensor.empty([2, -1], 'f32'), /sizes must be integers/);
  const t = Tensor.empty([2, 2], 'f32');
  rejects(() => t.get(2, 0), /index 2 out of range/);
  rejects(() => t.narrow(1, 1, 2), /out of range/);
  rejects(() => t.permute(0, 0), /repeat/);
});
