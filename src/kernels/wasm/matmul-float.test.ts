import assert from 'node:assert/strict';
import { after, describe, test } from 'node:test';
import { bf16BitsToNumber, f16BitsToNumber, numberToBf16Bits, numberToF16Bits } from '../../core/dtype.js';
import { Tensor } from '../../core/tensor.js';
import { linear } from '../../ops/linear.js';
import { wasmHeap } from './heap.js';
import { freeFloatMatrix, matmulFloat, packedFloatBytes, packFloatMatrix, type FloatType } from './matmul-float.js';
import { poolReady, poolStats, setMinChunkWork, setThreads, threadCount } from './pool.js';

const EPS = 2 ** -24;

/** Deterministic uniform [0, 1). */
function rng(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (s + 0x6d2b79f5) >>> 0;
    let t = s;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

function decoder(dtype: FloatType): (data: Float32Array | Uint16Array, i: number) => number {
  if (dtype === 'f32') return (d, i) => d[i]!;
  if (dtype === 'f16') return (d, i) => f16BitsToNumber(d[i]!);
  return (d, i) => bf16BitsToNumber(d[i]!);
}

/** A (rows, cols) weight tensor from values (each rounded once to dtype). */
function weights(dtype: FloatType, rows: number, cols: number, value: (o: number, i: number) => number): Tensor {
  const n = rows * cols;
  if (dtype === 'f32') {
    const d = new Float32Array(n);
    for (let o = 0; o < rows; o++) for (let i = 0; i < cols; i++) d[o * cols + i] = value(o, i);
    return new Tensor('f32', d, [rows, cols]);
  }
  const enc = dtype === 'f16' ? numberToF16Bits : numberToBf16Bits;
  const d = new Uint16Array(n);
  for (let o = 0; o < rows; o++) for (let i = 0; i < cols; i++) d[o * cols + i] = enc(value(o, i));
  return new Tensor(dtype, d, [rows, cols]);
}

interface Check {
  /** max |got - ref| / sum |x w| over finite outputs */
  maxRel: number;
}

/**
 * Runs matmulFloat and compares with linear (float64 sums, rounded once): every output must be
 * within (cp/4 + 4) * 2^-24 * sum_i |x_i w_i| of the exact sum (+ the reference's own rounding and
 * subnormal slack); non-finite references must match exactly (same inf, or NaN).
 */
function check(w: Tensor, x: Float32Array, tokens: number, label: string): Check {
  const [rows, cols] = [w.shape[0]!, w.shape[1]!];
  const ref = new Float32Array(tokens * rows);
  linear(ref, x, tokens, w);
  const packed = packFloatMatrix(w);
  try {
    assert.equal(packed.bytes, packedFloatBytes(w.dtype as FloatType, rows, cols));
    // Pre-fill with garbage: every output must be written.
    const got = new Float32Array(tokens * rows).fill(12345.5);
    matmulFloat(got, x, tokens, packed);
    const dec = decoder(w.dtype as FloatType);
    const cp = Math.ceil(cols / 8) * 8;
    let maxRel = 0;
    for (let t = 0; t < tokens; t++) {
      for (let o = 0; o < rows; o++) {
        const r = ref[t * rows + o]!;
        const g = got[t * rows + o]!;
        const where = `${label}: token ${t} row ${o} (rows ${rows}, cols ${cols}, tokens ${tokens})`;
        if (!Number.isFinite(r)) {
          assert.ok(Object.is(g, r), `${where}: got ${g}, want ${r}`);
          continue;
        }
        let s = 0;
        for (let i = 0; i < cols; i++) s += Math.abs(x[t * cols + i]! * dec(w.data, o * cols + i));
        const bound = (cp / 4 + 4) * EPS * s + EPS * Math.abs(r) + cols * 2 ** -149;
        const err = Math.abs(g - r);
        assert.ok(err <= bound, `${where}: got ${g}, want ${r}, error ${err} > bound ${bound}`);
        if (s > 0) maxRel = Math.max(maxRel, err / s);
      }
    }
    return { maxRel };
  } finally {
    freeFloatMatrix(packed);
  }
}

function randomX(r: () => number, n: number, scale = 1): Float32Array {
  const x = new Float32Array(n);
  for (let i = 0; i < n; i++) x[i] = (r() * 2 - 1) * scale;
  return x;
}

const DTYPES: FloatType[] = ['f32', 'f16', 'bf16'];

describe('matmulFloat', () => {
  after(() => {
    setThreads(1);
  });

  for (const threads of [1, 2]) {
    test(`random odd shapes, all dtypes, ${threads} thread(s)`, async () => {
      setThreads(threads);
      if (threads > 1) {
        await poolReady();
        setMinChunkWork(1);
      }
      const before = poolStats().workerChunks;
      try {
        const r = rng(1000 + threads);
        for (const dtype of DTYPES) {
          for (let k = 0; k < 40; k++) {
            const rows = 1 + Math.floor(r() * 37);
            const cols = 1 + Math.floor(r() * 70);
            const tokens = 1 + Math.floor(r() * 9);
            const w = weights(dtype, rows, cols, () => r() * 2 - 1);
            check(w, randomX(r, tokens * cols), tokens, `${dtype} case ${k}`);
          }
        }
        if (threads > 1) assert.ok(poolStats().workerChunks > before, 'the worker took part');
      } finally {
        setMinChunkWork(1 << 15);
        setThreads(1);
      }
    });
  }

  for (const threads of [1, 2]) {
    test(`model shapes (256x688, 688x256, 260x1000), ${threads} thread(s): error <= 2e-6 of sum |x w|`, async () => {
      setThreads(threads);
      if (threads > 1) await poolReady();
      try {
        assert.equal(threadCount(), threads);
        const r = rng(7 + threads);
        for (const dtype of DTYPES) {
          for (const [rows, cols] of [[256, 688], [688, 256], [260, 1000]] as const) {
            for (const tokens of [1, 2, 5]) {
              const w = weights(dtype, rows, cols, () => (r() * 2 - 1) * 0.1);
              const { maxRel } = check(w, randomX(r, tokens * cols, 3), tokens, `${dtype} ${rows}x${cols}`);
              assert.ok(maxRel <= 2e-6, `${dtype} ${rows}x${cols} tokens ${tokens}: relative error ${maxRel} > 2e-6`);
            }
          }
        }
      } finally {
        setThreads(1);
      }
    });
  }

  test('f16 subnormal, tiny and large weights; x below and above 2^16 (prescaled and exact paths)', () => {
    const r = rng(42);
    const special = [2 ** -24, -(2 ** -24), 1023 * 2 ** -24, 2 ** -14, -65504, 65504, 0, -0, 1e-7, 3e-5];
    for (const xScale of [1, 1000, 65535, 70000, 1e20]) {
      for (const [rows, cols, tokens] of [[5, 13, 3], [8, 16, 1], [37, 70, 9]] as const) {
        const w = weights('f16', rows, cols, (o, i) => ((o * 7 + i) % 3 === 0 ? special[(o + i) % special.length]! : (r() * 2 - 1) * 2 ** (Math.floor(r() * 40) - 24)));
        const x = randomX(r, tokens * cols, xScale);
        check(w, x, tokens, `f16 xScale ${xScale}`);
      }
    }
  });

  test('f16 x at the prescale limit: 65535.99 stays fast, 65536 and -inf go exact', () => {
    const w = weights('f16', 4, 8, (o, i) => (o + 1) * 2 ** -20 * (i + 1));
    for (const v of [65535.99, 65536, -65536, 1e38, -Infinity]) {
      const x = new Float32Array(8).fill(1);
      x[3] = v;
      check(w, x, 1, `x ${v}`);
    }
  });

  test('column padding is zero even after scratch held inf (a padded weight column times inf would be NaN)', () => {
    for (const dtype of DTYPES) {
      const x = new Float32Array(16).fill(Infinity);
      const w16 = packFloatMatrix(weights(dtype, 4, 16, () => 0));
      const out = new Float32Array(4);
      matmulFloat(out, x, 1, w16);
      assert.ok(out.every((v) => Number.isNaN(v)));
      freeFloatMatrix(w16);
      const w9 = weights(dtype, 4, 9, (o, i) => o + i + 1);
      check(w9, Float32Array.from({ length: 9 }, (_, i) => i - 4), 1, `${dtype} after inf`);
    }
  });

  test('f16 inf and NaN weights decode exactly (matrix-level exact path)', () => {
    const r = rng(5);
    const w = weights('f16', 9, 19, (o, i) => (o === 2 && i === 5 ? Infinity : o === 4 && i === 0 ? -Infinity : o === 6 && i === 18 ? NaN : r() - 0.5));
    check(w, randomX(r, 3 * 19), 3, 'f16 specials');
    // A single special, in a full 8-column block or in the column tail (found by either scan).
    for (const [o, i, v] of [[1, 3, Infinity], [3, 17, -Infinity], [2, 18, NaN], [0, 9, NaN]] as const) {
      const w1 = weights('f16', 5, 19, (oo, ii) => (oo === o && ii === i ? v : r() - 0.5));
      check(w1, randomX(r, 2 * 19), 2, `f16 single special at ${o},${i}`);
    }
  });

  test('bf16 and f32 large and tiny magnitudes', () => {
    const r = rng(9);
    for (const dtype of ['bf16', 'f32'] as const) {
      const w = weights(dtype, 11, 45, () => (r() * 2 - 1) * 2 ** (Math.floor(r() * 120) - 60));
      check(w, randomX(r, 4 * 45, 2 ** 30), 4, `${dtype} wide range`);
      const w2 = weights(dtype, 7, 33, () => (r() - 0.5) * 1e-38);
      check(w2, randomX(r, 2 * 33, 1e-3), 2, `${dtype} subnormal products`);
    }
  });

  test('correct after the heap grows between calls and with a larger then smaller call', () => {
    const r = rng(77);
    const w = weights('f16', 33, 65, () => r() - 0.5);
    const packed = packFloatMatrix(w);
    const heap = wasmHeap();
    try {
      const x = randomX(r, 9 * 65);
      const ref = new Float32Array(9 * 33);
      linear(ref, x, 9, w);
      const got = new Float32Array(9 * 33);
      matmulFloat(got, x, 9, packed);
      const first = Float32Array.from(got);
      // Force the memory to grow: the cached scratch views must follow.
      const big = heap.alloc(heap.buffer.byteLength, 64);
      try {
        got.fill(0);
        matmulFloat(got, x, 9, packed);
        assert.deepEqual(got, first);
        const one = new Float32Array(33);
        matmulFloat(one, x.subarray(0, 65), 1, packed);
        for (let o = 0; o < 33; o++) assert.ok(Math.abs(one[o]! - ref[o]!) <= 1e-5 * (1 + Math.abs(ref[o]!)));
      } finally {
        heap.free(big);
      }
    } finally {
      freeFloatMatrix(packed);
    }
  });

  test('a copy of the PackedMatrix object works (details derived once, f16 inf found by a scan)', () => {
    const r = rng(31);
    for (const special of [false, true]) {
      const w = weights('f16', 6, 21, (o, i) => (special && o === 5 && i === 20 ? Infinity : r() - 0.5));
      const packed = packFloatMatrix(w);
      const copy = { ...packed };
      const x = randomX(r, 2 * 21, 1000);
      const want = new Float32Array(12);
      const got = new Float32Array(12);
      matmulFloat(want, x, 2, packed);
      matmulFloat(got, x, 2, copy);
      assert.deepEqual(got, want);
      const ref = new Float32Array(12);
      linear(ref, x, 2, w);
      if (special) assert.ok(got.some((v) => !Number.isFinite(v)) && got.every((v, k) => Number.isFinite(v) === Number.isFinite(ref[k]!)));
      freeFloatMatrix(packed);
    }
    assert.throws(() => matmulFloat(new Float32Array(4), new Float32Array(8), 1, { kind: 'packed', type: 'f32', rows: 4, cols: 8, ptr: 65536, bytes: 100 }), /not packed/);
  });

  test('rejects bad input', () => {
    const w = weights('f32', 4, 8, () => 1);
    const packed = packFloatMatrix(w);
    assert.throws(() => matmulFloat(new Float32Array(4), new Float32Array(7), 1, packed), /x holds 7/);
    assert.throws(() => matmulFloat(new Float32Array(3), new Float32Array(8), 1, packed), /out holds 3/);
    assert.throws(() => matmulFloat(new Float32Array(4), new Float32Array(8), 1.5, packed), /tokens/);
    freeFloatMatrix(packed);
    assert.throws(() => matmulFloat(new Float32Array(4), new Float32Array(8), 1, packed), /not packed/);
    assert.throws(() => packFloatMatrix(new Tensor('f32', new Float32Array(8), [8])), /2-D/);
    const t = new Tensor('f32', new Float32Array(32), [4, 8]);
    assert.throws(() => packFloatMatrix(new Tensor('f32', t.data, [8, 4], [1, 8])), /contiguous/);
  });

  test('zero tokens and zero columns', () => {
    const w = weights('bf16', 6, 0, () => 0);
    const packed = packFloatMatrix(w);
    const out = new Float32Array(12).fill(7);
    matmulFloat(out, new Float32Array(0), 2, packed);
    assert.deepEqual(out, new Float32Array(12));
    matmulFloat(out.fill(7), new Float32Array(0), 0, packed);
    assert.deepEqual(out, new Float32Array(12).fill(7));
    freeFloatMatrix(packed);
  });
});

test('several tokens (f16/bf16 rows decoded once per call) equal one call per token bit for bit: specials, subnormals, |x| >= 2^16, odd shapes, 1 and 2 threads', () => {
  const before = threadCount();
  try {
    for (const threads of [1, 2]) {
      setThreads(threads);
      for (const dtype of ['f16', 'bf16'] as const) {
        for (const [rows, cols, special] of [[7, 13, false], [45, 67, true], [9, 520, false]] as const) {
          const r = rng(rows * 31 + cols);
          // Normal and subnormal weights; with `special`, an inf and a NaN (f16: the exact-decode matrices).
          const w = weights(dtype, rows, cols, (o, i) => {
            if (special && o === 3 && i === 5) return Infinity;
            if (special && o === 4 && i === 1) return NaN;
            const v = (r() - 0.5) * 2;
            return i % 11 === 0 ? v * 2 ** -20 : v;
          });
          const tokens = 6;
          // Token 2 holds a value past 2^16 (the f16 fast path's prescale limit), token 4 subnormal f32s.
          const x = Float32Array.from({ length: tokens * cols }, (_, i) => {
            const t = Math.floor(i / cols);
            const v = r() - 0.5;
            return t === 2 && i % cols === 1 ? 70000 : t === 4 ? v * 2 ** -130 : v;
          });
          const packed = packFloatMatrix(w);
          try {
            const together = new Float32Array(tokens * rows);
            matmulFloat(together, x, tokens, packed);
            for (let t = 0; t < tokens; t++) {
              const one = new Float32Array(rows);
              matmulFloat(one, x.subarray(t * cols, (t + 1) * cols), 1, packed);
              assert.deepEqual(together.subarray(t * rows, (t + 1) * rows), one, `${dtype} ${rows}x${cols} token ${t}, ${threads} thread(s)`);
            }
          } finally {
            freeFloatMatrix(packed);
          }
        }
      }
    }
  } finally {
    setThreads(before);
  }
});
