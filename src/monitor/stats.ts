/**
 * Per-probe statistics in one pass over the values, with float64 accumulation.
 *
 * The monitor keeps statistics as fixed-size records in a Float64Array (no allocation per probe
 * call); `computeStats` / `mergeStats` are the object-level API over the same code.
 *
 * A record's fields, by offset:
 */
import { type DType, DTYPES, FORMATS } from '../core/dtype.js';
import type { ProbeName, ProbeStats, ValueLocation } from './types.js';

export const R_COUNT = 0;
export const R_ROWS = 1;
export const R_NAN = 2;
export const R_POS_INF = 3;
export const R_NEG_INF = 4;
export const R_SUBNORMAL = 5;
export const R_NEAR_MAX = 6;
export const R_ZEROS = 7;
/** max |x| over non-NaN values; -1 when there are none */
export const R_ABSMAX = 8;
/** absmax location: token, head (-1: none), channel, signed value. After `scanRange` the token field holds the flat index. */
export const R_AMAX_TOKEN = 9;
export const R_AMAX_HEAD = 10;
export const R_AMAX_CHANNEL = 11;
export const R_AMAX_VALUE = 12;
export const R_FINITE_ABSMAX = 13;
export const R_MIN = 14;
export const R_MAX = 15;
export const R_SUM = 16;
export const R_SUM_SQ = 17;
export const R_FINITE_COUNT = 18;
/** first non-finite location: token (-1: none; flat index after `scanRange`), head, channel, value */
export const R_NF_TOKEN = 19;
export const R_NF_HEAD = 20;
export const R_NF_CHANNEL = 21;
export const R_NF_VALUE = 22;
/** sequence number of the first call with a non-finite value (-1: none) */
export const R_NF_SEQ = 23;
export const R_OVERFLOWED = 24;
export const R_CLAMPED = 25;
export const R_CALLS = 26;
/** sequence number of the first call merged (Infinity: none) */
export const R_SEQ = 27;
export const R_FIRST_TOKEN = 28;
export const R_LAST_TOKEN = 29;
/** index into DTYPES (-1: none) */
export const R_DTYPE = 30;
/** absmax before rounding (ProbeContext.f32Absmax); -1 unknown */
export const R_F32_ABSMAX = 31;
export const RECORD_FIELDS = 32;

/** The empty statistics (what `resetRecord` copies). */
const EMPTY_RECORD = (() => {
  const r = new Float64Array(RECORD_FIELDS);
  r[R_ABSMAX] = -1;
  r[R_AMAX_TOKEN] = -1;
  r[R_AMAX_HEAD] = -1;
  r[R_AMAX_CHANNEL] = -1;
  r[R_AMAX_VALUE] = NaN;
  r[R_MIN] = Infinity;
  r[R_MAX] = -Infinity;
  r[R_NF_TOKEN] = -1;
  r[R_NF_HEAD] = -1;
  r[R_NF_CHANNEL] = -1;
  r[R_NF_VALUE] = NaN;
  r[R_NF_SEQ] = -1;
  r[R_SEQ] = Infinity;
  r[R_FIRST_TOKEN] = Infinity;
  r[R_LAST_TOKEN] = -Infinity;
  r[R_DTYPE] = -1;
  r[R_F32_ABSMAX] = -1;
  return r;
})();

/** Sets the record at `b` to the empty statistics. */
export function resetRecord(r: Float64Array, b: number): void {
  r.set(EMPTY_RECORD, b);
}

/** Copies the record at `sb` of `s` over the record at `db` of `d`. */
export function copyRecord(d: Float64Array, db: number, s: Float64Array, sb: number): void {
  for (let i = 0; i < RECORD_FIELDS; i++) d[db + i] = s[sb + i]!;
}

/**
 * One pass over data[from, to) into the (reset) record at `b`: counts, absmax, min/max, float64
 * sums of the finite values. Locations are left as flat indices into `data` (see `locate`).
 * `minNormal` and `half` (max / 2) are those of the values' dtype.
 */
export function scanRange(data: Float32Array, from: number, to: number, r: Float64Array, b: number, minNormal: number, half: number): void {
  let nan = 0;
  let posInf = 0;
  let negInf = 0;
  let sub = 0;
  let zeros = 0;
  let near = 0;
  let amax = -1;
  let amaxAt = -1;
  let mn = Infinity;
  let mx = -Infinity;
  let sum = 0;
  let sq = 0;
  for (let i = from; i < to; i++) {
    const x = data[i]!;
    const a = Math.abs(x);
    sum += x;
    sq += x * x;
    if (!(a >= minNormal && a < half)) {
      // Rare: zero, subnormal, near the max, infinite or NaN.
      if (a < minNormal) {
        if (a === 0) zeros++;
        else sub++;
      } else if (a >= half) {
        if (a === Infinity) {
          if (x > 0) posInf++;
          else negInf++;
        } else near++;
      } else nan++;
    }
    if (a > amax) {
      amax = a;
      amaxAt = i;
    }
    if (x < mn) mn = x;
    if (x > mx) mx = x;
  }
  const n = to - from;
  const nonFinite = nan + posInf + negInf;
  let finiteAmax = amax < 0 ? 0 : amax;
  let finiteCount = n;
  let nfAt = -1;
  if (nonFinite > 0) {
    // Rare path: redo the sums and the finite absmax over the finite values only.
    sum = 0;
    sq = 0;
    finiteAmax = 0;
    finiteCount = 0;
    for (let i = from; i < to; i++) {
      const x = data[i]!;
      if (x - x === 0) {
        sum += x;
        sq += x * x;
        finiteCount++;
        const a = Math.abs(x);
        if (a > finiteAmax) finiteAmax = a;
      } else if (nfAt < 0) nfAt = i;
    }
  }
  r[b + R_COUNT] = n;
  r[b + R_NAN] = nan;
  r[b + R_POS_INF] = posInf;
  r[b + R_NEG_INF] = negInf;
  r[b + R_SUBNORMAL] = sub;
  r[b + R_NEAR_MAX] = near;
  r[b + R_ZEROS] = zeros;
  r[b + R_ABSMAX] = amax;
  r[b + R_AMAX_TOKEN] = amaxAt;
  r[b + R_AMAX_VALUE] = amaxAt < 0 ? NaN : data[amaxAt]!;
  r[b + R_FINITE_ABSMAX] = finiteAmax;
  r[b + R_MIN] = mn;
  r[b + R_MAX] = mx;
  r[b + R_SUM] = sum;
  r[b + R_SUM_SQ] = sq;
  r[b + R_FINITE_COUNT] = finiteCount;
  r[b + R_NF_TOKEN] = nfAt;
  r[b + R_NF_VALUE] = nfAt < 0 ? NaN : data[nfAt]!;
}

/**
 * Turns the flat indices left by `scanRange` into token / head / channel: row = i / rowLength,
 * token = firstToken + row; with headDim > 0 (a [tokens, heads, headDim] shape) head and channel
 * within the head, else channel within the row and head -1.
 */
export function locate(r: Float64Array, b: number, firstToken: number, rowLength: number, headDim: number): void {
  locateField(r, b + R_AMAX_TOKEN, firstToken, rowLength, headDim);
  locateField(r, b + R_NF_TOKEN, firstToken, rowLength, headDim);
}

function locateField(r: Float64Array, at: number, firstToken: number, rowLength: number, headDim: number): void {
  const i = r[at]!;
  if (i < 0) return;
  const row = Math.floor(i / rowLength);
  const within = i - row * rowLength;
  r[at] = firstToken + row;
  if (headDim > 0) {
    const head = Math.floor(within / headDim);
    r[at + 1] = head;
    r[at + 2] = within - head * headDim;
  } else {
    r[at + 1] = -1;
    r[at + 2] = within;
  }
}

/** Merges the record at `sb` of `s` into the record at `db` of `d`; `s` is the later one in execution order. */
export function mergeRecord(d: Float64Array, db: number, s: Float64Array, sb: number): void {
  d[db + R_COUNT]! += s[sb + R_COUNT]!;
  d[db + R_ROWS]! += s[sb + R_ROWS]!;
  d[db + R_NAN]! += s[sb + R_NAN]!;
  d[db + R_POS_INF]! += s[sb + R_POS_INF]!;
  d[db + R_NEG_INF]! += s[sb + R_NEG_INF]!;
  d[db + R_SUBNORMAL]! += s[sb + R_SUBNORMAL]!;
  d[db + R_NEAR_MAX]! += s[sb + R_NEAR_MAX]!;
  d[db + R_ZEROS]! += s[sb + R_ZEROS]!;
  if (s[sb + R_ABSMAX]! > d[db + R_ABSMAX]!) {
    d[db + R_ABSMAX] = s[sb + R_ABSMAX]!;
    d[db + R_AMAX_TOKEN] = s[sb + R_AMAX_TOKEN]!;
    d[db + R_AMAX_HEAD] = s[sb + R_AMAX_HEAD]!;
    d[db + R_AMAX_CHANNEL] = s[sb + R_AMAX_CHANNEL]!;
    d[db + R_AMAX_VALUE] = s[sb + R_AMAX_VALUE]!;
  }
  if (s[sb + R_FINITE_ABSMAX]! > d[db + R_FINITE_ABSMAX]!) d[db + R_FINITE_ABSMAX] = s[sb + R_FINITE_ABSMAX]!;
  if (s[sb + R_MIN]! < d[db + R_MIN]!) d[db + R_MIN] = s[sb + R_MIN]!;
  if (s[sb + R_MAX]! > d[db + R_MAX]!) d[db + R_MAX] = s[sb + R_MAX]!;
  d[db + R_SUM]! += s[sb + R_SUM]!;
  d[db + R_SUM_SQ]! += s[sb + R_SUM_SQ]!;
  d[db + R_FINITE_COUNT]! += s[sb + R_FINITE_COUNT]!;
  if (d[db + R_NF_TOKEN]! < 0 && s[sb + R_NF_TOKEN]! >= 0) {
    d[db + R_NF_TOKEN] = s[sb + R_NF_TOKEN]!;
    d[db + R_NF_HEAD] = s[sb + R_NF_HEAD]!;
    d[db + R_NF_CHANNEL] = s[sb + R_NF_CHANNEL]!;
    d[db + R_NF_VALUE] = s[sb + R_NF_VALUE]!;
  }
  if (d[db + R_NF_SEQ]! < 0) d[db + R_NF_SEQ] = s[sb + R_NF_SEQ]!;
  d[db + R_OVERFLOWED]! += s[sb + R_OVERFLOWED]!;
  d[db + R_CLAMPED]! += s[sb + R_CLAMPED]!;
  d[db + R_CALLS]! += s[sb + R_CALLS]!;
  if (s[sb + R_SEQ]! < d[db + R_SEQ]!) d[db + R_SEQ] = s[sb + R_SEQ]!;
  if (s[sb + R_FIRST_TOKEN]! < d[db + R_FIRST_TOKEN]!) d[db + R_FIRST_TOKEN] = s[sb + R_FIRST_TOKEN]!;
  if (s[sb + R_LAST_TOKEN]! > d[db + R_LAST_TOKEN]!) d[db + R_LAST_TOKEN] = s[sb + R_LAST_TOKEN]!;
  if (s[sb + R_DTYPE]! >= 0) d[db + R_DTYPE] = s[sb + R_DTYPE]!;
  if (s[sb + R_F32_ABSMAX]! > d[db + R_F32_ABSMAX]!) d[db + R_F32_ABSMAX] = s[sb + R_F32_ABSMAX]!;
}

export function nonFiniteOf(r: Float64Array, b: number): number {
  return r[b + R_NAN]! + r[b + R_POS_INF]! + r[b + R_NEG_INF]!;
}

/** Headroom in bits of `absmax` under `dtype`: log2(max / absmax); Infinity for 0, -Infinity for Infinity, NaN for NaN. */
export function headroomBits(dtype: DType, absmax: number): number {
  if (Number.isNaN(absmax)) return NaN;
  if (absmax === Infinity) return -Infinity;
  if (absmax === 0) return Infinity;
  return Math.log2(FORMATS[dtype].max / absmax);
}

/** A location of the record (token field at `f`), or null. */
function locationOf(r: Float64Array, b: number, f: number): ValueLocation | null {
  const token = r[b + f]!;
  if (token < 0) return null;
  const head = r[b + f + 1]!;
  return { token, head: head < 0 ? null : head, channel: r[b + f + 2]!, value: r[b + f + 3]! };
}

export interface StatsIdentity {
  probe: ProbeName;
  layer: number;
  forward: number;
  segment: string | null;
}

/** The record at `b` as a ProbeStats object. */
export function recordToStats(r: Float64Array, b: number, id: StatsIdentity): ProbeStats {
  const dtypeIndex = r[b + R_DTYPE]!;
  const dtype: DType = dtypeIndex >= 0 ? DTYPES[dtypeIndex]! : 'f32';
  const count = r[b + R_COUNT]!;
  const nan = r[b + R_NAN]!;
  const posInf = r[b + R_POS_INF]!;
  const negInf = r[b + R_NEG_INF]!;
  const rawAbsmax = r[b + R_ABSMAX]!;
  const absmax = rawAbsmax < 0 ? NaN : rawAbsmax;
  const finiteCount = r[b + R_FINITE_COUNT]!;
  const seq = r[b + R_SEQ]!;
  const nfSeq = r[b + R_NF_SEQ]!;
  const f32 = r[b + R_F32_ABSMAX]!;
  return {
    probe: id.probe,
    layer: id.layer,
    forward: id.forward,
    segment: id.segment,
    dtype,
    calls: r[b + R_CALLS]!,
    tokens: r[b + R_ROWS]!,
    count,
    nan,
    posInf,
    negInf,
    nonFinite: nan + posInf + negInf,
    subnormal: r[b + R_SUBNORMAL]!,
    zeros: r[b + R_ZEROS]!,
    nearMax: r[b + R_NEAR_MAX]!,
    overflowed: r[b + R_OVERFLOWED]!,
    clamped: r[b + R_CLAMPED]!,
    absmax,
    absmaxAt: locationOf(r, b, R_AMAX_TOKEN),
    finiteAbsmax: r[b + R_FINITE_ABSMAX]!,
    f32Absmax: f32 < 0 ? null : f32,
    min: r[b + R_MIN]! === Infinity ? NaN : r[b + R_MIN]!,
    max: r[b + R_MAX]! === -Infinity ? NaN : r[b + R_MAX]!,
    mean: finiteCount > 0 ? r[b + R_SUM]! / finiteCount : NaN,
    rms: finiteCount > 0 ? Math.sqrt(r[b + R_SUM_SQ]! / finiteCount) : NaN,
    headroomBits: headroomBits(dtype, absmax),
    firstNonFinite: locationOf(r, b, R_NF_TOKEN),
    firstToken: r[b + R_FIRST_TOKEN]! === Infinity ? -1 : r[b + R_FIRST_TOKEN]!,
    lastToken: r[b + R_LAST_TOKEN]! === -Infinity ? -1 : r[b + R_LAST_TOKEN]!,
    seq: seq === Infinity ? -1 : seq,
    firstNonFiniteSeq: nfSeq < 0 ? null : nfSeq,
  };
}

function setLocation(r: Float64Array, b: number, f: number, loc: ValueLocation | null): void {
  r[b + f] = loc ? loc.token : -1;
  r[b + f + 1] = loc && loc.head !== null ? loc.head : -1;
  r[b + f + 2] = loc ? loc.channel : -1;
  r[b + f + 3] = loc ? loc.value : NaN;
}

/** Writes a ProbeStats object into the record at `b` (mean and rms become float64 sums again). */
export function statsToRecord(s: ProbeStats, r: Float64Array, b: number): void {
  resetRecord(r, b);
  const finiteCount = s.count - s.nonFinite;
  r[b + R_COUNT] = s.count;
  r[b + R_ROWS] = s.tokens;
  r[b + R_NAN] = s.nan;
  r[b + R_POS_INF] = s.posInf;
  r[b + R_NEG_INF] = s.negInf;
  r[b + R_SUBNORMAL] = s.subnormal;
  r[b + R_NEAR_MAX] = s.nearMax;
  r[b + R_ZEROS] = s.zeros;
  r[b + R_ABSMAX] = Number.isNaN(s.absmax) ? -1 : s.absmax;
  setLocation(r, b, R_AMAX_TOKEN, s.absmaxAt);
  r[b + R_FINITE_ABSMAX] = s.finiteAbsmax;
  r[b + R_MIN] = Number.isNaN(s.min) ? Infinity : s.min;
  r[b + R_MAX] = Number.isNaN(s.max) ? -Infinity : s.max;
  r[b + R_SUM] = finiteCount > 0 ? s.mean * finiteCount : 0;
  r[b + R_SUM_SQ] = finiteCount > 0 ? s.rms * s.rms * finiteCount : 0;
  r[b + R_FINITE_COUNT] = finiteCount;
  setLocation(r, b, R_NF_TOKEN, s.firstNonFinite);
  r[b + R_NF_SEQ] = s.firstNonFiniteSeq ?? -1;
  r[b + R_OVERFLOWED] = s.overflowed;
  r[b + R_CLAMPED] = s.clamped;
  r[b + R_CALLS] = s.calls;
  r[b + R_SEQ] = s.seq < 0 ? Infinity : s.seq;
  r[b + R_FIRST_TOKEN] = s.firstToken < 0 ? Infinity : s.firstToken;
  r[b + R_LAST_TOKEN] = s.lastToken < 0 ? -Infinity : s.lastToken;
  r[b + R_DTYPE] = DTYPES.indexOf(s.dtype);
  r[b + R_F32_ABSMAX] = s.f32Absmax ?? -1;
}

/** The product of shape[1..] (values per row) and the head dimension (shape's last dim for rank >= 3, else 0). */
export function rowGeometry(shape: readonly number[]): { rowLength: number; headDim: number } {
  let rowLength = 1;
  for (let i = 1; i < shape.length; i++) rowLength *= shape[i]!;
  return { rowLength, headDim: shape.length >= 3 ? shape[shape.length - 1]! : 0 };
}

export interface ComputeStatsOptions {
  probe?: ProbeName;
  layer?: number;
  dtype?: DType;
  /** sequence position of row 0 (default 0) */
  firstToken?: number;
  overflowed?: number;
  clamped?: number;
  f32Absmax?: number;
}

/**
 * The statistics of one probe call: `data` in `shape` ([tokens, channels] or [tokens, heads,
 * headDim]) holding values of `dtype` (default f32).
 */
export function computeStats(data: Float32Array, shape: readonly number[], opts: ComputeStatsOptions = {}): ProbeStats {
  const dtype = opts.dtype ?? 'f32';
  const fmt = FORMATS[dtype];
  const { rowLength, headDim } = rowGeometry(shape);
  const rows = shape[0] ?? 0;
  if (rows * rowLength !== data.length) throw new RangeError(`computeStats: ${data.length} values do not fill shape [${shape.join(', ')}]`);
  const firstToken = opts.firstToken ?? 0;
  const r = new Float64Array(RECORD_FIELDS);
  resetRecord(r, 0);
  scanRange(data, 0, data.length, r, 0, fmt.minNormal, fmt.max / 2);
  locate(r, 0, firstToken, rowLength, headDim);
  r[R_ROWS] = rows;
  r[R_CALLS] = 1;
  r[R_SEQ] = 0;
  if (nonFiniteOf(r, 0) > 0) r[R_NF_SEQ] = 0;
  r[R_FIRST_TOKEN] = firstToken;
  r[R_LAST_TOKEN] = firstToken + rows - 1;
  r[R_DTYPE] = DTYPES.indexOf(dtype);
  r[R_OVERFLOWED] = opts.overflowed ?? 0;
  r[R_CLAMPED] = opts.clamped ?? 0;
  r[R_F32_ABSMAX] = opts.f32Absmax ?? -1;
  return recordToStats(r, 0, { probe: opts.probe ?? 'embeddings', layer: opts.layer ?? -1, forward: 0, segment: null });
}

/**
 * Merges stats of the same probe (e.g. the chunks of one forward, or several forwards); `b` is the
 * later one in execution order. The identity (probe, layer, forward, segment) is `a`'s, with
 * forward -1 when they differ.
 */
export function mergeStats(a: ProbeStats, b: ProbeStats): ProbeStats {
  const r = new Float64Array(2 * RECORD_FIELDS);
  statsToRecord(a, r, 0);
  statsToRecord(b, r, RECORD_FIELDS);
  mergeRecord(r, 0, r, RECORD_FIELDS);
  return recordToStats(r, 0, { probe: a.probe, layer: a.layer, forward: a.forward === b.forward ? a.forward : -1, segment: a.segment === b.segment ? a.segment : null });
}
