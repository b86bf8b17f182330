import { test } from 'node:test';
import assert from 'node:assert/strict';
import { swiglu } from './swiglu.js';

test('swiglu: silu(gate) * up, one f32 rounding', () => {
  const gate = Float32Array.from([-2, -0.5, 0, 0.5, 3]);
  const up = Float32Array.from([1.5, -2, 4, 0.25, -1]);
  const out = new Float32Array(5);
  swiglu(out, gate, up);
  gate.forEach((g, i) => assert.equal(out[i], Math.fround((g / (1 + Math.exp(-g))) * up[i]!)));
});

test('swiglu: saturates without NaN, in place', () => {
  const gate = Float32Array.from([-1000, 1000, -88.8]);
  const up = Float32Array.from([2, 2, 1]);
  swiglu(gate, gate, up);
  assert.ok(Object.is(gate[0], -0));
  assert.equal(gate[1], 2000);
  assert.ok(gate[2]! < 0 && gate[2]! > -1e-36);
  assert.throws(() => swiglu(new Float32Array(3), new Float32Array(2), new Float32Array(3)), /need 3 values/);
});
