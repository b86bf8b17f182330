/**
 * loadModel: a LLaMA-family model with its tokenizer and chat template, from an HF checkpoint
 * directory, a GGUF file, or an HF Hub id (`org/name[@revision]`, downloaded into the HF cache).
 */
import { existsSync, readFileSync, statSync } from 'node:fs';
import type { DType } from '../core/dtype.js';
import { fail } from '../core/errors.js';
import { Tensor } from '../core/tensor.js';
import { type HfCheckpoint, openHfCheckpoint } from '../formats/checkpoint.js';
import { type GgufFile, type GgufTensorInfo, readGguf } from '../formats/gguf/reader.js';
import { snapshotDownload, type HubOptions } from '../formats/hub.js';
import { loadTensor } from '../formats/safetensors.js';
import { generateTokens, type GenerateOptions, type GenerateResult, type GeneratedToken, type NumericsGuard } from '../generate/generate.js';
import { analyze, type Analyses, firstBadOp, NumericsMonitor, type TraceReport } from '../monitor/index.js';
import { type ChatMessage, chatTemplateFrom, renderChat } from '../text/chat.js';
import { ggufTokenizer, ggufTokenizerMetaFromKv } from '../text/gguf-tokenizer.js';
import { loadHfTokenizer, type Tokenizer } from '../text/tokenizer.js';
import { llamaConfigFromHf, type LlamaConfig } from './llama/config.js';
import { ggufMatrix, llamaConfigFromGguf, llamaWeightsFromGguf } from './llama/gguf.js';
import { LlamaModel, type LlamaModelOptions, type LlamaSession } from './llama/model.js';
import type { LlamaLayerWeights, LlamaWeights, Matrix, QuantizedMatrix } from './llama/weights.js';
import { PackStaging } from '../kernels/wasm/packed.js';
import { type KernelChoice, packForKernels } from '../ops/linear.js';
import { defaultPolicy, parsePolicy, type PrecisionPolicy } from '../precision/policy.js';

export interface LoadOptions extends Pick<LlamaModelOptions, 'kvCache' | 'prefillChunk' | 'probe'> {
  /**
   * the precision policy (a preset name such as 'safe-f16', optionally with overrides, or a policy);
   * default: safe-f16 for f16 weights, f32 otherwise
   */
  policy?: string | PrecisionPolicy;
  /** storage dtype of the float weight matrices (default: the policy's, else as stored); quantized GGUF tensors keep their types */
  dtype?: DType;
  /** options for Hub ids */
  hub?: HubOptions;
  /** matrix kernels: 'wasm' (default; weights repacked into the wasm heap, SIMD on worker threads) or 'reference' (plain TypeScript) */
  kernels?: KernelChoice;
  /**
   * LLaVA from GGUF: the mmproj GGUF to pair with a text GGUF; default: an `mmproj*.gguf` beside it
   * (see llava/load.ts); false: load the text model alone
   */
  mmproj?: string | false;
}

export interface ModelInfo {
  source: 'hf' | 'gguf';
  path: string;
  architecture: string;
  parameters: number;
  /** storage types of the weight matrices, with how many matrices use each */
  weightTypes: Record<string, number>;
  contextLength: number;
  config: LlamaConfig;
  tokenizer: { vocabSize: number; bosId: number | undefined; eosIds: readonly number[] };
  chatTemplate: boolean;
  /** the precision policy's name */
  policy: string;
}

export type Prompt = string | readonly number[] | { messages: ChatMessage[] };

/** A loaded text model: tokenizer + chat template + LLaMA forward. */
export class TextModel {
  constructor(
    readonly model: LlamaModel,
    readonly tokenizer: Tokenizer,
    readonly chatTemplate: string | undefined,
    readonly info: ModelInfo,
  ) {}

  get config(): LlamaConfig {
    return this.model.config;
  }

  /**
   * Token ids for a prompt: text gets BOS as the tokenizer config says; ids are used as given (no
   * BOS); messages are rendered through the chat template (whose text carries its own BOS, if any).
   */
  promptIds(prompt: Prompt): number[] {
    if (typeof prompt === 'string') return this.tokenizer.encode(prompt);
    if (Array.isArray(prompt)) return [...(prompt as readonly number[])];
    const { messages } = prompt as { messages: ChatMessage[] };
    if (!this.chatTemplate) fail('config', 'this model has no chat template (tokenizer_config.json chat_template or GGUF tokenizer.chat_template)');
    const bos = this.tokenizer.bosId === undefined ? undefined : this.tokenizer.tokenText(this.tokenizer.bosId);
    const eos = this.tokenizer.eosIds[0] === undefined ? undefined : this.tokenizer.tokenText(this.tokenizer.eosIds[0]);
    const text = renderChat(this.chatTemplate, messages, { ...(bos ? { bosToken: bos } : {}), ...(eos ? { eosToken: eos } : {}), addGenerationPrompt: true });
    return this.tokenizer.encode(text, { addSpecial: bos === undefined || !text.startsWith(bos) });
  }

  /** Streams generated tokens; the iterator's return value is the final result. */
  async *generate(prompt: Prompt, opts: GenerateOptions = {}): AsyncGenerator<GeneratedToken, GenerateResult> {
    const session = this.model.newSession();
    try {
      return yield* generateTokens(session, this.tokenizer, this.promptIds(prompt), opts, this.numericsGuard());
    } finally {
      session.dispose();
    }
  }

  /** The same weights under another policy and/or with a probe (no weights are copied). */
  withOptions(opts: LlamaModelOptions): LlamaModel {
    const m = this.model;
    return new LlamaModel(m.config, m.weights, { policy: m.policy, kvCache: m.kvCache, prefillChunk: m.prefillChunk, kernels: m.kernels, ...opts });
  }

  /** How generation explains and recovers from non-finite logits (text only; see LlavaModel.imageGuard). */
  numericsGuard(): NumericsGuard {
    return {
      diagnose: (ids) => {
        const monitor = new NumericsMonitor({});
        monitor.beginForward('diagnose');
        this.withOptions({ probe: monitor.probe }).newSession().forward(ids);
        return firstBadOp(monitor.report())?.message ?? 'non-finite logits';
      },
      upcast: (ids) => {
        const session = this.withOptions({ policy: 'f32', kvCache: 'f32' }).newSession();
        return { session, logits: session.forward(ids) };
      },
    };
  }

  /**
   * Runs the prompt and up to `maxTokens` greedy steps with the numerics monitor on every op, and
   * optionally the same tokens under the f32 policy as a shadow; returns the report and its analyses.
   */
  trace(prompt: Prompt, opts: TraceOptions = {}): TraceResult {
    const ids = this.promptIds(prompt);
    const maxTokens = opts.maxTokens ?? 8;
    const segments = opts.segments ?? ((p: number) => (p < ids.length ? 'text' : 'generated'));
    const run = (model: LlamaModel, monitor: NumericsMonitor, tokens: number[] | null) => tracedGreedy(model.newSession(), ids, monitor, tokens ?? maxTokens);
    const monitor = new NumericsMonitor({ segments, residualChannels: true, keepData: opts.shadow !== undefined });
    const tokens = run(this.withOptions({ probe: monitor.probe }), monitor, null);
    const report = monitor.report();
    let shadow: TraceReport | undefined;
    if (opts.shadow) {
      const shadowMonitor = new NumericsMonitor({ segments, residualChannels: true, keepData: true });
      run(this.withOptions({ probe: shadowMonitor.probe, policy: opts.shadow, kvCache: 'f32' }), shadowMonitor, tokens);
      shadow = shadowMonitor.report();
    }
    const analyses = analyze(report, shadow ? { shadow } : {});
    return { tokens, report, analyses, ...(shadow ? { shadow } : {}) };
  }

  /** Logits of every position of `ids` (ids.length x vocab), from a fresh session. */
  logits(ids: readonly number[]): Float32Array {
    return this.model.newSession().forward(ids, { allLogits: true });
  }
}

export interface TraceOptions {
  /** greedy steps after the prompt (default 8) */
  maxTokens?: number;
  /** a shadow run of the same tokens under this policy, compared probe by probe */
  shadow?: 'f32';
  /** the segment of each position (default: 'text' for the prompt, 'generated' after it) */
  segments?: (position: number) => string;
}

export interface TraceResult {
  /** the greedy tokens the traced run produced */
  tokens: number[];
  report: TraceReport;
  analyses: Analyses;
  shadow?: TraceReport;
}

/**
 * The traced run of a prompt: the prefill, then greedy steps, each forward announced to the monitor.
 * `steps` is a step count (the main run, which stops at the first non-finite step: what follows
 * would only propagate it) or the main run's tokens to replay (a shadow run). Returns the tokens.
 */
export function tracedGreedy(session: LlamaSession, ids: readonly number[], monitor: NumericsMonitor, steps: number | readonly number[]): number[] {
  const replay = typeof steps === 'number' ? null : steps;
  const count = replay ? replay.length : (steps as number);
  monitor.beginForward('prefill');
  let logits = session.forward(ids);
  const generated: number[] = [];
  for (let step = 0; step < count; step++) {
    if (!replay && !logits.every(Number.isFinite)) break;
    const next = replay ? replay[step]! : argmax(logits);
    generated.push(next);
    if (step + 1 === count) break;
    monitor.beginForward(`decode ${step}`);
    logits = session.forward([next]);
  }
  return generated;
}

export function argmax(v: Float32Array): number {
  let best = 0;
  for (let i = 1; i < v.length; i++) if (v[i]! > v[best]!) best = i;
  return best;
}

function countParameters(w: LlamaWeights): { parameters: number; weightTypes: Record<string, number> } {
  let parameters = 0;
  const weightTypes: Record<string, number> = {};
  const seen = new Set<unknown>();
  const matrix = (m: Matrix) => {
    if (seen.has(m)) return;
    seen.add(m);
    const type = m instanceof Tensor ? m.dtype : m.type;
    weightTypes[type] = (weightTypes[type] ?? 0) + 1;
    parameters += m instanceof Tensor ? m.numel : m.rows * m.cols;
  };
  matrix(w.tokenEmbedding);
  for (const l of w.layers) {
    for (const m of [l.wq, l.wk, l.wv, l.wo, l.wGate, l.wUp, l.wDown]) matrix(m);
    parameters += l.attnNorm.length + l.mlpNorm.length;
  }
  parameters += w.finalNorm.length;
  matrix(w.output);
  return { parameters, weightTypes };
}

/** The weight dtype asked for: --dtype, else the policy's. */
export function weightDtype(opts: LoadOptions): DType | undefined {
  return opts.dtype ?? (opts.policy === undefined ? undefined : parsePolicy(opts.policy).weights);
}

/**
 * Makes each weight matrix final as soon as it is read, so that a load never holds the whole
 * loaded model beside its packed copy. For the wasm kernels a matrix is read into one reusable
 * heap staging region (PackStaging) and packed from there: the peak is the packed weights plus the
 * largest matrix. For the reference kernels it is read into its own JS storage and kept (converted
 * to `dtype` when asked, one matrix at a time).
 */
export class MatrixFinisher {
  private readonly staging: PackStaging | undefined;

  constructor(
    readonly kernels: KernelChoice,
    readonly dtype: DType | undefined,
    /** bytes of the largest matrix as read (the staging region is reserved once, below the packed copies) */
    largestBytes: number,
  ) {
    if (kernels !== 'reference') {
      this.staging = new PackStaging();
      this.staging.reserve(largestBytes);
    }
  }

  /**
   * The final form of one matrix. `read(staging)` loads it: into the staging region when one is
   * given (its bytes are only valid until the next read), else into storage of its own.
   */
  matrix(read: (staging: PackStaging | undefined) => Tensor | QuantizedMatrix): Matrix {
    const staging = this.staging;
    let m = read(staging);
    if (this.dtype && m instanceof Tensor && m.dtype !== this.dtype) m = m.to(this.dtype);
    if (!staging) return m;
    const packed = packForKernels(m, this.kernels);
    if (packed !== m) return packed;
    // No SIMD kernel for this type: keep a copy of its own, off the staging region.
    if (m instanceof Tensor) return staging.holds(m.data) ? new Tensor(m.dtype, m.data.slice(), m.shape) : m;
    return staging.holds(m.data) ? { ...m, data: m.data.slice() } : m;
  }

  /** A matrix kept as loaded in storage of its own (the token embedding, for the lookup). */
  loaded(read: (staging: PackStaging | undefined) => Tensor | QuantizedMatrix): Tensor | QuantizedMatrix {
    const m = read(undefined);
    return this.dtype && m instanceof Tensor && m.dtype !== this.dtype ? m.to(this.dtype) : m;
  }

  /** Gives the staging region back to the heap (later allocations reuse it). */
  done(): void {
    this.staging?.release();
  }
}

/**
 * A LLaMA's weights from an HF checkpoint: `model` names the decoder's prefix ('model.' for
 * LlamaForCausalLM, 'language_model.model.' or 'model.language_model.' inside LLaVA) and `head` the
 * output projection. Matrices are converted to `dtype` while read, chunk by chunk: never two full
 * copies. With `finisher`, each matrix is also packed for its kernels as it is read (the token
 * embedding stays as loaded for the lookup; a tied output is its packed copy).
 */
export function hfLlamaWeights(ckpt: HfCheckpoint, config: LlamaConfig, names: { model: string; head: string }, dtype: DType | undefined, finisher?: MatrixFinisher): LlamaWeights {
  const get = (name: string) => ckpt.tensors.get(name) ?? fail('config', `checkpoint ${ckpt.dir} is missing tensor ${name}`);
  const read = (name: string) => (staging: PackStaging | undefined) => loadTensor(get(name), { ...(dtype ? { dtype } : {}), ...(staging ? { alloc: staging.allocator } : {}) });
  const matrix = (name: string): Matrix => (finisher ? finisher.matrix(read(name)) : read(name)(undefined));
  const vector = (name: string) => Float32Array.from(loadTensor(get(name)).toFloat64Array());
  const layers: LlamaLayerWeights[] = [];
  for (let l = 0; l < config.nLayers; l++) {
    const p = `${names.model}layers.${l}.`;
    layers.push({
      attnNorm: vector(`${p}input_layernorm.weight`),
      wq: matrix(`${p}self_attn.q_proj.weight`),
      wk: matrix(`${p}self_attn.k_proj.weight`),
      wv: matrix(`${p}self_attn.v_proj.weight`),
      wo: matrix(`${p}self_attn.o_proj.weight`),
      mlpNorm: vector(`${p}post_attention_layernorm.weight`),
      wGate: matrix(`${p}mlp.gate_proj.weight`),
      wUp: matrix(`${p}mlp.up_proj.weight`),
      wDown: matrix(`${p}mlp.down_proj.weight`),
    });
  }
  const embedName = `${names.model}embed_tokens.weight`;
  const tokenEmbedding = finisher ? finisher.loaded(read(embedName)) : matrix(embedName);
  // Tied checkpoints often omit the head; some keep a copy.
  const tied = hfTied(ckpt, config, names.head);
  // A tied output packed for the kernels is read a second time, into the staging region.
  const output = tied ? (finisher && finisher.kernels !== 'reference' ? finisher.matrix(read(embedName)) : tokenEmbedding) : matrix(names.head);
  return { tokenEmbedding, layers, finalNorm: vector(`${names.model}norm.weight`), output };
}

/** Whether the output projection is the token embedding (as hfLlamaWeights decides it). */
export function hfTied(ckpt: HfCheckpoint, config: LlamaConfig, head: string): boolean {
  return config.tiedEmbeddings || !ckpt.tensors.has(head);
}

/** Bytes of the largest tensor of a checkpoint once read as `dtype` (its own dtype when undefined). */
export function largestHfTensorBytes(ckpt: HfCheckpoint, dtype: DType | undefined): number {
  let most = 0;
  for (const t of ckpt.tensors.values()) {
    const count = t.shape.reduce((a, b) => a * b, 1);
    const elemBytes = dtype ? (dtype === 'f32' ? 4 : 2) : t.byteLength / Math.max(count, 1);
    most = Math.max(most, count * elemBytes);
  }
  return most;
}

function loadHf(dir: string, opts: LoadOptions): TextModel {
  const ckpt = openHfCheckpoint(dir);
  const config = llamaConfigFromHf(ckpt.config);
  const dtype = weightDtype(opts);
  const finisher = new MatrixFinisher(opts.kernels ?? 'wasm', dtype, largestHfTensorBytes(ckpt, dtype));
  let weights: LlamaWeights;
  try {
    weights = hfLlamaWeights(ckpt, config, { model: 'model.', head: 'lm_head.weight' }, dtype, finisher);
  } finally {
    finisher.done();
  }
  if (!ckpt.tokenizerJson) fail('config', `checkpoint ${dir} has no tokenizer.json`);
  const tokenizer = loadHfTokenizer(ckpt.tokenizerJson, ckpt.tokenizerConfig, ckpt.generationConfig);
  const template = ckpt.chatTemplate ? readFileSync(ckpt.chatTemplate, 'utf8') : chatTemplateFrom(ckpt.tokenizerConfig);
  return assemble('hf', dir, { ...config, tiedEmbeddings: hfTied(ckpt, config, 'lm_head.weight') }, weights, tokenizer, template, opts);
}

/**
 * All weights of a GGUF llama, each matrix made final by `finisher` as it is read (see
 * MatrixFinisher): read into the staging region and packed at once.
 */
export function ggufLlamaWeights(file: GgufFile, config: LlamaConfig, finisher: MatrixFinisher): LlamaWeights {
  const read = (info: GgufTensorInfo, rows: number, cols: number) => (staging: PackStaging | undefined) => ggufMatrix(file, info, rows, cols, staging?.bytes(info.byteLength));
  return llamaWeightsFromGguf(file, config, {
    matrix: (info, rows, cols) => finisher.matrix(read(info, rows, cols)),
    embedding: (info, rows, cols) => finisher.loaded(read(info, rows, cols)),
    // A tied output packed for the kernels is read a second time, into the staging region.
    tiedOutput: (embedding, info, rows, cols) => (finisher.kernels === 'reference' ? embedding : finisher.matrix(read(info, rows, cols))),
  });
}

function loadGguf(path: string, opts: LoadOptions): TextModel {
  const file = readGguf(path);
  const config = llamaConfigFromGguf(file);
  const dtype = weightDtype(opts);
  const largest = file.tensors.reduce((most, t) => Math.max(most, t.byteLength), 0);
  const finisher = new MatrixFinisher(opts.kernels ?? 'wasm', dtype, largest);
  let weights: LlamaWeights;
  try {
    weights = ggufLlamaWeights(file, config, finisher);
  } finally {
    finisher.done();
  }
  const kv = Object.fromEntries(file.metadata);
  const tokenizer = ggufTokenizer(ggufTokenizerMetaFromKv(kv));
  const template = chatTemplateFrom(undefined, typeof kv['tokenizer.chat_template'] === 'string' ? kv['tokenizer.chat_template'] : undefined);
  return assemble('gguf', path, config, weights, tokenizer, template, opts);
}

/**
 * The matrices in the form the chosen kernels read. Each packed copy replaces the loaded matrix;
 * the token embedding stays as loaded for the lookup (a tied output gets its own packed copy).
 */
function packWeights(w: LlamaWeights, kernels: KernelChoice): LlamaWeights {
  if (kernels === 'reference') return w;
  const pack = (m: Matrix) => packForKernels(m, kernels);
  return {
    tokenEmbedding: w.tokenEmbedding,
    layers: w.layers.map((l) => ({ ...l, wq: pack(l.wq), wk: pack(l.wk), wv: pack(l.wv), wo: pack(l.wo), wGate: pack(l.wGate), wUp: pack(l.wUp), wDown: pack(l.wDown) })),
    finalNorm: w.finalNorm,
    output: pack(w.output),
  };
}

/** Float matrices converted to `dtype` (quantized ones stay); each replaces the loaded one. */
export function convertFloatWeights(w: LlamaWeights, dtype: DType | undefined): LlamaWeights {
  if (!dtype) return w;
  const to = (m: Matrix): Matrix => (m instanceof Tensor ? m.to(dtype) : m);
  const tokenEmbedding = to(w.tokenEmbedding);
  return {
    tokenEmbedding,
    layers: w.layers.map((l) => ({ ...l, wq: to(l.wq), wk: to(l.wk), wv: to(l.wv), wo: to(l.wo), wGate: to(l.wGate), wUp: to(l.wUp), wDown: to(l.wDown) })),
    finalNorm: w.finalNorm,
    output: w.output === w.tokenEmbedding ? tokenEmbedding : to(w.output),
  };
}

export function assemble(
  source: 'hf' | 'gguf',
  path: string,
  config: LlamaConfig,
  weights: LlamaWeights,
  tokenizer: Tokenizer,
  template: string | undefined,
  opts: LoadOptions,
): TextModel {
  if (tokenizer.vocabSize > config.vocabSize) fail('config', `the tokenizer has ${tokenizer.vocabSize} tokens but the model only ${config.vocabSize}`);
  const counted = countParameters(weights);
  weights = packWeights(weights, opts.kernels ?? 'wasm');
  // f16 weights default to safe-f16: half-precision activations where they are safe.
  const dominant = Object.entries(counted.weightTypes).sort((a, b) => b[1] - a[1])[0]?.[0];
  const policy = opts.policy === undefined ? defaultPolicy(dominant) : parsePolicy(opts.policy);
  const modelOpts: LlamaModelOptions = {
    policy,
    kernels: opts.kernels ?? 'wasm',
    ...(opts.kvCache ? { kvCache: opts.kvCache } : {}),
    ...(opts.prefillChunk ? { prefillChunk: opts.prefillChunk } : {}),
    ...(opts.probe ? { probe: opts.probe } : {}),
  };
  const model = new LlamaModel(config, weights, modelOpts);
  const info: ModelInfo = {
    source,
    path,
    architecture: config.arch === 'mistral' ? 'MistralForCausalLM' : 'LlamaForCausalLM',
    ...counted,
    policy: policy.name,
    contextLength: config.contextLength,
    config,
    tokenizer: { vocabSize: tokenizer.vocabSize, bosId: tokenizer.bosId, eosIds: tokenizer.eosIds },
    chatTemplate: template !== undefined,
  };
  return new TextModel(model, tokenizer, template, info);
}

/** Whether a string names an HF Hub repo (org/name, optionally @revision) rather than a local path. */
export function isHubId(s: string): boolean {
  return /^[A-Za-z0-9][\w.-]*\/[\w.-]+(@[\w./-]+)?$/.test(s) && !existsSync(s);
}

/** Loads a model from a directory, a .gguf file, or a Hub id. */
export async function loadModel(pathOrId: string, opts: LoadOptions = {}): Promise<TextModel> {
  // LLaVA is imported lazily: llava/model.ts extends TextModel, so a static import would be a cycle.
  const hfDir = async (dir: string): Promise<TextModel> => {
    const llava = await import('./llava/load.js');
    return llava.isLlavaDir(dir) ? llava.loadLlavaHf(dir, opts) : loadHf(dir, opts);
  };
  if (isHubId(pathOrId)) return hfDir(await snapshotDownload(pathOrId, opts.hub ?? {}));
  if (!existsSync(pathOrId)) fail('config', `no such model: ${pathOrId} (a checkpoint directory, a .gguf file or an org/name Hub id)`);
  if (statSync(pathOrId).isDirectory()) return hfDir(pathOrId);
  if (opts.mmproj !== false) {
    const llava = await import('./llava/load.js');
    const mmproj = opts.mmproj ?? llava.findMmproj(pathOrId);
    if (mmproj !== undefined) return llava.loadLlavaGguf(pathOrId, mmproj, opts);
  }
  return loadGguf(pathOrId, opts);
}
