// Fused rotary position embedding (RoPE) for q and k, WASM SIMD.
//
// Storage dtypes are raw IEEE bits: f32, f16 and bf16. Inputs are decoded
// exactly, rotated in f32 or f64 with every operation rounded (no FMA, no
// reassociation), and rounded ONCE to the storage dtype (round to nearest even,
// subnormals exact, overflow to inf, NaN stays a quiet NaN).
//
// Per token: f16 and bf16 with f32 math run fast 8-pair steps over every row
// that assume ordinary values and check that assumption; everything else (and
// any 8 pairs that fail the check) goes through a general 4-pair SIMD step; a
// scalar tail with bit-identical results handles half % 4 pairs. Tokens are
// independent, so callers may split [0, batch*seqLen) over threads.
//
// Memory is the shared one of the JS heap; the only static data is a small
// constant table below 64 KiB, inside the heap's reserved region.

// Codes shared with the JS glue (src/kernels/wasm/rope.ts).
const DT_F32: i32 = 0;
const DT_F16: i32 = 1;
const DT_BF16: i32 = 2;
const MATH_F32: i32 = 0;
const MATH_F64: i32 = 1;
const NEOX: i32 = 0;
const GPTJ: i32 = 1;

// ---------------------------------------------------------------------------
// Conversions, SIMD (4 x f32 lanes) and scalar twins with identical results.
// ---------------------------------------------------------------------------

/** f16 bits held in the TOP 16 bits of each i32 lane (low 16 bits zero) -> exact f32. */
// @ts-ignore: decorator
@inline function f16TopToF32x4(top: v128): v128 {
  // Arithmetic shift keeps the sign at bit 31 and drops exponent/mantissa into the
  // low bits of f32's exponent field; scaling by 2^112 rebiases 15 -> 127 and
  // turns f16 subnormals (f32 denormals here) into exact normals.
  const v = f32x4.mul(v128.and(i32x4.shr_s(top, 3), i32x4.splat(<i32>0x8FFFE000)), i32x4.splat(0x77800000));
  // Exponent 31 (inf/NaN) came out as a finite 2^16..2^17: force the exponent to all ones.
  const infNan = i32x4.eq(v128.and(top, i32x4.splat(0x7C000000)), i32x4.splat(0x7C000000));
  return v128.or(v, v128.and(infNan, i32x4.splat(0x7F800000)));
}

// @ts-ignore: decorator
@inline function f16ToF32(h: u32): f32 {
  const v = reinterpret<f32>((<i32>(h << 16) >> 3) & <i32>0x8FFFE000) * reinterpret<f32>(0x77800000);
  return (h & 0x7C00) == 0x7C00 ? reinterpret<f32>(reinterpret<u32>(v) | 0x7F800000) : v;
}

/** f32x4 -> f16 bits in the low 16 bits of each i32 lane, round to nearest even. */
// @ts-ignore: decorator
@inline function f32x4ToF16(x: v128): v128 {
  const sign = v128.and(x, i32x4.splat(<i32>0x80000000));
  const a = v128.xor(x, sign);
  // Normal: rebias the exponent (-112 << 23) and round at bit 13, ties to even via the odd bit.
  const odd = v128.and(i32x4.shr_u(a, 13), i32x4.splat(1));
  let r = i32x4.shr_u(i32x4.add(i32x4.add(a, i32x4.splat(<i32>0xC8000FFF)), odd), 13);
  // |x| < 2^-14: adding 0.5 makes the FPU round at the f16 subnormal ulp 2^-24.
  const sub = i32x4.sub(f32x4.add(a, i32x4.splat(0x3F000000)), i32x4.splat(0x3F000000));
  r = v128.bitselect(sub, r, i32x4.lt_s(a, i32x4.splat(0x38800000)));
  // |x| >= 2^16, inf or NaN: inf or a quiet NaN ([65520, 2^16) already carried into inf above).
  const big = v128.bitselect(i32x4.splat(0x7E00), i32x4.splat(0x7C00), i32x4.gt_s(a, i32x4.splat(0x7F800000)));
  r = v128.bitselect(big, r, i32x4.gt_s(a, i32x4.splat(0x477FFFFF)));
  return v128.or(r, i32x4.shr_u(sign, 16));
}

// @ts-ignore: decorator
@inline function f32ToF16(x: f32): u32 {
  const bits = reinterpret<u32>(x);
  const sign = bits & 0x80000000;
  const a = bits ^ sign;
  let r: u32;
  if (a > 0x477FFFFF) r = a > 0x7F800000 ? 0x7E00 : 0x7C00;
  else if (a < 0x38800000) r = reinterpret<u32>(reinterpret<f32>(a) + reinterpret<f32>(0x3F000000)) - 0x3F000000;
  else r = (a + 0xC8000FFF + ((a >> 13) & 1)) >> 13;
  return r | (sign >> 16);
}

/** f32x4 -> bf16 bits in the low 16 bits of each i32 lane, round to nearest even. */
// @ts-ignore: decorator
@inline function f32x4ToBf16(x: v128): v128 {
  // Round at bit 16; a carry walks into the exponent and up to inf as it should.
  const odd = v128.and(i32x4.shr_u(x, 16), i32x4.splat(1));
  const r = i32x4.shr_u(i32x4.add(i32x4.add(x, i32x4.splat(0x7FFF)), odd), 16);
  // NaN: keep sign and payload top bits, set the quiet bit (rounding could have made it inf).
  const nan = v128.or(i32x4.shr_u(x, 16), i32x4.splat(0x40));
  return v128.bitselect(nan, r, f32x4.ne(x, x));
}

// @ts-ignore: decorator
@inline function f32ToBf16(x: f32): u32 {
  const bits = reinterpret<u32>(x);
  if (x != x) return (bits >> 16) | 0x40;
  return (bits + 0x7FFF + ((bits >> 16) & 1)) >> 16;
}

// f64 -> f16/bf16 directly (one rounding), same scheme on 64-bit lanes:
// normal: rebias and round at bit 52-m; subnormal: add a magic power of two
// whose ulp is the target's subnormal ulp; big: inf or quiet NaN.
const F64_INF: i64 = 0x7FF << 52;
const F16_REBIAS: i64 = (<i64>(15 - 1023) << 52) + ((<i64>1 << 41) - 1);
const F16_MIN_NORMAL: i64 = <i64>(1023 - 14) << 52;
const F16_OVERFLOW: i64 = <i64>(1023 + 16) << 52;
const F16_MAGIC: i64 = <i64>(1023 + 28) << 52; // 2^28: ulp 2^-24
const BF16_REBIAS: i64 = (<i64>(127 - 1023) << 52) + ((<i64>1 << 44) - 1);
const BF16_MIN_NORMAL: i64 = <i64>(1023 - 126) << 52;
const BF16_OVERFLOW: i64 = <i64>(1023 + 128) << 52;
const BF16_MAGIC: i64 = <i64>(1023 - 81) << 52; // 2^-81: ulp 2^-133

/** f64x2 -> 16-bit (f16 when shift 42, bf16 when shift 45) in the low bits of each i64 lane. */
// @ts-ignore: decorator
@inline function f64x2ToHalf(x: v128, shift: i32, rebias: i64, minNormal: i64, overflow: i64, magic: i64, qnan: i64, inf: i64): v128 {
  const sign = v128.and(x, i64x2.splat(i64.MIN_VALUE));
  const a = v128.xor(x, sign);
  const odd = v128.and(i64x2.shr_u(a, shift), i64x2.splat(1));
  let r = i64x2.shr_u(i64x2.add(i64x2.add(a, i64x2.splat(rebias)), odd), shift);
  const sub = i64x2.sub(f64x2.add(a, i64x2.splat(magic)), i64x2.splat(magic));
  r = v128.bitselect(sub, r, i64x2.lt_s(a, i64x2.splat(minNormal)));
  const big = v128.bitselect(i64x2.splat(qnan), i64x2.splat(inf), i64x2.gt_s(a, i64x2.splat(F64_INF)));
  r = v128.bitselect(big, r, i64x2.gt_s(a, i64x2.splat(overflow - 1)));
  return v128.or(r, i64x2.shr_u(sign, 48));
}

// @ts-ignore: decorator
@inline function f64ToHalf(x: f64, shift: i32, rebias: i64, minNormal: i64, overflow: i64, magic: i64, qnan: u32, inf: u32): u32 {
  const bits = reinterpret<u64>(x);
  const sign = <u32>(bits >> 48) & 0x8000;
  const a = bits & 0x7FFFFFFFFFFFFFFF;
  let r: u32;
  if (a >= <u64>overflow) r = a > <u64>F64_INF ? qnan : inf;
  else if (a < <u64>minNormal) r = <u32>(reinterpret<u64>(reinterpret<f64>(a) + reinterpret<f64>(magic)) - <u64>magic);
  else r = <u32>((a + <u64>rebias + ((a >> shift) & 1)) >> shift);
  return r | sign;
}

// ---------------------------------------------------------------------------
// Fast paths: 16-bit storage with f32 math, 8 pairs per step. A step assumes
// ordinary values and checks that assumption; a step that fails the check is
// redone by rotate4, which handles everything (nothing was stored yet).
//
// All rows of a token share its table row; f16 uses a copy of it scaled by
// 2^112 (see token16 and stepF16), made once per token in per-thread scratch.
// Rows are walked in memory order, which the hardware prefetchers follow.
// ---------------------------------------------------------------------------

// Constants as static data (a splat of 4 u32 each). V8 rematerialises v128.const
// inside loops (3 instructions per use); a load is one. This is the kernel's only static data.
const K_F7FF = 0; // i16: f16 inputs with exponent 31 (inf/NaN) have (h << 1) > 0xF7FF
const K_8FFF = 1; // i16: sign + exponent + top mantissa bits after h >> 3
const K_0400 = 2; // i16: smallest normal f16 code
const K_7800 = 3; // i16: 0x7C00 - 0x0400
const K_2P112 = 4; // f32: 2^112, the f16 -> f32 exponent rebias (15 -> 127)
const K_ABS = 5; // i32: clears the sign
const K_REBIAS = 6; // i32: (-112 << 23) + 0xFFF, exponent rebias plus rounding bias
const K_ONE = 7; // i32: 1
const K_TOP = 8; // i32: sign, exponent and mantissa of an f16 held in the top half, after >> 3
const K_HI = 9; // i32: top half of a 32-bit lane
const K_8000 = 10; // i16: sign bit
const K_7FFF = 11; // i32: bf16 rounding bias
const K_BIT13 = 12; // i32: the odd bit of an f16 result
const K_BIT16 = 13; // i32: the odd bit of a bf16 result
const CONSTS = memory.data<u32>([
  0xF7FFF7FF, 0xF7FFF7FF, 0xF7FFF7FF, 0xF7FFF7FF,
  0x8FFF8FFF, 0x8FFF8FFF, 0x8FFF8FFF, 0x8FFF8FFF,
  0x04000400, 0x04000400, 0x04000400, 0x04000400,
  0x78007800, 0x78007800, 0x78007800, 0x78007800,
  0x77800000, 0x77800000, 0x77800000, 0x77800000,
  0x7FFFFFFF, 0x7FFFFFFF, 0x7FFFFFFF, 0x7FFFFFFF,
  0xC8000FFF, 0xC8000FFF, 0xC8000FFF, 0xC8000FFF,
  0x00000001, 0x00000001, 0x00000001, 0x00000001,
  0x8FFFE000, 0x8FFFE000, 0x8FFFE000, 0x8FFFE000,
  0xFFFF0000, 0xFFFF0000, 0xFFFF0000, 0xFFFF0000,
  0x80008000, 0x80008000, 0x80008000, 0x80008000,
  0x00007FFF, 0x00007FFF, 0x00007FFF, 0x00007FFF,
  0x00002000, 0x00002000, 0x00002000, 0x00002000,
  0x00010000, 0x00010000, 0x00010000, 0x00010000,
], 16);

// @ts-ignore: decorator
@inline function k(index: i32): v128 {
  return v128.load(CONSTS + (<usize>index << 4));
}

/** |y| rounded to f16 bits, valid when |y| in [2^-14, 2^16]; other lanes give codes outside [0x400, 0x7C00]. */
// @ts-ignore: decorator
@inline function absCodeF16(y: v128): v128 {
  const a = v128.and(y, k(K_ABS));
  // The odd bit (bit 13) as min(a & 0x2000, 1): one shift fewer, and shifts compete for few ports.
  return i32x4.shr_u(i32x4.add(i32x4.add(a, k(K_REBIAS)), i32x4.min_u(v128.and(a, k(K_BIT13)), k(K_ONE))), 13);
}

/** Sign bits of 8 f32 lanes (ya: 0..3, yb: 4..7) at bit 15 of each i16 lane. */
// @ts-ignore: decorator
@inline function signsF16(ya: v128, yb: v128): v128 {
  // As i32, a negative float is < -32768 and saturates to 0x8000; a positive one gives at most 0x7FFF.
  return v128.and(i16x8.narrow_i32x4_s(ya, yb), k(K_8000));
}

/** f32 bits -> bf16 bits (round to nearest even) in the low half of each lane; NaN lanes are not quieted. */
// @ts-ignore: decorator
@inline function roundBf16(y: v128): v128 {
  return i32x4.add(i32x4.add(y, k(K_7FFF)), i32x4.min_u(v128.and(y, k(K_BIT16)), k(K_ONE)));
}

/** Redoes 8 pairs at pair i with the general step (the exact table row, any values). */
function rotate8Slow(dtype: i32, pairing: i32, src: usize, dst: usize, tab: usize, half: i32, i: i32): void {
  if (dtype == DT_F16) {
    if (pairing == NEOX) {
      rotate4(DT_F16, MATH_F32, NEOX, src, dst, tab, half, i);
      rotate4(DT_F16, MATH_F32, NEOX, src, dst, tab, half, i + 4);
    } else {
      rotate4(DT_F16, MATH_F32, GPTJ, src, dst, tab, half, i);
      rotate4(DT_F16, MATH_F32, GPTJ, src, dst, tab, half, i + 4);
    }
  } else if (pairing == NEOX) {
    rotate4(DT_BF16, MATH_F32, NEOX, src, dst, tab, half, i);
    rotate4(DT_BF16, MATH_F32, NEOX, src, dst, tab, half, i + 4);
  } else {
    rotate4(DT_BF16, MATH_F32, GPTJ, src, dst, tab, half, i);
    rotate4(DT_BF16, MATH_F32, GPTJ, src, dst, tab, half, i + 4);
  }
}

/**
 * f16, 8 pairs at pair i of one row. c0, c1, s0, s1: cos/sin of pairs i..i+7 times 2^112.
 * The decode is a bit shift only: f16 bits (s, e, m) placed as f32 bits s<<31 | (e<<10 | m)<<13
 * are exactly x * 2^-112 (f16 subnormals become exact f32 denormals), so (x*2^-112) * (c*2^112)
 * is the same real product as x*c and rounds to the same f32. It assumes finite inputs and f16
 * normal results (or results rounding up to inf from below 2^16); anything else goes to rotate8Slow.
 */
// @ts-ignore: decorator
@inline function stepF16(pairing: i32, src: usize, dst: usize, off2: usize, tab: usize, half: i32, i: i32, c0: v128, c1: v128, s0: v128, s1: v128): void {
  // Load 8 pairs, flag inf/NaN inputs (exponent 31), decode: a = pairs 0..3, b = pairs 4..7.
  let x1a: v128, x1b: v128, x2a: v128, x2b: v128, special: v128;
  if (pairing == NEOX) {
    const h1 = v128.load(src);
    const h2 = v128.load(src + off2);
    special = i16x8.sub_sat_u(i16x8.max_u(i16x8.shl(h1, 1), i16x8.shl(h2, 1)), k(K_F7FF));
    // Each f32 is (high half, low half) = ((h >> 3) & 0x8FFF, h << 13).
    const k8FFF = k(K_8FFF);
    const hi1 = v128.and(i16x8.shr_s(h1, 3), k8FFF), lo1 = i16x8.shl(h1, 13);
    const hi2 = v128.and(i16x8.shr_s(h2, 3), k8FFF), lo2 = i16x8.shl(h2, 13);
    x1a = i16x8.shuffle(lo1, hi1, 0, 8, 1, 9, 2, 10, 3, 11);
    x1b = i16x8.shuffle(lo1, hi1, 4, 12, 5, 13, 6, 14, 7, 15);
    x2a = i16x8.shuffle(lo2, hi2, 0, 8, 1, 9, 2, 10, 3, 11);
    x2b = i16x8.shuffle(lo2, hi2, 4, 12, 5, 13, 6, 14, 7, 15);
  } else {
    // Interleaved: each 32-bit lane is one pair (x1 low, x2 high). An f16 in the top half
    // becomes its f32 after an arithmetic >> 3 and a mask (which also drops the low half).
    const v0 = v128.load(src);
    const v1 = v128.load(src, 16);
    special = i16x8.sub_sat_u(i16x8.max_u(i16x8.shl(v0, 1), i16x8.shl(v1, 1)), k(K_F7FF));
    const kTop = k(K_TOP);
    x1a = v128.and(i32x4.shr_s(i32x4.shl(v0, 16), 3), kTop);
    x2a = v128.and(i32x4.shr_s(v0, 3), kTop);
    x1b = v128.and(i32x4.shr_s(i32x4.shl(v1, 16), 3), kTop);
    x2b = v128.and(i32x4.shr_s(v1, 3), kTop);
  }

  // Rotate in f32, each operation rounded.
  const y1a = f32x4.sub(f32x4.mul(x1a, c0), f32x4.mul(x2a, s0));
  const y1b = f32x4.sub(f32x4.mul(x1b, c1), f32x4.mul(x2b, s1));
  const y2a = f32x4.add(f32x4.mul(x2a, c0), f32x4.mul(x1a, s0));
  const y2b = f32x4.add(f32x4.mul(x2b, c1), f32x4.mul(x1b, s1));

  // Round |y| as f16 normals, 8 codes per vector; a code outside [0x400, 0x7C00]
  // means that lane was not one (zero, subnormal, overflow, inf, NaN).
  const sg1 = signsF16(y1a, y1b), sg2 = signsF16(y2a, y2b);
  const n1 = i16x8.narrow_i32x4_u(absCodeF16(y1a), absCodeF16(y1b));
  const n2 = i16x8.narrow_i32x4_u(absCodeF16(y2a), absCodeF16(y2b));
  const k0400 = k(K_0400);
  const range = i16x8.sub_sat_u(i16x8.max_u(i16x8.sub(n1, k0400), i16x8.sub(n2, k0400)), k(K_7800));
  if (v128.any_true(v128.or(special, range))) {
    const back = <usize>i << (pairing == NEOX ? 1 : 2);
    rotate8Slow(DT_F16, pairing, src - back, dst - back, tab, half, i);
    return;
  }
  const o1 = v128.or(n1, sg1);
  const o2 = v128.or(n2, sg2);
  if (pairing == NEOX) {
    v128.store(dst, o1);
    v128.store(dst + off2, o2);
  } else {
    v128.store(dst, i16x8.shuffle(o1, o2, 0, 8, 1, 9, 2, 10, 3, 11));
    v128.store(dst, i16x8.shuffle(o1, o2, 4, 12, 5, 13, 6, 14, 7, 15), 16);
  }
}

/**
 * bf16, 8 pairs at pair i of one row; c0, c1, s0, s1: cos/sin of pairs i..i+7.
 * bf16 bits in the top half of a 32-bit lane are the f32, and any non-NaN f32 rounds to
 * bf16 by integer rounding on its bits. NaN results go to rotate8Slow.
 */
// @ts-ignore: decorator
@inline function stepBf16(pairing: i32, src: usize, dst: usize, off2: usize, tab: usize, half: i32, i: i32, c0: v128, c1: v128, s0: v128, s1: v128): void {
  let x1a: v128, x1b: v128, x2a: v128, x2b: v128;
  let v0: v128, v1: v128;
  const zero = i32x4.splat(0);
  if (pairing == NEOX) {
    v0 = v128.load(src);
    v1 = v128.load(src + off2);
    x1a = i16x8.shuffle(zero, v0, 0, 8, 1, 9, 2, 10, 3, 11);
    x1b = i16x8.shuffle(zero, v0, 4, 12, 5, 13, 6, 14, 7, 15);
    x2a = i16x8.shuffle(zero, v1, 0, 8, 1, 9, 2, 10, 3, 11);
    x2b = i16x8.shuffle(zero, v1, 4, 12, 5, 13, 6, 14, 7, 15);
  } else {
    v0 = v128.load(src);
    v1 = v128.load(src, 16);
    const kHi = k(K_HI);
    x1a = i32x4.shl(v0, 16);
    x2a = v128.and(v0, kHi);
    x1b = i32x4.shl(v1, 16);
    x2b = v128.and(v1, kHi);
  }

  const y1a = f32x4.sub(f32x4.mul(x1a, c0), f32x4.mul(x2a, s0));
  const y1b = f32x4.sub(f32x4.mul(x1b, c1), f32x4.mul(x2b, s1));
  const y2a = f32x4.add(f32x4.mul(x2a, c0), f32x4.mul(x1a, s0));
  const y2b = f32x4.add(f32x4.mul(x2b, c1), f32x4.mul(x1b, s1));

  // A NaN result must come out quiet, and rounding could wrap or change it: any NaN lane sends
  // the step to the exact path. A NaN anywhere makes this sum NaN (inf - inf adds false alarms only).
  const sum = f32x4.add(f32x4.add(y1a, y1b), f32x4.add(y2a, y2b));
  if (v128.any_true(f32x4.ne(sum, sum))) {
    const back = <usize>i << (pairing == NEOX ? 1 : 2);
    rotate8Slow(DT_BF16, pairing, src - back, dst - back, tab, half, i);
    return;
  }
  // Round at bit 16 (a carry walks into the exponent, up to inf, as it should); 8 codes per vector.
  let o0: v128, o1: v128;
  if (pairing == NEOX) {
    o0 = i16x8.narrow_i32x4_u(i32x4.shr_u(roundBf16(y1a), 16), i32x4.shr_u(roundBf16(y1b), 16));
    o1 = i16x8.narrow_i32x4_u(i32x4.shr_u(roundBf16(y2a), 16), i32x4.shr_u(roundBf16(y2b), 16));
  } else {
    const kHi = k(K_HI);
    o0 = v128.or(i32x4.shr_u(roundBf16(y1a), 16), v128.and(roundBf16(y2a), kHi));
    o1 = v128.or(i32x4.shr_u(roundBf16(y1b), 16), v128.and(roundBf16(y2b), kHi));
  }
  if (pairing == NEOX) {
    v128.store(dst, o0);
    v128.store(dst + off2, o1);
  } else {
    v128.store(dst, o0);
    v128.store(dst, o1, 16);
  }
}

/**
 * Pairs [0, 8*floor(half/8)) of n rows starting at src/dst, rows inB/outB bytes apart.
 * ctab: the row's cos/sin as the steps want them (f16: times 2^112), tab: as given.
 */
// @ts-ignore: decorator
@inline function rows16(dtype: i32, pairing: i32, n: i32, src: usize, dst: usize, inB: usize, outB: usize, ctab: usize, tab: usize, half: i32): void {
  const off2: usize = pairing == NEOX ? <usize>half << 1 : 0; // bytes from x1 to x2
  for (; n > 0; n--, src += inB, dst += outB) {
    for (let i = 0; i + 8 <= half; i += 8) {
      const c0 = v128.load(ctab + (<usize>i << 2));
      const c1 = v128.load(ctab + (<usize>i << 2), 16);
      const s0 = v128.load(ctab + (<usize>(half + i) << 2));
      const s1 = v128.load(ctab + (<usize>(half + i) << 2), 16);
      const at = <usize>i << (pairing == NEOX ? 1 : 2);
      if (dtype == DT_F16) stepF16(pairing, src + at, dst + at, off2, tab, half, i, c0, c1, s0, s1);
      else stepBf16(pairing, src + at, dst + at, off2, tab, half, i, c0, c1, s0, s1);
    }
  }
}

// One function per variant, each called for q and for k: two call sites keep binaryen from
// inlining them into one body, where it folds the variants into runtime branches.
function rowsF16Neox(n: i32, src: usize, dst: usize, inB: usize, outB: usize, ctab: usize, tab: usize, half: i32): void {
  rows16(DT_F16, NEOX, n, src, dst, inB, outB, ctab, tab, half);
}

function rowsF16Gptj(n: i32, src: usize, dst: usize, inB: usize, outB: usize, ctab: usize, tab: usize, half: i32): void {
  rows16(DT_F16, GPTJ, n, src, dst, inB, outB, ctab, tab, half);
}

function rowsBf16Neox(n: i32, src: usize, dst: usize, inB: usize, outB: usize, ctab: usize, tab: usize, half: i32): void {
  rows16(DT_BF16, NEOX, n, src, dst, inB, outB, ctab, tab, half);
}

function rowsBf16Gptj(n: i32, src: usize, dst: usize, inB: usize, outB: usize, ctab: usize, tab: usize, half: i32): void {
  rows16(DT_BF16, GPTJ, n, src, dst, inB, outB, ctab, tab, half);
}

/**
 * One token, 16-bit storage and f32 math: rotates pairs [0, 8*floor(half/8)) of every q and
 * k head and returns that count. Row pointers and head strides are in bytes; scratch holds
 * rotaryDim f32 for this thread.
 */
function token16(
  dtype: i32, pairing: i32, half: i32, tab: usize, scratch: usize,
  qHeads: i32, qi: usize, qo: usize, qInH: usize, qOutH: usize,
  kHeads: i32, ki: usize, ko: usize, kInH: usize, kOutH: usize,
): i32 {
  if (dtype == DT_F16) {
    // Scale the row, shared by all heads, by 2^112 once instead of every input (see stepF16).
    // Exact: a power of two, or an overflow to inf that makes the results inf/NaN and sends
    // those steps to the exact path, which uses the row as given.
    // The steps read cos [0, end) and sin [half, half + end).
    const k2p112 = k(K_2P112);
    const end = half & ~7;
    const sin = <usize>half << 2;
    for (let j = 0; j < end; j += 4) {
      const at = <usize>j << 2;
      v128.store(scratch + at, f32x4.mul(v128.load(tab + at), k2p112));
      v128.store(scratch + sin + at, f32x4.mul(v128.load(tab + sin + at), k2p112));
    }
    if (pairing == NEOX) {
      rowsF16Neox(qHeads, qi, qo, qInH, qOutH, scratch, tab, half);
      rowsF16Neox(kHeads, ki, ko, kInH, kOutH, scratch, tab, half);
    } else {
      rowsF16Gptj(qHeads, qi, qo, qInH, qOutH, scratch, tab, half);
      rowsF16Gptj(kHeads, ki, ko, kInH, kOutH, scratch, tab, half);
    }
  } else if (pairing == NEOX) {
    rowsBf16Neox(qHeads, qi, qo, qInH, qOutH, tab, tab, half);
    rowsBf16Neox(kHeads, ki, ko, kInH, kOutH, tab, tab, half);
  } else {
    rowsBf16Gptj(qHeads, qi, qo, qInH, qOutH, tab, tab, half);
    rowsBf16Gptj(kHeads, ki, ko, kInH, kOutH, tab, tab, half);
  }
  return half & ~7;
}

// ---------------------------------------------------------------------------
// General SIMD step and one head row: rotate pairs [0, half), copy dims
// [2*half, headDim) bit-exact. Inlined with constant (dtype, math, pairing) so
// each variant is branch-free.
// ---------------------------------------------------------------------------

/** 4 pairs starting at pair i, any dtype/math/pairing, every special value handled. */
// @ts-ignore: decorator
@inline function rotate4(dtype: i32, math: i32, pairing: i32, src: usize, dst: usize, tab: usize, half: i32, i: i32): void {
  const zero = i32x4.splat(0);
  const hiMask = i32x4.splat(<i32>0xFFFF0000);
  // Load 4 pairs and decode them to exact f32 lanes x1, x2.
  let x1: v128, x2: v128;
  if (dtype == DT_F32) {
    if (pairing == NEOX) {
      x1 = v128.load(src + (<usize>i << 2));
      x2 = v128.load(src + (<usize>(half + i) << 2));
    } else {
      // Interleaved pairs: deinterleave even/odd lanes.
      const v0 = v128.load(src + (<usize>i << 3));
      const v1 = v128.load(src + (<usize>i << 3), 16);
      x1 = i32x4.shuffle(v0, v1, 0, 2, 4, 6);
      x2 = i32x4.shuffle(v0, v1, 1, 3, 5, 7);
    }
  } else {
    // 16-bit storage: put each value in the top half of a 32-bit lane.
    let t1: v128, t2: v128;
    if (pairing == NEOX) {
      t1 = i16x8.shuffle(zero, v128.load64_zero(src + (<usize>i << 1)), 0, 8, 1, 9, 2, 10, 3, 11);
      t2 = i16x8.shuffle(zero, v128.load64_zero(src + (<usize>(half + i) << 1)), 0, 8, 1, 9, 2, 10, 3, 11);
    } else {
      // Each 32-bit lane already holds one pair: x1 low, x2 high.
      const v = v128.load(src + (<usize>i << 2));
      t1 = i32x4.shl(v, 16);
      t2 = v128.and(v, hiMask);
    }
    // bf16 in the top half IS the f32; f16 needs rebiasing.
    x1 = dtype == DT_F16 ? f16TopToF32x4(t1) : t1;
    x2 = dtype == DT_F16 ? f16TopToF32x4(t2) : t2;
  }

  // Rotate and encode: o1, o2 hold f32 bits, or 16-bit codes in the low half of each lane.
  let o1: v128, o2: v128;
  if (math == MATH_F32) {
    const c = v128.load(tab + (<usize>i << 2));
    const s = v128.load(tab + (<usize>(half + i) << 2));
    const y1 = f32x4.sub(f32x4.mul(x1, c), f32x4.mul(x2, s));
    const y2 = f32x4.add(f32x4.mul(x2, c), f32x4.mul(x1, s));
    if (dtype == DT_F32) { o1 = y1; o2 = y2; }
    else if (dtype == DT_F16) { o1 = f32x4ToF16(y1); o2 = f32x4ToF16(y2); }
    else { o1 = f32x4ToBf16(y1); o2 = f32x4ToBf16(y2); }
  } else {
    // f64: two lanes at a time; promotion of the decoded f32 is exact.
    const cp = tab + (<usize>i << 3);
    const sp = tab + (<usize>(half + i) << 3);
    const x1l = f64x2.promote_low_f32x4(x1);
    const x1h = f64x2.promote_low_f32x4(i32x4.shuffle(x1, x1, 2, 3, 2, 3));
    const x2l = f64x2.promote_low_f32x4(x2);
    const x2h = f64x2.promote_low_f32x4(i32x4.shuffle(x2, x2, 2, 3, 2, 3));
    const cl = v128.load(cp), ch = v128.load(cp, 16);
    const sl = v128.load(sp), sh = v128.load(sp, 16);
    const y1l = f64x2.sub(f64x2.mul(x1l, cl), f64x2.mul(x2l, sl));
    const y1h = f64x2.sub(f64x2.mul(x1h, ch), f64x2.mul(x2h, sh));
    const y2l = f64x2.add(f64x2.mul(x2l, cl), f64x2.mul(x1l, sl));
    const y2h = f64x2.add(f64x2.mul(x2h, ch), f64x2.mul(x1h, sh));
    if (dtype == DT_F32) {
      o1 = i64x2.shuffle(f32x4.demote_f64x2_zero(y1l), f32x4.demote_f64x2_zero(y1h), 0, 2);
      o2 = i64x2.shuffle(f32x4.demote_f64x2_zero(y2l), f32x4.demote_f64x2_zero(y2h), 0, 2);
    } else if (dtype == DT_F16) {
      o1 = i32x4.shuffle(
        f64x2ToHalf(y1l, 42, F16_REBIAS, F16_MIN_NORMAL, F16_OVERFLOW, F16_MAGIC, 0x7E00, 0x7C00),
        f64x2ToHalf(y1h, 42, F16_REBIAS, F16_MIN_NORMAL, F16_OVERFLOW, F16_MAGIC, 0x7E00, 0x7C00), 0, 2, 4, 6);
      o2 = i32x4.shuffle(
        f64x2ToHalf(y2l, 42, F16_REBIAS, F16_MIN_NORMAL, F16_OVERFLOW, F16_MAGIC, 0x7E00, 0x7C00),
        f64x2ToHalf(y2h, 42, F16_REBIAS, F16_MIN_NORMAL, F16_OVERFLOW, F16_MAGIC, 0x7E00, 0x7C00), 0, 2, 4, 6);
    } else {
      o1 = i32x4.shuffle(
        f64x2ToHalf(y1l, 45, BF16_REBIAS, BF16_MIN_NORMAL, BF16_OVERFLOW, BF16_MAGIC, 0x7FC0, 0x7F80),
        f64x2ToHalf(y1h, 45, BF16_REBIAS, BF16_MIN_NORMAL, BF16_OVERFLOW, BF16_MAGIC, 0x7FC0, 0x7F80), 0, 2, 4, 6);
      o2 = i32x4.shuffle(
        f64x2ToHalf(y2l, 45, BF16_REBIAS, BF16_MIN_NORMAL, BF16_OVERFLOW, BF16_MAGIC, 0x7FC0, 0x7F80),
        f64x2ToHalf(y2h, 45, BF16_REBIAS, BF16_MIN_NORMAL, BF16_OVERFLOW, BF16_MAGIC, 0x7FC0, 0x7F80), 0, 2, 4, 6);
    }
  }

  // Store 4 pairs (after all loads of this step, so in place is safe).
  if (dtype == DT_F32) {
    if (pairing == NEOX) {
      v128.store(dst + (<usize>i << 2), o1);
      v128.store(dst + (<usize>(half + i) << 2), o2);
    } else {
      v128.store(dst + (<usize>i << 3), i32x4.shuffle(o1, o2, 0, 4, 1, 5));
      v128.store(dst + (<usize>i << 3), i32x4.shuffle(o1, o2, 2, 6, 3, 7), 16);
    }
  } else if (pairing == NEOX) {
    v128.store64_lane(dst + (<usize>i << 1), i16x8.narrow_i32x4_u(o1, o1), 0);
    v128.store64_lane(dst + (<usize>(half + i) << 1), i16x8.narrow_i32x4_u(o2, o2), 0);
  } else {
    v128.store(dst + (<usize>i << 2), v128.or(o1, i32x4.shl(o2, 16)));
  }
}

// @ts-ignore: decorator
@inline function rotateRow(dtype: i32, math: i32, pairing: i32, src: usize, dst: usize, tab: usize, half: i32, headDim: i32, start: i32): void {
  const es: i32 = dtype == DT_F32 ? 2 : 1; // log2 element bytes
  let i = start;
  for (; i + 4 <= half; i += 4) rotate4(dtype, math, pairing, src, dst, tab, half, i);

  // Scalar tail (half not a multiple of 4): same operations one pair at a time.
  for (; i < half; i++) {
    const p1: usize = pairing == NEOX ? <usize>i : <usize>(2 * i);
    const p2: usize = pairing == NEOX ? <usize>(half + i) : <usize>(2 * i + 1);
    let x1: f32, x2: f32;
    if (dtype == DT_F32) {
      x1 = load<f32>(src + (p1 << 2));
      x2 = load<f32>(src + (p2 << 2));
    } else if (dtype == DT_F16) {
      x1 = f16ToF32(load<u16>(src + (p1 << 1)));
      x2 = f16ToF32(load<u16>(src + (p2 << 1)));
    } else {
      x1 = reinterpret<f32>(<u32>load<u16>(src + (p1 << 1)) << 16);
      x2 = reinterpret<f32>(<u32>load<u16>(src + (p2 << 1)) << 16);
    }
    let o1: u32, o2: u32;
    if (math == MATH_F32) {
      const c = load<f32>(tab + (<usize>i << 2));
      const s = load<f32>(tab + (<usize>(half + i) << 2));
      const y1: f32 = x1 * c - x2 * s;
      const y2: f32 = x2 * c + x1 * s;
      if (dtype == DT_F32) { o1 = reinterpret<u32>(y1); o2 = reinterpret<u32>(y2); }
      else if (dtype == DT_F16) { o1 = f32ToF16(y1); o2 = f32ToF16(y2); }
      else { o1 = f32ToBf16(y1); o2 = f32ToBf16(y2); }
    } else {
      const c = load<f64>(tab + (<usize>i << 3));
      const s = load<f64>(tab + (<usize>(half + i) << 3));
      const y1: f64 = <f64>x1 * c - <f64>x2 * s;
      const y2: f64 = <f64>x2 * c + <f64>x1 * s;
      if (dtype == DT_F32) { o1 = reinterpret<u32>(<f32>y1); o2 = reinterpret<u32>(<f32>y2); }
      else if (dtype == DT_F16) {
        o1 = f64ToHalf(y1, 42, F16_REBIAS, F16_MIN_NORMAL, F16_OVERFLOW, F16_MAGIC, 0x7E00, 0x7C00);
        o2 = f64ToHalf(y2, 42, F16_REBIAS, F16_MIN_NORMAL, F16_OVERFLOW, F16_MAGIC, 0x7E00, 0x7C00);
      } else {
        o1 = f64ToHalf(y1, 45, BF16_REBIAS, BF16_MIN_NORMAL, BF16_OVERFLOW, BF16_MAGIC, 0x7FC0, 0x7F80);
        o2 = f64ToHalf(y2, 45, BF16_REBIAS, BF16_MIN_NORMAL, BF16_OVERFLOW, BF16_MAGIC, 0x7FC0, 0x7F80);
      }
    }
    if (dtype == DT_F32) {
      store<u32>(dst + (p1 << 2), o1);
      store<u32>(dst + (p2 << 2), o2);
    } else {
      store<u16>(dst + (p1 << 1), <u16>o1);
      store<u16>(dst + (p2 << 1), <u16>o2);
    }
  }

  // Pass-through dims [rotaryDim, headDim): integer copies keep every bit (NaN payloads too).
  if (dst != src) {
    let off = <usize>(half << 1) << es;
    const end = <usize>headDim << es;
    for (; off + 16 <= end; off += 16) v128.store(dst + off, v128.load(src + off));
    for (; off < end; off += 2) store<u16>(dst + off, load<u16>(src + off));
  }
}

/** Dispatch to the row variant for kind = dtype * 4 + math * 2 + pairing: pairs [start, half), then pass-through dims. */
function rotateRowAny(kind: i32, src: usize, dst: usize, tab: usize, half: i32, headDim: i32, start: i32): void {
  switch (kind) {
    case 0: rotateRow(DT_F32, MATH_F32, NEOX, src, dst, tab, half, headDim, start); break;
    case 1: rotateRow(DT_F32, MATH_F32, GPTJ, src, dst, tab, half, headDim, start); break;
    case 2: rotateRow(DT_F32, MATH_F64, NEOX, src, dst, tab, half, headDim, start); break;
    case 3: rotateRow(DT_F32, MATH_F64, GPTJ, src, dst, tab, half, headDim, start); break;
    case 4: rotateRow(DT_F16, MATH_F32, NEOX, src, dst, tab, half, headDim, start); break;
    case 5: rotateRow(DT_F16, MATH_F32, GPTJ, src, dst, tab, half, headDim, start); break;
    case 6: rotateRow(DT_F16, MATH_F64, NEOX, src, dst, tab, half, headDim, start); break;
    case 7: rotateRow(DT_F16, MATH_F64, GPTJ, src, dst, tab, half, headDim, start); break;
    case 8: rotateRow(DT_BF16, MATH_F32, NEOX, src, dst, tab, half, headDim, start); break;
    case 9: rotateRow(DT_BF16, MATH_F32, GPTJ, src, dst, tab, half, headDim, start); break;
    case 10: rotateRow(DT_BF16, MATH_F64, NEOX, src, dst, tab, half, headDim, start); break;
    default: rotateRow(DT_BF16, MATH_F64, GPTJ, src, dst, tab, half, headDim, start); break;
  }
}

/** Rows of n heads from pair `start` on (nothing to do when start == half and in place). */
function rowsAny(kind: i32, n: i32, src: usize, dst: usize, inB: usize, outB: usize, tab: usize, half: i32, headDim: i32, start: i32): void {
  if (start == half && ((src == dst && inB == outB) || headDim == half << 1)) return;
  for (let h = 0; h < n; h++, src += inB, dst += outB) rotateRowAny(kind, src, dst, tab, half, headDim, start);
}

/**
 * Fused RoPE over q and k, tokens [t0, t1) of the batch*seqLen tokens (t = b*seqLen + s;
 * any split of [0, batch*seqLen) gives the same bits). The table row of token t, at
 * table + t*rotaryDim*sizeof(math), holds c[0..half) then sn[0..half), half = rotaryDim/2.
 * For every q head then every k head, for every pair i < half with
 * (x1, x2) = (x[i], x[i+half]) for neox or (x[2i], x[2i+1]) for gptj:
 *
 *   y1 = (x1*c[i]) - (x2*sn[i])
 *   y2 = (x2*c[i]) + (x1*sn[i])
 *
 * each operation rounded in `math` precision, the result rounded once to the
 * storage dtype; dims [rotaryDim, headDim) are copied bit-exact.
 *
 * scratch: rotaryDim f32 per thread slot (slot < thread count, as the worker pool passes it),
 * used by 16-bit storage with f32 math.
 *
 * Pointers are byte addresses; strides (batch, seq, head) are in elements and
 * may be anything whose addresses land in memory (i32 arithmetic wraps mod 2^32).
 * Output may alias input only exactly (same pointer and strides: in place).
 */
export function rope(
  dtype: i32, math: i32, pairing: i32,
  batch: i32, seqLen: i32, headDim: i32, rotaryDim: i32,
  qHeads: i32,
  qIn: usize, qInB: i32, qInS: i32, qInH: i32,
  qOut: usize, qOutB: i32, qOutS: i32, qOutH: i32,
  kHeads: i32,
  kIn: usize, kInB: i32, kInS: i32, kInH: i32,
  kOut: usize, kOutB: i32, kOutS: i32, kOutH: i32,
  table: usize, scratch: usize,
  t0: i32, t1: i32, slot: i32,
): void {
  const kind = dtype * 4 + math * 2 + pairing;
  const half = rotaryDim >> 1;
  const es: i32 = dtype == DT_F32 ? 2 : 1;
  const tableRow = <usize>rotaryDim << (math == MATH_F64 ? 3 : 2);
  // Head strides in bytes.
  const qInHB = <usize>qInH << es, qOutHB = <usize>qOutH << es;
  const kInHB = <usize>kInH << es, kOutHB = <usize>kOutH << es;
  const fast = math == MATH_F32 && dtype != DT_F32;
  const myScratch = scratch + (<usize>slot * <usize>rotaryDim << 2);
  for (let t = t0; t < t1; t++) {
    const b = t / seqLen;
    const s = t - b * seqLen;
    // One pass per token: its table row stays hot in L1 for all q and k heads.
    const tab = table + <usize>t * tableRow;
    const qi = qIn + (<usize>(b * qInB + s * qInS) << es);
    const qo = qOut + (<usize>(b * qOutB + s * qOutS) << es);
    const ki = kIn + (<usize>(b * kInB + s * kInS) << es);
    const ko = kOut + (<usize>(b * kOutB + s * kOutS) << es);
    // 16-bit storage with f32 math: 8-pair steps over all rows first, then the rest of each row.
    const start = fast ? token16(dtype, pairing, half, tab, myScratch, qHeads, qi, qo, qInHB, qOutHB, kHeads, ki, ko, kInHB, kOutHB) : 0;
    rowsAny(kind, qHeads, qi, qo, qInHB, qOutHB, tab, half, headDim, start);
    rowsAny(kind, kHeads, ki, ko, kInHB, kOutHB, tab, half, headDim, start);
  }
}
