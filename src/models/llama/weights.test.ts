import { test } from 'node:test';
import assert from 'node:assert/strict';
import { HalfpipeError } from '../../core/errors.js';
import { Tensor } from '../../core/tensor.js';
import { llamaConfigFromHf } from './config.js';
import { checkLlamaWeights, type LlamaWeights, type QuantizedMatrix } from './weights.js';

const config = llamaConfigFromHf({
  architectures: ['LlamaForCausalLM'],
  hidden_size: 16,
  intermediate_size: 24,
  num_hidden_layers: 2,
  num_attention_heads: 4,
  num_key_value_heads: 2,
  vocab_size: 10,
  bos_token_id: 1,
  eos_token_id: 2,
});

const m = (rows: number, cols: number) => Tensor.empty([rows, cols], 'f16');

function weights(): LlamaWeights {
  return {
    tokenEmbedding: m(10, 16),
    layers: [0, 1].map(() => ({
      attnNorm: new Float32Array(16),
      wq: m(16, 16),
      wk: m(8, 16),
      wv: m(8, 16),
      wo: m(16, 16),
      mlpNorm: new Float32Array(16),
      wGate: m(24, 16),
      wUp: m(24, 16),
      wDown: m(16, 24),
    })),
    finalNorm: new Float32Array(16),
    output: m(10, 16),
  };
}

const shapeError = (pattern: RegExp) => (e: unknown) => e instanceof HalfpipeError && pattern.test(e.message) && !e.message.includes('\n');

test('checkLlamaWeights: accepts correct shapes', () => {
  checkLlamaWeights(config, weights());
  const tied = weights();
  tied.output = tied.tokenEmbedding;
  checkLlamaWeights({ ...config, tiedEmbeddings: true }, tied);
});

test('checkLlamaWeights: every wrong shape names its tensor', () => {
  const cases: [(w: LlamaWeights) => void, RegExp][] = [
    [(w) => (w.tokenEmbedding = m(11, 16)), /^token_embedding is f16 \[11, 16\], expected \(10, 16\)$/],
    [(w) => (w.layers[1]!.wk = m(16, 16)), /^layers\.1\.wk is f16 \[16, 16\], expected \(8, 16\)$/],
    [(w) => (w.layers[0]!.wo = m(16, 8)), /^layers\.0\.wo is/],
    [(w) => (w.layers[0]!.wDown = m(24, 16)), /^layers\.0\.w_down is f16 \[24, 16\], expected \(16, 24\)$/],
    [(w) => (w.layers[1]!.mlpNorm = new Float32Array(15)), /^layers\.1\.mlp_norm has 15 values, expected \(16\)$/],
    [(w) => (w.finalNorm = new Float64Array(16) as unknown as Float32Array), /^final_norm must be a Float32Array$/],
    [(w) => (w.output = m(10, 17)), /^output is/],
    [(w) => (w.layers[0]!.wq = m(16, 16).transpose(0, 1)), /^layers\.0\.wq must be a contiguous 2-D tensor/],
    [(w) => w.layers.pop(), /weights have 1 layers, config says 2/],
    [(w) => (w.output = w.tokenEmbedding), /does not tie embeddings/],
  ];
  for (const [mutate, pattern] of cases) {
    const w = weights();
    mutate(w);
    assert.throws(() => checkLlamaWeights(config, w), shapeError(pattern), String(pattern));
  }
  assert.throws(() => checkLlamaWeights({ ...config, tiedEmbeddings: true }, weights()), shapeError(/must be the token_embedding matrix itself/));
});

test('checkLlamaWeights: quantized rows are checked against their block size', () => {
  const cfg = { ...config, dim: 256, nHeads: 4, headDim: 64, rope: llamaConfigFromHf({ architectures: ['LlamaForCausalLM'], hidden_size: 256, intermediate_size: 24, num_hidden_layers: 2, num_attention_heads: 4, vocab_size: 10 }).rope };
  const q = (rows: number, rowBytes: number, type: QuantizedMatrix['type'] = 'Q4_K'): QuantizedMatrix => ({ kind: 'quantized', type, rows, cols: 256, rowBytes, data: new Uint8Array(rows * rowBytes) });
  const w = weights();
  w.tokenEmbedding = q(10, 144);
  assert.throws(() => checkLlamaWeights(cfg, w), shapeError(/^layers\.0\.attn_norm has 16 values/), 'the embedding passes, the next tensor fails');
  w.tokenEmbedding = q(10, 140);
  assert.throws(() => checkLlamaWeights(cfg, w), shapeError(/^token_embedding is Q4_K \[10, 256\] with 140 bytes per row, expected 144$/));
  w.tokenEmbedding = { ...q(10, 34 * 8, 'Q8_0'), data: new Uint8Array(5) };
  assert.throws(() => checkLlamaWeights(cfg, w), shapeError(/^token_embedding holds 5 bytes, expected 2720$/));
});
