import { test } from 'node:test';
import assert from 'node:assert/strict';
import { HalfpipeError } from '../../core/errors.js';
import { checkLlamaConfig, llamaConfigFromHf } from './config.js';

/** A TinyLlama-shaped config.json. */
const llama = {
  architectures: ['LlamaForCausalLM'],
  model_type: 'llama',
  hidden_size: 2048,
  intermediate_size: 5632,
  num_hidden_layers: 22,
  num_attention_heads: 32,
  num_key_value_heads: 4,
  rms_norm_eps: 1e-5,
  max_position_embeddings: 2048,
  vocab_size: 32000,
  rope_theta: 10000,
  rope_scaling: null,
  tie_word_embeddings: false,
  bos_token_id: 1,
  eos_token_id: 2,
  hidden_act: 'silu',
};

const mistral = {
  architectures: ['MistralForCausalLM'],
  hidden_size: 4096,
  intermediate_size: 14336,
  num_hidden_layers: 32,
  num_attention_heads: 32,
  num_key_value_heads: 8,
  head_dim: 128,
  max_position_embeddings: 32768,
  vocab_size: 32768,
  rope_theta: 1000000,
  sliding_window: 4096,
  tie_word_embeddings: false,
};

function configError(pattern: RegExp) {
  return (e: unknown) => e instanceof HalfpipeError && e.code === 'config' && pattern.test(e.message) && !e.message.includes('\n');
}

test('llamaConfigFromHf: resolves a Llama config', () => {
  const c = llamaConfigFromHf(llama);
  assert.equal(c.arch, 'llama');
  assert.deepEqual(
    { dim: c.dim, nLayers: c.nLayers, nHeads: c.nHeads, nKvHeads: c.nKvHeads, headDim: c.headDim, hiddenDim: c.hiddenDim, vocabSize: c.vocabSize, normEps: c.normEps, contextLength: c.contextLength },
    { dim: 2048, nLayers: 22, nHeads: 32, nKvHeads: 4, headDim: 64, hiddenDim: 5632, vocabSize: 32000, normEps: 1e-5, contextLength: 2048 },
  );
  assert.equal(c.ropePairing, 'neox');
  assert.equal(c.rope.type, 'default');
  assert.equal(c.rope.rotaryDim, 64);
  assert.equal(c.rope.base, 10000);
  assert.equal(c.slidingWindow, undefined);
  assert.equal(c.tiedEmbeddings, false);
  assert.equal(c.bosId, 1);
  assert.deepEqual(c.eosIds, [2]);
});

test('llamaConfigFromHf: HF defaults (kv heads = heads, eps 1e-6, context 2048, untied)', () => {
  const { num_key_value_heads: _a, rms_norm_eps: _b, max_position_embeddings: _c, tie_word_embeddings: _d, ...bare } = llama;
  const c = llamaConfigFromHf(bare);
  assert.equal(c.nKvHeads, 32);
  assert.equal(c.normEps, 1e-6);
  assert.equal(c.contextLength, 2048);
  assert.equal(c.tiedEmbeddings, false);
});

test('llamaConfigFromHf: Llama 3 style (rope scaling, eos list, tied)', () => {
  const c = llamaConfigFromHf({
    ...llama,
    hidden_size: 2048,
    num_attention_heads: 32,
    num_key_value_heads: 8,
    vocab_size: 128256,
    max_position_embeddings: 131072,
    rope_theta: 500000,
    rope_scaling: { rope_type: 'llama3', factor: 32, low_freq_factor: 1, high_freq_factor: 4, original_max_position_embeddings: 8192 },
    bos_token_id: 128000,
    eos_token_id: [128001, 128008, 128009],
    tie_word_embeddings: true,
  });
  assert.equal(c.rope.type, 'llama3');
  assert.equal(c.rope.base, 500000);
  assert.equal(c.contextLength, 131072);
  assert.deepEqual(c.eosIds, [128001, 128008, 128009]);
  assert.equal(c.tiedEmbeddings, true);
});

test('llamaConfigFromHf: Mistral, explicit head_dim and the sliding window', () => {
  const c = llamaConfigFromHf(mistral);
  assert.equal(c.arch, 'mistral');
  assert.equal(c.headDim, 128);
  assert.equal(c.slidingWindow, 4096);
  assert.equal(llamaConfigFromHf({ ...mistral, sliding_window: null }).slidingWindow, undefined);
  const { sliding_window: _, ...noKey } = mistral;
  assert.equal(llamaConfigFromHf(noKey).slidingWindow, 4096, 'MistralConfig default');
  // head_dim may make nHeads * headDim differ from hidden_size (Mistral Nemo: 5120 vs 32 x 128).
  const nemo = llamaConfigFromHf({ ...mistral, hidden_size: 5120 });
  assert.equal(nemo.dim, 5120);
  assert.equal(nemo.nHeads * nemo.headDim, 4096);
  assert.equal(nemo.rope.headDim, 128);
});

test('llamaConfigFromHf: unsupported architectures list the supported ones', () => {
  assert.throws(() => llamaConfigFromHf({ ...llama, architectures: ['Qwen2ForCausalLM'] }), configError(/unsupported architecture "Qwen2ForCausalLM" \(supported: LlamaForCausalLM, MistralForCausalLM\)/));
  assert.throws(() => llamaConfigFromHf({ ...llama, architectures: undefined }), configError(/no "architectures" \(supported: LlamaForCausalLM, MistralForCausalLM\)/));
});

test('llamaConfigFromHf: invalid relations and fields are one-line config errors', () => {
  assert.throws(() => llamaConfigFromHf({ ...llama, num_key_value_heads: 5 }), configError(/nHeads 32 is not a multiple of nKvHeads 5/));
  assert.throws(() => llamaConfigFromHf({ ...llama, hidden_size: 2050 }), configError(/hidden_size 2050 is not divisible by num_attention_heads 32/));
  assert.throws(() => llamaConfigFromHf({ ...llama, head_dim: 7 }), configError(/even/));
  assert.throws(() => llamaConfigFromHf({ ...llama, vocab_size: undefined }), configError(/vocab_size is missing/));
  assert.throws(() => llamaConfigFromHf({ ...llama, intermediate_size: 1.5 }), configError(/intermediate_size must be a positive integer/));
  assert.throws(() => llamaConfigFromHf({ ...llama, rms_norm_eps: -1 }), configError(/rms_norm_eps must be a finite number > 0/));
  assert.throws(() => llamaConfigFromHf({ ...llama, hidden_act: 'gelu' }), configError(/hidden_act "gelu" is not supported/));
  assert.throws(() => llamaConfigFromHf({ ...llama, attention_bias: true }), configError(/attention_bias: true is not supported/));
  assert.throws(() => llamaConfigFromHf({ ...llama, partial_rotary_factor: 0.5 }), configError(/partial rotary embeddings/));
  assert.throws(() => llamaConfigFromHf({ ...mistral, sliding_window: 0 }), configError(/sliding_window must be a positive integer/));
  assert.throws(() => llamaConfigFromHf({ ...llama, eos_token_id: 40000 }), configError(/special token id 40000 is outside the vocabulary/));
  assert.throws(() => llamaConfigFromHf({ ...llama, rope_scaling: { rope_type: 'linear' } }), configError(/factor is missing/));
});

test('checkLlamaConfig: catches inconsistent configs from other sources', () => {
  const c = llamaConfigFromHf(llama);
  assert.throws(() => checkLlamaConfig({ ...c, headDim: 32 }), configError(/rope head_dim 64 differs from headDim 32/));
  assert.throws(() => checkLlamaConfig({ ...c, ropePairing: 'interleaved' as 'gptj' }), configError(/unknown rope pairing/));
});
