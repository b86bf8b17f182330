/**
 * NumericsMonitor: a LlamaProbe that records, per forward (a prefill call, then each decode step),
 * the statistics of every (probe, layer) — merged across prefill chunks and also split by token
 * segment — plus, optionally, the per-channel absmax of the residual stream and copies of the
 * values for a shadow comparison.
 *
 *   const monitor = new NumericsMonitor({ segments: (p) => (p < 5 ? 'text' : 'image 0'), residualChannels: true });
 *   const model = new LlamaModel(config, weights, { probe: monitor.probe });
 *   monitor.beginForward('prefill'); session.forward(prompt);
 *   monitor.beginForward('decode 0'); session.forward([next]);
 *   const report = monitor.report();
 *
 * Cost: one pass over each probe's values into a fixed-size float64 record (no allocation per call
 * beyond growing the record store once per new (probe, layer) of a forward); the per-channel pass
 * runs only on the residual probes, and copies are made only with keepData. Memory: 256 bytes per
 * (probe, layer) per forward, times (1 + segments the forward touches); report() turns them into
 * objects, so for long generations trace a bounded number of decode steps.
 *
 * Without a ProbeContext (a model that passes only four arguments) the values are taken as f32
 * and positions are counted by the monitor: each forward continues where the previous one ended
 * (call `reset()` after rewinding a session).
 */
import { DTYPES, FORMATS, type DType } from '../core/dtype.js';
import { isImageProbe, isResidualProbe, PROBE_NAMES, probeInputs } from './graph.js';
import {
  R_CALLS,
  R_CLAMPED,
  R_DTYPE,
  R_F32_ABSMAX,
  R_FIRST_TOKEN,
  R_LAST_TOKEN,
  R_NF_SEQ,
  R_NF_TOKEN,
  R_OVERFLOWED,
  R_ROWS,
  R_SEQ,
  RECORD_FIELDS,
  copyRecord,
  locate,
  mergeRecord,
  nonFiniteOf,
  recordToStats,
  resetRecord,
  scanRange,
} from './stats.js';
import type {
  ForwardTrace,
  KeptProbeData,
  MonitorProbe,
  NonFiniteCapture,
  ProbeContext,
  ProbeName,
  ProbeStats,
  ResidualChannels,
  ResidualLayer,
  TraceReport,
} from './types.js';

export interface NumericsMonitorOptions {
  /** the segment of a sequence position ('text', 'image 0', 'generated', ...); stats are also split by it */
  segments?: (position: number) => string;
  /** track the per-channel absmax of the residual stream (embeddings and residual_2 of each layer) */
  residualChannels?: boolean;
  /** called after every probe call with that call's stats (all its rows, segment null) */
  onStats?: (s: ProbeStats) => void;
  /** keep copies of every probe's values (for compareShadow) */
  keepData?: boolean;
  /** the most bytes of values keepData copies; past it copying stops and the report says so (default 256 MiB) */
  maxDataBytes?: number;
}

const NP = PROBE_NAMES.length;
const PROBE_INDEX = new Map<string, number>(PROBE_NAMES.map((n, i) => [n, i]));
const DTYPE_INDEX: Record<DType, number> = { f32: DTYPES.indexOf('f32'), f16: DTYPES.indexOf('f16'), bf16: DTYPES.indexOf('bf16') };
const SEG_STRIDE = 1 << 16;

function keyOf(pi: number, layer: number): number {
  return (layer + 1) * NP + pi;
}
function probeOfKey(key: number): ProbeName {
  return PROBE_NAMES[key % NP]!;
}
function layerOfKey(key: number): number {
  return Math.floor(key / NP) - 1;
}

/** A growable array of stats records. */
class RecordStore {
  buf = new Float64Array(RECORD_FIELDS * 256);
  private used = 0;

  /** A new record (reset, or left for the caller to fill); its offset. May replace `buf`. */
  alloc(reset: boolean): number {
    if (this.used + RECORD_FIELDS > this.buf.length) {
      const grown = new Float64Array(this.buf.length * 2);
      grown.set(this.buf);
      this.buf = grown;
    }
    const b = this.used;
    this.used += RECORD_FIELDS;
    if (reset) resetRecord(this.buf, b);
    return b;
  }
}

/** Options of one forward (NumericsMonitor.beginForward). */
export interface BeginForwardOptions {
  /**
   * Every row of this forward belongs to this segment, whatever `segments` says: e.g. 'image 0'
   * for the vision tower and projector forward of image 0, whose rows are that image's patches.
   */
  segment?: string;
}

interface ForwardState {
  index: number;
  label: string | null;
  /** the fixed segment of every row (BeginForwardOptions.segment), or null */
  segment: string | null;
  /** key -> record offset (-1: not seen) */
  slots: Int32Array;
  /** keys in first-call order */
  keys: number[];
  /** key * SEG_STRIDE + segment id -> record offset */
  segSlots: Map<number, number>;
  /** segment records in creation order */
  segEntries: { key: number; segment: number; base: number }[];
  data: Map<number, KeptProbeData>;
  firstToken: number;
  lastToken: number;
  // Position counting for calls without a ProbeContext.
  chunkFirst: number;
  chunkRows: number;
  nextToken: number;
}

interface ResidualState {
  dim: number;
  dtype: DType;
  layers: Map<number, ResidualLayer>;
}

export class NumericsMonitor {
  /** the hook to pass to the model (LlamaModelOptions.probe) */
  readonly probe: MonitorProbe;
  private segments: ((position: number) => string) | undefined;
  private readonly residualChannels: boolean;
  private readonly onStats: ((s: ProbeStats) => void) | undefined;
  private readonly keepData: boolean;
  private readonly maxDataBytes: number;

  private store = new RecordStore();
  /** per key: the latest call's record */
  private lastCall = new Float64Array(0);
  /** per key: whether lastCall holds a call */
  private called = new Uint8Array(0);
  private readonly scratch = new Float64Array(RECORD_FIELDS);
  private forwards: ForwardState[] = [];
  private current: ForwardState | null = null;
  private seq = 0;
  /** the deepest text layer seen */
  private maxLayer = -1;
  /** the deepest vision layer seen */
  private maxVisionLayer = -1;
  private segmentIds = new Map<string, number>();
  private segmentNames: string[] = [];
  private residual: ResidualState | null = null;
  private capture: NonFiniteCapture | null = null;
  private keptBytes = 0;
  private dataTruncated = false;

  constructor(opts: NumericsMonitorOptions = {}) {
    this.segments = opts.segments;
    this.residualChannels = opts.residualChannels === true;
    this.onStats = opts.onStats;
    this.keepData = opts.keepData === true;
    this.maxDataBytes = opts.maxDataBytes ?? 256 * 1024 * 1024;
    this.probe = (name, layer, data, shape, ctx) => this.record(name, layer, data, shape, ctx);
  }

  /**
   * Starts a new forward (call before each session.forward, and before each image's encoding with
   * `{ segment: 'image k' }`); returns its index. A probe call with no forward open starts one.
   */
  beginForward(label?: string, opts: BeginForwardOptions = {}): number {
    const prev = this.current;
    const fw: ForwardState = {
      index: this.forwards.length,
      label: label ?? null,
      segment: opts.segment ?? null,
      slots: new Int32Array(Math.max(this.called.length, 4 * NP)).fill(-1),
      keys: [],
      segSlots: new Map(),
      segEntries: [],
      data: new Map(),
      firstToken: Infinity,
      lastToken: -Infinity,
      chunkFirst: 0,
      chunkRows: 0,
      nextToken: prev ? prev.nextToken : 0,
    };
    this.forwards.push(fw);
    this.current = fw;
    return fw.index;
  }

  /**
   * Sets the segment function for the forwards to come (e.g. once an image's feature rows, and so
   * the prompt's layout, are known after its vision forwards).
   */
  setSegments(segments: ((position: number) => string) | undefined): void {
    this.segments = segments;
  }

  /** Forgets everything recorded. */
  reset(): void {
    this.store = new RecordStore();
    this.lastCall = new Float64Array(0);
    this.called = new Uint8Array(0);
    this.forwards = [];
    this.current = null;
    this.seq = 0;
    this.maxLayer = -1;
    this.maxVisionLayer = -1;
    this.segmentIds = new Map();
    this.segmentNames = [];
    this.residual = null;
    this.capture = null;
    this.keptBytes = 0;
    this.dataTruncated = false;
  }

  private segmentId(name: string): number {
    let id = this.segmentIds.get(name);
    if (id === undefined) {
      id = this.segmentNames.length;
      if (id >= SEG_STRIDE) throw new RangeError(`NumericsMonitor: more than ${SEG_STRIDE} segments`);
      this.segmentIds.set(name, id);
      this.segmentNames.push(name);
    }
    return id;
  }

  private ensureKeys(key: number): void {
    if (key < this.called.length) return;
    const n = Math.max(key + 1, 2 * this.called.length, 4 * NP);
    const lastCall = new Float64Array(n * RECORD_FIELDS);
    lastCall.set(this.lastCall);
    this.lastCall = lastCall;
    const called = new Uint8Array(n);
    called.set(this.called);
    this.called = called;
  }

  private record(name: ProbeName, layer: number, data: Float32Array, shape: readonly number[], ctx: ProbeContext | undefined): void {
    const pi = PROBE_INDEX.get(name);
    if (pi === undefined) throw new RangeError(`NumericsMonitor: unknown probe '${String(name)}'`);
    const fw = this.current ?? this.forwards[this.beginForward()]!;
    const key = keyOf(pi, layer);
    const image = isImageProbe(name);
    if (image) {
      if (layer > this.maxVisionLayer && name.startsWith('vision.')) this.maxVisionLayer = layer;
    } else if (layer > this.maxLayer) this.maxLayer = layer;
    this.ensureKeys(key);
    if (key >= fw.slots.length) {
      const slots = new Int32Array(this.called.length).fill(-1);
      slots.set(fw.slots);
      fw.slots = slots;
    }

    const rows = shape[0] ?? 0;
    let rowLength = 1;
    for (let i = 1; i < shape.length; i++) rowLength *= shape[i]!;
    const headDim = shape.length >= 3 ? shape[shape.length - 1]! : 0;
    const n = Math.min(data.length, rows * rowLength);

    let dtype: DType = 'f32';
    let firstToken: number;
    if (ctx) {
      dtype = ctx.dtype;
      firstToken = ctx.firstToken;
    } else if (image) {
      // Vision and projector rows are an image's rows (CLS and patches, or features), from 0.
      firstToken = 0;
    } else if (name === 'embeddings') {
      fw.chunkFirst = fw.nextToken;
      fw.chunkRows = rows;
      fw.nextToken += rows;
      firstToken = fw.chunkFirst;
    } else if (name === 'final_norm' || name === 'logits') {
      // The head runs on the last `rows` rows of the chunk.
      firstToken = fw.chunkFirst + fw.chunkRows - rows;
    } else firstToken = fw.chunkFirst;
    const fmt = FORMATS[dtype];
    const minNormal = fmt.minNormal;
    const half = fmt.max / 2;
    const seq = this.seq++;

    // This call's stats, into lastCall[key] (and, split by segment, into the forward's segment records).
    const lc = this.lastCall;
    const lb = key * RECORD_FIELDS;
    resetRecord(lc, lb);
    // A forward with a fixed segment puts every row in it; otherwise image-side rows (not sequence
    // positions) get no segment, and text rows the `segments` function's.
    const segments = fw.segment !== null || image ? undefined : this.segments;
    /** the segment id of every row, when they all share one (-1: several, or no segments) */
    let onlySegment = fw.segment !== null ? this.segmentId(fw.segment) : -1;
    if (segments !== undefined && rows > 0) {
      const seg0 = segments(firstToken);
      let r1 = 1;
      let next = seg0;
      while (r1 < rows) {
        next = segments(firstToken + r1);
        if (next !== seg0) break;
        r1++;
      }
      if (r1 === rows) onlySegment = this.segmentId(seg0);
      else this.scanSegments(fw, key, data, n, rows, rowLength, headDim, firstToken, minNormal, half, seq, dtype, seg0, r1, next);
    }
    if (segments === undefined || onlySegment >= 0 || rows === 0) {
      // (with a fixed segment and no `segments` function this is the only scan)
      scanRange(data, 0, n, lc, lb, minNormal, half);
      locate(lc, lb, firstToken, rowLength, headDim);
      lc[lb + R_ROWS] = rows;
    }
    lc[lb + R_CALLS] = 1;
    lc[lb + R_SEQ] = seq;
    lc[lb + R_NF_SEQ] = nonFiniteOf(lc, lb) > 0 ? seq : -1;
    lc[lb + R_FIRST_TOKEN] = firstToken;
    lc[lb + R_LAST_TOKEN] = firstToken + rows - 1;
    lc[lb + R_DTYPE] = DTYPE_INDEX[dtype];
    lc[lb + R_OVERFLOWED] = ctx ? ctx.overflowed : 0;
    lc[lb + R_CLAMPED] = ctx ? ctx.clamped : 0;
    lc[lb + R_F32_ABSMAX] = ctx?.f32Absmax ?? -1;
    this.called[key] = 1;

    // Into the forward's records for (probe, layer), and for the segment when the call has only one.
    if (onlySegment >= 0) {
      const sb = this.segmentSlot(fw, key, onlySegment); // may grow the store: read buf after
      mergeRecord(this.store.buf, sb, lc, lb);
    }
    let fb = fw.slots[key]!;
    if (fb < 0) {
      fb = this.store.alloc(false);
      fw.slots[key] = fb;
      fw.keys.push(key);
      copyRecord(this.store.buf, fb, lc, lb);
    } else mergeRecord(this.store.buf, fb, lc, lb);
    if (firstToken < fw.firstToken) fw.firstToken = firstToken;
    if (firstToken + rows - 1 > fw.lastToken) fw.lastToken = firstToken + rows - 1;

    if (this.residualChannels && isResidualProbe(name)) this.trackResidual(layer, data, rows, rowLength, firstToken, dtype, fw.index);
    if (this.keepData) this.keep(fw, key, data, n, rows, rowLength, firstToken);
    if (this.capture === null && lc[lb + R_NF_SEQ]! >= 0) this.captureFirstNonFinite(fw, key);
    if (this.onStats) this.onStats(recordToStats(lc, lb, { probe: name, layer, forward: fw.index, segment: null }));
  }

  /** The forward's record for (key, segment), created on first use. */
  private segmentSlot(fw: ForwardState, key: number, sid: number): number {
    const sk = key * SEG_STRIDE + sid;
    let sb = fw.segSlots.get(sk);
    if (sb === undefined) {
      sb = this.store.alloc(true);
      fw.segSlots.set(sk, sb);
      fw.segEntries.push({ key, segment: sid, base: sb });
    }
    return sb;
  }

  /**
   * A call whose rows span several segments: each run of rows of one segment is scanned into the
   * scratch record and merged into its segment's record and into lastCall[key]. The first run is
   * rows [0, r1) of segment `seg`, and row r1 is in segment `next`.
   */
  private scanSegments(
    fw: ForwardState,
    key: number,
    data: Float32Array,
    n: number,
    rows: number,
    rowLength: number,
    headDim: number,
    firstToken: number,
    minNormal: number,
    half: number,
    seq: number,
    dtype: DType,
    seg: string,
    r1: number,
    next: string,
  ): void {
    const segments = this.segments!;
    const sc = this.scratch;
    const lc = this.lastCall;
    const lb = key * RECORD_FIELDS;
    let r0 = 0;
    for (;;) {
      resetRecord(sc, 0);
      scanRange(data, r0 * rowLength, Math.min(n, r1 * rowLength), sc, 0, minNormal, half);
      locate(sc, 0, firstToken, rowLength, headDim);
      sc[R_ROWS] = r1 - r0;
      sc[R_CALLS] = 1;
      sc[R_SEQ] = seq;
      sc[R_NF_SEQ] = nonFiniteOf(sc, 0) > 0 ? seq : -1;
      sc[R_FIRST_TOKEN] = firstToken + r0;
      sc[R_LAST_TOKEN] = firstToken + r1 - 1;
      sc[R_DTYPE] = DTYPE_INDEX[dtype];
      const sb = this.segmentSlot(fw, key, this.segmentId(seg)); // may grow the store: read buf after
      mergeRecord(this.store.buf, sb, sc, 0);
      mergeRecord(lc, lb, sc, 0);
      if (r1 >= rows) return;
      r0 = r1;
      seg = next;
      r1 = r0 + 1;
      while (r1 < rows) {
        next = segments(firstToken + r1);
        if (next !== seg) break;
        r1++;
      }
    }
  }

  private trackResidual(layer: number, data: Float32Array, rows: number, dim: number, firstToken: number, dtype: DType, forward: number): void {
    let res = this.residual;
    if (res === null || res.dim !== dim) {
      // A new width (a different model) starts the per-channel record afresh.
      res = { dim, dtype, layers: new Map() };
      this.residual = res;
    }
    res.dtype = dtype;
    let rl = res.layers.get(layer);
    if (rl === undefined) {
      rl = { layer, absmax: new Float64Array(dim).fill(-1), token: new Float64Array(dim).fill(-1), forward: new Float64Array(dim).fill(-1) };
      res.layers.set(layer, rl);
    }
    const am = rl.absmax;
    const tk = rl.token;
    const fwd = rl.forward;
    for (let row = 0; row < rows; row++) {
      const off = row * dim;
      for (let c = 0; c < dim; c++) {
        const a = Math.abs(data[off + c]!);
        if (a > am[c]!) {
          am[c] = a;
          tk[c] = firstToken + row;
          fwd[c] = forward;
        }
      }
    }
  }

  private keep(fw: ForwardState, key: number, data: Float32Array, n: number, rows: number, rowLength: number, firstToken: number): void {
    if (this.dataTruncated) return;
    const bytes = n * 4;
    if (this.keptBytes + bytes > this.maxDataBytes) {
      this.dataTruncated = true;
      return;
    }
    this.keptBytes += bytes;
    let kept = fw.data.get(key);
    if (kept === undefined) {
      kept = { probe: probeOfKey(key), layer: layerOfKey(key), rowLength, chunks: [] };
      fw.data.set(key, kept);
    }
    kept.chunks.push({ firstToken, rows, values: data.slice(0, n) });
  }

  private captureFirstNonFinite(fw: ForwardState, key: number): void {
    const lc = this.lastCall;
    const probe = probeOfKey(key);
    const layer = layerOfKey(key);
    const call = recordToStats(lc, key * RECORD_FIELDS, { probe, layer, forward: fw.index, segment: null });
    const inputs: ProbeStats[] = [];
    for (const ref of probeInputs(probe, layer, this.maxLayer + 1, this.maxVisionLayer + 1)) {
      const pi = PROBE_INDEX.get(ref.probe)!;
      const k = keyOf(pi, ref.layer);
      if (k < this.called.length && this.called[k] === 1) inputs.push(recordToStats(lc, k * RECORD_FIELDS, { ...ref, forward: fw.index, segment: null }));
    }
    const token = lc[key * RECORD_FIELDS + R_NF_TOKEN]!;
    const segment = fw.segment ?? (this.segments && !isImageProbe(probe) ? this.segments(token) : null);
    this.capture = { forward: fw.index, call, segment, inputs };
  }

  /** Everything recorded so far (a snapshot: later calls do not change it). */
  report(): TraceReport {
    const buf = this.store.buf;
    const forwards: ForwardTrace[] = this.forwards.map((fw) => {
      const probes = fw.keys.map((key) => recordToStats(buf, fw.slots[key]!, { probe: probeOfKey(key), layer: layerOfKey(key), forward: fw.index, segment: null }));
      const segEntries = [...fw.segEntries].sort((a, b) => buf[fw.slots[a.key]! + R_SEQ]! - buf[fw.slots[b.key]! + R_SEQ]! || a.segment - b.segment);
      const segments = segEntries.map((e) => recordToStats(buf, e.base, { probe: probeOfKey(e.key), layer: layerOfKey(e.key), forward: fw.index, segment: this.segmentNames[e.segment]! }));
      return {
        index: fw.index,
        label: fw.label,
        firstToken: fw.firstToken === Infinity ? -1 : fw.firstToken,
        lastToken: fw.lastToken === -Infinity ? -1 : fw.lastToken,
        probes,
        segments,
        data: [...fw.data.values()].map((d) => ({ ...d, chunks: [...d.chunks] })),
      };
    });
    let residual: ResidualChannels | null = null;
    if (this.residual) {
      const layers = [...this.residual.layers.values()]
        .sort((a, b) => a.layer - b.layer)
        .map((l) => ({ layer: l.layer, absmax: l.absmax.map((v) => (v < 0 ? NaN : v)), token: l.token.slice(), forward: l.forward.slice() }));
      residual = { dim: this.residual.dim, dtype: this.residual.dtype, layers };
    }
    return {
      forwards,
      segmentNames: [...this.segmentNames],
      residual,
      firstNonFinite: this.capture,
      keptBytes: this.keptBytes,
      dataTruncated: this.dataTruncated,
    };
  }
}
