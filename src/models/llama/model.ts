/**
 * The LLaMA decoder (Touvron et al. 2023; Mistral, Jiang et al. 2023, adds a sliding window),
 * following HF transformers' modeling_llama.py / modeling_mistral.py:
 *
 *   x = embed(tokens)
 *   per layer:  h = x + o_proj(attention(rope(q_proj(n)), rope(k_proj(n)), v_proj(n))),  n = rms_norm(x)
 *               x = h + down(silu(gate(m)) * up(m)),                                      m = rms_norm(h)
 *   logits = output(rms_norm(x))
 *
 * Split by lifetime as llama2.c does: LlamaConfig (hyperparameters) and LlamaWeights (read-only)
 * belong to the model; a LlamaSession owns one sequence's KV cache and its RunState (scratch
 * buffers sized for one prefill chunk, allocated once and reused by every call).
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
import { type DType, roundF32ArrayInPlace } from '../../core/dtype.js';
import { fail } from '../../core/errors.js';
import { type ActivationRole, activationDtype, parsePolicy, type PrecisionPolicy } from '../../precision/policy.js';
import { Tensor } from '../../core/tensor.js';
import { KvCache, type KvCacheDType } from '../../generate/kv-cache.js';
import { wasmAllocator } from '../../kernels/wasm/allocator.js';
import { attention } from '../../ops/attention.js';
import { embeddingRow } from '../../ops/embedding.js';
import { linear } from '../../ops/linear.js';
import { rmsNorm } from '../../ops/rmsnorm.js';
import { Rope } from '../../ops/rope/rope.js';
import { swiglu } from '../../ops/swiglu.js';
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
    this.rope = new Rope({ scaling: config.rope, pairing: config.ropePairing, positionLimit: config.contextLength });
  }

  /** A new sequence with an empty KV cache. */
  newSession(): LlamaSession {
    return new LlamaSession(this);
  }
}

/** Scratch buffers for one chunk of `chunk` tokens (llama2.c's RunState). */
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
  scores = new Float64Array(0); // (positions attended + headDim) attention scratch, grown on demand
  private recorded = { scores: new Float32Array(0), probs: new Float32Array(0) }; // for a probe only

  /** Buffers for the attention scores and probabilities a probe sees, (tokens, heads, positions), grown on demand. */
  attentionRecord(n: number): { scores: Float32Array; probs: Float32Array } {
    if (this.recorded.scores.length < n) this.recorded = { scores: new Float32Array(2 * n), probs: new Float32Array(2 * n) };
    return { scores: this.recorded.scores.subarray(0, n), probs: this.recorded.probs.subarray(0, n) };
  }

  constructor(c: LlamaConfig, chunk: number) {
    this.x = new Float32Array(chunk * c.dim);
    this.xb = new Float32Array(chunk * c.dim);
    this.q = Tensor.empty([chunk, c.nHeads, c.headDim], 'f32', wasmAllocator);
    this.k = Tensor.empty([chunk, c.nKvHeads, c.headDim], 'f32', wasmAllocator);
    this.v = new Float32Array(chunk * c.nKvHeads * c.headDim);
    this.att = new Float32Array(chunk * c.nHeads * c.headDim);
    this.proj = new Float32Array(chunk * c.dim);
    this.gate = new Float32Array(chunk * c.hiddenDim);
    this.up = new Float32Array(chunk * c.hiddenDim);
    this.positions = new Int32Array(chunk);
  }
}

const PROBE_INDEX = Object.fromEntries(LLAMA_PROBE_NAMES.map((n, i) => [n, i])) as Record<LlamaProbeName, number>;
const NO_ROUNDING = { overflowed: 0, clamped: 0, absmax: 0 };

/** One sequence: its KV cache and scratch. Not safe to use from two forwards at once (none are async). */
export class LlamaSession {
  readonly model: LlamaModel;
  private readonly cache: KvCache;
  private readonly state: RunState;

  constructor(model: LlamaModel) {
    const c = model.config;
    this.model = model;
    this.cache = new KvCache({ nLayers: c.nLayers, nKvHeads: c.nKvHeads, headDim: c.headDim, capacity: c.contextLength, dtype: model.kvCache });
    this.state = new RunState(c, model.prefillChunk);
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
   * An op has written `data`: round it to the dtype the policy stores this activation in (what an
   * engine holding it in f16 or bf16 would read back, overflow included), then report it to the probe.
   */
  private emit(name: LlamaProbeName, layer: number, data: Float32Array, shape: readonly number[], firstToken: number): void {
    const { policy, probe } = this.model;
    const dtype = this.model.dtypes[layer + 1]![PROBE_INDEX[name]]!;
    const counts = dtype === 'f32' ? NO_ROUNDING : roundF32ArrayInPlace(data, data.length, dtype, policy.clamp);
    if (!probe) return;
    const ctx: ProbeContext = { dtype, firstToken, overflowed: counts.overflowed, clamped: counts.clamped };
    if (dtype !== 'f32') ctx.f32Absmax = counts.absmax;
    probe(name, layer, data, shape, ctx);
  }

  /**
   * Appends `tokens` to the sequence and returns the logits of the last one (vocab), or of every
   * one (tokens x vocab, row-major) with allLogits. Validates everything before running anything.
   */
  forward(tokens: readonly number[], opts: ForwardOptions = {}): Float32Array {
    const { vocabSize } = this.model.config;
    const n = tokens.length;
    if (n === 0) fail('usage', 'forward needs at least one token');
    for (let i = 0; i < n; i++) {
      const id = tokens[i]!;
      if (!Number.isInteger(id) || id < 0 || id >= vocabSize) fail('usage', `token id ${id} at index ${i} is outside the vocabulary [0, ${vocabSize})`);
    }
    this.cache.checkFits(n);
    const dim = this.model.config.dim;
    const spans = opts.embeddings ?? [];
    for (const { at, data } of spans) {
      const rows = data.length / dim;
      if (!Number.isInteger(rows) || rows < 1 || !Number.isInteger(at) || at < 0 || at + rows > n) {
        fail('shape', `input embeddings of ${data.length} values at token ${at} do not fit ${n} tokens of width ${dim}`);
      }
    }

    const all = opts.allLogits === true;
    const logits = new Float32Array((all ? n : 1) * vocabSize);
    // Length-dependent RoPE (dynamic NTK, LongRoPE) sees the whole call, as HF's single forward does.
    const seqLen = this.cache.length + n;
    const chunk = this.model.prefillChunk;
    for (let from = 0; from < n; from += chunk) {
      const m = Math.min(chunk, n - from);
      this.forwardChunk(tokens, from, m, seqLen, spans);
      if (all) this.head(m, 0, m, logits.subarray(from * vocabSize, (from + m) * vocabSize));
      else if (from + m === n) this.head(m, m - 1, 1, logits);
    }
    return logits;
  }

  /** Runs tokens[from, from + m) through every layer, leaving the residual stream in state.x. */
  private forwardChunk(tokens: readonly number[], from: number, m: number, seqLen: number, spans: NonNullable<ForwardOptions['embeddings']>): void {
    const { config: c, weights: w, rope } = this.model;
    const { dim, nHeads, nKvHeads, headDim, hiddenDim, normEps } = c;
    const s = this.state;
    const cache = this.cache;
    const start = cache.length;
    const qDim = nHeads * headDim;
    const kvDim = nKvHeads * headDim;
    const positions = s.positions.subarray(0, m);
    for (let i = 0; i < m; i++) positions[i] = start + i;
    const q = s.q.narrow(0, 0, m);
    const k = s.k.narrow(0, 0, m);
    const qData = s.q.data as Float32Array;
    const kData = s.k.data as Float32Array;
    if (s.scores.length < start + m + headDim) s.scores = new Float64Array(Math.max(2 * s.scores.length, start + m + headDim));

    // Token embeddings, or the given input embeddings where a span covers the token.
    for (let i = 0; i < m; i++) {
      const t = from + i;
      const span = spans.find(({ at, data }) => t >= at && t < at + data.length / dim);
      if (span) s.x.set(span.data.subarray((t - span.at) * dim, (t - span.at + 1) * dim), i * dim);
      else embeddingRow(s.x, w.tokenEmbedding, tokens[t]!, i * dim);
    }
    this.emit('embeddings', -1, s.x.subarray(0, m * dim), [m, dim], start);

    for (let l = 0; l < c.nLayers; l++) {
      const lw = w.layers[l]!;
      // Pre-attention RMSNorm.
      rmsNorm(s.xb, s.x, lw.attnNorm, normEps, m, dim);
      this.emit('attn_norm', l, s.xb.subarray(0, m * dim), [m, dim], start);
      // q, k, v projections.
      linear(qData, s.xb, m, lw.wq);
      linear(kData, s.xb, m, lw.wk);
      linear(s.v, s.xb, m, lw.wv);
      this.emit('q', l, qData.subarray(0, m * qDim), [m, nHeads, headDim], start);
      this.emit('k', l, kData.subarray(0, m * kvDim), [m, nKvHeads, headDim], start);
      this.emit('v', l, s.v.subarray(0, m * kvDim), [m, nKvHeads, headDim], start);
      // RoPE on q and k, in place, at positions start .. start + m - 1.
      rope.fused({ q, k, positions, layout: 'thd', seqLen });
      this.emit('q_rope', l, qData.subarray(0, m * qDim), [m, nHeads, headDim], start);
      this.emit('k_rope', l, kData.subarray(0, m * kvDim), [m, nKvHeads, headDim], start);
      // Append the rotated keys and the values to the cache.
      cache.write(l, start, m, kData, s.v);
      // Causal (GQA, optionally windowed) attention over every cached position; a probe also sees
      // the scores and probabilities, as (tokens, heads, positions).
      const record = this.model.probe ? s.attentionRecord(m * nHeads * (start + m)) : undefined;
      attention({
        out: s.att,
        q: qData,
        keys: cache.keys(l),
        values: cache.values(l),
        positions,
        length: start + m,
        nHeads,
        nKvHeads,
        headDim,
        ...(c.slidingWindow === undefined ? {} : { window: c.slidingWindow }),
        scratch: s.scores,
        scoresDtype: this.model.dtypes[l + 1]![PROBE_INDEX.scores]!,
        probsDtype: this.model.dtypes[l + 1]![PROBE_INDEX.probs]!,
        ...(record ? { record } : {}),
      });
      if (record) {
        this.emit('scores', l, record.scores, [m, nHeads, start + m], start);
        this.emit('probs', l, record.probs, [m, nHeads, start + m], start);
      }
      this.emit('attn_out', l, s.att.subarray(0, m * qDim), [m, qDim], start);
      // Output projection.
      linear(s.proj, s.att, m, lw.wo);
      this.emit('o_proj', l, s.proj.subarray(0, m * dim), [m, dim], start);
      // Residual connection.
      for (let i = 0; i < m * dim; i++) s.x[i] = s.x[i]! + s.proj[i]!;
      this.emit('residual_1', l, s.x.subarray(0, m * dim), [m, dim], start);
      // Pre-MLP RMSNorm.
      rmsNorm(s.xb, s.x, lw.mlpNorm, normEps, m, dim);
      this.emit('mlp_norm', l, s.xb.subarray(0, m * dim), [m, dim], start);
      // Gate and up projections.
      linear(s.gate, s.xb, m, lw.wGate);
      linear(s.up, s.xb, m, lw.wUp);
      this.emit('gate', l, s.gate.subarray(0, m * hiddenDim), [m, hiddenDim], start);
      this.emit('up', l, s.up.subarray(0, m * hiddenDim), [m, hiddenDim], start);
      // SwiGLU: silu(gate) * up, into the gate buffer.
      swiglu(s.gate, s.gate, s.up, m * hiddenDim);
      this.emit('act', l, s.gate.subarray(0, m * hiddenDim), [m, hiddenDim], start);
      // Down projection.
      linear(s.proj, s.gate, m, lw.wDown);
      this.emit('down', l, s.proj.subarray(0, m * dim), [m, dim], start);
      // Residual connection.
      for (let i = 0; i < m * dim; i++) s.x[i] = s.x[i]! + s.proj[i]!;
      this.emit('residual_2', l, s.x.subarray(0, m * dim), [m, dim], start);
    }
    cache.advance(m);
  }

  /** Final RMSNorm and output projection of `rows` rows of the chunk's residual stream, from row `first`. */
  private head(m: number, first: number, rows: number, out: Float32Array): void {
    const { config: c, weights: w } = this.model;
    const { dim, vocabSize } = c;
    const s = this.state;
    // The cache has advanced past this chunk: its row `first` is at this position.
    const firstToken = this.cache.length - m + first;
    if (first + rows > m) fail('shape', `head: rows [${first}, ${first + rows}) outside the ${m}-token chunk`);
    // Final RMSNorm.
    rmsNorm(s.xb, s.x.subarray(first * dim, (first + rows) * dim), w.finalNorm, c.normEps, rows, dim);
    this.emit('final_norm', -1, s.xb.subarray(0, rows * dim), [rows, dim], firstToken);
    // Output projection to the vocabulary.
    linear(out, s.xb, rows, w.output);
    this.emit('logits', -1, out.subarray(0, rows * vocabSize), [rows, vocabSize], firstToken);
  }
}
