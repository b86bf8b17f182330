/**
 * Types shared by the numerics monitor: the probe hook contract (mirrors the model's, see
 * src/models/llama/model.ts), the statistics of one probe, and the in-memory trace report.
 *
 * Non-finite numbers appear as themselves here (NaN, +-Infinity); the JSON trace (schema.ts)
 * spells them as strings.
 */
import type { DType } from '../core/dtype.js';
import type { ClipProbeName } from '../models/clip/model.js';
import type { LlamaProbeName } from '../models/llama/model.js';

export type { ClipProbeName, LlamaProbeName };

/**
 * Every probe the monitor takes: the text model's (LlamaProbeName) and the vision tower's and
 * projector's (ClipProbeName: 'vision.*', 'projector.*').
 */
export type ProbeName = LlamaProbeName | ClipProbeName;

/**
 * What the model tells a probe about one call, beyond the values. The model's own `ProbeContext`
 * has the same fields; `f32Absmax` is an optional extension the monitor uses when present.
 */
export interface ProbeContext {
  /** the storage dtype of this activation under the precision policy (values in `data` are already rounded to it) */
  dtype: DType;
  /** the sequence position of row 0 of `data` */
  firstToken: number;
  /** how many values were finite before rounding to `dtype` and became +-inf by the rounding (a precision overflow) */
  overflowed: number;
  /** how many values the policy's clamp-on-overflow clamped (0 when clamping is off) */
  clamped: number;
  /** optional: the absmax of the values before rounding to `dtype` (what f32 computed) */
  f32Absmax?: number;
}

/**
 * The probe hook. `ctx` is optional so the monitor also works with a model that passes none: it
 * then assumes f32 values and counts positions itself (see NumericsMonitor).
 */
export type MonitorProbe = (name: ProbeName, layer: number, data: Float32Array, shape: readonly number[], ctx?: ProbeContext) => void;

/** Where a value sits: its token position, its head (for [tokens, heads, headDim] shapes) and channel. */
export interface ValueLocation {
  /** sequence position (ctx.firstToken + row) */
  token: number;
  /** the head, for [tokens, heads, headDim] activations; null for [tokens, channels] */
  head: number | null;
  /** the channel: within the head for 3-d shapes, within the row for 2-d shapes */
  channel: number;
  /** the value there (signed; NaN or +-Infinity for a non-finite location) */
  value: number;
}

/**
 * Statistics of one probe (one op at one layer) over some values: one call, the calls of one
 * forward (merged across prefill chunks), one segment of them, or several forwards merged.
 */
export interface ProbeStats {
  probe: ProbeName;
  /** -1 for embeddings, final_norm and logits (and vision.embeddings, vision.pre_ln, projector.*); else the layer of its tower */
  layer: number;
  /** forward index (0-based, in the monitor's order); -1 for stats merged across forwards */
  forward: number;
  /** the token segment these values belong to ('image k' for the vision and projector rows of image k), or null for all tokens */
  segment: string | null;
  /** storage dtype of the values (the last seen, if calls disagree) */
  dtype: DType;
  /** probe calls merged (for segment stats: runs of consecutive rows of the segment) */
  calls: number;
  /** rows (tokens) seen */
  tokens: number;
  /** values seen */
  count: number;
  nan: number;
  posInf: number;
  negInf: number;
  /** nan + posInf + negInf */
  nonFinite: number;
  /** 0 < |x| < FORMATS[dtype].minNormal */
  subnormal: number;
  zeros: number;
  /** finite values with |x| >= FORMATS[dtype].max / 2 */
  nearMax: number;
  /**
   * from ProbeContext: values that were finite before rounding to dtype and became +-inf. The model
   * counts per call, so segment stats count only the calls whose rows all lie in the segment.
   */
  overflowed: number;
  /** from ProbeContext: values clamped by the policy (segment stats: as for overflowed) */
  clamped: number;
  /** max |x| over the non-NaN values (Infinity when any is infinite; NaN when every value is NaN or there are none) */
  absmax: number;
  /** the first place where |x| = absmax */
  absmaxAt: ValueLocation | null;
  /** max |x| over the finite values (0 when none) */
  finiteAbsmax: number;
  /** absmax before rounding to dtype, when the model reports it (ProbeContext.f32Absmax); else null */
  f32Absmax: number | null;
  /** min and max over the non-NaN values (NaN when there are none) */
  min: number;
  max: number;
  /** mean and root mean square of the finite values, accumulated in float64 (NaN when none) */
  mean: number;
  rms: number;
  /** log2(FORMATS[dtype].max / absmax): Infinity for absmax 0, -Infinity when a value is infinite, NaN when all are NaN */
  headroomBits: number;
  /** the first non-finite value in execution order (token-major) */
  firstNonFinite: ValueLocation | null;
  /** the range of token positions seen */
  firstToken: number;
  lastToken: number;
  /** the monitor's global call sequence number of the first call merged (execution order) */
  seq: number;
  /** the sequence number of the first call with a non-finite value, or null */
  firstNonFiniteSeq: number | null;
}

/** A copy of one probe's values kept for shadow comparison (NumericsMonitor keepData). */
export interface KeptChunk {
  firstToken: number;
  rows: number;
  values: Float32Array;
}

export interface KeptProbeData {
  probe: ProbeName;
  layer: number;
  /** values per row (the product of the shape's trailing dims) */
  rowLength: number;
  chunks: KeptChunk[];
}

export interface ForwardTrace {
  index: number;
  label: string | null;
  /** token positions covered by this forward (from the probe calls) */
  firstToken: number;
  lastToken: number;
  /** one entry per (probe, layer) in execution order, merged across the forward's chunks */
  probes: ProbeStats[];
  /** the same split by segment (only with a `segments` function), in execution order then segment */
  segments: ProbeStats[];
  /** kept copies of the values (only with keepData) */
  data: KeptProbeData[];
}

/** Per-channel absmax of the residual stream (embeddings and residual_2 of each layer), across every forward. */
export interface ResidualChannels {
  /** channels per row */
  dim: number;
  /** the residual's storage dtype (the last seen) */
  dtype: DType;
  /** one row per residual probe: layer -1 is the embeddings, layer l is residual_2 of layer l; ascending */
  layers: ResidualLayer[];
}

export interface ResidualLayer {
  layer: number;
  /** per channel: max |x| over every token of every forward (Infinity for an infinite value; NaN ignored) */
  absmax: Float64Array;
  /** per channel: the token position where that max was first reached (-1 when none) */
  token: Float64Array;
  /** per channel: the forward index where that max was first reached (-1 when none) */
  forward: Float64Array;
}

/** The first probe call that produced a non-finite value, captured when it happened. */
export interface NonFiniteCapture {
  forward: number;
  /** this call's own stats (not merged with other chunks) */
  call: ProbeStats;
  /** the segment of the first non-finite value's token (null without a `segments` function) */
  segment: string | null;
  /** the latest call's stats of each input probe of the op, when they ran (same chunk) */
  inputs: ProbeStats[];
}

export interface TraceReport {
  forwards: ForwardTrace[];
  /** segment names in the order first seen */
  segmentNames: string[];
  /** null unless residualChannels was on and a residual probe ran */
  residual: ResidualChannels | null;
  /** the first non-finite value's call, or null when every value was finite */
  firstNonFinite: NonFiniteCapture | null;
  /** kept data accounting (keepData) */
  keptBytes: number;
  /** true when keepData stopped copying because maxDataBytes was reached */
  dataTruncated: boolean;
}
