/**
 * PIL-compatible resizing of 8-bit RGB images.
 *
 * This follows the algorithm of Pillow's `Image.resize(size, BICUBIC | BILINEAR)` for 8-bit images
 * (libImaging/Resample.c), so that preprocessed pixels match what HF image processors produce:
 *
 *  - separable filtering: a horizontal pass (only when the width changes) into an intermediate
 *    uint8 image, then a vertical pass (only when the height changes);
 *  - antialiasing: when downscaling by `scale = in / out > 1`, the filter is stretched by `scale`
 *    (support `support * scale`, argument divided by `scale`);
 *  - per output pixel, the filter taps over the clipped input window are normalised to sum to 1,
 *    then converted to fixed point with 22 fractional bits (round half away from zero);
 *  - each pass accumulates `0.5 * 2^22 + sum(pixel * tap)` in integers and stores
 *    `clip(floor(acc / 2^22), 0, 255)`, so the intermediate image is rounded and clipped to uint8.
 *
 * The bicubic kernel is Keys' cubic with a = -0.5 and support 2; bilinear is the triangle filter
 * with support 1.
 */
import { fail } from '../core/errors.js';
import type { RgbImage } from './image.js';

/** Fractional bits of PIL's fixed-point taps for 8-bit images (32 - 8 - 2). */
const PRECISION_BITS = 22;
const ONE = 1 << PRECISION_BITS;
const HALF = 1 << (PRECISION_BITS - 1);

export type ResampleFilter = 'bicubic' | 'bilinear';

interface Filter {
  support: number;
  weight(x: number): number;
}

const BICUBIC_A = -0.5;

/** Keys' cubic convolution kernel with a = -0.5 (PIL's BICUBIC). */
export function bicubicKernel(x: number): number {
  const t = Math.abs(x);
  const a = BICUBIC_A;
  if (t < 1) return ((a + 2) * t - (a + 3)) * t * t + 1;
  if (t < 2) return (((t - 5) * t + 8) * t - 4) * a;
  return 0;
}

/** Triangle kernel (PIL's BILINEAR). */
export function bilinearKernel(x: number): number {
  const t = Math.abs(x);
  return t < 1 ? 1 - t : 0;
}

const FILTERS: Record<ResampleFilter, Filter> = {
  bicubic: { support: 2, weight: bicubicKernel },
  bilinear: { support: 1, weight: bilinearKernel },
};

/** Fixed-point taps for one axis: for output index i, taps[i*ksize .. +count[i]] apply from start[i]. */
interface AxisCoeffs {
  ksize: number;
  start: Int32Array;
  count: Int32Array;
  taps: Int32Array;
}

/** Taps of a 1-D resample from `inSize` to `outSize` samples (box = whole input), PIL-style. */
export function axisCoefficients(inSize: number, outSize: number, filter: ResampleFilter): AxisCoeffs {
  const f = FILTERS[filter];
  const scale = inSize / outSize;
  const filterScale = Math.max(scale, 1);
  const support = f.support * filterScale;
  const ksize = Math.ceil(support) * 2 + 1;
  const start = new Int32Array(outSize);
  const count = new Int32Array(outSize);
  const taps = new Int32Array(outSize * ksize);
  const w = new Float64Array(ksize);
  const inv = 1 / filterScale;
  for (let i = 0; i < outSize; i++) {
    const center = (i + 0.5) * scale;
    // PIL truncates toward zero with a C cast; both arguments are > -0.5 - support, and the lower
    // bound is clamped to 0 right after, so truncation only matters for positive values.
    let lo = Math.trunc(center - support + 0.5);
    if (lo < 0) lo = 0;
    let hi = Math.trunc(center + support + 0.5);
    if (hi > inSize) hi = inSize;
    const n = hi - lo;
    let sum = 0;
    for (let k = 0; k < n; k++) {
      const v = f.weight((k + lo - center + 0.5) * inv);
      w[k] = v;
      sum += v;
    }
    for (let k = 0; k < n; k++) {
      const v = sum !== 0 ? w[k]! / sum : w[k]!;
      // PIL: (int)(±0.5 + v * 2^22), i.e. round half away from zero.
      taps[i * ksize + k] = v < 0 ? Math.trunc(-0.5 + v * ONE) : Math.trunc(0.5 + v * ONE);
    }
    start[i] = lo;
    count[i] = n;
  }
  return { ksize, start, count, taps };
}

function clip8(acc: number): number {
  const v = Math.floor(acc / ONE);
  return v < 0 ? 0 : v > 255 ? 255 : v;
}

function horizontal(src: Uint8Array, inW: number, h: number, outW: number, c: AxisCoeffs): Uint8Array {
  const out = new Uint8Array(outW * h * 3);
  for (let y = 0; y < h; y++) {
    const row = y * inW * 3;
    const orow = y * outW * 3;
    for (let x = 0; x < outW; x++) {
      const lo = c.start[x]!;
      const n = c.count[x]!;
      const base = x * c.ksize;
      let r = HALF;
      let g = HALF;
      let b = HALF;
      for (let k = 0; k < n; k++) {
        const t = c.taps[base + k]!;
        const p = row + (lo + k) * 3;
        r += src[p]! * t;
        g += src[p + 1]! * t;
        b += src[p + 2]! * t;
      }
      const o = orow + x * 3;
      out[o] = clip8(r);
      out[o + 1] = clip8(g);
      out[o + 2] = clip8(b);
    }
  }
  return out;
}

function vertical(src: Uint8Array, w: number, outH: number, c: AxisCoeffs): Uint8Array {
  const out = new Uint8Array(w * outH * 3);
  const stride = w * 3;
  for (let y = 0; y < outH; y++) {
    const lo = c.start[y]!;
    const n = c.count[y]!;
    const base = y * c.ksize;
    const orow = y * stride;
    for (let x = 0; x < stride; x++) {
      let acc = HALF;
      for (let k = 0; k < n; k++) acc += src[(lo + k) * stride + x]! * c.taps[base + k]!;
      out[orow + x] = clip8(acc);
    }
  }
  return out;
}

function checkTarget(img: RgbImage, width: number, height: number): void {
  if (!Number.isInteger(width) || !Number.isInteger(height) || width < 1 || height < 1) {
    fail('usage', `resize target must be positive integers, got ${width}x${height}`);
  }
  if (width > 16384 || height > 16384 || width * height > 2 ** 26) {
    fail('usage', `resize target ${width}x${height} is too large (max 16384 per side, 2^26 pixels)`);
  }
  if (img.data.length !== img.width * img.height * 3) {
    fail('shape', `RGB image ${img.width}x${img.height} needs ${img.width * img.height * 3} bytes, got ${img.data.length}`);
  }
}

/** Resize with PIL's separable, antialiased filter; returns a copy when the size is unchanged. */
export function resize(img: RgbImage, width: number, height: number, filter: ResampleFilter): RgbImage {
  checkTarget(img, width, height);
  let data = img.data;
  let w = img.width;
  if (width !== img.width) {
    data = horizontal(data, img.width, img.height, width, axisCoefficients(img.width, width, filter));
    w = width;
  }
  if (height !== img.height) {
    data = vertical(data, w, height, axisCoefficients(img.height, height, filter));
  }
  if (data === img.data) data = new Uint8Array(img.data);
  return { width, height, data };
}

/** `Image.resize((width, height), Image.BICUBIC)` for an RGB uint8 image. */
export function resizeBicubic(img: RgbImage, width: number, height: number): RgbImage {
  return resize(img, width, height, 'bicubic');
}

/** `Image.resize((width, height), Image.BILINEAR)` for an RGB uint8 image. */
export function resizeBilinear(img: RgbImage, width: number, height: number): RgbImage {
  return resize(img, width, height, 'bilinear');
}
