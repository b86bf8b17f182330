/**
 * Renders a TraceReport and its analyses: a terminal summary, a JSON trace (schema.ts), and a
 * self-contained HTML page (inline CSS and SVG drawn here, no scripts, no external resources).
 */
import { FORMATS } from '../core/dtype.js';
import { type Analyses, aggregateProbes, formatNumber, median, nLayersOf } from './analysis.js';
import { LAYER_PROBES, PROJECTOR_PROBES, towerOf, VISION_LAYER_PROBES } from './graph.js';
import { type DTypeJson, type JsonNumber, type LocationJson, type ProbeStatsJson, type TraceJson, TRACE_SCHEMA_ID, TRACE_SCHEMA_VERSION } from './schema.js';
import type { ProbeName, ProbeStats, TraceReport, ValueLocation } from './types.js';

// ---- shared helpers ------------------------------------------------------------------------------

/** Text (decoder) layers seen. */
function nLayers(report: TraceReport): number {
  return nLayersOf(report);
}

/** Vision tower layers seen. */
function nVisionLayers(report: TraceReport): number {
  return nLayersOf(report, true);
}

/** ', N vision layer(s)' when the vision tower was probed, else ''. */
function visionText(report: TraceReport): string {
  const v = nVisionLayers(report);
  const seen = report.forwards.some((fw) => fw.probes.some((p) => towerOf(p.probe) !== 'text'));
  return seen ? `, ${v} vision layer(s)` : '';
}

function dtypesOf(report: TraceReport): DTypeJson[] {
  const seen = new Set<DTypeJson>();
  for (const fw of report.forwards) for (const p of fw.probes) seen.add(p.dtype);
  return [...seen];
}

function allFinite(report: TraceReport): boolean {
  return report.firstNonFinite === null && report.forwards.every((fw) => fw.probes.every((p) => p.nonFinite === 0));
}

function bits(h: number): string {
  if (Number.isNaN(h)) return 'NaN';
  if (h === Infinity) return 'inf';
  if (h === -Infinity) return 'overflow';
  return `${h.toFixed(1)} bits`;
}

function layerName(layer: number): string {
  return layer < 0 ? '-' : String(layer);
}

/** A layer column for tables mixing towers: '3', '-', 'vision 3', 'vision -', 'projector'. */
function towerLayerName(probe: ProbeName, layer: number): string {
  const t = towerOf(probe);
  if (t === 'projector') return 'projector';
  return t === 'vision' ? `vision ${layerName(layer)}` : layerName(layer);
}

function opName(probe: string, layer: number): string {
  return layer < 0 ? probe : `${probe} (layer ${layer})`;
}

function locationText(loc: ValueLocation | null): string {
  if (loc === null) return '-';
  return `token ${loc.token}${loc.head === null ? '' : `, head ${loc.head}`}, channel ${loc.channel}`;
}

// ---- JSON ------------------------------------------------------------------------------------------

/** A number for JSON: non-finite values as 'NaN', 'Infinity', '-Infinity'. */
export function jsonNumber(x: number): JsonNumber {
  if (Number.isNaN(x)) return 'NaN';
  if (x === Infinity) return 'Infinity';
  if (x === -Infinity) return '-Infinity';
  return x;
}

/** The inverse of jsonNumber. */
export function fromJsonNumber(x: JsonNumber): number {
  return typeof x === 'number' ? x : Number(x);
}

function locationJson(loc: ValueLocation | null): LocationJson | null {
  return loc === null ? null : { token: loc.token, head: loc.head, channel: loc.channel, value: jsonNumber(loc.value) };
}

export function probeStatsJson(s: ProbeStats): ProbeStatsJson {
  return {
    probe: s.probe,
    layer: s.layer,
    forward: s.forward,
    segment: s.segment,
    dtype: s.dtype,
    calls: s.calls,
    tokens: s.tokens,
    count: s.count,
    nan: s.nan,
    posInf: s.posInf,
    negInf: s.negInf,
    nonFinite: s.nonFinite,
    subnormal: s.subnormal,
    zeros: s.zeros,
    nearMax: s.nearMax,
    overflowed: s.overflowed,
    clamped: s.clamped,
    absmax: jsonNumber(s.absmax),
    absmaxAt: locationJson(s.absmaxAt),
    finiteAbsmax: jsonNumber(s.finiteAbsmax),
    f32Absmax: s.f32Absmax === null ? null : jsonNumber(s.f32Absmax),
    min: jsonNumber(s.min),
    max: jsonNumber(s.max),
    mean: jsonNumber(s.mean),
    rms: jsonNumber(s.rms),
    headroomBits: jsonNumber(s.headroomBits),
    firstNonFinite: locationJson(s.firstNonFinite),
    firstToken: s.firstToken,
    lastToken: s.lastToken,
    seq: s.seq,
    firstNonFiniteSeq: s.firstNonFiniteSeq,
  };
}

/** The report and its analyses as a JSON-ready object following TraceJson (schema.ts). */
export function traceJson(report: TraceReport, analyses: Analyses): TraceJson {
  const bad = analyses.firstBadOp;
  const mc = analyses.massiveChannels;
  const sh = analyses.shadow;
  const shadowEntry = (e: NonNullable<Analyses['shadow']>['entries'][number]) => ({
    forward: e.forward,
    probe: e.probe,
    layer: e.layer,
    tokens: e.tokens,
    relError: jsonNumber(e.relError),
    cosine: jsonNumber(e.cosine),
    nonFinite: e.nonFinite,
    diverged: e.diverged,
  });
  return {
    schema: TRACE_SCHEMA_ID,
    version: TRACE_SCHEMA_VERSION,
    summary: {
      forwards: report.forwards.length,
      layers: nLayers(report),
      visionLayers: nVisionLayers(report),
      allFinite: allFinite(report),
      dtypes: dtypesOf(report),
      keptBytes: report.keptBytes,
      dataTruncated: report.dataTruncated,
    },
    segmentNames: [...report.segmentNames],
    forwards: report.forwards.map((fw) => ({
      index: fw.index,
      label: fw.label,
      firstToken: fw.firstToken,
      lastToken: fw.lastToken,
      probes: fw.probes.map(probeStatsJson),
      segments: fw.segments.map(probeStatsJson),
    })),
    residual:
      report.residual === null
        ? null
        : {
            dim: report.residual.dim,
            dtype: report.residual.dtype,
            layers: report.residual.layers.map((l) => {
              const med = mc?.layers.find((m) => m.layer === l.layer)?.median ?? median(l.absmax);
              return { layer: l.layer, median: jsonNumber(med), absmax: Array.from(l.absmax, jsonNumber), token: Array.from(l.token), forward: Array.from(l.forward) };
            }),
          },
    firstBadOp:
      bad === null
        ? null
        : {
            probe: bad.probe,
            layer: bad.layer,
            forward: bad.forward,
            forwardLabel: bad.forwardLabel,
            token: bad.token,
            segment: bad.segment,
            head: bad.head,
            channel: bad.channel,
            value: jsonNumber(bad.value),
            triage: bad.triage,
            f32Absmax: bad.f32Absmax === null ? null : jsonNumber(bad.f32Absmax),
            f32AbsmaxSource: bad.f32AbsmaxSource,
            message: bad.message,
            stats: probeStatsJson(bad.stats),
            inputs: bad.inputs.map(probeStatsJson),
          },
    headroom: analyses.headroom.map((h) => ({ layer: h.layer, headroomBits: jsonNumber(h.headroomBits), probe: h.probe, absmax: jsonNumber(h.absmax), dtype: h.dtype, token: h.token })),
    segments: analyses.segments.map((s) => ({
      segment: s.segment,
      tokens: s.tokens,
      nonFinite: s.nonFinite,
      firstNonFinite: s.firstNonFinite === null ? null : { ...s.firstNonFinite },
      worstHeadroomBits: jsonNumber(s.worstHeadroomBits),
      worstProbe: s.worstProbe,
      worstLayer: s.worstLayer,
    })),
    massiveChannels:
      mc === null
        ? null
        : {
            ratio: mc.ratio,
            dtype: mc.dtype,
            dtypeMax: mc.dtypeMax,
            nearMaxThreshold: mc.nearMaxThreshold,
            nearMax: mc.nearMax,
            layers: mc.layers.map((l) => ({
              layer: l.layer,
              median: jsonNumber(l.median),
              channels: l.channels.map((c) => ({ channel: c.channel, absmax: jsonNumber(c.absmax), ratio: jsonNumber(c.ratio), token: c.token, forward: c.forward })),
            })),
            channels: mc.channels.map((c) => ({
              channel: c.channel,
              firstLayer: c.firstLayer,
              firstAbsmax: jsonNumber(c.firstAbsmax),
              peak: jsonNumber(c.peak),
              peakLayer: c.peakLayer,
              layers: c.layers,
              nearMax: c.nearMax,
            })),
          },
    shadow:
      sh === null
        ? null
        : {
            threshold: sh.threshold,
            missing: sh.missing,
            firstDivergence: sh.firstDivergence === null ? null : shadowEntry(sh.firstDivergence),
            entries: sh.entries.map(shadowEntry),
            byLayer: sh.byLayer.map((l) => ({ layer: l.layer, worstRelError: jsonNumber(l.worstRelError), probe: l.probe, forward: l.forward })),
          },
    rounding: { ...analyses.rounding, firstClamped: analyses.rounding.firstClamped === null ? null : { ...analyses.rounding.firstClamped } },
  };
}

/** One line on what the policy's rounding did (overflows, clamps), or null when it did neither. */
function roundingText(analyses: Analyses): string | null {
  const r = analyses.rounding;
  if (r.overflowed === 0 && r.clamped === 0) return null;
  const first = r.firstClamped ? `, first at ${opName(r.firstClamped.probe, r.firstClamped.layer)} in forward ${r.firstClamped.forward}` : '';
  return `rounding to the policy's dtypes: ${r.overflowed} value(s) overflowed to inf, ${r.clamped} clamped${first}`;
}

function cosineText(d: { cosine: number; nonFinite: number }): string {
  return d.nonFinite ? `${d.nonFinite} non-finite, cosine ${formatNumber(d.cosine)} over the finite values` : `cosine ${formatNumber(d.cosine)}`;
}

// ---- terminal ----------------------------------------------------------------------------------------

function table(rows: string[][]): string[] {
  const widths = rows[0]!.map((_, c) => Math.max(...rows.map((r) => (r[c] ?? '').length)));
  return rows.map((r) => r.map((cell, c) => (c === r.length - 1 ? cell : cell.padEnd(widths[c]!))).join('  ').trimEnd());
}

/** A plain-text summary: the first bad op (or "all finite"), worst headroom per layer, segments, massive channels, shadow divergence. */
export function renderTerminalSummary(report: TraceReport, analyses: Analyses): string {
  const out: string[] = [];
  const layers = nLayers(report);
  const dtypes = dtypesOf(report);
  out.push(`numerics trace: ${report.forwards.length} forward(s), ${layers} layer(s)${visionText(report)}, dtype ${dtypes.join('/') || '-'}${report.segmentNames.length ? `, segments ${report.segmentNames.join(', ')}` : ''}`);

  const bad = analyses.firstBadOp;
  if (bad === null) out.push(allFinite(report) ? 'first bad op: none, all finite' : 'first bad op: unknown (non-finite values without a capture)');
  else {
    const fwd = `forward ${bad.forward}${bad.forwardLabel ? ` '${bad.forwardLabel}'` : ''}`;
    out.push(`first bad op: ${opName(bad.probe, bad.layer)}, ${fwd}, token ${bad.token}${bad.segment === null ? '' : ` [${bad.segment}]`}${bad.head === null ? '' : `, head ${bad.head}`}, channel ${bad.channel}: ${formatNumber(bad.value)}`);
    out.push(`  triage: ${bad.triage}`);
    out.push(`  ${bad.message}`);
    const s = bad.stats;
    out.push(`  op:    nan ${s.nan}, +inf ${s.posInf}, -inf ${s.negInf}, overflowed ${s.overflowed}, clamped ${s.clamped}, finite absmax ${formatNumber(s.finiteAbsmax)}`);
    for (const i of bad.inputs) {
      out.push(`  input ${opName(i.probe, i.layer)}: absmax ${formatNumber(i.absmax)} at ${locationText(i.absmaxAt)}, headroom ${bits(i.headroomBits)}, non-finite ${i.nonFinite}, near max ${i.nearMax}`);
    }
  }

  const rounding = roundingText(analyses);
  if (rounding !== null) out.push(rounding);

  if (analyses.headroom.length > 0) {
    out.push('worst headroom per layer (min over probes and forwards):');
    const rows = [['layer', 'probe', 'absmax', 'token', 'headroom']];
    for (const h of analyses.headroom) rows.push([towerLayerName(h.probe, h.layer), h.probe, formatNumber(h.absmax), h.token === null ? '-' : String(h.token), `${bits(h.headroomBits)} (${h.dtype})`]);
    for (const line of table(rows)) out.push(`  ${line}`);
  }

  if (analyses.segments.length > 0) {
    out.push('segments:');
    const rows = [['segment', 'tokens', 'non-finite', 'first non-finite', 'worst headroom']];
    for (const s of analyses.segments) {
      const first = s.firstNonFinite ? `${opName(s.firstNonFinite.probe, s.firstNonFinite.layer)}, token ${s.firstNonFinite.token}` : '-';
      const worst = s.worstProbe === null ? '-' : `${bits(s.worstHeadroomBits)} (${opName(s.worstProbe, s.worstLayer ?? -1)})`;
      rows.push([s.segment, String(s.tokens), String(s.nonFinite), first, worst]);
    }
    for (const line of table(rows)) out.push(`  ${line}`);
  }

  const mc = analyses.massiveChannels;
  if (mc !== null) {
    if (mc.channels.length === 0) out.push(`massive channels (> ${mc.ratio}x median): none`);
    else {
      out.push(`massive channels (> ${mc.ratio}x the layer median)${mc.nearMax ? `: NEAR ${mc.dtype} MAX (> ${formatNumber(mc.nearMaxThreshold)})` : ''}:`);
      const rows = [['channel', 'first layer', 'absmax there', 'peak', 'peak layer', 'layers']];
      for (const c of mc.channels) rows.push([String(c.channel), layerName(c.firstLayer), formatNumber(c.firstAbsmax), `${formatNumber(c.peak)}${c.nearMax ? ' (near max)' : ''}`, layerName(c.peakLayer), String(c.layers)]);
      for (const line of table(rows)) out.push(`  ${line}`);
    }
  }

  const sh = analyses.shadow;
  if (sh !== null) {
    const d = sh.firstDivergence;
    out.push(
      d === null
        ? `shadow: no divergence above ${formatNumber(sh.threshold)} over ${sh.entries.length} probe(s)`
        : `shadow: first divergence at ${opName(d.probe, d.layer)}, forward ${d.forward}: rel error ${formatNumber(d.relError)}, ${cosineText(d)} (threshold ${formatNumber(sh.threshold)})`,
    );
  }
  if (report.dataTruncated) out.push('note: keepData stopped at maxDataBytes; the shadow comparison covers only what was kept');
  return `${out.join('\n')}\n`;
}

// ---- HTML ------------------------------------------------------------------------------------------

export function escapeHtml(s: string): string {
  return s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;').replace(/'/g, '&#39;');
}

type Rgb = [number, number, number];

function hex(c: string): Rgb {
  return [parseInt(c.slice(1, 3), 16), parseInt(c.slice(3, 5), 16), parseInt(c.slice(5, 7), 16)];
}

function rampColor(stops: readonly string[], t: number): string {
  const x = Math.min(1, Math.max(0, t)) * (stops.length - 1);
  const i = Math.min(stops.length - 2, Math.floor(x));
  const f = x - i;
  const a = hex(stops[i]!);
  const b = hex(stops[i + 1]!);
  const c = a.map((v, k) => Math.round(v + (b[k]! - v) * f));
  return `rgb(${c[0]},${c[1]},${c[2]})`;
}

const VIRIDIS = ['#440154', '#3b528b', '#21918c', '#5ec962', '#fde725'];
const HEADROOM_RAMP = ['#d7301f', '#fc8d59', '#fee08b', '#91cf60', '#1a9850'];
const COLOR_OVERFLOW = '#000000';
const COLOR_NAN = '#d000d0';
const COLOR_EMPTY = '#f0f0f0';
const COLOR_ZERO = '#ffffff';
/** headroom at or above this many bits is full green */
const HEADROOM_FULL = 16;

function headroomColor(h: number): string {
  if (Number.isNaN(h)) return COLOR_NAN;
  if (h === Infinity) return COLOR_ZERO;
  if (h <= 0) return COLOR_OVERFLOW;
  return rampColor(HEADROOM_RAMP, h / HEADROOM_FULL);
}

interface LogScale {
  lo: number;
  hi: number;
}

function logScale(values: Iterable<number>): LogScale {
  let lo = Infinity;
  let hi = -Infinity;
  for (const v of values) {
    if (!(v > 0) || v === Infinity) continue;
    const l = Math.log10(v);
    if (l < lo) lo = l;
    if (l > hi) hi = l;
  }
  if (lo === Infinity) return { lo: 0, hi: 1 };
  if (hi - lo < 1e-9) return { lo: lo - 0.5, hi: hi + 0.5 };
  return { lo, hi };
}

function magnitudeColor(v: number, s: LogScale): string {
  if (Number.isNaN(v)) return COLOR_NAN;
  if (v === Infinity) return COLOR_OVERFLOW;
  if (v <= 0) return COLOR_ZERO;
  return rampColor(VIRIDIS, (Math.log10(v) - s.lo) / (s.hi - s.lo));
}

function f(x: number): string {
  return String(Math.round(x * 10) / 10);
}

interface Cell {
  color: string;
  title: string;
  /** a short text drawn in the cell when it is wide enough */
  mark?: string;
}

interface HeatmapSpec {
  rowLabels: string[];
  colLabels: string[];
  cell: (row: number, col: number) => Cell | null;
  cellW: number;
  cellH: number;
  /** show every k-th column label */
  colLabelEvery?: number;
  ariaLabel: string;
}

function heatmapSvg(h: HeatmapSpec): string {
  const labelW = Math.max(40, 7 * Math.max(...h.rowLabels.map((l) => l.length)) + 8);
  const top = 18;
  const w = labelW + h.colLabels.length * h.cellW + 4;
  const hgt = top + h.rowLabels.length * h.cellH + 4;
  const parts: string[] = [`<svg width="${w}" height="${hgt}" viewBox="0 0 ${w} ${hgt}" role="img" aria-label="${escapeHtml(h.ariaLabel)}">`];
  const every = h.colLabelEvery ?? 1;
  h.colLabels.forEach((label, c) => {
    if (c % every !== 0) return;
    parts.push(`<text x="${f(labelW + c * h.cellW + h.cellW / 2)}" y="12" class="axis" text-anchor="middle">${escapeHtml(label)}</text>`);
  });
  h.rowLabels.forEach((label, r) => {
    parts.push(`<text x="${labelW - 4}" y="${f(top + r * h.cellH + h.cellH * 0.72)}" class="axis" text-anchor="end">${escapeHtml(label)}</text>`);
    for (let c = 0; c < h.colLabels.length; c++) {
      const cell = h.cell(r, c);
      const x = f(labelW + c * h.cellW);
      const y = f(top + r * h.cellH);
      if (cell === null) {
        parts.push(`<rect x="${x}" y="${y}" width="${h.cellW}" height="${h.cellH}" fill="${COLOR_EMPTY}"/>`);
        continue;
      }
      parts.push(`<rect x="${x}" y="${y}" width="${h.cellW}" height="${h.cellH}" fill="${cell.color}"><title>${escapeHtml(cell.title)}</title></rect>`);
      if (cell.mark && h.cellW >= 12) parts.push(`<text x="${f(labelW + c * h.cellW + h.cellW / 2)}" y="${f(top + r * h.cellH + h.cellH * 0.75)}" class="mark" text-anchor="middle">${escapeHtml(cell.mark)}</text>`);
    }
  });
  parts.push('</svg>');
  return parts.join('');
}

function legendSvg(stops: readonly string[], left: string, right: string, extra: { color: string; label: string }[]): string {
  const n = 40;
  const w = 460;
  const parts = [`<svg width="${w}" height="30" viewBox="0 0 ${w} 30" role="img" aria-label="legend">`];
  for (let i = 0; i < n; i++) parts.push(`<rect x="${60 + i * 4}" y="2" width="4" height="12" fill="${rampColor(stops, i / (n - 1))}"/>`);
  parts.push(`<text x="56" y="12" class="axis" text-anchor="end">${escapeHtml(left)}</text>`);
  parts.push(`<text x="${60 + n * 4 + 4}" y="12" class="axis">${escapeHtml(right)}</text>`);
  let x = 60 + n * 4 + 60;
  for (const e of extra) {
    parts.push(`<rect x="${x}" y="2" width="12" height="12" fill="${e.color}" stroke="#999"/><text x="${x + 16}" y="12" class="axis">${escapeHtml(e.label)}</text>`);
    x += 24 + 7 * e.label.length;
  }
  parts.push('</svg>');
  return parts.join('');
}

/** Rows of the text probe grid: embeddings, the layer probes, final_norm, logits (those seen). */
const TEXT_ROWS: readonly ProbeName[] = ['embeddings', ...LAYER_PROBES, 'final_norm', 'logits'];
/** Rows of the vision grid: the tower's probes, then the projector's (column "-"). */
const VISION_ROWS: readonly ProbeName[] = ['vision.embeddings', 'vision.pre_ln', ...VISION_LAYER_PROBES, ...PROJECTOR_PROBES];

function probeRows(stats: ProbeStats[], order: readonly ProbeName[]): ProbeName[] {
  const seen = new Set(stats.map((s) => s.probe));
  return order.filter((p) => seen.has(p));
}

function probeGrid(agg: ProbeStats[], layers: number, kind: 'absmax' | 'headroom', order: readonly ProbeName[] = TEXT_ROWS): string {
  const rows = probeRows(agg, order);
  const cols = ['-', ...Array.from({ length: layers }, (_, l) => String(l))];
  const at = new Map(agg.map((s) => [`${s.probe}@${s.layer}`, s]));
  const scale = logScale(agg.map((s) => s.absmax));
  const cellW = layers > 60 ? 10 : layers > 30 ? 14 : 22;
  return heatmapSvg({
    rowLabels: rows,
    colLabels: cols,
    cellW,
    cellH: 14,
    colLabelEvery: cellW < 14 ? 5 : cellW < 22 ? 2 : 1,
    ariaLabel: `${kind} per layer and probe${order === VISION_ROWS ? ' (vision tower and projector)' : ''}`,
    cell: (r, c) => {
      const s = at.get(`${rows[r]!}@${c - 1}`);
      if (s === undefined) return null;
      const title = `${opName(s.probe, s.layer)}: absmax ${formatNumber(s.absmax)} at ${locationText(s.absmaxAt)}; headroom ${bits(s.headroomBits)} (${s.dtype}); nan ${s.nan}, +inf ${s.posInf}, -inf ${s.negInf}, near max ${s.nearMax}, subnormal ${s.subnormal}, overflowed ${s.overflowed}, clamped ${s.clamped}`;
      const mark = s.nonFinite > 0 ? '!' : undefined;
      const color = kind === 'absmax' ? magnitudeColor(s.absmax, scale) : headroomColor(s.headroomBits);
      return mark === undefined ? { color, title } : { color, title, mark };
    },
  });
}

function residualHeatmap(report: TraceReport, analyses: Analyses): string {
  const res = report.residual!;
  const maxCols = 512;
  const bin = Math.max(1, Math.ceil(res.dim / maxCols));
  const cols = Math.ceil(res.dim / bin);
  const medians = new Map(analyses.massiveChannels?.layers.map((l) => [l.layer, l.median]) ?? []);
  const binned = res.layers.map((l) => {
    const out = new Float64Array(cols).fill(NaN);
    const arg = new Int32Array(cols).fill(-1);
    for (let c = 0; c < res.dim; c++) {
      const v = l.absmax[c]!;
      const b = Math.floor(c / bin);
      if (Number.isNaN(v)) continue;
      if (!(out[b]! >= v)) {
        out[b] = v;
        arg[b] = c;
      }
    }
    return { layer: l.layer, out, arg, median: medians.get(l.layer) ?? median(l.absmax) };
  });
  const scale = logScale(binned.flatMap((b) => Array.from(b.out)));
  const cellW = Math.max(1, Math.min(8, Math.floor(1024 / cols)));
  const labelEvery = Math.max(1, Math.ceil(48 / cellW));
  return heatmapSvg({
    rowLabels: binned.map((b) => (b.layer < 0 ? 'embeddings' : `layer ${b.layer}`)),
    colLabels: Array.from({ length: cols }, (_, c) => String(c * bin)),
    cellW,
    cellH: 10,
    colLabelEvery: labelEvery,
    ariaLabel: 'residual stream absmax per layer and channel',
    cell: (r, c) => {
      const b = binned[r]!;
      const v = b.out[c]!;
      const ch = b.arg[c]!;
      const range = bin === 1 ? `channel ${c}` : `channels ${c * bin}-${Math.min(res.dim, (c + 1) * bin) - 1} (max at ${ch})`;
      const ratio = b.median > 0 ? `, ${formatNumber(v / b.median)}x median` : '';
      return { color: magnitudeColor(v, scale), title: `${b.layer < 0 ? 'embeddings' : `layer ${b.layer}`}, ${range}: absmax ${formatNumber(v)}${ratio}` };
    },
  });
}

function shadowChart(analyses: Analyses): string {
  const sh = analyses.shadow!;
  const data = sh.byLayer;
  const lo = -8;
  const hi = 1;
  const H = 160;
  const left = 48;
  const barW = Math.max(4, Math.min(24, Math.floor(800 / Math.max(1, data.length))));
  const W = left + data.length * barW + 10;
  const y = (logv: number) => 8 + (H * (hi - Math.min(hi, Math.max(lo, logv)))) / (hi - lo);
  const parts = [`<svg width="${W}" height="${H + 30}" viewBox="0 0 ${W} ${H + 30}" role="img" aria-label="shadow relative error per layer">`];
  for (let e = lo; e <= hi; e += 2) {
    parts.push(`<line x1="${left}" x2="${W - 4}" y1="${f(y(e))}" y2="${f(y(e))}" class="grid"/><text x="${left - 4}" y="${f(y(e) + 3)}" class="axis" text-anchor="end">1e${e}</text>`);
  }
  const ty = y(Math.log10(sh.threshold));
  parts.push(`<line x1="${left}" x2="${W - 4}" y1="${f(ty)}" y2="${f(ty)}" class="threshold"><title>threshold ${formatNumber(sh.threshold)}</title></line>`);
  data.forEach((d, i) => {
    const x = left + i * barW;
    const v = d.worstRelError;
    const nonFinite = !Number.isFinite(v);
    const top = nonFinite ? y(hi) : v > 0 ? y(Math.log10(v)) : y(lo);
    const fill = nonFinite ? COLOR_OVERFLOW : v > sh.threshold ? '#d7301f' : '#4575b4';
    parts.push(`<rect x="${x + 1}" y="${f(top)}" width="${barW - 2}" height="${f(y(lo) - top)}" fill="${fill}"><title>${escapeHtml(`${d.layer < 0 ? 'embeddings/head' : `layer ${d.layer}`}: worst rel error ${formatNumber(v)} (${d.probe}, forward ${d.forward})`)}</title></rect>`);
    if (i % Math.max(1, Math.ceil(20 / barW)) === 0) parts.push(`<text x="${f(x + barW / 2)}" y="${H + 22}" class="axis" text-anchor="middle">${escapeHtml(layerName(d.layer))}</text>`);
  });
  parts.push('</svg>');
  return parts.join('');
}

function statsTable(rows: ProbeStats[]): string {
  const head = ['op', 'tokens', 'nan', '+inf', '-inf', 'overflowed', 'clamped', 'near max', 'subnormal', 'absmax', 'at', 'headroom', 'mean', 'rms'];
  const body = rows.map((s) =>
    [
      opName(s.probe, s.layer),
      `${s.firstToken}-${s.lastToken}`,
      s.nan,
      s.posInf,
      s.negInf,
      s.overflowed,
      s.clamped,
      s.nearMax,
      s.subnormal,
      formatNumber(s.absmax),
      locationText(s.absmaxAt),
      `${bits(s.headroomBits)} (${s.dtype})`,
      formatNumber(s.mean),
      formatNumber(s.rms),
    ].map(String),
  );
  return htmlTable(head, body);
}

function htmlTable(head: string[], body: string[][]): string {
  const th = head.map((h) => `<th>${escapeHtml(h)}</th>`).join('');
  const tr = body.map((r) => `<tr>${r.map((c) => `<td>${escapeHtml(c)}</td>`).join('')}</tr>`).join('');
  return `<table><thead><tr>${th}</tr></thead><tbody>${tr}</tbody></table>`;
}

const CSS = `
body{font:14px/1.4 system-ui,-apple-system,"Segoe UI",sans-serif;margin:24px;color:#222;background:#fff}
h1{font-size:20px;margin:0 0 4px}h2{font-size:16px;margin:24px 0 8px}
.meta{color:#555;margin:0 0 12px}nav a{margin-right:12px}
section{margin-bottom:16px}
.card{border:2px solid #1a9850;border-radius:6px;padding:8px 14px;background:#f3fbf3}
.card.bad{border-color:#b2182b;background:#fff3f0}
.card h2{margin-top:4px}
.big{font-size:16px;font-weight:600}
.triage{display:inline-block;padding:1px 8px;border-radius:10px;background:#b2182b;color:#fff;font-size:12px}
.triage.semantic{background:#542788}
table{border-collapse:collapse;margin:6px 0;font-size:12px}
th,td{border:1px solid #ddd;padding:2px 6px;text-align:left;white-space:nowrap}
th{background:#f5f5f5}
.scroll{overflow-x:auto}
svg{display:block;margin:4px 0}
svg .axis{font:10px sans-serif;fill:#444}
svg .mark{font:bold 10px sans-serif;fill:#fff}
svg .grid{stroke:#e5e5e5;stroke-width:1}
svg .threshold{stroke:#d7301f;stroke-width:1;stroke-dasharray:4 3}
.note{color:#666;font-size:12px}
`;

export interface HtmlOptions {
  title?: string;
}

/**
 * A self-contained HTML page: the first bad op (id="first-bad-op"), absmax and headroom per layer
 * and probe (heatmaps), worst headroom per layer, segments, the residual stream per channel
 * (layers x channels) with its massive channels, and the shadow error per layer when present.
 */
export function renderHtml(report: TraceReport, analyses: Analyses, opts: HtmlOptions = {}): string {
  const title = opts.title ?? 'halfpipe numerics trace';
  const layers = nLayers(report);
  const dtypes = dtypesOf(report);
  const agg = aggregateProbes(report);
  const p: string[] = [];
  p.push('<!DOCTYPE html>');
  p.push('<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">');
  p.push(`<title>${escapeHtml(title)}</title><link rel="icon" href="data:,"><style>${CSS}</style></head><body>`);
  p.push(`<h1>${escapeHtml(title)}</h1>`);
  p.push(
    `<p class="meta">${escapeHtml(`${report.forwards.length} forward(s) · ${layers} layer(s)${visionText(report).replace(', ', ' · ')} · dtype ${dtypes.join('/') || '-'}${report.segmentNames.length ? ` · segments: ${report.segmentNames.join(', ')}` : ''}`)}</p>`,
  );
  const nav: [string, string][] = [
    ['first-bad-op', 'First bad op'],
    ['probes', 'Probes'],
    ['headroom', 'Headroom'],
  ];
  if (analyses.segments.length) nav.push(['segments', 'Segments']);
  if (report.residual) nav.push(['residual', 'Residual channels']);
  if (analyses.shadow) nav.push(['shadow', 'Shadow']);
  p.push(`<nav>${nav.map(([id, label]) => `<a href="#${id}">${escapeHtml(label)}</a>`).join('')}</nav>`);

  // First bad op.
  const bad = analyses.firstBadOp;
  if (bad === null) {
    const finite = allFinite(report);
    const rounding = roundingText(analyses);
    p.push(
      `<section id="first-bad-op" class="card"><h2>First bad op</h2><p class="big">${finite ? 'All finite: no probe saw a NaN or an infinity.' : 'Non-finite values were seen, but their first occurrence was not captured.'}</p>${rounding === null ? '' : `<p>${escapeHtml(rounding)}</p>`}</section>`,
    );
  } else {
    const fwd = `forward ${bad.forward}${bad.forwardLabel ? ` (${bad.forwardLabel})` : ''}`;
    p.push('<section id="first-bad-op" class="card bad"><h2>First bad op</h2>');
    p.push(`<p class="big">${escapeHtml(`${opName(bad.probe, bad.layer)} — ${fwd}, token ${bad.token}${bad.segment === null ? '' : ` [${bad.segment}]`}${bad.head === null ? '' : `, head ${bad.head}`}, channel ${bad.channel}: ${formatNumber(bad.value)}`)}</p>`);
    p.push(`<p><span class="triage ${bad.triage === 'semantic' ? 'semantic' : ''}">${escapeHtml(bad.triage)}</span> ${escapeHtml(bad.message)}</p>`);
    p.push(`<div class="scroll">${statsTable([bad.stats, ...bad.inputs])}</div>`);
    p.push('<p class="note">First row: the op in the call that created the value; then its inputs in the same chunk.</p></section>');
  }

  // Probe grids.
  p.push('<section id="probes"><h2>Absmax per layer and probe (log scale, over every forward)</h2>');
  if (agg.length === 0) p.push('<p>No probe data.</p>');
  else {
    const scale = logScale(agg.map((s) => s.absmax));
    p.push(`<div class="scroll">${probeGrid(agg, layers, 'absmax')}</div>`);
    p.push(legendSvg(VIRIDIS, formatNumber(10 ** scale.lo), formatNumber(10 ** scale.hi), [{ color: COLOR_OVERFLOW, label: 'inf' }, { color: COLOR_NAN, label: 'NaN only' }]));
    p.push('<h2>Headroom per layer and probe (bits below the dtype max)</h2>');
    p.push(`<div class="scroll">${probeGrid(agg, layers, 'headroom')}</div>`);
    p.push(legendSvg(HEADROOM_RAMP, '0 bits', `${HEADROOM_FULL}+ bits`, [{ color: COLOR_OVERFLOW, label: 'overflow' }, { color: COLOR_NAN, label: 'NaN only' }]));
    p.push('<p class="note">Column "-": embeddings, final_norm and logits. "!" marks cells with non-finite values; hover a cell for its stats.</p>');
    const vision = agg.filter((s) => towerOf(s.probe) !== 'text');
    if (vision.length > 0) {
      const vLayers = nVisionLayers(report);
      p.push('<h2 id="vision">Vision tower and projector: absmax per layer and probe (log scale, over every image)</h2>');
      p.push(`<div class="scroll">${probeGrid(vision, vLayers, 'absmax', VISION_ROWS)}</div>`);
      p.push('<h2>Vision tower and projector: headroom per layer and probe</h2>');
      p.push(`<div class="scroll">${probeGrid(vision, vLayers, 'headroom', VISION_ROWS)}</div>`);
      p.push('<p class="note">Column "-": vision.embeddings, vision.pre_ln and the projector. Rows of a cell are image rows (CLS, then patches), segment \'image k\'.</p>');
    }
  }
  p.push('</section>');

  // Worst headroom per layer.
  p.push('<section id="headroom"><h2>Worst headroom per layer</h2>');
  p.push(
    htmlTable(
      ['layer', 'probe', 'absmax', 'token', 'headroom'],
      analyses.headroom.map((h) => [towerLayerName(h.probe, h.layer), h.probe, formatNumber(h.absmax), h.token === null ? '-' : String(h.token), `${bits(h.headroomBits)} (${h.dtype})`]),
    ),
  );
  p.push('</section>');

  if (analyses.segments.length) {
    p.push('<section id="segments"><h2>Segments</h2>');
    p.push(
      htmlTable(
        ['segment', 'tokens', 'non-finite', 'first non-finite', 'worst headroom'],
        analyses.segments.map((s) => [
          s.segment,
          String(s.tokens),
          String(s.nonFinite),
          s.firstNonFinite ? `${opName(s.firstNonFinite.probe, s.firstNonFinite.layer)}, forward ${s.firstNonFinite.forward}, token ${s.firstNonFinite.token}` : '-',
          s.worstProbe === null ? '-' : `${bits(s.worstHeadroomBits)} (${opName(s.worstProbe, s.worstLayer ?? -1)})`,
        ]),
      ),
    );
    p.push('</section>');
  }

  if (report.residual) {
    const res = report.residual;
    p.push(`<section id="residual"><h2>Residual stream: absmax per layer and channel (${res.dim} channels, log scale)</h2>`);
    p.push(`<div class="scroll">${residualHeatmap(report, analyses)}</div>`);
    if (res.dim > 512) p.push(`<p class="note">Each column is the max over ${Math.ceil(res.dim / 512)} adjacent channels.</p>`);
    const mc = analyses.massiveChannels;
    if (mc) {
      if (mc.channels.length === 0) p.push(`<p>No massive channels (none above ${mc.ratio}x the layer median).</p>`);
      else {
        p.push(`<h2>Massive channels (&gt; ${escapeHtml(String(mc.ratio))}x the layer median)${mc.nearMax ? ` — <span class="triage">near ${escapeHtml(mc.dtype)} max</span>` : ''}</h2>`);
        p.push(
          htmlTable(
            ['channel', 'first layer', 'absmax there', 'peak', 'peak layer', 'layers', `> ${formatNumber(mc.nearMaxThreshold)}`],
            mc.channels.map((c) => [String(c.channel), layerName(c.firstLayer), formatNumber(c.firstAbsmax), formatNumber(c.peak), layerName(c.peakLayer), String(c.layers), c.nearMax ? 'yes' : 'no']),
          ),
        );
      }
    }
    p.push('</section>');
  }

  if (analyses.shadow) {
    const sh = analyses.shadow;
    p.push('<section id="shadow"><h2>Shadow comparison: worst relative error per layer</h2>');
    p.push(`<div class="scroll">${shadowChart(analyses)}</div>`);
    const d = sh.firstDivergence;
    p.push(
      `<p>${escapeHtml(
        d === null
          ? `No divergence above ${formatNumber(sh.threshold)} over ${sh.entries.length} probe(s).`
          : `First divergence: ${opName(d.probe, d.layer)}, forward ${d.forward}: relative error ${formatNumber(d.relError)}, ${cosineText(d)} (threshold ${formatNumber(sh.threshold)}).`,
      )}</p>`,
    );
    if (sh.missing) p.push(`<p class="note">${sh.missing} probe(s) had no shadow data to compare.</p>`);
    p.push('</section>');
  }
  if (report.dataTruncated) p.push('<p class="note">keepData stopped at maxDataBytes: the shadow comparison covers only what was kept.</p>');
  p.push(`<p class="note">max of ${escapeHtml(dtypes.map((d) => `${d} = ${formatNumber(FORMATS[d].max)}`).join(', ') || '-')}</p>`);
  p.push('</body></html>');
  return `${p.join('\n')}\n`;
}
