// Elementwise kernels, WASM SIMD, wrapped by src/kernels/wasm/elementwise.ts:
//
//   rmsnorm:  out[r, i] = x[r, i] * (1 / sqrt(sum_j x[r, j]^2 / dim + eps)) * w[i]
//   swiglu:   out[i]    = g / (1 + exp(-g)) * up[i]                     (g = gate[i])
//   softmax:  x[i]     <- exp(x[i] - m) / sum_j exp(x[j] - m),   m = max_j x[j]
//   round_f16 / round_bf16: f32 values rounded to the nearest f16 / bf16 (ties to even), kept as f32
//   layernorm: out[r, i] = (x[r, i] - m) * (1 / sqrt(v + eps)) * w[i] + b[i],
//              m = sum_j x[r, j] / dim,  v = sum_j (x[r, j] - m)^2 / dim   (biased variance)
//   quick_gelu: out[i]  = x / (1 + exp(k x))                              (k = -1.702)
//   add_bias:  out[r, i] = x[r, i] + b[i]                                 (f32 adds)
//   add:       out[i]    = a[i] + b[i]                                    (f32 adds)
//
// layernorm is bit-identical to the float64 reference (layerNorm in src/models/clip/model.ts):
// its two sums are scalar f64 sums in the reference's order (left to right), and the output is
// the same f64 operations in the same order, rounded once to f32. quick_gelu computes in f64 like
// swiglu (exp64 below), so it is within 1 f32 ulp of the reference (usually identical). add_bias
// and add are exact f32 adds, the same as the reference's (an f32 + f32 sum rounded through f64
// is the correctly rounded f32 sum), so bit-identical.
//
// rmsnorm, swiglu and softmax compute in f64 (f64x2 lanes) and round once to f32 on store, like
// the float64 references in src/ops. Their only differences from the references are the order
// of the f64 sums (lanes, then a fixed reduction) and exp, which is evaluated here (exp64 below,
// error ~1 f64 ulp) rather than by the JS engine: both are far below half an f32 ulp, so the
// outputs are almost always bit-identical and never more than 1 f32 ulp apart. The rounding
// kernels are pure bit arithmetic (i32x4) and match roundF32ArrayInPlace (src/core/dtype.ts)
// bit for bit.
//
// Every row / element is computed the same way wherever a range starts, so results do not
// depend on how the pool splits the rows. Tails (fewer than 4 values) go through the same SIMD
// code with zero-filled lanes. No static data (the shared memory's data region belongs to others).

// ---------------------------------------------------------------------------
// Helpers: 1..3 value tails through the vector code, f32x4 <-> 2 x f64x2.
// ---------------------------------------------------------------------------

/** The `count` (< 4) f32/i32 values at p in the low lanes, zeros above. */
// @ts-ignore: decorator
@inline function loadTail(p: usize, count: i32): v128 {
  let v = i32x4.splat(0);
  v = i32x4.replace_lane(v, 0, load<i32>(p));
  if (count > 1) v = i32x4.replace_lane(v, 1, load<i32>(p, 4));
  if (count > 2) v = i32x4.replace_lane(v, 2, load<i32>(p, 8));
  return v;
}

// @ts-ignore: decorator
@inline function storeTail(p: usize, v: v128, count: i32): void {
  store<i32>(p, i32x4.extract_lane(v, 0));
  if (count > 1) store<i32>(p, i32x4.extract_lane(v, 1), 4);
  if (count > 2) store<i32>(p, i32x4.extract_lane(v, 2), 8);
}

// @ts-ignore: decorator
@inline function lo64(v: v128): v128 {
  return f64x2.promote_low_f32x4(v);
}

// @ts-ignore: decorator
@inline function hi64(v: v128): v128 {
  return f64x2.promote_low_f32x4(i32x4.shuffle(v, v, 2, 3, 2, 3));
}

/** Rounds two f64x2 to f32 once each and packs them into one f32x4. */
// @ts-ignore: decorator
@inline function to32(lo: v128, hi: v128): v128 {
  return i32x4.shuffle(f32x4.demote_f64x2_zero(lo), f32x4.demote_f64x2_zero(hi), 0, 1, 4, 5);
}

// ---------------------------------------------------------------------------
// exp in f64x2, no tables: x = k ln2 + r, |r| <= ~ln2/2 (Cody-Waite split of ln2), exp(r) by
// its Taylor polynomial to degree 13 (truncation < 1e-17 relative, Estrin's scheme), times 2^k built from the
// exponent bits in two halves (so k down to -1076 reaches the subnormals and k = 1024 stays
// finite). Overflows to +inf past the same threshold as fdlibm (x > 709.78271289338397);
// NaN stays NaN, -inf gives 0.
// ---------------------------------------------------------------------------

// The constants live in a heap block (layout EXP_CONSTANTS in elementwise.ts, 16 bytes each) read
// with plain loads: a v128.const is rematerialised by V8 at every use (several instructions
// each), which made exp twice as slow.
// @ts-ignore: decorator
@inline function C(c: usize, i: usize): v128 {
  return v128.load(c + (i << 4));
}

// @ts-ignore: decorator
@inline function exp64(x: v128, c: usize): v128 {
  const over = f64x2.gt(x, C(c, 0));
  const xc = f64x2.max(x, C(c, 1)); // wasm max keeps NaN
  // Adding 1.5 * 2^52 rounds to an integer (ties to even) and leaves k in the low word of each lane.
  const magic = C(c, 2);
  const t = f64x2.add(f64x2.mul(xc, C(c, 3)), magic);
  const kf = f64x2.sub(t, magic);
  const r = f64x2.sub(f64x2.sub(xc, f64x2.mul(kf, C(c, 4))), f64x2.mul(kf, C(c, 5)));
  // Estrin's scheme: the terms pair up in independent chains (depth 4 multiply-adds, not Horner's 13).
  const r2 = f64x2.mul(r, r);
  const r4 = f64x2.mul(r2, r2);
  const r8 = f64x2.mul(r4, r4);
  const q0 = f64x2.add(C(c, 6), r);
  const q1 = f64x2.add(C(c, 7), f64x2.mul(r, C(c, 8)));
  const q2 = f64x2.add(C(c, 9), f64x2.mul(r, C(c, 10)));
  const q3 = f64x2.add(C(c, 11), f64x2.mul(r, C(c, 12)));
  const q4 = f64x2.add(C(c, 13), f64x2.mul(r, C(c, 14)));
  const q5 = f64x2.add(C(c, 15), f64x2.mul(r, C(c, 16)));
  const q6 = f64x2.add(C(c, 17), f64x2.mul(r, C(c, 18)));
  const w0 = f64x2.add(q0, f64x2.mul(q1, r2));
  const w1 = f64x2.add(q2, f64x2.mul(q3, r2));
  const w2 = f64x2.add(q4, f64x2.mul(q5, r2));
  const z0 = f64x2.add(w0, f64x2.mul(w1, r4));
  const z1 = f64x2.add(w2, f64x2.mul(q6, r4));
  const p = f64x2.add(z0, f64x2.mul(z1, r8));
  // 2^k1 and 2^k2 (k1 + k2 = k, both in [-538, 512]) from i32 lanes 0 and 2 (k) into the high
  // words (exponent field); i32 ops only, 64-bit lane shifts are slow in V8 without AVX-512.
  const k1 = i32x4.shr_s(t, 1);
  const k2 = i32x4.sub(t, k1);
  const zero = i32x4.splat(0);
  const bias = C(c, 20);
  const s1 = i32x4.shuffle(zero, i32x4.shl(i32x4.add(k1, bias), 20), 0, 4, 0, 6);
  const s2 = i32x4.shuffle(zero, i32x4.shl(i32x4.add(k2, bias), 20), 0, 4, 0, 6);
  const e = f64x2.mul(f64x2.mul(p, s1), s2);
  return v128.bitselect(C(c, 19), e, over);
}

// ---------------------------------------------------------------------------
// RMSNorm over rows [r0, r1) of dim values.
// ---------------------------------------------------------------------------

/** Sum of x^2 over one row in f64 (squares of f32 are exact in f64): 8 lanes, then a fixed tree. */
// @ts-ignore: decorator
@inline function sumSquares(x: usize, dim: i32): f64 {
  let a0 = f64x2.splat(0), a1 = f64x2.splat(0), a2 = f64x2.splat(0), a3 = f64x2.splat(0);
  let i = 0;
  for (; i + 8 <= dim; i += 8) {
    const p = x + (<usize>i << 2);
    const v = v128.load(p);
    const w = v128.load(p, 16);
    const v0 = lo64(v), v1 = hi64(v), w0 = lo64(w), w1 = hi64(w);
    a0 = f64x2.add(a0, f64x2.mul(v0, v0));
    a1 = f64x2.add(a1, f64x2.mul(v1, v1));
    a2 = f64x2.add(a2, f64x2.mul(w0, w0));
    a3 = f64x2.add(a3, f64x2.mul(w1, w1));
  }
  if (i + 4 <= dim) {
    const v = v128.load(x + (<usize>i << 2));
    const v0 = lo64(v), v1 = hi64(v);
    a0 = f64x2.add(a0, f64x2.mul(v0, v0));
    a1 = f64x2.add(a1, f64x2.mul(v1, v1));
    i += 4;
  }
  if (i < dim) {
    const v = loadTail(x + (<usize>i << 2), dim - i);
    const v0 = lo64(v), v1 = hi64(v);
    a2 = f64x2.add(a2, f64x2.mul(v0, v0));
    a3 = f64x2.add(a3, f64x2.mul(v1, v1));
  }
  const s = f64x2.add(f64x2.add(a0, a1), f64x2.add(a2, a3));
  return f64x2.extract_lane(s, 0) + f64x2.extract_lane(s, 1);
}

// @ts-ignore: decorator
@inline function scaleBlock(v: v128, w: v128, scale: v128): v128 {
  return to32(f64x2.mul(f64x2.mul(lo64(v), scale), lo64(w)), f64x2.mul(f64x2.mul(hi64(v), scale), hi64(w)));
}

/** out and x are rows * dim f32 (out may be x), w dim f32. slot unused. */
export function rmsnorm(out: usize, x: usize, w: usize, eps: f64, dim: i32, r0: i32, r1: i32, slot: i32): void {
  slot;
  const rowBytes = <usize>dim << 2;
  for (let r = r0; r < r1; r++) {
    const xr = x + <usize>r * rowBytes;
    const or = out + <usize>r * rowBytes;
    const ss = sumSquares(xr, dim);
    const scale = f64x2.splat(1.0 / Math.sqrt(ss / <f64>dim + eps));
    let i = 0;
    for (; i + 4 <= dim; i += 4) {
      const off = <usize>i << 2;
      v128.store(or + off, scaleBlock(v128.load(xr + off), v128.load(w + off), scale));
    }
    if (i < dim) {
      const off = <usize>i << 2;
      storeTail(or + off, scaleBlock(loadTail(xr + off, dim - i), loadTail(w + off, dim - i), scale), dim - i);
    }
  }
}

// ---------------------------------------------------------------------------
// SwiGLU over elements [r0 * chunk, min(r1 * chunk, n)).
// ---------------------------------------------------------------------------

// @ts-ignore: decorator
@inline function silu64(g: v128, c: usize): v128 {
  return f64x2.div(g, f64x2.add(C(c, 6), exp64(f64x2.neg(g), c)));
}

// @ts-ignore: decorator
@inline function swigluBlock(g: v128, u: v128, c: usize): v128 {
  return to32(f64x2.mul(silu64(lo64(g), c), lo64(u)), f64x2.mul(silu64(hi64(g), c), hi64(u)));
}

/** out, gate, up: n f32 each (out may be gate or up). chunk is a multiple of 4; c: exp constants. */
export function swiglu(out: usize, gate: usize, up: usize, n: i32, chunk: i32, c: usize, r0: i32, r1: i32, slot: i32): void {
  slot;
  const start = r0 * chunk;
  const end = min(n, r1 * chunk);
  let i = start;
  for (; i + 4 <= end; i += 4) {
    const off = <usize>i << 2;
    v128.store(out + off, swigluBlock(v128.load(gate + off), v128.load(up + off), c));
  }
  if (i < end) {
    const off = <usize>i << 2;
    storeTail(out + off, swigluBlock(loadTail(gate + off, end - i), loadTail(up + off, end - i), c), end - i);
  }
}

// ---------------------------------------------------------------------------
// Softmax of one row of n f32 in place.
// ---------------------------------------------------------------------------

/** exp(x - m) of 4 f32 as two f64x2 (low, high). */
// @ts-ignore: decorator
@inline function expLo(v: v128, m: v128, c: usize): v128 {
  return exp64(f64x2.sub(lo64(v), m), c);
}

// @ts-ignore: decorator
@inline function expHi(v: v128, m: v128, c: usize): v128 {
  return exp64(f64x2.sub(hi64(v), m), c);
}

/** c: exp constants. */
export function softmax(x: usize, n: i32, c: usize): void {
  if (n <= 0) return;
  // The maximum in f32 lanes (exact); f32x4.max propagates NaN like the reference's NaN test.
  // Tail lanes are filled with the first value, which cannot change the maximum.
  const first = load<f32>(x);
  let mv = f32x4.splat(first);
  let i = 0;
  for (; i + 4 <= n; i += 4) mv = f32x4.max(mv, v128.load(x + (<usize>i << 2)));
  for (; i < n; i++) mv = f32x4.max(mv, f32x4.splat(load<f32>(x + (<usize>i << 2))));
  const m4 = f32x4.max(mv, i32x4.shuffle(mv, mv, 2, 3, 0, 1));
  const m32 = f32x4.max(m4, i32x4.shuffle(m4, m4, 1, 0, 3, 2));
  const m = f64x2.splat(<f64>f32x4.extract_lane(m32, 0));

  let s0 = f64x2.splat(0), s1 = f64x2.splat(0);
  i = 0;
  for (; i + 4 <= n; i += 4) {
    const v = v128.load(x + (<usize>i << 2));
    s0 = f64x2.add(s0, expLo(v, m, c));
    s1 = f64x2.add(s1, expHi(v, m, c));
  }
  const tail = n - i;
  if (tail > 0) {
    const v = loadTail(x + (<usize>i << 2), tail);
    const e0 = expLo(v, m, c);
    const e1 = expHi(v, m, c);
    // Only the real lanes count: lane j holds value i + j.
    s0 = f64x2.add(s0, tail > 1 ? e0 : f64x2.replace_lane(e0, 1, 0.0));
    if (tail > 2) s1 = f64x2.add(s1, f64x2.replace_lane(e1, 1, 0.0));
  }
  const s = f64x2.add(s0, s1);
  const sum = f64x2.splat(f64x2.extract_lane(s, 0) + f64x2.extract_lane(s, 1));

  i = 0;
  for (; i + 4 <= n; i += 4) {
    const p = x + (<usize>i << 2);
    const v = v128.load(p);
    v128.store(p, to32(f64x2.div(expLo(v, m, c), sum), f64x2.div(expHi(v, m, c), sum)));
  }
  if (tail > 0) {
    const p = x + (<usize>i << 2);
    const v = loadTail(p, tail);
    storeTail(p, to32(f64x2.div(expLo(v, m, c), sum), f64x2.div(expHi(v, m, c), sum)), tail);
  }
}

// ---------------------------------------------------------------------------
// Rounding f32 values to f16 / bf16 in place, over elements [r0 * chunk, min(r1 * chunk, n)).
// Per slot, res + 16 * slot holds i32 [values past the overflow threshold, largest finite |x|
// bits]; a range adds its count and maxes its bits into them (the caller zeroes them first).
// bigBits: what a value past the threshold becomes (sign kept): inf (0x7f800000) or, when
// clamping, the format's largest finite value (f16 0x477fe000, bf16 0x7f7f0000).
// ---------------------------------------------------------------------------

// @ts-ignore: decorator
@inline function roundF16Block(u: v128, big: v128): v128 {
  const a = v128.and(u, i32x4.splat(0x7fffffff));
  const sign = v128.and(u, i32x4.splat(<i32>0x80000000));
  const finite = i32x4.lt_u(a, i32x4.splat(0x7f800000));
  const past = v128.and(i32x4.ge_u(a, i32x4.splat(0x477ff000)), finite);
  const tiny = i32x4.lt_u(a, i32x4.splat(0x38800000));
  // Normal f16: keep 10 mantissa bits, round at bit 13, ties to even.
  const normal = v128.and(i32x4.add(i32x4.add(a, i32x4.splat(0x0fff)), v128.and(i32x4.shr_u(a, 13), i32x4.splat(1))), i32x4.splat(<i32>0xffffe000));
  // Below 2^-14 the spacing is 2^-24: scale, round to an integer (ties to even), scale back (all exact).
  const sub = f32x4.mul(f32x4.nearest(f32x4.mul(a, f32x4.splat(16777216.0))), f32x4.splat(5.9604644775390625e-8));
  let mag = v128.bitselect(sub, normal, tiny);
  mag = v128.bitselect(big, mag, past);
  return v128.bitselect(v128.or(sign, mag), u, finite);
}

// @ts-ignore: decorator
@inline function roundBf16Block(u: v128, big: v128): v128 {
  const a = v128.and(u, i32x4.splat(0x7fffffff));
  const sign = v128.and(u, i32x4.splat(<i32>0x80000000));
  const finite = i32x4.lt_u(a, i32x4.splat(0x7f800000));
  // Round at bit 16, ties to even; a carry walks into the exponent (and up to inf).
  const r = v128.and(i32x4.add(i32x4.add(a, i32x4.splat(0x7fff)), v128.and(i32x4.shr_u(a, 16), i32x4.splat(1))), i32x4.splat(<i32>0xffff0000));
  const past = i32x4.ge_u(r, i32x4.splat(0x7f800000));
  const fin = v128.or(sign, v128.bitselect(big, r, past));
  // NaN becomes quiet, inf stays.
  const nan = i32x4.gt_u(a, i32x4.splat(0x7f800000));
  const special = v128.or(u, v128.and(nan, i32x4.splat(0x00400000)));
  return v128.bitselect(fin, special, finite);
}

/** Lanes of finite values past the overflow threshold (-1) and finite |x| bits (0 elsewhere). */
// @ts-ignore: decorator
@inline function pastMask(dtypeBf16: bool, u: v128): v128 {
  const a = v128.and(u, i32x4.splat(0x7fffffff));
  const finite = i32x4.lt_u(a, i32x4.splat(0x7f800000));
  if (dtypeBf16) return v128.and(i32x4.ge_u(a, i32x4.splat(0x7f7f8000)), finite);
  return v128.and(i32x4.ge_u(a, i32x4.splat(0x477ff000)), finite);
}

// @ts-ignore: decorator
@inline function finiteAbs(u: v128): v128 {
  const a = v128.and(u, i32x4.splat(0x7fffffff));
  return v128.and(a, i32x4.lt_u(a, i32x4.splat(0x7f800000)));
}

// @ts-ignore: decorator
@inline function roundRange(bf16: bool, p: usize, n: i32, bigBits: i32, res: usize, chunk: i32, r0: i32, r1: i32, slot: i32): void {
  const big = i32x4.splat(bigBits);
  const start = r0 * chunk;
  const end = min(n, r1 * chunk);
  let count = i32x4.splat(0);
  let amax = i32x4.splat(0);
  let i = start;
  for (; i + 4 <= end; i += 4) {
    const q = p + (<usize>i << 2);
    const u = v128.load(q);
    count = i32x4.sub(count, pastMask(bf16, u));
    amax = i32x4.max_u(amax, finiteAbs(u));
    v128.store(q, bf16 ? roundBf16Block(u, big) : roundF16Block(u, big));
  }
  if (i < end) {
    const q = p + (<usize>i << 2);
    const u = loadTail(q, end - i); // zero lanes count nothing and do not raise the maximum
    count = i32x4.sub(count, pastMask(bf16, u));
    amax = i32x4.max_u(amax, finiteAbs(u));
    storeTail(q, bf16 ? roundBf16Block(u, big) : roundF16Block(u, big), end - i);
  }
  const c2 = i32x4.add(count, i32x4.shuffle(count, count, 2, 3, 0, 1));
  const c1 = i32x4.add(c2, i32x4.shuffle(c2, c2, 1, 0, 3, 2));
  const m2 = i32x4.max_u(amax, i32x4.shuffle(amax, amax, 2, 3, 0, 1));
  const m1 = i32x4.max_u(m2, i32x4.shuffle(m2, m2, 1, 0, 3, 2));
  const at = res + (<usize>slot << 4);
  store<i32>(at, load<i32>(at) + i32x4.extract_lane(c1, 0));
  const mb = <u32>i32x4.extract_lane(m1, 0);
  if (mb > load<u32>(at, 4)) store<u32>(at, mb, 4);
}

export function round_f16(p: usize, n: i32, bigBits: i32, res: usize, chunk: i32, r0: i32, r1: i32, slot: i32): void {
  roundRange(false, p, n, bigBits, res, chunk, r0, r1, slot);
}

export function round_bf16(p: usize, n: i32, bigBits: i32, res: usize, chunk: i32, r0: i32, r1: i32, slot: i32): void {
  roundRange(true, p, n, bigBits, res, chunk, r0, r1, slot);
}

// ---------------------------------------------------------------------------
// LayerNorm over rows [r0, r1) of dim values.
// ---------------------------------------------------------------------------

// @ts-ignore: decorator
@inline function lnHalf(v: v128, mean: v128, inv: v128, w: v128, b: v128): v128 {
  return f64x2.add(f64x2.mul(f64x2.mul(f64x2.sub(v, mean), inv), w), b);
}

// @ts-ignore: decorator
@inline function lnBlock(v: v128, w: v128, b: v128, mean: v128, inv: v128): v128 {
  return to32(lnHalf(lo64(v), mean, inv, lo64(w), lo64(b)), lnHalf(hi64(v), mean, inv, hi64(w), hi64(b)));
}

/** out and x are rows * dim f32 (out may be x), w and b dim f32. slot unused. */
export function layernorm(out: usize, x: usize, w: usize, b: usize, eps: f64, dim: i32, r0: i32, r1: i32, slot: i32): void {
  slot;
  const rowBytes = <usize>dim << 2;
  for (let r = r0; r < r1; r++) {
    const xr = x + <usize>r * rowBytes;
    const or = out + <usize>r * rowBytes;
    // Both sums left to right in f64, as the reference does (lanes would change the rounding).
    let sum: f64 = 0;
    for (let i = 0; i < dim; i++) sum += <f64>load<f32>(xr + (<usize>i << 2));
    const mean = sum / <f64>dim;
    let v: f64 = 0;
    for (let i = 0; i < dim; i++) {
      const d = <f64>load<f32>(xr + (<usize>i << 2)) - mean;
      v += d * d;
    }
    const inv = 1.0 / Math.sqrt(v / <f64>dim + eps);
    const meanv = f64x2.splat(mean);
    const invv = f64x2.splat(inv);
    let i = 0;
    for (; i + 4 <= dim; i += 4) {
      const off = <usize>i << 2;
      v128.store(or + off, lnBlock(v128.load(xr + off), v128.load(w + off), v128.load(b + off), meanv, invv));
    }
    if (i < dim) {
      const off = <usize>i << 2;
      const t = dim - i;
      storeTail(or + off, lnBlock(loadTail(xr + off, t), loadTail(w + off, t), loadTail(b + off, t), meanv, invv), t);
    }
  }
}

// ---------------------------------------------------------------------------
// quick_gelu over elements [r0 * chunk, min(r1 * chunk, n)).
// ---------------------------------------------------------------------------

// @ts-ignore: decorator
@inline function quickGelu64(v: v128, k: v128, c: usize): v128 {
  return f64x2.div(v, f64x2.add(C(c, 6), exp64(f64x2.mul(k, v), c)));
}

/** out, x: n f32 (out may be x); k: the exp's factor (-1.702); chunk a multiple of 4; c: exp constants. */
export function quick_gelu(out: usize, x: usize, n: i32, k: f64, chunk: i32, c: usize, r0: i32, r1: i32, slot: i32): void {
  slot;
  const kv = f64x2.splat(k);
  const start = r0 * chunk;
  const end = min(n, r1 * chunk);
  let i = start;
  for (; i + 4 <= end; i += 4) {
    const off = <usize>i << 2;
    const v = v128.load(x + off);
    v128.store(out + off, to32(quickGelu64(lo64(v), kv, c), quickGelu64(hi64(v), kv, c)));
  }
  if (i < end) {
    const off = <usize>i << 2;
    const v = loadTail(x + off, end - i);
    storeTail(out + off, to32(quickGelu64(lo64(v), kv, c), quickGelu64(hi64(v), kv, c)), end - i);
  }
}

// ---------------------------------------------------------------------------
// f32 adds: a bias broadcast over rows [r0, r1), and two arrays over [r0 * chunk, min(r1 * chunk, n)).
// ---------------------------------------------------------------------------

/** out and x are rows * dim f32 (out may be x), b dim f32. */
export function add_bias(out: usize, x: usize, b: usize, dim: i32, r0: i32, r1: i32, slot: i32): void {
  slot;
  const rowBytes = <usize>dim << 2;
  for (let r = r0; r < r1; r++) {
    const xr = x + <usize>r * rowBytes;
    const or = out + <usize>r * rowBytes;
    let i = 0;
    for (; i + 4 <= dim; i += 4) {
      const off = <usize>i << 2;
      v128.store(or + off, f32x4.add(v128.load(xr + off), v128.load(b + off)));
    }
    for (; i < dim; i++) {
      const off = <usize>i << 2;
      store<f32>(or + off, load<f32>(xr + off) + load<f32>(b + off));
    }
  }
}

/** out, a, b: n f32 (out may be a or b); chunk a multiple of 4. */
export function add(out: usize, a: usize, b: usize, n: i32, chunk: i32, r0: i32, r1: i32, slot: i32): void {
  slot;
  const start = r0 * chunk;
  const end = min(n, r1 * chunk);
  let i = start;
  for (; i + 4 <= end; i += 4) {
    const off = <usize>i << 2;
    v128.store(out + off, f32x4.add(v128.load(a + off), v128.load(b + off)));
  }
  for (; i < end; i++) {
    const off = <usize>i << 2;
    store<f32>(out + off, load<f32>(a + off) + load<f32>(b + off));
  }
}
