// Quantized matmul out (tokens, rows) = x (tokens, cols) . W^T for ggml block formats Q8_0, Q4_0,
// Q4_K and Q6_K, WASM SIMD, f32 math (activations stay f32; no activation quantization).
//
// Weights are the ggml blocks as stored (row-major, rowBytes = blocks * blockBytes per row; see
// src/formats/gguf/quants.ts for the layouts). Per row and token, a fused pass: each group of 16
// quants is widened to f32 lanes, multiplied with x and summed into f32x4 partials; block
// (sub-block) scales multiply the partial sums, K-quant mins are applied to the per-sub-block sums
// of x. Every token takes the same pass, so an output's rounding does not depend on how many
// tokens share a call (chunked prefill, batches and decode agree bit for bit).
// Rows are independent, so the JS glue (src/kernels/wasm/matmul-quant.ts) splits [0, rows) over the
// worker pool; slot picks the per-thread scratch (Q4_K keeps x's sums over every 32 and 64 bytes of
// block scales there, Q6_K 64 bytes of block scales).
//
// Speed notes (x64, V8 11.3): decode is compute-bound (~6 G multiply-adds/s per thread, widening
// int8 -> i16 -> i32 -> f32 dominates), not bandwidth-bound. Loop bodies are kept small (64 quants)
// so TurboFan does not spill v128 registers (a fully unrolled Q4_K super-block was 20% slower), and
// nibbles are split with i16x8 shifts plus a mask (x64 has no 8-bit shifts).
//
// The kernel owns no static data (the memory is the heap's shared one).

/** f16 bits -> f32, exact (subnormals included; inf/NaN kept). */
// @ts-ignore: decorator
@inline function f16ToF32(h: u32): f32 {
  const v = reinterpret<f32>((<i32>(h << 16) >> 3) & <i32>0x8FFFE000) * reinterpret<f32>(0x77800000);
  return (h & 0x7C00) == 0x7C00 ? reinterpret<f32>(reinterpret<u32>(v) | 0x7F800000) : v;
}

/** High nibble of every byte (an i16 shift and a mask: x64 has no 8-bit shifts, V8 emulates i8x16.shr_u). */
// @ts-ignore: decorator
@inline function hi4(v: v128, m15: v128): v128 {
  return v128.and(i16x8.shr_u(v, 4), m15);
}

/**
 * i8x16.splat(v), built from a runtime value (seed >= 0 at run time, unknown to the optimizer), so
 * that binaryen keeps it in a local instead of folding a v128.const into every use inside the loops
 * (V8 rematerializes such constants at each use).
 */
// @ts-ignore: decorator
@inline function splat8(v: i32, seed: i32): v128 {
  return i8x16.splat(<i8>(v + (seed >> 31)));
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


export function matmul_q8_0(w: usize, cols: i32, x: usize, tokens: i32, out: usize, rows: i32, scratch: usize, scratchStride: i32, r0: i32, r1: i32, slot: i32): void {
  const nb = cols >> 5;
  const rowBytes = <usize>nb * 34;
  const dq = scratch + <usize>slot * <usize>scratchStride;
  // Every token through the same fused row pass as a decode step: each output is summed in the
  // same order however many tokens a call holds (chunked prefill, batches and decode agree bit for bit).
  const xStride = <usize>cols << 2;
  for (let t = 0; t < tokens; t++) {
    const xt = x + <usize>t * xStride;
    const ot = out + ((<usize>t * <usize>rows) << 2);
    for (let r = r0; r < r1; r++) store<f32>(ot + (<usize>r << 2), rowQ8_0(w + <usize>r * rowBytes, nb, xt));
  }
}

// ---------------------------------------------------------------------------------------------
// Q4_0: 18 bytes per 32: d f16, qs u8[16]; element j < 16 is the low nibble of qs[j], j >= 16 the
// high nibble of qs[j - 16]; value d * (nibble - 8).
// ---------------------------------------------------------------------------------------------

function rowQ4_0(p: usize, nb: i32, xp: usize): f32 {
  let acc0 = f32x4.splat(0);
  let acc1 = f32x4.splat(0);
  const m15 = splat8(15, nb);
  const e8 = splat8(8, nb);
  let b = 0;
  for (; b + 1 < nb; b += 2, p += 36, xp += 256) {
    const v0 = v128.load(p, 2);
    const v1 = v128.load(p, 20);
    const s0 = f32x4.add(dot16(i8x16.sub(v128.and(v0, m15), e8), xp), dot16(i8x16.sub(hi4(v0, m15), e8), xp + 64));
    const s1 = f32x4.add(dot16(i8x16.sub(v128.and(v1, m15), e8), xp + 128), dot16(i8x16.sub(hi4(v1, m15), e8), xp + 192));
    acc0 = f32x4.add(acc0, f32x4.mul(f32x4.splat(f16ToF32(load<u16>(p))), s0));
    acc1 = f32x4.add(acc1, f32x4.mul(f32x4.splat(f16ToF32(load<u16>(p, 18))), s1));
  }
  if (b < nb) {
    const v0 = v128.load(p, 2);
    const s0 = f32x4.add(dot16(i8x16.sub(v128.and(v0, m15), e8), xp), dot16(i8x16.sub(hi4(v0, m15), e8), xp + 64));
    acc0 = f32x4.add(acc0, f32x4.mul(f32x4.splat(f16ToF32(load<u16>(p))), s0));
  }
  return hsum(f32x4.add(acc0, acc1));
}


export function matmul_q4_0(w: usize, cols: i32, x: usize, tokens: i32, out: usize, rows: i32, scratch: usize, scratchStride: i32, r0: i32, r1: i32, slot: i32): void {
  const nb = cols >> 5;
  const rowBytes = <usize>nb * 18;
  const dq = scratch + <usize>slot * <usize>scratchStride;
  // Every token through the same fused row pass as a decode step: each output is summed in the
  // same order however many tokens a call holds (chunked prefill, batches and decode agree bit for bit).
  const xStride = <usize>cols << 2;
  for (let t = 0; t < tokens; t++) {
    const xt = x + <usize>t * xStride;
    const ot = out + ((<usize>t * <usize>rows) << 2);
    for (let r = r0; r < r1; r++) store<f32>(ot + (<usize>r << 2), rowQ4_0(w + <usize>r * rowBytes, nb, xt));
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
  return j < 4 ? <u32>load<u8>(s + j + 4) & 63 : (<u32>load<u8>(s + j + 4) >> 4) | ((<u32>load<u8>(s + j) >> 6) << 4);
}

/** Sums of x over each run of 32: dst[i] = sum x[32i .. 32i + 32), n a multiple of 32. */
function sums32(x: usize, n: i32, dst: usize): void {
  const end = x + (<usize>n << 2);
  for (; x < end; x += 128, dst += 4) {
    store<f32>(dst, hsum(f32x4.add(sum16(x), sum16(x + 64))));
  }
}

/** The 8 six-bit scales (lo: j 0..3, hi: j 4..7) and mins of the 12 scale bytes at s, as f32x4. */
// @ts-ignore: decorator
@inline function kScalesMins(s: usize, d: v128, dmin: v128, out: usize): void {
  const v = v128.load(s); // 12 scale bytes (+ 4 bytes of quants, unused)
  const w16 = i16x8.extend_low_i8x16_u(v);
  const a = i32x4.extend_low_i16x8_u(w16); // bytes 0..3
  const b = i32x4.extend_high_i16x8_u(w16); // bytes 4..7
  const c = i32x4.extend_low_i16x8_u(i16x8.extend_high_i8x16_u(v)); // bytes 8..11
  const m63 = i32x4.splat(63);
  const scLo = v128.and(a, m63);
  const mLo = v128.and(b, m63);
  const scHi = v128.or(v128.and(c, i32x4.splat(15)), i32x4.shl(i32x4.shr_u(a, 6), 4));
  const mHi = v128.or(i32x4.shr_u(c, 4), i32x4.shl(i32x4.shr_u(b, 6), 4));
  v128.store(out, f32x4.mul(d, f32x4.convert_i32x4_u(scLo)));
  v128.store(out, f32x4.mul(d, f32x4.convert_i32x4_u(scHi)), 16);
  v128.store(out, f32x4.mul(dmin, f32x4.convert_i32x4_u(mLo)), 32);
  v128.store(out, f32x4.mul(dmin, f32x4.convert_i32x4_u(mHi)), 48);
}

/** d*sc[2c] * (low nibbles of 32 quants at q) . x[0..32) + d*sc[2c+1] * (high nibbles) . x[32..64). */
// @ts-ignore: decorator
@inline function q4kPair(q: usize, xp: usize, sLo: v128, sHi: v128, m15: v128): v128 {
  const v0 = v128.load(q);
  const v1 = v128.load(q, 16);
  const dLo = f32x4.add(dot16(v128.and(v0, m15), xp), dot16(v128.and(v1, m15), xp + 64));
  const dHi = f32x4.add(dot16(hi4(v0, m15), xp + 128), dot16(hi4(v1, m15), xp + 192));
  return f32x4.add(f32x4.mul(sLo, dLo), f32x4.mul(sHi, dHi));
}

/** Row dot for tokens = 1; xs holds sums32 of x; sm is 64 bytes of scratch for the block's scales. */
function rowQ4_K(p: usize, nb: i32, xp: usize, xs: usize, sm: usize): f32 {
  let acc0 = f32x4.splat(0);
  let acc1 = f32x4.splat(0);
  let accM = f32x4.splat(0);
  const m15 = splat8(15, nb);
  for (let b = 0; b < nb; b++, p += 144, xp += 1024, xs += 32) {
    kScalesMins(p + 4, f32x4.splat(f16ToF32(load<u16>(p))), f32x4.splat(f16ToF32(load<u16>(p, 2))), sm);
    // mins: sum_j dmin*m[j] * sum(x over sub-block j)
    accM = f32x4.add(accM, f32x4.add(f32x4.mul(v128.load(sm, 32), v128.load(xs)), f32x4.mul(v128.load(sm, 48), v128.load(xs, 16))));
    // A loop over the 4 pairs of sub-blocks (a small body keeps V8's register allocation spill-free).
    for (let c: usize = 0; c < 4; c += 2) {
      const sc = sm + (c << 3);
      acc0 = f32x4.add(acc0, q4kPair(p + 16 + (c << 5), xp + (c << 8), v128.load32_splat(sc), v128.load32_splat(sc, 4), m15));
      acc1 = f32x4.add(acc1, q4kPair(p + 48 + (c << 5), xp + 256 + (c << 8), v128.load32_splat(sc, 8), v128.load32_splat(sc, 12), m15));
    }
  }
  return hsum(f32x4.sub(f32x4.add(acc0, acc1), accM));
}


export function matmul_q4_k(w: usize, cols: i32, x: usize, tokens: i32, out: usize, rows: i32, scratch: usize, scratchStride: i32, r0: i32, r1: i32, slot: i32): void {
  const nb = cols >> 8;
  const rowBytes = <usize>nb * 144;
  const dq = scratch + <usize>slot * <usize>scratchStride;
  // Every token through the same fused row pass as a decode step: each output is summed in the
  // same order however many tokens a call holds (chunked prefill, batches and decode agree bit for bit).
  const xStride = <usize>cols << 2;
  for (let t = 0; t < tokens; t++) {
    const xt = x + <usize>t * xStride;
    const ot = out + ((<usize>t * <usize>rows) << 2);
    sums32(xt, cols, dq);
    for (let r = r0; r < r1; r++) store<f32>(ot + (<usize>r << 2), rowQ4_K(w + <usize>r * rowBytes, nb, xt, dq, dq + (<usize>nb << 5)));
  }
}

// ---------------------------------------------------------------------------------------------
// Q6_K: 210 bytes per 256: ql u8[128], qh u8[64], scales i8[16], d f16. Element e = 128h + 32k + l:
// low 4 bits from the low (k < 2) or high (k >= 2) nibble of ql[64h + 32(k & 1) + l], high 2 bits are
// bits 2k..2k+1 of qh[32h + l]; value d * scales[e / 16] * (q - 32).
// ---------------------------------------------------------------------------------------------

/** The 4 groups (k = 0..3) of 16 quants, minus 32, for half h and l in [16u, 16u + 16). */
// @ts-ignore: decorator
@inline function q6k0(qa: v128, qhv: v128, m15: v128, m48: v128, e32: v128): v128 {
  return i8x16.sub(v128.or(v128.and(qa, m15), v128.and(i16x8.shl(qhv, 4), m48)), e32);
}
// @ts-ignore: decorator
@inline function q6k1(qb: v128, qhv: v128, m15: v128, m48: v128, e32: v128): v128 {
  return i8x16.sub(v128.or(v128.and(qb, m15), v128.and(i16x8.shl(qhv, 2), m48)), e32);
}
// @ts-ignore: decorator
@inline function q6k2(qa: v128, qhv: v128, m15: v128, m48: v128, e32: v128): v128 {
  return i8x16.sub(v128.or(hi4(qa, m15), v128.and(qhv, m48)), e32);
}
// @ts-ignore: decorator
@inline function q6k3(qb: v128, qhv: v128, m15: v128, m48: v128, e32: v128): v128 {
  return i8x16.sub(v128.or(hi4(qb, m15), v128.and(i16x8.shr_u(qhv, 2), m48)), e32);
}

/** sm[0..16) = d * scales[0..16) (the 16 int8 sub-block scales at sc) as f32. */
// @ts-ignore: decorator
@inline function q6kScales(sc: usize, d: v128, sm: usize): void {
  const v = v128.load(sc);
  const lo = i16x8.extend_low_i8x16_s(v);
  const hi = i16x8.extend_high_i8x16_s(v);
  v128.store(sm, f32x4.mul(d, f32x4.convert_i32x4_s(i32x4.extend_low_i16x8_s(lo))));
  v128.store(sm, f32x4.mul(d, f32x4.convert_i32x4_s(i32x4.extend_high_i16x8_s(lo))), 16);
  v128.store(sm, f32x4.mul(d, f32x4.convert_i32x4_s(i32x4.extend_low_i16x8_s(hi))), 32);
  v128.store(sm, f32x4.mul(d, f32x4.convert_i32x4_s(i32x4.extend_high_i16x8_s(hi))), 48);
}

/** Row dot for tokens = 1; sm is 64 bytes of scratch for the block's scales. */
function rowQ6_K(p: usize, nb: i32, xp: usize, sm: usize): f32 {
  const m15 = splat8(15, nb);
  const m48 = splat8(0x30, nb);
  const e32 = splat8(32, nb);
  let acc0 = f32x4.splat(0);
  let acc1 = f32x4.splat(0);
  for (let b = 0; b < nb; b++, p += 210, xp += 1024) {
    q6kScales(p + 192, f32x4.splat(f16ToF32(load<u16>(p, 208))), sm);
    // (h, u): quants ql[64h + 16u ..], qh[32h + 16u ..]; scales 8h + 2k + u; x at 128h + 32k + 16u.
    for (let i: usize = 0; i < 4; i++) {
      const h = i >> 1;
      const o = (i & 1) << 4;
      const ql = p + (h << 6) + o;
      const qa = v128.load(ql);
      const qb = v128.load(ql, 32);
      const qhv = v128.load(p + 128 + (h << 5) + o);
      const xu = xp + (h << 9) + (o << 2);
      const sc = sm + (h << 5) + ((i & 1) << 2);
      const t0 = f32x4.mul(v128.load32_splat(sc), dot16(q6k0(qa, qhv, m15, m48, e32), xu));
      const t1 = f32x4.mul(v128.load32_splat(sc, 8), dot16(q6k1(qb, qhv, m15, m48, e32), xu + 128));
      const t2 = f32x4.mul(v128.load32_splat(sc, 16), dot16(q6k2(qa, qhv, m15, m48, e32), xu + 256));
      const t3 = f32x4.mul(v128.load32_splat(sc, 24), dot16(q6k3(qb, qhv, m15, m48, e32), xu + 384));
      acc0 = f32x4.add(acc0, f32x4.add(t0, t1));
      acc1 = f32x4.add(acc1, f32x4.add(t2, t3));
    }
  }
  return hsum(f32x4.add(acc0, acc1));
}


export function matmul_q6_k(w: usize, cols: i32, x: usize, tokens: i32, out: usize, rows: i32, scratch: usize, scratchStride: i32, r0: i32, r1: i32, slot: i32): void {
  const nb = cols >> 8;
  const rowBytes = <usize>nb * 210;
  const dq = scratch + <usize>slot * <usize>scratchStride;
  // Every token through the same fused row pass as a decode step: each output is summed in the
  // same order however many tokens a call holds (chunked prefill, batches and decode agree bit for bit).
  const xStride = <usize>cols << 2;
  for (let t = 0; t < tokens; t++) {
    const xt = x + <usize>t * xStride;
    const ot = out + ((<usize>t * <usize>rows) << 2);
    for (let r = r0; r < r1; r++) store<f32>(ot + (<usize>r << 2), rowQ6_K(w + <usize>r * rowBytes, nb, xt, dq));
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
