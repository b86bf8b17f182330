import { test } from 'node:test';
import assert from 'node:assert/strict';
import { type DType, decode } from '../core/dtype.js';
import { HalfpipeError } from '../core/errors.js';
import { Tensor } from '../core/tensor.js';
import { dequantizeToF32, quantize } from '../formats/gguf/quants.js';
import { embeddingRow } from './embedding.js';
import { QUANT_TYPES, type QuantizedMatrix } from './linear.js';

const values = Float64Array.from({ length: 5 * 6 }, (_, i) => Math.sin(i + 1) * 3);

for (const dtype of ['f32', 'f16', 'bf16'] as DType[]) {
  test(`embeddingRow: ${dtype} rows decoded exactly at an offset`, () => {
    const w = Tensor.fromValues(values, [5, 6], dtype);
    const out = new Float32Array(14).fill(7);
    embeddingRow(out, w, 3, 4);
    const want = decode(dtype, w.data).subarray(18, 24);
    assert.deepEqual(Array.from(out.subarray(4, 10)), Array.from(want));
    assert.deepEqual(Array.from(out.subarray(0, 4)), [7, 7, 7, 7]);
    assert.deepEqual(Array.from(out.subarray(10)), [7, 7, 7, 7]);
  });
}

test('embeddingRow: ids outside the vocabulary and short outputs are errors', () => {
  const w = Tensor.fromValues(values, [5, 6], 'f32');
  for (const id of [-1, 5, 1.5, NaN]) {
    assert.throws(() => embeddingRow(new Float32Array(6), w, id), (e: unknown) => e instanceof HalfpipeError && e.code === 'usage' && /outside the vocabulary \[0, 5\)/.test(e.message));
  }
  assert.throws(() => embeddingRow(new Float32Array(6), w, 0, 1), /need 6 at offset 1/);
});

test('embeddingRow: quantized rows are dequantized as ggml does', () => {
  for (const type of QUANT_TYPES) {
    const [vocab, dim] = [3, 256];
    const data = quantize(type, Float32Array.from({ length: vocab * dim }, (_, i) => Math.sin(i * 0.37) * 2));
    const w: QuantizedMatrix = { kind: 'quantized', type, rows: vocab, cols: dim, rowBytes: data.length / vocab, data };
    const out = new Float32Array(dim + 5);
    embeddingRow(out, w, 2, 5);
    assert.deepEqual(out.subarray(5), dequantizeToF32(type, data, vocab * dim).subarray(2 * dim), type);
  }
});
