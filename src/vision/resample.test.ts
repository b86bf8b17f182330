import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import type { RgbImage } from './image.js';
import { bicubicKernel, resize, resizeBicubic, resizeBilinear } from './resample.js';

/**
 * Reference written plainly from the definition, independent of the implementation's fixed point:
 * Keys cubic with a = -0.5 (or the triangle), support stretched by the downscale factor, each
 * output's taps normalised to sum 1 over the clipped window, horizontal pass rounded to uint8
 * with clipping, then the vertical pass. Uses floating-point weights and Math.round, so it may
 * differ from PIL's 22-bit fixed point by at most one level on rounding ties.
 */
function plainKernel(kind: 'bicubic' | 'bilinear', x: number): number {
  const t = Math.abs(x);
  if (kind === 'bilinear') return t < 1 ? 1 - t : 0;
  const a = -0.5;
  if (t <= 1) return (a + 2) * t ** 3 - (a + 3) * t ** 2 + 1;
  if (t < 2) return a * t ** 3 - 5 * a * t ** 2 + 8 * a * t - 4 * a;
  return 0;
}

function plainAxis(src: number[], outSize: number, kind: 'bicubic' | 'bilinear', fixed: boolean): number[] {
  const inSize = src.length;
  const scale = inSize / outSize;
  const stretch = Math.max(1, scale);
  const support = (kind === 'bicubic' ? 2 : 1) * stretch;
  const out: number[] = [];
  for (let i = 0; i < outSize; i++) {
    const center = (i + 0.5) * scale; // in input pixel coordinates (pixel j spans [j, j+1))
    const lo = Math.max(0, Math.floor(center - support + 0.5));
    const hi = Math.min(inSize, Math.floor(center + support + 0.5));
    const ws: number[] = [];
    for (let j = lo; j < hi; j++) ws.push(plainKernel(kind, (j + 0.5 - center) / stretch));
    const den = ws.reduce((a, b) => a + b, 0);
    let v: number;
    if (fixed) {
      // PIL for 8-bit images: taps quantised to 22 fractional bits, sum rounded half up.
      const q = ws.map((w) => Math.round((w / den) * 2 ** 22));
      const acc = q.reduce((a, t, k) => a + t * src[lo + k]!, 0);
      v = Math.floor((acc + 2 ** 21) / 2 ** 22);
    } else {
      v = Math.round(ws.reduce((a, w, k) => a + w * src[lo + k]!, 0) / den);
    }
    out.push(Math.min(255, Math.max(0, v)));
  }
  return out;
}

function plainResize(img: RgbImage, w: number, h: number, kind: 'bicubic' | 'bilinear', fixed = true): Uint8Array {
  // horizontal
  const mid: number[][][] = []; // [y][c][x]
  for (let y = 0; y < img.height; y++) {
    const row: number[][] = [];
    for (let c = 0; c < 3; c++) {
      const line = Array.from({ length: img.width }, (_, x) => img.data[(y * img.width + x) * 3 + c]!);
      row.push(w === img.width ? line : plainAxis(line, w, kind, fixed));
    }
    mid.push(row);
  }
  const out = new Uint8Array(w * h * 3);
  for (let x = 0; x < w; x++) {
    for (let c = 0; c < 3; c++) {
      const col = mid.map((r) => r[c]![x]!);
      const res = h === img.height ? col : plainAxis(col, h, kind, fixed);
      for (let y = 0; y < h; y++) out[(y * w + x) * 3 + c] = res[y]!;
    }
  }
  return out;
}

function randomImage(w: number, h: number, seed: number): RgbImage {
  let s = seed >>> 0 || 1;
  const data = new Uint8Array(w * h * 3);
  for (let i = 0; i < data.length; i++) {
    s ^= s << 13;
    s ^= s >>> 17;
    s ^= s << 5;
    data[i] = s & 0xff;
  }
  return { width: w, height: h, data };
}

function maxDiff(a: Uint8Array, b: Uint8Array): { max: number; exact: number } {
  assert.equal(a.length, b.length);
  let max = 0;
  let exact = 0;
  for (let i = 0; i < a.length; i++) {
    const d = Math.abs(a[i]! - b[i]!);
    if (d > max) max = d;
    if (d === 0) exact++;
  }
  return { max, exact: exact / a.length };
}

test('bicubic kernel matches the a = -0.5 polynomial and its known values', () => {
  for (let x = -2.5; x <= 2.5; x += 0.125) assert.ok(Math.abs(bicubicKernel(x) - plainKernel('bicubic', x)) < 1e-12, `x=${x}`);
  assert.equal(bicubicKernel(0), 1);
  assert.equal(Math.abs(bicubicKernel(1)), 0);
  assert.equal(bicubicKernel(2), 0);
  assert.equal(bicubicKernel(0.5), 0.5625);
  assert.equal(bicubicKernel(1.5), -0.0625);
});

test('2 -> 4 upscale of [0, 255] gives the hand-computed [0, 53, 202, 255]', () => {
  // out 1: centre 0.75, taps k(0.75)=0.2265625 on 255 and k(-0.25)=0.8671875 on 0 -> 255*0.2265625/1.09375 = 52.8
  // out 0: taps k(0.25)=0.8671875 on 0 and k(1.25)=-0.0703125 on 255 -> negative -> clipped to 0
  const img: RgbImage = { width: 2, height: 1, data: new Uint8Array([0, 0, 0, 255, 255, 255]) };
  const out = resizeBicubic(img, 4, 1);
  assert.deepEqual([...out.data].filter((_, i) => i % 3 === 0), [0, 53, 202, 255]);
});

test('constant images stay constant under up- and downscaling', () => {
  const img: RgbImage = { width: 7, height: 5, data: new Uint8Array(7 * 5 * 3).fill(77) };
  for (const [w, h] of [[3, 2], [13, 9], [7, 11], [1, 1]] as const) {
    assert.ok(resizeBicubic(img, w, h).data.every((v) => v === 77), `${w}x${h}`);
    assert.ok(resizeBilinear(img, w, h).data.every((v) => v === 77), `${w}x${h}`);
  }
});

test('same size returns an equal copy; only the changed axis is filtered', () => {
  const img = randomImage(6, 4, 7);
  const same = resizeBicubic(img, 6, 4);
  assert.deepEqual(same.data, img.data);
  assert.notEqual(same.data, img.data);
  // height-only change leaves each column's horizontal content untouched: compare with reference
  assert.deepEqual(resizeBicubic(img, 6, 9).data, plainResize(img, 6, 9, 'bicubic'));
});

test('bicubic parity with the plain reference on fixed cases (within 1 level)', (t) => {
  const cases: [number, number, number, number][] = [
    [640, 480, 336, 252], // typical CLIP downscale, antialiased
    [37, 23, 100, 61], // upscale
    [100, 30, 17, 83], // down in x, up in y
    [5, 5, 336, 336],
    [333, 500, 224, 336],
    [1000, 300, 1008, 303], // anyres resize
  ];
  let worst = 0;
  let exactMin = 1;
  let worstFloat = 0;
  let exactFloatMin = 1;
  for (const [iw, ih, ow, oh] of cases) {
    const img = randomImage(iw, ih, iw * 31 + ih);
    const got = resizeBicubic(img, ow, oh).data;
    const fixed = maxDiff(got, plainResize(img, ow, oh, 'bicubic', true));
    worst = Math.max(worst, fixed.max);
    exactMin = Math.min(exactMin, fixed.exact);
    // Against pure floating-point weights the per-pass difference is at most 1; through two
    // passes an intermediate tie that rounds differently can grow to 2 after the second filter.
    const float = maxDiff(got, plainResize(img, ow, oh, 'bicubic', false));
    worstFloat = Math.max(worstFloat, float.max);
    exactFloatMin = Math.min(exactFloatMin, float.exact);
  }
  t.diagnostic(`fixed-point reference: max diff ${worst}, min exact fraction ${exactMin}`);
  t.diagnostic(`float reference: max diff ${worstFloat}, min exact fraction ${exactFloatMin}`);
  assert.ok(worst <= 1, `max difference ${worst}`);
  assert.ok(exactMin > 0.999, `exact fraction ${exactMin}`);
  assert.ok(worstFloat <= 2 && exactFloatMin > 0.99, `float reference ${worstFloat} ${exactFloatMin}`);
});

test('single-axis resizes are within 1 level of float weights too', () => {
  const img = randomImage(97, 41, 3);
  for (const [w, h] of [[31, 41], [300, 41], [97, 13], [97, 100]] as const) {
    const { max } = maxDiff(resizeBicubic(img, w, h).data, plainResize(img, w, h, 'bicubic', false));
    assert.ok(max <= 1, `${w}x${h}: ${max}`);
  }
});

test('bicubic and bilinear parity with the plain reference on random sizes (property)', () => {
  fc.assert(
    fc.property(
      fc.integer({ min: 1, max: 40 }),
      fc.integer({ min: 1, max: 40 }),
      fc.integer({ min: 1, max: 60 }),
      fc.integer({ min: 1, max: 60 }),
      fc.integer(),
      fc.constantFrom('bicubic' as const, 'bilinear' as const),
      (iw, ih, ow, oh, seed, kind) => {
        const img = randomImage(iw, ih, seed);
        const { max } = maxDiff(resize(img, ow, oh, kind).data, plainResize(img, ow, oh, kind));
        return max <= 1;
      },
    ),
    { numRuns: 200 },
  );
});

test('resize rejects bad targets and inconsistent buffers with one-line errors', () => {
  const img = randomImage(4, 4, 1);
  for (const [w, h] of [[0, 4], [4, -1], [2.5, 3], [20000, 10]]) {
    assert.throws(() => resizeBicubic(img, w!, h!), (e: Error) => e.name === 'HalfpipeError' && !e.message.includes('\n'));
  }
  assert.throws(() => resizeBicubic({ width: 4, height: 4, data: new Uint8Array(5) }, 2, 2), /needs 48 bytes/);
});

// Ground truth published in Pillow's Tests/test_image_resample.py (TestImagingCoreResampleAccuracy):
// a square with two bright (0xe1) and two dark (0x1e) quadrants; the expected top-left quarter of
// the result is given in hex, the other quarters follow by symmetry.
function pillowCase(size: number, color: number): RgbImage {
  const data = new Uint8Array(size * size * 3);
  const half = size / 2;
  for (let y = 0; y < size; y++) {
    for (let x = 0; x < size; x++) {
      const bright = (x < half && y < half) || (x >= half && y >= half);
      data.fill(bright ? color : 255 - color, (y * size + x) * 3, (y * size + x) * 3 + 3);
    }
  }
  return { width: size, height: size, data };
}

function pillowSample(hex: string, size: number): number[] {
  const vals = hex.split(/\s+/).filter(Boolean).map((h) => parseInt(h, 16));
  const out = new Array<number>(size * size);
  const q = size / 2;
  for (let y = 0; y < q; y++) {
    for (let x = 0; x < q; x++) {
      const v = vals[y * q + x]!;
      out[y * size + x] = v;
      out[(size - 1 - y) * size + (size - 1 - x)] = v;
      out[(size - 1 - y) * size + x] = 255 - v;
      out[y * size + (size - 1 - x)] = 255 - v;
    }
  }
  return out;
}

test('matches Pillow test-suite values exactly (reduce/enlarge, bicubic/bilinear)', () => {
  const cases: [number, number, 'bicubic' | 'bilinear', string][] = [
    [12, 6, 'bicubic', 'e1 e3 d4  e3 e5 d6  d4 d6 c9'],
    [4, 8, 'bicubic', 'e1 e5 ee b9  e5 e9 f3 bc  ee f3 fd c1  b9 bc c1 a2'],
    [8, 4, 'bilinear', 'e1 c9  c9 b7'],
    [2, 4, 'bilinear', 'e1 b0  b0 98'],
  ];
  for (const [inSize, outSize, kind, hex] of cases) {
    const out = resize(pillowCase(inSize, 0xe1), outSize, outSize, kind);
    const want = pillowSample(hex, outSize);
    for (let c = 0; c < 3; c++) {
      const got = Array.from({ length: outSize * outSize }, (_, i) => out.data[i * 3 + c]!);
      assert.deepEqual(got, want, `${kind} ${inSize}->${outSize} channel ${c}`);
    }
  }
});

test('Pillow coefficient regressions: very wide reduce and 1280 -> 256 constant', () => {
  // TestCoreResampleCoefficients.test_reduce: half 254 / half 0 row reduced to 5 pixels -> middle 127
  for (let size = 400000; size < 400010; size += 2) {
    const data = new Uint8Array(size * 3);
    data.fill(254, 0, (size / 2) * 3);
    const out = resizeBicubic({ width: size, height: 1, data }, 5, 1);
    assert.equal(out.data[2 * 3], 127, `size ${size}`);
  }
  // test_non_zero_coefficients: a constant 1280x1280 image stays exactly constant at 256x256
  const img: RgbImage = { width: 1280, height: 1280, data: new Uint8Array(1280 * 1280 * 3) };
  for (let i = 0; i < 1280 * 1280; i++) img.data.set([0x20, 0x40, 0x60], i * 3);
  const out = resizeBicubic(img, 256, 256);
  for (let i = 0; i < 256 * 256; i++) {
    if (out.data[i * 3] !== 0x20 || out.data[i * 3 + 1] !== 0x40 || out.data[i * 3 + 2] !== 0x60) assert.fail(`pixel ${i}`);
  }
});
