/**
 * The numerics monitor: per-op statistics of every forward through the model's probe hook, and
 * the analyses and renderings built on them.
 */
export type { ProbeContext, ProbeName, MonitorProbe, ValueLocation, ProbeStats, KeptChunk, KeptProbeData, ForwardTrace, ResidualChannels, ResidualLayer, NonFiniteCapture, TraceReport } from './types.js';
export { computeStats, mergeStats, headroomBits, type ComputeStatsOptions } from './stats.js';
export { NumericsMonitor, type NumericsMonitorOptions, type BeginForwardOptions } from './monitor.js';
export { LAYER_PROBES, VISION_LAYER_PROBES, PROJECTOR_PROBES, PROBE_NAMES, probeInputs, executionRank, towerOf, isImageProbe, type ProbeRef, type Tower } from './graph.js';
export {
  firstBadOp,
  massiveChannels,
  compareShadow,
  aggregateProbes,
  headroomByLayer,
  segmentSummary,
  roundingSummary,
  analyze,
  overflowThreshold,
  type Triage,
  type FirstBadOp,
  type FirstBadOpOptions,
  type MassiveChannel,
  type MassiveLayer,
  type MassiveChannelSummary,
  type MassiveChannels,
  type MassiveChannelsOptions,
  type ShadowEntry,
  type ShadowLayer,
  type ShadowComparison,
  type LayerHeadroom,
  type SegmentSummary,
  type RoundingSummary,
  type Analyses,
  type AnalyzeOptions,
} from './analysis.js';
export { renderTerminalSummary, traceJson, renderHtml, jsonNumber, fromJsonNumber, type HtmlOptions } from './render.js';
export { TRACE_SCHEMA_ID, TRACE_SCHEMA_VERSION, TRACE_JSON_SPEC, validateTraceJson, type TraceJson, type JsonNumber, type Spec } from './schema.js';
