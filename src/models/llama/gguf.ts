/**
 * A LLaMA model from a GGUF file (llama.cpp's format): config from the `llama.*` metadata, weights
 * from the `token_embd` / `blk.N.*` / `output*` tensors, the tokenizer and chat template from
 * `tokenizer.*`.
 *
 * GGUF stores each Q/K weight with its rows permuted per head (the HF-to-GGUF converter does it so
 * that ggml can rotate interleaved pairs). halfpipe does not undo the permutation: it runs the same
 * RoPE with GPT-J pairing on the rows as stored, which is the identical computation.
 */
import { fail } from '../../core/errors.js';
import { Tensor } from '../../core/tensor.js';
import { dequantize as dequantizeInto } from '../../formats/gguf/quants.js';
import { type GgufFile, type GgufTensorInfo, readTensorInto } from '../../formats/gguf/reader.js';
import { ropeScaling, type RopeFrequencies, type RopeScaling } from '../../ops/rope/scaling.js';
import type { LlamaConfig } from './config.js';
import type { LlamaLayerWeights, LlamaWeights, Matrix, QuantizedMatrix } from './weights.js';

const QUANT_TYPES = ['Q8_0', 'Q4_0', 'Q4_1', 'Q5_0', 'Q5_1', 'Q4_K', 'Q5_K', 'Q6_K'] as const;
type QuantType = (typeof QUANT_TYPES)[number];

function meta(file: GgufFile, key: string): unknown {
  return file.metadata.get(key);
}

function metaInt(file: GgufFile, key: string, fallback?: number): number {
  const v = meta(file, key);
  if (v === undefined) {
    if (fallback !== undefined) return fallback;
    fail('config', `GGUF metadata ${key} is missing`);
  }
  const n = typeof v === 'bigint' ? Number(v) : v;
  if (typeof n !== 'number' || !Number.isInteger(n) || n < 0) fail('config', `GGUF metadata ${key} must be a non-negative integer, got ${String(v)}`);
  return n;
}

function metaFloat(file: GgufFile, key: string, fallback?: number): number {
  const v = meta(file, key);
  if (v === undefined && fallback !== undefined) return fallback;
  if (typeof v !== 'number' || !Number.isFinite(v)) fail('config', `GGUF metadata ${key} must be a number, got ${String(v)}`);
  return v;
}

/** Frequencies divided per pair by llama.cpp's `rope_freqs` tensor (how GGUF stores llama3 scaling). */
function withFreqFactors(base: RopeScaling, factors: Float32Array): RopeScaling {
  const plain = base.frequencies(1);
  if (factors.length !== plain.invFreq.length) fail('config', `rope_freqs has ${factors.length} factors for ${plain.invFreq.length} rotary pairs`);
  const scaled: RopeFrequencies = { invFreq: plain.invFreq.map((w, i) => w / factors[i]!), attentionFactor: plain.attentionFactor };
  return { ...base, type: 'llama3', dependsOnSeqLen: false, frequencies: () => scaled };
}

/** The model config from GGUF metadata (general.architecture must be 'llama'). */
export function llamaConfigFromGguf(file: GgufFile): LlamaConfig {
  const arch = meta(file, 'general.architecture');
  if (arch !== 'llama') fail('config', `unsupported GGUF architecture '${String(arch)}' (supported: llama)`);
  const nHeads = metaInt(file, 'llama.attention.head_count');
  const dim = metaInt(file, 'llama.embedding_length');
  const headDim = metaInt(file, 'llama.attention.key_length', nHeads > 0 ? dim / nHeads : 0);
  const tokens = meta(file, 'tokenizer.ggml.tokens');
  const vocabSize = metaInt(file, 'llama.vocab_size', Array.isArray(tokens) ? tokens.length : 0);
  const contextLength = metaInt(file, 'llama.context_length');
  const rotaryDim = metaInt(file, 'llama.rope.dimension_count', headDim);
  const base = metaFloat(file, 'llama.rope.freq_base', 10000);
  const scalingType = meta(file, 'llama.rope.scaling.type');
  let scaling: Record<string, unknown> | undefined;
  if (scalingType === 'linear' || scalingType === 'yarn') {
    scaling = {
      rope_type: scalingType,
      factor: metaFloat(file, 'llama.rope.scaling.factor'),
      original_max_position_embeddings: metaInt(file, 'llama.rope.scaling.original_context_length', contextLength),
    };
  } else if (scalingType !== undefined && scalingType !== 'none') {
    fail('config', `unsupported GGUF rope scaling type '${String(scalingType)}' (supported: none, linear, yarn)`);
  }
  let rope = ropeScaling({ headDim, rotaryDim, base, maxPositionEmbeddings: contextLength, scaling });
  const freqs = file.tensors.find((t) => t.name === 'rope_freqs.weight');
  if (freqs) rope = withFreqFactors(rope, ggufVector(file, freqs));
  const eos = meta(file, 'tokenizer.ggml.eos_token_id');
  const eot = meta(file, 'tokenizer.ggml.eot_token_id');
  const bos = meta(file, 'tokenizer.ggml.bos_token_id');
  return {
    arch: 'llama',
    dim,
    nLayers: metaInt(file, 'llama.block_count'),
    nHeads,
    nKvHeads: metaInt(file, 'llama.attention.head_count_kv', nHeads),
    headDim,
    hiddenDim: metaInt(file, 'llama.feed_forward_length'),
    vocabSize,
    normEps: metaFloat(file, 'llama.attention.layer_norm_rms_epsilon', 1e-5),
    contextLength,
    rope,
    ropePairing: 'gptj',
    tiedEmbeddings: !file.tensors.some((t) => t.name === 'output.weight'),
    ...(typeof bos === 'number' ? { bosId: bos } : {}),
    eosIds: [eos, eot].filter((v): v is number => typeof v === 'number'),
  };
}

/** A 1-D tensor of any float or quantized type as Float32Array (norm weights). */
export function ggufVector(file: GgufFile, info: GgufTensorInfo): Float32Array {
  const m = ggufMatrix(file, info, 1, info.dims.reduce((a, b) => a * b, 1));
  if (m instanceof Tensor) return Float32Array.from(m.toFloat64Array());
  const out = new Float32Array(m.cols);
  dequantizeInto(m.type, m.data, m.cols, out);
  return out;
}

/**
 * A GGUF tensor with ne = [in, out] as an (out, in) Matrix, its bytes read straight into `into`
 * (at least info.byteLength bytes, e.g. a staging region in the wasm heap) or a buffer of its own.
 */
export function ggufMatrix(file: GgufFile, info: GgufTensorInfo, rows: number, cols: number, into?: Uint8Array): Tensor | QuantizedMatrix {
  const count = info.dims.reduce((a, b) => a * b, 1);
  if (count !== rows * cols || info.dims[0] !== cols) {
    fail('shape', `GGUF tensor ${info.name} has ne [${info.dims.join(', ')}], expected [${cols}, ${rows}]`);
  }
  const bytes = into ? into.subarray(0, info.byteLength) : new Uint8Array(info.byteLength);
  readTensorInto(file, info, bytes);
  switch (info.type) {
    case 'F32':
      return new Tensor('f32', new Float32Array(bytes.buffer, bytes.byteOffset, count), [rows, cols]);
    case 'F16':
      return new Tensor('f16', new Uint16Array(bytes.buffer, bytes.byteOffset, count), [rows, cols]);
    case 'BF16':
      return new Tensor('bf16', new Uint16Array(bytes.buffer, bytes.byteOffset, count), [rows, cols]);
    default:
      if (!(QUANT_TYPES as readonly string[]).includes(info.type)) fail('dtype', `GGUF tensor ${info.name} has unsupported type ${info.type}`);
      return { kind: 'quantized', type: info.type as QuantType, rows, cols, rowBytes: bytes.length / rows, data: bytes };
  }
}

/**
 * How the weight matrices are read. By default each into a buffer of its own; loadModel reads
 * each into a staging region and packs it for the kernels at once.
 */
export interface GgufMatrixReader {
  matrix(info: GgufTensorInfo, rows: number, cols: number): Matrix;
  /** the token embedding, kept as loaded for the lookup */
  embedding(info: GgufTensorInfo, rows: number, cols: number): Matrix;
  /** the output projection of a model whose output is tied to `embedding` */
  tiedOutput(embedding: Matrix, info: GgufTensorInfo, rows: number, cols: number): Matrix;
}

/** All weights of a GGUF llama (`token_embd` / `blk.N.*` / `output*` tensors). Missing tensors are reported by name. */
export function llamaWeightsFromGguf(file: GgufFile, config: LlamaConfig, reader?: GgufMatrixReader): LlamaWeights {
  const read: GgufMatrixReader = reader ?? {
    matrix: (info, rows, cols) => ggufMatrix(file, info, rows, cols),
    embedding: (info, rows, cols) => ggufMatrix(file, info, rows, cols),
    tiedOutput: (embedding) => embedding,
  };
  const byName = new Map(file.tensors.map((t) => [t.name, t]));
  const get = (name: string): GgufTensorInfo => byName.get(name) ?? fail('config', `GGUF file is missing tensor ${name}`);
  const { dim, nHeads, nKvHeads, headDim, hiddenDim, vocabSize } = config;
  const matrix = (name: string, rows: number, cols: number) => read.matrix(get(name), rows, cols);
  const vector = (name: string) => ggufVector(file, get(name));
  const layers: LlamaLayerWeights[] = [];
  for (let l = 0; l < config.nLayers; l++) {
    const p = `blk.${l}.`;
    layers.push({
      attnNorm: vector(`${p}attn_norm.weight`),
      wq: matrix(`${p}attn_q.weight`, nHeads * headDim, dim),
      wk: matrix(`${p}attn_k.weight`, nKvHeads * headDim, dim),
      wv: matrix(`${p}attn_v.weight`, nKvHeads * headDim, dim),
      wo: matrix(`${p}attn_output.weight`, dim, nHeads * headDim),
      mlpNorm: vector(`${p}ffn_norm.weight`),
      wGate: matrix(`${p}ffn_gate.weight`, hiddenDim, dim),
      wUp: matrix(`${p}ffn_up.weight`, hiddenDim, dim),
      wDown: matrix(`${p}ffn_down.weight`, dim, hiddenDim),
    });
  }
  const tokenEmbedding = read.embedding(get('token_embd.weight'), vocabSize, dim);
  return {
    tokenEmbedding,
    layers,
    finalNorm: vector('output_norm.weight'),
    output: config.tiedEmbeddings ? read.tiedOutput(tokenEmbedding, get('token_embd.weight'), vocabSize, dim) : matrix('output.weight', vocabSize, dim),
  };
}
