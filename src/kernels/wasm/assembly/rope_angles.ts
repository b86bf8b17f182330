// cos/sin rows for the fused RoPE, from two-level float64 tables (angle addition).
//
// A position splits as p = hi * 1024 + lo. With a = hi * 1024 * w_i and b = lo * w_i:
//   cos(a + b) = cos a cos b - sin a sin b,   sin(a + b) = sin a cos b + cos a sin b.
// JS builds cos/sin of b for lo in [0, 1024) once per frequency set, and cos/sin of a for the few
// distinct hi of a call; this kernel joins them per token in float64 (f64x2), multiplies by the
// attention factor and stores each value once, rounded to f32 (f32 math) or kept as f64.
//
// Layouts (all float64, half = rotaryDim / 2):
//   low:   [1024][half] cos, then [1024][half] sin
//   high:  [nHigh][half] cos, then [nHigh][half] sin
//   highIndex: i32 per token, the row of `high` for that token's hi; positions: i32 per token.
//   out:   per token, half values m cos then half values m sin (f32 or f64).

// @ts-ignore: decorator
@inline const LOW_SIZE: i32 = 1024;

export function cos_sin_rows(
  out: usize, outF64: i32,
  positions: usize, highIndex: usize, tokens: i32, half: i32,
  low: usize, high: usize, nHigh: i32, factor: f64,
): void {
  const lowSin = low + <usize>(LOW_SIZE * half) * 8;
  const highSin = high + <usize>(nHigh * half) * 8;
  const m = f64x2.splat(factor);
  const rowBytes: usize = <usize>half * (outF64 ? 16 : 8);
  for (let t = 0; t < tokens; t++) {
    const p = load<i32>(positions + (<usize>t << 2));
    const lo = <usize>((p & (LOW_SIZE - 1)) * half) * 8;
    const hi = <usize>(load<i32>(highIndex + (<usize>t << 2)) * half) * 8;
    const row = out + <usize>t * rowBytes;
    let i = 0;
    for (; i + 2 <= half; i += 2) {
      const o = <usize>i * 8;
      const cl = v128.load(low + lo + o);
      const sl = v128.load(lowSin + lo + o);
      const ch = v128.load(high + hi + o);
      const sh = v128.load(highSin + hi + o);
      const c = f64x2.mul(m, f64x2.sub(f64x2.mul(ch, cl), f64x2.mul(sh, sl)));
      const s = f64x2.mul(m, f64x2.add(f64x2.mul(sh, cl), f64x2.mul(ch, sl)));
      if (outF64) {
        v128.store(row + o, c);
        v128.store(row + <usize>half * 8 + o, s);
      } else {
        // Two f32 lanes each: f32x4.demote_f64x2_zero rounds once (to nearest even).
        v128.store64_lane(row + <usize>i * 4, f32x4.demote_f64x2_zero(c), 0);
        v128.store64_lane(row + <usize>(half + i) * 4, f32x4.demote_f64x2_zero(s), 0);
      }
    }
    for (; i < half; i++) {
      const o = <usize>i * 8;
      const cl = load<f64>(low + lo + o);
      const sl = load<f64>(lowSin + lo + o);
      const ch = load<f64>(high + hi + o);
      const sh = load<f64>(highSin + hi + o);
      const c = factor * (ch * cl - sh * sl);
      const s = factor * (sh * cl + ch * sl);
      if (outF64) {
        store<f64>(row + o, c);
        store<f64>(row + <usize>half * 8 + o, s);
      } else {
        store<f32>(row + <usize>i * 4, <f32>c);
        store<f32>(row + <usize>(half + i) * 4, <f32>s);
      }
    }
  }
}
