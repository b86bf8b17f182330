// Quantized matmul out (tokens, rows) = x (tokens, cols) . W^T for ggml block formats Q8_0, Q4_0,
// Q4_K and Q6_K, WASM SIMD, f32 math (activations stay f32; no activation quantization).
//
// Weights are the ggml blocks as stored (row-major, rowBytes = blocks * blockBytes per row; see
// src/formats/gguf/quants.ts for the layouts). Per row:
//   tokens == 1: a fused pass: each group of 16 quants is widened to f32 lanes, multiplied with x and
//     summed into f32x4 partials; block (sub-block) scales multiply the partial sums, K-quant mins are
//     applied to the per-sub-block sums of x. One read of the row, no stores.
//   tokens > 1: the row is dequantized once into this thread's scratch (cols f32, exactly ggml's f32
//     values) and dotted with every token's x, so the weights are streamed once per call.
// Rows are independent, so the JS glue (src/kernels/wasm/matmul-quant.ts) splits [0, rows) over the
// worker pool; slot picks the per-thread scratch.
//
// The kernel owns no static data (the memory is the heap's shared one).

/** f16 bits -> f32, exact (subnormals included; inf/NaN kept). */
// @ts-ignore: decorator
@inline function f16ToF32(h: u32): f32 {
  const v = reinterpret<f32>((<i32>(h << 16) >> 3) & <i32>0x8FFFE000) * reinterpret<f32>(0x77800000);
  return (h & 0x7C00) == 0x7C00 ? reinterpret<f32>(reinterpret<u32>(v) | 0x7F800000) : v;
}

/** Sum of the 4 lanes. */
// @ts-ignore: decorator
@inline function hsum(v: v128): f32 {
  return (f32x4.extract_lane(v, 0) + f32x4.extract_lane(v, 1)) + (f32x4.extract_lane(v, 2) + f32x4.extract_lane(v, 3));
}

/** 16 signed int8 quants q . x[0..16) (x at byte pointer xp) as f32x4 partial sums. */
// @ts-ignore: decorator
@inline function dot16(q: v128, xp: usize): v128 {
  const lo = i16x8.extend_low_i8x16_s(q);
  const hi = i16x8.extend_high_i8x16_s(q);
  const a = f32x4.add(
    f32x4.mul(f32x4.convert_i32x4_s(i32x4.extend_low_i16x8_s(lo)), v128.load(xp)),
    f32x4.mul(f32x4.convert_i32x4_s(i32x4.extend_low_i16x8_s(hi)), v128.load(xp, 32)),
  );
  const b = f32x4.add(
    f32x4.mul(f32x4.convert_i32x4_s(i32x4.extend_high_i16x8_s(lo)), v128.load(xp, 16)),
    f32x4.mul(f32x4.convert_i32x4_s(i32x4.extend_high_i16x8_s(hi)), v128.load(xp, 48)),
  );
  return f32x4.add(a, b);
}

/** Sum of x[0..16) as f32x4 partials. */
// @ts-ignore: decorator
@inline function sum16(xp: usize): v128 {
  return f32x4.add(f32x4.add(v128.load(xp), v128.load(xp, 16)), f32x4.add(v128.load(xp, 32), v128.load(xp, 48)));
}

/** dst[0..16) = scale * q - min for 16 signed int8 quants (exactly ggml's f32 dequantization). */
// @ts-ignore: decorator
@inline function deq16(q: v128, scale: v128, min: v128, dst: usize): void {
  const lo = i16x8.extend_low_i8x16_s(q);
  const hi = i16x8.extend_high_i8x16_s(q);
  v128.store(dst, f32x4.sub(f32x4.mul(scale, f32x4.convert_i32x4_s(i32x4.extend_low_i16x8_s(lo))), min));
  v128.store(dst, f32x4.sub(f32x4.mul(scale, f32x4.convert_i32x4_s(i32x4.extend_high_i16x8_s(lo))), min), 16);
  v128.store(dst, f32x4.sub(f32x4.mul(scale, f32x4.convert_i32x4_s(i32x4.extend_low_i16x8_s(hi))), min), 32);
  v128.store(dst, f32x4.sub(f32x4.mul(scale, f32x4.convert_i32x4_s(i32x4.extend_high_i16x8_s(hi))), min), 48);
}

/** dst[0..16) = scale * q (no min: the f32 product alone, as ggml rounds it). */
// @ts-ignore: decorator
@inline function deq16s(q: v128, scale: v128, dst: usize): void {
  const lo = i16x8.extend_low_i8x16_s(q);
  const hi = i16x8.extend_high_i8x16_s(q);
  v128.store(dst, f32x4.mul(scale, f32x4.convert_i32x4_s(i32x4.extend_low_i16x8_s(lo))));
  v128.store(dst, f32x4.mul(scale, f32x4.convert_i32x4_s(i32x4.extend_high_i16x8_s(lo))), 16);
  v128.store(dst, f32x4.mul(scale, f32x4.convert_i32x4_s(i32x4.extend_low_i16x8_s(hi))), 32);
  v128.store(dst, f32x4.mul(scale, f32x4.convert_i32x4_s(i32x4.extend_high_i16x8_s(hi))), 48);
}

/** f32 dot of n (a multiple of 32) values at a and b. */
function dotF32(a: usize, b: usize, n: i32): f32 {
  let s0 = f32x4.splat(0);
  let s1 = f32x4.splat(0);
  let s2 = f32x4.splat(0);
  let s3 = f32x4.splat(0);
  const end = a + (<usize>n << 2);
  for (; a < end; a += 128, b += 128) {
    s0 = f32x4.add(s0, f32x4.add(f32x4.mul(v128.load(a), v128.load(b)), f32x4.mul(v128.load(a, 64), v128.load(b, 64))));
    s1 = f32x4.add(s1, f32x4.add(f32x4.mul(v128.load(a, 16), v128.load(b, 16)), f32x4.mul(v128.load(a, 80), v128.load(b, 80))));
    s2 = f32x4.add(s2, f32x4.add(f32x4.mul(v128.load(a, 32), v128.load(b, 32)), f32x4.mul(v128.load(a, 96), v128.load(b, 96))));
    s3 = f32x4.add(s3, f32x4.add(f32x4.mul(v128.load(a, 48), v128.load(b, 48)), f32x4.mul(v128.load(a, 112), v128.load(b, 112))));
  }
  return hsum(f32x4.add(f32x4.add(s0, s1), f32x4.add(s2, s3)));
}

/** out[t * rows + r] = dequantized row (at dq) . x[t] for every token. */
function dotTokens(dq: usize, x: usize, cols: i32, tokens: i32, out: usize, rows: i32, r: i32): void {
  const xStride = <usize>cols << 2;
  for (let t = 0; t < tokens; t++) {
    store<f32>(out + ((<usize>t * <usize>rows + <usize>r) << 2), dotF32(dq, x + <usize>t * xStride, cols));
  }
}

// ---------------------------------------------------------------------------------------------
// Q8_0: 34 bytes per 32: d f16, qs int8[32].
// ---------------------------------------------------------------------------------------------

function rowQ8_0(p: usize, nb: i32, xp: usize): f32 {
  let acc0 = f32x4.splat(0);
  let acc1 = f32x4.splat(0);
  let b = 0;
  for (; b + 1 < nb; b += 2, p += 68, xp += 256) {
    const s0 = f32x4.add(dot16(v128.load(p, 2), xp), dot16(v128.load(p, 18), xp + 64));
    const s1 = f32x4.add(dot16(v128.load(p, 36), xp + 128), dot16(v128.load(p, 52), xp + 192));
    acc0 = f32x4.add(acc0, f32x4.mul(f32x4.splat(f16ToF32(load<u16>(p))), s0));
    acc1 = f32x4.add(acc1, f32x4.mul(f32x4.splat(f16ToF32(load<u16>(p, 34))), s1));
  }
  if (b < nb) {
    const s0 = f32x4.add(dot16(v128.load(p, 2), xp), dot16(v128.load(p, 18), xp + 64));
    acc0 = f32x4.add(acc0, f32x4.mul(f32x4.splat(f16ToF32(load<u16>(p))), s0));
  }
  return hsum(f32x4.add(acc0, acc1));
}

function deqQ8_0(p: usize, nb: i32, dst: usize): void {
  for (let b = 0; b < nb; b++, p += 34, dst += 128) {
    const d = f32x4.splat(f16ToF32(load<u16>(p)));
    deq16s(v128.load(p, 2), d, dst);
    deq16s(v128.load(p, 18), d, dst + 64);
  }
}

export function matmul_q8_0(w: usize, cols: i32, x: usize, tokens: i32, out: usize, rows: i32, scratch: usize, scratchStride: i32, r0: i32, r1: i32, slot: i32): void {
  const nb = cols >> 5;
  const rowBytes = <usize>nb * 34;
  const dq = scratch + <usize>slot * <usize>scratchStride;
  for (let r = r0; r < r1; r++) {
    const p = w + <usize>r * rowBytes;
    if (tokens == 1) {
      store<f32>(out + (<usize>r << 2), rowQ8_0(p, nb, x));
    } else {
      deqQ8_0(p, nb, dq);
      dotTokens(dq, x, cols, tokens, out, rows, r);
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Q4_0: 18 bytes per 32: d f16, qs u8[16]; element j < 16 is the low nibble of qs[j], j >= 16 the
// high nibble of qs[j - 16]; value d * (nibble - 8).
// ---------------------------------------------------------------------------------------------

function rowQ4_0(p: usize, nb: i32, xp: usize): f32 {
  let acc0 = f32x4.splat(0);
  let acc1 = f32x4.splat(0);
  const m15 = i8x16.splat(15);
  const e8 = i8x16.splat(8);
  let b = 0;
  for (; b + 1 < nb; b += 2, p += 36, xp += 256) {
    const v0 = v128.load(p, 2);
    const v1 = v128.load(p, 20);
    const s0 = f32x4.add(dot16(i8x16.sub(v128.and(v0, m15), e8), xp), dot16(i8x16.sub(i8x16.shr_u(v0, 4), e8), xp + 64));
    const s1 = f32x4.add(dot16(i8x16.sub(v128.and(v1, m15), e8), xp + 128), dot16(i8x16.sub(i8x16.shr_u(v1, 4), e8), xp + 192));
    acc0 = f32x4.add(acc0, f32x4.mul(f32x4.splat(f16ToF32(load<u16>(p))), s0));
    acc1 = f32x4.add(acc1, f32x4.mul(f32x4.splat(f16ToF32(load<u16>(p, 18))), s1));
  }
  if (b < nb) {
    const v0 = v128.load(p, 2);
    const s0 = f32x4.add(dot16(i8x16.sub(v128.and(v0, m15), e8), xp), dot16(i8x16.sub(i8x16.shr_u(v0, 4), e8), xp + 64));
    acc0 = f32x4.add(acc0, f32x4.mul(f32x4.splat(f16ToF32(load<u16>(p))), s0));
  }
  return hsum(f32x4.add(acc0, acc1));
}

function deqQ4_0(p: usize, nb: i32, dst: usize): void {
  const m15 = i8x16.splat(15);
  const e8 = i8x16.splat(8);
  for (let b = 0; b < nb; b++, p += 18, dst += 128) {
    const d = f32x4.splat(f16ToF32(load<u16>(p)));
    const v = v128.load(p, 2);
    deq16s(i8x16.sub(v128.and(v, m15), e8), d, dst);
    deq16s(i8x16.sub(i8x16.shr_u(v, 4), e8), d, dst + 64);
  }
}

export function matmul_q4_0(w: usize, cols: i32, x: usize, tokens: i32, out: usize, rows: i32, scratch: usize, scratchStride: i32, r0: i32, r1: i32, slot: i32): void {
  const nb = cols >> 5;
  const rowBytes = <usize>nb * 18;
  const dq = scratch + <usize>slot * <usize>scratchStride;
  for (let r = r0; r < r1; r++) {
    const p = w + <usize>r * rowBytes;
    if (tokens == 1) {
      store<f32>(out + (<usize>r << 2), rowQ4_0(p, nb, x));
    } else {
      deqQ4_0(p, nb, dq);
      dotTokens(dq, x, cols, tokens, out, rows, r);
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Q4_K: 144 bytes per 256: d f16, dmin f16, scales u8[12] (6-bit sc/m per sub-block of 32), qs u8[128].
// Sub-block j = 2c (+1): low (high) nibbles of qs[32c .. 32c + 32); value d*sc[j]*q - dmin*m[j].
// ---------------------------------------------------------------------------------------------

// @ts-ignore: decorator
@inline function kScale(s: usize, j: i32): u32 {
  return j < 4 ? <u32>load<u8>(s + j) & 63 : (<u32>load<u8>(s + j + 4) & 15) | ((<u32>load<u8>(s + j - 4) >> 6) << 4);
}

// @ts-ignore: decorator
@inline function kMin(s: usize, j: i32): u32 {
  return j < 4 ? <u32>load<u8>(s + j + 4) & 63 : (<u32>load<u8>(s + j + 4) >> 4) | ((<u32>load<u8>(s + j) >> 6) << 3);
}

function rowQ4_K(p: usize, nb: i32, xp: usize): f32 {
  let accQ = f32x4.splat(0);
  let accM = f32x4.splat(0);
  const m15 = i8x16.splat(15);
  for (let b = 0; b < nb; b++, p += 144) {
    const d = f16ToF32(load<u16>(p));
    const dmin = f16ToF32(load<u16>(p, 2));
    const s = p + 4;
    for (let c = 0; c < 4; c++, xp += 256) {
      const q = p + 16 + (<usize>c << 5);
      const v0 = v128.load(q);
      const v1 = v128.load(q, 16);
      const j = c << 1;
      const dLo = f32x4.add(dot16(v128.and(v0, m15), xp), dot16(v128.and(v1, m15), xp + 64));
      const dHi = f32x4.add(dot16(i8x16.shr_u(v0, 4), xp + 128), dot16(i8x16.shr_u(v1, 4), xp + 192));
      const xLo = f32x4.add(sum16(xp), sum16(xp + 64));
      const xHi = f32x4.add(sum16(xp + 128), sum16(xp + 192));
      accQ = f32x4.add(accQ, f32x4.add(
        f32x4.mul(f32x4.splat(d * <f32>kScale(s, j)), dLo),
        f32x4.mul(f32x4.splat(d * <f32>kScale(s, j + 1)), dHi),
      ));
      accM = f32x4.add(accM, f32x4.add(
        f32x4.mul(f32x4.splat(dmin * <f32>kMin(s, j)), xLo),
        f32x4.mul(f32x4.splat(dmin * <f32>kMin(s, j + 1)), xHi),
      ));
    }
  }
  return hsum(f32x4.sub(accQ, accM));
}

function deqQ4_K(p: usize, nb: i32, dst: usize): void {
  const m15 = i8x16.splat(15);
  for (let b = 0; b < nb; b++, p += 144) {
    const d = f16ToF32(load<u16>(p));
    const dmin = f16ToF32(load<u16>(p, 2));
    const s = p + 4;
    for (let c = 0; c < 4; c++, dst += 256) {
      const q = p + 16 + (<usize>c << 5);
      const v0 = v128.load(q);
      const v1 = v128.load(q, 16);
      const j = c << 1;
      const scLo = f32x4.splat(d * <f32>kScale(s, j));
      const mLo = f32x4.splat(dmin * <f32>kMin(s, j));
      const scHi = f32x4.splat(d * <f32>kScale(s, j + 1));
      const mHi = f32x4.splat(dmin * <f32>kMin(s, j + 1));
      deq16(v128.and(v0, m15), scLo, mLo, dst);
      deq16(v128.and(v1, m15), scLo, mLo, dst + 64);
      deq16(i8x16.shr_u(v0, 4), scHi, mHi, dst + 128);
      deq16(i8x16.shr_u(v1, 4), scHi, mHi, dst + 192);
    }
  }
}

export function matmul_q4_k(w: usize, cols: i32, x: usize, tokens: i32, out: usize, rows: i32, scratch: usize, scratchStride: i32, r0: i32, r1: i32, slot: i32): void {
  const nb = cols >> 8;
  const rowBytes = <usize>nb * 144;
  const dq = scratch + <usize>slot * <usize>scratchStride;
  for (let r = r0; r < r1; r++) {
    const p = w + <usize>r * rowBytes;
    if (tokens == 1) {
      store<f32>(out + (<usize>r << 2), rowQ4_K(p, nb, x));
    } else {
      deqQ4_K(p, nb, dq);
      dotTokens(dq, x, cols, tokens, out, rows, r);
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Q6_K: 210 bytes per 256: ql u8[128], qh u8[64], scales i8[16], d f16. Element e = 128h + 32k + l:
// low 4 bits from the low (k < 2) or high (k >= 2) nibble of ql[64h + 32(k & 1) + l], high 2 bits are
// bits 2k..2k+1 of qh[32h + l]; value d * scales[e / 16] * (q - 32).
// ---------------------------------------------------------------------------------------------

/** The 4 groups (k = 0..3) of 16 quants, minus 32, for half h and l in [16u, 16u + 16). */
// @ts-ignore: decorator
@inline function q6k0(qa: v128, qhv: v128): v128 {
  return i8x16.sub(v128.or(v128.and(qa, i8x16.splat(15)), v128.and(i8x16.shl(qhv, 4), i8x16.splat(0x30))), i8x16.splat(32));
}
// @ts-ignore: decorator
@inline function q6k1(qb: v128, qhv: v128): v128 {
  return i8x16.sub(v128.or(v128.and(qb, i8x16.splat(15)), v128.and(i8x16.shl(qhv, 2), i8x16.splat(0x30))), i8x16.splat(32));
}
// @ts-ignore: decorator
@inline function q6k2(qa: v128, qhv: v128): v128 {
  return i8x16.sub(v128.or(i8x16.shr_u(qa, 4), v128.and(qhv, i8x16.splat(0x30))), i8x16.splat(32));
}
// @ts-ignore: decorator
@inline function q6k3(qb: v128, qhv: v128): v128 {
  return i8x16.sub(v128.or(i8x16.shr_u(qb, 4), v128.and(i8x16.shr_u(qhv, 2), i8x16.splat(0x30))), i8x16.splat(32));
}

function rowQ6_K(p: usize, nb: i32, xp: usize): f32 {
  let acc0 = f32x4.splat(0);
  let acc1 = f32x4.splat(0);
  for (let b = 0; b < nb; b++, p += 210, xp += 1024) {
    const d = f16ToF32(load<u16>(p, 208));
    for (let h = 0; h < 2; h++) {
      const ql = p + (<usize>h << 6);
      const qh = p + 128 + (<usize>h << 5);
      const sc = p + 192 + (<usize>h << 3);
      const xh = xp + (<usize>h << 9);
      for (let u = 0; u < 2; u++) {
        const o = <usize>u << 4;
        const qa = v128.load(ql + o);
        const qb = v128.load(ql + o, 32);
        const qhv = v128.load(qh + o);
        const xu = xh + (o << 2);
        // scale index within the half: 2k + u
        const t0 = f32x4.mul(f32x4.splat(d * <f32>load<i8>(sc + u)), dot16(q6k0(qa, qhv), xu));
        const t1 = f32x4.mul(f32x4.splat(d * <f32>load<i8>(sc + 2 + u)), dot16(q6k1(qb, qhv), xu + 128));
        const t2 = f32x4.mul(f32x4.splat(d * <f32>load<i8>(sc + 4 + u)), dot16(q6k2(qa, qhv), xu + 256));
        const t3 = f32x4.mul(f32x4.splat(d * <f32>load<i8>(sc + 6 + u)), dot16(q6k3(qb, qhv), xu + 384));
        acc0 = f32x4.add(acc0, f32x4.add(t0, t1));
        acc1 = f32x4.add(acc1, f32x4.add(t2, t3));
      }
    }
  }
  return hsum(f32x4.add(acc0, acc1));
}

function deqQ6_K(p: usize, nb: i32, dst: usize): void {
  for (let b = 0; b < nb; b++, p += 210, dst += 1024) {
    const d = f16ToF32(load<u16>(p, 208));
    for (let h = 0; h < 2; h++) {
      const ql = p + (<usize>h << 6);
      const qh = p + 128 + (<usize>h << 5);
      const sc = p + 192 + (<usize>h << 3);
      const xh = dst + (<usize>h << 9);
      for (let u = 0; u < 2; u++) {
        const o = <usize>u << 4;
        const qa = v128.load(ql + o);
        const qb = v128.load(ql + o, 32);
        const qhv = v128.load(qh + o);
        const xu = xh + (o << 2);
        deq16s(q6k0(qa, qhv), f32x4.splat(d * <f32>load<i8>(sc + u)), xu);
        deq16s(q6k1(qb, qhv), f32x4.splat(d * <f32>load<i8>(sc + 2 + u)), xu + 128);
        deq16s(q6k2(qa, qhv), f32x4.splat(d * <f32>load<i8>(sc + 4 + u)), xu + 256);
        deq16s(q6k3(qb, qhv), f32x4.splat(d * <f32>load<i8>(sc + 6 + u)), xu + 384);
      }
    }
  }
}

export function matmul_q6_k(w: usize, cols: i32, x: usize, tokens: i32, out: usize, rows: i32, scratch: usize, scratchStride: i32, r0: i32, r1: i32, slot: i32): void {
  const nb = cols >> 8;
  const rowBytes = <usize>nb * 210;
  const dq = scratch + <usize>slot * <usize>scratchStride;
  for (let r = r0; r < r1; r++) {
    const p = w + <usize>r * rowBytes;
    if (tokens == 1) {
      store<f32>(out + (<usize>r << 2), rowQ6_K(p, nb, x));
    } else {
      deqQ6_K(p, nb, dq);
      dotTokens(dq, x, cols, tokens, out, rows, r);
    }
  }
}

/** Streams n bytes (a multiple of 128) at p with 8 independent accumulators: the read-bandwidth baseline. */
export function read_bytes(p: usize, n: i32): i32 {
  let a0 = i32x4.splat(0);
  let a1 = i32x4.splat(0);
  let a2 = i32x4.splat(0);
  let a3 = i32x4.splat(0);
  let a4 = i32x4.splat(0);
  let a5 = i32x4.splat(0);
  let a6 = i32x4.splat(0);
  let a7 = i32x4.splat(0);
  const end = p + <usize>n;
  for (; p < end; p += 128) {
    a0 = i32x4.add(a0, v128.load(p));
    a1 = i32x4.add(a1, v128.load(p, 16));
    a2 = i32x4.add(a2, v128.load(p, 32));
    a3 = i32x4.add(a3, v128.load(p, 48));
    a4 = i32x4.add(a4, v128.load(p, 64));
    a5 = i32x4.add(a5, v128.load(p, 80));
    a6 = i32x4.add(a6, v128.load(p, 96));
    a7 = i32x4.add(a7, v128.load(p, 112));
  }
  const s = i32x4.add(i32x4.add(i32x4.add(a0, a1), i32x4.add(a2, a3)), i32x4.add(i32x4.add(a4, a5), i32x4.add(a6, a7)));
  return i32x4.extract_lane(s, 0) ^ i32x4.extract_lane(s, 1) ^ i32x4.extract_lane(s, 2) ^ i32x4.extract_lane(s, 3);
}

/** Pool form of read_bytes: rows of rowBytes each from p, row range [r0, r1); result xor-ed into sink. */
export function read_rows(p: usize, rowBytes: i32, sink: usize, r0: i32, r1: i32, slot: i32): void {
  const v = read_bytes(p + <usize>r0 * <usize>rowBytes, (r1 - r0) * rowBytes);
  atomic.xor<i32>(sink, v);
}
