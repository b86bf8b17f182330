/**
 * The SIMD matrix kernels are batch-invariant: a call over several tokens gives, bit for bit, what
 * one call per token gives. Chunked prefill, batched requests and decode rely on it.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Tensor } from '../../core/tensor.js';
import { quantize } from '../../formats/gguf/quants.js';
import { rowBytes } from '../../formats/gguf/types.js';
import { xorshift } from '../../testing/helpers.js';
import { matmulPacked, packMatrix } from './matmul.js';
import { setThreads, threadCount } from './pool.js';

const rows = 45;
const cols = 512;
const tokens = 5;
const next = xorshift(11);
const values = Float32Array.from({ length: rows * cols }, () => (next() / 2 ** 32 - 0.5) * 0.2);
const x = Float32Array.from({ length: tokens * cols }, () => next() / 2 ** 32 - 0.5);

const matrices = [
  ...(['f32', 'f16', 'bf16'] as const).map((dtype) => ({ name: dtype, m: Tensor.fromValues(values, [rows, cols], dtype) })),
  ...(['Q8_0', 'Q4_0', 'Q4_K', 'Q6_K'] as const).map((type) => ({
    name: type,
    m: { kind: 'quantized' as const, type, rows, cols, rowBytes: rowBytes(type, cols), data: quantize(type, values) },
  })),
];

for (const threads of [1, 2]) {
  test(`a multi-token call equals one call per token, bit for bit (${threads} thread(s))`, () => {
    const before = threadCount();
    setThreads(threads);
    try {
      for (const { name, m } of matrices) {
        const packed = packMatrix(m)!;
        assert.ok(packed, `${name} packs`);
        const together = new Float32Array(tokens * rows);
        matmulPacked(together, x, tokens, packed);
        const apart = new Float32Array(tokens * rows);
        for (let t = 0; t < tokens; t++) {
          const out = new Float32Array(rows);
          matmulPacked(out, x.subarray(t * cols, (t + 1) * cols), 1, packed);
          apart.set(out, t * rows);
        }
        assert.deepEqual(together, apart, name);
      }
    } finally {
      setThreads(before);
    }
  });
}
