/**
 * ggml block formats: dequantization, reference quantizers and a dot product on quantized rows.
 *
 * Byte layouts (all little-endian; `f16` is an IEEE half; element e of a block):
 *
 *   F32, F16, BF16  one element per block, 4 / 2 / 2 bytes.
 *   Q8_0  (34 B / 32)  d:f16, qs:int8[32].                      x = d * qs[e]
 *   Q4_0  (18 B / 32)  d:f16, qs:u8[16].                        x = d * (nib(e) - 8)
 *   Q4_1  (20 B / 32)  d:f16, m:f16, qs:u8[16].                 x = d * nib(e) + m
 *   Q5_0  (22 B / 32)  d:f16, qh:u32, qs:u8[16].                x = d * ((nib(e) | hbit(e) << 4) - 16)
 *   Q5_1  (24 B / 32)  d:f16, m:f16, qh:u32, qs:u8[16].         x = d * (nib(e) | hbit(e) << 4) + m
 *         nib(e) = low nibble of qs[e] for e < 16, high nibble of qs[e - 16] for e >= 16;
 *         hbit(e) = bit e of qh.
 *   Q4_K  (144 B / 256)  d:f16, dmin:f16, scales:u8[12], qs:u8[128].
 *         8 sub-blocks of 32; sub-block j has a 6-bit scale sc[j] and 6-bit min m[j];
 *         x = d * sc[j] * q - dmin * m[j], j = e / 32.
 *         q: element 64c + l (l < 32) is the low nibble of qs[32c + l], element 64c + 32 + l its
 *         high nibble (c = 0..3).
 *   Q5_K  (176 B / 256)  d:f16, dmin:f16, scales:u8[12], qh:u8[32], qs:u8[128]. As Q4_K with
 *         5-bit q: the fifth bit of element 32j + l is bit j of qh[l].
 *         The 12 scale bytes (get_scale_min_k4): for j < 4, sc[j] = scales[j] & 63 and
 *         m[j] = scales[j + 4] & 63; for j >= 4, sc[j] = (scales[j + 4] & 15) | (scales[j - 4] >> 6) << 4
 *         and m[j] = (scales[j + 4] >> 4) | (scales[j] >> 6) << 4.
 *   Q6_K  (210 B / 256)  ql:u8[128], qh:u8[64], scales:int8[16], d:f16.
 *         16 sub-blocks of 16: x = d * scales[e / 16] * (q - 32), q 6 bits. For element
 *         e = 128h + 32k + l (h = 0..1, k = 0..3, l < 32): the low 4 bits are the low nibble (k < 2)
 *         or high nibble (k >= 2) of ql[64h + 32(k & 1) + l], the high 2 bits are bits 2k..2k+1 of
 *         qh[32h + l].
 *
 * dequantize() matches ggml's dequantize_row_* bit for bit: every product of a scale and a quant is
 * exact in float32, so computing in float64 and rounding once on the store into the Float32Array
 * gives ggml's float32 result.
 *
 * quantize() for Q8_0, Q4_0, Q4_1, Q5_0 and Q5_1 follows ggml's quantize_row_*_ref (round to nearest,
 * float32 arithmetic). For the K-quants it is halfpipe's own min/max quantizer (not ggml's iterative
 * search): it picks the scales so that every sub-block's grid covers all of its values (rounding the
 * f16 super-scales and the 6-bit sub-scales up, never down), so each value lands within half a grid
 * step of its original. Quantization rejects NaN and infinities, and scales that overflow f16.
 */
import { bf16BitsToNumber, f16BitsToNumber, numberToBf16Bits, numberToF16Bits } from '../../core/dtype.js';
import { fail } from '../../core/errors.js';
import { GGML_TYPES, type GgmlType, rowBytes } from './types.js';

const LITTLE_ENDIAN = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1;
const fround = Math.fround;

function f16At(b: Uint8Array, o: number): number {
  return f16BitsToNumber(b[o]! | (b[o + 1]! << 8));
}

function u32At(b: Uint8Array, o: number): number {
  return (b[o]! | (b[o + 1]! << 8) | (b[o + 2]! << 16) | (b[o + 3]! << 24)) >>> 0;
}

// Scratch for f32 loads from unaligned bytes.
const f32Scratch = new Float32Array(1);
const f32ScratchBytes = new Uint8Array(f32Scratch.buffer);

function f32At(b: Uint8Array, o: number): number {
  f32ScratchBytes[0] = b[o]!;
  f32ScratchBytes[1] = b[o + 1]!;
  f32ScratchBytes[2] = b[o + 2]!;
  f32ScratchBytes[3] = b[o + 3]!;
  return f32Scratch[0]!;
}

/** 6-bit scale of sub-block j from the 12 K-quant scale bytes at s[o..o+12). */
function kScale(s: Uint8Array, o: number, j: number): number {
  return j < 4 ? s[o + j]! & 63 : (s[o + j + 4]! & 15) | ((s[o + j - 4]! >> 6) << 4);
}

/** 6-bit min of sub-block j from the 12 K-quant scale bytes at s[o..o+12). */
function kMin(s: Uint8Array, o: number, j: number): number {
  return j < 4 ? s[o + j + 4]! & 63 : (s[o + j + 4]! >> 4) | ((s[o + j]! >> 6) << 4);
}

function checkCount(type: GgmlType, count: number): number {
  if (!Object.hasOwn(GGML_TYPES, type)) fail('dtype', `unknown ggml type '${String(type)}'`);
  return rowBytes(type, count);
}

// ---- dequantize ----------------------------------------------------------------------------------

/**
 * Decodes `count` elements of `type` from the start of `bytes` into out[outOffset ...]. count must be
 * a whole number of blocks, `bytes` must hold them, and `out` must have room.
 */
export function dequantize(type: GgmlType, bytes: Uint8Array, count: number, out: Float32Array, outOffset = 0): void {
  const need = checkCount(type, count);
  if (bytes.byteLength < need) fail('shape', `${count} ${type} elements need ${need} bytes, got ${bytes.byteLength}`);
  if (!Number.isSafeInteger(outOffset) || outOffset < 0 || outOffset + count > out.length) {
    fail('shape', `output of ${out.length} floats has no room for ${count} at offset ${outOffset}`);
  }
  const nb = count / GGML_TYPES[type].blockSize;
  const b = bytes;
  let o = outOffset;
  switch (type) {
    case 'F32':
      if (LITTLE_ENDIAN && b.byteOffset % 4 === 0) out.set(new Float32Array(b.buffer, b.byteOffset, count), o);
      else for (let i = 0; i < count; i++) out[o + i] = f32At(b, 4 * i);
      return;
    case 'F16':
      for (let i = 0; i < count; i++) out[o + i] = f16BitsToNumber(b[2 * i]! | (b[2 * i + 1]! << 8));
      return;
    case 'BF16':
      for (let i = 0; i < count; i++) out[o + i] = bf16BitsToNumber(b[2 * i]! | (b[2 * i + 1]! << 8));
      return;
    case 'Q8_0':
      for (let k = 0, p = 0; k < nb; k++, p += 34, o += 32) {
        const d = f16At(b, p);
        for (let j = 0; j < 32; j++) out[o + j] = d * ((b[p + 2 + j]! << 24) >> 24);
      }
      return;
    case 'Q4_0':
      for (let k = 0, p = 0; k < nb; k++, p += 18, o += 32) {
        const d = f16At(b, p);
        for (let j = 0; j < 16; j++) {
          const q = b[p + 2 + j]!;
          out[o + j] = d * ((q & 15) - 8);
          out[o + j + 16] = d * ((q >> 4) - 8);
        }
      }
      return;
    case 'Q4_1':
      for (let k = 0, p = 0; k < nb; k++, p += 20, o += 32) {
        const d = f16At(b, p);
        const m = f16At(b, p + 2);
        for (let j = 0; j < 16; j++) {
          const q = b[p + 4 + j]!;
          out[o + j] = d * (q & 15) + m;
          out[o + j + 16] = d * (q >> 4) + m;
        }
      }
      return;
    case 'Q5_0':
      for (let k = 0, p = 0; k < nb; k++, p += 22, o += 32) {
        const d = f16At(b, p);
        const qh = u32At(b, p + 2);
        for (let j = 0; j < 16; j++) {
          const q = b[p + 6 + j]!;
          out[o + j] = d * (((q & 15) | (((qh >>> j) & 1) << 4)) - 16);
          out[o + j + 16] = d * (((q >> 4) | (((qh >>> (j + 16)) & 1) << 4)) - 16);
        }
      }
      return;
    case 'Q5_1':
      for (let k = 0, p = 0; k < nb; k++, p += 24, o += 32) {
        const d = f16At(b, p);
        const m = f16At(b, p + 2);
        const qh = u32At(b, p + 4);
        for (let j = 0; j < 16; j++) {
          const q = b[p + 8 + j]!;
          out[o + j] = d * ((q & 15) | (((qh >>> j) & 1) << 4)) + m;
          out[o + j + 16] = d * ((q >> 4) | (((qh >>> (j + 16)) & 1) << 4)) + m;
        }
      }
      return;
    case 'Q4_K':
      for (let k = 0, p = 0; k < nb; k++, p += 144, o += 256) {
        const d = f16At(b, p);
        const dmin = f16At(b, p + 2);
        for (let j = 0; j < 8; j++) {
          const ds = d * kScale(b, p + 4, j);
          const dm = dmin * kMin(b, p + 4, j);
          const q0 = p + 16 + 32 * (j >> 1);
          const shift = (j & 1) * 4;
          const oj = o + 32 * j;
          for (let l = 0; l < 32; l++) out[oj + l] = ds * ((b[q0 + l]! >> shift) & 15) - dm;
        }
      }
      return;
    case 'Q5_K':
      for (let k = 0, p = 0; k < nb; k++, p += 176, o += 256) {
        const d = f16At(b, p);
        const dmin = f16At(b, p + 2);
        for (let j = 0; j < 8; j++) {
          const ds = d * kScale(b, p + 4, j);
          const dm = dmin * kMin(b, p + 4, j);
          const q0 = p + 48 + 32 * (j >> 1);
          const shift = (j & 1) * 4;
          const oj = o + 32 * j;
          for (let l = 0; l < 32; l++) {
            const q = ((b[q0 + l]! >> shift) & 15) | (((b[p + 16 + l]! >> j) & 1) << 4);
            out[oj + l] = ds * q - dm;
          }
        }
      }
      return;
    case 'Q6_K':
      for (let k = 0, p = 0; k < nb; k++, p += 210, o += 256) {
        const d = f16At(b, p + 208);
        // element e = 128h + 32k + l: low nibble (k < 2) or high nibble (k >= 2) of ql[64h + 32(k & 1) + l],
        // high bits 2k..2k+1 of qh[32h + l], scale scales[e / 16]
        for (let e0 = 0; e0 < 256; e0 += 32) {
          const h = e0 >> 7;
          const k = (e0 >> 5) & 3;
          const ql = p + 64 * h + 32 * (k & 1);
          const qh = p + 128 + 32 * h;
          const lowShift = k & 2 ? 4 : 0;
          const hiShift = 2 * k;
          const s0 = d * ((b[p + 192 + (e0 >> 4)]! << 24) >> 24);
          const s1 = d * ((b[p + 193 + (e0 >> 4)]! << 24) >> 24);
          for (let l = 0; l < 32; l++) {
            const q = ((b[ql + l]! >> lowShift) & 15) | (((b[qh + l]! >> hiShift) & 3) << 4);
            out[o + e0 + l] = (l < 16 ? s0 : s1) * (q - 32);
          }
        }
      }
      return;
  }
}

/** Dequantizes `count` elements into a new Float32Array. */
export function dequantizeToF32(type: GgmlType, bytes: Uint8Array, count: number): Float32Array {
  const out = new Float32Array(count);
  dequantize(type, bytes, count, out, 0);
  return out;
}

// ---- dot product ---------------------------------------------------------------------------------

const f32Views = new WeakMap<ArrayBufferLike, Float32Array>();

function f32ViewOf(buffer: ArrayBufferLike): Float32Array {
  let v = f32Views.get(buffer);
  if (v === undefined || v.length !== buffer.byteLength >> 2) {
    v = new Float32Array(buffer, 0, buffer.byteLength >> 2);
    f32Views.set(buffer, v);
  }
  return v;
}

/**
 * sum_i dequant(row)[i] * x[i] for the row of n elements of `type` at bytes[byteOffset ...],
 * accumulated in float64 block by block, without allocating. Block scales are factored out of the
 * inner sums, so the result can differ from a dot product with dequantize()'s float32-rounded values
 * by about 2^-24 * sum_i |w_i x_i|.
 */
export function dotQuantRow(type: GgmlType, bytes: Uint8Array, byteOffset: number, x: Float32Array, n: number): number {
  const need = checkCount(type, n);
  if (!Number.isSafeInteger(byteOffset) || byteOffset < 0 || byteOffset + need > bytes.byteLength) {
    fail('shape', `a ${type} row of ${n} elements needs ${need} bytes at offset ${byteOffset}; the buffer has ${bytes.byteLength}`);
  }
  if (x.length < n) fail('shape', `x has ${x.length} elements, the row ${n}`);
  const b = bytes;
  const nb = n / GGML_TYPES[type].blockSize;
  let sum = 0;
  switch (type) {
    case 'F32': {
      const abs = b.byteOffset + byteOffset;
      if (LITTLE_ENDIAN && abs % 4 === 0) {
        const w = f32ViewOf(b.buffer);
        const base = abs >> 2;
        for (let i = 0; i < n; i++) sum += w[base + i]! * x[i]!;
      } else {
        for (let i = 0; i < n; i++) sum += f32At(b, byteOffset + 4 * i) * x[i]!;
      }
      return sum;
    }
    case 'F16':
      for (let i = 0, p = byteOffset; i < n; i++, p += 2) sum += f16BitsToNumber(b[p]! | (b[p + 1]! << 8)) * x[i]!;
      return sum;
    case 'BF16':
      for (let i = 0, p = byteOffset; i < n; i++, p += 2) sum += bf16BitsToNumber(b[p]! | (b[p + 1]! << 8)) * x[i]!;
      return sum;
    case 'Q8_0':
      for (let k = 0, p = byteOffset, xi = 0; k < nb; k++, p += 34, xi += 32) {
        let s = 0;
        for (let j = 0; j < 32; j++) s += ((b[p + 2 + j]! << 24) >> 24) * x[xi + j]!;
        sum += f16At(b, p) * s;
      }
      return sum;
    case 'Q4_0':
      for (let k = 0, p = byteOffset, xi = 0; k < nb; k++, p += 18, xi += 32) {
        let s = 0;
        for (let j = 0; j < 16; j++) {
          const q = b[p + 2 + j]!;
          s += ((q & 15) - 8) * x[xi + j]! + ((q >> 4) - 8) * x[xi + j + 16]!;
        }
        sum += f16At(b, p) * s;
      }
      return sum;
    case 'Q4_1':
      for (let k = 0, p = byteOffset, xi = 0; k < nb; k++, p += 20, xi += 32) {
        let s = 0;
        let sx = 0;
        for (let j = 0; j < 16; j++) {
          const q = b[p + 4 + j]!;
          const x0 = x[xi + j]!;
          const x1 = x[xi + j + 16]!;
          s += (q & 15) * x0 + (q >> 4) * x1;
          sx += x0 + x1;
        }
        sum += f16At(b, p) * s + f16At(b, p + 2) * sx;
      }
      return sum;
    case 'Q5_0':
      for (let k = 0, p = byteOffset, xi = 0; k < nb; k++, p += 22, xi += 32) {
        const qh = u32At(b, p + 2);
        let s = 0;
        for (let j = 0; j < 16; j++) {
          const q = b[p + 6 + j]!;
          s += (((q & 15) | (((qh >>> j) & 1) << 4)) - 16) * x[xi + j]!;
          s += (((q >> 4) | (((qh >>> (j + 16)) & 1) << 4)) - 16) * x[xi + j + 16]!;
        }
        sum += f16At(b, p) * s;
      }
      return sum;
    case 'Q5_1':
      for (let k = 0, p = byteOffset, xi = 0; k < nb; k++, p += 24, xi += 32) {
        const qh = u32At(b, p + 4);
        let s = 0;
        let sx = 0;
        for (let j = 0; j < 16; j++) {
          const q = b[p + 8 + j]!;
          const x0 = x[xi + j]!;
          const x1 = x[xi + j + 16]!;
          s += ((q & 15) | (((qh >>> j) & 1) << 4)) * x0 + ((q >> 4) | (((qh >>> (j + 16)) & 1) << 4)) * x1;
          sx += x0 + x1;
        }
        sum += f16At(b, p) * s + f16At(b, p + 2) * sx;
      }
      return sum;
    case 'Q4_K':
      for (let k = 0, p = byteOffset, xi = 0; k < nb; k++, p += 144, xi += 256) {
        const d = f16At(b, p);
        const dmin = f16At(b, p + 2);
        for (let j = 0; j < 8; j++) {
          const q0 = p + 16 + 32 * (j >> 1);
          const shift = (j & 1) * 4;
          const xj = xi + 32 * j;
          let s = 0;
          let sx = 0;
          for (let l = 0; l < 32; l++) {
            const xv = x[xj + l]!;
            s += ((b[q0 + l]! >> shift) & 15) * xv;
            sx += xv;
          }
          sum += d * kScale(b, p + 4, j) * s - dmin * kMin(b, p + 4, j) * sx;
        }
      }
      return sum;
    case 'Q5_K':
      for (let k = 0, p = byteOffset, xi = 0; k < nb; k++, p += 176, xi += 256) {
        const d = f16At(b, p);
        const dmin = f16At(b, p + 2);
        for (let j = 0; j < 8; j++) {
          const q0 = p + 48 + 32 * (j >> 1);
          const shift = (j & 1) * 4;
          const xj = xi + 32 * j;
          let s = 0;
          let sx = 0;
          for (let l = 0; l < 32; l++) {
            const xv = x[xj + l]!;
            s += (((b[q0 + l]! >> shift) & 15) | (((b[p + 16 + l]! >> j) & 1) << 4)) * xv;
            sx += xv;
          }
          sum += d * kScale(b, p + 4, j) * s - dmin * kMin(b, p + 4, j) * sx;
        }
      }
      return sum;
    case 'Q6_K':
      for (let k = 0, p = byteOffset, xi = 0; k < nb; k++, p += 210, xi += 256) {
        const d = f16At(b, p + 208);
        for (let h = 0; h < 2; h++) {
          const ql = p + 64 * h;
          const qh = p + 128 + 32 * h;
          const xh = xi + 128 * h;
          // 8 sub-blocks of 16 in this half: (k, l >= 16) -> scale index 8h + 2k + (l >> 4).
          for (let g = 0; g < 8; g++) {
            const kk = g >> 1;
            const l0 = (g & 1) * 16;
            const lowShift = kk & 2 ? 4 : 0;
            const qlk = ql + 32 * (kk & 1);
            const hiShift = 2 * kk;
            const xg = xh + 32 * kk;
            let s = 0;
            for (let l = l0; l < l0 + 16; l++) {
              const q = ((b[qlk + l]! >> lowShift) & 15) | (((b[qh + l]! >> hiShift) & 3) << 4);
              s += (q - 32) * x[xg + l]!;
            }
            sum += d * ((b[p + 192 + 8 * h + g]! << 24) >> 24) * s;
          }
        }
      }
      return sum;
  }
  return fail('dtype', `unknown ggml type '${String(type)}'`);
}

// ---- quantize ------------------------------------------------------------------------------------

/** Round half away from zero (C roundf). */
function roundf(v: number): number {
  return v < 0 ? -Math.floor(-v + 0.5) : Math.floor(v + 0.5);
}

function setF16(out: Uint8Array, o: number, bits: number): void {
  out[o] = bits & 0xff;
  out[o + 1] = bits >> 8;
}

/** f16 bits of a scale, rounded to nearest; an overflow to infinity is an error. */
function scaleBits(type: GgmlType, block: number, v: number): number {
  const bits = numberToF16Bits(v);
  if ((bits & 0x7c00) === 0x7c00) fail('dtype', `${type} block ${block}: scale ${v} does not fit in f16 (values too large)`);
  return bits;
}

/** f16 bits of the smallest f16 >= v (v >= 0); an overflow is an error. */
function scaleBitsUp(type: GgmlType, block: number, v: number): number {
  let bits = numberToF16Bits(v);
  if (f16BitsToNumber(bits) < v) bits += 1;
  if ((bits & 0x7c00) === 0x7c00) fail('dtype', `${type} block ${block}: scale ${v} does not fit in f16 (values too large)`);
  return bits;
}

/**
 * Quantizes `values` (a whole number of blocks) to a new array in ggml's layout for `type`.
 * Float types round each value once (to nearest even); see the module comment for the others.
 */
export function quantize(type: GgmlType, values: Float32Array): Uint8Array {
  const n = values.length;
  const out = new Uint8Array(checkCount(type, n));
  const nb = n / GGML_TYPES[type].blockSize;
  switch (type) {
    case 'F32':
      if (LITTLE_ENDIAN) out.set(new Uint8Array(values.buffer, values.byteOffset, 4 * n));
      else for (let i = 0; i < n; i++) new DataView(out.buffer).setFloat32(4 * i, values[i]!, true);
      return out;
    case 'F16':
      for (let i = 0; i < n; i++) setF16(out, 2 * i, numberToF16Bits(values[i]!));
      return out;
    case 'BF16':
      for (let i = 0; i < n; i++) setF16(out, 2 * i, numberToBf16Bits(values[i]!));
      return out;
  }
  for (let i = 0; i < n; i++) {
    if (!Number.isFinite(values[i]!)) fail('dtype', `cannot quantize ${values[i]} (element ${i}) to ${type}`);
  }
  switch (type) {
    case 'Q8_0':
      for (let k = 0; k < nb; k++) quantizeQ8_0(values, 32 * k, out, 34 * k, k);
      break;
    case 'Q4_0':
    case 'Q5_0':
      for (let k = 0; k < nb; k++) quantizeQx_0(type, values, 32 * k, out, (type === 'Q4_0' ? 18 : 22) * k, k);
      break;
    case 'Q4_1':
    case 'Q5_1':
      for (let k = 0; k < nb; k++) quantizeQx_1(type, values, 32 * k, out, (type === 'Q4_1' ? 20 : 24) * k, k);
      break;
    case 'Q4_K':
    case 'Q5_K':
      for (let k = 0; k < nb; k++) quantizeQxK(type, values, 256 * k, out, (type === 'Q4_K' ? 144 : 176) * k, k);
      break;
    case 'Q6_K':
      for (let k = 0; k < nb; k++) quantizeQ6K(values, 256 * k, out, 210 * k, k);
      break;
  }
  return out;
}

// ggml's reference quantizers, in float32 arithmetic (fround after each operation).

function quantizeQ8_0(x: Float32Array, xo: number, out: Uint8Array, o: number, block: number): void {
  let amax = 0;
  for (let j = 0; j < 32; j++) amax = Math.max(amax, Math.abs(x[xo + j]!));
  const d = fround(amax / 127);
  const id = d !== 0 ? fround(1 / d) : 0;
  setF16(out, o, scaleBits('Q8_0', block, d));
  for (let j = 0; j < 32; j++) {
    const q = Math.max(-127, Math.min(127, roundf(fround(x[xo + j]! * id))));
    out[o + 2 + j] = q & 0xff;
  }
}

/** Q4_0 / Q5_0: d = (the value of largest magnitude) / -2^(bits-1), quants biased by 2^(bits-1). */
function quantizeQx_0(type: 'Q4_0' | 'Q5_0', x: Float32Array, xo: number, out: Uint8Array, o: number, block: number): void {
  const half = type === 'Q4_0' ? 8 : 16;
  const qmax = 2 * half - 1;
  let amax = 0;
  let max = 0;
  for (let j = 0; j < 32; j++) {
    const v = x[xo + j]!;
    if (amax < Math.abs(v)) {
      amax = Math.abs(v);
      max = v;
    }
  }
  const d = fround(max / -half);
  const id = d !== 0 ? fround(1 / d) : 0;
  setF16(out, o, scaleBits(type, block, d));
  const bias = half + 0.5;
  const q = (j: number): number => Math.max(0, Math.min(qmax, Math.trunc(fround(fround(x[xo + j]! * id) + bias))));
  if (type === 'Q4_0') {
    for (let j = 0; j < 16; j++) out[o + 2 + j] = q(j) | (q(j + 16) << 4);
    return;
  }
  let qh = 0;
  for (let j = 0; j < 16; j++) {
    const q0 = q(j);
    const q1 = q(j + 16);
    out[o + 6 + j] = (q0 & 15) | ((q1 & 15) << 4);
    qh |= ((q0 >> 4) << j) | ((q1 >> 4) << (j + 16));
  }
  writeU32(out, o + 2, qh >>> 0);
}

/** Q4_1 / Q5_1: d = (max - min) / (2^bits - 1), m = min. */
function quantizeQx_1(type: 'Q4_1' | 'Q5_1', x: Float32Array, xo: number, out: Uint8Array, o: number, block: number): void {
  const qmax = type === 'Q4_1' ? 15 : 31;
  let min = Infinity;
  let max = -Infinity;
  for (let j = 0; j < 32; j++) {
    const v = x[xo + j]!;
    if (v < min) min = v;
    if (v > max) max = v;
  }
  const d = fround(fround(max - min) / qmax);
  const id = d !== 0 ? fround(1 / d) : 0;
  setF16(out, o, scaleBits(type, block, d));
  setF16(out, o + 2, scaleBits(type, block, min));
  const q = (j: number): number => Math.max(0, Math.min(qmax, Math.trunc(fround(fround(fround(x[xo + j]! - min) * id) + 0.5))));
  if (type === 'Q4_1') {
    for (let j = 0; j < 16; j++) out[o + 4 + j] = q(j) | (q(j + 16) << 4);
    return;
  }
  let qh = 0;
  for (let j = 0; j < 16; j++) {
    const q0 = q(j);
    const q1 = q(j + 16);
    out[o + 8 + j] = (q0 & 15) | ((q1 & 15) << 4);
    qh |= ((q0 >> 4) << j) | ((q1 >> 4) << (j + 16));
  }
  writeU32(out, o + 4, qh >>> 0);
}

function writeU32(out: Uint8Array, o: number, v: number): void {
  out[o] = v & 0xff;
  out[o + 1] = (v >>> 8) & 0xff;
  out[o + 2] = (v >>> 16) & 0xff;
  out[o + 3] = v >>> 24;
}

// halfpipe's K-quant quantizers: grids that cover every value (see the module comment).

const kSc = new Float64Array(16);
const kMn = new Float64Array(16);
const kLs = new Uint8Array(16);
const kLm = new Uint8Array(16);

/** Q4_K / Q5_K: x = d*sc[j]*q - dmin*m[j] with q in 0..qmax. */
function quantizeQxK(type: 'Q4_K' | 'Q5_K', x: Float32Array, xo: number, out: Uint8Array, o: number, block: number): void {
  const qmax = type === 'Q4_K' ? 15 : 31;
  // Per sub-block: the offset mn = -min(0, lowest value) and the highest value.
  let maxMn = 0;
  for (let j = 0; j < 8; j++) {
    let lo = 0;
    let hi = -Infinity;
    for (let l = 0; l < 32; l++) {
      const v = x[xo + 32 * j + l]!;
      if (v < lo) lo = v;
      if (v > hi) hi = v;
    }
    kMn[j] = -lo;
    kSc[j] = hi; // for now: the highest value
    maxMn = Math.max(maxMn, -lo);
  }
  // Mins first, rounded up so that -M[j] <= every value; then the steps that reach the top.
  const dminBits = scaleBitsUp(type, block, maxMn / 63);
  const dmin = f16BitsToNumber(dminBits);
  let maxStep = 0;
  for (let j = 0; j < 8; j++) {
    kLm[j] = dmin > 0 ? Math.min(63, Math.ceil(kMn[j]! / dmin)) : 0;
    const M = dmin * kLm[j]!;
    kSc[j] = Math.max(0, (kSc[j]! + M) / qmax); // the step that puts the highest value on q = qmax
    maxStep = Math.max(maxStep, kSc[j]!);
  }
  const dBits = scaleBitsUp(type, block, maxStep / 63);
  const d = f16BitsToNumber(dBits);
  for (let j = 0; j < 8; j++) kLs[j] = d > 0 ? Math.min(63, Math.ceil(kSc[j]! / d)) : 0;

  setF16(out, o, dBits);
  setF16(out, o + 2, dminBits);
  // 6-bit scales and mins into 12 bytes (the inverse of get_scale_min_k4).
  const s = o + 4;
  for (let j = 0; j < 4; j++) {
    out[s + j] = (kLs[j]! & 63) | ((kLs[j + 4]! >> 4) << 6);
    out[s + j + 4] = (kLm[j]! & 63) | ((kLm[j + 4]! >> 4) << 6);
    out[s + j + 8] = (kLs[j + 4]! & 15) | ((kLm[j + 4]! & 15) << 4);
  }
  const qs = type === 'Q4_K' ? o + 16 : o + 48;
  const qh = o + 16; // Q5_K only
  for (let j = 0; j < 8; j++) {
    const step = d * kLs[j]!;
    const M = dmin * kLm[j]!;
    const shift = (j & 1) * 4;
    const q0 = qs + 32 * (j >> 1);
    for (let l = 0; l < 32; l++) {
      const v = x[xo + 32 * j + l]!;
      const q = step > 0 ? Math.max(0, Math.min(qmax, Math.round((v + M) / step))) : 0;
      out[q0 + l]! |= (q & 15) << shift;
      if (qmax === 31) out[qh + l]! |= (q >> 4) << j;
    }
  }
}

/** Q6_K: x = d*scales[j]*(q - 32) with q - 32 in -32..31 and scales in 0..127. */
function quantizeQ6K(x: Float32Array, xo: number, out: Uint8Array, o: number, block: number): void {
  let maxStep = 0;
  for (let j = 0; j < 16; j++) {
    let lo = 0;
    let hi = 0;
    for (let l = 0; l < 16; l++) {
      const v = x[xo + 16 * j + l]!;
      if (v < lo) lo = v;
      if (v > hi) hi = v;
    }
    kSc[j] = Math.max(-lo / 32, hi / 31); // the smallest step whose grid -32..31 covers [lo, hi]
    maxStep = Math.max(maxStep, kSc[j]!);
  }
  const dBits = scaleBitsUp('Q6_K', block, maxStep / 127);
  const d = f16BitsToNumber(dBits);
  setF16(out, o + 208, dBits);
  for (let j = 0; j < 16; j++) {
    const sc = d > 0 ? Math.min(127, Math.ceil(kSc[j]! / d)) : 0;
    out[o + 192 + j] = sc;
    const step = d * sc;
    for (let l = 0; l < 16; l++) {
      const e = 16 * j + l;
      const v = x[xo + e]!;
      const q = (step > 0 ? Math.max(-32, Math.min(31, Math.round(v / step))) : 0) + 32;
      const h = e >> 7;
      const k = (e >> 5) & 3;
      const ll = e & 31;
      out[o + 64 * h + 32 * (k & 1) + ll]! |= (q & 15) << (k & 2 ? 4 : 0);
      out[o + 128 + 32 * h + ll]! |= (q >> 4) << (2 * k);
    }
  }
}
