/**
 * `halfpipe tiny`: a small random-weights LLaMA with a working tokenizer and chat template, written
 * deterministically (same seed, same bytes) as an HF checkpoint directory or as a GGUF file. Tests
 * use it, and users can try halfpipe without a download.
 *
 * The HF and GGUF forms of one seed hold the same weights: GGUF's Q/K rows are the HF rows permuted
 * per head the way convert_hf_to_gguf.py does, so both compute the same logits.
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { type DType, encode } from '../core/dtype.js';
import { fail } from '../core/errors.js';
import { Tensor } from '../core/tensor.js';
import { writeGguf } from '../formats/gguf/writer.js';
import type { GgufTypedValue } from '../formats/gguf/types.js';
import { quantize } from '../formats/gguf/quants.js';
import { writeSafetensors } from '../formats/safetensors.js';
import { Rng } from '../generate/rng.js';
import { LLAMA2_CHAT_TEMPLATE, LLAMA3_CHAT_TEMPLATE } from '../text/chat.js';
import { tinyGenerationConfig, tinyTokenizerConfig, tinyTokenizerJson, tinyVocab, type TinyVocab, type TinyVocabKind } from '../text/tiny-vocab.js';
import { llamaConfigFromHf, type LlamaConfig } from './llama/config.js';
import { writeTinyLlava } from './llava/tiny.js';
import { applyBigram, bigramHfDefaults } from './bigram.js';
import type { LlavaStressKind } from './llava/stress.js';
import { applyStress, stressGgufMetadata, stressHfDefaults, type StressInfo, type StressKind } from './stress.js';

export const TINY_QUANTS = ['Q8_0', 'Q4_0', 'Q4_1', 'Q5_0', 'Q5_1', 'Q4_K', 'Q5_K', 'Q6_K'] as const;
export type TinyQuant = (typeof TINY_QUANTS)[number];
const K_QUANTS: readonly string[] = ['Q4_K', 'Q5_K', 'Q6_K'];

export interface TinyOptions {
  /** 'llama' (default) or 'llava': a tiny LLaVA-1.5 (see llava/tiny.ts) */
  arch?: 'llama' | 'llava' | 'llava-next';
  /** 'hf' writes a checkpoint directory at `out`; 'gguf' writes one .gguf file at `out` */
  format: 'hf' | 'gguf';
  out: string;
  /** storage dtype of the matrices (norms stay f32 in GGUF); default f32 */
  dtype?: DType;
  /** GGUF only: quantize the matrices (token embedding and output included) */
  quant?: TinyQuant;
  /** default 0 */
  seed?: number;
  /** 'llama' (SentencePiece, Llama-2 chat template) or 'gpt2' (byte-level BPE, Llama-3 template) */
  vocab?: TinyVocabKind;
  /** HF config.json overrides, e.g. { hidden_size: 128, rope_scaling: { rope_type: 'linear', factor: 2 } } */
  set?: Record<string, unknown>;
  /** edit the random weights to reproduce a half-precision failure (see stress.ts); `set` still wins */
  stress?: StressKind | LlavaStressKind;
  /** 'bigram': instead of random weights, a bigram language model of the tiny vocabulary's training text (bigram.ts) */
  preset?: 'bigram';
}

export interface TinyModel {
  path: string;
  /** the HF config.json written (or, for GGUF, the one the metadata was made from) */
  hfConfig: Record<string, unknown>;
  config: LlamaConfig;
  /** what the stress edit did (also in config.json `halfpipe_stress` / GGUF `halfpipe.stress.*`) */
  stress?: StressInfo;
}

/** The HF config of a tiny model; K-quants need row lengths that are multiples of 256. */
export function tinyHfConfig(vocab: TinyVocab, quant: TinyQuant | undefined, set: Record<string, unknown>): Record<string, unknown> {
  const wide = quant !== undefined && K_QUANTS.includes(quant);
  return {
    architectures: ['LlamaForCausalLM'],
    model_type: 'llama',
    hidden_size: wide ? 256 : 64,
    intermediate_size: wide ? 512 : 128,
    num_hidden_layers: 2,
    num_attention_heads: 4,
    num_key_value_heads: 2,
    vocab_size: vocab.tokens.length,
    max_position_embeddings: 512,
    rms_norm_eps: 1e-5,
    rope_theta: 10000,
    tie_word_embeddings: false,
    bos_token_id: vocab.bosId,
    eos_token_id: vocab.eotId ?? vocab.eosId,
    torch_dtype: 'float32',
    ...set,
  };
}

/** Normal(0, std) values from the seeded generator (Box-Muller). */
export function normal(rng: Rng, count: number, std: number): Float64Array {
  const out = new Float64Array(count);
  for (let i = 0; i < count; i += 2) {
    const u = 1 - rng.nextFloat();
    const r = Math.sqrt(-2 * Math.log(u)) * std;
    const a = 2 * Math.PI * rng.nextFloat();
    out[i] = r * Math.cos(a);
    if (i + 1 < count) out[i + 1] = r * Math.sin(a);
  }
  return out;
}

/** HF-named weights, (out, in) row-major, float64; scales keep activations and logits O(1). */
export function randomWeights(c: LlamaConfig, seed: number): Map<string, { shape: number[]; values: Float64Array }> {
  const rng = new Rng(seed);
  const weights = new Map<string, { shape: number[]; values: Float64Array }>();
  const matrix = (name: string, rows: number, cols: number, std = 1 / Math.sqrt(cols)) =>
    weights.set(name, { shape: [rows, cols], values: normal(rng, rows * cols, std) });
  const norm = (name: string, n: number) => weights.set(name, { shape: [n], values: normal(rng, n, 0.1).map((v) => 1 + v) });
  matrix('model.embed_tokens.weight', c.vocabSize, c.dim, 1);
  for (let l = 0; l < c.nLayers; l++) {
    const p = `model.layers.${l}.`;
    norm(`${p}input_layernorm.weight`, c.dim);
    matrix(`${p}self_attn.q_proj.weight`, c.nHeads * c.headDim, c.dim);
    matrix(`${p}self_attn.k_proj.weight`, c.nKvHeads * c.headDim, c.dim);
    matrix(`${p}self_attn.v_proj.weight`, c.nKvHeads * c.headDim, c.dim);
    matrix(`${p}self_attn.o_proj.weight`, c.dim, c.nHeads * c.headDim);
    norm(`${p}post_attention_layernorm.weight`, c.dim);
    matrix(`${p}mlp.gate_proj.weight`, c.hiddenDim, c.dim);
    matrix(`${p}mlp.up_proj.weight`, c.hiddenDim, c.dim);
    matrix(`${p}mlp.down_proj.weight`, c.dim, c.hiddenDim);
  }
  norm('model.norm.weight', c.dim);
  if (!c.tiedEmbeddings) matrix('lm_head.weight', c.vocabSize, c.dim);
  return weights;
}

/**
 * convert_hf_to_gguf.py's Q/K permutation: per head, rows (j * headDim/2 + i) move to (2i + j), so
 * that interleaved (GPT-J) pairs of the stored rows are the rotate-half pairs of the HF rows.
 */
export function permuteQkRows(values: Float64Array, heads: number, headDim: number, cols: number): Float64Array {
  const out = new Float64Array(values.length);
  const half = headDim / 2;
  for (let h = 0; h < heads; h++)
    for (let j = 0; j < 2; j++)
      for (let i = 0; i < half; i++) {
        const from = (h * headDim + j * half + i) * cols;
        const to = (h * headDim + 2 * i + j) * cols;
        out.set(values.subarray(from, from + cols), to);
      }
  return out;
}

const GGUF_NAMES: Record<string, string> = {
  'model.embed_tokens.weight': 'token_embd.weight',
  'model.norm.weight': 'output_norm.weight',
  'lm_head.weight': 'output.weight',
  input_layernorm: 'attn_norm',
  'self_attn.q_proj': 'attn_q',
  'self_attn.k_proj': 'attn_k',
  'self_attn.v_proj': 'attn_v',
  'self_attn.o_proj': 'attn_output',
  post_attention_layernorm: 'ffn_norm',
  'mlp.gate_proj': 'ffn_gate',
  'mlp.up_proj': 'ffn_up',
  'mlp.down_proj': 'ffn_down',
};

export function ggufName(hfName: string): string {
  if (GGUF_NAMES[hfName]) return GGUF_NAMES[hfName];
  const m = /^model\.layers\.(\d+)\.(.+)\.weight$/.exec(hfName)!;
  return `blk.${m[1]}.${GGUF_NAMES[m[2]!]}.weight`;
}

const u32 = (value: number): GgufTypedValue => ({ type: 'u32', value });
const f32 = (value: number): GgufTypedValue => ({ type: 'f32', value });
const str = (value: string): GgufTypedValue => ({ type: 'string', value });

export function ggufMetadata(c: LlamaConfig, hf: Record<string, unknown>, vocab: TinyVocab, template: string): Array<[string, GgufTypedValue]> {
  const meta: Array<[string, GgufTypedValue]> = [
    ['general.architecture', str('llama')],
    ['general.name', str('halfpipe tiny llama')],
    ['general.alignment', u32(32)],
    ['llama.vocab_size', u32(c.vocabSize)],
    ['llama.context_length', u32(c.contextLength)],
    ['llama.embedding_length', u32(c.dim)],
    ['llama.block_count', u32(c.nLayers)],
    ['llama.feed_forward_length', u32(c.hiddenDim)],
    ['llama.attention.head_count', u32(c.nHeads)],
    ['llama.attention.head_count_kv', u32(c.nKvHeads)],
    ['llama.attention.key_length', u32(c.headDim)],
    ['llama.attention.value_length', u32(c.headDim)],
    ['llama.rope.dimension_count', u32(c.rope.rotaryDim)],
    ['llama.rope.freq_base', f32(c.rope.base)],
    ['llama.attention.layer_norm_rms_epsilon', f32(c.normEps)],
    ['tokenizer.ggml.model', str(vocab.model)],
    ['tokenizer.ggml.tokens', { type: 'array', itemType: 'string', value: vocab.tokens }],
    ['tokenizer.ggml.scores', { type: 'array', itemType: 'f32', value: vocab.scores }],
    ['tokenizer.ggml.token_type', { type: 'array', itemType: 'i32', value: vocab.tokenTypes }],
    ['tokenizer.ggml.bos_token_id', u32(vocab.bosId)],
    ['tokenizer.ggml.eos_token_id', u32(vocab.eosId)],
    ['tokenizer.ggml.add_bos_token', { type: 'bool', value: vocab.addBos }],
    ['tokenizer.chat_template', str(template)],
  ];
  if (vocab.kind === 'llama') {
    if (vocab.unkId !== undefined) meta.push(['tokenizer.ggml.unknown_token_id', u32(vocab.unkId)]);
    meta.push(['tokenizer.ggml.add_space_prefix', { type: 'bool', value: vocab.addSpacePrefix }]);
  } else {
    meta.push(['tokenizer.ggml.pre', str(vocab.pre ?? 'llama-bpe')]);
    meta.push(['tokenizer.ggml.merges', { type: 'array', itemType: 'string', value: vocab.merges }]);
    if (vocab.eotId !== undefined) meta.push(['tokenizer.ggml.eot_token_id', u32(vocab.eotId)]);
  }
  const scaling = (hf['rope_scaling'] ?? undefined) as Record<string, unknown> | undefined;
  if (scaling) {
    const type = scaling['rope_type'] ?? scaling['type'];
    if (type !== 'linear') fail('usage', `GGUF tiny models support rope scaling 'linear' only (llama.cpp's other types differ from HF's), got '${String(type)}'`);
    meta.push(['llama.rope.scaling.type', str('linear')], ['llama.rope.scaling.factor', f32(Number(scaling['factor']))]);
  }
  return meta;
}

/** Writes a tiny model; returns where and which config. */
export function writeTinyModel(opts: TinyOptions): TinyModel {
  if (opts.arch === 'llava' || opts.arch === 'llava-next') return writeTinyLlava(opts, opts.arch === 'llava' ? 'llava' : 'llava_next');
  const dtype = opts.dtype ?? 'f32';
  const seed = opts.seed ?? 0;
  if (opts.quant && opts.format !== 'gguf') fail('usage', `--quant ${opts.quant} needs --format gguf (HF checkpoints hold f32, f16 or bf16)`);
  if (opts.quant && !(TINY_QUANTS as readonly string[]).includes(opts.quant)) fail('usage', `unknown quant type '${opts.quant}' (supported: ${TINY_QUANTS.join(', ')})`);
  const vocab = tinyVocab(opts.vocab ?? 'llama');
  const template = vocab.kind === 'llama' ? LLAMA2_CHAT_TEMPLATE : LLAMA3_CHAT_TEMPLATE;
  if (opts.preset && opts.stress) fail('usage', 'a tiny model takes a preset or a stress edit, not both');
  if (opts.stress === 'image-overflow') fail('usage', "--stress image-overflow needs --arch llava (it edits the image features)");
  const textStress = opts.stress as StressKind | undefined;
  const presetDefaults = opts.preset === 'bigram' ? bigramHfDefaults(vocab) : {};
  const hf = tinyHfConfig(vocab, opts.quant, { ...presetDefaults, ...(textStress ? stressHfDefaults(textStress) : {}), ...(opts.set ?? {}) });
  const config = llamaConfigFromHf(hf);
  if (config.vocabSize !== vocab.tokens.length) fail('usage', `vocab_size must be ${vocab.tokens.length} (the tiny tokenizer's size), got ${config.vocabSize}`);
  const weights = randomWeights(config, seed);
  if (opts.preset === 'bigram') applyBigram(weights, config, vocab);
  const stress = textStress ? applyStress(textStress, weights, config, vocab) : undefined;
  if (stress) hf['halfpipe_stress'] = stress;

  if (opts.format === 'hf') {
    mkdirSync(opts.out, { recursive: true });
    const json = (name: string, value: unknown) => writeFileSync(join(opts.out, name), `${JSON.stringify(value, null, 2)}\n`);
    json('config.json', { ...hf, torch_dtype: { f32: 'float32', f16: 'float16', bf16: 'bfloat16' }[dtype] });
    json('generation_config.json', tinyGenerationConfig(vocab));
    json('tokenizer.json', tinyTokenizerJson(vocab));
    json('tokenizer_config.json', tinyTokenizerConfig(vocab, template));
    const tensors = [...weights].map(([name, w]) => ({ name, tensor: Tensor.fromValues(w.values, w.shape, dtype) }));
    writeSafetensors(join(opts.out, 'model.safetensors'), tensors, { format: 'pt' });
    return { path: opts.out, hfConfig: hf, config, ...(stress ? { stress } : {}) };
  }

  if (config.rope.rotaryDim !== config.headDim) fail('usage', 'GGUF tiny models need full rotary dims (llama.cpp permutes whole heads)');
  const tensors = [...weights].map(([name, w]) => {
    let values = w.values;
    if (name.endsWith('q_proj.weight')) values = permuteQkRows(values, config.nHeads, config.headDim, w.shape[1]!);
    if (name.endsWith('k_proj.weight')) values = permuteQkRows(values, config.nKvHeads, config.headDim, w.shape[1]!);
    const dims = [...w.shape].reverse();
    if (w.shape.length === 1) {
      return { name: ggufName(name), type: 'F32' as const, dims, data: new Uint8Array(Float32Array.from(values).buffer) };
    }
    if (opts.quant) {
      if (w.shape[1]! % (K_QUANTS.includes(opts.quant) ? 256 : 32) !== 0) {
        fail('usage', `${opts.quant} needs rows whose length is a multiple of ${K_QUANTS.includes(opts.quant) ? 256 : 32}; ${name} has ${w.shape[1]}`);
      }
      return { name: ggufName(name), type: opts.quant, dims, data: quantize(opts.quant, Float32Array.from(values)) };
    }
    const stored = encode(dtype, values);
    const type = ({ f32: 'F32', f16: 'F16', bf16: 'BF16' } as const)[dtype];
    return { name: ggufName(name), type, dims, data: new Uint8Array(stored.buffer, stored.byteOffset, stored.byteLength) };
  });
  const metadata = [...ggufMetadata(config, hf, vocab, template), ...(stress ? stressGgufMetadata(stress) : [])];
  mkdirSync(dirname(opts.out), { recursive: true });
  writeGguf(opts.out, { metadata, tensors });
  return { path: opts.out, hfConfig: hf, config, ...(stress ? { stress } : {}) };
}
