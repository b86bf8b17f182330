import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { getFloat16, setFloat16 } from '@petamoriken/float16';
import { loadKernel, PAGE_BYTES, RESERVED_BYTES, WasmHeap, wasmHeap } from './heap.js';
import { poolReady, poolStats, setMinChunkWork, setThreads, threadCount } from './pool.js';
import { ropeWasm, type RopeOperand, type RopeWasmCall, type StorageDType } from './rope.js';

// ---------------------------------------------------------------------------
// Scalar reference of the contract, independent of the kernel's bit tricks.
// ---------------------------------------------------------------------------

const f32Scratch = new Float32Array(1);
const u32Scratch = new Uint32Array(f32Scratch.buffer);

function f32FromBits(bits: number): number {
  u32Scratch[0] = bits;
  return f32Scratch[0]!;
}

function bitsFromF32(x: number): number {
  f32Scratch[0] = x;
  return u32Scratch[0]!;
}

const BYTES: Record<StorageDType, number> = { f32: 4, f16: 2, bf16: 2 };

/** Exact value of raw storage bits. */
function decode(dtype: StorageDType, bits: number): number {
  if (dtype === 'f32') return f32FromBits(bits);
  if (dtype === 'bf16') return f32FromBits((bits << 16) >>> 0);
  const sign = bits & 0x8000 ? -1 : 1;
  const e = (bits >> 10) & 31;
  const m = bits & 1023;
  if (e === 31) return m ? NaN : sign * Infinity;
  if (e === 0) return sign * m * 2 ** -24;
  return sign * (1024 + m) * 2 ** (e - 25);
}

function roundHalfEven(m: number): number {
  const f = Math.floor(m);
  const d = m - f;
  if (d > 0.5) return f + 1;
  if (d < 0.5) return f;
  return f % 2 === 0 ? f : f + 1;
}

/** Rounds a double ONCE to a binary format with expBits/mantBits (round to nearest even), returns its bits. */
function encodeIeee(x: number, expBits: number, mantBits: number): number {
  const signBit = 1 << (expBits + mantBits);
  const expMax = (1 << expBits) - 1;
  if (Number.isNaN(x)) return (expMax << mantBits) | (1 << (mantBits - 1));
  const sign = x < 0 || Object.is(x, -0) ? signBit : 0;
  const a = Math.abs(x);
  if (a === Infinity) return sign | (expMax << mantBits);
  const bias = (1 << (expBits - 1)) - 1;
  const emin = 1 - bias;
  if (a < 2 ** emin) {
    // Subnormal quantum 2^(emin - mantBits); a carry to 2^mantBits is the smallest normal, encoded the same way.
    return sign | roundHalfEven(a / 2 ** (emin - mantBits));
  }
  let e = Math.floor(Math.log2(a));
  while (2 ** e > a) e--;
  while (2 ** (e + 1) <= a) e++;
  let r = roundHalfEven(a / 2 ** (e - mantBits));
  if (r === 2 ** (mantBits + 1)) {
    r /= 2;
    e++;
  }
  if (e + bias >= expMax) return sign | (expMax << mantBits);
  return sign | ((e + bias) << mantBits) | (r - 2 ** mantBits);
}

/** Rounds a double once to the storage dtype. */
function encode(dtype: StorageDType, x: number): number {
  if (dtype === 'f32') return bitsFromF32(x);
  return dtype === 'f16' ? encodeIeee(x, 5, 10) : encodeIeee(x, 8, 7);
}

function isNaNBits(dtype: StorageDType, bits: number): boolean {
  if (dtype === 'f32') return (bits & 0x7fffffff) > 0x7f800000;
  if (dtype === 'f16') return (bits & 0x7fff) > 0x7c00;
  return (bits & 0x7fff) > 0x7f80;
}

function isQuietNaNBits(dtype: StorageDType, bits: number): boolean {
  const quiet = dtype === 'f32' ? 0x400000 : dtype === 'f16' ? 0x200 : 0x40;
  return isNaNBits(dtype, bits) && (bits & quiet) !== 0;
}

/** Reads/writes raw element bits at a byte address of a byte array. */
class Bits {
  private readonly dv: DataView;
  constructor(bytes: Uint8Array, private readonly base: number, private readonly dtype: StorageDType) {
    this.dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  }
  get(addr: number): number {
    return this.dtype === 'f32' ? this.dv.getUint32(addr - this.base, true) : this.dv.getUint16(addr - this.base, true);
  }
  set(addr: number, bits: number): void {
    if (this.dtype === 'f32') this.dv.setUint32(addr - this.base, bits, true);
    else this.dv.setUint16(addr - this.base, bits, true);
  }
}

/**
 * Applies the contract to `before` (a snapshot of the arena at `base`), writing into `expected`.
 * Returns the byte addresses whose expected value is NaN (compared as NaN class).
 */
function referenceRope(call: RopeWasmCall, before: Uint8Array, expected: Uint8Array, base: number): number[] {
  const { dtype, math, headDim, rotaryDim, pairing } = call;
  const es = BYTES[dtype];
  const src = new Bits(before, base, dtype);
  const dst = new Bits(expected, base, dtype);
  const tab = new DataView(before.buffer, before.byteOffset, before.byteLength);
  const half = rotaryDim / 2;
  const tsize = math === 'f64' ? 8 : 4;
  const r = math === 'f32' ? Math.fround : (x: number) => x;
  const nans: number[] = [];
  for (let b = 0; b < call.batch; b++) {
    for (let s = 0; s < call.seqLen; s++) {
      const row = call.table + (b * call.seqLen + s) * rotaryDim * tsize - base;
      const tv = (j: number) => (math === 'f64' ? tab.getFloat64(row + j * 8, true) : tab.getFloat32(row + j * 4, true));
      for (const part of [call.q, call.k]) {
        for (let h = 0; h < part.heads; h++) {
          const at = (op: RopeOperand, d: number) => op.ptr + (b * op.strides[0] + s * op.strides[1] + h * op.strides[2] + d) * es;
          for (let i = 0; i < half; i++) {
            const [d1, d2] = pairing === 'neox' ? [i, i + half] : [2 * i, 2 * i + 1];
            const x1 = decode(dtype, src.get(at(part.input, d1)));
            const x2 = decode(dtype, src.get(at(part.input, d2)));
            const c = tv(i);
            const sn = tv(half + i);
            const y1 = r(r(x1 * c) - r(x2 * sn));
            const y2 = r(r(x2 * c) + r(x1 * sn));
            for (const [d, y] of [[d1, y1], [d2, y2]] as const) {
              dst.set(at(part.output, d), encode(dtype, y));
              if (Number.isNaN(y)) nans.push(at(part.output, d));
            }
          }
          for (let d = rotaryDim; d < headDim; d++) dst.set(at(part.output, d), src.get(at(part.input, d)));
        }
      }
    }
  }
  return nans;
}

// ---------------------------------------------------------------------------
// Random inputs.
// ---------------------------------------------------------------------------

function mulberry32(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** Random storage bits with plenty of specials: subnormals, +-0, +-inf, NaN, near-overflow values. */
function randomBits(dtype: StorageDType, rnd: () => number): number {
  const u = rnd();
  const signed = (x: number) => (rnd() < 0.5 ? -x : x);
  const expBits = dtype === 'f32' ? 8 : dtype === 'f16' ? 5 : 8;
  const mantBits = dtype === 'f32' ? 23 : dtype === 'f16' ? 10 : 7;
  const signBit = 2 ** (expBits + mantBits);
  const mant = () => Math.floor(rnd() * 2 ** mantBits);
  const big = dtype === 'f16' ? 65504 : 3.3e38;
  let bits: number;
  if (u < 0.55) bits = encode(dtype, signed((rnd() * 2 - 1) * 10 ** (rnd() * 6 - 3)));
  else if (u < 0.65) bits = mant() + (rnd() < 0.5 ? signBit : 0); // subnormal or zero
  else if (u < 0.7) bits = rnd() < 0.5 ? signBit : 0; // +-0
  else if (u < 0.73) bits = (2 ** expBits - 1) * 2 ** mantBits + (rnd() < 0.5 ? signBit : 0); // +-inf
  else if (u < 0.76) bits = (2 ** expBits - 1) * 2 ** mantBits + Math.max(1, mant()) + (rnd() < 0.5 ? signBit : 0); // NaN
  else if (u < 0.86) bits = encode(dtype, signed(big * (0.9 + 0.1 * rnd()))); // overflows after rotation by a factor > 1
  else bits = Math.floor(rnd() * 2 * signBit); // any pattern
  return bits;
}

/**
 * cos/sin pairs: plain rotations, attention factor 1.5, identity, 45 degrees x 1.5,
 * tiny (subnormal results), and +-1 / 0.5 entries whose exact sums and halvings hit rounding ties.
 */
function randomCosSin(rnd: () => number): [number, number] {
  const u = rnd();
  if (u < 0.08) return [1, 0];
  if (u < 0.16) return [1.5 * Math.SQRT1_2, 1.5 * Math.SQRT1_2];
  if (u < 0.24) return [rnd() < 0.5 ? 0.5 : 1, rnd() < 0.5 ? -1 : 1];
  if (u < 0.3) {
    const th = rnd() * 2 * Math.PI;
    return [1e-6 * Math.cos(th), 1e-6 * Math.sin(th)];
  }
  const th = (rnd() * 2 - 1) * 1000;
  const f = u < 0.6 ? 1 : 1.5;
  return [f * Math.cos(th), f * Math.sin(th)];
}

/**
 * cos/sin entries the fast paths must hand over to the exact path or get right anyway: so large
 * that c * 2^112 overflows (>= 2^16), around that limit, f32 denormals, signed zeros, f32 max.
 */
function extremeCosSin(rnd: () => number): [number, number] {
  const values = [65536, -65536, 1e5, 65535.99, 32768, 3.4e38, -3.4e38, 1e-40, -1e-45, 2 ** -149, -0, 0, 1.5, -1];
  const pick = () => values[Math.floor(rnd() * values.length)]!;
  return [pick(), pick()];
}

// ---------------------------------------------------------------------------
// Arena: q/k inputs/outputs and table in one allocation, filled with random bits.
// ---------------------------------------------------------------------------

type Layout = 'bshd' | 'bhsd' | 'qkv' | 'padded';

interface Case {
  dtype: StorageDType;
  math: 'f32' | 'f64';
  pairing: 'neox' | 'gptj';
  batch: number;
  seqLen: number;
  headDim: number;
  rotaryDim: number;
  qHeads: number;
  kHeads: number;
  layout: Layout;
  inPlace: boolean;
  seed: number;
  /** Table entries from extremeCosSin instead of randomCosSin. */
  extremeTable?: boolean;
}

/** Strides [batch, seq, head] and element count of a [B, S, H, D]-indexed tensor in a layout. */
function tensorShape(layout: Exclude<Layout, 'qkv'>, c: Case, heads: number): { strides: [number, number, number]; elems: number } {
  const { batch: B, seqLen: S, headDim: D } = c;
  if (layout === 'bhsd') return { strides: [heads * S * D, D, S * D], elems: B * heads * S * D };
  const hs = layout === 'padded' ? D + 3 : D; // odd padding: rows are not 16-byte aligned
  return { strides: [S * heads * hs, heads * hs, hs], elems: B * S * heads * hs };
}

function describeCase(c: Case): string {
  return `${c.dtype}/${c.math}/${c.pairing} B=${c.batch} S=${c.seqLen} D=${c.headDim} rot=${c.rotaryDim} q=${c.qHeads} k=${c.kHeads} ${c.layout}${c.inPlace ? ' in-place' : ''}${c.extremeTable ? ' extreme-table' : ''} seed=${c.seed}`;
}

function runCase(c: Case): void {
  const heap = wasmHeap();
  const rnd = mulberry32(c.seed);
  const es = BYTES[c.dtype];
  const tsize = c.math === 'f64' ? 8 : 4;
  const tokens = c.batch * c.seqLen;

  // Plan byte offsets of every region inside the arena.
  let offset = 0;
  const region = (bytes: number) => {
    const at = offset;
    offset += Math.ceil(bytes / 16) * 16 + 16;
    return at;
  };
  type Plan = { q: [number, [number, number, number]]; k: [number, [number, number, number]] };
  const plan = (): Plan => {
    if (c.layout === 'qkv') {
      // Fused projection output [t, Hq + 2*Hk, D]: q then k (then v, untouched) per token.
      const width = (c.qHeads + 2 * c.kHeads) * c.headDim;
      const at = region(tokens * width * es);
      const strides: [number, number, number] = [c.seqLen * width, width, c.headDim];
      return { q: [at, strides], k: [at + c.qHeads * c.headDim * es, strides] };
    }
    const q = tensorShape(c.layout, c, c.qHeads);
    const k = tensorShape(c.layout, c, c.kHeads);
    return { q: [region(q.elems * es), q.strides], k: [region(k.elems * es), k.strides] };
  };
  const input = plan();
  const output = c.inPlace ? input : plan();
  const tableAt = region(tokens * c.rotaryDim * tsize);
  const arenaBytes = offset;

  const base = heap.alloc(arenaBytes);
  try {
    // Random bits everywhere (padding and v slices included: they must stay untouched).
    const arena = heap.u8(base, arenaBytes);
    const dv = new DataView(arena.buffer, arena.byteOffset, arena.byteLength);
    for (let i = 0; i + es <= arenaBytes; i += es) {
      if (es === 4) dv.setUint32(i, randomBits(c.dtype, rnd), true);
      else dv.setUint16(i, randomBits(c.dtype, rnd), true);
    }
    for (let t = 0; t < tokens; t++) {
      for (let i = 0; i < c.rotaryDim / 2; i++) {
        const [cos, sin] = c.extremeTable ? extremeCosSin(rnd) : randomCosSin(rnd);
        const row = tableAt + t * c.rotaryDim * tsize;
        if (tsize === 8) {
          dv.setFloat64(row + i * 8, cos, true);
          dv.setFloat64(row + (c.rotaryDim / 2 + i) * 8, sin, true);
        } else {
          dv.setFloat32(row + i * 4, cos, true);
          dv.setFloat32(row + (c.rotaryDim / 2 + i) * 4, sin, true);
        }
        // Rarely a NaN with every payload bit set: the result must still be a quiet NaN.
        if (rnd() < 0.005) {
          const at = row + (rnd() < 0.5 ? i : c.rotaryDim / 2 + i) * tsize;
          if (tsize === 8) dv.setBigUint64(at, 0xffffffffffffffffn, true);
          else dv.setUint32(at, 0xffffffff, true);
        }
      }
    }

    const operand = (p: [number, [number, number, number]]): RopeOperand => ({ ptr: base + p[0], strides: p[1] });
    const call: RopeWasmCall = {
      dtype: c.dtype,
      math: c.math,
      batch: c.batch,
      seqLen: c.seqLen,
      headDim: c.headDim,
      rotaryDim: c.rotaryDim,
      pairing: c.pairing,
      q: { heads: c.qHeads, input: operand(input.q), output: operand(output.q) },
      k: { heads: c.kHeads, input: operand(input.k), output: operand(output.k) },
      table: base + tableAt,
    };
    const before = arena.slice();
    const expected = arena.slice();
    const nans = referenceRope(call, before, expected, base);
    ropeWasm(call);
    const got = heap.u8(base, arenaBytes).slice();

    // NaN results compare as NaN class (quiet); then everything else must match bit for bit.
    const gotBits = new Bits(got, base, c.dtype);
    const expBits = new Bits(expected, base, c.dtype);
    for (const addr of nans) {
      const bits = gotBits.get(addr);
      assert.ok(isQuietNaNBits(c.dtype, bits), `${describeCase(c)}: expected a quiet NaN at byte ${addr - base}, got 0x${bits.toString(16)}`);
      gotBits.set(addr, 0);
      expBits.set(addr, 0);
    }
    const at = got.findIndex((v, i) => v !== expected[i]);
    if (at >= 0) {
      const addr = base + at - (at % es);
      const what = [addr >= base + tableAt ? 'table' : 'data', `byte ${addr - base}`];
      assert.fail(
        `${describeCase(c)}: mismatch at ${what.join(' ')}: input 0x${new Bits(before, base, c.dtype).get(addr).toString(16)}, ` +
          `expected 0x${expBits.get(addr).toString(16)}, got 0x${gotBits.get(addr).toString(16)}`,
      );
    }
  } finally {
    heap.free(base);
  }
}

// ---------------------------------------------------------------------------
// Tests.
// ---------------------------------------------------------------------------

describe('reference encoder (tests the test)', () => {
  test('f16 encoder agrees with @petamoriken/float16 on doubles around every f16 boundary', () => {
    const dv = new DataView(new ArrayBuffer(2));
    const rnd = mulberry32(7);
    const check = (x: number) => {
      setFloat16(dv, 0, x, true);
      const lib = dv.getUint16(0, true);
      const mine = encodeIeee(x, 5, 10);
      if (Number.isNaN(x)) assert.ok(isNaNBits('f16', lib) && isNaNBits('f16', mine));
      else assert.equal(mine, lib, `x=${x}`);
    };
    for (let h = 0; h < 0x7c00; h++) {
      const v = decode('f16', h);
      const next = decode('f16', h + 1);
      const mid = (v + next) / 2; // exact tie
      for (const x of [v, mid, mid + (next - v) * 2 ** -20, mid - (next - v) * 2 ** -20, v + (next - v) * rnd()]) {
        check(x);
        check(-x);
      }
      assert.equal(getFloat16(new DataView(new Uint16Array([h]).buffer), 0, true), v);
    }
    for (const x of [65519.99, 65520, 1e300, 2 ** -25, 2 ** -25 * 1.0000001, 2 ** -26, 1e-300, NaN, Infinity]) check(x);
  });

  test('bf16 encoder agrees with Math.fround followed by exact bf16 rounding of f32 values', () => {
    // For an f32 input, bf16 RNE is the classic integer rounding on the f32 bits.
    const rnd = mulberry32(11);
    for (let n = 0; n < 200000; n++) {
      const bits = Math.floor(rnd() * 2 ** 32);
      const x = f32FromBits(bits);
      if (Number.isNaN(x)) continue;
      const want = ((bits + 0x7fff + ((bits >>> 16) & 1)) >>> 16) & 0xffff;
      assert.equal(encodeIeee(x, 8, 7), want, `bits 0x${bits.toString(16)}`);
    }
  });
});

describe('ropeWasm matches the scalar reference bit for bit', () => {
  const heads: Array<[number, number]> = [
    [64, 64],
    [64, 32],
    [64, 26], // half 13: SIMD steps + 1 scalar pair
    [80, 40],
    [80, 38], // half 19: 3 scalar pairs
    [96, 96],
    [128, 128],
    [128, 2], // half 1: scalar only
    [256, 256],
    [256, 6],
    [18, 18], // half 9: one 8-pair step + 1 scalar pair
    [40, 34], // half 17: two 8-pair steps + 1 scalar pair, pass-through dims
    [64, 42], // half 21: two 8-pair steps + one 4-pair step + 1 scalar pair
  ];
  const layouts: Layout[] = ['bshd', 'bhsd', 'qkv', 'padded'];
  let seed = 1;
  for (const dtype of ['f16', 'bf16', 'f32'] as const) {
    for (const math of ['f32', 'f64'] as const) {
      for (const pairing of ['neox', 'gptj'] as const) {
        test(`${dtype} math=${math} ${pairing}`, () => {
          for (const [headDim, rotaryDim] of heads) {
            for (const layout of layouts) {
              for (const inPlace of [false, true]) {
                runCase({ dtype, math, pairing, batch: 2, seqLen: 3, headDim, rotaryDim, qHeads: 4, kHeads: 2, layout, inPlace, seed: seed++ });
              }
            }
          }
        });
      }
    }
  }

  test('more tokens, MHA and k-only / q-only calls', () => {
    for (const dtype of ['f16', 'bf16', 'f32'] as const) {
      runCase({ dtype, math: 'f32', pairing: 'neox', batch: 1, seqLen: 37, headDim: 128, rotaryDim: 128, qHeads: 3, kHeads: 3, layout: 'bshd', inPlace: true, seed: 1000 });
      runCase({ dtype, math: 'f64', pairing: 'gptj', batch: 3, seqLen: 5, headDim: 64, rotaryDim: 64, qHeads: 0, kHeads: 2, layout: 'bhsd', inPlace: false, seed: 1001 });
      runCase({ dtype, math: 'f32', pairing: 'gptj', batch: 2, seqLen: 4, headDim: 80, rotaryDim: 80, qHeads: 5, kHeads: 0, layout: 'padded', inPlace: true, seed: 1002 });
    }
  });

  test('extreme table entries (c * 2^112 overflows, denormals, zeros) on every 16-bit fast path', () => {
    let seed = 3000;
    for (const dtype of ['f16', 'bf16'] as const) {
      for (const pairing of ['neox', 'gptj'] as const) {
        for (const inPlace of [false, true]) {
          runCase({ dtype, math: 'f32', pairing, batch: 2, seqLen: 5, headDim: 64, rotaryDim: 64, qHeads: 3, kHeads: 2, layout: 'bshd', inPlace, seed: seed++, extremeTable: true });
        }
      }
    }
  });

  test('65000 rotated by 45 degrees with attention factor 1.5 overflows f16 to inf', () => {
    const heap = wasmHeap();
    const q = heap.alloc(8);
    const table = heap.alloc(8);
    try {
      const x = heap.u16(q, 2);
      setFloat16(new DataView(x.buffer, x.byteOffset, 4), 0, 65000, true);
      setFloat16(new DataView(x.buffer, x.byteOffset, 4), 2, 65000, true);
      heap.f32(table, 2).set([1.5 * Math.SQRT1_2, 1.5 * Math.SQRT1_2]);
      const op: RopeOperand = { ptr: q, strides: [2, 2, 2] };
      ropeWasm({
        dtype: 'f16', math: 'f32', batch: 1, seqLen: 1, headDim: 2, rotaryDim: 2, pairing: 'neox',
        q: { heads: 1, input: op, output: op }, k: { heads: 0, input: op, output: op }, table,
      });
      assert.deepEqual([...heap.u16(q, 2)], [0x0000, 0x7c00]); // y1 = 0, y2 = +inf
    } finally {
      heap.free(q);
      heap.free(table);
    }
  });
});

describe('ropeWasm on several threads', () => {
  const threadsBefore = threadCount();
  before(async () => {
    // Split even the smallest calls, over 2 threads whatever the machine.
    setThreads(2);
    setMinChunkWork(1);
    await poolReady();
  });
  after(() => {
    setThreads(threadsBefore);
    setMinChunkWork(1 << 15);
  });

  test('matches the scalar reference on odd token counts, strides, in place and out of place', () => {
    let seed = 5000;
    for (const dtype of ['f16', 'bf16', 'f32'] as const) {
      for (const pairing of ['neox', 'gptj'] as const) {
        for (const layout of ['bshd', 'bhsd', 'qkv', 'padded'] as const) {
          for (const inPlace of [false, true]) {
            // half 38: 8-pair steps, then 4-pair steps, then 2 scalar pairs, then 4 pass-through dims.
            runCase({ dtype, math: 'f32', pairing, batch: 3, seqLen: 7, headDim: 80, rotaryDim: 76, qHeads: 5, kHeads: 3, layout, inPlace, seed: seed++ });
          }
        }
        runCase({ dtype, math: 'f64', pairing, batch: 2, seqLen: 9, headDim: 64, rotaryDim: 64, qHeads: 2, kHeads: 1, layout: 'bhsd', inPlace: true, seed: seed++ });
      }
    }
  });

  test('gives the same bits as one thread on a LLaMA-shaped call, with workers taking part', () => {
    const tokens = 97;
    const [qHeads, kHeads, headDim] = [32, 8, 128];
    const elems = tokens * (qHeads + kHeads) * headDim;
    const heap = wasmHeap();
    const src = heap.alloc(elems * 2);
    const one = heap.alloc(elems * 2);
    const many = heap.alloc(elems * 2);
    const table = heap.alloc(tokens * headDim * 4);
    try {
      const rnd = mulberry32(77);
      const bits = heap.u16(src, elems);
      for (let i = 0; i < elems; i++) bits[i] = randomBits('f16', rnd);
      const tv = heap.f32(table, tokens * headDim);
      for (let t = 0; t < tokens; t++) {
        for (let i = 0; i < headDim / 2; i++) [tv[t * headDim + i], tv[t * headDim + headDim / 2 + i]] = randomCosSin(rnd);
      }
      // q and k of a token side by side ([t, 40 heads, 128]), rotated in place.
      const strides = [0, (qHeads + kHeads) * headDim, headDim] as const;
      const call = (ptr: number): RopeWasmCall => {
        const q: RopeOperand = { ptr, strides };
        const k: RopeOperand = { ptr: ptr + qHeads * headDim * 2, strides };
        return {
          dtype: 'f16', math: 'f32', batch: 1, seqLen: tokens, headDim, rotaryDim: headDim, pairing: 'neox',
          q: { heads: qHeads, input: q, output: q }, k: { heads: kHeads, input: k, output: k }, table,
        };
      };
      let joined = false;
      for (let attempt = 0; attempt < 20 && !joined; attempt++) {
        heap.u16(one, elems).set(heap.u16(src, elems));
        heap.u16(many, elems).set(heap.u16(src, elems));
        setThreads(1);
        ropeWasm(call(one));
        setThreads(2);
        const before = poolStats().workerChunks;
        ropeWasm(call(many));
        joined = poolStats().workerChunks > before;
        const [a, b] = [heap.u16(one, elems), heap.u16(many, elems)];
        const at = a.findIndex((v, i) => v !== b[i]);
        assert.equal(at, -1, `element ${at}: one thread 0x${a[at]?.toString(16)}, two threads 0x${b[at]?.toString(16)}`);
      }
      assert.ok(joined, 'no worker ever took part');
    } finally {
      for (const p of [src, one, many, table]) heap.free(p);
    }
  });
});

/**
 * Rotates every 16-bit pattern with c=1, s=0 and checks y == x. x1 patterns get
 * partner +0 and x2 patterns partner -0, so that the partner*0 terms are zeros
 * that leave x exactly (x1 - (+0) and x2 + (-0) keep -0 too). q carries the x1 run, k the x2 run.
 */
function roundTrip(dtype: 'f16' | 'bf16', math: 'f32' | 'f64', pairing: 'neox' | 'gptj'): void {
  const heap = wasmHeap();
  const headDim = 128;
  const half = headDim / 2;
  const tokens = 65536 / half;
  const tsize = math === 'f64' ? 8 : 4;
  const q = heap.alloc(tokens * headDim * 2);
  const k = heap.alloc(tokens * headDim * 2);
  const table = heap.alloc(tokens * headDim * tsize);
  try {
    const qv = heap.u16(q, tokens * headDim);
    const kv = heap.u16(k, tokens * headDim);
    for (let p = 0; p < 65536; p++) {
      const t = Math.floor(p / half);
      const i = p % half;
      const [d1, d2] = pairing === 'neox' ? [i, i + half] : [2 * i, 2 * i + 1];
      qv[t * headDim + d1] = p;
      qv[t * headDim + d2] = 0x0000;
      kv[t * headDim + d1] = 0x8000;
      kv[t * headDim + d2] = p;
    }
    const tv = math === 'f64' ? heap.f64(table, tokens * headDim) : heap.f32(table, tokens * headDim);
    for (let t = 0; t < tokens; t++) {
      tv.fill(1, t * headDim, t * headDim + half);
      tv.fill(0, t * headDim + half, (t + 1) * headDim);
    }
    const qOp: RopeOperand = { ptr: q, strides: [0, headDim, headDim] };
    const kOp: RopeOperand = { ptr: k, strides: [0, headDim, headDim] };
    ropeWasm({
      dtype, math, batch: 1, seqLen: tokens, headDim, rotaryDim: headDim, pairing,
      q: { heads: 1, input: qOp, output: qOp }, k: { heads: 1, input: kOp, output: kOp }, table,
    });
    for (let p = 0; p < 65536; p++) {
      const t = Math.floor(p / half);
      const i = p % half;
      const [d1, d2] = pairing === 'neox' ? [i, i + half] : [2 * i, 2 * i + 1];
      // Partners: q's y2 = +0 + p*0 = +0; k's y1 = -0 - p*0 is -0, or +0 when p is negative.
      const kPartner = p & 0x8000 ? 0x0000 : 0x8000;
      for (const [got, partner, partnerWant] of [[qv[t * headDim + d1]!, qv[t * headDim + d2]!, 0x0000], [kv[t * headDim + d2]!, kv[t * headDim + d1]!, kPartner]]) {
        if (isNaNBits(dtype, p)) assert.ok(isQuietNaNBits(dtype, got!), `${dtype} 0x${p.toString(16)} -> 0x${got!.toString(16)} is not a quiet NaN`);
        else if (got !== p) assert.fail(`${dtype} 0x${p.toString(16)} -> 0x${got!.toString(16)}`);
        // The partner is NaN only when p is inf/NaN (inf * 0), otherwise it keeps its signed zero.
        if ((p & 0x7fff) < (dtype === 'f16' ? 0x7c00 : 0x7f80)) assert.equal(partner, partnerWant, `partner of 0x${p.toString(16)}`);
        else assert.ok(isQuietNaNBits(dtype, partner!), `partner of 0x${p.toString(16)}: inf*0 is NaN`);
      }
    }
  } finally {
    heap.free(q);
    heap.free(k);
    heap.free(table);
  }
}

describe('exhaustive 16-bit round trip through decode/encode (c=1, s=0)', () => {
  for (const dtype of ['f16', 'bf16'] as const) {
    for (const math of ['f32', 'f64'] as const) {
      for (const pairing of ['neox', 'gptj'] as const) {
        test(`${dtype} math=${math} ${pairing}: all 65536 patterns`, () => roundTrip(dtype, math, pairing));
      }
    }
  }
});

describe('ropeWasm validation', () => {
  const heap = wasmHeap();
  const ok = (): RopeWasmCall => {
    const op: RopeOperand = { ptr: RESERVED_BYTES, strides: [0, 64, 64] };
    return {
      dtype: 'f16', math: 'f32', batch: 1, seqLen: 1, headDim: 64, rotaryDim: 64, pairing: 'neox',
      q: { heads: 1, input: op, output: op }, k: { heads: 1, input: op, output: op }, table: RESERVED_BYTES,
    };
  };
  test('rejects bad shapes, non-integer pointers/strides and out-of-heap spans', () => {
    const ptr = heap.alloc(4096);
    try {
      const base = { ...ok(), table: ptr, q: { heads: 1, input: { ptr, strides: [0, 64, 64] as const }, output: { ptr, strides: [0, 64, 64] as const } } };
      const call = { ...base, k: base.q };
      assert.doesNotThrow(() => ropeWasm(call));
      assert.throws(() => ropeWasm({ ...call, rotaryDim: 63 }), /rotaryDim/);
      assert.throws(() => ropeWasm({ ...call, rotaryDim: 66 }), /rotaryDim/);
      assert.throws(() => ropeWasm({ ...call, rotaryDim: 0 }), /rotaryDim/);
      assert.throws(() => ropeWasm({ ...call, table: ptr + 0.5 }), /table/);
      assert.throws(() => ropeWasm({ ...call, q: { ...call.q, input: { ptr: ptr + 0.5, strides: [0, 64, 64] } } }), /q\.input\.ptr/);
      assert.throws(() => ropeWasm({ ...call, k: { ...call.k, output: { ptr, strides: [0, 64.5, 64] } } }), /k\.output\.strides/);
      assert.throws(() => ropeWasm({ ...call, batch: -1 }), /batch/);
      assert.throws(() => ropeWasm({ ...call, dtype: 'f8' as StorageDType }), /dtype/);
      const end = heap.buffer.byteLength;
      assert.throws(() => ropeWasm({ ...call, q: { ...call.q, output: { ptr: end - 64, strides: [0, 64, 64] } } }), /outside the wasm heap/);
      assert.throws(() => ropeWasm({ ...call, k: { ...call.k, heads: 2, input: { ptr, strides: [0, 64, -1000000] } } }), /outside the wasm heap/);
    } finally {
      heap.free(ptr);
    }
  });
});

describe('WasmHeap', () => {
  test('alloc aligns, never overlaps, and free coalesces back to one block', () => {
    const heap = new WasmHeap();
    const rnd = mulberry32(3);
    const live = new Map<number, number>();
    for (let step = 0; step < 3000; step++) {
      if (live.size > 0 && rnd() < 0.45) {
        const ptrs = [...live.keys()];
        const ptr = ptrs[Math.floor(rnd() * ptrs.length)]!;
        heap.free(ptr);
        live.delete(ptr);
      } else {
        const align = 2 ** Math.floor(rnd() * 13);
        const bytes = Math.floor(rnd() ** 3 * 200000);
        const ptr = heap.alloc(bytes, align);
        assert.equal(ptr % Math.max(align, 1), 0);
        assert.ok(ptr >= RESERVED_BYTES);
        assert.ok(ptr + bytes <= heap.buffer.byteLength);
        live.set(ptr, Math.max(bytes, 1));
      }
    }
    // Live blocks and free blocks tile [RESERVED_BYTES, top) exactly.
    const spans = [...[...live.keys()].map((p) => [p, heap.sizeOf(p)!] as [number, number]), ...heap.freeBlocks()].sort((a, b) => a[0] - b[0]);
    let cursor = RESERVED_BYTES;
    for (const [p, size] of spans) {
      assert.equal(p, cursor, 'blocks must tile the heap without gaps or overlaps');
      cursor += size;
    }
    assert.equal(cursor, heap.buffer.byteLength);
    for (const ptr of live.keys()) heap.free(ptr);
    assert.deepEqual(heap.freeBlocks(), [[RESERVED_BYTES, heap.buffer.byteLength - RESERVED_BYTES]]);
  });

  test('neighbours merge in every order; double free and foreign pointers throw', () => {
    const heap = new WasmHeap();
    const [a, b, c, guard] = [heap.alloc(64), heap.alloc(64), heap.alloc(64), heap.alloc(64)];
    assert.deepEqual([b! - a!, c! - b!, guard! - c!], [64, 64, 64]);
    heap.free(a!);
    heap.free(c!);
    assert.deepEqual(heap.freeBlocks().slice(0, 2), [[a, 64], [c, 64]]);
    heap.free(b!);
    assert.deepEqual(heap.freeBlocks()[0], [a, 192]);
    assert.throws(() => heap.free(b!), /not a live allocation/);
    assert.throws(() => heap.free(12345), /not a live allocation/);
    // The freed span is reused first-fit.
    assert.equal(heap.alloc(150), a);
    assert.throws(() => heap.alloc(-1), RangeError);
    assert.throws(() => heap.alloc(8, 3), RangeError);
    assert.throws(() => heap.alloc(2 ** 33), /do not fit/);
  });

  test('grows on demand; views from before a grow keep working and ptrOf recognises them', () => {
    const heap = new WasmHeap();
    const small = heap.alloc(1024);
    const oldView = heap.f32(small, 256);
    const oldBuffer = heap.buffer;
    oldView[7] = 42.5;
    const pagesBefore = heap.buffer.byteLength / PAGE_BYTES;
    const bigBytes = 8 * 2 ** 20;
    const big = heap.alloc(bigBytes);
    assert.ok(heap.buffer.byteLength >= big + bigBytes);
    assert.ok(heap.buffer.byteLength / PAGE_BYTES > pagesBefore);
    assert.notEqual(heap.buffer, oldBuffer, 'grow gives a new buffer object');
    // Old views still alias the memory (shared memory is never detached) and are recognised.
    assert.equal(heap.f32(small, 256)[7], 42.5);
    heap.f32(small, 256)[8] = -1;
    assert.equal(oldView[8], -1);
    assert.equal(heap.ptrOf(oldView), small);
    assert.equal(heap.ptrOf(oldView.subarray(5)), small + 20);
    assert.equal(heap.ptrOf(heap.u16(big, 10)), big);
    assert.equal(heap.ptrOf(new DataView(heap.buffer, big + 3, 4)), big + 3);
    // A buffer object we never saw (memory grown and read behind the heap's back) is still recognised.
    heap.memory.grow(1);
    const unseen = new Uint8Array(heap.memory.buffer, small, 4);
    assert.equal(heap.ptrOf(unseen), small);
    // Foreign memory: plain buffers and other heaps are not ours.
    assert.equal(heap.ptrOf(new Float32Array(16)), undefined);
    assert.equal(heap.ptrOf(new Uint8Array(new SharedArrayBuffer(RESERVED_BYTES * 2))), undefined);
    const other = new WasmHeap();
    assert.equal(heap.ptrOf(other.f32(other.alloc(64), 4)), undefined);
    // Growth made behind the heap's back is adopted as free space.
    const top = heap.buffer.byteLength;
    const next = heap.alloc(64);
    assert.ok(next < top);
  });

  test('loadKernel explains how to build a missing kernel', () => {
    assert.throws(() => loadKernel('no-such-kernel'), /npm run build:wasm/);
    const rope = loadKernel('rope');
    assert.equal(typeof rope.exports['rope'], 'function');
    assert.equal(loadKernel('rope'), rope, 'instances are cached per memory');
  });
});
