/**
 * The tokenizer interface every model uses, and its implementation for Hugging Face checkpoints
 * (tokenizer.json + tokenizer_config.json + generation_config.json) on top of
 * @huggingface/tokenizers. GGUF checkpoints use ./gguf-tokenizer.ts instead.
 *
 * Conventions shared by both implementations:
 *  - encode() always recognizes special/added tokens written in the text (chat templates rely on
 *    it) and never appends EOS; `addSpecial` (default true) only controls the leading BOS.
 *  - decode() is faithful: no "clean up tokenization spaces" pass (" ." stays " ."), so that
 *    decode(encode(text)) gives back the text and streamed pieces concatenate to the same string.
 *  - Ids that are not integers in [0, vocabSize) are a HalfpipeError('usage'), never '<unk>'.
 */
import { readFileSync } from 'node:fs';

import * as hfTokenizers from '@huggingface/tokenizers';

import { fail } from '../core/errors.js';

/**
 * The part of tokenizers.js that this file uses. Its bundled .d.ts files use extensionless
 * relative re-exports that NodeNext resolution cannot follow, so the types are declared here.
 */
interface HfTokenizer {
  encode(text: string, options: { add_special_tokens: boolean }): { ids: (number | undefined)[]; tokens: string[] };
  decode(ids: number[], options: { skip_special_tokens: boolean; clean_up_tokenization_spaces: boolean }): string;
  token_to_id(token: string): number | undefined;
  id_to_token(id: number): string | undefined;
  get_added_tokens_decoder(): Map<number, { special: boolean }>;
  get_vocab(withAddedTokens: boolean): Map<string, number>;
  decoder: unknown;
}
const hf = hfTokenizers as unknown as {
  Tokenizer: new (tokenizerJson: object, tokenizerConfig: object) => HfTokenizer;
  ByteFallbackDecoder: abstract new (...args: never[]) => { text_decoder: InstanceType<typeof TextDecoder> };
  SequenceDecoder: abstract new (...args: never[]) => { decoders: unknown[] };
};

export interface Tokenizer {
  readonly vocabSize: number;
  readonly bosId: number | undefined;
  /** EOS and the other end-of-generation ids (e.g. <|eot_id|>), EOS first. */
  readonly eosIds: readonly number[];
  /** Whether encode(..., {addSpecial: true}) prepends BOS. */
  readonly addBos: boolean;
  /**
   * Token ids for `text`. Special tokens written in the text (e.g. "<|eot_id|>") are recognized as
   * single tokens. `addSpecial` (default true) prepends BOS when `addBos` is set.
   */
  encode(text: string, opts?: { addSpecial?: boolean }): number[];
  /** Text for `ids`; with `skipSpecial`, special tokens (BOS, EOS, control tokens) produce no text. */
  decode(ids: readonly number[], opts?: { skipSpecial?: boolean }): string;
  /** The raw vocabulary piece (e.g. "▁Hello", "ĠHello", "<0x0A>"), for logprob displays. */
  tokenText(id: number): string;
  isSpecial(id: number): boolean;
}

/** Collapse an error (or anything thrown) into one line of text. */
export function oneLine(e: unknown): string {
  const text = e instanceof Error ? e.message : String(e);
  return text.replace(/\s+/g, ' ').trim();
}

/** Check that `id` is a valid token id for a vocabulary of `vocabSize`. */
export function checkTokenId(id: number, vocabSize: number): void {
  if (!Number.isInteger(id) || id < 0 || id >= vocabSize) {
    fail('usage', `token id ${String(id)} is out of range: the vocabulary has ids 0..${vocabSize - 1}`);
  }
}

/**
 * Load a Hugging Face tokenizer from the path of its tokenizer.json.
 *
 * `tokenizerConfig` is the parsed tokenizer_config.json: bos_token / eos_token (a string or
 * {content}), add_bos_token. `generationConfig` is the parsed generation_config.json: its
 * eos_token_id (a number or a list) adds end-of-generation ids, and bos_token_id is used when the
 * tokenizer config names no BOS.
 */
export function loadHfTokenizer(
  tokenizerJsonPath: string,
  tokenizerConfig?: Record<string, unknown>,
  generationConfig?: Record<string, unknown>,
): Tokenizer {
  let json: unknown;
  try {
    json = JSON.parse(readFileSync(tokenizerJsonPath, 'utf8'));
  } catch (e) {
    fail('config', `cannot read tokenizer ${tokenizerJsonPath}: ${oneLine(e)}`);
  }
  return hfTokenizerFromJson(json, tokenizerConfig, generationConfig);
}

/** Same as loadHfTokenizer, from an already parsed tokenizer.json object. */
export function hfTokenizerFromJson(
  tokenizerJson: unknown,
  tokenizerConfig: Record<string, unknown> = {},
  generationConfig: Record<string, unknown> = {},
): Tokenizer {
  if (tokenizerJson === null || typeof tokenizerJson !== 'object' || Array.isArray(tokenizerJson)) {
    fail('config', 'tokenizer.json must hold a JSON object');
  }
  return new HfBackedTokenizer(tokenizerJson as Record<string, unknown>, tokenizerConfig, generationConfig);
}

/** tokenizer_config.json writes special tokens as "text" or as {"content": "text", ...}. */
function tokenContent(value: unknown, key: string): string | undefined {
  if (value === undefined || value === null) return undefined;
  if (typeof value === 'string') return value;
  if (typeof value === 'object' && typeof (value as { content?: unknown }).content === 'string') {
    return (value as { content: string }).content;
  }
  fail('config', `tokenizer_config.json ${key} must be a string or {content: string}`);
}

function idList(value: unknown, key: string): number[] {
  if (value === undefined || value === null) return [];
  const list = Array.isArray(value) ? value : [value];
  for (const v of list) {
    if (!Number.isInteger(v)) fail('config', `generation_config.json ${key} must be an integer or a list of integers`);
  }
  return list as number[];
}

/**
 * tokenizers.js decodes <0xXX> byte runs with a default TextDecoder, which drops a U+FEFF at the
 * start of each run; the Rust tokenizers keep it. Give its ByteFallback decoders a BOM-preserving
 * TextDecoder so that text starting with U+FEFF survives a round trip.
 */
function keepByteOrderMarks(decoder: unknown): void {
  if (decoder instanceof hf.ByteFallbackDecoder) {
    decoder.text_decoder = new TextDecoder('utf-8', { ignoreBOM: true });
  } else if (decoder instanceof hf.SequenceDecoder) {
    for (const d of decoder.decoders) keepByteOrderMarks(d);
  }
}

/** The id of the special token that the post-processor puts first in a single sequence, if any. */
function leadingTemplateToken(postProcessor: unknown): number | undefined {
  if (postProcessor === null || typeof postProcessor !== 'object') return undefined;
  const pp = postProcessor as Record<string, unknown>;
  if (pp.type === 'Sequence' && Array.isArray(pp.processors)) {
    for (const p of pp.processors) {
      const id = leadingTemplateToken(p);
      if (id !== undefined) return id;
    }
    return undefined;
  }
  if (pp.type !== 'TemplateProcessing' || !Array.isArray(pp.single)) return undefined;
  const first = pp.single[0] as { SpecialToken?: { id?: unknown } } | undefined;
  const name = first?.SpecialToken?.id;
  if (typeof name !== 'string') return undefined;
  const entry = (pp.special_tokens as Record<string, { ids?: unknown }> | undefined)?.[name];
  const ids = entry?.ids;
  return Array.isArray(ids) && ids.length === 1 && Number.isInteger(ids[0]) ? (ids[0] as number) : undefined;
}

class HfBackedTokenizer implements Tokenizer {
  readonly vocabSize: number;
  readonly bosId: number | undefined;
  readonly eosIds: readonly number[];
  readonly addBos: boolean;
  private readonly hf: HfTokenizer;
  private readonly specialIds: ReadonlySet<number>;

  constructor(json: Record<string, unknown>, config: Record<string, unknown>, generation: Record<string, unknown>) {
    // tokenizers.js reads a few config fields itself; hand it plain strings for the special tokens.
    const libConfig: Record<string, unknown> = { ...config };
    for (const key of ['bos_token', 'eos_token', 'unk_token', 'pad_token']) {
      if (key in libConfig) libConfig[key] = tokenContent(libConfig[key], key);
    }
    if (Array.isArray(config.additional_special_tokens)) {
      libConfig.additional_special_tokens = config.additional_special_tokens.map((t, i) =>
        tokenContent(t, `additional_special_tokens[${i}]`),
      );
    }
    try {
      this.hf = new hf.Tokenizer(json, libConfig);
    } catch (e) {
      fail('config', `unsupported or malformed tokenizer.json: ${oneLine(e)}`);
    }
    keepByteOrderMarks(this.hf.decoder);

    let maxId = -1;
    for (const id of this.hf.get_vocab(true).values()) maxId = Math.max(maxId, id);
    this.vocabSize = maxId + 1;

    const idOf = (content: string | undefined, key: string): number | undefined => {
      if (content === undefined) return undefined;
      const id = this.hf.token_to_id(content);
      if (id === undefined) fail('config', `tokenizer_config.json ${key} '${content}' is not in the vocabulary`);
      return id;
    };
    const inRange = (id: number, key: string): number => {
      if (id < 0 || id >= this.vocabSize) fail('config', `${key} ${id} is outside the vocabulary of ${this.vocabSize}`);
      return id;
    };

    const genBos = idList(generation.bos_token_id, 'bos_token_id');
    this.bosId =
      idOf(tokenContent(config.bos_token, 'bos_token'), 'bos_token') ??
      (genBos.length > 0 ? inRange(genBos[0]!, 'generation_config.json bos_token_id') : undefined);

    const eos: number[] = [];
    const configEos = idOf(tokenContent(config.eos_token, 'eos_token'), 'eos_token');
    if (configEos !== undefined) eos.push(configEos);
    for (const id of idList(generation.eos_token_id, 'eos_token_id')) {
      inRange(id, 'generation_config.json eos_token_id');
      if (!eos.includes(id)) eos.push(id);
    }
    this.eosIds = eos;

    // add_bos_token when the config says so; otherwise whatever the post-processor does (Llama 3's
    // tokenizer_config.json has no add_bos_token, its TemplateProcessing adds <|begin_of_text|>).
    if (typeof config.add_bos_token === 'boolean') {
      this.addBos = config.add_bos_token && this.bosId !== undefined;
    } else {
      const lead = leadingTemplateToken(json.post_processor);
      this.addBos = lead !== undefined && lead === this.bosId;
    }

    const special = new Set<number>();
    for (const [id, token] of this.hf.get_added_tokens_decoder()) if (token.special) special.add(id);
    for (const t of (libConfig.additional_special_tokens as string[] | undefined) ?? []) {
      const id = this.hf.token_to_id(t);
      if (id !== undefined) special.add(id);
    }
    this.specialIds = special;
  }

  encode(text: string, opts: { addSpecial?: boolean } = {}): number[] {
    const encoded = this.hf.encode(text, { add_special_tokens: false });
    encoded.ids.forEach((id, i) => {
      if (id === undefined) {
        fail('config', `the tokenizer produced '${encoded.tokens[i]}', which has no id (and the vocabulary has no unk token)`);
      }
    });
    const ids = encoded.ids as number[];
    return (opts.addSpecial ?? true) && this.addBos ? [this.bosId!, ...ids] : ids;
  }

  decode(ids: readonly number[], opts: { skipSpecial?: boolean } = {}): string {
    for (const id of ids) this.checkId(id);
    if (ids.length === 0) return '';
    return this.hf.decode([...ids], {
      skip_special_tokens: opts.skipSpecial ?? false,
      clean_up_tokenization_spaces: false,
    });
  }

  tokenText(id: number): string {
    this.checkId(id);
    return this.hf.id_to_token(id)!;
  }

  isSpecial(id: number): boolean {
    checkTokenId(id, this.vocabSize);
    return this.specialIds.has(id);
  }

  private checkId(id: number): void {
    checkTokenId(id, this.vocabSize);
    if (this.hf.id_to_token(id) === undefined) fail('usage', `token id ${id} is not in the vocabulary (a gap in its ids)`);
  }
}
