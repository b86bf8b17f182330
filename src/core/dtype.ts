/**
 * Storage dtypes and correctly rounded conversions.
 *
 * f16 (IEEE binary16) and bf16 (bfloat16) are stored as raw bits in a Uint16Array; f32 in a
 * Float32Array. Every conversion from a JS number (float64) rounds ONCE, to nearest with ties to
 * even, straight to the target format: converting via f32 first would round twice and can be off
 * by one unit in the last place (ulp). Subnormals are exact, overflow goes to +-inf, NaN stays NaN.
 */
import { fail } from './errors.js';

export type DType = 'f32' | 'f16' | 'bf16';
export const DTYPES: readonly DType[] = ['f32', 'f16', 'bf16'];

/** A binary floating-point format: p stored mantissa bits, normal exponents emin..emax. */
export interface FloatFormat {
  readonly dtype: DType;
  readonly bytes: 2 | 4;
  readonly mantissaBits: number;
  readonly minExponent: number;
  readonly maxExponent: number;
  /** the largest finite value, (2 - 2^-p) * 2^emax */
  readonly max: number;
  /** the smallest positive normal value, 2^emin */
  readonly minNormal: number;
  /** the smallest positive subnormal value, 2^(emin - p) */
  readonly minSubnormal: number;
}

function format(dtype: DType, bytes: 2 | 4, p: number, emin: number, emax: number): FloatFormat {
  return {
    dtype,
    bytes,
    mantissaBits: p,
    minExponent: emin,
    maxExponent: emax,
    max: (2 - 2 ** -p) * 2 ** emax,
    minNormal: 2 ** emin,
    minSubnormal: 2 ** (emin - p),
  };
}

export const FORMATS: { readonly [D in DType]: FloatFormat } = {
  f32: format('f32', 4, 23, -126, 127),
  f16: format('f16', 2, 10, -14, 15),
  bf16: format('bf16', 2, 7, -126, 127),
};

export function parseDType(name: string): DType {
  if ((DTYPES as readonly string[]).includes(name)) return name as DType;
  return fail('dtype', `unknown dtype '${name}' (supported: ${DTYPES.join(', ')})`);
}

// Scratch views to read the bits of a float64 and of a float32.
const f64 = new Float64Array(1);
const f64Hi = new Uint32Array(f64.buffer, 4, 1); // little-endian: the high word holds sign and exponent
const f32 = new Float32Array(1);
const f32Bits = new Uint32Array(f32.buffer);

/** floor(log2(a)) for a finite a > 0 that is a normal float64. */
function exponentOf(a: number): number {
  f64[0] = a;
  return ((f64Hi[0]! >>> 20) & 0x7ff) - 1023;
}

function signBitOf(x: number): boolean {
  f64[0] = x;
  return f64Hi[0]! >>> 31 === 1;
}

/** Rounds q >= 0 to an integer, ties to even. q - floor(q) is exact for the magnitudes used here. */
function roundHalfEven(q: number): number {
  const f = Math.floor(q);
  const d = q - f;
  if (d > 0.5) return f + 1;
  if (d < 0.5) return f;
  return f % 2 === 0 ? f : f + 1;
}

/**
 * The value of `fmt` nearest to x (ties to even), as a JS number: +-Infinity past the overflow
 * threshold, NaN for NaN, and the sign of zero kept.
 */
export function roundToFormat(x: number, fmt: FloatFormat): number {
  if (x === 0 || !Number.isFinite(x)) return x;
  const a = Math.abs(x);
  // Below the smallest normal the spacing stays 2^(emin - p): that is what makes subnormals exact.
  const e = a < fmt.minNormal ? fmt.minExponent : exponentOf(a);
  const quantum = 2 ** (e - fmt.mantissaBits);
  // a / quantum < 2^(p+1) and division by a power of two is exact, so one rounding happens here.
  const rounded = roundHalfEven(a / quantum) * quantum;
  const magnitude = rounded > fmt.max ? Infinity : rounded;
  return x < 0 ? -magnitude : magnitude === 0 && signBitOf(x) ? -0 : magnitude;
}

/** The nearest value of `dtype` to x (the value a store would keep). */
export function roundTo(dtype: DType, x: number): number {
  return dtype === 'f32' ? Math.fround(x) : roundToFormat(x, FORMATS[dtype]);
}

/**
 * One unit in the last place of `dtype` at magnitude |x|: the spacing of the binade that holds |x|,
 * and the subnormal spacing below the smallest normal. Used to express errors in ulps.
 */
export function ulp(dtype: DType, x: number): number {
  const fmt = FORMATS[dtype];
  const a = Math.abs(x);
  if (!Number.isFinite(a)) return NaN;
  const e = a < fmt.minNormal ? fmt.minExponent : Math.min(exponentOf(a), fmt.maxExponent);
  return 2 ** (e - fmt.mantissaBits);
}

// ---- f16 -------------------------------------------------------------------------------------

/** Decoded value of every f16 bit pattern: decoding is a table lookup. */
const F16_VALUES = (() => {
  const table = new Float32Array(65536);
  for (let h = 0; h < 65536; h++) {
    const sign = h & 0x8000 ? -1 : 1;
    const exp = (h >>> 10) & 0x1f;
    const mant = h & 0x3ff;
    if (exp === 0) table[h] = sign * mant * 2 ** -24;
    else if (exp === 31) table[h] = mant === 0 ? sign * Infinity : NaN;
    else table[h] = sign * (1024 + mant) * 2 ** (exp - 25);
  }
  return table;
})();

export function f16BitsToNumber(h: number): number {
  return F16_VALUES[h & 0xffff]!;
}

/** Rounds x once to f16 and returns its bits. NaN becomes the quiet NaN 0x7e00 (sign kept). */
export function numberToF16Bits(x: number): number {
  const sign = signBitOf(x) ? 0x8000 : 0;
  if (Number.isNaN(x)) return sign | 0x7e00;
  const a = Math.abs(roundToFormat(x, FORMATS.f16));
  if (a === Infinity) return sign | 0x7c00;
  // Subnormals (and zero) are integer multiples of 2^-24.
  if (a < 2 ** -14) return sign | (a * 2 ** 24);
  const e = exponentOf(a);
  return sign | ((e + 15) << 10) | ((a * 2 ** -e - 1) * 1024);
}

// ---- bf16 ------------------------------------------------------------------------------------

export function bf16BitsToNumber(h: number): number {
  f32Bits[0] = (h & 0xffff) << 16;
  return f32[0]!;
}

/** Rounds x once to bf16 and returns its bits. bf16 is the top half of an f32, so the rounded
 * value (exact in f32) is encoded by taking its f32 bits. NaN becomes quiet (0x7fc0, sign kept). */
export function numberToBf16Bits(x: number): number {
  if (Number.isNaN(x)) return (signBitOf(x) ? 0x8000 : 0) | 0x7fc0;
  f32[0] = roundToFormat(x, FORMATS.bf16);
  return f32Bits[0]! >>> 16;
}

// ---- typed storage ---------------------------------------------------------------------------

/** The typed array a dtype is stored in: f32 as Float32Array, f16 and bf16 as raw bits. */
export type Storage = Float32Array | Uint16Array;

export function allocStorage(dtype: DType, length: number): Storage {
  return dtype === 'f32' ? new Float32Array(length) : new Uint16Array(length);
}

export function storageMatches(dtype: DType, data: Storage): boolean {
  return dtype === 'f32' ? data instanceof Float32Array : data instanceof Uint16Array;
}

/** Element i of `data` as a number. */
export function load(dtype: DType, data: Storage, i: number): number {
  const raw = data[i]!;
  if (dtype === 'f32') return raw;
  return dtype === 'f16' ? F16_VALUES[raw]! : bf16BitsToNumber(raw);
}

/** Stores x at element i of `data`, rounded once to `dtype`. */
export function store(dtype: DType, data: Storage, i: number, x: number): void {
  if (dtype === 'f32') data[i] = x;
  else data[i] = dtype === 'f16' ? numberToF16Bits(x) : numberToBf16Bits(x);
}

/** Encodes numbers into a new storage array of `dtype` (each rounded once). */
export function encode(dtype: DType, values: ArrayLike<number>): Storage {
  const out = allocStorage(dtype, values.length);
  for (let i = 0; i < values.length; i++) store(dtype, out, i, values[i]!);
  return out;
}

/** Decodes a storage array of `dtype` into float64 numbers. */
export function decode(dtype: DType, data: Storage): Float64Array {
  const out = new Float64Array(data.length);
  for (let i = 0; i < data.length; i++) out[i] = load(dtype, data, i);
  return out;
}

// ---- rounding f32 activations to a storage dtype ---------------------------------------------

export interface RoundingCounts {
  /** finite values that became +-inf */
  overflowed: number;
  /** values clamped to +-max instead (when clamping) */
  clamped: number;
  /** the largest finite |x| before rounding (what f32 storage would have held) */
  absmax: number;
}

/**
 * Rounds data[0, n) in place to the nearest `dtype` value (ties to even), as storing the values in
 * that dtype and reading them back would. Finite values past the rounding threshold become +-inf,
 * or +-max when `clamp` is set; both are counted. Works on the f32 bits: one pass, no allocation.
 */
export function roundF32ArrayInPlace(data: Float32Array, n: number, dtype: DType, clamp = false): RoundingCounts {
  const counts = { overflowed: 0, clamped: 0, absmax: 0 };
  if (dtype === 'f32') return counts;
  const bits = new Uint32Array(data.buffer, data.byteOffset, n);
  // The largest finite magnitude, read off the bits (monotonic in |x| for finite floats).
  let maxBits = 0;
  for (let i = 0; i < n; i++) {
    const a = bits[i]! & 0x7fffffff;
    if (a > maxBits && a < 0x7f800000) maxBits = a;
  }
  f32Bits[0] = maxBits;
  counts.absmax = f32[0]!;
  if (dtype === 'bf16') {
    const bf16MaxBits = 0x7f7f0000;
    for (let i = 0; i < n; i++) {
      const u = bits[i]!;
      const a = u & 0x7fffffff;
      if (a >= 0x7f800000) {
        if (a > 0x7f800000) bits[i] = u | 0x00400000; // NaN stays NaN (quiet)
        continue;
      }
      // Round at bit 16, ties to even; a carry walks into the exponent (and up to inf).
      let r = ((a + 0x7fff + ((a >>> 16) & 1)) & 0xffff0000) >>> 0;
      if (r >= 0x7f800000) {
        if (clamp) {
          r = bf16MaxBits;
          counts.clamped++;
        } else counts.overflowed++;
      }
      bits[i] = ((u & 0x80000000) | r) >>> 0;
    }
    return counts;
  }
  // f16: 65520 (0x477ff000) is the first value that rounds to inf; 65504 is 0x477fe000.
  for (let i = 0; i < n; i++) {
    const u = bits[i]!;
    const a = u & 0x7fffffff;
    const sign = u & 0x80000000;
    if (a >= 0x7f800000) continue; // inf and NaN stay
    if (a >= 0x477ff000) {
      if (clamp) {
        bits[i] = (sign | 0x477fe000) >>> 0;
        counts.clamped++;
      } else {
        bits[i] = (sign | 0x7f800000) >>> 0;
        counts.overflowed++;
      }
    } else if (a < 0x38800000) {
      // Below 2^-14 the f16 spacing is 2^-24: round the value to a multiple of it.
      const q = Math.abs(data[i]!) * 16777216;
      let r = Math.round(q);
      if (r - q === 0.5 && r % 2 === 1) r -= 1;
      data[i] = (sign ? -r : r) / 16777216;
    } else {
      // Normal f16: keep 10 mantissa bits, round at bit 13, ties to even.
      bits[i] = (sign | ((a + 0x0fff + ((a >>> 13) & 1)) & 0xffffe000)) >>> 0;
    }
  }
  return counts;
}
