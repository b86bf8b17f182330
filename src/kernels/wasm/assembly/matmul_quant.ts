// Quantized matmul out (tokens, rows) = x (tokens, cols) . W^T for ggml Q8_0, Q4_0, Q4_K and Q6_K
// weights, WASM SIMD, f32 math (activations stay f32; no activation quantization).
//
// Weights are REPACKED at load (src/kernels/wasm/matmul-quant.ts, packQuantMatrix) into a layout
// that needs no widening chain: every 16 quant bytes form 4 i32 lanes, and group j (4 weights) of a
// vector lies in the same bit field of every lane, lane k holding the element 4j + k (x order). One
// shift and one mask move group j into the top bits of each lane, signed: the lane is then the
// integer q * 2^24 (8-bit quants) or (q - 8) * 2^28 (nibbles), which f32x4.convert_i32x4_s converts
// EXACTLY (at most 8 significant bits). The 2^-24 / 2^-28 is folded into the f32 block scale
// (a power of two: exact). Per block, products with x are summed in f32x4 lanes, then scaled.
//   Q8_0 (36 B / 32):   rows in groups of 4 (the last group zero-padded); per block 144 B: f32
//                       d*2^-24 of the 4 rows, then per half of 16 the 4 rows' 16 int8 quants. Each x
//                       load serves 4 rows; the rows' partials are reduced with one transpose.
//   Q4_0 (20 B / 32):   f32 d*2^-28, 16 bytes of nibbles q ^ 8 (= q - 8 as a signed nibble).
//   Q4_K (152 B / 256): f32 d, f32 dmin, u8 sc[8], u8 m[8], 8 x 16 bytes of UNSIGNED nibbles q.
//                       Group j is masked in place (q * 2^4j, one AND) and multiplied with a per-token
//                       copy of x pre-scaled by 2^-4j (bit-identical products); value d*sc*q - dmin*m,
//                       the mins multiply the sums of x per sub-block (per token, per-thread scratch).
//   Q6_K (276 B / 256): f32 d*2^-24, int8 sc[16], 256 int8 (q - 32) (a byte per weight: 6-bit fields
//                       cost twice the instructions; the layout is 31% larger than ggml's).
// Range: the lanes carry a 2^24..2^28 factor until scaled, so |x| must stay below 2^90 (far beyond
// any activation) for the f32 products not to overflow.
//
// Every token takes the same arithmetic over a row, so an output's rounding does not depend on how
// many tokens share a call or how rows are split over threads (batch invariance, tested bit for bit).
// Q8_0 (Q4_K) with tokens > 1 converts each 4-row group (row) once into per-thread f32 scratch (the
// same exact lanes) and runs every token (of a tile of 8) over it with the same multiplies and adds
// in the same order.
// Rows are independent: the JS glue splits [0, rows) (Q8_0: [0, row groups)) over the worker pool; slot picks the
// per-thread scratch (Q4_K: scaled x, sums of x per 32, masks, the block's f32 scales; Q6_K: 64 bytes).
//
// Speed (x64 Zen 4, V8 11.3, 1 thread, bench/matmul-quant.ts): 7-8 G weights/s for Q8_0, Q4_0, Q4_K
// and Q6_K alike, up from 3-6. The loop is bound by the f32 work per 4 weights (convert, multiply,
// add: WASM SIMD has no FMA without relaxed-simd), no longer by widening. Loop bodies stay small
// (one 32-weight block, or Q8_0's 4 rows x 16): larger unrolled bodies made V8 spill (Q4_K 1.6x slower).
//
// The kernel owns no static data (the memory is the heap's shared one).

/** Sum of the 4 lanes. */
// @ts-ignore: decorator
@inline function hsum(v: v128): f32 {
  return (f32x4.extract_lane(v, 0) + f32x4.extract_lane(v, 1)) + (f32x4.extract_lane(v, 2) + f32x4.extract_lane(v, 3));
}

/**
 * i32x4.splat(v) from a runtime value (seed >= 0 at run time), so binaryen keeps the mask in a local
 * instead of folding a v128.const into every use (V8 rematerializes constants at each use).
 */
// @ts-ignore: decorator
@inline function splat32(v: i32, seed: i32): v128 {
  return i32x4.splat(v + (seed >> 31));
}

// @ts-ignore: decorator
@inline function fx(q: v128, xp: usize, o: usize): v128 {
  return f32x4.mul(f32x4.convert_i32x4_s(q), v128.load(xp + o));
}

/** 16 transposed int8 quants (as q * 2^24 lanes) . x[0..16) as f32x4 partials; m = 0xFF000000 lanes. */
// @ts-ignore: decorator
@inline function dotB16(v: v128, xp: usize, m: v128): v128 {
  const a = f32x4.add(fx(i32x4.shl(v, 24), xp, 0), fx(v128.and(i32x4.shl(v, 16), m), xp, 16));
  const b = f32x4.add(fx(v128.and(i32x4.shl(v, 8), m), xp, 32), fx(v128.and(v, m), xp, 48));
  return f32x4.add(a, b);
}

/** 32 transposed signed nibbles (as q * 2^28 lanes) . x[0..32) as f32x4 partials; m = 0xF0000000 lanes. */
// @ts-ignore: decorator
@inline function dotN32(v: v128, xp: usize, m: v128): v128 {
  const a = f32x4.add(fx(i32x4.shl(v, 28), xp, 0), fx(v128.and(i32x4.shl(v, 24), m), xp, 16));
  const b = f32x4.add(fx(v128.and(i32x4.shl(v, 20), m), xp, 32), fx(v128.and(i32x4.shl(v, 16), m), xp, 48));
  const c = f32x4.add(fx(v128.and(i32x4.shl(v, 12), m), xp, 64), fx(v128.and(i32x4.shl(v, 8), m), xp, 80));
  const d = f32x4.add(fx(v128.and(i32x4.shl(v, 4), m), xp, 96), fx(v128.and(v, m), xp, 112));
  return f32x4.add(f32x4.add(a, b), f32x4.add(c, d));
}

// ---------------------------------------------------------------------------------------------
// Q8_0
// ---------------------------------------------------------------------------------------------

/**
 * [sum v0, sum v1, sum v2, sum v3]: the 4 rows' partials reduced with one transpose (4 shuffles,
 * 3 adds): lanes summed as (l0 + l2) + (l1 + l3).
 */
// @ts-ignore: decorator
@inline function reduce4(v0: v128, v1: v128, v2: v128, v3: v128): v128 {
  const u0 = f32x4.add(
    i8x16.shuffle(v0, v1, 0, 1, 2, 3, 4, 5, 6, 7, 16, 17, 18, 19, 20, 21, 22, 23),
    i8x16.shuffle(v0, v1, 8, 9, 10, 11, 12, 13, 14, 15, 24, 25, 26, 27, 28, 29, 30, 31),
  );
  const u1 = f32x4.add(
    i8x16.shuffle(v2, v3, 0, 1, 2, 3, 4, 5, 6, 7, 16, 17, 18, 19, 20, 21, 22, 23),
    i8x16.shuffle(v2, v3, 8, 9, 10, 11, 12, 13, 14, 15, 24, 25, 26, 27, 28, 29, 30, 31),
  );
  return f32x4.add(
    i8x16.shuffle(u0, u1, 0, 1, 2, 3, 8, 9, 10, 11, 16, 17, 18, 19, 24, 25, 26, 27),
    i8x16.shuffle(u0, u1, 4, 5, 6, 7, 12, 13, 14, 15, 20, 21, 22, 23, 28, 29, 30, 31),
  );
}

/** Stores the lanes of v to o[r], o[r + 1], ... for the rows below `rows` (a group's padding rows are dropped). */
// @ts-ignore: decorator
@inline function store4(o: usize, r: i32, rows: i32, v: v128): void {
  if (r + 3 < rows) {
    v128.store(o + (<usize>r << 2), v);
  } else {
    store<f32>(o + (<usize>r << 2), f32x4.extract_lane(v, 0));
    if (r + 1 < rows) store<f32>(o + (<usize>r << 2), f32x4.extract_lane(v, 1), 4);
    if (r + 2 < rows) store<f32>(o + (<usize>r << 2), f32x4.extract_lane(v, 2), 8);
  }
}

/** One group of 4 interleaved rows . x: 4 row sums. Block: f32 d[4], then for each half of 16, the 4 rows' 16 bytes. */
function groupQ8_0(p: usize, nb: i32, xp: usize): v128 {
  const m = splat32(0xFF000000, nb);
  let acc = f32x4.splat(0);
  for (let b = 0; b < nb; b++, p += 144) {
    let s0 = f32x4.splat(0);
    let s1 = f32x4.splat(0);
    let s2 = f32x4.splat(0);
    let s3 = f32x4.splat(0);
    for (let h: usize = 0; h < 2; h++, xp += 64) {
      const q = p + 16 + (h << 6);
      const q0 = v128.load(q);
      const q1 = v128.load(q, 16);
      const q2 = v128.load(q, 32);
      const q3 = v128.load(q, 48);
      let x = v128.load(xp);
      s0 = f32x4.add(s0, f32x4.mul(f32x4.convert_i32x4_s(i32x4.shl(q0, 24)), x));
      s1 = f32x4.add(s1, f32x4.mul(f32x4.convert_i32x4_s(i32x4.shl(q1, 24)), x));
      s2 = f32x4.add(s2, f32x4.mul(f32x4.convert_i32x4_s(i32x4.shl(q2, 24)), x));
      s3 = f32x4.add(s3, f32x4.mul(f32x4.convert_i32x4_s(i32x4.shl(q3, 24)), x));
      x = v128.load(xp, 16);
      s0 = f32x4.add(s0, f32x4.mul(f32x4.convert_i32x4_s(v128.and(i32x4.shl(q0, 16), m)), x));
      s1 = f32x4.add(s1, f32x4.mul(f32x4.convert_i32x4_s(v128.and(i32x4.shl(q1, 16), m)), x));
      s2 = f32x4.add(s2, f32x4.mul(f32x4.convert_i32x4_s(v128.and(i32x4.shl(q2, 16), m)), x));
      s3 = f32x4.add(s3, f32x4.mul(f32x4.convert_i32x4_s(v128.and(i32x4.shl(q3, 16), m)), x));
      x = v128.load(xp, 32);
      s0 = f32x4.add(s0, f32x4.mul(f32x4.convert_i32x4_s(v128.and(i32x4.shl(q0, 8), m)), x));
      s1 = f32x4.add(s1, f32x4.mul(f32x4.convert_i32x4_s(v128.and(i32x4.shl(q1, 8), m)), x));
      s2 = f32x4.add(s2, f32x4.mul(f32x4.convert_i32x4_s(v128.and(i32x4.shl(q2, 8), m)), x));
      s3 = f32x4.add(s3, f32x4.mul(f32x4.convert_i32x4_s(v128.and(i32x4.shl(q3, 8), m)), x));
      x = v128.load(xp, 48);
      s0 = f32x4.add(s0, f32x4.mul(f32x4.convert_i32x4_s(v128.and(q0, m)), x));
      s1 = f32x4.add(s1, f32x4.mul(f32x4.convert_i32x4_s(v128.and(q1, m)), x));
      s2 = f32x4.add(s2, f32x4.mul(f32x4.convert_i32x4_s(v128.and(q2, m)), x));
      s3 = f32x4.add(s3, f32x4.mul(f32x4.convert_i32x4_s(v128.and(q3, m)), x));
    }
    acc = f32x4.add(acc, f32x4.mul(v128.load(p), reduce4(s0, s1, s2, s3)));
  }
  return acc;
}

/**
 * Prefill form, step 1: a group's quants converted once to f32 (the exact integer-valued lanes
 * groupQ8_0 converts, q * 2^24) at dst, per block 512 bytes in the order groupQ8_0 consumes them.
 */
function convertGroupQ8_0(p: usize, nb: i32, dst: usize): void {
  const m = splat32(0xFF000000, nb);
  for (let b = 0; b < nb; b++, p += 144) {
    for (let h: usize = 0; h < 2; h++, dst += 256) {
      for (let r: usize = 0; r < 4; r++) {
        const q = v128.load(p + 16 + (h << 6) + (r << 4));
        const o = dst + (r << 4);
        v128.store(o, f32x4.convert_i32x4_s(i32x4.shl(q, 24)));
        v128.store(o, f32x4.convert_i32x4_s(v128.and(i32x4.shl(q, 16), m)), 64);
        v128.store(o, f32x4.convert_i32x4_s(v128.and(i32x4.shl(q, 8), m)), 128);
        v128.store(o, f32x4.convert_i32x4_s(v128.and(q, m)), 192);
      }
    }
  }
}

/**
 * Prefill form, step 2: groupQ8_0 with the converted lanes read from qf. The same multiplies and
 * adds in the same order, so each token's sums equal the decode pass bit for bit.
 */
function groupQ8_0F(p: usize, qf: usize, nb: i32, xp: usize): v128 {
  let acc = f32x4.splat(0);
  for (let b = 0; b < nb; b++, p += 144) {
    let s0 = f32x4.splat(0);
    let s1 = f32x4.splat(0);
    let s2 = f32x4.splat(0);
    let s3 = f32x4.splat(0);
    for (let h: usize = 0; h < 2; h++, xp += 64) {
      for (let j: usize = 0; j < 4; j++, qf += 64) {
        const x = v128.load(xp + (j << 4));
        s0 = f32x4.add(s0, f32x4.mul(v128.load(qf), x));
        s1 = f32x4.add(s1, f32x4.mul(v128.load(qf, 16), x));
        s2 = f32x4.add(s2, f32x4.mul(v128.load(qf, 32), x));
        s3 = f32x4.add(s3, f32x4.mul(v128.load(qf, 48), x));
      }
    }
    acc = f32x4.add(acc, f32x4.mul(v128.load(p), reduce4(s0, s1, s2, s3)));
  }
  return acc;
}

/**
 * groupQ8_0F for two tokens at once: each token's sums take exactly groupQ8_0F's multiplies and
 * adds in its order (so the results are the same bits), but the two tokens' accumulators are
 * independent chains, which hides the add latency that bounds the one-token loop (4 chains).
 * Writes the two tokens' 4 row sums to outA and outB at row r.
 */
function groupQ8_0F2(p: usize, qf: usize, nb: i32, xa: usize, xb: usize, outA: usize, outB: usize, r: i32, rows: i32): void {
  let accA = f32x4.splat(0);
  let accB = f32x4.splat(0);
  for (let b = 0; b < nb; b++, p += 144) {
    let a0 = f32x4.splat(0), a1 = f32x4.splat(0), a2 = f32x4.splat(0), a3 = f32x4.splat(0);
    let b0 = f32x4.splat(0), b1 = f32x4.splat(0), b2 = f32x4.splat(0), b3 = f32x4.splat(0);
    for (let h: usize = 0; h < 2; h++, xa += 64, xb += 64) {
      for (let j: usize = 0; j < 4; j++, qf += 64) {
        const x = v128.load(xa + (j << 4));
        const y = v128.load(xb + (j << 4));
        const w0 = v128.load(qf);
        a0 = f32x4.add(a0, f32x4.mul(w0, x));
        b0 = f32x4.add(b0, f32x4.mul(w0, y));
        const w1 = v128.load(qf, 16);
        a1 = f32x4.add(a1, f32x4.mul(w1, x));
        b1 = f32x4.add(b1, f32x4.mul(w1, y));
        const w2 = v128.load(qf, 32);
        a2 = f32x4.add(a2, f32x4.mul(w2, x));
        b2 = f32x4.add(b2, f32x4.mul(w2, y));
        const w3 = v128.load(qf, 48);
        a3 = f32x4.add(a3, f32x4.mul(w3, x));
        b3 = f32x4.add(b3, f32x4.mul(w3, y));
      }
    }
    const d = v128.load(p);
    accA = f32x4.add(accA, f32x4.mul(d, reduce4(a0, a1, a2, a3)));
    accB = f32x4.add(accB, f32x4.mul(d, reduce4(b0, b1, b2, b3)));
  }
  store4(outA, r, rows, accA);
  store4(outB, r, rows, accB);
}

export function matmul_q8_0(w: usize, cols: i32, x: usize, tokens: i32, out: usize, rows: i32, scratch: usize, scratchStride: i32, g0: i32, g1: i32, slot: i32): void {
  const nb = cols >> 5;
  const groupBytes = <usize>nb * 144;
  const xStride = <usize>cols << 2;
  if (tokens == 1) {
    for (let g = g0; g < g1; g++) store4(out, g << 2, rows, groupQ8_0(w + <usize>g * groupBytes, nb, x));
    return;
  }
  // Several tokens: convert each group once (16 * cols bytes of per-thread scratch), then every token.
  const qf = scratch + <usize>slot * <usize>scratchStride;
  for (let g = g0; g < g1; g++) {
    const p = w + <usize>g * groupBytes;
    convertGroupQ8_0(p, nb, qf);
    let t = 0;
    for (; t + 2 <= tokens; t += 2) {
      const o = out + ((<usize>t * <usize>rows) << 2);
      groupQ8_0F2(p, qf, nb, x + <usize>t * xStride, x + <usize>(t + 1) * xStride, o, o + (<usize>rows << 2), g << 2, rows);
    }
    if (t < tokens) store4(out + ((<usize>t * <usize>rows) << 2), g << 2, rows, groupQ8_0F(p, qf, nb, x + <usize>t * xStride));
  }
}

// ---------------------------------------------------------------------------------------------
// Q4_0
// ---------------------------------------------------------------------------------------------

function rowQ4_0(p: usize, nb: i32, xp: usize): f32 {
  const m = splat32(0xF0000000, nb);
  let acc = f32x4.splat(0);
  // One block per iteration: two blocks' 16 conversions in one body make V8 spill.
  for (let b = 0; b < nb; b++, p += 20, xp += 128) {
    acc = f32x4.add(acc, f32x4.mul(v128.load32_splat(p), dotN32(v128.load(p, 4), xp, m)));
  }
  return hsum(acc);
}

export function matmul_q4_0(w: usize, cols: i32, x: usize, tokens: i32, out: usize, rows: i32, scratch: usize, scratchStride: i32, r0: i32, r1: i32, slot: i32): void {
  const nb = cols >> 5;
  const rowBytes = <usize>nb * 20;
  const xStride = <usize>cols << 2;
  for (let t = 0; t < tokens; t++) {
    const xt = x + <usize>t * xStride;
    const ot = out + ((<usize>t * <usize>rows) << 2);
    for (let r = r0; r < r1; r++) store<f32>(ot + (<usize>r << 2), rowQ4_0(w + <usize>r * rowBytes, nb, xt));
  }
}

// ---------------------------------------------------------------------------------------------
// Q4_K
// ---------------------------------------------------------------------------------------------

/** Sums of x over each run of 32: dst[i] = sum x[32i .. 32i + 32), n a multiple of 32. */
function sums32(x: usize, n: i32, dst: usize): void {
  const end = x + (<usize>n << 2);
  for (; x < end; x += 128, dst += 4) {
    const a = f32x4.add(f32x4.add(v128.load(x), v128.load(x, 16)), f32x4.add(v128.load(x, 32), v128.load(x, 48)));
    const b = f32x4.add(f32x4.add(v128.load(x, 64), v128.load(x, 80)), f32x4.add(v128.load(x, 96), v128.load(x, 112)));
    store<f32>(dst, hsum(f32x4.add(a, b)));
  }
}

/**
 * Per token, for the unsigned-nibble kernels: xs = sums of x per 32 (nb * 8 floats), xsc = x with
 * element 4j + k of every 32 scaled by 2^-4j (j < 7; j = 7 unscaled), and 7 masks 0xF << 4j at mk.
 * Group j of a nibble vector masked in place is q * 2^4j, so its product with the scaled x equals
 * q * x exactly (power-of-two scaling; x below 2^-98 in magnitude would go subnormal).
 */
function prepNibbleX(x: usize, n: i32, xs: usize, xsc: usize, mk: usize): void {
  for (let j = 0; j < 7; j++) v128.store(mk + (<usize>j << 4), i32x4.splat(15 << (j << 2)));
  const end = x + (<usize>n << 2);
  for (; x < end; x += 128, xsc += 128, xs += 4) {
    const a = f32x4.add(f32x4.add(v128.load(x), v128.load(x, 16)), f32x4.add(v128.load(x, 32), v128.load(x, 48)));
    const b = f32x4.add(f32x4.add(v128.load(x, 64), v128.load(x, 80)), f32x4.add(v128.load(x, 96), v128.load(x, 112)));
    store<f32>(xs, hsum(f32x4.add(a, b)));
    v128.store(xsc, v128.load(x));
    v128.store(xsc, f32x4.mul(v128.load(x, 16), f32x4.splat(0.0625)), 16);
    v128.store(xsc, f32x4.mul(v128.load(x, 32), f32x4.splat(0.00390625)), 32);
    v128.store(xsc, f32x4.mul(v128.load(x, 48), f32x4.splat(0.000244140625)), 48);
    v128.store(xsc, f32x4.mul(v128.load(x, 64), f32x4.splat(0.0000152587890625)), 64);
    v128.store(xsc, f32x4.mul(v128.load(x, 80), f32x4.splat(9.5367431640625e-7)), 80);
    v128.store(xsc, f32x4.mul(v128.load(x, 96), f32x4.splat(5.9604644775390625e-8)), 96);
    v128.store(xsc, v128.load(x, 112), 112);
  }
}

/** 32 transposed unsigned nibbles . x[0..32) (xp: the scaled x of prepNibbleX, mk its masks). */
// @ts-ignore: decorator
@inline function dotU32(v: v128, xp: usize, mk: usize): v128 {
  const a = f32x4.add(fx(v128.and(v, v128.load(mk)), xp, 0), fx(v128.and(v, v128.load(mk, 16)), xp, 16));
  const b = f32x4.add(fx(v128.and(v, v128.load(mk, 32)), xp, 32), fx(v128.and(v, v128.load(mk, 48)), xp, 48));
  const c = f32x4.add(fx(v128.and(v, v128.load(mk, 64)), xp, 64), fx(v128.and(v, v128.load(mk, 80)), xp, 80));
  const d = f32x4.add(fx(v128.and(v, v128.load(mk, 96)), xp, 96), fx(i32x4.shr_u(v, 28), xp, 112));
  return f32x4.add(f32x4.add(a, b), f32x4.add(c, d));
}

/** Row dot; xs, xsc, mk from prepNibbleX; sm is 32 bytes of scratch for the block's f32 sub-block scales. */
function rowQ4_K(p: usize, nb: i32, xp: usize, xs: usize, mk: usize, sm: usize): f32 {
  let acc0 = f32x4.splat(0);
  let accM = f32x4.splat(0);
  for (let b = 0; b < nb; b++, p += 152, xp += 1024, xs += 32) {
    const d = v128.load32_splat(p);
    const dmin = v128.load32_splat(p, 4);
    const scm = i16x8.extend_low_i8x16_u(v128.load(p, 8)); // sc[0..8) (m follows in bytes 8..16)
    const mm = i16x8.extend_high_i8x16_u(v128.load(p, 8));
    // value d*sc*q - dmin*m: the mins multiply the sums of x per sub-block (d*sc, dmin*m exact in f32)
    const cLo = f32x4.mul(dmin, f32x4.convert_i32x4_u(i32x4.extend_low_i16x8_u(mm)));
    const cHi = f32x4.mul(dmin, f32x4.convert_i32x4_u(i32x4.extend_high_i16x8_u(mm)));
    accM = f32x4.add(accM, f32x4.add(f32x4.mul(cLo, v128.load(xs)), f32x4.mul(cHi, v128.load(xs, 16))));
    v128.store(sm, f32x4.mul(d, f32x4.convert_i32x4_u(i32x4.extend_low_i16x8_u(scm))));
    v128.store(sm, f32x4.mul(d, f32x4.convert_i32x4_u(i32x4.extend_high_i16x8_u(scm))), 16);
    // One sub-block per iteration: a fully unrolled super-block spills (measured 1.6x slower).
    for (let j: usize = 0; j < 8; j++) {
      acc0 = f32x4.add(acc0, f32x4.mul(v128.load32_splat(sm + (j << 2)), dotU32(v128.load(p + 24 + (j << 4)), xp + (j << 7), mk)));
    }
  }
  return hsum(f32x4.sub(acc0, accM));
}

/** dotU32 with the lanes already converted (qf: 8 f32x4, from convertRowQ4_K): same products, same sums. */
// @ts-ignore: decorator
@inline function dotF32(qf: usize, xp: usize): v128 {
  const a = f32x4.add(f32x4.mul(v128.load(qf), v128.load(xp)), f32x4.mul(v128.load(qf, 16), v128.load(xp, 16)));
  const b = f32x4.add(f32x4.mul(v128.load(qf, 32), v128.load(xp, 32)), f32x4.mul(v128.load(qf, 48), v128.load(xp, 48)));
  const c = f32x4.add(f32x4.mul(v128.load(qf, 64), v128.load(xp, 64)), f32x4.mul(v128.load(qf, 80), v128.load(xp, 80)));
  const d = f32x4.add(f32x4.mul(v128.load(qf, 96), v128.load(xp, 96)), f32x4.mul(v128.load(qf, 112), v128.load(xp, 112)));
  return f32x4.add(f32x4.add(a, b), f32x4.add(c, d));
}

/** A row's nibbles converted once to the f32 lanes dotU32 would convert (cols * 4 bytes at qf). */
function convertRowQ4_K(p: usize, nb: i32, qf: usize, mk: usize): void {
  for (let b = 0; b < nb; b++, p += 152) {
    for (let j: usize = 0; j < 8; j++, qf += 128) {
      const v = v128.load(p + 24 + (j << 4));
      v128.store(qf, f32x4.convert_i32x4_s(v128.and(v, v128.load(mk))));
      v128.store(qf, f32x4.convert_i32x4_s(v128.and(v, v128.load(mk, 16))), 16);
      v128.store(qf, f32x4.convert_i32x4_s(v128.and(v, v128.load(mk, 32))), 32);
      v128.store(qf, f32x4.convert_i32x4_s(v128.and(v, v128.load(mk, 48))), 48);
      v128.store(qf, f32x4.convert_i32x4_s(v128.and(v, v128.load(mk, 64))), 64);
      v128.store(qf, f32x4.convert_i32x4_s(v128.and(v, v128.load(mk, 80))), 80);
      v128.store(qf, f32x4.convert_i32x4_s(v128.and(v, v128.load(mk, 96))), 96);
      v128.store(qf, f32x4.convert_i32x4_s(i32x4.shr_u(v, 28)), 112);
    }
  }
}

/** rowQ4_K over converted lanes (qf): the same arithmetic in the same order, bit for bit. */
function rowQ4_KF(p: usize, qf: usize, nb: i32, xp: usize, xs: usize, sm: usize): f32 {
  let acc0 = f32x4.splat(0);
  let accM = f32x4.splat(0);
  for (let b = 0; b < nb; b++, p += 152, xp += 1024, xs += 32, qf += 1024) {
    const d = v128.load32_splat(p);
    const dmin = v128.load32_splat(p, 4);
    const scm = i16x8.extend_low_i8x16_u(v128.load(p, 8));
    const mm = i16x8.extend_high_i8x16_u(v128.load(p, 8));
    const cLo = f32x4.mul(dmin, f32x4.convert_i32x4_u(i32x4.extend_low_i16x8_u(mm)));
    const cHi = f32x4.mul(dmin, f32x4.convert_i32x4_u(i32x4.extend_high_i16x8_u(mm)));
    accM = f32x4.add(accM, f32x4.add(f32x4.mul(cLo, v128.load(xs)), f32x4.mul(cHi, v128.load(xs, 16))));
    v128.store(sm, f32x4.mul(d, f32x4.convert_i32x4_u(i32x4.extend_low_i16x8_u(scm))));
    v128.store(sm, f32x4.mul(d, f32x4.convert_i32x4_u(i32x4.extend_high_i16x8_u(scm))), 16);
    for (let j: usize = 0; j < 8; j++) {
      acc0 = f32x4.add(acc0, f32x4.mul(v128.load32_splat(sm + (j << 2)), dotF32(qf + (j << 7), xp + (j << 7))));
    }
  }
  return hsum(f32x4.sub(acc0, accM));
}

/** Tokens per tile of the Q4_K prefill form (their prepared x shares the per-thread scratch). */
const Q4K_TILE = 8;

export function matmul_q4_k(w: usize, cols: i32, x: usize, tokens: i32, out: usize, rows: i32, scratch: usize, scratchStride: i32, r0: i32, r1: i32, slot: i32): void {
  const nb = cols >> 8;
  const rowBytes = <usize>nb * 152;
  // per-thread scratch: 7 masks, 32 bytes of block scales, a converted row (tokens > 1), then per
  // token of a tile its scaled x (cols floats) and sums per 32 (cols / 32 floats)
  const mk = scratch + <usize>slot * <usize>scratchStride;
  const sm = mk + 112;
  const qf = mk + 144;
  const tx = qf + (<usize>cols << 2);
  const xsOff = <usize>cols << 2;
  const xBytes = xsOff + (<usize>cols >> 3);
  const xStride = <usize>cols << 2;
  if (tokens == 1) {
    prepNibbleX(x, cols, tx + xsOff, tx, mk);
    for (let r = r0; r < r1; r++) store<f32>(out + (<usize>r << 2), rowQ4_K(w + <usize>r * rowBytes, nb, tx, tx + xsOff, mk, sm));
    return;
  }
  // Several tokens: per tile, prepare each token's x, then convert each row once for the tile.
  for (let t0 = 0; t0 < tokens; t0 += Q4K_TILE) {
    const tn = min(Q4K_TILE, tokens - t0);
    for (let i = 0; i < tn; i++) {
      const xi = tx + <usize>i * xBytes;
      prepNibbleX(x + <usize>(t0 + i) * xStride, cols, xi + xsOff, xi, mk);
    }
    for (let r = r0; r < r1; r++) {
      const p = w + <usize>r * rowBytes;
      convertRowQ4_K(p, nb, qf, mk);
      for (let i = 0; i < tn; i++) {
        const xi = tx + <usize>i * xBytes;
        store<f32>(out + ((<usize>(t0 + i) * <usize>rows + <usize>r) << 2), rowQ4_KF(p, qf, nb, xi, xi + xsOff, sm));
      }
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Q6_K
// ---------------------------------------------------------------------------------------------

/** Row dot; sm is 64 bytes of scratch for the block's 16 f32 sub-block scales. */
function rowQ6_K(p: usize, nb: i32, xp: usize, sm: usize): f32 {
  const m = splat32(0xFF000000, nb);
  let acc0 = f32x4.splat(0);
  let acc1 = f32x4.splat(0);
  for (let b = 0; b < nb; b++, p += 276, xp += 1024) {
    const d = v128.load32_splat(p);
    const v = v128.load(p, 4);
    const lo = i16x8.extend_low_i8x16_s(v);
    const hi = i16x8.extend_high_i8x16_s(v);
    v128.store(sm, f32x4.mul(d, f32x4.convert_i32x4_s(i32x4.extend_low_i16x8_s(lo))));
    v128.store(sm, f32x4.mul(d, f32x4.convert_i32x4_s(i32x4.extend_high_i16x8_s(lo))), 16);
    v128.store(sm, f32x4.mul(d, f32x4.convert_i32x4_s(i32x4.extend_low_i16x8_s(hi))), 32);
    v128.store(sm, f32x4.mul(d, f32x4.convert_i32x4_s(i32x4.extend_high_i16x8_s(hi))), 48);
    for (let i: usize = 0; i < 16; i += 2) {
      const q = p + 20 + (i << 4);
      const xi = xp + (i << 6);
      acc0 = f32x4.add(acc0, f32x4.mul(v128.load32_splat(sm + (i << 2)), dotB16(v128.load(q), xi, m)));
      acc1 = f32x4.add(acc1, f32x4.mul(v128.load32_splat(sm + (i << 2), 4), dotB16(v128.load(q, 16), xi + 64, m)));
    }
  }
  return hsum(f32x4.add(acc0, acc1));
}

export function matmul_q6_k(w: usize, cols: i32, x: usize, tokens: i32, out: usize, rows: i32, scratch: usize, scratchStride: i32, r0: i32, r1: i32, slot: i32): void {
  const nb = cols >> 8;
  const rowBytes = <usize>nb * 276;
  const dq = scratch + <usize>slot * <usize>scratchStride;
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
