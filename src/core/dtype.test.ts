import { test } from 'node:test';
import assert from 'node:assert/strict';
import { getFloat16, setFloat16 } from '@petamoriken/float16';
import {
  bf16BitsToNumber,
  decode,
  encode,
  f16BitsToNumber,
  FORMATS,
  numberToBf16Bits,
  numberToF16Bits,
  parseDType,
  roundTo,
  ulp,
} from './dtype.js';
import { HalfpipeError } from './errors.js';
import { xorshift } from '../testing/helpers.js';


const bitsView = new DataView(new ArrayBuffer(8));
function f32FromBits(u: number): number {
  bitsView.setUint32(0, u >>> 0);
  return bitsView.getFloat32(0);
}
function f32Bits(x: number): number {
  bitsView.setFloat32(0, x);
  return bitsView.getUint32(0);
}
/** The oracle: @petamoriken/float16's encoder. */
function oracleF16Bits(x: number): number {
  setFloat16(bitsView, 0, x);
  return bitsView.getUint16(0);
}
/** The plain bit-level bf16 reference: add half an ulp (less one when the kept lsb is 0), truncate. */
function oracleBf16Bits(x: number): number {
  const u = f32Bits(x);
  if ((u & 0x7fffffff) > 0x7f800000) return (u >>> 16) | 0x40;
  return ((u + 0x7fff + ((u >>> 16) & 1)) >>> 16) & 0xffff;
}

const edgeCases = [
  0, -0, 1, -1, 65504, -65504, 65519.99, 65520, -65520, 65536, Infinity, -Infinity, 2 ** -14, 2 ** -24,
  2 ** -25, 2 ** -25 * 1.0000001, 3 * 2 ** -26, 2 ** -24 * 1.5, 2 ** -24 * 2.5, 1 + 2 ** -11, 1 + 3 * 2 ** -11,
  1 - 2 ** -12, 3.4028234663852886e38, 1.1754943508222875e-38, 1.401298464324817e-45, 2 ** -133, 2 ** -134,
  3 * 2 ** -135, 0.1, -0.3333333333333333, 1e-8, 6.1e-5, 6.0975e-5, 1e5, 1e30,
];

test('f16: all 65536 bit patterns decode and round-trip exactly (NaN stays NaN)', () => {
  for (let h = 0; h < 65536; h++) {
    const x = f16BitsToNumber(h);
    const isNaN16 = (h & 0x7c00) === 0x7c00 && (h & 0x3ff) !== 0;
    assert.equal(Number.isNaN(x), isNaN16, `bits 0x${h.toString(16)}`);
    assert.equal(x, getFloat16(new DataView(new Uint16Array([h]).buffer), 0, true) , `decode 0x${h.toString(16)}`);
    if (isNaN16) assert.equal(numberToF16Bits(x) & 0x7e00, 0x7e00);
    else assert.equal(numberToF16Bits(x), h, `round-trip 0x${h.toString(16)}`);
  }
});

test('f16: 10^6 random f32 values and the edge cases match @petamoriken/float16', () => {
  const next = xorshift(0x5eed);
  const check = (x: number) => {
    const got = numberToF16Bits(x);
    const want = oracleF16Bits(x);
    if (Number.isNaN(x)) assert.equal(got & 0x7e00, 0x7e00);
    else if (got !== want) assert.fail(`f16(${x}) = 0x${got.toString(16)}, oracle 0x${want.toString(16)}`);
  };
  for (const x of edgeCases) check(x), check(-x);
  for (let i = 0; i < 1_000_000; i++) check(f32FromBits(next()));
  // Values near the f16 range, where the random bit patterns above are sparse.
  for (let i = 0; i < 200_000; i++) check(f32FromBits((0x33000000 + (next() % 0x0c000000)) ^ (next() & 0x80000000)));
});

test('f16: float64 inputs are rounded once, not via f32 (no double rounding)', () => {
  // Just above the halfway point between 1 and 1 + 2^-10: f32 rounds it down onto the midpoint,
  // after which ties-to-even would give 1. Rounding once gives 1 + 2^-10.
  const x = 1 + 2 ** -11 + 2 ** -40;
  assert.equal(Math.fround(x), 1 + 2 ** -11);
  assert.equal(f16BitsToNumber(numberToF16Bits(x)), 1 + 2 ** -10);
  assert.equal(oracleF16Bits(x), numberToF16Bits(x));
  const next = xorshift(77);
  for (let i = 0; i < 200_000; i++) {
    const x64 = (next() / 2 ** 32 - 0.5) * 2 ** ((next() % 40) - 26);
    assert.equal(numberToF16Bits(x64), oracleF16Bits(x64), `f16(${x64})`);
  }
});

test('bf16: 10^6 random f32 values and the edge cases match the bit-level reference', () => {
  const next = xorshift(0xbf16);
  const check = (x: number) => {
    const got = numberToBf16Bits(x);
    const want = oracleBf16Bits(x);
    if (Number.isNaN(x)) assert.ok(Number.isNaN(bf16BitsToNumber(got)) && (got & 0x40) !== 0);
    else if (got !== want) assert.fail(`bf16(${x}) = 0x${got.toString(16)}, reference 0x${want.toString(16)}`);
  };
  for (const x of edgeCases) check(Math.fround(x)), check(-Math.fround(x));
  for (let i = 0; i < 1_000_000; i++) check(f32FromBits(next()));
  for (let h = 0; h < 65536; h++) {
    const x = bf16BitsToNumber(h);
    if (!Number.isNaN(x)) assert.equal(numberToBf16Bits(x), h);
  }
});

test('overflow goes to infinity at the rounding threshold, not at max', () => {
  assert.equal(roundTo('f16', 65519.99), 65504);
  assert.equal(roundTo('f16', 65520), Infinity);
  assert.equal(roundTo('f16', -65520), -Infinity);
  const bfMax = FORMATS.bf16.max;
  assert.equal(roundTo('bf16', bfMax), bfMax);
  assert.equal(roundTo('bf16', bfMax * (1 + 2 ** -9)), bfMax);
  assert.equal(roundTo('bf16', bfMax * (1 + 2 ** -8)), Infinity);
  assert.equal(roundTo('f32', 3.5e38), Infinity);
});

test('subnormals are exact and the sign of zero is kept', () => {
  assert.equal(roundTo('f16', 2 ** -24), 2 ** -24);
  assert.equal(roundTo('f16', 2 ** -25), 0); // tie to even: 0
  assert.equal(roundTo('f16', 3 * 2 ** -25), 2 * 2 ** -24); // tie to even: 2
  assert.ok(Object.is(roundTo('f16', -(2 ** -26)), -0));
  assert.equal(numberToF16Bits(-0), 0x8000);
  assert.equal(roundTo('bf16', 2 ** -133), 2 ** -133);
  assert.equal(numberToBf16Bits(-0), 0x8000);
});

test('ulp follows the binade and bottoms out at the subnormal spacing', () => {
  assert.equal(ulp('f16', 1), 2 ** -10);
  assert.equal(ulp('f16', 1.99), 2 ** -10);
  assert.equal(ulp('f16', 2), 2 ** -9);
  assert.equal(ulp('f16', 1e-7), 2 ** -24);
  assert.equal(ulp('bf16', 1), 2 ** -7);
  assert.equal(ulp('f32', 1), 2 ** -23);
});

test('encode and decode round-trip typed storage', () => {
  const values = [1.5, -2.25, 1e-6, 70000, NaN];
  assert.deepEqual([...decode('f32', encode('f32', values))].slice(0, 4), [1.5, -2.25, Math.fround(1e-6), 70000]);
  const f16 = decode('f16', encode('f16', values));
  assert.deepEqual([...f16].slice(0, 4), [1.5, -2.25, roundTo('f16', 1e-6), Infinity]);
  assert.ok(Number.isNaN(f16[4]));
});

test('parseDType names the unknown dtype', () => {
  assert.equal(parseDType('bf16'), 'bf16');
  assert.throws(() => parseDType('f8'), (e: unknown) => e instanceof HalfpipeError && /'f8'.*f32, f16, bf16/.test(e.message));
});

test('roundF32ArrayInPlace equals rounding each value once, and counts overflow and clamping', async () => {
  const { roundF32ArrayInPlace } = await import('./dtype.js');
  const next = xorshift(99);
  const values = new Float32Array(300_000);
  for (let i = 0; i < values.length; i++) values[i] = f32FromBits(next());
  values.set([65519.99, 65520, -70000, 1e-7, 3 * 2 ** -26, 2 ** -25, Infinity, NaN, -0], 0);
  for (const dtype of ['f16', 'bf16'] as const) {
    const data = Float32Array.from(values);
    const { overflowed } = roundF32ArrayInPlace(data, data.length, dtype);
    let expectOverflow = 0;
    for (let i = 0; i < values.length; i++) {
      const want = roundTo(dtype, values[i]!);
      if (Number.isFinite(values[i]!) && !Number.isFinite(want)) expectOverflow++;
      if (Number.isNaN(want)) assert.ok(Number.isNaN(data[i]!));
      else if (!Object.is(data[i], want)) assert.fail(`${dtype}(${values[i]}) = ${data[i]}, want ${want}`);
    }
    assert.equal(overflowed, expectOverflow);
    const clamped = Float32Array.from(values);
    const counts = roundF32ArrayInPlace(clamped, clamped.length, dtype, true);
    assert.equal(counts.clamped, expectOverflow);
    assert.equal(counts.overflowed, 0);
    assert.equal(clamped[2], dtype === 'f16' ? -FORMATS.f16.max : roundTo('bf16', -70000));
  }
});
