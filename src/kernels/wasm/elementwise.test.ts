import assert from 'node:assert/strict';
import { after, describe, test } from 'node:test';
import fc from 'fast-check';
import { roundF32ArrayInPlace, type DType } from '../../core/dtype.js';
import { rmsNorm } from '../../ops/rmsnorm.js';
import { softmaxInPlace } from '../../ops/softmax.js';
import { swiglu } from '../../ops/swiglu.js';
import { errorText, uniform, xorshift } from '../../testing/helpers.js';
import { layerNorm, quickGelu } from '../../models/clip/model.js';
import { addBiasWasm, addWasm, layerNormWasm, quickGeluWasm, rmsNormWasm, roundF32ArrayWasm, softmaxWasm, swigluWasm } from './elementwise.js';
import { wasmHeap } from './heap.js';
import { poolReady, setMinChunkWork, setThreads } from './pool.js';

const bitsOf = (() => {
  const f = new Float32Array(1);
  const u = new Uint32Array(f.buffer);
  return (x: number) => {
    f[0] = x;
    return u[0]!;
  };
})();

/** f32 values on one monotonic integer line (+0 and -0 both 0), so ulp distance is a difference. */
function ordinal(x: number): number {
  const b = bitsOf(x);
  return b >= 0x80000000 ? -(b & 0x7fffffff) : b;
}

/** got equals want within 1 f32 ulp; NaN, inf and the sign of zero must match exactly. */
function assertUlp(got: Float32Array, want: Float32Array, n: number, where: string): number {
  let maxUlp = 0;
  for (let i = 0; i < n; i++) {
    const g = got[i]!;
    const w = want[i]!;
    if (!Number.isFinite(w) || !Number.isFinite(g) || w === 0) {
      assert.ok(Object.is(g, w), `${where}: [${i}] got ${g}, want ${w}`);
      continue;
    }
    const d = Math.abs(ordinal(g) - ordinal(w));
    assert.ok(d <= 1, `${where}: [${i}] got ${g}, want ${w} (${d} ulp)`);
    maxUlp = Math.max(maxUlp, d);
  }
  return maxUlp;
}

function randomArray(r: () => number, n: number, scale = 1): Float32Array {
  const a = new Float32Array(n);
  for (let i = 0; i < n; i++) a[i] = (r() * 2 - 1) * scale;
  return a;
}

/** A heap view holding a copy of a (freed by the caller through the returned ptr). */
function inHeap(a: Float32Array): { view: Float32Array; ptr: number } {
  const heap = wasmHeap();
  const ptr = heap.alloc(Math.max(16, a.length * 4));
  const view = heap.f32(ptr, a.length);
  view.set(a);
  return { view, ptr };
}

/** Runs body with 1 thread, then with 2 threads and chunks of any size (so even small calls split). */
async function withThreads(body: (threads: number) => void): Promise<void> {
  try {
    setThreads(1);
    body(1);
    setThreads(2);
    await poolReady();
    setMinChunkWork(1);
    body(2);
  } finally {
    setThreads(1);
    setMinChunkWork(1 << 15);
  }
}

describe('elementwise wasm kernels', () => {
  after(() => setThreads(1));

  test('rmsNormWasm is within 1 ulp of rmsNorm on random odd shapes (plain, heap, in place; 1 and 2 threads)', async () => {
    await withThreads((threads) => {
      const r = uniform(11 + threads);
      for (let k = 0; k < 60; k++) {
        const rows = Math.floor(r() * 9);
        const dim = 1 + Math.floor(r() * (k < 50 ? 70 : 5000));
        const scale = [1, 1e-20, 1e18, 3e-39][k % 4]!;
        const x = randomArray(r, rows * dim + 3, scale);
        const w = randomArray(r, dim, 2);
        const eps = k % 3 === 0 ? 1e-6 : 1e-5;
        const want = new Float32Array(x.length).fill(7);
        rmsNorm(want, x, w, eps, rows, dim);
        const where = `rows ${rows} dim ${dim} scale ${scale} threads ${threads}`;
        // Plain arrays, out separate (values past rows * dim untouched).
        const got = new Float32Array(x.length).fill(7);
        rmsNormWasm(got, x, w, eps, rows, dim);
        assertUlp(got, want, x.length, `${where} plain`);
        // Plain, in place.
        const inPlace = x.slice();
        rmsNormWasm(inPlace, inPlace, w, eps, rows, dim);
        assertUlp(inPlace.subarray(0, rows * dim), want, rows * dim, `${where} in place`);
        // Heap views, in place and not.
        const hx = inHeap(x);
        const hout = inHeap(new Float32Array(x.length).fill(7));
        try {
          rmsNormWasm(hout.view, hx.view, w, eps, rows, dim);
          assertUlp(hout.view, want, x.length, `${where} heap`);
          rmsNormWasm(hx.view, hx.view, w, eps, rows, dim);
          assert.deepEqual(hx.view.subarray(0, rows * dim), hout.view.subarray(0, rows * dim), `${where} heap in place`);
        } finally {
          wasmHeap().free(hx.ptr);
          wasmHeap().free(hout.ptr);
        }
      }
    });
  });

  test('rmsNormWasm: a row gives the same bits alone or among others, on 1 or 2 threads', async () => {
    const r = uniform(5);
    const rows = 37;
    const dim = 771;
    const x = randomArray(r, rows * dim, 3);
    const w = randomArray(r, dim);
    const results: Float32Array[] = [];
    await withThreads(() => {
      const all = new Float32Array(rows * dim);
      rmsNormWasm(all, x, w, 1e-5, rows, dim);
      const single = new Float32Array(rows * dim);
      for (let t = 0; t < rows; t++) rmsNormWasm(single.subarray(t * dim, (t + 1) * dim), x.subarray(t * dim, (t + 1) * dim), w, 1e-5, 1, dim);
      assert.deepEqual(all, single);
      results.push(all);
    });
    assert.deepEqual(results[0], results[1]);
  });

  test('rmsNormWasm checks like rmsNorm', () => {
    const x = new Float32Array(8);
    const w = new Float32Array(4);
    for (const [rows, dim, wl] of [[2, 0, 4], [-1, 4, 4], [1.5, 4, 4], [2, 4, 3], [3, 4, 4]] as const) {
      const ww = new Float32Array(wl);
      assert.equal(errorText(() => rmsNormWasm(x, x, ww, 1e-5, rows, dim)), errorText(() => rmsNorm(x, x, ww, 1e-5, rows, dim)));
    }
    rmsNormWasm(x, x, w, 1e-5, 0, 4);
  });

  const SPECIAL = [0, -0, 1, -1, 0.5, 20, -20, 88, -88, 89, -89, 100, -100, 700, -700, 709.78, -709.78, 709.79, -709.79, 746, -746, 1e30, -1e30, 3.4e38, -3.4e38,
    Infinity, -Infinity, NaN, 1e-45, -1e-45, 1.1754942e-38, -1.1754942e-38, 1e-7, -1e-7, 65504, -65504];

  test('swigluWasm is within 1 ulp of swiglu on random data and edge values (plain, heap, aliasing; 1 and 2 threads)', async () => {
    await withThreads((threads) => {
      const r = uniform(21 + threads);
      const cases: Array<[Float32Array, Float32Array]> = [];
      // Every pair of special values.
      const m = SPECIAL.length;
      const g = new Float32Array(m * m);
      const u = new Float32Array(m * m);
      for (let i = 0; i < m; i++) for (let j = 0; j < m; j++) [g[i * m + j], u[i * m + j]] = [SPECIAL[i]!, SPECIAL[j]!];
      cases.push([g, u]);
      for (let k = 0; k < 30; k++) {
        const n = Math.floor(r() * (k < 20 ? 50 : 20000));
        const scale = [4, 30, 100, 1e-30][k % 4]!;
        cases.push([randomArray(r, n, scale), randomArray(r, n, 3)]);
      }
      // Every g on a dense grid of [-120, 120] (covers exp's range reduction boundaries).
      const grid = new Float32Array(240001);
      for (let i = 0; i < grid.length; i++) grid[i] = (i - 120000) / 1000;
      cases.push([grid, new Float32Array(grid.length).fill(1.75)]);
      for (const [gate, up] of cases) {
        const n = gate.length;
        const where = `n ${n} threads ${threads}`;
        const want = new Float32Array(n);
        swiglu(want, gate, up);
        const got = new Float32Array(n);
        swigluWasm(got, gate, up);
        assertUlp(got, want, n, `${where} plain`);
        const og = gate.slice();
        swigluWasm(og, og, up);
        assertUlp(og, want, n, `${where} out = gate`);
        const ou = up.slice();
        swigluWasm(ou, gate, ou);
        assertUlp(ou, want, n, `${where} out = up`);
        const hg = inHeap(gate);
        const hu = inHeap(up);
        try {
          swigluWasm(hu.view, hg.view, hu.view);
          assertUlp(hu.view, want, n, `${where} heap, out = up`);
        } finally {
          wasmHeap().free(hg.ptr);
          wasmHeap().free(hu.ptr);
        }
      }
      // n shorter than the arrays: the rest stays.
      const gate = randomArray(r, 10, 5);
      const up = randomArray(r, 10);
      const want = new Float32Array(10).fill(9);
      swiglu(want, gate, up, 7);
      const got = new Float32Array(10).fill(9);
      swigluWasm(got, gate, up, 7);
      assertUlp(got, want, 10, 'n 7 of 10');
    });
  });

  test('swigluWasm checks like swiglu', () => {
    const a = new Float32Array(4);
    const b = new Float32Array(3);
    for (const [out, gate, up, n] of [[a, a, b, undefined], [a, a, a, 5], [a, a, a, -1], [a, a, a, 1.5]] as const) {
      assert.equal(errorText(() => swigluWasm(out, gate, up, n)), errorText(() => swiglu(out, gate, up, n)));
    }
  });

  test('softmaxWasm is within 1 ulp of softmaxInPlace (random rows, offsets, heap views, NaN, -inf, +inf)', () => {
    const r = uniform(31);
    const rows: Float32Array[] = [];
    for (let k = 0; k < 80; k++) rows.push(randomArray(r, 1 + Math.floor(r() * (k < 60 ? 40 : 5000)), [1, 10, 100, 1e30][k % 4]));
    rows.push(new Float32Array([1, NaN, 2]), new Float32Array([-Infinity, -Infinity]), new Float32Array([-Infinity, 3, -Infinity, 1, 2]));
    rows.push(new Float32Array([Infinity, 1]), new Float32Array([3e38, -3e38, 0, 1e-45]), new Float32Array([5]), new Float32Array([-0, 0, -0]));
    const g = new Float32Array(3000);
    for (let i = 0; i < g.length; i++) g[i] = -i / 20; // exps from 1 down into the f32 subnormals and to 0
    rows.push(g);
    for (const x of rows) {
      const off = x.length > 2 ? 1 : 0;
      const len = x.length - off - (x.length > 3 ? 1 : 0);
      const want = x.slice();
      softmaxInPlace(want, off, len);
      const got = x.slice();
      softmaxWasm(got, off, len);
      assertUlp(got, want, x.length, `length ${x.length} [${off}, ${off + len})`);
      const whole = x.slice();
      softmaxInPlace(whole);
      const h = inHeap(x);
      try {
        softmaxWasm(h.view);
        assertUlp(h.view, whole, x.length, `heap length ${x.length}`);
      } finally {
        wasmHeap().free(h.ptr);
      }
    }
  });

  test('softmaxWasm checks like softmaxInPlace', () => {
    const x = new Float32Array(4);
    for (const [o, l] of [[-1, 2], [3, 2], [1.5, 1], [0, -1]] as const) {
      assert.equal(errorText(() => softmaxWasm(x, o, l)), errorText(() => softmaxInPlace(x, o, l)));
    }
    softmaxWasm(x, 4, 0);
  });

  /** Rounds a copy of `values` both ways and asserts equal bits and counts. */
  function checkRounding(values: Float32Array, dtype: DType, clamp: boolean, n = values.length, heap = false): void {
    const want = values.slice();
    const wantCounts = roundF32ArrayInPlace(want, n, dtype, clamp);
    let got: Float32Array = values.slice();
    let h: { view: Float32Array; ptr: number } | undefined;
    if (heap) {
      h = inHeap(values);
      got = h.view;
    }
    try {
      const gotCounts = roundF32ArrayWasm(got, n, dtype, clamp);
      assert.deepEqual(gotCounts, wantCounts, `${dtype} clamp ${clamp}: counts`);
      const gb = new Uint32Array(got.buffer, got.byteOffset, got.length);
      const wb = new Uint32Array(want.buffer, want.byteOffset, want.length);
      for (let i = 0; i < values.length; i++) {
        if (gb[i] !== wb[i]) {
          assert.fail(`${dtype} clamp ${clamp}: [${i}] input 0x${bitsOf(values[i]!).toString(16)} got 0x${gb[i]!.toString(16)}, want 0x${wb[i]!.toString(16)}`);
        }
      }
    } finally {
      if (h) wasmHeap().free(h.ptr);
    }
  }

  function fromBits(bits: ArrayLike<number>): Float32Array {
    const u = new Uint32Array(bits.length);
    for (let i = 0; i < bits.length; i++) u[i] = bits[i]! >>> 0;
    return new Float32Array(u.buffer);
  }

  test('roundF32ArrayWasm equals roundF32ArrayInPlace bit for bit: dense sweeps of every boundary, f16 and bf16, clamp on and off', async () => {
    const sweeps: number[] = [];
    const around = (center: number, radius: number) => {
      for (let b = center - radius; b <= center + radius; b++) sweeps.push(b >>> 0, (b | 0x80000000) >>> 0);
    };
    around(0x477fe000, 0x3000); // 65504 .. 65520 .. 65536: f16 max, overflow threshold, next binade
    around(0x38800000, 0x4000); // 2^-14: f16 smallest normal
    around(0x33800000, 0x2000); // 2^-24: f16 smallest subnormal
    around(0x33000000, 0x2000); // 2^-25: half of it (rounds to 0 or up)
    around(0x7f7f8000, 0x2000); // bf16 overflow threshold
    around(0x7f800000, 0x1000); // inf and NaNs
    around(0, 0x2000); // zeros and f32 subnormals
    // Every f32 exponent with a spread of mantissas, including the tie patterns.
    for (let e = 0; e < 256; e++) for (const m of [0, 1, 0xfff, 0x1000, 0x1001, 0x2000, 0x3000, 0x7fff, 0x8000, 0x8001, 0x18000, 0x7fe000, 0x7ff000, 0x7fffff]) around((e << 23) | m, 0);
    const values = fromBits(sweeps);
    await withThreads(() => {
      for (const dtype of ['f16', 'bf16'] as const) {
        for (const clamp of [false, true]) {
          checkRounding(values, dtype, clamp);
          checkRounding(values, dtype, clamp, values.length - 3, true);
        }
      }
    });
    checkRounding(values, 'f32', false);
    for (let n = 0; n < 9; n++) checkRounding(values.subarray(0, 9), 'f16', false, n);
  });

  test('roundF32ArrayWasm equals roundF32ArrayInPlace on random bit patterns (fast-check)', () => {
    fc.assert(
      fc.property(
        fc.array(fc.oneof(fc.integer({ min: 0, max: 0xffffffff }), fc.integer({ min: 0x33000000, max: 0x47800000 }), fc.integer({ min: 0xb3000000, max: 0xc7800000 })), { maxLength: 70 }),
        fc.constantFrom<DType>('f16', 'bf16'),
        fc.boolean(),
        (bits, dtype, clamp) => checkRounding(fromBits(bits), dtype, clamp),
      ),
      { numRuns: 500 },
    );
    // And a million random patterns in one call.
    const next = xorshift(77);
    const bits = new Uint32Array(1 << 20);
    for (let i = 0; i < bits.length; i++) bits[i] = next();
    for (const dtype of ['f16', 'bf16'] as const) for (const clamp of [false, true]) checkRounding(fromBits(bits), dtype, clamp);
  });

  test('roundF32ArrayWasm rejects a bad n or dtype', () => {
    const x = new Float32Array(4);
    assert.match(errorText(() => roundF32ArrayWasm(x, 5, 'f16')), /^shape: /);
    assert.match(errorText(() => roundF32ArrayWasm(x, -1, 'f16')), /^shape: /);
    assert.match(errorText(() => roundF32ArrayWasm(x, 2, 'f8' as DType)), /^dtype: /);
  });
  /** got and want hold the same f32 bits (NaN payloads aside). */
  function assertBits(got: Float32Array, want: Float32Array, where: string): void {
    assert.equal(got.length, want.length, `${where}: length`);
    for (let i = 0; i < want.length; i++) {
      if (!Object.is(got[i], want[i])) assert.fail(`${where}: [${i}] got ${got[i]}, want ${want[i]}`);
    }
  }

  test('layerNormWasm equals layerNorm (CLIP) bit for bit on random odd shapes, scales and offsets (plain, heap, in place; 1 and 2 threads)', async () => {
    await withThreads((threads) => {
      const r = uniform(41 + threads);
      for (let k = 0; k < 60; k++) {
        const rows = Math.floor(r() * 9);
        const dim = 1 + Math.floor(r() * (k < 45 ? 70 : 3000));
        const scale = [1, 1e-20, 1e18, 3e-39][k % 4]!;
        const x = randomArray(r, rows * dim + 3, scale);
        // A large common offset makes the variance sum cancel: the order of the sums shows there.
        if (k % 5 === 1) for (let i = 0; i < x.length; i++) x[i] = x[i]! + 1000 * scale;
        const w = randomArray(r, dim, 2);
        const b = randomArray(r, dim, 0.5);
        const eps = k % 3 === 0 ? 1e-6 : 1e-5;
        const want = new Float32Array(x.length).fill(7);
        layerNorm(want, x, w, b, eps, rows, dim);
        const where = `rows ${rows} dim ${dim} scale ${scale} threads ${threads}`;
        const got = new Float32Array(x.length).fill(7);
        layerNormWasm(got, x, w, b, eps, rows, dim);
        assertBits(got, want, `${where} plain`);
        const inPlace = x.slice();
        layerNormWasm(inPlace, inPlace, w, b, eps, rows, dim);
        assertBits(inPlace.subarray(0, rows * dim), want.subarray(0, rows * dim), `${where} in place`);
        const hx = inHeap(x);
        const hout = inHeap(new Float32Array(x.length).fill(7));
        try {
          layerNormWasm(hout.view, hx.view, w, b, eps, rows, dim);
          assertBits(hout.view, want, `${where} heap`);
          layerNormWasm(hx.view, hx.view, w, b, eps, rows, dim);
          assertBits(hx.view.subarray(0, rows * dim), want.subarray(0, rows * dim), `${where} heap in place`);
        } finally {
          wasmHeap().free(hx.ptr);
          wasmHeap().free(hout.ptr);
        }
      }
      // Rows where the order of the f64 sums decides the mean: [s.., 2^60, -2^60, t..] summed left
      // to right loses the s values to the big pair, right to left the t values (lanes lose others).
      for (const dim of [9, 16, 23, 64]) {
        const xo = new Float32Array(dim);
        for (let i = 0; i < dim; i++) xo[i] = i < dim >> 1 ? 1 + r() : -3 - r();
        xo[dim >> 1] = 2 ** 60;
        xo[(dim >> 1) + 1] = -(2 ** 60);
        const wo = new Float32Array(dim).fill(1);
        const bo = new Float32Array(dim);
        const wantO = new Float32Array(dim);
        layerNorm(wantO, xo, wo, bo, 1e-5, 1, dim);
        const gotO = new Float32Array(dim);
        layerNormWasm(gotO, xo, wo, bo, 1e-5, 1, dim);
        assertBits(gotO, wantO, `order of the sums, dim ${dim} threads ${threads}`);
      }
      // NaN and inf in a row make the whole row NaN, as in the reference.
      const x = new Float32Array([1, NaN, 2, 3, Infinity, 4, 5, 6]);
      const w = new Float32Array(4).fill(1);
      const b = new Float32Array(4);
      const want = new Float32Array(8);
      layerNorm(want, x, w, b, 1e-5, 2, 4);
      const got = new Float32Array(8);
      layerNormWasm(got, x, w, b, 1e-5, 2, 4);
      assertBits(got, want, 'NaN / inf rows');
    });
  });

  test('layerNormWasm: a row gives the same bits alone or among others, on 1 or 2 threads', async () => {
    const r = uniform(6);
    const rows = 37;
    const dim = 771;
    const x = randomArray(r, rows * dim, 3);
    const w = randomArray(r, dim);
    const b = randomArray(r, dim);
    const results: Float32Array[] = [];
    await withThreads(() => {
      const all = new Float32Array(rows * dim);
      layerNormWasm(all, x, w, b, 1e-5, rows, dim);
      const single = new Float32Array(rows * dim);
      for (let t = 0; t < rows; t++) layerNormWasm(single.subarray(t * dim, (t + 1) * dim), x.subarray(t * dim, (t + 1) * dim), w, b, 1e-5, 1, dim);
      assert.deepEqual(all, single);
      results.push(all);
    });
    assert.deepEqual(results[0], results[1]);
  });

  test('layerNormWasm rejects bad shapes', () => {
    const x = new Float32Array(8);
    const w = new Float32Array(4);
    for (const [rows, dim, wl, bl] of [[2, 0, 4, 4], [-1, 4, 4, 4], [1.5, 4, 4, 4], [2, 4, 3, 4], [2, 4, 4, 5], [3, 4, 4, 4]] as const) {
      assert.match(errorText(() => layerNormWasm(x, x, new Float32Array(wl), new Float32Array(bl), 1e-5, rows, dim)), /^shape: /);
    }
    layerNormWasm(x, x, w, w, 1e-5, 0, 4);
  });

  test('quickGeluWasm is within 1 ulp of quickGelu on random data, a dense grid and edge values (plain, heap, in place; 1 and 2 threads)', async () => {
    await withThreads((threads) => {
      const r = uniform(51 + threads);
      const cases: Float32Array[] = [new Float32Array(SPECIAL)];
      for (let k = 0; k < 30; k++) cases.push(randomArray(r, Math.floor(r() * (k < 20 ? 50 : 20000)), [4, 30, 500, 1e-30][k % 4]!));
      // Every x on a dense grid of [-480, 480] (1.702 x crosses exp's range reduction boundaries and its underflow).
      const grid = new Float32Array(480001);
      for (let i = 0; i < grid.length; i++) grid[i] = (i - 240000) / 500;
      cases.push(grid);
      let maxUlp = 0;
      for (const x of cases) {
        const n = x.length;
        const where = `n ${n} threads ${threads}`;
        const want = new Float32Array(n);
        for (let i = 0; i < n; i++) want[i] = quickGelu(x[i]!);
        const got = new Float32Array(n);
        quickGeluWasm(got, x);
        maxUlp = Math.max(maxUlp, assertUlp(got, want, n, `${where} plain`));
        const inPlace = x.slice();
        quickGeluWasm(inPlace, inPlace);
        assertBits(inPlace, got, `${where} in place`);
        const h = inHeap(x);
        try {
          quickGeluWasm(h.view, h.view);
          assertBits(h.view, got, `${where} heap in place`);
        } finally {
          wasmHeap().free(h.ptr);
        }
      }
      // n shorter than the arrays: the rest stays.
      const x = randomArray(r, 10, 5);
      const got = new Float32Array(10).fill(9);
      quickGeluWasm(got, x, 7);
      for (let i = 0; i < 10; i++) assert.equal(got[i], i < 7 ? Math.fround(quickGelu(x[i]!)) : 9);
    });
  });

  test('quickGeluWasm rejects a bad n', () => {
    const a = new Float32Array(4);
    for (const n of [5, -1, 1.5]) assert.match(errorText(() => quickGeluWasm(a, a, n)), /^shape: /);
    assert.match(errorText(() => quickGeluWasm(a, new Float32Array(3))), /^shape: /);
  });

  test('addBiasWasm and addWasm equal the plain f32 loops bit for bit (random odd shapes, edge values, aliasing, heap; 1 and 2 threads)', async () => {
    await withThreads((threads) => {
      const r = uniform(61 + threads);
      for (let k = 0; k < 40; k++) {
        const rows = Math.floor(r() * 9);
        const dim = 1 + Math.floor(r() * (k < 30 ? 70 : 5000));
        const x = randomArray(r, rows * dim + 2, [1, 1e30, 3e38, 1e-40][k % 4]!);
        const b = randomArray(r, dim, [1, 1e30, 3e38, 1e-40][(k >> 2) % 4]!);
        if (k === 0 && dim >= 2) [b[0], b[1]] = [NaN, Infinity];
        const where = `rows ${rows} dim ${dim} threads ${threads}`;
        const want = new Float32Array(x.length).fill(5);
        for (let i = 0; i < rows * dim; i++) want[i] = x[i]! + b[i % dim]!;
        const got = new Float32Array(x.length).fill(5);
        addBiasWasm(got, x, b, rows);
        assertBits(got, want, `${where} bias`);
        const h = inHeap(x);
        try {
          addBiasWasm(h.view, h.view, b, rows);
          assertBits(h.view.subarray(0, rows * dim), want.subarray(0, rows * dim), `${where} bias heap in place`);
        } finally {
          wasmHeap().free(h.ptr);
        }
        // Two arrays, n = rows * dim, out = a, out = b and separate.
        const n = rows * dim;
        const y = randomArray(r, x.length, 1e3);
        const wantAdd = new Float32Array(x.length).fill(5);
        for (let i = 0; i < n; i++) wantAdd[i] = x[i]! + y[i]!;
        const sum = new Float32Array(x.length).fill(5);
        addWasm(sum, x, y, n);
        assertBits(sum, wantAdd, `${where} add`);
        const ox = x.slice();
        addWasm(ox, ox, y, n);
        assertBits(ox.subarray(0, n), wantAdd.subarray(0, n), `${where} add out = a`);
        const oy = y.slice();
        addWasm(oy, x, oy, n);
        assertBits(oy.subarray(0, n), wantAdd.subarray(0, n), `${where} add out = b`);
      }
    });
  });

  test('addBiasWasm and addWasm reject bad shapes', () => {
    const a = new Float32Array(8);
    assert.match(errorText(() => addBiasWasm(a, a, new Float32Array(4), 3)), /^shape: /);
    assert.match(errorText(() => addBiasWasm(a, a, new Float32Array(0), 1)), /^shape: /);
    assert.match(errorText(() => addBiasWasm(a, a, new Float32Array(4), -1)), /^shape: /);
    assert.match(errorText(() => addWasm(a, a, new Float32Array(4))), /^shape: /);
    assert.match(errorText(() => addWasm(a, a, a, 9)), /^shape: /);
  });
});
