// Causal multi-head attention over a KV cache, WASM SIMD, for src/kernels/wasm/attention.ts,
// plus the f32 -> f16 store of the KV cache (src/generate/kv-cache.ts). Contract: the reference
// src/ops/attention.ts. For each query head h of a row r = (token t, kv head g), h / group = g:
//
//     s_j = (q . K[g, j]) * scale              j in [lo, pos]   (dot in f32 lanes, scale in f64)
//     s_j rounded to sType (via f32) when asked, as the reference does
//     e_j = exp(s_j - max s)  (f64),  a_j = e_j / sum e  (f64), rounded to f32 (or pType via f32)
//     out[t, h] = sum_j a_j V[g, j]            (f32 lanes)
//
// Precision: a dot of n = headDim terms goes through at most n/16 + 10 f32 roundings (4 chains of
// 4 lanes, tails, a fixed reduction tree), so |s - exact| <= (n/4 + 8) * 2^-24 * scale * sum|q k|;
// the weighted sum of `cnt` positions is a chain of cnt f32 additions per output, so
// |out - exact| <= (cnt + 2) * 2^-24 * sum_j a_j |v_j| + (score error) (first order).
// K and V in f16 are decoded exactly (inf/NaN too). The order of every operation depends on
// headDim and the row's own data only, never on which rows share a call or a thread: a token's
// result is bit-identical however the rows are batched or split (batch invariance).
//
// Grouped-query attention: a row computes the `group` query heads of one kv head together, so each
// K row and each V row of the cache is read from memory once per group instead of once per head
// (f16 rows are also decoded once). Each head still runs exactly the operations a row of its own
// would, in the same order (see attn_rows), so the results are those of one head per row, bit for bit.
//
// exp is computed here (AssemblyScript's Math.exp uses a lookup table, i.e. static data, which
// kernels must not have): Cody-Waite reduction by ln 2 and a degree-13 Taylor polynomial,
// a few f64 ulps, far below the f32 rounding that follows.
//
// No static data (the shared memory's kernel-data region belongs to other kernels).

const T_F32: i32 = 0;
const T_F16: i32 = 1;
const T_BF16: i32 = 2;

// ---------------------------------------------------------------------------
// Conversions
// ---------------------------------------------------------------------------

/** f16 bits in the top half of each i32 lane -> exact f32 (subnormals, inf and NaN included). */
// @ts-ignore: decorator
@inline function f16TopToF32x4(top: v128): v128 {
  // Sign stays at bit 31, exponent and mantissa land in f32's bits 27..13; times 2^112 rebiases.
  const v = f32x4.mul(v128.and(i32x4.shr_s(top, 3), i32x4.splat(<i32>0x8fffe000)), f32x4.splat(reinterpret<f32>(0x77800000)));
  const special = i32x4.eq(v128.and(top, i32x4.splat(0x7c000000)), i32x4.splat(0x7c000000));
  return v128.or(v, v128.and(special, i32x4.splat(0x7f800000)));
}

/** Halves 0..3 of 8 packed f16 (bytes of raw) into the top of the lanes. */
// @ts-ignore: decorator
@inline function lowHalves(raw: v128): v128 {
  return i8x16.shuffle(i32x4.splat(0), raw, 0, 0, 16, 17, 0, 0, 18, 19, 0, 0, 20, 21, 0, 0, 22, 23);
}

/** Halves 4..7 of 8 packed f16 into the top of the lanes. */
// @ts-ignore: decorator
@inline function highHalves(raw: v128): v128 {
  return i8x16.shuffle(i32x4.splat(0), raw, 0, 0, 24, 25, 0, 0, 26, 27, 0, 0, 28, 29, 0, 0, 30, 31);
}

// @ts-ignore: decorator
@inline function f16ToF32(h: u32): f32 {
  const v = reinterpret<f32>((<i32>(h << 16) >> 3) & <i32>0x8fffe000) * reinterpret<f32>(0x77800000);
  return (h & 0x7c00) == 0x7c00 ? reinterpret<f32>(reinterpret<u32>(v) | 0x7f800000) : v;
}

/** f32 -> f16 bits, round to nearest even; NaN -> 0x7e00 with the sign kept. */
// @ts-ignore: decorator
@inline function f32ToF16(x: f32): u32 {
  const bits = reinterpret<u32>(x);
  const sign = bits & 0x80000000;
  const a = bits ^ sign;
  let r: u32;
  if (a > 0x477fffff) r = a > 0x7f800000 ? 0x7e00 : 0x7c00;
  // Below 2^-14: adding 0.5 makes the FPU round at the subnormal quantum 2^-24.
  else if (a < 0x38800000) r = reinterpret<u32>(reinterpret<f32>(a) + 0.5) - 0x3f000000;
  // Normal: rebias (-112 << 23) and round at bit 13, ties to even through the odd bit.
  else r = (a + 0xc8000fff + ((a >> 13) & 1)) >> 13;
  return r | (sign >> 16);
}

/** SIMD twin of f32ToF16 (bits in the low half of each lane). */
// @ts-ignore: decorator
@inline function f32x4ToF16(x: v128): v128 {
  const sign = v128.and(x, i32x4.splat(<i32>0x80000000));
  const a = v128.xor(x, sign);
  const odd = v128.and(i32x4.shr_u(a, 13), i32x4.splat(1));
  let r = i32x4.shr_u(i32x4.add(i32x4.add(a, i32x4.splat(<i32>0xc8000fff)), odd), 13);
  const sub = i32x4.sub(f32x4.add(a, f32x4.splat(0.5)), i32x4.splat(0x3f000000));
  r = v128.bitselect(sub, r, i32x4.lt_s(a, i32x4.splat(0x38800000)));
  const big = v128.bitselect(i32x4.splat(0x7e00), i32x4.splat(0x7c00), i32x4.gt_s(a, i32x4.splat(0x7f800000)));
  r = v128.bitselect(big, r, i32x4.gt_s(a, i32x4.splat(0x477fffff)));
  return v128.or(r, i32x4.shr_u(sign, 16));
}

/** f32 -> bf16 bits, round to nearest even; NaN stays NaN (quiet). */
// @ts-ignore: decorator
@inline function f32ToBf16(x: f32): u32 {
  const bits = reinterpret<u32>(x);
  if (x != x) return (bits >> 16) | 0x40;
  return (bits + 0x7fff + ((bits >> 16) & 1)) >> 16;
}

/** x rounded to `type` (f32: unchanged), as a store of an f32 in that type would keep it. */
// @ts-ignore: decorator
@inline function roundAs(x: f32, type: i32): f32 {
  if (type == T_F16) return f16ToF32(f32ToF16(x));
  if (type == T_BF16) return reinterpret<f32>(f32ToBf16(x) << 16);
  return x;
}

/** e^x in f64 (x <= 0 here, but any x works): exp(k ln2 + r) = 2^k e^r, |r| <= ln2 / 2. */
function expF64(x: f64): f64 {
  if (x != x) return x;
  if (x < -746.0) return 0.0;
  if (x > 710.0) return Infinity;
  const k = nearest<f64>(x * 1.4426950408889634);
  // ln 2 split so that k * LN2_HI is exact for |k| < 2^11.
  const r = (x - k * 6.93147180369123816490e-01) - k * 1.90821492927058770002e-10;
  // Taylor to degree 13: the remainder r^14 / 14! < 5e-18 for |r| <= 0.3466.
  let p = 1.0 / 6227020800.0;
  p = p * r + 1.0 / 479001600.0;
  p = p * r + 1.0 / 39916800.0;
  p = p * r + 1.0 / 3628800.0;
  p = p * r + 1.0 / 362880.0;
  p = p * r + 1.0 / 40320.0;
  p = p * r + 1.0 / 5040.0;
  p = p * r + 1.0 / 720.0;
  p = p * r + 1.0 / 120.0;
  p = p * r + 1.0 / 24.0;
  p = p * r + 1.0 / 6.0;
  p = p * r + 0.5;
  p = p * r + 1.0;
  p = p * r + 1.0;
  const ki = <i64>k;
  // 2^k in two steps where it would leave the normal range (results down to the subnormals).
  if (ki < -1000) return p * reinterpret<f64>((ki + 1000 + 1023) << 52) * reinterpret<f64>(<i64>(1023 - 1000) << 52);
  if (ki > 1000) return p * reinterpret<f64>((ki - 1000 + 1023) << 52) * reinterpret<f64>(<i64>(1023 + 1000) << 52);
  return p * reinterpret<f64>((ki + 1023) << 52);
}

// ---------------------------------------------------------------------------
// Dot products q . k (n values), fixed order for a given n
// ---------------------------------------------------------------------------

// @ts-ignore: decorator
@inline function reduce4(a0: v128, a1: v128, a2: v128, a3: v128): f32 {
  const s = f32x4.add(f32x4.add(a0, a1), f32x4.add(a2, a3));
  return (f32x4.extract_lane(s, 0) + f32x4.extract_lane(s, 1)) + (f32x4.extract_lane(s, 2) + f32x4.extract_lane(s, 3));
}

function dotF32(q: usize, k: usize, n: i32): f32 {
  let a0 = f32x4.splat(0), a1 = f32x4.splat(0), a2 = f32x4.splat(0), a3 = f32x4.splat(0);
  let d = 0;
  for (; d + 16 <= n; d += 16) {
    const o = <usize>d << 2;
    a0 = f32x4.add(a0, f32x4.mul(v128.load(q + o), v128.load(k + o)));
    a1 = f32x4.add(a1, f32x4.mul(v128.load(q + o, 16), v128.load(k + o, 16)));
    a2 = f32x4.add(a2, f32x4.mul(v128.load(q + o, 32), v128.load(k + o, 32)));
    a3 = f32x4.add(a3, f32x4.mul(v128.load(q + o, 48), v128.load(k + o, 48)));
  }
  for (; d + 4 <= n; d += 4) {
    const o = <usize>d << 2;
    a0 = f32x4.add(a0, f32x4.mul(v128.load(q + o), v128.load(k + o)));
  }
  let s = reduce4(a0, a1, a2, a3);
  for (; d < n; d++) s += load<f32>(q + (<usize>d << 2)) * load<f32>(k + (<usize>d << 2));
  return s;
}

function dotF16(q: usize, k: usize, n: i32): f32 {
  let a0 = f32x4.splat(0), a1 = f32x4.splat(0), a2 = f32x4.splat(0), a3 = f32x4.splat(0);
  let d = 0;
  for (; d + 16 <= n; d += 16) {
    const qo = q + (<usize>d << 2);
    const ko = k + (<usize>d << 1);
    const r0 = v128.load(ko);
    const r1 = v128.load(ko, 16);
    a0 = f32x4.add(a0, f32x4.mul(v128.load(qo), f16TopToF32x4(lowHalves(r0))));
    a1 = f32x4.add(a1, f32x4.mul(v128.load(qo, 16), f16TopToF32x4(highHalves(r0))));
    a2 = f32x4.add(a2, f32x4.mul(v128.load(qo, 32), f16TopToF32x4(lowHalves(r1))));
    a3 = f32x4.add(a3, f32x4.mul(v128.load(qo, 48), f16TopToF32x4(highHalves(r1))));
  }
  for (; d + 4 <= n; d += 4) {
    const raw = v128.load64_zero(k + (<usize>d << 1));
    a0 = f32x4.add(a0, f32x4.mul(v128.load(q + (<usize>d << 2)), f16TopToF32x4(lowHalves(raw))));
  }
  let s = reduce4(a0, a1, a2, a3);
  for (; d < n; d++) s += load<f32>(q + (<usize>d << 2)) * f16ToF32(<u32>load<u16>(k + (<usize>d << 1)));
  return s;
}

// ---------------------------------------------------------------------------
// Weighted sums out[d] = (acc ? out[d] : 0) + sum_j p_j v_j[d], j < cnt, rows `rowBytes` apart
// from v. With acc the chains continue from the f32 values stored in out, so splitting the
// positions into consecutive blocks gives the same bits as one call over all of them.
// ---------------------------------------------------------------------------

// @ts-ignore: decorator
@inline function start4(out: usize, acc: bool): v128 {
  return acc ? v128.load(out) : f32x4.splat(0);
}

function weightedF32(out: usize, p: usize, v: usize, cnt: i32, n: i32, rowBytes: usize, acc: bool): void {
  let d = 0;
  // 32 outputs (8 accumulators) per pass over the positions: 128 bytes of every V row.
  for (; d + 32 <= n; d += 32) {
    const o = out + (<usize>d << 2);
    let a0 = start4(o, acc), a1 = start4(o + 16, acc), a2 = start4(o + 32, acc), a3 = start4(o + 48, acc);
    let a4 = start4(o + 64, acc), a5 = start4(o + 80, acc), a6 = start4(o + 96, acc), a7 = start4(o + 112, acc);
    let row = v + (<usize>d << 2);
    for (let j = 0; j < cnt; j++, row += rowBytes) {
      const w = f32x4.splat(load<f32>(p + (<usize>j << 2)));
      a0 = f32x4.add(a0, f32x4.mul(w, v128.load(row)));
      a1 = f32x4.add(a1, f32x4.mul(w, v128.load(row, 16)));
      a2 = f32x4.add(a2, f32x4.mul(w, v128.load(row, 32)));
      a3 = f32x4.add(a3, f32x4.mul(w, v128.load(row, 48)));
      a4 = f32x4.add(a4, f32x4.mul(w, v128.load(row, 64)));
      a5 = f32x4.add(a5, f32x4.mul(w, v128.load(row, 80)));
      a6 = f32x4.add(a6, f32x4.mul(w, v128.load(row, 96)));
      a7 = f32x4.add(a7, f32x4.mul(w, v128.load(row, 112)));
    }
    v128.store(o, a0);
    v128.store(o, a1, 16);
    v128.store(o, a2, 32);
    v128.store(o, a3, 48);
    v128.store(o, a4, 64);
    v128.store(o, a5, 80);
    v128.store(o, a6, 96);
    v128.store(o, a7, 112);
  }
  for (; d + 4 <= n; d += 4) {
    let a = start4(out + (<usize>d << 2), acc);
    let row = v + (<usize>d << 2);
    for (let j = 0; j < cnt; j++, row += rowBytes) a = f32x4.add(a, f32x4.mul(f32x4.splat(load<f32>(p + (<usize>j << 2))), v128.load(row)));
    v128.store(out + (<usize>d << 2), a);
  }
  for (; d < n; d++) {
    let a: f32 = acc ? load<f32>(out + (<usize>d << 2)) : 0;
    let row = v + (<usize>d << 2);
    for (let j = 0; j < cnt; j++, row += rowBytes) a += load<f32>(p + (<usize>j << 2)) * load<f32>(row);
    store<f32>(out + (<usize>d << 2), a);
  }
}

function weightedF16(out: usize, p: usize, v: usize, cnt: i32, n: i32, rowBytes: usize, acc: bool): void {
  let d = 0;
  for (; d + 32 <= n; d += 32) {
    const o = out + (<usize>d << 2);
    let a0 = start4(o, acc), a1 = start4(o + 16, acc), a2 = start4(o + 32, acc), a3 = start4(o + 48, acc);
    let a4 = start4(o + 64, acc), a5 = start4(o + 80, acc), a6 = start4(o + 96, acc), a7 = start4(o + 112, acc);
    let row = v + (<usize>d << 1);
    for (let j = 0; j < cnt; j++, row += rowBytes) {
      const w = f32x4.splat(load<f32>(p + (<usize>j << 2)));
      const r0 = v128.load(row);
      const r1 = v128.load(row, 16);
      const r2 = v128.load(row, 32);
      const r3 = v128.load(row, 48);
      a0 = f32x4.add(a0, f32x4.mul(w, f16TopToF32x4(lowHalves(r0))));
      a1 = f32x4.add(a1, f32x4.mul(w, f16TopToF32x4(highHalves(r0))));
      a2 = f32x4.add(a2, f32x4.mul(w, f16TopToF32x4(lowHalves(r1))));
      a3 = f32x4.add(a3, f32x4.mul(w, f16TopToF32x4(highHalves(r1))));
      a4 = f32x4.add(a4, f32x4.mul(w, f16TopToF32x4(lowHalves(r2))));
      a5 = f32x4.add(a5, f32x4.mul(w, f16TopToF32x4(highHalves(r2))));
      a6 = f32x4.add(a6, f32x4.mul(w, f16TopToF32x4(lowHalves(r3))));
      a7 = f32x4.add(a7, f32x4.mul(w, f16TopToF32x4(highHalves(r3))));
    }
    v128.store(o, a0);
    v128.store(o, a1, 16);
    v128.store(o, a2, 32);
    v128.store(o, a3, 48);
    v128.store(o, a4, 64);
    v128.store(o, a5, 80);
    v128.store(o, a6, 96);
    v128.store(o, a7, 112);
  }
  for (; d + 4 <= n; d += 4) {
    let a = start4(out + (<usize>d << 2), acc);
    let row = v + (<usize>d << 1);
    for (let j = 0; j < cnt; j++, row += rowBytes) {
      a = f32x4.add(a, f32x4.mul(f32x4.splat(load<f32>(p + (<usize>j << 2))), f16TopToF32x4(lowHalves(v128.load64_zero(row)))));
    }
    v128.store(out + (<usize>d << 2), a);
  }
  for (; d < n; d++) {
    let a: f32 = acc ? load<f32>(out + (<usize>d << 2)) : 0;
    let row = v + (<usize>d << 1);
    for (let j = 0; j < cnt; j++, row += rowBytes) a += load<f32>(p + (<usize>j << 2)) * f16ToF32(<u32>load<u16>(row));
    store<f32>(out + (<usize>d << 2), a);
  }
}

/** n f16 values at src -> f32 at dst, exactly (the same decode as the dots and sums use). */
function decodeF16(dst: usize, src: usize, n: i32): void {
  let d = 0;
  for (; d + 8 <= n; d += 8) {
    const raw = v128.load(src + (<usize>d << 1));
    v128.store(dst + (<usize>d << 2), f16TopToF32x4(lowHalves(raw)));
    v128.store(dst + (<usize>d << 2), f16TopToF32x4(highHalves(raw)), 16);
  }
  for (; d < n; d++) store<f32>(dst + (<usize>d << 2), f16ToF32(<u32>load<u16>(src + (<usize>d << 1))));
}

// ---------------------------------------------------------------------------
// Rows r in [r0, r1), r = token * nKvHeads + kv head: all `group` query heads of that kv head
// ---------------------------------------------------------------------------

/**
 * Positions per block of the weighted sums when group > 1: V_BLOCK rows of V (decoded to f32 when
 * f16: 32 x 128 x 4 = 16 KiB at headDim 128) are read from memory once and stay in L1 while every
 * head of the group runs its chains over them, 32 outputs (8 accumulators) at a time in registers,
 * stored to out between blocks (exact, so the bits equal one pass over all positions).
 */
const V_BLOCK: i32 = 32;

/**
 * q, out: (tokens, nHeads, headDim) f32. k, v: kv head g's position j at (g * stride + j * headDim)
 * elements (f32 or f16 by kType / vType). positions: i32 per token. window 0: none.
 * scratch + slot * slotBytes: f64 scores (group x maxLen), f32 probabilities (group x maxLen), then
 * (group > 1, f16 K or V) one decoded K row and V_BLOCK decoded V rows of headDim f32.
 * recScores / recProbs (0: none): query row (token t, head h)'s scores (after scaling and rounding)
 * and probabilities as f32 at [(t * nHeads + h) * recLen + position] (the monitor's record;
 * positions not attended stay as they are).
 *
 * Every head computes exactly what a row of its own would (same dots, same chains, same order):
 * K row j is read once for the group's `group` dots, V once per block for the group's sums.
 */
export function attn_rows(
  q: usize, out: usize, k: usize, v: usize, kStride: i32, vStride: i32, positions: usize,
  nHeads: i32, group: i32, headDim: i32, window: i32, scale: f64,
  kType: i32, vType: i32, sType: i32, pType: i32,
  scratch: usize, slotBytes: i32, maxLen: i32,
  recScores: usize, recProbs: usize, recLen: i32,
  r0: i32, r1: i32, slot: i32,
): void {
  const nKvHeads = nHeads / group;
  const scores = scratch + <usize>slot * <usize>slotBytes;
  const probs = scores + (<usize>(group * maxLen) << 3);
  const kBuf = probs + (<usize>(group * maxLen) << 2);
  const vBuf = kBuf + (<usize>headDim << 2);
  const kes: usize = kType == T_F16 ? 2 : 4;
  const ves: usize = vType == T_F16 ? 2 : 4;
  const rowK = <usize>headDim * kes;
  const rowV = <usize>headDim * ves;
  const qBytes = <usize>headDim << 2;
  // With one head per kv head nothing is shared: dot and sum straight from the cache.
  const decodeK = kType == T_F16 && group > 1;
  for (let r = r0; r < r1; r++) {
    const t = r / nKvHeads;
    const g = r % nKvHeads;
    const h0 = t * nHeads + g * group; // first query row of the group
    const pos = load<i32>(positions + (<usize>t << 2));
    const lo = window > 0 ? max(0, pos - window + 1) : 0;
    const cnt = pos - lo + 1;
    const qRows = q + <usize>h0 * qBytes;
    let kRow = k + (<usize>g * <usize>kStride + <usize>lo * <usize>headDim) * kes;

    // Scores: K row j once, the group's dots against it (head i's scores at i * maxLen).
    for (let j = 0; j < cnt; j++, kRow += rowK) {
      if (decodeK) decodeF16(kBuf, kRow, headDim);
      for (let i = 0; i < group; i++) {
        const qRow = qRows + <usize>i * qBytes;
        const dot = decodeK ? dotF32(qRow, kBuf, headDim) : kType == T_F16 ? dotF16(qRow, kRow, headDim) : dotF32(qRow, kRow, headDim);
        let s = <f64>dot * scale;
        if (sType != T_F32) s = <f64>roundAs(<f32>s, sType);
        store<f64>(scores + (<usize>(i * maxLen + j) << 3), s);
        if (recScores != 0) store<f32>(recScores + ((<usize>(h0 + i) * <usize>recLen + <usize>(lo + j)) << 2), <f32>s);
      }
    }

    // Softmax per head, in f64.
    for (let i = 0; i < group; i++) {
      const sc = scores + (<usize>(i * maxLen) << 3);
      const pr = probs + (<usize>(i * maxLen) << 2);
      let top = -Infinity;
      for (let j = 0; j < cnt; j++) {
        const s = load<f64>(sc + (<usize>j << 3));
        if (s > top) top = s;
      }
      let sum: f64 = 0;
      for (let j = 0; j < cnt; j++) {
        const e = expF64(load<f64>(sc + (<usize>j << 3)) - top);
        store<f64>(sc + (<usize>j << 3), e);
        sum += e;
      }
      for (let j = 0; j < cnt; j++) {
        store<f32>(pr + (<usize>j << 2), roundAs(<f32>(load<f64>(sc + (<usize>j << 3)) / sum), pType));
      }
      if (recProbs != 0) memory.copy(recProbs + ((<usize>(h0 + i) * <usize>recLen + <usize>lo) << 2), pr, <usize>cnt << 2);
    }

    // Weighted sums of V.
    const vRows = v + (<usize>g * <usize>vStride + <usize>lo * <usize>headDim) * ves;
    const outRows = out + <usize>h0 * qBytes;
    if (group == 1) {
      if (vType == T_F16) weightedF16(outRows, probs, vRows, cnt, headDim, rowV, false);
      else weightedF32(outRows, probs, vRows, cnt, headDim, rowV, false);
      continue;
    }
    for (let j0 = 0; j0 < cnt; j0 += V_BLOCK) {
      const n = min(V_BLOCK, cnt - j0);
      let block = vRows + <usize>j0 * rowV;
      let blockRow = rowV;
      if (vType == T_F16) {
        decodeF16(vBuf, block, n * headDim);
        block = vBuf;
        blockRow = qBytes;
      }
      for (let i = 0; i < group; i++) {
        const pr = probs + (<usize>(i * maxLen + j0) << 2);
        weightedF32(outRows + <usize>i * qBytes, pr, block, n, headDim, blockRow, j0 > 0);
      }
    }
  }
}

// ---------------------------------------------------------------------------
// KV cache store: f32 rows -> f16, round to nearest even
// ---------------------------------------------------------------------------

/**
 * src: (tokens, nKvHeads, headDim) f32. Writes head h of token t to
 * dst + (h * stride + (start + t) * headDim) halves.
 */
export function kv_store_f16(src: usize, dst: usize, tokens: i32, nKvHeads: i32, headDim: i32, stride: i32, start: i32): void {
  for (let t = 0; t < tokens; t++) {
    for (let h = 0; h < nKvHeads; h++) {
      const from = src + (<usize>(t * nKvHeads + h) * <usize>headDim << 2);
      const to = dst + ((<usize>h * <usize>stride + <usize>(start + t) * <usize>headDim) << 1);
      let d = 0;
      for (; d + 8 <= headDim; d += 8) {
        const lo = f32x4ToF16(v128.load(from + (<usize>d << 2)));
        const hi = f32x4ToF16(v128.load(from + (<usize>d << 2), 16));
        v128.store(to + (<usize>d << 1), i16x8.narrow_i32x4_u(lo, hi));
      }
      for (; d < headDim; d++) store<u16>(to + (<usize>d << 1), <u16>f32ToF16(load<f32>(from + (<usize>d << 2))));
    }
  }
}
