import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { type DType, decode, encode } from '../core/dtype.js';
import { HalfpipeError } from '../core/errors.js';
import { Tensor } from '../core/tensor.js';
import { dequantizeToF32, quantize } from '../formats/gguf/quants.js';
import { linear, QUANT_TYPES, type QuantizedMatrix } from './linear.js';
import { uniform as xorshift } from '../testing/helpers.js';


function randoms(n: number, seed: number): Float64Array {
  const r = xorshift(seed);
  return Float64Array.from({ length: n }, () => (r() * 2 - 1) * 2 ** Math.floor(r() * 4 - 2));
}

/** The formula with decoded weights: sum in float64 over i ascending, one f32 rounding. */
function expected(x: Float32Array, rows: number, w: Float64Array, outF: number, inF: number): Float32Array {
  const out = new Float32Array(rows * outF);
  for (let r = 0; r < rows; r++) {
    for (let o = 0; o < outF; o++) {
      let s = 0;
      for (let i = 0; i < inF; i++) s += x[r * inF + i]! * w[o * inF + i]!;
      out[r * outF + o] = s;
    }
  }
  return out;
}

for (const dtype of ['f32', 'f16', 'bf16'] as DType[]) {
  test(`linear: ${dtype} weights decoded exactly, f64 accumulation, one rounding`, () => {
    const [rows, outF, inF] = [3, 7, 19];
    const w = Tensor.fromValues(randoms(outF * inF, 1), [outF, inF], dtype);
    const x = Float32Array.from(randoms(rows * inF, 2));
    const out = new Float32Array(rows * outF);
    linear(out, x, rows, w);
    assert.deepEqual(out, expected(x, rows, decode(dtype, w.data), outF, inF));
  });
}

test('linear: accumulates in float64 (a sum that cancels in f32 is kept)', () => {
  // 2^25 + 1 - 2^25 = 1 in float64; an f32 accumulator would lose the 1.
  const w = Tensor.fromValues([1, 1, 1], [1, 3], 'f32');
  const out = new Float32Array(1);
  linear(out, Float32Array.from([2 ** 25, 1, -(2 ** 25)]), 1, w);
  assert.equal(out[0], 1);
});

test('linear: honours a weight tensor with an offset (a row range of a larger matrix)', () => {
  const big = Tensor.fromValues(randoms(10 * 6, 3), [10, 6], 'bf16');
  const w = big.narrow(0, 4, 5);
  const x = Float32Array.from(randoms(2 * 6, 4));
  const out = new Float32Array(2 * 5);
  linear(out, x, 2, w);
  assert.deepEqual(out, expected(x, 2, decode('bf16', big.data).subarray(4 * 6), 5, 6));
});

test('linear: matches the formula for random shapes (property)', () => {
  fc.assert(
    fc.property(fc.integer({ min: 1, max: 4 }), fc.integer({ min: 1, max: 9 }), fc.integer({ min: 1, max: 40 }), fc.constantFrom<DType>('f32', 'f16', 'bf16'), fc.integer(), (rows, outF, inF, dtype, seed) => {
      const w = Tensor.fromValues(randoms(outF * inF, seed), [outF, inF], dtype);
      const x = Float32Array.from(randoms(rows * inF, seed + 1));
      const out = new Float32Array(rows * outF);
      linear(out, x, rows, w);
      assert.deepEqual(out, expected(x, rows, decode(dtype, w.data), outF, inF));
    }),
    { numRuns: 100 },
  );
});

test('linear: rejects bad shapes, overlaps and non-contiguous weights', () => {
  const w = Tensor.fromValues(randoms(12, 5), [3, 4], 'f32');
  assert.throws(() => linear(new Float32Array(3), new Float32Array(3), 1, w), /x holds 3 values, need 1 x 4/);
  assert.throws(() => linear(new Float32Array(2), new Float32Array(4), 1, w), /out holds 2 values, need 1 x 3/);
  const shared = new Float32Array(8);
  assert.throws(() => linear(shared.subarray(2, 5), shared.subarray(0, 4), 1, w), /out overlaps x/);
  assert.throws(() => linear(new Float32Array(4), new Float32Array(3), 1, w.transpose(0, 1)), /must be contiguous/);
  assert.throws(() => linear(new Float32Array(4), new Float32Array(4), 1, Tensor.fromValues([1, 2], [2], 'f32')), /must be 2-D/);
});

test('linear: quantized rows match the dequantized matrix (dotQuantRow bound 2^-24 sum |w x|)', () => {
  for (const type of QUANT_TYPES) {
    const [rows, outF, inF] = [2, 3, 256];
    const values = Float32Array.from(randoms(outF * inF, 21));
    const data = quantize(type, values);
    const w: QuantizedMatrix = { kind: 'quantized', type, rows: outF, cols: inF, rowBytes: data.length / outF, data };
    const dense = dequantizeToF32(type, data, outF * inF);
    const x = Float32Array.from(randoms(rows * inF, 22));
    const out = new Float32Array(rows * outF);
    linear(out, x, rows, w);
    const want = expected(x, rows, Float64Array.from(dense), outF, inF);
    for (let r = 0; r < rows; r++)
      for (let o = 0; o < outF; o++) {
        let mag = 0;
        for (let i = 0; i < inF; i++) mag += Math.abs(dense[o * inF + i]! * x[r * inF + i]!);
        const err = Math.abs(out[r * outF + o]! - want[r * outF + o]!);
        // dotQuantRow's own rounding, plus one f32 rounding of each result.
        assert.ok(err <= 2 ** -24 * mag + 2 ** -23 * Math.abs(want[r * outF + o]!), `${type} row ${r} out ${o}: ${err}`);
      }
  }
  const bad = { kind: 'quantized', type: 'Q2_K', rows: 1, cols: 256, rowBytes: 84, data: new Uint8Array(84) } as unknown as QuantizedMatrix;
  assert.throws(() => linear(new Float32Array(1), new Float32Array(256), 1, bad), (e: unknown) => e instanceof HalfpipeError && e.code === 'dtype' && /unsupported quantized type 'Q2_K'/.test(e.message));
});

test('linear: encode/decode round trip used above is exact for f16/bf16 values', () => {
  const v = decode('f16', encode('f16', randoms(50, 9)));
  assert.deepEqual(decode('f16', encode('f16', v)), v);
});
