/**
 * The JSON trace written by `traceJson` (render.ts): its schema as TypeScript interfaces, plus a
 * runtime description of the same fields (`TRACE_JSON_SPEC`, checked against the interfaces by
 * the compiler) and `validateTraceJson`, which checks a parsed trace against it.
 *
 * Conventions:
 * - JSON has no NaN or infinities, so every number that can be non-finite is a `JsonNumber`: a
 *   finite number, or one of the strings 'NaN', 'Infinity', '-Infinity'. Fields typed `number`
 *   are always finite.
 * - Layers: -1 for embeddings, final_norm and logits (and, in the residual data, the embeddings);
 *   0..L-1 for the decoder layers. LLaVA traces also hold the vision tower's probes ('vision.*':
 *   -1 for vision.embeddings and vision.pre_ln, 0..V-1 for its layers) and the projector's
 *   ('projector.*', layer -1); the probe name says which tower a layer belongs to, and headroom
 *   and shadow byLayer have separate entries per tower (vision, projector, then text).
 * - Each image's vision tower and projector run is its own forward (e.g. 'vision image 0'), before
 *   the prefill; its rows are the image's rows (CLS then patches, or feature rows) from 0, not
 *   sequence positions, and its segment is 'image k'.
 * - Version history: 2 added summary.visionLayers and the vision/projector probes.
 * - Token positions are sequence positions (0-based); forwards are numbered from 0 in order.
 * - Consumers should check `schema` and `version`; a version bump means a field changed meaning
 *   or was removed (added fields bump it too, since the validator rejects unknown fields).
 */

export const TRACE_SCHEMA_ID = 'halfpipe/numerics-trace';
export const TRACE_SCHEMA_VERSION = 2;

/** A number that may be non-finite: a finite number, or 'NaN' / 'Infinity' / '-Infinity'. */
export type JsonNumber = number | 'NaN' | 'Infinity' | '-Infinity';

export type ProbeNameJson = string;
export type DTypeJson = 'f32' | 'f16' | 'bf16';

export interface TraceJson {
  /** always TRACE_SCHEMA_ID */
  schema: typeof TRACE_SCHEMA_ID;
  /** always TRACE_SCHEMA_VERSION */
  version: typeof TRACE_SCHEMA_VERSION;
  summary: TraceSummaryJson;
  /** token segment names in the order first seen (empty without a segments function) */
  segmentNames: string[];
  /** per forward (prefill, then each decode step) */
  forwards: ForwardJson[];
  /** per-channel absmax of the residual stream; null when not tracked */
  residual: ResidualJson | null;
  /** the op that created the first non-finite value; null when everything was finite */
  firstBadOp: FirstBadOpJson | null;
  /** per layer, the probe with the least headroom over every forward */
  headroom: LayerHeadroomJson[];
  /** per segment: non-finite counts and worst headroom */
  segments: SegmentSummaryJson[];
  /** massive channels of the residual stream; null when not tracked */
  massiveChannels: MassiveChannelsJson | null;
  /** comparison against a shadow run; null when none was made */
  shadow: ShadowJson | null;
  /** what rounding to the policy's dtypes did, over every probe and forward */
  rounding: RoundingJson;
}

export interface RoundingJson {
  /** values that became +-inf when rounded to their storage dtype */
  overflowed: number;
  /** values the policy's clamp-on-overflow clamped */
  clamped: number;
  /** the first probe (execution order) where the policy clamped */
  firstClamped: { probe: ProbeNameJson; layer: number; forward: number } | null;
}

export interface TraceSummaryJson {
  forwards: number;
  /** decoder layers seen */
  layers: number;
  /** vision tower layers seen (0 for a text-only trace) */
  visionLayers: number;
  /** true when no probe saw a non-finite value */
  allFinite: boolean;
  /** the storage dtypes seen */
  dtypes: DTypeJson[];
  /** bytes of values kept for a shadow comparison, and whether keeping stopped at the limit */
  keptBytes: number;
  dataTruncated: boolean;
}

export interface ForwardJson {
  index: number;
  label: string | null;
  /** token positions covered */
  firstToken: number;
  lastToken: number;
  /** per (probe, layer) in execution order, merged across prefill chunks */
  probes: ProbeStatsJson[];
  /** the same split by token segment */
  segments: ProbeStatsJson[];
}

/** Where a value sits. */
export interface LocationJson {
  token: number;
  /** the head for [tokens, heads, headDim] activations, else null */
  head: number | null;
  /** channel within the head (3-d) or the row (2-d) */
  channel: number;
  value: JsonNumber;
}

/** Statistics of one probe (see ProbeStats in types.ts for each field's meaning). */
export interface ProbeStatsJson {
  probe: ProbeNameJson;
  layer: number;
  /** -1 when merged across forwards */
  forward: number;
  /** null: all tokens */
  segment: string | null;
  dtype: DTypeJson;
  calls: number;
  tokens: number;
  count: number;
  nan: number;
  posInf: number;
  negInf: number;
  nonFinite: number;
  /** 0 < |x| < dtype's smallest normal */
  subnormal: number;
  zeros: number;
  /** finite |x| >= dtype max / 2 */
  nearMax: number;
  /** values that overflowed when rounded to dtype (from the model) */
  overflowed: number;
  /** values clamped by the policy (from the model) */
  clamped: number;
  absmax: JsonNumber;
  absmaxAt: LocationJson | null;
  finiteAbsmax: JsonNumber;
  /** absmax before rounding, when the model reports it */
  f32Absmax: JsonNumber | null;
  min: JsonNumber;
  max: JsonNumber;
  /** over the finite values, float64 accumulation */
  mean: JsonNumber;
  rms: JsonNumber;
  /** log2(dtype max / absmax) */
  headroomBits: JsonNumber;
  firstNonFinite: LocationJson | null;
  firstToken: number;
  lastToken: number;
  /** execution order (global call sequence number of the first call) */
  seq: number;
  firstNonFiniteSeq: number | null;
}

export interface ResidualJson {
  dim: number;
  dtype: DTypeJson;
  /** ascending; layer -1 is the embeddings, layer l is residual_2 of layer l */
  layers: ResidualLayerJson[];
}

export interface ResidualLayerJson {
  layer: number;
  /** median over channels of the channel absmax */
  median: JsonNumber;
  /** per channel: max |x| over every token and forward ('NaN' when never finite-or-inf) */
  absmax: JsonNumber[];
  /** per channel: the token of that max (-1: none) */
  token: number[];
  /** per channel: the forward of that max (-1: none) */
  forward: number[];
}

export interface FirstBadOpJson {
  probe: ProbeNameJson;
  layer: number;
  forward: number;
  forwardLabel: string | null;
  token: number;
  segment: string | null;
  head: number | null;
  channel: number;
  value: JsonNumber;
  /** 'precision-overflow' (finite in f32, inf after rounding to dtype) or 'semantic' (non-finite even in f32) */
  triage: 'precision-overflow' | 'semantic';
  f32Absmax: JsonNumber | null;
  f32AbsmaxSource: 'model' | 'shadow' | 'lower-bound' | null;
  message: string;
  /** the op's stats in the call that created the value */
  stats: ProbeStatsJson;
  /** its input probes' stats in the same chunk */
  inputs: ProbeStatsJson[];
}

export interface LayerHeadroomJson {
  layer: number;
  headroomBits: JsonNumber;
  probe: ProbeNameJson;
  absmax: JsonNumber;
  dtype: DTypeJson;
  token: number | null;
}

export interface SegmentSummaryJson {
  segment: string;
  tokens: number;
  nonFinite: number;
  firstNonFinite: { probe: ProbeNameJson; layer: number; forward: number; token: number } | null;
  worstHeadroomBits: JsonNumber;
  worstProbe: ProbeNameJson | null;
  worstLayer: number | null;
}

export interface MassiveChannelsJson {
  ratio: number;
  dtype: DTypeJson;
  dtypeMax: number;
  nearMaxThreshold: number;
  nearMax: boolean;
  layers: { layer: number; median: JsonNumber; channels: { channel: number; absmax: JsonNumber; ratio: JsonNumber; token: number; forward: number }[] }[];
  channels: { channel: number; firstLayer: number; firstAbsmax: JsonNumber; peak: JsonNumber; peakLayer: number; layers: number; nearMax: boolean }[];
}

export interface ShadowEntryJson {
  forward: number;
  probe: ProbeNameJson;
  layer: number;
  tokens: number;
  /** ||a - b|| / ||b||; 'Infinity' with non-finite values */
  relError: JsonNumber;
  cosine: JsonNumber;
  nonFinite: number;
  diverged: boolean;
}

export interface ShadowJson {
  threshold: number;
  missing: number;
  firstDivergence: ShadowEntryJson | null;
  entries: ShadowEntryJson[];
  byLayer: { layer: number; worstRelError: JsonNumber; probe: ProbeNameJson; forward: number }[];
}

// ---- runtime description and validation ------------------------------------------------------------

/** A field's type: 'number' is finite; 'jnumber' a JsonNumber; 'integer' a finite integer. */
export type Spec =
  | 'number'
  | 'integer'
  | 'jnumber'
  | 'string'
  | 'boolean'
  | { readonly literal: string | number }
  | { readonly oneOf: readonly string[] }
  | { readonly nullable: Spec }
  | { readonly array: Spec }
  | { readonly object: { readonly [field: string]: Spec } };

/** Every field of T, each with a Spec: the compiler rejects a missing or an extra field. */
type Fields<T> = { readonly [K in keyof T]-?: Spec };

const obj = <T>(fields: Fields<T>): { object: Fields<T> } => ({ object: fields });
const nullable = (s: Spec): Spec => ({ nullable: s });
const array = (s: Spec): Spec => ({ array: s });
const DTYPE_SPEC: Spec = { oneOf: ['f32', 'f16', 'bf16'] };

const LOCATION = obj<LocationJson>({ token: 'integer', head: nullable('integer'), channel: 'integer', value: 'jnumber' });

const PROBE_STATS = obj<ProbeStatsJson>({
  probe: 'string',
  layer: 'integer',
  forward: 'integer',
  segment: nullable('string'),
  dtype: DTYPE_SPEC,
  calls: 'integer',
  tokens: 'integer',
  count: 'integer',
  nan: 'integer',
  posInf: 'integer',
  negInf: 'integer',
  nonFinite: 'integer',
  subnormal: 'integer',
  zeros: 'integer',
  nearMax: 'integer',
  overflowed: 'integer',
  clamped: 'integer',
  absmax: 'jnumber',
  absmaxAt: nullable(LOCATION),
  finiteAbsmax: 'jnumber',
  f32Absmax: nullable('jnumber'),
  min: 'jnumber',
  max: 'jnumber',
  mean: 'jnumber',
  rms: 'jnumber',
  headroomBits: 'jnumber',
  firstNonFinite: nullable(LOCATION),
  firstToken: 'integer',
  lastToken: 'integer',
  seq: 'integer',
  firstNonFiniteSeq: nullable('integer'),
});

const SHADOW_ENTRY = obj<ShadowEntryJson>({
  forward: 'integer',
  probe: 'string',
  layer: 'integer',
  tokens: 'integer',
  relError: 'jnumber',
  cosine: 'jnumber',
  nonFinite: 'integer',
  diverged: 'boolean',
});

type MassiveLayerJson = MassiveChannelsJson['layers'][number];
type MassiveChannelJson = MassiveLayerJson['channels'][number];
type MassiveSummaryJson = MassiveChannelsJson['channels'][number];
type ShadowLayerJson = ShadowJson['byLayer'][number];
type SegmentFirstJson = NonNullable<SegmentSummaryJson['firstNonFinite']>;
type FirstClampedJson = NonNullable<RoundingJson['firstClamped']>;

/** The runtime description of TraceJson. */
export const TRACE_JSON_SPEC = obj<TraceJson>({
  schema: { literal: TRACE_SCHEMA_ID },
  version: { literal: TRACE_SCHEMA_VERSION },
  summary: obj<TraceSummaryJson>({ forwards: 'integer', layers: 'integer', visionLayers: 'integer', allFinite: 'boolean', dtypes: array(DTYPE_SPEC), keptBytes: 'integer', dataTruncated: 'boolean' }),
  segmentNames: array('string'),
  forwards: array(
    obj<ForwardJson>({ index: 'integer', label: nullable('string'), firstToken: 'integer', lastToken: 'integer', probes: array(PROBE_STATS), segments: array(PROBE_STATS) }),
  ),
  residual: nullable(
    obj<ResidualJson>({
      dim: 'integer',
      dtype: DTYPE_SPEC,
      layers: array(obj<ResidualLayerJson>({ layer: 'integer', median: 'jnumber', absmax: array('jnumber'), token: array('integer'), forward: array('integer') })),
    }),
  ),
  firstBadOp: nullable(
    obj<FirstBadOpJson>({
      probe: 'string',
      layer: 'integer',
      forward: 'integer',
      forwardLabel: nullable('string'),
      token: 'integer',
      segment: nullable('string'),
      head: nullable('integer'),
      channel: 'integer',
      value: 'jnumber',
      triage: { oneOf: ['precision-overflow', 'semantic'] },
      f32Absmax: nullable('jnumber'),
      f32AbsmaxSource: nullable({ oneOf: ['model', 'shadow', 'lower-bound'] }),
      message: 'string',
      stats: PROBE_STATS,
      inputs: array(PROBE_STATS),
    }),
  ),
  headroom: array(obj<LayerHeadroomJson>({ layer: 'integer', headroomBits: 'jnumber', probe: 'string', absmax: 'jnumber', dtype: DTYPE_SPEC, token: nullable('integer') })),
  segments: array(
    obj<SegmentSummaryJson>({
      segment: 'string',
      tokens: 'integer',
      nonFinite: 'integer',
      firstNonFinite: nullable(obj<SegmentFirstJson>({ probe: 'string', layer: 'integer', forward: 'integer', token: 'integer' })),
      worstHeadroomBits: 'jnumber',
      worstProbe: nullable('string'),
      worstLayer: nullable('integer'),
    }),
  ),
  massiveChannels: nullable(
    obj<MassiveChannelsJson>({
      ratio: 'number',
      dtype: DTYPE_SPEC,
      dtypeMax: 'number',
      nearMaxThreshold: 'number',
      nearMax: 'boolean',
      layers: array(
        obj<MassiveLayerJson>({
          layer: 'integer',
          median: 'jnumber',
          channels: array(obj<MassiveChannelJson>({ channel: 'integer', absmax: 'jnumber', ratio: 'jnumber', token: 'integer', forward: 'integer' })),
        }),
      ),
      channels: array(
        obj<MassiveSummaryJson>({ channel: 'integer', firstLayer: 'integer', firstAbsmax: 'jnumber', peak: 'jnumber', peakLayer: 'integer', layers: 'integer', nearMax: 'boolean' }),
      ),
    }),
  ),
  shadow: nullable(
    obj<ShadowJson>({
      threshold: 'number',
      missing: 'integer',
      firstDivergence: nullable(SHADOW_ENTRY),
      entries: array(SHADOW_ENTRY),
      byLayer: array(obj<ShadowLayerJson>({ layer: 'integer', worstRelError: 'jnumber', probe: 'string', forward: 'integer' })),
    }),
  ),
  rounding: obj<RoundingJson>({
    overflowed: 'integer',
    clamped: 'integer',
    firstClamped: nullable(obj<FirstClampedJson>({ probe: 'string', layer: 'integer', forward: 'integer' })),
  }),
});

function check(v: unknown, spec: Spec, path: string, errors: string[]): void {
  if (errors.length >= 50) return;
  const bad = (want: string) => errors.push(`${path}: expected ${want}, got ${v === null ? 'null' : Array.isArray(v) ? 'array' : typeof v === 'string' ? JSON.stringify(v) : typeof v}`);
  if (typeof spec === 'string') {
    switch (spec) {
      case 'number':
        if (typeof v !== 'number' || !Number.isFinite(v)) bad('a finite number');
        return;
      case 'integer':
        if (typeof v !== 'number' || !Number.isInteger(v)) bad('an integer');
        return;
      case 'jnumber':
        if (!((typeof v === 'number' && Number.isFinite(v)) || v === 'NaN' || v === 'Infinity' || v === '-Infinity')) bad('a JsonNumber');
        return;
      case 'string':
        if (typeof v !== 'string') bad('a string');
        return;
      case 'boolean':
        if (typeof v !== 'boolean') bad('a boolean');
        return;
    }
  }
  if ('literal' in spec) {
    if (v !== spec.literal) bad(JSON.stringify(spec.literal));
  } else if ('oneOf' in spec) {
    if (typeof v !== 'string' || !spec.oneOf.includes(v)) bad(`one of ${spec.oneOf.join(', ')}`);
  } else if ('nullable' in spec) {
    if (v !== null) check(v, spec.nullable, path, errors);
  } else if ('array' in spec) {
    if (!Array.isArray(v)) return void bad('an array');
    v.forEach((x, i) => check(x, spec.array, `${path}[${i}]`, errors));
  } else {
    if (typeof v !== 'object' || v === null || Array.isArray(v)) return void bad('an object');
    const o = v as Record<string, unknown>;
    for (const [k, s] of Object.entries(spec.object)) {
      if (!(k in o)) errors.push(`${path}.${k}: missing`);
      else check(o[k], s, `${path}.${k}`, errors);
    }
    for (const k of Object.keys(o)) if (!(k in spec.object)) errors.push(`${path}.${k}: not in the schema`);
  }
}

/** The ways `value` (a parsed JSON trace) departs from the schema; empty when it conforms. */
export function validateTraceJson(value: unknown): string[] {
  const errors: string[] = [];
  check(value, TRACE_JSON_SPEC, '$', errors);
  return errors;
}
