/**
 * A deterministic small vocabulary for test and demo models (`halfpipe tiny`), in two flavours:
 *
 *  - 'llama': SentencePiece-style BPE like Llama 2. Ids: <unk> 0 (unknown), <s> 1 and </s> 2
 *    (control), <0x00>..<0xFF> 3..258 (byte), then the learned pieces in merge order, then the
 *    single characters of the training text. A learned piece of merge rank r has score -r, so
 *    llama.cpp's merge-by-highest-score and Hugging Face's merge-by-lowest-rank pick the same pairs.
 *  - 'gpt2': byte-level BPE like Llama 3. Ids: the 256 byte characters in GPT-2 order, the learned
 *    pieces in merge order, then <|begin_of_text|>, <|end_of_text|>, <|start_header_id|>,
 *    <|end_header_id|>, <|eot_id|> (control).
 *
 * The pieces are learned by BPE over TRAINING_TEXT: count adjacent pairs over the words (weighted
 * by word frequency), merge the most frequent (ties: the smaller pair in code unit order), repeat.
 *
 * Why 'llama' training refuses some merges: SPM merges any adjacent pair whose concatenation is in
 * the vocabulary, while HF BPE merges only listed pairs. The two are guaranteed to agree when every
 * learned piece can be split into two vocabulary pieces in only one way (its own merge): then both
 * see the same candidate pairs, ranked the same way, ties leftmost. The 'llama'
 * trainer therefore skips a merge whose result would have a second split, or would give an existing
 * piece one (e.g. once "▁the" = "▁th"+"e" exists, "he" is refused while "▁t" exists).
 * With that invariant, a GGUF 'llama' tokenizer and the HF tokenizer.json describe the same
 * tokenizer (see tiny-vocab.test.ts). 'gpt2' needs no such rule: both sides merge by rank.
 *
 * tinyTokenizerJson / tinyTokenizerConfig / tinyGenerationConfig write the Hugging Face files for
 * the same tokenizer; tinyGgufMetadata writes the GGUF tokenizer.ggml.* keys.
 */
import { fail } from '../core/errors.js';
import { LLAMA3_SPLIT_PATTERN, byteLevelAlphabet, byteLevelEncode, splitLlama3 } from './byte-level.js';
import { TOKEN_TYPE } from './gguf-tokenizer.js';

/** The text the tiny vocabularies are learned from (written for halfpipe; no '<', '>' or '▁'). */
export const TRAINING_TEXT = `The lighthouse at the end of the harbour was built in 1887, and for more than a hundred years a keeper climbed its 154 steps every evening to light the lamp. The last keeper, a quiet woman named Ada, kept a small notebook in which she wrote the weather, the ships that passed, and the things she thought about while the light turned above her.
"The sea is never the same twice," she wrote on the first page. "It is grey in the morning, green at noon, and black at night, and it talks the whole time if you listen." She listened. She heard the boats come in before she could see them, and she learned which engines belonged to which families in the town.
In the winter the storms were long and the nights were longer. Ada would sit by the window with a cup of tea and count the seconds between the flashes of the other lights along the coast: four seconds to the north, six seconds to the south, and twelve seconds far out on the rocks where nobody lived. When a light went dark, she wrote it down and called the harbour master, who did not always thank her for waking him.
Children from the school visited every spring. They asked the same questions each year. How high is it? Does the light ever go out? Are you lonely? Ada answered them the same way each year: it is forty-two metres high, the light has not gone out since she came, and no, she was not lonely, because a lighthouse is a place that is always thinking about other people.
When the light was finally made automatic, the engineers came with their boxes and cables and left after three days. The lamp still turned every night, but nobody climbed the stairs. Ada moved into a small house at the bottom of the hill. She kept writing in her notebook, and on clear evenings she would stand at her door and watch the beam sweep over the water, once every ten seconds, as steady as a heartbeat.
Ada liked to say that a light is a promise written in the dark. A ship far out at sea cannot see the harbour, the houses, or the people waiting on the quay, but it can see a small bright point that comes back again and again, always at the same rhythm, and from that rhythm the captain knows exactly where he is. "You don't need to see the whole coast," she told a young sailor once. "You only need one light you can trust, and the patience to count."
Her favourite season was autumn, when the evenings grew dark early and the first gales arrived from the west. She would check the lamp, clean the great glass lens until it shone, and write the date at the top of a new page: 3 October, 14 October, 29 October. The wind pushed against the tower and the whole building hummed like an instrument. On those nights she felt that the lighthouse was not a building at all, but a kind of animal, patient and awake, watching over the water with her.
Years later, when the notebooks were given to the town museum, people were surprised by how little they said about the keeper herself. There were thousands of entries about wind, waves, birds, and boats, and only a handful of sentences about Ada. The last one, written in careful letters, said: "Tonight the sea was calm, and I could hear the whole town breathing. I think that is what a light is for."
`;

export type TinyVocabKind = 'llama' | 'gpt2';

/** Everything needed to write the tokenizer as GGUF tokenizer.ggml.* metadata. */
export interface TinyVocab {
  readonly kind: TinyVocabKind;
  /** tokenizer.ggml.model */
  readonly model: TinyVocabKind;
  /** tokenizer.ggml.pre ('gpt2' only) */
  readonly pre: string | undefined;
  readonly tokens: string[];
  readonly scores: number[];
  readonly tokenTypes: number[];
  /** "left right" merges in rank order (for 'llama', the unique split of each learned piece). */
  readonly merges: string[];
  readonly bosId: number;
  readonly eosId: number;
  readonly eotId: number | undefined;
  readonly unkId: number | undefined;
  readonly padId: number | undefined;
  readonly addBos: boolean;
  readonly addSpacePrefix: boolean;
}

export const TINY_VOCAB_DEFAULT_SIZE = 512;

const LLAMA_SPECIALS = ['<unk>', '<s>', '</s>'] as const;
const LLAMA3_SPECIALS = ['<|begin_of_text|>', '<|end_of_text|>', '<|start_header_id|>', '<|end_header_id|>', '<|eot_id|>'] as const;
const NUM_BYTES = 256;

/** Word frequencies for training, each word as its list of initial symbols. */
type Corpus = Map<string, number>;

function countWords(words: string[]): Corpus {
  const counts: Corpus = new Map();
  for (const w of words) if (w.length > 0) counts.set(w, (counts.get(w) ?? 0) + 1);
  return counts;
}

/**
 * Learn `wanted` merges over `corpus`. `accept(left, right, merged)` may refuse a candidate; refused
 * pairs are never proposed again. Stops early when no pair is left. Returns the merges in order.
 */
function learnMerges(
  corpus: Corpus,
  wanted: number,
  accept: (left: string, right: string, merged: string) => boolean,
): [string, string][] {
  const words = [...corpus].map(([w, count]) => ({ symbols: Array.from(w), count }));
  const refused = new Set<string>();
  const merges: [string, string][] = [];
  const key = (l: string, r: string): string => `${l}\u0000${r}`;
  while (merges.length < wanted) {
    const pairCounts = new Map<string, number>();
    for (const { symbols, count } of words) {
      for (let i = 0; i + 1 < symbols.length; i++) {
        const k = key(symbols[i]!, symbols[i + 1]!);
        if (!refused.has(k)) pairCounts.set(k, (pairCounts.get(k) ?? 0) + count);
      }
    }
    let best: string | undefined;
    let bestCount = 0;
    for (const [k, c] of pairCounts) {
      if (c > bestCount || (c === bestCount && best !== undefined && k < best)) {
        best = k;
        bestCount = c;
      }
    }
    if (best === undefined) break;
    const [left, right] = best.split('\u0000') as [string, string];
    const merged = left + right;
    if (!accept(left, right, merged)) {
      refused.add(best);
      continue;
    }
    merges.push([left, right]);
    for (const w of words) {
      const out: string[] = [];
      const s = w.symbols;
      for (let i = 0; i < s.length; i++) {
        if (i + 1 < s.length && s[i] === left && s[i + 1] === right) {
          out.push(merged);
          i++;
        } else {
          out.push(s[i]!);
        }
      }
      w.symbols = out;
    }
  }
  return merges;
}

function cpSlice(cps: string[], from: number, to?: number): string {
  return cps.slice(from, to).join('');
}

function tinyLlama(size: number): TinyVocab {
  // Like SentencePiece's trainer: lines are separate sentences, pieces never cross a space (each
  // space-separated word carries its leading '▁'), letters and other characters are not mixed
  // (split_by_unicode_script) and digits stand alone (split_digits).
  const words: string[] = [];
  for (const line of TRAINING_TEXT.split('\n')) {
    if (line.length === 0) continue;
    for (const w of line.split(' ')) {
      const runs = w.match(/\p{L}+|\p{N}|[^\p{L}\p{N}]+/gu) ?? [];
      runs.forEach((run, i) => words.push(i === 0 ? '\u2581' + run : run));
      if (runs.length === 0) words.push('\u2581');
    }
  }
  const corpus = countWords(words);
  const charCounts = new Map<string, number>();
  for (const [w, c] of corpus) for (const ch of w) charCounts.set(ch, (charCounts.get(ch) ?? 0) + c);
  const alphabet = [...charCounts.keys()].sort((a, b) => charCounts.get(b)! - charCounts.get(a)! || (a < b ? -1 : 1));

  const fixed = LLAMA_SPECIALS.length + NUM_BYTES + alphabet.length;
  if (size < fixed) fail('usage', `a tiny 'llama' vocabulary needs at least ${fixed} tokens, got ${size}`);

  const pieces = new Set<string>(alphabet);
  const learned: string[] = [];
  const hasOtherSplit = (merged: string, left: string): boolean => {
    const cps = Array.from(merged);
    for (let k = 1; k < cps.length; k++) {
      const l = cpSlice(cps, 0, k);
      if (l !== left && pieces.has(l) && pieces.has(cpSlice(cps, k))) return true;
    }
    return false;
  };
  const merges = learnMerges(corpus, size - fixed, (left, _right, merged) => {
    if (pieces.has(merged) || hasOtherSplit(merged, left)) return false;
    // Would `merged` give an existing piece q a second split (merged + rest, or rest + merged)?
    for (const q of learned) {
      if (q.length <= merged.length) continue;
      if (q.startsWith(merged) && pieces.has(q.slice(merged.length))) return false;
      if (q.endsWith(merged) && pieces.has(q.slice(0, q.length - merged.length))) return false;
    }
    pieces.add(merged);
    learned.push(merged);
    return true;
  });
  if (merges.length < size - fixed) {
    fail('usage', `a tiny 'llama' vocabulary can hold at most ${fixed + merges.length} tokens, got ${size}`);
  }

  const tokens: string[] = [...LLAMA_SPECIALS];
  const scores: number[] = [0, 0, 0];
  const tokenTypes: number[] = [TOKEN_TYPE.UNKNOWN, TOKEN_TYPE.CONTROL, TOKEN_TYPE.CONTROL];
  for (let b = 0; b < NUM_BYTES; b++) {
    tokens.push(`<0x${b.toString(16).toUpperCase().padStart(2, '0')}>`);
    scores.push(0);
    tokenTypes.push(TOKEN_TYPE.BYTE);
  }
  merges.forEach(([l, r], rank) => {
    tokens.push(l + r);
    scores.push(-rank);
    tokenTypes.push(TOKEN_TYPE.NORMAL);
  });
  alphabet.forEach((ch, i) => {
    tokens.push(ch);
    scores.push(-(merges.length + i)); // below every learned piece; never compared with them
    tokenTypes.push(TOKEN_TYPE.NORMAL);
  });
  return {
    kind: 'llama',
    model: 'llama',
    pre: undefined,
    tokens,
    scores,
    tokenTypes,
    merges: merges.map(([l, r]) => `${l} ${r}`),
    bosId: 1,
    eosId: 2,
    eotId: undefined,
    unkId: 0,
    padId: undefined,
    addBos: true,
    addSpacePrefix: true,
  };
}

function tinyGpt2(size: number): TinyVocab {
  const fixed = NUM_BYTES + LLAMA3_SPECIALS.length;
  if (size < fixed) fail('usage', `a tiny 'gpt2' vocabulary needs at least ${fixed} tokens, got ${size}`);
  const corpus = countWords(splitLlama3(TRAINING_TEXT).map(byteLevelEncode));
  const alphabet = byteLevelAlphabet();
  const pieces = new Set<string>(alphabet);
  const merges = learnMerges(corpus, size - fixed, (_l, _r, merged) => {
    if (pieces.has(merged)) return false; // one merge per token
    pieces.add(merged);
    return true;
  });
  if (merges.length < size - fixed) {
    fail('usage', `a tiny 'gpt2' vocabulary can hold at most ${fixed + merges.length} tokens, got ${size}`);
  }
  const tokens = [...alphabet, ...merges.map(([l, r]) => l + r), ...LLAMA3_SPECIALS];
  const tokenTypes = tokens.map((_, i) => (i < tokens.length - LLAMA3_SPECIALS.length ? TOKEN_TYPE.NORMAL : TOKEN_TYPE.CONTROL));
  const idOf = (t: string): number => tokens.indexOf(t);
  return {
    kind: 'gpt2',
    model: 'gpt2',
    pre: 'llama-bpe',
    tokens,
    scores: tokens.map(() => 0),
    tokenTypes,
    merges: merges.map(([l, r]) => `${l} ${r}`),
    bosId: idOf('<|begin_of_text|>'),
    eosId: idOf('<|end_of_text|>'),
    eotId: idOf('<|eot_id|>'),
    unkId: undefined,
    padId: undefined,
    addBos: true,
    addSpacePrefix: false,
  };
}

/** The tiny vocabulary of `kind` with exactly `size` tokens (default 512). Deterministic. */
export function tinyVocab(kind: TinyVocabKind, size: number = TINY_VOCAB_DEFAULT_SIZE): TinyVocab {
  if (!Number.isInteger(size) || size <= 0) fail('usage', `tiny vocabulary size must be a positive integer, got ${size}`);
  if (kind === 'llama') return tinyLlama(size);
  if (kind === 'gpt2') return tinyGpt2(size);
  fail('usage', `unknown tiny vocabulary kind '${String(kind)}' (expected 'llama' or 'gpt2')`);
}

/** The GGUF tokenizer.ggml.* keys for `vocab` (scores as float32, token types as int32 arrays). */
export function tinyGgufMetadata(vocab: TinyVocab): Record<string, unknown> {
  const kv: Record<string, unknown> = {
    'tokenizer.ggml.model': vocab.model,
    'tokenizer.ggml.tokens': vocab.tokens,
    'tokenizer.ggml.scores': vocab.scores,
    'tokenizer.ggml.token_type': vocab.tokenTypes,
    'tokenizer.ggml.bos_token_id': vocab.bosId,
    'tokenizer.ggml.eos_token_id': vocab.eosId,
    'tokenizer.ggml.add_bos_token': vocab.addBos,
  };
  if (vocab.kind === 'llama') {
    kv['tokenizer.ggml.unknown_token_id'] = vocab.unkId;
    kv['tokenizer.ggml.add_space_prefix'] = vocab.addSpacePrefix;
  } else {
    kv['tokenizer.ggml.pre'] = vocab.pre;
    kv['tokenizer.ggml.merges'] = vocab.merges;
    kv['tokenizer.ggml.eot_token_id'] = vocab.eotId;
  }
  return kv;
}

function addedToken(id: number, content: string, special: boolean): Record<string, unknown> {
  return { id, content, single_word: false, lstrip: false, rstrip: false, normalized: false, special };
}

/** A TemplateProcessing post-processor that puts `bos` before each sequence (as Llama's do). */
function bosTemplate(bos: string, bosId: number): Record<string, unknown> {
  const special = (type_id: number) => ({ SpecialToken: { id: bos, type_id } });
  const seq = (id: 'A' | 'B', type_id: number) => ({ Sequence: { id, type_id } });
  return {
    type: 'TemplateProcessing',
    single: [special(0), seq('A', 0)],
    pair: [special(0), seq('A', 0), special(1), seq('B', 1)],
    special_tokens: { [bos]: { id: bos, ids: [bosId], tokens: [bos] } },
  };
}

/**
 * A Hugging Face tokenizer.json for the same tokenizer as `vocab`: for 'llama' the layout
 * transformers' LlamaConverter writes for Llama 2 (BPE with byte_fallback and fuse_unk, a
 * Prepend('▁') + Replace(' ', '▁') normalizer, no pre-tokenizer, and Replace + ByteFallback + Fuse +
 * Strip decoders); for 'gpt2' the layout of Meta's Llama 3 tokenizer.json (Split with the Llama-3
 * regex + ByteLevel pre-tokenizer, ignore_merges, ByteLevel decoder).
 */
export function tinyTokenizerJson(vocab: TinyVocab): Record<string, unknown> {
  const isSpecialType = (t: number): boolean =>
    t === TOKEN_TYPE.CONTROL || t === TOKEN_TYPE.UNKNOWN || t === TOKEN_TYPE.USER_DEFINED;
  const added = vocab.tokens.flatMap((t, id) =>
    isSpecialType(vocab.tokenTypes[id]!) ? [addedToken(id, t, vocab.tokenTypes[id] !== TOKEN_TYPE.USER_DEFINED)] : [],
  );
  const modelVocab: Record<string, number> = {};
  vocab.tokens.forEach((t, id) => {
    // Llama 2 keeps <unk>, <s>, </s> in model.vocab; Llama 3 keeps its specials only in added_tokens.
    if (vocab.kind === 'llama' || !isSpecialType(vocab.tokenTypes[id]!)) modelVocab[t] = id;
  });
  const bos = vocab.tokens[vocab.bosId]!;
  if (vocab.kind === 'llama') {
    return {
      version: '1.0',
      truncation: null,
      padding: null,
      added_tokens: added,
      normalizer: {
        type: 'Sequence',
        normalizers: [
          { type: 'Prepend', prepend: '\u2581' },
          { type: 'Replace', pattern: { String: ' ' }, content: '\u2581' },
        ],
      },
      pre_tokenizer: null,
      post_processor: bosTemplate(bos, vocab.bosId),
      decoder: {
        type: 'Sequence',
        decoders: [
          { type: 'Replace', pattern: { String: '\u2581' }, content: ' ' },
          { type: 'ByteFallback' },
          { type: 'Fuse' },
          { type: 'Strip', content: ' ', start: 1, stop: 0 },
        ],
      },
      model: {
        type: 'BPE',
        dropout: null,
        unk_token: vocab.tokens[vocab.unkId!],
        continuing_subword_prefix: null,
        end_of_word_suffix: null,
        fuse_unk: true,
        byte_fallback: true,
        ignore_merges: false,
        vocab: modelVocab,
        merges: vocab.merges,
      },
    };
  }
  return {
    version: '1.0',
    truncation: null,
    padding: null,
    added_tokens: added,
    normalizer: null,
    pre_tokenizer: {
      type: 'Sequence',
      pretokenizers: [
        { type: 'Split', pattern: { Regex: LLAMA3_SPLIT_PATTERN }, behavior: 'Isolated', invert: false },
        { type: 'ByteLevel', add_prefix_space: false, trim_offsets: true, use_regex: false },
      ],
    },
    post_processor: {
      type: 'Sequence',
      processors: [
        { type: 'ByteLevel', add_prefix_space: true, trim_offsets: false, use_regex: true },
        bosTemplate(bos, vocab.bosId),
      ],
    },
    decoder: { type: 'ByteLevel', add_prefix_space: true, trim_offsets: true, use_regex: true },
    model: {
      type: 'BPE',
      dropout: null,
      unk_token: null,
      continuing_subword_prefix: null,
      end_of_word_suffix: null,
      fuse_unk: false,
      byte_fallback: false,
      ignore_merges: true,
      vocab: modelVocab,
      merges: vocab.merges,
    },
  };
}

/**
 * tokenizer_config.json for `vocab`. For 'llama' it sets add_bos_token like Llama 2's; for 'gpt2'
 * it leaves it out like Llama 3's (BOS then comes from the tokenizer.json post-processor), with
 * eos_token <|eot_id|> as in Llama 3 Instruct.
 */
export function tinyTokenizerConfig(vocab: TinyVocab, chatTemplate?: string): Record<string, unknown> {
  const added: Record<string, unknown> = {};
  vocab.tokenTypes.forEach((t, id) => {
    if (t === TOKEN_TYPE.CONTROL || t === TOKEN_TYPE.UNKNOWN) {
      const { id: _id, ...rest } = addedToken(id, vocab.tokens[id]!, true);
      added[String(id)] = rest;
    }
  });
  const config: Record<string, unknown> =
    vocab.kind === 'llama'
      ? {
          add_bos_token: true,
          add_eos_token: false,
          bos_token: vocab.tokens[vocab.bosId],
          eos_token: vocab.tokens[vocab.eosId],
          unk_token: vocab.tokens[vocab.unkId!],
          clean_up_tokenization_spaces: false,
          legacy: true,
          tokenizer_class: 'LlamaTokenizer',
        }
      : {
          bos_token: vocab.tokens[vocab.bosId],
          eos_token: vocab.tokens[vocab.eotId!],
          clean_up_tokenization_spaces: true,
          model_input_names: ['input_ids', 'attention_mask'],
          tokenizer_class: 'PreTrainedTokenizerFast',
        };
  config.added_tokens_decoder = added;
  config.model_max_length = 2048;
  if (chatTemplate !== undefined) config.chat_template = chatTemplate;
  return config;
}

/** generation_config.json for `vocab`: its BOS and every end-of-generation id. */
export function tinyGenerationConfig(vocab: TinyVocab): Record<string, unknown> {
  const eos = vocab.eotId === undefined ? vocab.eosId : [vocab.eosId, vocab.eotId];
  return { bos_token_id: vocab.bosId, eos_token_id: eos };
}
