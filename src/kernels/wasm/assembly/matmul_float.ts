// Float matrix products out (tokens, rows) = x (tokens, cols) . W^T, WASM SIMD, for
// weights in f32, f16 or bf16 repacked by src/kernels/wasm/matmul-float.ts.
//
// Packed layout: rows padded to a multiple of 4 (groups of 4 rows), cols padded to a
// multiple of 8 (cp) with zeros. Group g is one sequential stream of cp/8 blocks; block b
// holds the 8 columns [8b, 8b+8) of the group's 4 rows, row after row:
//   f32:       4 rows x 8 f32 in column order                      (128 bytes)
//   f16/bf16:  4 rows x 8 halves, permuted c0 c4 c1 c5 c2 c6 c3 c7 (64 bytes)
// so that the low half of 32-bit lane j holds column j and the high half column j+4:
// decoding one v128 gives columns 0..3 (low halves) and 4..7 (high halves) with shifts
// and masks only, and x stays in its natural order.
//
// x: tokens rows of cp f32 (the padding zero); for f16 "fast" x is prescaled by 2^112
// (the caller checks |x| < 2^16), so the raw decode (exponent not rebiased) times the
// scaled x is the exact product w*x rounded once to f32. The "exact" f16 variant decodes
// every weight fully (rebias multiply, inf/NaN fix-up) and takes x as it is.
//
// Accumulation is in f32 lanes: a sum of cols terms goes through at most cp/4 + 3 roundings
// (chains of cp/8 or cp/4 per lane, then a 3-level reduction), so
// |error| <= (cp/4 + 4) * 2^-24 * sum_i |x_i w_i| (first order); typical errors are far
// smaller (random walk).
//
// No static data (the shared memory's kernel-data region belongs to other kernels).

const T_F32: i32 = 0;
const T_F16: i32 = 1;
const T_BF16: i32 = 2;

// ---------------------------------------------------------------------------
// Weight decoding: one 16-byte load per row per 8 columns (two for f32).
// ---------------------------------------------------------------------------

/** f16 bits in the top half of each lane (low half arbitrary) -> exact f32 (inf/NaN too). */
// @ts-ignore: decorator
@inline function f16Exact(top: v128): v128 {
  const v = f32x4.mul(v128.and(i32x4.shr_s(top, 3), i32x4.splat(<i32>0x8FFFE000)), i32x4.splat(0x77800000));
  const infNan = i32x4.eq(v128.and(top, i32x4.splat(0x7C000000)), i32x4.splat(0x7C000000));
  return v128.or(v, v128.and(infNan, i32x4.splat(0x7F800000)));
}

/** Columns 0..3 of a row's block (raw = its first 16 bytes at p). */
// @ts-ignore: decorator
@inline function wLo(type: i32, exact: bool, raw: v128, mask: v128): v128 {
  if (type == T_F32) return raw;
  if (type == T_BF16) return i32x4.shl(raw, 16);
  if (exact) return f16Exact(i32x4.shl(raw, 16));
  // Raw decode: value * 2^-112 (x carries the 2^112).
  return v128.and(i32x4.shr_s(i32x4.shl(raw, 16), 3), mask);
}

/** Columns 4..7 of a row's block. */
// @ts-ignore: decorator
@inline function wHi(type: i32, exact: bool, raw: v128, p: usize, mask: v128): v128 {
  if (type == T_F32) return v128.load(p, 16);
  if (type == T_BF16) return v128.and(raw, mask);
  if (exact) return f16Exact(raw);
  // The low half's bits land below bit 13 after the shift and the mask clears them.
  return v128.and(i32x4.shr_s(raw, 3), mask);
}

/** [sum(a0), sum(a1), sum(a2), sum(a3)]. */
// @ts-ignore: decorator
@inline function hsum4(a0: v128, a1: v128, a2: v128, a3: v128): v128 {
  const t0 = f32x4.add(i32x4.shuffle(a0, a1, 0, 4, 1, 5), i32x4.shuffle(a0, a1, 2, 6, 3, 7));
  const t1 = f32x4.add(i32x4.shuffle(a2, a3, 0, 4, 1, 5), i32x4.shuffle(a2, a3, 2, 6, 3, 7));
  return f32x4.add(i32x4.shuffle(t0, t1, 0, 1, 4, 5), i32x4.shuffle(t0, t1, 2, 3, 6, 7));
}

/** Stores the 4 sums of rows [r0, r0+4) that exist (rows not a multiple of 4: the last group's tail). */
// @ts-ignore: decorator
@inline function store4(outRow: usize, r0: i32, rows: i32, v: v128): void {
  const p = outRow + (<usize>r0 << 2);
  if (r0 + 4 <= rows) {
    v128.store(p, v);
  } else {
    store<f32>(p, f32x4.extract_lane(v, 0));
    if (r0 + 1 < rows) store<f32>(p, f32x4.extract_lane(v, 1), 4);
    if (r0 + 2 < rows) store<f32>(p, f32x4.extract_lane(v, 2), 8);
  }
}

// ---------------------------------------------------------------------------
// The micro-kernel: 4 rows x 1 token (8 accumulators: row x lo/hi). A group of 4 rows
// (4 x cp values) stays in L1/L2 between the tokens of a prefill.
// ---------------------------------------------------------------------------

// @ts-ignore: decorator
@inline function group1(type: i32, exact: bool, wg: usize, blocks: i32, x: usize, mask: v128): v128 {
  const BB: usize = type == T_F32 ? 128 : 64;
  const RB: usize = BB >> 2;
  let a0l = f32x4.splat(0), a0h = f32x4.splat(0), a1l = f32x4.splat(0), a1h = f32x4.splat(0);
  let a2l = f32x4.splat(0), a2h = f32x4.splat(0), a3l = f32x4.splat(0), a3h = f32x4.splat(0);
  let p = wg;
  let xp = x;
  let b = 0;
  // Two blocks per trip (fewer loop instructions per byte); each accumulator still takes its
  // products in block order, so the sums are the same bits as one block per trip.
  for (; b + 2 <= blocks; b += 2, p += 2 * BB, xp += 64) {
    let xl = v128.load(xp);
    let xh = v128.load(xp, 16);
    let raw = v128.load(p);
    a0l = f32x4.add(a0l, f32x4.mul(wLo(type, exact, raw, mask), xl));
    a0h = f32x4.add(a0h, f32x4.mul(wHi(type, exact, raw, p, mask), xh));
    raw = v128.load(p + RB);
    a1l = f32x4.add(a1l, f32x4.mul(wLo(type, exact, raw, mask), xl));
    a1h = f32x4.add(a1h, f32x4.mul(wHi(type, exact, raw, p + RB, mask), xh));
    raw = v128.load(p + 2 * RB);
    a2l = f32x4.add(a2l, f32x4.mul(wLo(type, exact, raw, mask), xl));
    a2h = f32x4.add(a2h, f32x4.mul(wHi(type, exact, raw, p + 2 * RB, mask), xh));
    raw = v128.load(p + 3 * RB);
    a3l = f32x4.add(a3l, f32x4.mul(wLo(type, exact, raw, mask), xl));
    a3h = f32x4.add(a3h, f32x4.mul(wHi(type, exact, raw, p + 3 * RB, mask), xh));
    const q = p + BB;
    xl = v128.load(xp, 32);
    xh = v128.load(xp, 48);
    raw = v128.load(q);
    a0l = f32x4.add(a0l, f32x4.mul(wLo(type, exact, raw, mask), xl));
    a0h = f32x4.add(a0h, f32x4.mul(wHi(type, exact, raw, q, mask), xh));
    raw = v128.load(q + RB);
    a1l = f32x4.add(a1l, f32x4.mul(wLo(type, exact, raw, mask), xl));
    a1h = f32x4.add(a1h, f32x4.mul(wHi(type, exact, raw, q + RB, mask), xh));
    raw = v128.load(q + 2 * RB);
    a2l = f32x4.add(a2l, f32x4.mul(wLo(type, exact, raw, mask), xl));
    a2h = f32x4.add(a2h, f32x4.mul(wHi(type, exact, raw, q + 2 * RB, mask), xh));
    raw = v128.load(q + 3 * RB);
    a3l = f32x4.add(a3l, f32x4.mul(wLo(type, exact, raw, mask), xl));
    a3h = f32x4.add(a3h, f32x4.mul(wHi(type, exact, raw, q + 3 * RB, mask), xh));
  }
  for (; b < blocks; b++, p += BB, xp += 32) {
    const xl = v128.load(xp);
    const xh = v128.load(xp, 16);
    let raw = v128.load(p);
    a0l = f32x4.add(a0l, f32x4.mul(wLo(type, exact, raw, mask), xl));
    a0h = f32x4.add(a0h, f32x4.mul(wHi(type, exact, raw, p, mask), xh));
    raw = v128.load(p + RB);
    a1l = f32x4.add(a1l, f32x4.mul(wLo(type, exact, raw, mask), xl));
    a1h = f32x4.add(a1h, f32x4.mul(wHi(type, exact, raw, p + RB, mask), xh));
    raw = v128.load(p + 2 * RB);
    a2l = f32x4.add(a2l, f32x4.mul(wLo(type, exact, raw, mask), xl));
    a2h = f32x4.add(a2h, f32x4.mul(wHi(type, exact, raw, p + 2 * RB, mask), xh));
    raw = v128.load(p + 3 * RB);
    a3l = f32x4.add(a3l, f32x4.mul(wLo(type, exact, raw, mask), xl));
    a3h = f32x4.add(a3h, f32x4.mul(wHi(type, exact, raw, p + 3 * RB, mask), xh));
  }
  return hsum4(f32x4.add(a0l, a0h), f32x4.add(a1l, a1h), f32x4.add(a2l, a2h), f32x4.add(a3l, a3h));
}

// @ts-ignore: decorator
@inline function run(type: i32, exact: bool, w: usize, rows: i32, cp: i32, tokens: i32, x: usize, out: usize, g0: i32, g1: i32, maskBits: i32): void {
  // The decode mask comes in as an argument: a v128.const would be rematerialised by V8 at
  // every use inside the loops (several instructions each); a splat of a parameter stays in a register.
  const mask = i32x4.splat(maskBits);
  const BB: usize = type == T_F32 ? 128 : 64;
  const blocks = cp >> 3;
  const groupBytes = <usize>blocks * BB;
  const xStride = <usize>cp << 2;
  const outStride = <usize>rows << 2;
  for (let g = g0; g < g1; g++) {
    const wg = w + <usize>g * groupBytes;
    const r0 = g << 2;
    // Every token through the same 1-token micro-kernel: each output is summed in the same order
    // however many tokens a call holds, so chunked prefill, batches and decode agree bit for bit.
    // (The group's weights stay in L1/L2 between the tokens of a prefill.)
    for (let t = 0; t < tokens; t++) store4(out + <usize>t * outStride, r0, rows, group1(type, exact, wg, blocks, x + <usize>t * xStride, mask));
  }
}

/**
 * Several tokens over f16/bf16 weights: each 4-row group is decoded once, exactly, into the f32
 * packed layout in this thread's scratch (4 * cp f32 at scratch + slot * 16 * cp), and every token
 * then runs the f32 micro-kernel over it. The products are the same (the raw f16 decode times x
 * prescaled by 2^112 is the exact product rounded once, as is the exact decode times x) and so are
 * the lanes and the order of every sum, so this equals one call per token bit for bit, while the
 * decode is paid once per call instead of once per token. x is NOT prescaled here.
 */
// @ts-ignore: decorator
@inline function runDecoded(type: i32, w: usize, rows: i32, cp: i32, tokens: i32, x: usize, out: usize, g0: i32, g1: i32, slot: i32, scratch: usize): void {
  const blocks = cp >> 3;
  const groupBytes = <usize>blocks * 64;
  const xStride = <usize>cp << 2;
  const outStride = <usize>rows << 2;
  const tile = scratch + <usize>slot * (<usize>cp << 4);
  const bfMask = i32x4.splat(<i32>0xFFFF0000);
  for (let g = g0; g < g1; g++) {
    const wg = w + <usize>g * groupBytes;
    // Decode the group: each f16/bf16 row block (64 bytes, 4 rows) becomes 4 rows x 8 f32 (128 bytes).
    let p = wg;
    let d = tile;
    for (let b = 0; b < blocks; b++, p += 64, d += 128) {
      for (let r: usize = 0; r < 4; r++) {
        const raw = v128.load(p + (r << 4));
        if (type == T_BF16) {
          v128.store(d + (r << 5), i32x4.shl(raw, 16));
          v128.store(d + (r << 5), v128.and(raw, bfMask), 16);
        } else {
          v128.store(d + (r << 5), f16Exact(i32x4.shl(raw, 16)));
          v128.store(d + (r << 5), f16Exact(raw), 16);
        }
      }
    }
    const r0 = g << 2;
    for (let t = 0; t < tokens; t++) store4(out + <usize>t * outStride, r0, rows, group1(T_F32, false, tile, blocks, x + <usize>t * xStride, i32x4.splat(0)));
  }
}

export function matmul_f16_tokens(w: usize, rows: i32, cp: i32, tokens: i32, x: usize, out: usize, scratch: i32, g0: i32, g1: i32, slot: i32): void {
  runDecoded(T_F16, w, rows, cp, tokens, x, out, g0, g1, slot, <usize>scratch);
}

export function matmul_bf16_tokens(w: usize, rows: i32, cp: i32, tokens: i32, x: usize, out: usize, scratch: i32, g0: i32, g1: i32, slot: i32): void {
  runDecoded(T_BF16, w, rows, cp, tokens, x, out, g0, g1, slot, <usize>scratch);
}

/**
 * out[t*rows + r] = sum_i x[t*cp + i] * W[r, i] for row groups [g0, g1) (rows 4g .. 4g+3 that
 * exist) and every token t < tokens, one export per weight type: f32, bf16, f16 (x prescaled by
 * 2^112) and f16x (full decode, x as it is). Pointers are byte addresses (x and w 16-byte aligned
 * is best, any alignment works). maskBits: 0x8FFFE000 for f16, 0xFFFF0000 for bf16 (anything
 * for f32). slot is unused.
 *
 * Separate exports, not one with a type switch: binaryen merges the specialised loops of a
 * switch back into one loop that branches per element (4x slower).
 */
export function matmul_f32(w: usize, rows: i32, cp: i32, tokens: i32, x: usize, out: usize, maskBits: i32, g0: i32, g1: i32, slot: i32): void {
  slot;
  run(T_F32, false, w, rows, cp, tokens, x, out, g0, g1, maskBits);
}

export function matmul_bf16(w: usize, rows: i32, cp: i32, tokens: i32, x: usize, out: usize, maskBits: i32, g0: i32, g1: i32, slot: i32): void {
  slot;
  run(T_BF16, false, w, rows, cp, tokens, x, out, g0, g1, maskBits);
}

export function matmul_f16(w: usize, rows: i32, cp: i32, tokens: i32, x: usize, out: usize, maskBits: i32, g0: i32, g1: i32, slot: i32): void {
  slot;
  run(T_F16, false, w, rows, cp, tokens, x, out, g0, g1, maskBits);
}

export function matmul_f16x(w: usize, rows: i32, cp: i32, tokens: i32, x: usize, out: usize, maskBits: i32, g0: i32, g1: i32, slot: i32): void {
  slot;
  run(T_F16, true, w, rows, cp, tokens, x, out, g0, g1, maskBits);
}

// ---------------------------------------------------------------------------
// Packing (once per matrix, at load): src holds the (rows, cols) matrix row-major, dst the
// packed layout above, already zeroed (the padding stays zero).
// ---------------------------------------------------------------------------

/** f32 rows -> groups of 4 rows x blocks of 8 columns. */
export function pack_f32(src: usize, dst: usize, rows: i32, cols: i32): void {
  const blocks = (cols + 7) >> 3;
  const full = cols >> 3;
  for (let o = 0; o < rows; o++) {
    const s = src + (<usize>o * <usize>cols << 2);
    let d = dst + ((<usize>(o >> 2) * <usize>blocks * 4 + <usize>(o & 3)) << 5);
    let b = 0;
    for (; b < full; b++, d += 128) {
      v128.store(d, v128.load(s + (<usize>b << 5)));
      v128.store(d, v128.load(s + (<usize>b << 5), 16), 16);
    }
    for (let i = b << 3; i < cols; i++) store<f32>(d + (<usize>(i & 7) << 2), load<f32>(s + (<usize>i << 2)));
  }
}

/**
 * f16/bf16 rows -> groups of 4 rows x blocks of 8 halves, each block's halves permuted to
 * c0 c4 c1 c5 c2 c6 c3 c7. Returns 1 when some half has exponent bits 0x7C00 all set (an f16
 * inf/NaN: such a matrix needs the full decode), else 0.
 */
export function pack_16(src: usize, dst: usize, rows: i32, cols: i32): i32 {
  const blocks = (cols + 7) >> 3;
  const full = cols >> 3;
  const expMask = i16x8.splat(0x7C00);
  let special = i16x8.splat(0);
  let specialTail: i32 = 0;
  for (let o = 0; o < rows; o++) {
    const s = src + (<usize>o * <usize>cols << 1);
    let d = dst + ((<usize>(o >> 2) * <usize>blocks * 4 + <usize>(o & 3)) << 4);
    let b = 0;
    for (; b < full; b++, d += 64) {
      const v = v128.load(s + (<usize>b << 4));
      special = v128.or(special, i16x8.eq(v128.and(v, expMask), expMask));
      v128.store(d, i8x16.shuffle(v, v, 0, 1, 8, 9, 2, 3, 10, 11, 4, 5, 12, 13, 6, 7, 14, 15));
    }
    for (let i = b << 3; i < cols; i++) {
      const h = load<u16>(s + (<usize>i << 1));
      if ((h & 0x7C00) == 0x7C00) specialTail = 1;
      const k = i & 7;
      store<u16>(d + (<usize>(k < 4 ? 2 * k : 2 * (k - 4) + 1) << 1), h);
    }
  }
  return v128.any_true(special) || specialTail != 0 ? 1 : 0;
}
