import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { dequantizeToF32, quantize } from '../../formats/gguf/quants.js';
import { linear, type QuantizedMatrix } from '../../ops/linear.js';
import { wasmHeap } from './heap.js';
import { freePacked, matmulQuant, PACKED_QUANT_TYPES, type PackedQuantType, packedQuantRowBytes, packQuantMatrix } from './matmul-quant.js';
import { poolReady, poolStats, setMinChunkWork, setThreads, threadCount } from './pool.js';

/** Deterministic uniform [0, 1) generator. */
function rng(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    return s / 2 ** 32;
  };
}

/** A random (rows, cols) matrix with block magnitudes spread over 2^-8 .. 2^4, quantized to `type`. */
function randomQuantMatrix(type: PackedQuantType, rows: number, cols: number, seed: number): QuantizedMatrix {
  const rand = rng(seed);
  const values = new Float32Array(rows * cols);
  for (let i = 0; i < values.length; i += 32) {
    const scale = 2 ** (Math.floor(rand() * 13) - 8);
    // Some blocks are all positive (exercises the K-quant mins), some all zero.
    const kind = rand();
    for (let j = 0; j < 32; j++) {
      values[i + j] = kind < 0.05 ? 0 : kind < 0.25 ? scale * rand() : scale * (2 * rand() - 1);
    }
  }
  const data = quantize(type, values);
  const rowBytes = packedQuantRowBytes(type, cols);
  assert.equal(data.byteLength, rows * rowBytes);
  return { kind: 'quantized', type, rows, cols, rowBytes, data };
}

function randomX(n: number, seed: number): Float32Array {
  const rand = rng(seed);
  const x = new Float32Array(n);
  for (let i = 0; i < n; i++) x[i] = (2 * rand() - 1) * 2 ** (Math.floor(rand() * 6) - 3);
  return x;
}

/** Checks out against the float64 reference: |out - ref| <= 1e-6 * sum |w x| + 1e-30, per element. */
function checkAgainstReference(w: QuantizedMatrix, x: Float32Array, tokens: number, out: Float32Array, what: string): number {
  const ref = new Float32Array(tokens * w.rows);
  linear(ref, x, tokens, w);
  const deq = dequantizeToF32(w.type, w.data, w.rows * w.cols);
  let worst = 0;
  for (let t = 0; t < tokens; t++) {
    for (let r = 0; r < w.rows; r++) {
      let mag = 0;
      for (let i = 0; i < w.cols; i++) mag += Math.abs(deq[r * w.cols + i]! * x[t * w.cols + i]!);
      const got = out[t * w.rows + r]!;
      const want = ref[t * w.rows + r]!;
      const err = Math.abs(got - want);
      if (!(err <= 1e-6 * mag + 1e-30)) {
        assert.fail(`${what}: out[token ${t}, row ${r}] = ${got}, reference ${want} (error ${err}, sum |w x| ${mag})`);
      }
      if (mag > 0) worst = Math.max(worst, err / mag);
    }
  }
  return worst;
}

const SHAPES: Record<PackedQuantType, Array<[number, number]>> = {
  Q8_0: [[7, 96], [13, 160], [1, 32]],
  Q4_0: [[7, 96], [13, 160], [1, 32]],
  Q4_K: [[7, 512], [11, 768], [1, 256]],
  Q6_K: [[7, 512], [11, 768], [1, 256]],
};

describe('matmulQuant against linear (f64 reference)', () => {
  const threadsBefore = threadCount();
  before(async () => {
    setThreads(2);
    await poolReady();
    // Tiny matrices: let the pool split them anyway.
    setMinChunkWork(1);
  });
  after(() => {
    setThreads(threadsBefore);
    setMinChunkWork(1 << 15);
  });

  for (const type of PACKED_QUANT_TYPES) {
    for (const threads of [1, 2]) {
      test(`${type}, ${threads} thread(s), odd rows, tokens 1..7`, () => {
        setThreads(threads);
        let worst = 0;
        let seed = 1;
        for (const [rows, cols] of SHAPES[type]) {
          const w = randomQuantMatrix(type, rows, cols, seed++);
          const packed = packQuantMatrix(w);
          try {
            assert.equal(packed.type, type);
            assert.equal(packed.rows, rows);
            assert.equal(packed.cols, cols);
            for (let tokens = 1; tokens <= 7; tokens++) {
              const x = randomX(tokens * cols, seed++);
              const xCopy = x.slice();
              const out = new Float32Array(tokens * rows + 3).fill(12345);
              matmulQuant(out, x, tokens, packed);
              assert.deepEqual(x, xCopy, 'x must not change');
              assert.deepEqual([...out.subarray(tokens * rows)], [12345, 12345, 12345], 'nothing written past tokens x rows');
              worst = Math.max(worst, checkAgainstReference(w, x, tokens, out, `${type} [${rows}, ${cols}] tokens ${tokens}`));
            }
          } finally {
            freePacked(packed);
          }
        }
        assert.ok(worst < 1e-6, `worst relative error ${worst}`);
      });
    }
  }

  test('a wrong weight is caught: one changed quant byte moves the result beyond the tolerance', () => {
    setThreads(1);
    for (const type of PACKED_QUANT_TYPES) {
      const cols = type.endsWith('_K') ? 256 : 32;
      const w = randomQuantMatrix(type, 3, cols, 99);
      const x = randomX(cols, 100);
      const packed = packQuantMatrix(w);
      try {
        // Corrupt one quant byte in the repacked heap copy (past the block's scale header: 4 bytes
        // for Q8_0/Q4_0, 24 for Q4_K, 20 for Q6_K): the reference must disagree.
        const qByte = type.endsWith('_K') ? 30 : 5;
        const bytes = wasmHeap().u8(packed.ptr, packed.bytes);
        bytes[qByte] = bytes[qByte]! ^ 0x11;
        const out = new Float32Array(3);
        matmulQuant(out, x, 1, packed);
        assert.throws(() => checkAgainstReference(w, x, 1, out, type), /reference/);
      } finally {
        freePacked(packed);
      }
    }
  });

  test('2 threads on a larger matrix, with the workers taking part (per-thread scratch for tokens > 1)', (t) => {
    setThreads(2);
    setMinChunkWork(256);
    try {
      for (const type of PACKED_QUANT_TYPES) {
        const cols = 512;
        const rows = 301;
        const w = randomQuantMatrix(type, rows, cols, 7);
        const packed = packQuantMatrix(w);
        try {
          let joined = false;
          for (let tries = 0; tries < 50 && !joined; tries++) {
            const before = poolStats().workerChunks;
            for (const tokens of [1, 3]) {
              const x = randomX(tokens * cols, 11 + tries + tokens);
              const out = new Float32Array(tokens * rows);
              matmulQuant(out, x, tokens, packed);
              checkAgainstReference(w, x, tokens, out, `${type} 2 threads tokens ${tokens}`);
            }
            joined = poolStats().workerChunks > before;
          }
          // On a loaded machine the worker may never get a core: correctness is what is asserted above.
          if (!joined) t.diagnostic(`${type}: the worker never took a chunk`);
        } finally {
          freePacked(packed);
        }
      }
    } finally {
      setMinChunkWork(1);
    }
  });
});

describe('matmulQuant batch and split invariance', () => {
  test('every type: 1 thread, 2 threads and one call per token agree bit for bit (rows not a multiple of 4, tokens past one tile of 8)', async () => {
    await poolReady();
    const before = threadCount();
    setMinChunkWork(64);
    try {
      for (const type of PACKED_QUANT_TYPES) {
        const rows = 67;
        const cols = 768;
        const tokens = 11;
        const w = randomQuantMatrix(type, rows, cols, 21);
        const x = randomX(tokens * cols, 22);
        const packed = packQuantMatrix(w);
        try {
          setThreads(1);
          const one = new Float32Array(tokens * rows);
          matmulQuant(one, x, tokens, packed);
          setThreads(2);
          const two = new Float32Array(tokens * rows);
          matmulQuant(two, x, tokens, packed);
          const apart = new Float32Array(tokens * rows);
          for (let t = 0; t < tokens; t++) {
            const o = new Float32Array(rows);
            matmulQuant(o, x.subarray(t * cols, (t + 1) * cols), 1, packed);
            apart.set(o, t * rows);
          }
          assert.deepEqual(two, one, `${type}: 2 threads vs 1`);
          assert.deepEqual(apart, one, `${type}: per token vs together`);
          checkAgainstReference(w, x, tokens, one, type);
        } finally {
          freePacked(packed);
        }
      }
    } finally {
      setThreads(before);
      setMinChunkWork(1 << 15);
    }
  });
});

describe('matmulQuant API', () => {
  test('packQuantMatrix rejects other types and bad shapes', () => {
    const w = randomQuantMatrix('Q8_0', 2, 64, 3);
    assert.throws(() => packQuantMatrix({ ...w, type: 'Q5_K' }), /not one of/);
    assert.throws(() => packQuantMatrix({ ...w, cols: 48 }), /multiple of 32/);
    assert.throws(() => packQuantMatrix({ ...w, rowBytes: 60 }), /bytes/);
    assert.throws(() => packQuantMatrix({ ...w, data: w.data.subarray(0, 10) }), /need/);
  });

  test('matmulQuant checks sizes; tokens 0 writes nothing', () => {
    const w = randomQuantMatrix('Q4_0', 5, 64, 4);
    const packed = packQuantMatrix(w);
    try {
      assert.throws(() => matmulQuant(new Float32Array(10), new Float32Array(64), 2, packed), /x holds/);
      assert.throws(() => matmulQuant(new Float32Array(4), new Float32Array(64), 1, packed), /out holds/);
      const out = new Float32Array(5).fill(7);
      matmulQuant(out, new Float32Array(0), 0, packed);
      assert.deepEqual([...out], [7, 7, 7, 7, 7]);
    } finally {
      freePacked(packed);
    }
  });

  test('decode calls reuse their heap scratch (no heap allocation per call)', () => {
    setThreads(1);
    const w = randomQuantMatrix('Q4_K', 9, 256, 5);
    const packed = packQuantMatrix(w);
    try {
      const x = randomX(256, 6);
      const out = new Float32Array(9);
      matmulQuant(out, x, 1, packed);
      const inUse = wasmHeap().bytesInUse;
      const first = out.slice();
      for (let i = 0; i < 20; i++) matmulQuant(out, x, 1, packed);
      assert.equal(wasmHeap().bytesInUse, inUse);
      assert.deepEqual(out, first, 'deterministic');
    } finally {
      freePacked(packed);
    }
  });
});
