/**
 * Analyses of a TraceReport: the op that first creates a non-finite value (and why), the massive
 * channels of the residual stream, a comparison against a shadow run in higher precision, and the
 * worst headroom per layer and per segment.
 */
import { type DType, FORMATS } from '../core/dtype.js';
import { executionRank, isImageProbe, probeInputs, towerOf } from './graph.js';
import { RECORD_FIELDS, mergeRecord, recordToStats, statsToRecord } from './stats.js';
import type { ForwardTrace, KeptProbeData, ProbeName, ProbeStats, TraceReport } from './types.js';

// ---- first bad op ------------------------------------------------------------------------------

/**
 * 'precision-overflow': the op's values were finite in f32 and became +-inf only when rounded to
 * the policy's dtype (ProbeContext.overflowed > 0). 'semantic': non-finite values computed from
 * finite inputs without a rounding overflow (NaN or inf weights, 0/0, inf - inf, log 0, ...): the
 * same happens in f32.
 */
export type Triage = 'precision-overflow' | 'semantic';

export interface FirstBadOp {
  probe: ProbeName;
  layer: number;
  forward: number;
  forwardLabel: string | null;
  /** where the first non-finite value is */
  token: number;
  segment: string | null;
  head: number | null;
  channel: number;
  /** NaN, Infinity or -Infinity */
  value: number;
  /** the op's stats in the call (prefill chunk or decode step) that created the value */
  stats: ProbeStats;
  /** the stats of the probes the op reads (their latest call before it: the same chunk) */
  inputs: ProbeStats[];
  triage: Triage;
  /** for precision-overflow: the absmax the values had before rounding (see f32AbsmaxSource) */
  f32Absmax: number | null;
  /** 'model': ProbeContext.f32Absmax; 'shadow': the same op in the shadow run; 'lower-bound': the dtype's overflow threshold (the true value is at least this) */
  f32AbsmaxSource: 'model' | 'shadow' | 'lower-bound' | null;
  /** one line saying what happened */
  message: string;
}

export interface FirstBadOpOptions {
  /** a run of the same input in higher precision, for the f32 absmax of an overflowing op */
  shadow?: TraceReport;
}

/** The smallest magnitude that rounds to infinity in `dtype`: (2 - 2^-(p+1)) * 2^emax (65520 for f16). */
export function overflowThreshold(dtype: DType): number {
  const f = FORMATS[dtype];
  return (2 - 2 ** -(f.mantissaBits + 1)) * 2 ** f.maxExponent;
}

function findStats(fw: ForwardTrace | undefined, probe: ProbeName, layer: number): ProbeStats | undefined {
  return fw?.probes.find((p) => p.probe === probe && p.layer === layer);
}

/** Text layers seen (or, with `vision`, vision tower layers seen). */
export function nLayersOf(report: TraceReport, vision = false): number {
  let max = -1;
  for (const fw of report.forwards) for (const p of fw.probes) if (p.layer > max && (vision ? p.probe.startsWith('vision.') : !isImageProbe(p.probe))) max = p.layer;
  return max + 1;
}

/** Orders towers as they run: vision, projector, text. */
function towerRank(probe: ProbeName): number {
  const t = towerOf(probe);
  return t === 'vision' ? 0 : t === 'projector' ? 1 : 2;
}

/** A number for people: 4 significant digits, exponent form outside [1e-3, 1e5), integers as they are. */
export function formatNumber(x: number): string {
  if (Number.isNaN(x)) return 'NaN';
  if (x === Infinity) return 'inf';
  if (x === -Infinity) return '-inf';
  if (x === 0) return '0';
  const a = Math.abs(x);
  if (a >= 1e5 || a < 1e-3) return x.toExponential(2);
  return Number.isInteger(x) ? String(x) : String(Number(x.toPrecision(4)));
}

function where(layer: number): string {
  return layer < 0 ? '' : ` (layer ${layer})`;
}

/**
 * The first probe, in execution order across every forward, whose values hold a non-finite value:
 * the op that created it (its inputs were all finite), not an op that propagated it.
 */
export function firstBadOp(report: TraceReport, opts: FirstBadOpOptions = {}): FirstBadOp | null {
  let stats: ProbeStats;
  let inputs: ProbeStats[];
  let segment: string | null;
  const capture = report.firstNonFinite;
  if (capture) {
    ({ call: stats, inputs, segment } = capture);
  } else {
    // No capture (a report assembled by hand): the forward stats with the earliest non-finite call.
    let best: ProbeStats | undefined;
    for (const fw of report.forwards) for (const p of fw.probes) if (p.firstNonFiniteSeq !== null && (best === undefined || p.firstNonFiniteSeq < best.firstNonFiniteSeq!)) best = p;
    if (best === undefined) return null;
    stats = best;
    const fw = report.forwards[best.forward];
    inputs = probeInputs(best.probe, best.layer, nLayersOf(report), nLayersOf(report, true)).flatMap((r) => findStats(fw, r.probe, r.layer) ?? []);
    const token = best.firstNonFinite?.token;
    segment = fw?.segments.find((s) => s.probe === best.probe && s.layer === best.layer && token !== undefined && s.firstToken <= token && token <= s.lastToken && s.nonFinite > 0)?.segment ?? null;
  }
  const loc = stats.firstNonFinite;
  if (loc === null) return null;
  const fw = report.forwards[stats.forward];
  const triage: Triage = stats.overflowed > 0 ? 'precision-overflow' : 'semantic';
  let f32Absmax: number | null = null;
  let f32AbsmaxSource: FirstBadOp['f32AbsmaxSource'] = null;
  const max = FORMATS[stats.dtype].max;
  let message: string;
  const op = `${stats.probe}${where(stats.layer)}`;
  const at = `${isImageProbe(stats.probe) ? 'row' : 'token'} ${loc.token}${segment === null ? '' : ` [${segment}]`}${loc.head === null ? '' : `, head ${loc.head}`}, channel ${loc.channel}`;
  if (triage === 'precision-overflow') {
    if (stats.f32Absmax !== null) {
      f32Absmax = stats.f32Absmax;
      f32AbsmaxSource = 'model';
    } else {
      const shadowStats = findStats(opts.shadow?.forwards[stats.forward], stats.probe, stats.layer);
      if (shadowStats && Number.isFinite(shadowStats.absmax) && shadowStats.absmax > max) {
        f32Absmax = shadowStats.absmax;
        f32AbsmaxSource = 'shadow';
      } else {
        f32Absmax = overflowThreshold(stats.dtype);
        f32AbsmaxSource = 'lower-bound';
      }
    }
    const bound = f32AbsmaxSource === 'lower-bound' ? '>= ' : '';
    message =
      `precision overflow at ${op}, ${at}: ${stats.overflowed} value(s) were finite in f32 ` +
      `(f32 absmax ${bound}${formatNumber(f32Absmax)}) and became inf when rounded to ${stats.dtype} (max ${formatNumber(max)})`;
  } else {
    const badInputs = inputs.filter((s) => s.nonFinite > 0);
    const from = badInputs.length > 0 ? `inputs ${badInputs.map((s) => s.probe).join(', ')} already non-finite` : 'finite inputs';
    let hint = 'NaN/inf weights, 0/0, inf - inf';
    if (stats.probe === 'attn_out') hint = 'scores or the KV cache (not probed), NaN/inf weights';
    message = `semantic: ${op} computed ${formatNumber(loc.value)} at ${at} from ${from} with no rounding overflow (${hint}); f32 would do the same`;
  }
  return {
    probe: stats.probe,
    layer: stats.layer,
    forward: stats.forward,
    forwardLabel: fw?.label ?? null,
    token: loc.token,
    segment,
    head: loc.head,
    channel: loc.channel,
    value: loc.value,
    stats,
    inputs,
    triage,
    f32Absmax,
    f32AbsmaxSource,
    message,
  };
}

// ---- massive channels --------------------------------------------------------------------------

export interface MassiveChannel {
  channel: number;
  absmax: number;
  /** absmax / the layer's median channel absmax */
  ratio: number;
  /** where the channel's absmax was reached */
  token: number;
  forward: number;
}

export interface MassiveLayer {
  /** -1: the embeddings; l: residual_2 of layer l */
  layer: number;
  /** median over channels of the channel absmax */
  median: number;
  channels: MassiveChannel[];
}

export interface MassiveChannelSummary {
  channel: number;
  /** the first layer where the channel is massive, and its absmax there */
  firstLayer: number;
  firstAbsmax: number;
  /** the largest absmax over the layers where it is massive */
  peak: number;
  peakLayer: number;
  /** layers where it is massive */
  layers: number;
  /** peak > nearMaxFraction * dtype max */
  nearMax: boolean;
}

export interface MassiveChannels {
  ratio: number;
  dtype: DType;
  dtypeMax: number;
  /** nearMaxFraction * dtypeMax */
  nearMaxThreshold: number;
  /** every residual layer, ascending, with its massive channels (possibly none) */
  layers: MassiveLayer[];
  /** each massive channel once, by first layer then channel */
  channels: MassiveChannelSummary[];
  /** whether any massive channel approaches the dtype max */
  nearMax: boolean;
}

export interface MassiveChannelsOptions {
  /** a channel is massive when its absmax exceeds ratio x the layer's median channel absmax (default 100) */
  ratio?: number;
  /** approaching the max means > nearMaxFraction x dtype max (default 1/4) */
  nearMaxFraction?: number;
  /** the dtype whose max counts (default: the residual's storage dtype) */
  dtype?: DType;
}

export function median(values: ArrayLike<number>): number {
  const v = Array.from(values).filter((x) => !Number.isNaN(x));
  if (v.length === 0) return NaN;
  v.sort((a, b) => a - b);
  const mid = v.length >> 1;
  return v.length % 2 === 1 ? v[mid]! : (v[mid - 1]! + v[mid]!) / 2;
}

/** The residual stream's massive channels per layer; null when the report has no per-channel data (residualChannels off). */
export function massiveChannels(report: TraceReport, opts: MassiveChannelsOptions = {}): MassiveChannels | null {
  const res = report.residual;
  if (res === null) return null;
  const ratio = opts.ratio ?? 100;
  const dtype = opts.dtype ?? res.dtype;
  const dtypeMax = FORMATS[dtype].max;
  const nearMaxThreshold = (opts.nearMaxFraction ?? 0.25) * dtypeMax;
  const layers: MassiveLayer[] = [];
  const byChannel = new Map<number, MassiveChannelSummary>();
  for (const rl of res.layers) {
    const med = median(rl.absmax);
    const channels: MassiveChannel[] = [];
    for (let c = 0; c < rl.absmax.length; c++) {
      const a = rl.absmax[c]!;
      if (!(a > ratio * med) || !(a > 0)) continue;
      channels.push({ channel: c, absmax: a, ratio: med > 0 ? a / med : Infinity, token: rl.token[c]!, forward: rl.forward[c]! });
      const s = byChannel.get(c);
      if (s === undefined) byChannel.set(c, { channel: c, firstLayer: rl.layer, firstAbsmax: a, peak: a, peakLayer: rl.layer, layers: 1, nearMax: a > nearMaxThreshold });
      else {
        s.layers++;
        if (a > s.peak) {
          s.peak = a;
          s.peakLayer = rl.layer;
        }
        s.nearMax ||= a > nearMaxThreshold;
      }
    }
    layers.push({ layer: rl.layer, median: med, channels });
  }
  const channels = [...byChannel.values()].sort((a, b) => a.firstLayer - b.firstLayer || a.channel - b.channel);
  return { ratio, dtype, dtypeMax, nearMaxThreshold, layers, channels, nearMax: channels.some((c) => c.nearMax) };
}

// ---- shadow comparison -------------------------------------------------------------------------

export interface ShadowEntry {
  forward: number;
  probe: ProbeName;
  layer: number;
  /** rows compared (tokens present in both runs) */
  tokens: number;
  /** ||a - b|| / ||b|| over the finite pairs (Infinity when non-finite values appear) */
  relError: number;
  /** a.b / (||a|| ||b||) over the finite pairs (1 for two zero vectors) */
  cosine: number;
  /** values non-finite in either run */
  nonFinite: number;
  /** relError > threshold, or a non-finite value */
  diverged: boolean;
}

export interface ShadowLayer {
  /** the layer of its tower (vision, projector and text layers are separate entries; see `probe`) */
  layer: number;
  /** the largest relError over the layer's probes (and forwards) */
  worstRelError: number;
  probe: ProbeName;
  forward: number;
}

export interface ShadowComparison {
  threshold: number;
  /** by forward, then execution order */
  entries: ShadowEntry[];
  /** the first entry in execution order that diverged, or null */
  firstDivergence: ShadowEntry | null;
  byLayer: ShadowLayer[];
  /** (forward, probe, layer) with data in the main run and none (or no common tokens) in the shadow run */
  missing: number;
}

function rowsByToken(d: KeptProbeData): Map<number, { values: Float32Array; offset: number }> {
  const rows = new Map<number, { values: Float32Array; offset: number }>();
  for (const c of d.chunks) for (let r = 0; r < c.rows; r++) rows.set(c.firstToken + r, { values: c.values, offset: r * d.rowLength });
  return rows;
}

/**
 * Compares the kept values (keepData) of a main run against a shadow run of the same input (e.g.
 * f32 activations, or float64), per (forward, probe, layer), token by token.
 */
export function compareShadow(main: TraceReport, shadow: TraceReport, threshold = 1e-2): ShadowComparison {
  const entries: ShadowEntry[] = [];
  let missing = 0;
  for (const fw of main.forwards) {
    const sfw = shadow.forwards[fw.index];
    const order = new Map(fw.probes.map((p) => [`${p.probe}@${p.layer}`, p.seq]));
    const rank = (d: KeptProbeData) => order.get(`${d.probe}@${d.layer}`) ?? executionRank(d.probe, d.layer);
    const kept = [...fw.data].sort((a, b) => rank(a) - rank(b));
    for (const d of kept) {
      const sd = sfw?.data.find((x) => x.probe === d.probe && x.layer === d.layer && x.rowLength === d.rowLength);
      if (sd === undefined) {
        missing++;
        continue;
      }
      const srows = rowsByToken(sd);
      let tokens = 0;
      let diff2 = 0;
      let b2 = 0;
      let a2 = 0;
      let ab = 0;
      let nonFinite = 0;
      for (const c of d.chunks) {
        for (let r = 0; r < c.rows; r++) {
          const s = srows.get(c.firstToken + r);
          if (s === undefined) continue;
          tokens++;
          const off = r * d.rowLength;
          for (let i = 0; i < d.rowLength; i++) {
            const a = c.values[off + i]!;
            const b = s.values[s.offset + i]!;
            if (a - a !== 0 || b - b !== 0) {
              nonFinite++;
              continue;
            }
            const e = a - b;
            diff2 += e * e;
            a2 += a * a;
            b2 += b * b;
            ab += a * b;
          }
        }
      }
      if (tokens === 0) {
        missing++;
        continue;
      }
      let relError = b2 > 0 ? Math.sqrt(diff2 / b2) : diff2 > 0 ? Infinity : 0;
      const cosine = a2 > 0 && b2 > 0 ? ab / Math.sqrt(a2 * b2) : a2 === 0 && b2 === 0 ? 1 : 0;
      if (nonFinite > 0) relError = Infinity;
      entries.push({ forward: fw.index, probe: d.probe, layer: d.layer, tokens, relError, cosine, nonFinite, diverged: nonFinite > 0 || !(relError <= threshold) });
    }
  }
  const byLayerMap = new Map<string, ShadowLayer>();
  for (const e of entries) {
    const k = `${towerOf(e.probe)}@${e.layer}`;
    const cur = byLayerMap.get(k);
    if (cur === undefined || e.relError > cur.worstRelError) byLayerMap.set(k, { layer: e.layer, worstRelError: e.relError, probe: e.probe, forward: e.forward });
  }
  return {
    threshold,
    entries,
    firstDivergence: entries.find((e) => e.diverged) ?? null,
    byLayer: [...byLayerMap.values()].sort((a, b) => towerRank(a.probe) - towerRank(b.probe) || a.layer - b.layer),
    missing,
  };
}

// ---- headroom and segments -----------------------------------------------------------------------

/** Stats of each (probe, layer) merged over every forward (forward -1), in execution order. */
export function aggregateProbes(report: TraceReport): ProbeStats[] {
  const index = new Map<string, number>();
  const ids: { probe: ProbeName; layer: number }[] = [];
  let buf = new Float64Array(RECORD_FIELDS * 64);
  const tmp = new Float64Array(RECORD_FIELDS);
  for (const fw of report.forwards) {
    for (const p of fw.probes) {
      const k = `${p.probe}@${p.layer}`;
      let i = index.get(k);
      if (i === undefined) {
        i = ids.length;
        index.set(k, i);
        ids.push({ probe: p.probe, layer: p.layer });
        if ((i + 1) * RECORD_FIELDS > buf.length) {
          const grown = new Float64Array(buf.length * 2);
          grown.set(buf);
          buf = grown;
        }
        statsToRecord(p, buf, i * RECORD_FIELDS);
      } else {
        statsToRecord(p, tmp, 0);
        mergeRecord(buf, i * RECORD_FIELDS, tmp, 0);
      }
    }
  }
  const out = ids.map((id, i) => recordToStats(buf, i * RECORD_FIELDS, { ...id, forward: -1, segment: null }));
  return out.sort((a, b) => executionRank(a.probe, a.layer) - executionRank(b.probe, b.layer));
}

export interface LayerHeadroom {
  /** -1: embeddings, final_norm and logits (for the vision tower: vision.embeddings and pre_ln; the projector is -1). Vision, projector and text layers are separate entries (see `probe`). */
  layer: number;
  /** the least headroom over the layer's probes and every forward (-Infinity: an infinite value; NaN: only NaN) */
  headroomBits: number;
  probe: ProbeName;
  absmax: number;
  dtype: DType;
  /** where that absmax is */
  token: number | null;
}

function worseHeadroom(a: number, b: number): boolean {
  const ka = Number.isNaN(a) ? -Infinity : a;
  const kb = Number.isNaN(b) ? -Infinity : b;
  return ka < kb || (ka === kb && Number.isNaN(a) && !Number.isNaN(b));
}

/**
 * Per layer: the probe with the least headroom (min over probes and forwards). The vision tower's
 * layers, the projector (layer -1) and the text model's layers are separate entries, in that order.
 */
export function headroomByLayer(report: TraceReport): LayerHeadroom[] {
  const byLayer = new Map<string, LayerHeadroom>();
  for (const fw of report.forwards) {
    for (const p of fw.probes) {
      const k = `${towerOf(p.probe)}@${p.layer}`;
      const cur = byLayer.get(k);
      if (cur === undefined || worseHeadroom(p.headroomBits, cur.headroomBits)) {
        byLayer.set(k, { layer: p.layer, headroomBits: p.headroomBits, probe: p.probe, absmax: p.absmax, dtype: p.dtype, token: p.absmaxAt?.token ?? null });
      }
    }
  }
  return [...byLayer.values()].sort((a, b) => towerRank(a.probe) - towerRank(b.probe) || a.layer - b.layer);
}

export interface SegmentSummary {
  segment: string;
  /** rows of this segment seen by the text embeddings probe (its tokens, over every forward; not the vision rows) */
  tokens: number;
  nonFinite: number;
  /** the first non-finite value in this segment */
  firstNonFinite: { probe: ProbeName; layer: number; forward: number; token: number } | null;
  /** the least headroom over every probe, for this segment's tokens */
  worstHeadroomBits: number;
  worstProbe: ProbeName | null;
  worstLayer: number | null;
}

/** Per segment: non-finite counts and the worst headroom, so a failure confined to (say) image tokens shows as such. */
export function segmentSummary(report: TraceReport): SegmentSummary[] {
  const out = new Map<string, SegmentSummary & { nfSeq: number }>(
    report.segmentNames.map((s) => [s, { segment: s, tokens: 0, nonFinite: 0, firstNonFinite: null, worstHeadroomBits: Infinity, worstProbe: null, worstLayer: null, nfSeq: Infinity }]),
  );
  for (const fw of report.forwards) {
    for (const p of fw.segments) {
      const s = out.get(p.segment!);
      if (s === undefined) continue;
      if (p.probe === 'embeddings') s.tokens += p.tokens;
      s.nonFinite += p.nonFinite;
      if (p.firstNonFiniteSeq !== null && p.firstNonFinite && p.firstNonFiniteSeq < s.nfSeq) {
        s.nfSeq = p.firstNonFiniteSeq;
        s.firstNonFinite = { probe: p.probe, layer: p.layer, forward: p.forward, token: p.firstNonFinite.token };
      }
      if (s.worstProbe === null || worseHeadroom(p.headroomBits, s.worstHeadroomBits)) {
        s.worstHeadroomBits = p.headroomBits;
        s.worstProbe = p.probe;
        s.worstLayer = p.layer;
      }
    }
  }
  return [...out.values()].map(({ nfSeq: _nfSeq, ...s }) => s);
}

// ---- rounding to the policy's dtypes ----------------------------------------------------------

export interface RoundingSummary {
  /** values that became +-inf when rounded to their storage dtype, over every probe and forward */
  overflowed: number;
  /** values the policy's clamp-on-overflow clamped (a run can be all finite and still have clamped) */
  clamped: number;
  /** the first probe (execution order) where the policy clamped */
  firstClamped: { probe: ProbeName; layer: number; forward: number } | null;
}

export function roundingSummary(report: TraceReport): RoundingSummary {
  let overflowed = 0;
  let clamped = 0;
  let firstClamped: RoundingSummary['firstClamped'] = null;
  for (const fw of report.forwards) {
    for (const p of fw.probes) {
      overflowed += p.overflowed;
      clamped += p.clamped;
      if (p.clamped > 0 && firstClamped === null) firstClamped = { probe: p.probe, layer: p.layer, forward: p.forward };
    }
  }
  return { overflowed, clamped, firstClamped };
}

// ---- everything at once --------------------------------------------------------------------------

export interface Analyses {
  firstBadOp: FirstBadOp | null;
  massiveChannels: MassiveChannels | null;
  shadow: ShadowComparison | null;
  headroom: LayerHeadroom[];
  segments: SegmentSummary[];
  rounding: RoundingSummary;
}

export interface AnalyzeOptions extends MassiveChannelsOptions {
  /** a shadow run's report (keepData on in both) */
  shadow?: TraceReport;
  /** the shadow divergence threshold on relative error (default 1e-2) */
  threshold?: number;
}

export function analyze(report: TraceReport, opts: AnalyzeOptions = {}): Analyses {
  return {
    firstBadOp: firstBadOp(report, opts.shadow ? { shadow: opts.shadow } : {}),
    massiveChannels: massiveChannels(report, opts),
    shadow: opts.shadow ? compareShadow(report, opts.shadow, opts.threshold) : null,
    headroom: headroomByLayer(report),
    segments: segmentSummary(report),
    rounding: roundingSummary(report),
  };
}
