/**
 * The LLaMA weights (llama2.c's TransformerWeights): read-only after loading, shared by every
 * session. Matrices are (out, in) rows, as checkpoints store them; norms are float32 vectors.
 * Q and K rows are used as stored: HF rows pair with 'neox' RoPE, GGUF's permuted rows with 'gptj'
 * (LlamaConfig.ropePairing), so nothing is permuted at load.
 */
import { isPacked } from '../../kernels/wasm/packed.js';
import { fail } from '../../core/errors.js';
import { GGML_TYPES } from '../../formats/gguf/types.js';
import { describeMatrix, isQuantized, type Matrix, matrixShape, QUANT_TYPES } from '../../ops/linear.js';
import type { LlamaConfig } from './config.js';

export type { Matrix, QuantizedMatrix, QuantType } from '../../ops/linear.js';

export interface LlamaLayerWeights {
  attnNorm: Float32Array; // (dim)
  wq: Matrix; // (nHeads * headDim, dim)
  wk: Matrix; // (nKvHeads * headDim, dim)
  wv: Matrix; // (nKvHeads * headDim, dim)
  wo: Matrix; // (dim, nHeads * headDim)
  mlpNorm: Float32Array; // (dim)
  wGate: Matrix; // (hiddenDim, dim)
  wUp: Matrix; // (hiddenDim, dim)
  wDown: Matrix; // (dim, hiddenDim)
}

export interface LlamaWeights {
  tokenEmbedding: Matrix; // (vocabSize, dim)
  layers: LlamaLayerWeights[]; // (nLayers)
  finalNorm: Float32Array; // (dim)
  output: Matrix; // (vocabSize, dim); the same object as tokenEmbedding when tied
}

/** Checks every tensor's shape and storage against the config. One-line HalfpipeError naming the tensor. */
export function checkLlamaWeights(config: LlamaConfig, weights: LlamaWeights): void {
  const { dim, nHeads, nKvHeads, headDim, hiddenDim, vocabSize, nLayers } = config;
  checkMatrix('token_embedding', weights.tokenEmbedding, vocabSize, dim);
  if (!Array.isArray(weights.layers) || weights.layers.length !== nLayers) {
    fail('shape', `weights have ${weights.layers?.length} layers, config says ${nLayers}`);
  }
  weights.layers.forEach((l, i) => {
    const at = `layers.${i}.`;
    checkVector(`${at}attn_norm`, l.attnNorm, dim);
    checkMatrix(`${at}wq`, l.wq, nHeads * headDim, dim);
    checkMatrix(`${at}wk`, l.wk, nKvHeads * headDim, dim);
    checkMatrix(`${at}wv`, l.wv, nKvHeads * headDim, dim);
    checkMatrix(`${at}wo`, l.wo, dim, nHeads * headDim);
    checkVector(`${at}mlp_norm`, l.mlpNorm, dim);
    checkMatrix(`${at}w_gate`, l.wGate, hiddenDim, dim);
    checkMatrix(`${at}w_up`, l.wUp, hiddenDim, dim);
    checkMatrix(`${at}w_down`, l.wDown, dim, hiddenDim);
  });
  checkVector('final_norm', weights.finalNorm, dim);
  checkMatrix('output', weights.output, vocabSize, dim);
  // Tied: the same matrix, or its packed copy for the SIMD kernels (the embedding lookup keeps the original).
  if (config.tiedEmbeddings && weights.output !== weights.tokenEmbedding && !isPacked(weights.output)) {
    fail('shape', 'output must be the token_embedding matrix itself when embeddings are tied');
  }
  if (!config.tiedEmbeddings && weights.output === weights.tokenEmbedding) fail('shape', 'output is the token_embedding matrix but the config does not tie embeddings');
}

function checkVector(name: string, v: Float32Array, dim: number): void {
  if (!(v instanceof Float32Array)) fail('shape', `${name} must be a Float32Array`);
  if (v.length !== dim) fail('shape', `${name} has ${v.length} values, expected (${dim})`);
}

function checkMatrix(name: string, m: Matrix, rows: number, cols: number): void {
  if (m === undefined || m === null) fail('shape', `${name} is missing`);
  if (isQuantized(m)) {
    if (!QUANT_TYPES.includes(m.type)) fail('dtype', `${name} has unsupported quantized type '${String(m.type)}' (supported: ${QUANT_TYPES.join(', ')})`);
    const { blockSize, typeSize } = GGML_TYPES[m.type];
    if (m.cols % blockSize !== 0) fail('shape', `${name} is ${m.type} with ${m.cols} columns, not a multiple of its ${blockSize}-element blocks`);
    const rowBytes = (m.cols / blockSize) * typeSize;
    if (m.rowBytes !== rowBytes) fail('shape', `${name} is ${m.type} [${m.rows}, ${m.cols}] with ${m.rowBytes} bytes per row, expected ${rowBytes}`);
    if (!(m.data instanceof Uint8Array) || m.data.length < m.rows * m.rowBytes) fail('shape', `${name} holds ${m.data?.length} bytes, expected ${m.rows * m.rowBytes}`);
  } else if (isPacked(m)) {
    // Packed in the wasm heap by packForKernels: its shape is checked below.
  } else if (m.rank !== 2 || !m.isContiguous) {
    fail('shape', `${name} must be a contiguous 2-D tensor, got shape [${m.shape.join(', ')}] with strides [${m.strides.join(', ')}]`);
  }
  const [r, c] = matrixShape(m);
  if (r !== rows || c !== cols) fail('shape', `${name} is ${describeMatrix(m)}, expected (${rows}, ${cols})`);
}
