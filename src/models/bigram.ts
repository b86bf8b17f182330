/**
 * A tiny llama that is a bigram language model of the tiny vocabulary's training text, so the
 * built-in default model writes text that looks like English rather than random bytes.
 *
 * With hidden size = vocabulary size V, token t's embedding is the one-hot vector e_t, and every
 * attention and MLP block writes nothing (o_proj = down_proj = 0), so the residual stream stays e_t.
 * The final RMSNorm (weight 1) turns it into sqrt(V) e_t, and the output row j, column t holds
 * log P(j | t) / sqrt(V): the logits are exactly the bigram log-probabilities
 *
 *   P(j | t) = (count(t, j) + k) / (count(t) + k V),   k = 0.05 (add-k smoothing)
 *
 * counted over the training text as the tokenizer splits it (BOS first).
 */
import type { TinyVocab } from '../text/tiny-vocab.js';
import { TRAINING_TEXT } from '../text/tiny-vocab.js';
import { ggufTokenizer } from '../text/gguf-tokenizer.js';
import type { LlamaConfig } from './llama/config.js';

const SMOOTHING = 0.05;

/** HF config fields a bigram model needs: hidden size = vocabulary size, one small layer. */
export function bigramHfDefaults(vocab: TinyVocab): Record<string, unknown> {
  // A negligible RMSNorm epsilon keeps the logits exactly the log-probabilities.
  return { hidden_size: vocab.tokens.length, intermediate_size: 64, num_hidden_layers: 1, num_attention_heads: 8, num_key_value_heads: 8, rms_norm_eps: 1e-12 };
}

/** Overwrites HF-named float64 weights (as tiny.ts makes them) with the bigram model's. */
export function applyBigram(weights: Map<string, { shape: number[]; values: Float64Array }>, config: LlamaConfig, vocab: TinyVocab): void {
  const V = config.vocabSize;
  if (config.dim !== V) throw new Error(`bigram model needs hidden_size = vocab size (${V}), got ${config.dim}`);
  // Count bigrams over the training text, paragraph by paragraph, each starting after BOS.
  const tokenizer = ggufTokenizer(vocab);
  const counts = new Float64Array(V * V);
  for (const paragraph of TRAINING_TEXT.split('\n').filter((p) => p.trim())) {
    const ids = tokenizer.encode(paragraph, { addSpecial: true });
    for (let i = 0; i + 1 < ids.length; i++) counts[ids[i]! * V + ids[i + 1]!]! += 1;
  }
  const set = (name: string, fill: (i: number) => number) => {
    const w = weights.get(name)!;
    for (let i = 0; i < w.values.length; i++) w.values[i] = fill(i);
  };
  // One-hot embeddings, unit norms, silent blocks.
  set('model.embed_tokens.weight', (i) => (Math.floor(i / V) === i % V ? 1 : 0));
  set('model.norm.weight', () => 1);
  for (let l = 0; l < config.nLayers; l++) {
    set(`model.layers.${l}.self_attn.o_proj.weight`, () => 0);
    set(`model.layers.${l}.mlp.down_proj.weight`, () => 0);
  }
  // Output row j, column t: log P(j | t) / sqrt(V).
  const rowTotals = new Float64Array(V);
  for (let t = 0; t < V; t++) for (let j = 0; j < V; j++) rowTotals[t]! += counts[t * V + j]!;
  const scale = 1 / Math.sqrt(V);
  set('lm_head.weight', (i) => {
    const j = Math.floor(i / V);
    const t = i % V;
    return scale * Math.log((counts[t * V + j]! + SMOOTHING) / (rowTotals[t]! + SMOOTHING * V));
  });
}
