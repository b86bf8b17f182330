import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { f16BitsToNumber, roundTo } from '../../core/dtype.js';
import { HalfpipeError } from '../../core/errors.js';
import { dequantize, dequantizeToF32, dotQuantRow, quantize } from './quants.js';
import { GGML_TYPES, type GgmlType, rowBytes, SUPPORTED_GGML_TYPES } from './types.js';
import { xorshift } from '../../testing/helpers.js';

// ---- helpers -----------------------------------------------------------------------------------


/** f16 bits of a value that is exactly representable in f16 (the test's scales are powers of two etc.). */
function f16(v: number): [number, number] {
  // Written out rather than calling the converter under test: sign, 5-bit exponent, 10-bit mantissa.
  if (v === 0) return [0, 0];
  const sign = v < 0 ? 0x8000 : 0;
  const a = Math.abs(v);
  const e = Math.floor(Math.log2(a));
  const mant = (a / 2 ** e - 1) * 1024;
  assert.ok(e >= -14 && e <= 15 && Number.isInteger(mant), `${v} is not a normal f16`);
  const bits = sign | ((e + 15) << 10) | mant;
  return [bits & 0xff, bits >> 8];
}

/** n pseudo-random integers in 0..m-1, each value used at least once when n >= m (so every bit is exercised). */
function randomInts(n: number, m: number, seed: number): number[] {
  const r = xorshift(seed);
  const v = Array.from({ length: n }, (_, i) => (i < m && n >= m ? i : r() % m));
  for (let i = n - 1; i > 0; i--) {
    const j = r() % (i + 1);
    [v[i], v[j]] = [v[j]!, v[i]!];
  }
  return v;
}

function assertExact(actual: Float32Array, expected: number[], what: string): void {
  assert.equal(actual.length, expected.length);
  for (let i = 0; i < expected.length; i++) {
    assert.ok(Math.fround(expected[i]!) === expected[i], `${what}: expected value ${i} is not exact in f32`);
    if (actual[i] !== expected[i]) assert.fail(`${what}: element ${i} is ${actual[i]}, spec says ${expected[i]}`);
  }
}

// ---- hand-built blocks, decoded from the format's specification --------------------------------

test('F32, F16, BF16: little-endian values', () => {
  const f32 = new Uint8Array([0x00, 0x00, 0x80, 0x3f, 0x00, 0x00, 0x00, 0xc0]); // 1.0, -2.0
  assertExact(dequantizeToF32('F32', f32, 2), [1, -2], 'F32');
  assertExact(dequantizeToF32('F32', new Uint8Array([9, ...f32]).subarray(1), 2), [1, -2], 'F32 unaligned');
  const f16b = new Uint8Array([0x00, 0x3c, 0x00, 0xc0, 0x01, 0x00, 0xff, 0x7b]); // 1, -2, 2^-24, 65504
  assertExact(dequantizeToF32('F16', f16b, 4), [1, -2, 2 ** -24, 65504], 'F16');
  const bf16 = new Uint8Array([0x80, 0x3f, 0xc0, 0xbf, 0x49, 0x40]); // 1, -1.5, 3.140625
  assertExact(dequantizeToF32('BF16', bf16, 3), [1, -1.5, 3.140625], 'BF16');
});

test('Q8_0: d:f16 then 32 int8 quants; x = d * q', () => {
  const d = 0.5;
  const qs = randomInts(32, 256, 8).map((v) => v - 128);
  qs[0] = 127;
  qs[1] = -128;
  const block = new Uint8Array([...f16(d), ...qs.map((q) => q & 0xff)]);
  assert.equal(block.length, 34);
  assertExact(dequantizeToF32('Q8_0', block, 32), qs.map((q) => d * q), 'Q8_0');
});

/** 32 quants packed as ggml's Q4/Q5 "_0/_1" formats do: element j < 16 in the low nibble of qs[j], element j + 16 in its high nibble. */
function packNibbles(q: number[]): number[] {
  const qs: number[] = [];
  for (let j = 0; j < 16; j++) qs.push((q[j]! & 0xf) | ((q[j + 16]! & 0xf) << 4));
  return qs;
}

/** The fifth bits of 32 quants as a little-endian u32: bit j holds element j's. */
function packHighBits(q: number[]): number[] {
  let qh = 0;
  for (let j = 0; j < 32; j++) if (q[j]! & 0x10) qh += 2 ** j;
  return [qh & 0xff, (qh >>> 8) & 0xff, (qh >>> 16) & 0xff, (qh >>> 24) & 0xff];
}

test('Q4_0: d, 16 bytes of nibbles; x = d * (q - 8)', () => {
  const d = 0.25;
  const q = randomInts(32, 16, 1);
  const block = new Uint8Array([...f16(d), ...packNibbles(q)]);
  assert.equal(block.length, 18);
  assertExact(dequantizeToF32('Q4_0', block, 32), q.map((v) => d * (v - 8)), 'Q4_0');
  // a literal block: d = 1, qs[0] = 0x2f -> element 0 = 15 - 8 = 7, element 16 = 2 - 8 = -6
  const lit = new Uint8Array(18);
  lit.set([0x00, 0x3c, 0x2f]);
  const out = dequantizeToF32('Q4_0', lit, 32);
  assert.equal(out[0], 7);
  assert.equal(out[16], -6);
  assert.equal(out[1], -8);
});

test('Q4_1: d, m, nibbles; x = d * q + m', () => {
  const d = 0.125;
  const m = -1.5;
  const q = randomInts(32, 16, 2);
  const block = new Uint8Array([...f16(d), ...f16(m), ...packNibbles(q)]);
  assert.equal(block.length, 20);
  assertExact(dequantizeToF32('Q4_1', block, 32), q.map((v) => d * v + m), 'Q4_1');
});

test('Q5_0: d, qh (u32: bit j = fifth bit of element j), nibbles; x = d * (q - 16)', () => {
  const d = 2 ** -3;
  const q = randomInts(32, 32, 3);
  const block = new Uint8Array([...f16(d), ...packHighBits(q), ...packNibbles(q)]);
  assert.equal(block.length, 22);
  assertExact(dequantizeToF32('Q5_0', block, 32), q.map((v) => d * (v - 16)), 'Q5_0');
});

test('Q5_1: d, m, qh, nibbles; x = d * q + m', () => {
  const d = 0.75;
  const m = 3;
  const q = randomInts(32, 32, 4);
  const block = new Uint8Array([...f16(d), ...f16(m), ...packHighBits(q), ...packNibbles(q)]);
  assert.equal(block.length, 24);
  assertExact(dequantizeToF32('Q5_1', block, 32), q.map((v) => d * v + m), 'Q5_1');
});

/**
 * The 12 bytes of K-quant 6-bit scales and mins, as ggml's block_q4_K/q5_K comments and
 * get_scale_min_k4 describe them:
 *   bytes 0..3:  low 6 bits = sc[0..3], top 2 bits = bits 4..5 of sc[4..7]
 *   bytes 4..7:  low 6 bits = m[0..3],  top 2 bits = bits 4..5 of m[4..7]
 *   bytes 8..11: low 4 bits = bits 0..3 of sc[4..7], high 4 bits = bits 0..3 of m[4..7]
 */
function packKScales(sc: number[], m: number[]): number[] {
  const s = new Array<number>(12).fill(0);
  for (let j = 0; j < 4; j++) {
    s[j] = sc[j]! | ((sc[j + 4]! >> 4) << 6);
    s[j + 4] = m[j]! | ((m[j + 4]! >> 4) << 6);
    s[j + 8] = (sc[j + 4]! & 0xf) | ((m[j + 4]! & 0xf) << 4);
  }
  return s;
}

// Scales and mins that use all 6 bits (values >= 16 exercise the split high bits).
const K_SC = [1, 17, 33, 63, 5, 48, 31, 60];
const K_M = [0, 63, 20, 45, 16, 7, 62, 33];

test('Q4_K: d, dmin, 12 bytes of 6-bit scales/mins, 128 bytes of nibbles; x = d*sc[j]*q - dmin*m[j]', () => {
  const d = 2 ** -4;
  const dmin = 2 ** -6;
  const q = randomInts(256, 16, 5);
  // Nibbles, as ggml's dequantize_row_q4_K loop reads them: each 64-element chunk uses 32 bytes;
  // its first 32 elements are the low nibbles, the next 32 the high nibbles.
  const qs: number[] = [];
  for (let chunk = 0; chunk < 4; chunk++) {
    for (let l = 0; l < 32; l++) qs.push(q[64 * chunk + l]! | (q[64 * chunk + 32 + l]! << 4));
  }
  const block = new Uint8Array([...f16(d), ...f16(dmin), ...packKScales(K_SC, K_M), ...qs]);
  assert.equal(block.length, 144);
  const expected = q.map((v, e) => d * K_SC[e >> 5]! * v - dmin * K_M[e >> 5]!);
  assertExact(dequantizeToF32('Q4_K', block, 256), expected, 'Q4_K');
});

test('Q5_K: d, dmin, scales, qh[32], nibbles; the fifth bit of element 32j + l is bit j of qh[l]', () => {
  const d = 2 ** -5;
  const dmin = 0.5;
  const q = randomInts(256, 32, 6);
  const qh = new Array<number>(32).fill(0);
  const qs: number[] = [];
  for (let chunk = 0; chunk < 4; chunk++) {
    for (let l = 0; l < 32; l++) {
      const lo = q[64 * chunk + l]!;
      const hi = q[64 * chunk + 32 + l]!;
      qs.push((lo & 0xf) | ((hi & 0xf) << 4));
      qh[l] |= ((lo >> 4) << (2 * chunk)) | ((hi >> 4) << (2 * chunk + 1));
    }
  }
  const block = new Uint8Array([...f16(d), ...f16(dmin), ...packKScales(K_SC, K_M), ...qh, ...qs]);
  assert.equal(block.length, 176);
  const expected = q.map((v, e) => d * K_SC[e >> 5]! * v - dmin * K_M[e >> 5]!);
  assertExact(dequantizeToF32('Q5_K', block, 256), expected, 'Q5_K');
});

test('Q6_K: ql[128], qh[64], int8 scales[16], d; x = d * scales[e/16] * (q - 32)', () => {
  const d = 2 ** -5;
  const sc = [1, -1, 127, -128, 5, -77, 33, 0, 64, -3, 100, 9, -50, 2, 17, -128];
  const q = randomInts(256, 64, 7);
  // As ggml's dequantize_row_q6_K loop reads them: per 128-element half, for l in 0..31,
  // element l      <- low nibble of ql[l],      bits 0-1 of qh[l]
  // element l + 32 <- low nibble of ql[l + 32], bits 2-3 of qh[l]
  // element l + 64 <- high nibble of ql[l],     bits 4-5 of qh[l]
  // element l + 96 <- high nibble of ql[l + 32], bits 6-7 of qh[l]
  const ql = new Array<number>(128).fill(0);
  const qh = new Array<number>(64).fill(0);
  for (let half = 0; half < 2; half++) {
    const y = 128 * half;
    for (let l = 0; l < 32; l++) {
      const [q1, q2, q3, q4] = [q[y + l]!, q[y + l + 32]!, q[y + l + 64]!, q[y + l + 96]!];
      ql[64 * half + l] = (q1 & 0xf) | ((q3 & 0xf) << 4);
      ql[64 * half + l + 32] = (q2 & 0xf) | ((q4 & 0xf) << 4);
      qh[32 * half + l] = (q1 >> 4) | ((q2 >> 4) << 2) | ((q3 >> 4) << 4) | ((q4 >> 4) << 6);
    }
  }
  const block = new Uint8Array([...ql, ...qh, ...sc.map((s) => s & 0xff), ...f16(d)]);
  assert.equal(block.length, 210);
  const expected = q.map((v, e) => d * sc[e >> 4]! * (v - 32));
  assertExact(dequantizeToF32('Q6_K', block, 256), expected, 'Q6_K');
});

// ---- golden values from ggml itself ---------------------------------------------------------------

// FNV-1a of the float32 output of ggml's dequantize_row_* (libggml-base from node-llama-cpp 3.21.1,
// called through ctypes) on the pseudo-random blocks of goldenBlocks(), and of ggml's
// quantize_row_*_ref / ggml_fp32_to_{fp16,bf16}_row on goldenInput(). Matching them means matching
// ggml bit for bit.
const GGML_GOLDEN: Record<GgmlType, { dequant: number; quant?: number }> = {
  F32: { dequant: 0x5fa25343 },
  F16: { dequant: 0xffa4232a, quant: 0x18ab1117 },
  BF16: { dequant: 0x9c88d85b, quant: 0x48b286e6 },
  Q8_0: { dequant: 0xfde8097d, quant: 0xa1fa7751 },
  Q4_0: { dequant: 0x27f6e3af, quant: 0x4eabe9fd },
  Q4_1: { dequant: 0x42918dd1, quant: 0x622aa700 },
  Q5_0: { dequant: 0xb0f53551, quant: 0x3cfca79b },
  Q5_1: { dequant: 0x08601832, quant: 0x5bffbe4b },
  Q4_K: { dequant: 0xb32fb658 },
  Q5_K: { dequant: 0x9b52ad32 },
  Q6_K: { dequant: 0xa6453609 },
};

const F16_FIELDS: Partial<Record<GgmlType, number[]>> = {
  Q8_0: [0],
  Q4_0: [0],
  Q4_1: [0, 2],
  Q5_0: [0],
  Q5_1: [0, 2],
  Q4_K: [0, 2],
  Q5_K: [0, 2],
  Q6_K: [208],
};

/** Random bytes, with every f16/bf16/f32 field's exponent kept finite (scales between 1/8 and 1/2). */
function goldenBlocks(type: GgmlType, n: number): Uint8Array {
  const r = xorshift(1000 + GGML_TYPES[type].id);
  const b = new Uint8Array(rowBytes(type, n));
  for (let i = 0; i < b.length; i++) b[i] = r() & 0xff;
  const ts = GGML_TYPES[type].typeSize;
  if (type === 'F16' || type === 'BF16') for (let i = 1; i < b.length; i += 2) b[i]! &= 0xbf;
  if (type === 'F32') for (let i = 3; i < b.length; i += 4) b[i]! &= 0xbf;
  for (const f of F16_FIELDS[type] ?? []) for (let p = 0; p < b.length; p += ts) b[p + f + 1] = (b[p + f + 1]! & 0x83) | 0x30;
  return b;
}

function goldenInput(n: number): Float32Array {
  const r = xorshift(77);
  const x = new Float32Array(n);
  for (let i = 0; i < n; i++) x[i] = ((r() / 2 ** 32) * 2 - 1) * 2 ** (((i >> 5) % 7) - 3);
  return x;
}

function fnv1a(bytes: Uint8Array): number {
  let h = 0x811c9dc5;
  for (const v of bytes) h = Math.imul(h ^ v, 0x01000193) >>> 0;
  return h;
}

test('dequantize matches ggml bit for bit; quantize matches ggml reference quantizers', () => {
  for (const type of SUPPORTED_GGML_TYPES) {
    const g = GGML_GOLDEN[type];
    const out = dequantizeToF32(type, goldenBlocks(type, 1024), 1024);
    assert.equal(fnv1a(new Uint8Array(out.buffer)), g.dequant, `${type} dequantize differs from ggml`);
    if (g.quant !== undefined) assert.equal(fnv1a(quantize(type, goldenInput(1024))), g.quant, `${type} quantize differs from ggml`);
  }
});

// ---- quantize -> dequantize round trips ------------------------------------------------------------

type Kind = 'uniform' | 'positive' | 'negative' | 'zeros' | 'constant' | 'outlier' | 'mixed-scales';

function makeValues(type: GgmlType, blocks: number, seed: number, exp: number, kind: Kind): Float32Array {
  const n = blocks * GGML_TYPES[type].blockSize;
  const r = xorshift(seed);
  const u = (): number => r() / 2 ** 32;
  const x = new Float32Array(n);
  const scale = 2 ** exp;
  for (let i = 0; i < n; i++) {
    switch (kind) {
      case 'uniform':
        x[i] = (u() * 2 - 1) * scale;
        break;
      case 'positive':
        x[i] = (0.5 + u()) * scale;
        break;
      case 'negative':
        x[i] = -(0.5 + u()) * scale;
        break;
      case 'zeros':
        x[i] = 0;
        break;
      case 'constant':
        x[i] = -0.7 * scale;
        break;
      case 'outlier':
        x[i] = (u() * 2 - 1) * scale * (i % 97 === 5 ? 50 : 0.1);
        break;
      case 'mixed-scales':
        x[i] = (u() * 2 - 1) * scale * 2 ** ((i >> 4) % 6 - 3);
        break;
    }
  }
  return x;
}

const f16Of = (b: Uint8Array, o: number): number => f16BitsToNumber(b[o]! | (b[o + 1]! << 8));

/** The largest error the format allows for each element, from the block's own stored scales. */
function errorBounds(type: GgmlType, q: Uint8Array, n: number): Float64Array {
  const bound = new Float64Array(n);
  const bs = GGML_TYPES[type].blockSize;
  const ts = GGML_TYPES[type].typeSize;
  // Scale rounding to f16 (relative 2^-11, or 2^-25 absolute when subnormal) moves q*d by up to qmax times that.
  const f16Err = (d: number): number => Math.max(Math.abs(d) * 2 ** -11, 2 ** -25);
  for (let b = 0; b < n / bs; b++) {
    const p = b * ts;
    for (let i = 0; i < bs; i++) {
      const e = b * bs + i;
      switch (type) {
        case 'Q8_0': // nearest of d*q, q in -127..127 covering [-amax, amax]
          bound[e] = 0.5 * Math.abs(f16Of(q, p)) + 128 * f16Err(f16Of(q, p));
          break;
        case 'Q4_0': // d = max/-8: the far end of the other sign can be a whole step away (q clipped to 15)
          bound[e] = Math.abs(f16Of(q, p)) + 9 * f16Err(f16Of(q, p));
          break;
        case 'Q5_0':
          bound[e] = Math.abs(f16Of(q, p)) + 17 * f16Err(f16Of(q, p));
          break;
        case 'Q4_1': // nearest on min + d*q, q in 0..15 covering [min, max]; m = f16(min)
          bound[e] = 0.5 * f16Of(q, p) + 16 * f16Err(f16Of(q, p)) + f16Err(f16Of(q, p + 2));
          break;
        case 'Q5_1':
          bound[e] = 0.5 * f16Of(q, p) + 32 * f16Err(f16Of(q, p)) + f16Err(f16Of(q, p + 2));
          break;
        case 'Q4_K':
        case 'Q5_K': {
          // halfpipe's K-quants cover every sub-block: within half a step d*sc[j].
          const j = i >> 5;
          const s = q.subarray(p + 4, p + 16);
          const sc = j < 4 ? s[j]! & 63 : (s[j + 4]! & 15) | ((s[j - 4]! >> 6) << 4);
          bound[e] = 0.5 * f16Of(q, p) * sc;
          break;
        }
        case 'Q6_K':
          bound[e] = 0.5 * f16Of(q, p + 208) * Math.abs((q[p + 192 + (i >> 4)]! << 24) >> 24);
          break;
      }
    }
  }
  return bound;
}

test('quantize -> dequantize stays within each type\'s error bound (property)', () => {
  const kinds: Kind[] = ['uniform', 'positive', 'negative', 'zeros', 'constant', 'outlier', 'mixed-scales'];
  fc.assert(
    fc.property(
      fc.constantFrom(...SUPPORTED_GGML_TYPES),
      fc.integer({ min: 1, max: 3 }),
      fc.integer(),
      fc.integer({ min: -12, max: 8 }), // up to 2^8 * 50: Q4_1's min must fit in f16
      fc.constantFrom(...kinds),
      (type, blocks, seed, exp, kind) => {
        const x = makeValues(type, blocks, seed, exp, kind);
        const q = quantize(type, x);
        assert.equal(q.length, rowBytes(type, x.length));
        const y = dequantizeToF32(type, q, x.length);
        if (type === 'F32') return assert.deepEqual(y, x);
        if (type === 'F16' || type === 'BF16') {
          const dt = type === 'F16' ? 'f16' : 'bf16';
          for (let i = 0; i < x.length; i++) assert.equal(y[i], roundTo(dt, x[i]!), `${type} element ${i}`);
          return;
        }
        const bound = errorBounds(type, q, x.length);
        for (let i = 0; i < x.length; i++) {
          const err = Math.abs(y[i]! - x[i]!);
          // plus float32 rounding of the decoded value
          const tol = bound[i]! * (1 + 1e-6) + Math.abs(x[i]!) * 2 ** -23 + 1e-30;
          if (!(err <= tol)) {
            assert.fail(`${type} ${kind} 2^${exp}: element ${i} = ${x[i]} decodes to ${y[i]}, error ${err} > bound ${bound[i]}`);
          }
        }
      },
    ),
    { numRuns: 400, seed: 20240611 },
  );
});

test('quantize keeps zeros exact and rejects non-finite input and f16 overflow', () => {
  for (const type of SUPPORTED_GGML_TYPES) {
    const n = GGML_TYPES[type].blockSize;
    // (signed zeros allowed: Q4_0 and Q5_0 store d = -0, as ggml does)
    assert.ok(dequantizeToF32(type, quantize(type, new Float32Array(n)), n).every((v) => v === 0), type);
    if (GGML_TYPES[type].blockSize === 1) continue;
    for (const bad of [NaN, Infinity, -Infinity]) {
      const x = new Float32Array(n);
      x[3] = bad;
      assert.throws(() => quantize(type, x), (e: unknown) => e instanceof HalfpipeError && e.code === 'dtype', `${type} ${bad}`);
    }
    const huge = new Float32Array(n).fill(3e38);
    huge[0] = -3e38;
    assert.throws(() => quantize(type, huge), HalfpipeError, `${type} overflow`);
  }
});

test('quantize and dequantize reject partial blocks and short buffers', () => {
  assert.throws(() => quantize('Q4_K', new Float32Array(255)), /multiple of 256/);
  assert.throws(() => dequantize('Q8_0', new Uint8Array(33), 32, new Float32Array(32)), HalfpipeError);
  assert.throws(() => dequantize('Q8_0', new Uint8Array(34), 32, new Float32Array(40), 9), HalfpipeError);
  assert.throws(() => dequantize('Q8_0', new Uint8Array(34), 31, new Float32Array(40)), /multiple of 32/);
  assert.throws(() => dequantize('Q9_9' as GgmlType, new Uint8Array(34), 32, new Float32Array(40)), HalfpipeError);
  // outOffset is honoured and nothing else is touched
  const out = new Float32Array(40).fill(-1);
  dequantize('Q8_0', quantize('Q8_0', new Float32Array(32).fill(127 / 64)), 32, out, 5); // d = 1/64 exactly
  assert.deepEqual([out[4], out[5], out[36], out[37]], [-1, 127 / 64, 127 / 64, -1]);
});

// ---- dotQuantRow ---------------------------------------------------------------------------------------

test('dotQuantRow equals dot(dequantize(row), x) within 1e-5 of sum |w x| (property)', () => {
  fc.assert(
    fc.property(
      fc.constantFrom(...SUPPORTED_GGML_TYPES),
      fc.integer({ min: 1, max: 3 }),
      fc.integer({ min: 1, max: 3 }),
      fc.integer(),
      fc.integer({ min: 0, max: 3 }),
      (type, blocksPerRow, rows, seed, pad) => {
        const n = blocksPerRow * GGML_TYPES[type].blockSize;
        const w = makeValues(type, blocksPerRow * rows, seed, 0, 'mixed-scales');
        const q = quantize(type, w);
        // a buffer with `pad` junk bytes in front, so rows also start at unaligned addresses
        const buf = new Uint8Array(pad + q.length).fill(0xa5);
        buf.set(q, pad);
        const view = buf.subarray(pad);
        const x = makeValues('F32', n, seed ^ 0x5555, 0, 'uniform');
        const stride = rowBytes(type, n);
        for (let r = 0; r < rows; r++) {
          const row = dequantizeToF32(type, view.subarray(r * stride), n);
          let ref = 0;
          let mag = 0;
          for (let i = 0; i < n; i++) {
            ref += row[i]! * x[i]!;
            mag += Math.abs(row[i]! * x[i]!);
          }
          const got = dotQuantRow(type, buf, pad + r * stride, x, n);
          assert.ok(Math.abs(got - ref) <= 1e-5 * mag + 1e-30, `${type} row ${r}: ${got} vs ${ref}`);
          // and it reads the same bytes whichever view it is given
          assert.equal(dotQuantRow(type, view, r * stride, x, n), got);
        }
      },
    ),
    { numRuns: 300, seed: 7 },
  );
});

test('dotQuantRow checks its arguments', () => {
  const q = quantize('Q4_0', new Float32Array(64).fill(1));
  const x = new Float32Array(64).fill(1);
  assert.ok(Math.abs(dotQuantRow('Q4_0', q, 0, x, 64) - 64) < 1e-3);
  assert.throws(() => dotQuantRow('Q4_0', q, 18, x, 64), HalfpipeError); // runs past the end
  assert.throws(() => dotQuantRow('Q4_0', q, 0, x, 48), HalfpipeError); // not whole blocks
  assert.throws(() => dotQuantRow('Q4_0', q, 0, new Float32Array(32), 64), HalfpipeError); // x too short
  assert.throws(() => dotQuantRow('Q4_0', q, -1, x, 32), HalfpipeError);
});
