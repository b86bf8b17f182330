/**
 * The LLaMA decoder (Touvron et al. 2023; Mistral, Jiang et al. 2023, adds a sliding window),
 * following HF transformers' modeling_llama.py / modeling_mistral.py:
 *
 *   x = embed(tokens)
 *   per layer:  h = x + o_proj(attention(rope(q_proj(n)), rope(k_proj(n)), v_proj(n))),  n = rms_norm(x)
 *               x = h + down(silu(gate(m)) * up(m)),                                      m = rms_norm(h)
 *   logits = output(rms_norm(x))
 *
 * Split by lifetime as llama2.c does: LlamaConfig (hyperparameters), LlamaWeights (read-only) and
 * one RunState (scratch buffers for a pass, reused by every call: forwards are synchronous) belong
 * to the model; a LlamaSession owns one sequence's KV cache. decodeBatch runs one decode step of
 * several sessions as one pass.
 *
 * Numerics: activations and the residual stream are f32, weights any Matrix; every op accumulates
 * in float64 and rounds once to f32 (see the ops). RoPE is the core's fused kernel with exact
 * angles (f64 rotation for f32 storage), on q/k scratch in the wasm heap so the WASM kernel runs.
 * Prefill runs `prefillChunk` tokens per pass; every op treats tokens independently, so chunked
 * prefill, one pass and token-by-token decode give bit-identical logits. (Length-dependent RoPE,
 * dynamic NTK and LongRoPE, takes its frequencies from the length at the end of each forward()
 * call, as HF does per call: decoding past their switch point then differs from one long pass,
 * as it does in HF.)
 */
import type { DType } from '../../core/dtype.js';
import { fail } from '../../core/errors.js';
import { type ActivationRole, activationDtype, parsePolicy, type PrecisionPolicy } from '../../precision/policy.js';
import { Tensor } from '../../core/tensor.js';
import { KvCache, type KvCacheDType } from '../../generate/kv-cache.js';
import { wasmAllocator } from '../../kernels/wasm/allocator.js';
import { embeddingRow } from '../../ops/embedding.js';
import { type KernelChoice, linear, type Matrix } from '../../ops/linear.js';
import { type VectorKernels, vectorKernels } from '../../ops/kernels.js';
import { Rope } from '../../ops/rope/rope.js';
import { checkLlamaConfig, type LlamaConfig } from './config.js';
import { checkLlamaWeights, type LlamaWeights } from './weights.js';

/**
 * The named intermediates, in forward order. Layer ops report their layer; embeddings,
 * final_norm and logits report layer -1. scores and probs are (tokens, heads, positions), with 0
 * at the positions a token does not see.
 */
export const LLAMA_PROBE_NAMES = [
  'embeddings',
  'attn_norm',
  'q',
  'k',
  'v',
  'q_rope',
  'k_rope',
  'scores',
  'probs',
  'attn_out',
  'o_proj',
  'residual_1',
  'mlp_norm',
  'gate',
  'up',
  'act',
  'down',
  'residual_2',
  'final_norm',
  'logits',
] as const;
export type LlamaProbeName = (typeof LLAMA_PROBE_NAMES)[number];

/**
 * Called after each named op of every forward pass (once per prefill chunk). `data` views the
 * model's scratch, row-major in `shape` (first dimension: the chunk's tokens) and is overwritten
 * by the next op: copy what you keep.
 */
export type LlamaProbe = (name: LlamaProbeName, layer: number, data: Float32Array, shape: readonly number[], ctx: ProbeContext) => void;

/** What a probe learns besides the values. */
export interface ProbeContext {
  /** the dtype this activation is stored in under the precision policy (`data` is already rounded to it) */
  dtype: DType;
  /** the sequence position of row 0 of `data` */
  firstToken: number;
  /** values that were finite before rounding to `dtype` and became +-inf by it: a precision overflow */
  overflowed: number;
  /** values the policy's clamp-on-overflow clamped to +-max */
  clamped: number;
  /** the largest finite |x| before rounding to `dtype` (what f32 storage would hold); present when rounding happened */
  f32Absmax?: number;
}

/** The part of the forward each probe belongs to, for the precision policy. */
const PROBE_ROLES: Record<LlamaProbeName, ActivationRole> = {
  embeddings: 'residual',
  attn_norm: 'norm',
  q: 'activation',
  k: 'activation',
  v: 'activation',
  q_rope: 'activation',
  k_rope: 'activation',
  scores: 'activation',
  probs: 'activation',
  attn_out: 'activation',
  o_proj: 'activation',
  residual_1: 'residual',
  mlp_norm: 'norm',
  gate: 'activation',
  up: 'activation',
  act: 'activation',
  down: 'activation',
  residual_2: 'residual',
  final_norm: 'norm',
  logits: 'activation',
};

export interface LlamaModelOptions {
  /** which dtype each activation is stored in (a preset name or a policy); default 'f32' */
  policy?: string | PrecisionPolicy;
  /** KV cache storage; default: the policy's */
  kvCache?: KvCacheDType;
  /** tokens per prefill pass; default 64 */
  prefillChunk?: number;
  /** numerics monitor hook; absent: no probe work at all */
  probe?: LlamaProbe;
  /**
   * RMSNorm, SwiGLU, attention and the policy's rounding: 'wasm' (the SIMD kernels, with scratch
   * and KV cache in the wasm heap) or 'reference' (default: the plain TypeScript ops). The matrix
   * kernels follow the weights: packed ones run in WASM (see packForKernels).
   */
  kernels?: KernelChoice;
}

export interface ForwardOptions {
  /** return the logits of every token (tokens x vocab) instead of the last one's (vocab) */
  allLogits?: boolean;
  /**
   * input embeddings that replace the token embeddings of tokens [at, at + rows) (rows x dim), e.g.
   * LLaVA's projected image features in place of the image placeholder tokens
   */
  embeddings?: ReadonlyArray<{ at: number; data: Float32Array }>;
}

export class LlamaModel {
  readonly config: LlamaConfig;
  readonly weights: LlamaWeights;
  readonly kvCache: KvCacheDType;
  readonly prefillChunk: number;
  readonly probe: LlamaProbe | undefined;
  readonly rope: Rope;
  readonly policy: PrecisionPolicy;
  /** dtypes[layer + 1][probe index]: the storage dtype of each op's output (layer -1 first) */
  readonly dtypes: DType[][];
  readonly kernels: KernelChoice;
  /** the implementations of the vector ops that `kernels` selects */
  readonly ops: VectorKernels;

  constructor(config: LlamaConfig, weights: LlamaWeights, opts: LlamaModelOptions = {}) {
    this.config = checkLlamaConfig(config);
    checkLlamaWeights(config, weights);
    this.weights = weights;
    this.policy = parsePolicy(opts.policy ?? 'f32');
    this.dtypes = Array.from({ length: config.nLayers + 1 }, (_, i) => LLAMA_PROBE_NAMES.map((name) => activationDtype(this.policy, name, i - 1, PROBE_ROLES[name])));
    this.kvCache = opts.kvCache ?? this.policy.kvCache;
    if (this.kvCache !== 'f32' && this.kvCache !== 'f16') fail('usage', `kvCache must be 'f32' or 'f16', got '${String(this.kvCache)}'`);
    this.prefillChunk = opts.prefillChunk ?? 64;
    if (!Number.isInteger(this.prefillChunk) || this.prefillChunk < 1) fail('usage', `prefillChunk must be a positive integer, got ${this.prefillChunk}`);
    this.probe = opts.probe;
    this.kernels = opts.kernels ?? 'reference';
    if (this.kernels !== 'wasm' && this.kernels !== 'reference') fail('usage', `kernels must be 'wasm' or 'reference', got '${String(this.kernels)}'`);
    this.ops = vectorKernels(this.kernels);
    this.rope = new Rope({ scaling: config.rope, pairing: config.ropePairing, positionLimit: config.contextLength });
  }

  /** A new sequence with an empty KV cache. */
  newSession(): LlamaSession {
    return new LlamaSession(this);
  }
}

/** Scratch buffers for a pass of up to `capacity` tokens (llama2.c's RunState). */
class RunState {
  readonly x: Float32Array; // (chunk, dim) the residual stream
  readonly xb: Float32Array; // (chunk, dim) normed input of a block
  readonly q: Tensor; // (chunk, nHeads, headDim) f32, in the wasm heap
  readonly k: Tensor; // (chunk, nKvHeads, headDim) f32, in the wasm heap
  readonly v: Float32Array; // (chunk, nKvHeads * headDim)
  readonly att: Float32Array; // (chunk, nHeads * headDim) attention output
  readonly proj: Float32Array; // (chunk, dim) o_proj and down outputs
  readonly gate: Float32Array; // (chunk, hiddenDim); holds the activation after SwiGLU
  readonly up: Float32Array; // (chunk, hiddenDim)
  readonly positions: Int32Array; // (chunk)
  /** rows (tokens) the buffers hold */
  readonly capacity: number;
  scores = new Float64Array(0); // (positions attended + headDim) attention scratch, grown on demand
  private recorded = { scores: new Float32Array(0), probs: new Float32Array(0) }; // for a probe only

  /** Buffers for the attention scores and probabilities a probe sees, (tokens, heads, positions), grown on demand. */
  attentionRecord(n: number): { scores: Float32Array; probs: Float32Array } {
    if (this.recorded.scores.length < n) this.recorded = { scores: new Float32Array(2 * n), probs: new Float32Array(2 * n) };
    return { scores: this.recorded.scores.subarray(0, n), probs: this.recorded.probs.subarray(0, n) };
  }

  /** `inHeap`: every activation buffer in the wasm heap, where the WASM kernels use it in place */
  constructor(c: LlamaConfig, chunk: number, inHeap: boolean) {
    const f32 = (n: number) => (inHeap ? (wasmAllocator('f32', n) as Float32Array) : new Float32Array(n));
    this.x = f32(chunk * c.dim);
    this.xb = f32(chunk * c.dim);
    this.q = Tensor.empty([chunk, c.nHeads, c.headDim], 'f32', wasmAllocator);
    this.k = Tensor.empty([chunk, c.nKvHeads, c.headDim], 'f32', wasmAllocator);
    this.v = f32(chunk * c.nKvHeads * c.headDim);
    this.att = f32(chunk * c.nHeads * c.headDim);
    this.proj = f32(chunk * c.dim);
    this.gate = f32(chunk * c.hiddenDim);
    this.up = f32(chunk * c.hiddenDim);
    this.positions = new Int32Array(chunk);
    this.capacity = chunk;
  }
}

const PROBE_INDEX = Object.fromEntries(LLAMA_PROBE_NAMES.map((n, i) => [n, i])) as Record<LlamaProbeName, number>;
const NO_ROUNDING = { overflowed: 0, clamped: 0, absmax: 0 };

/**
 * One sequence's rows in a pass: `rows` new tokens appended to `cache` at its current length, in
 * consecutive rows of the scratch. A session's forward is one segment per chunk; a batched decode
 * step is one segment of one row per sequence.
 */
interface Segment {
  cache: KvCache;
  rows: number;
  /** what length-dependent RoPE sees as the sequence length (HF: the length at the end of the call) */
  seqLen: number;
}

/**
 * The model's scratch for a pass of `rows` tokens. Forwards are synchronous, so one per model
 * serves every session and batch; it grows on demand.
 */
const scratchOf = new WeakMap<LlamaModel, RunState>();
function scratch(model: LlamaModel, rows: number): RunState {
  let s = scratchOf.get(model);
  if (!s || s.capacity < rows) {
    s = new RunState(model.config, Math.max(rows, model.prefillChunk), model.kernels === 'wasm');
    scratchOf.set(model, s);
  }
  return s;
}

/**
 * An op has written `data`: round it to the dtype the policy stores this activation in (what an
 * engine holding it in f16 or bf16 would read back, overflow included), then report it to the probe.
 */
function emit(model: LlamaModel, name: LlamaProbeName, layer: number, data: Float32Array, shape: readonly number[], firstToken: number): void {
  const { policy, probe } = model;
  const dtype = model.dtypes[layer + 1]![PROBE_INDEX[name]]!;
  const counts = dtype === 'f32' ? NO_ROUNDING : model.ops.round(data, data.length, dtype, policy.clamp);
  if (!probe) return;
  const ctx: ProbeContext = { dtype, firstToken, overflowed: counts.overflowed, clamped: counts.clamped };
  if (dtype !== 'f32') ctx.f32Absmax = counts.absmax;
  probe(name, layer, data, shape, ctx);
}

/**
 * Runs the m rows of state.x (the input embeddings, already in place) through every layer; rows
 * belong to `segments` in order. Every op but attention treats rows independently, and attention
 * reads each segment's own cache at its own positions (through the fused RoPE's per-token
 * positions), so a row's result does not depend on the rows beside it. A probe sees the pass as
 * one sequence: probes need a single segment.
 */
function runLayers(model: LlamaModel, s: RunState, segments: readonly Segment[], m: number): void {
  const { config: c, weights: w, rope, ops } = model;
  const { rmsNorm, attention, swiglu } = ops;
  const { dim, nHeads, nKvHeads, headDim, hiddenDim, normEps } = c;
  const qDim = nHeads * headDim;
  const kvDim = nKvHeads * headDim;
  const positions = s.positions.subarray(0, m);
  let longest = 0;
  for (let i = 0, r = 0; i < segments.length; r += segments[i]!.rows, i++) {
    const { cache, rows } = segments[i]!;
    for (let j = 0; j < rows; j++) positions[r + j] = cache.length + j;
    longest = Math.max(longest, cache.length + rows);
  }
  const start = segments[0]!.cache.length; // the probes' first token (one segment)
  const q = s.q.narrow(0, 0, m);
  const k = s.k.narrow(0, 0, m);
  const qData = s.q.data as Float32Array;
  const kData = s.k.data as Float32Array;
  if (s.scores.length < longest + headDim) s.scores = new Float64Array(Math.max(2 * s.scores.length, longest + headDim));
  const ropeBySegment = rope.scaling.dependsOnSeqLen && segments.length > 1;
  emit(model, 'embeddings', -1, s.x.subarray(0, m * dim), [m, dim], start);

  for (let l = 0; l < c.nLayers; l++) {
    const lw = w.layers[l]!;
    // Pre-attention RMSNorm.
    rmsNorm(s.xb, s.x, lw.attnNorm, normEps, m, dim);
    emit(model, 'attn_norm', l, s.xb.subarray(0, m * dim), [m, dim], start);
    // q, k, v projections.
    linear(qData, s.xb, m, lw.wq);
    linear(kData, s.xb, m, lw.wk);
    linear(s.v, s.xb, m, lw.wv);
    emit(model, 'q', l, qData.subarray(0, m * qDim), [m, nHeads, headDim], start);
    emit(model, 'k', l, kData.subarray(0, m * kvDim), [m, nKvHeads, headDim], start);
    emit(model, 'v', l, s.v.subarray(0, m * kvDim), [m, nKvHeads, headDim], start);
    // RoPE on q and k, in place, each row at its own position. Length-dependent scaling (dynamic
    // NTK, LongRoPE) takes each sequence's own length.
    if (!ropeBySegment) rope.fused({ q, k, positions, layout: 'thd', seqLen: Math.max(longest, ...segments.map((g) => g.seqLen)) });
    else {
      for (let i = 0, r = 0; i < segments.length; r += segments[i]!.rows, i++) {
        const { rows, seqLen } = segments[i]!;
        rope.fused({ q: q.narrow(0, r, rows), k: k.narrow(0, r, rows), positions: positions.subarray(r, r + rows), layout: 'thd', seqLen });
      }
    }
    emit(model, 'q_rope', l, qData.subarray(0, m * qDim), [m, nHeads, headDim], start);
    emit(model, 'k_rope', l, kData.subarray(0, m * kvDim), [m, nKvHeads, headDim], start);
    // Each segment: append its rotated keys and values to its cache, then causal (GQA, optionally
    // windowed) attention over every cached position; a probe also sees the scores and
    // probabilities, as (tokens, heads, positions).
    for (let i = 0, r = 0; i < segments.length; r += segments[i]!.rows, i++) {
      const { cache, rows } = segments[i]!;
      const at = cache.length;
      cache.write(l, at, rows, kData.subarray(r * kvDim, (r + rows) * kvDim), s.v.subarray(r * kvDim, (r + rows) * kvDim));
      const record = model.probe ? s.attentionRecord(rows * nHeads * (at + rows)) : undefined;
      attention({
        out: s.att.subarray(r * qDim, (r + rows) * qDim),
        q: qData.subarray(r * qDim, (r + rows) * qDim),
        keys: cache.keys(l),
        values: cache.values(l),
        positions: positions.subarray(r, r + rows),
        length: at + rows,
        nHeads,
        nKvHeads,
        headDim,
        ...(c.slidingWindow === undefined ? {} : { window: c.slidingWindow }),
        scratch: s.scores,
        scoresDtype: model.dtypes[l + 1]![PROBE_INDEX.scores]!,
        probsDtype: model.dtypes[l + 1]![PROBE_INDEX.probs]!,
        ...(record ? { record } : {}),
      });
      if (record) {
        emit(model, 'scores', l, record.scores, [rows, nHeads, at + rows], at);
        emit(model, 'probs', l, record.probs, [rows, nHeads, at + rows], at);
      }
    }
    emit(model, 'attn_out', l, s.att.subarray(0, m * qDim), [m, qDim], start);
    // Output projection.
    linear(s.proj, s.att, m, lw.wo);
    emit(model, 'o_proj', l, s.proj.subarray(0, m * dim), [m, dim], start);
    // Residual connection.
    for (let i = 0; i < m * dim; i++) s.x[i] = s.x[i]! + s.proj[i]!;
    emit(model, 'residual_1', l, s.x.subarray(0, m * dim), [m, dim], start);
    // Pre-MLP RMSNorm.
    rmsNorm(s.xb, s.x, lw.mlpNorm, normEps, m, dim);
    emit(model, 'mlp_norm', l, s.xb.subarray(0, m * dim), [m, dim], start);
    // Gate and up projections.
    linear(s.gate, s.xb, m, lw.wGate);
    linear(s.up, s.xb, m, lw.wUp);
    emit(model, 'gate', l, s.gate.subarray(0, m * hiddenDim), [m, hiddenDim], start);
    emit(model, 'up', l, s.up.subarray(0, m * hiddenDim), [m, hiddenDim], start);
    // SwiGLU: silu(gate) * up, into the gate buffer.
    swiglu(s.gate, s.gate, s.up, m * hiddenDim);
    emit(model, 'act', l, s.gate.subarray(0, m * hiddenDim), [m, hiddenDim], start);
    // Down projection.
    linear(s.proj, s.gate, m, lw.wDown);
    emit(model, 'down', l, s.proj.subarray(0, m * dim), [m, dim], start);
    // Residual connection.
    for (let i = 0; i < m * dim; i++) s.x[i] = s.x[i]! + s.proj[i]!;
    emit(model, 'residual_2', l, s.x.subarray(0, m * dim), [m, dim], start);
  }
  for (const { cache, rows } of segments) cache.advance(rows);
}

/**
 * Final RMSNorm and output projection of `rows` rows of the residual stream from row `first`;
 * firstToken is the position of row `first` (for probes).
 */
function head(model: LlamaModel, s: RunState, first: number, rows: number, out: Float32Array, firstToken: number): void {
  const { config: c, weights: w } = model;
  const { dim, vocabSize } = c;
  // Final RMSNorm.
  model.ops.rmsNorm(s.xb, s.x.subarray(first * dim, (first + rows) * dim), w.finalNorm, c.normEps, rows, dim);
  emit(model, 'final_norm', -1, s.xb.subarray(0, rows * dim), [rows, dim], firstToken);
  // Output projection to the vocabulary.
  linear(out, s.xb, rows, w.output);
  emit(model, 'logits', -1, out.subarray(0, rows * vocabSize), [rows, vocabSize], firstToken);
}

function checkSpans(spans: ReadonlyArray<{ at: number; data: Float32Array }>, n: number, dim: number): void {
  for (const { at, data } of spans) {
    const rows = data.length / dim;
    if (!Number.isInteger(rows) || rows < 1 || !Number.isInteger(at) || at < 0 || at + rows > n) {
      fail('shape', `input embeddings of ${data.length} values at token ${at} do not fit ${n} tokens of width ${dim}`);
    }
  }
}

/**
 * Writes the input rows of tokens[from, from + m) into x from row `row`: the token embeddings, or
 * the given input embeddings where a span (relative to tokens[0]) covers the token.
 */
function embedRows(x: Float32Array, row: number, table: Matrix, tokens: readonly number[], from: number, m: number, spans: ReadonlyArray<{ at: number; data: Float32Array }>, dim: number): void {
  for (let i = 0; i < m; i++) {
    const t = from + i;
    const span = spans.find(({ at, data }) => t >= at && t < at + data.length / dim);
    if (span) x.set(span.data.subarray((t - span.at) * dim, (t - span.at + 1) * dim), (row + i) * dim);
    else embeddingRow(x, table, tokens[t]!, (row + i) * dim);
  }
}

function checkTokens(tokens: readonly number[], vocabSize: number): void {
  for (let i = 0; i < tokens.length; i++) {
    const id = tokens[i]!;
    if (!Number.isInteger(id) || id < 0 || id >= vocabSize) fail('usage', `token id ${id} at index ${i} is outside the vocabulary [0, ${vocabSize})`);
  }
}

/** One sequence: its KV cache. Not safe to use from two forwards at once (none are async). */
export class LlamaSession {
  readonly model: LlamaModel;
  /** @internal the KV cache (batched decode writes it) */
  readonly cache: KvCache;

  constructor(model: LlamaModel) {
    const c = model.config;
    this.model = model;
    const storage = model.kernels === 'wasm' ? 'wasm' : 'js';
    this.cache = new KvCache({ nLayers: c.nLayers, nKvHeads: c.nKvHeads, headDim: c.headDim, capacity: c.contextLength, dtype: model.kvCache, storage });
  }

  /** Frees the KV cache now (with the WASM kernels it lives in the wasm heap); the session is unusable afterwards. */
  dispose(): void {
    this.cache.dispose();
  }

  /** Tokens in the cache. */
  get length(): number {
    return this.cache.length;
  }

  /** Rewinds the sequence to its first n tokens (0 <= n <= length). */
  truncate(n: number): void {
    this.cache.truncate(n);
  }

  /**
   * Input embeddings that replace the token embeddings at positions [start, end), as spans relative
   * to start: none here; a LlavaSession places its image features.
   */
  inputEmbeddings(start: number, end: number): Array<{ at: number; data: Float32Array }> {
    void start;
    void end;
    return [];
  }

  /**
   * Appends `tokens` to the sequence and returns the logits of the last one (vocab), or of every
   * one (tokens x vocab, row-major) with allLogits. Validates everything before running anything.
   */
  forward(tokens: readonly number[], opts: ForwardOptions = {}): Float32Array {
    const { vocabSize, dim } = this.model.config;
    const n = tokens.length;
    if (n === 0) fail('usage', 'forward needs at least one token');
    checkTokens(tokens, vocabSize);
    this.cache.checkFits(n);
    const spans = [...(opts.embeddings ?? []), ...this.inputEmbeddings(this.cache.length, this.cache.length + n)];
    checkSpans(spans, n, dim);

    const all = opts.allLogits === true;
    const logits = new Float32Array((all ? n : 1) * vocabSize);
    // Length-dependent RoPE (dynamic NTK, LongRoPE) sees the whole call, as HF's single forward does.
    const seqLen = this.cache.length + n;
    const chunk = this.model.prefillChunk;
    const s = scratch(this.model, chunk);
    const w = this.model.weights;
    for (let from = 0; from < n; from += chunk) {
      const m = Math.min(chunk, n - from);
      embedRows(s.x, 0, w.tokenEmbedding, tokens, from, m, spans, dim);
      runLayers(this.model, s, [{ cache: this.cache, rows: m, seqLen }], m);
      // The cache has advanced past this chunk: its row `first` is at this position.
      const firstToken = this.cache.length - m;
      if (all) head(this.model, s, 0, m, logits.subarray(from * vocabSize, (from + m) * vocabSize), firstToken);
      else if (from + m === n) head(this.model, s, m - 1, 1, logits, firstToken + m - 1);
    }
    return logits;
  }
}

/**
 * One pass over several sequences: entries[i].session appends entries[i].tokens (a decode token, or
 * a chunk of a prompt); returns each one's logits for its last token (vocab). Every matrix product
 * runs once over all rows (the weights are read once per pass, not once per sequence); attention
 * reads each sequence's own cache at its own positions. Since every kernel is batch-invariant,
 * each sequence's logits equal, bit for bit, what its own forward(tokens) gives (the tests check
 * it). Image rows of a LlavaSession go in as they do in its forward. With a probe, the sequences
 * run one after another (a probe follows one sequence).
 */
export function forwardBatch(entries: ReadonlyArray<{ session: LlamaSession; tokens: readonly number[] }>): Float32Array[] {
  if (entries.length === 0) return [];
  const model = entries[0]!.session.model;
  const { dim, vocabSize } = model.config;
  if (new Set(entries.map((e) => e.session)).size !== entries.length) fail('usage', 'forwardBatch: a session appears twice');
  const spans = entries.map(({ session, tokens }) => {
    if (session.model !== model) fail('usage', 'forwardBatch: every session must belong to the same model');
    if (tokens.length === 0) fail('usage', 'forwardBatch: every sequence needs at least one token');
    checkTokens(tokens, vocabSize);
    session.cache.checkFits(tokens.length);
    const own = session.inputEmbeddings(session.length, session.length + tokens.length);
    checkSpans(own, tokens.length, dim);
    return own;
  });
  if (model.probe || entries.length === 1) return entries.map(({ session, tokens }) => session.forward(tokens));

  const m = entries.reduce((n, e) => n + e.tokens.length, 0);
  const s = scratch(model, m);
  let row = 0;
  entries.forEach(({ tokens }, i) => {
    embedRows(s.x, row, model.weights.tokenEmbedding, tokens, 0, tokens.length, spans[i]!, dim);
    row += tokens.length;
  });
  runLayers(model, s, entries.map(({ session, tokens }) => ({ cache: session.cache, rows: tokens.length, seqLen: session.length + tokens.length })), m);
  // The head over each sequence's last row, gathered into one block (proj is free by now).
  row = 0;
  entries.forEach(({ tokens }, i) => {
    row += tokens.length;
    s.proj.set(s.x.subarray((row - 1) * dim, row * dim), i * dim);
  });
  const k = entries.length;
  const logits = new Float32Array(k * vocabSize);
  model.ops.rmsNorm(s.xb, s.proj, model.weights.finalNorm, model.config.normEps, k, dim);
  emit(model, 'final_norm', -1, s.xb.subarray(0, k * dim), [k, dim], 0);
  linear(logits, s.xb, k, model.weights.output);
  emit(model, 'logits', -1, logits, [k, vocabSize], 0);
  return entries.map((_, i) => logits.slice(i * vocabSize, (i + 1) * vocabSize));
}

/** One decode step of several sequences in one pass: sessions[i] appends tokens[i] (see forwardBatch). */
export function decodeBatch(sessions: readonly LlamaSession[], tokens: readonly number[]): Float32Array[] {
  if (sessions.length !== tokens.length) fail('usage', `decodeBatch: ${sessions.length} sessions but ${tokens.length} tokens`);
  return forwardBatch(sessions.map((session, i) => ({ session, tokens: [tokens[i]!] })));
}
