/**
 * Tokenizers described by GGUF metadata, written to behave like llama.cpp (llama-vocab.cpp).
 *
 * GGUF key -> GgufTokenizerMeta field (ggufTokenizerMetaFromKv does this mapping):
 *   tokenizer.ggml.model             -> model           'llama' (SentencePiece BPE) or 'gpt2' (byte-level BPE)
 *   tokenizer.ggml.tokens            -> tokens          string[], index = token id
 *   tokenizer.ggml.scores            -> scores          float32[] (SPM merge priority; higher merges first)
 *   tokenizer.ggml.token_type        -> tokenTypes      int32[]: 1 normal, 2 unknown, 3 control,
 *                                                       4 user-defined, 5 unused, 6 byte
 *   tokenizer.ggml.merges            -> merges          "left right" strings, rank = index ('gpt2' only)
 *   tokenizer.ggml.bos_token_id      -> bosId
 *   tokenizer.ggml.eos_token_id      -> eosId
 *   tokenizer.ggml.eot_token_id      -> eotId
 *   tokenizer.ggml.unknown_token_id  -> unkId
 *   tokenizer.ggml.padding_token_id  -> padId
 *   tokenizer.ggml.add_bos_token     -> addBos
 *   tokenizer.ggml.add_space_prefix  -> addSpacePrefix  ('llama' only)
 *   tokenizer.ggml.pre               -> pre             pre-tokenizer name ('gpt2' only)
 * (tokenizer.chat_template is read by chat.ts's chatTemplateFrom.)
 *
 * Defaults as llama.cpp: 'llama' has bos 1, eos 2, unk 0, addBos true, addSpacePrefix true;
 * 'gpt2' has no default special ids and adds BOS by default (as llama.cpp does for llama-bpe).
 *
 * 'llama' (SPM): every fragment of raw text is prefixed with a space when it starts the input or
 * follows a special token (add_space_prefix), spaces become '▁' (U+2581), the text is split into
 * code points, and the adjacent pair whose concatenation is a vocabulary token with the highest
 * score is merged (ties: leftmost) until no pair is in the vocabulary. Pieces outside the
 * vocabulary fall back to <0xXX> byte tokens (then to the one-byte token, then to unk).
 *
 * 'gpt2' (byte-level BPE, Llama 3): raw text is split with the Llama-3 regex (see byte-level.ts),
 * each pre-token's UTF-8 bytes are mapped through the GPT-2 byte-to-unicode table, a pre-token that
 * is a whole vocabulary token is taken as is (ignore_merges), and otherwise the adjacent pair with
 * the lowest merge rank is merged (ties: leftmost) until no pair is a merge.
 * Only the 'llama-bpe' pre-tokenizer (also named 'llama3', 'llama-v3') is implemented. Any other
 * `pre` value (or none) is tokenized with the same Llama-3 rules: exact for Llama-3-family
 * vocabularies, approximate for others (e.g. 'qwen2' splits digits one by one). `preIsExact` on
 * the returned tokenizer says which case applies.
 *
 * Special tokens: control, user-defined and unknown tokens written in the text are matched as whole
 * tokens before any of the above, longest token first (as llama.cpp's tokenizer_st_partition).
 * The ends of generation (eosIds) are eos, eot and the tokens llama.cpp recognizes by their text:
 * <|eot_id|>, <|eom_id|>, <|im_end|>, <|end|>, <end_of_turn>, <|endoftext|>, <EOT>.
 *
 * Decoding follows llama.cpp's token_to_piece: normal tokens give their text ('▁' -> space for
 * 'llama', bytes through the inverse table for 'gpt2'), byte tokens their byte, user-defined
 * tokens their raw text, control and unknown tokens their raw text unless skipSpecial, and unused
 * tokens nothing. All bytes are assembled before UTF-8 decoding (invalid sequences -> U+FFFD; a
 * U+FEFF is kept). For 'llama' with add_space_prefix, one leading space of the result is dropped,
 * as Hugging Face's Strip decoder does (llama.cpp keeps it when it also drops a leading BOS).
 * No "clean up tokenization spaces" pass.
 */
import { fail } from '../core/errors.js';
import { CHAR_TO_BYTE, byteLevelEncode, splitLlama3 } from './byte-level.js';
import { checkTokenId } from './tokenizer.js';
import type { Tokenizer } from './tokenizer.js';

export const TOKEN_TYPE = {
  UNDEFINED: 0,
  NORMAL: 1,
  UNKNOWN: 2,
  CONTROL: 3,
  USER_DEFINED: 4,
  UNUSED: 5,
  BYTE: 6,
} as const;

export const SUPPORTED_GGUF_TOKENIZER_MODELS: readonly string[] = ['llama', 'gpt2'];

/** Pre-tokenizer names that mean exactly the Llama-3 rules implemented here. */
const LLAMA3_PRE_NAMES: readonly string[] = ['llama-bpe', 'llama3', 'llama-v3'];

/** Token texts llama.cpp treats as end of generation. */
const EOG_TEXTS: readonly string[] = [
  '<|eot_id|>',
  '<|eom_id|>',
  '<|im_end|>',
  '<|end|>',
  '<end_of_turn>',
  '<|endoftext|>',
  '<EOT>',
];

export interface GgufTokenizerMeta {
  model: string;
  tokens: string[];
  scores?: number[];
  tokenTypes?: number[];
  merges?: string[];
  bosId?: number;
  eosId?: number;
  eotId?: number;
  unkId?: number;
  padId?: number;
  addBos?: boolean;
  addSpacePrefix?: boolean;
  pre?: string;
}

export interface GgufTokenizer extends Tokenizer {
  readonly model: 'llama' | 'gpt2';
  /** The pre-tokenizer name from the metadata ('gpt2' models; undefined when absent). */
  readonly pre: string | undefined;
  /** False when `pre` names a pre-tokenizer that is approximated by the Llama-3 rules. */
  readonly preIsExact: boolean;
  readonly padId: number | undefined;
  readonly unkId: number | undefined;
}

/** Read the tokenizer.ggml.* keys of a GGUF metadata table into a GgufTokenizerMeta. */
export function ggufTokenizerMetaFromKv(kv: Readonly<Record<string, unknown>>): GgufTokenizerMeta {
  const str = (key: string): string | undefined => {
    const v = kv[key];
    if (v === undefined) return undefined;
    if (typeof v !== 'string') fail('config', `GGUF ${key} must be a string`);
    return v;
  };
  const int = (key: string): number | undefined => {
    const v = kv[key];
    if (v === undefined) return undefined;
    const n = typeof v === 'bigint' ? Number(v) : v;
    if (typeof n !== 'number' || !Number.isInteger(n)) fail('config', `GGUF ${key} must be an integer`);
    return n;
  };
  const bool = (key: string): boolean | undefined => {
    const v = kv[key];
    if (v === undefined) return undefined;
    if (typeof v !== 'boolean') fail('config', `GGUF ${key} must be a boolean`);
    return v;
  };
  const list = <T>(key: string, ok: (x: unknown) => boolean, what: string): T[] | undefined => {
    const v = kv[key];
    if (v === undefined) return undefined;
    const arr = ArrayBuffer.isView(v) ? Array.from(v as unknown as ArrayLike<number>) : v;
    if (!Array.isArray(arr) || !arr.every(ok)) fail('config', `GGUF ${key} must be an array of ${what}`);
    return arr as T[];
  };
  const model = str('tokenizer.ggml.model');
  if (model === undefined) fail('config', 'GGUF metadata has no tokenizer.ggml.model');
  const tokens = list<string>('tokenizer.ggml.tokens', (x) => typeof x === 'string', 'strings');
  if (tokens === undefined) fail('config', 'GGUF metadata has no tokenizer.ggml.tokens');
  const meta: GgufTokenizerMeta = { model, tokens };
  const optional: Partial<GgufTokenizerMeta> = {
    scores: list<number>('tokenizer.ggml.scores', (x) => typeof x === 'number', 'numbers'),
    tokenTypes: list<number>('tokenizer.ggml.token_type', (x) => Number.isInteger(x), 'integers'),
    merges: list<string>('tokenizer.ggml.merges', (x) => typeof x === 'string', 'strings'),
    bosId: int('tokenizer.ggml.bos_token_id'),
    eosId: int('tokenizer.ggml.eos_token_id'),
    eotId: int('tokenizer.ggml.eot_token_id'),
    unkId: int('tokenizer.ggml.unknown_token_id'),
    padId: int('tokenizer.ggml.padding_token_id'),
    addBos: bool('tokenizer.ggml.add_bos_token'),
    addSpacePrefix: bool('tokenizer.ggml.add_space_prefix'),
    pre: str('tokenizer.ggml.pre'),
  };
  for (const [k, v] of Object.entries(optional)) if (v !== undefined) (meta as unknown as Record<string, unknown>)[k] = v;
  return meta;
}

/** Build the tokenizer that a GGUF file's tokenizer.ggml.* metadata describes. */
export function ggufTokenizer(meta: GgufTokenizerMeta): GgufTokenizer {
  if (meta.model !== 'llama' && meta.model !== 'gpt2') {
    fail(
      'config',
      `unsupported tokenizer model '${meta.model}' (tokenizer.ggml.model); supported: ${SUPPORTED_GGUF_TOKENIZER_MODELS.join(', ')}`,
    );
  }
  return meta.model === 'llama' ? new SpmTokenizer(meta) : new ByteLevelBpeTokenizer(meta);
}

// ---------------------------------------------------------------------------------------------

interface Bigram {
  left: number;
  right: number;
  text: string;
  /** Lower sorts first: the negated score (SPM) or the merge rank (BPE). */
  order: number;
}

/** A binary min-heap of bigrams by (order, left): the best pair, leftmost among equals, first. */
class BigramQueue {
  private readonly items: Bigram[] = [];

  get size(): number {
    return this.items.length;
  }

  private static before(a: Bigram, b: Bigram): boolean {
    return a.order < b.order || (a.order === b.order && a.left < b.left);
  }

  push(b: Bigram): void {
    const items = this.items;
    items.push(b);
    let i = items.length - 1;
    while (i > 0) {
      const parent = (i - 1) >> 1;
      if (!BigramQueue.before(items[i]!, items[parent]!)) break;
      [items[i], items[parent]] = [items[parent]!, items[i]!];
      i = parent;
    }
  }

  pop(): Bigram {
    const items = this.items;
    const top = items[0]!;
    const last = items.pop()!;
    if (items.length > 0) {
      items[0] = last;
      let i = 0;
      for (;;) {
        const l = 2 * i + 1;
        const r = l + 1;
        let best = i;
        if (l < items.length && BigramQueue.before(items[l]!, items[best]!)) best = l;
        if (r < items.length && BigramQueue.before(items[r]!, items[best]!)) best = r;
        if (best === i) break;
        [items[i], items[best]] = [items[best]!, items[i]!];
        i = best;
      }
    }
    return top;
  }
}

/**
 * Merge adjacent symbols of `symbols` while `rankOf(left, right)` gives a priority (lower first,
 * ties leftmost), and return the surviving symbols in order. Shared by SPM and BPE, which differ
 * only in how a pair is ranked.
 */
function mergeSymbols(symbols: string[], rankOf: (left: string, right: string) => number | undefined): string[] {
  const n = symbols.length;
  if (n < 2) return symbols;
  const sym = symbols.slice();
  const alive = new Uint8Array(n).fill(1);
  const prev = new Int32Array(n);
  const next = new Int32Array(n);
  for (let i = 0; i < n; i++) {
    prev[i] = i - 1;
    next[i] = i + 1 < n ? i + 1 : -1;
  }
  const queue = new BigramQueue();
  const tryAdd = (left: number, right: number): void => {
    if (left < 0 || right < 0) return;
    const order = rankOf(sym[left]!, sym[right]!);
    if (order !== undefined) queue.push({ left, right, text: sym[left]! + sym[right]!, order });
  };
  for (let i = 1; i < n; i++) tryAdd(i - 1, i);
  while (queue.size > 0) {
    const b = queue.pop();
    // Skip pairs made stale by an earlier merge of either symbol.
    if (!alive[b.left] || !alive[b.right] || sym[b.left]! + sym[b.right]! !== b.text) continue;
    sym[b.left] = b.text;
    alive[b.right] = 0;
    const after = next[b.right]!;
    next[b.left] = after;
    if (after >= 0) prev[after] = b.left;
    tryAdd(prev[b.left]!, b.left);
    tryAdd(b.left, after);
  }
  const out: string[] = [];
  for (let i = 0; i !== -1; i = next[i]!) out.push(sym[i]!);
  return out;
}

const utf8 = new TextEncoder();
const utf8Decoder = new TextDecoder('utf-8', { ignoreBOM: true });

type Fragment = string | number; // raw text, or the id of a special token found in the text

abstract class GgufTokenizerBase implements GgufTokenizer {
  abstract readonly model: 'llama' | 'gpt2';
  readonly vocabSize: number;
  readonly bosId: number | undefined;
  readonly eosIds: readonly number[];
  readonly addBos: boolean;
  readonly padId: number | undefined;
  readonly unkId: number | undefined;
  abstract readonly pre: string | undefined;
  abstract readonly preIsExact: boolean;

  protected readonly tokens: readonly string[];
  protected readonly types: Uint8Array;
  protected readonly idOf = new Map<string, number>();
  /** Special tokens matched in raw text, longest first (ties: lower id first). */
  private readonly specials: readonly number[];
  /** Lazily filled UTF-8 bytes of each token's decoded piece. */
  private readonly pieceCache: (Uint8Array | undefined)[];

  protected constructor(meta: GgufTokenizerMeta, defaults: { bosId?: number; eosId?: number; unkId?: number; addBos: boolean }) {
    const { tokens } = meta;
    const n = tokens.length;
    if (!Array.isArray(tokens) || n === 0) fail('config', 'tokenizer.ggml.tokens is empty');
    if (meta.scores !== undefined && meta.scores.length !== n) {
      fail('config', `tokenizer.ggml.scores has ${meta.scores.length} entries for ${n} tokens`);
    }
    if (meta.tokenTypes !== undefined && meta.tokenTypes.length !== n) {
      fail('config', `tokenizer.ggml.token_type has ${meta.tokenTypes.length} entries for ${n} tokens`);
    }
    this.vocabSize = n;
    // llama.cpp renames empty tokens so that they cannot match text.
    this.tokens = tokens.map((t, i) => (t === '' ? `[EMPTY_${i}]` : t));
    this.types = new Uint8Array(n).fill(TOKEN_TYPE.NORMAL);
    if (meta.tokenTypes !== undefined) {
      meta.tokenTypes.forEach((t, i) => {
        this.types[i] = t >= TOKEN_TYPE.NORMAL && t <= TOKEN_TYPE.BYTE ? t : TOKEN_TYPE.UNDEFINED;
      });
    }
    this.tokens.forEach((t, i) => this.idOf.set(t, i)); // a duplicated text maps to its last id, as llama.cpp

    const special = (key: string, v: number | undefined): number | undefined => {
      if (v === undefined) return undefined;
      if (!Number.isInteger(v) || v < 0 || v >= n) fail('config', `tokenizer.ggml.${key} ${v} is outside the vocabulary of ${n}`);
      return v;
    };
    const orDefault = (v: number | undefined): number | undefined => (v !== undefined && v < n ? v : undefined);
    this.bosId = special('bos_token_id', meta.bosId) ?? orDefault(defaults.bosId);
    const eosId = special('eos_token_id', meta.eosId) ?? orDefault(defaults.eosId);
    const eotId = special('eot_token_id', meta.eotId);
    this.unkId = special('unknown_token_id', meta.unkId) ?? orDefault(defaults.unkId);
    this.padId = special('padding_token_id', meta.padId);
    this.addBos = (meta.addBos ?? defaults.addBos) && this.bosId !== undefined;

    const eog: number[] = [];
    const addEog = (id: number | undefined): void => {
      if (id !== undefined && !eog.includes(id)) eog.push(id);
    };
    addEog(eosId);
    addEog(eotId);
    for (const text of EOG_TEXTS) addEog(this.idOf.get(text));
    this.eosIds = eog;

    const specials: number[] = [];
    this.types.forEach((t, i) => {
      if (t === TOKEN_TYPE.CONTROL || t === TOKEN_TYPE.USER_DEFINED || t === TOKEN_TYPE.UNKNOWN) specials.push(i);
    });
    specials.sort((a, b) => this.tokens[b]!.length - this.tokens[a]!.length || a - b);
    this.specials = specials;
    this.pieceCache = new Array<Uint8Array | undefined>(n);
  }

  /** Tokenize one fragment of raw text (no special tokens in it) into `out`. */
  protected abstract encodeFragment(text: string, afterSpecial: boolean, out: number[]): void;
  /** The UTF-8 bytes that a NORMAL token stands for. */
  protected abstract normalPiece(text: string): Uint8Array;

  encode(text: string, opts: { addSpecial?: boolean } = {}): number[] {
    const out: number[] = [];
    if ((opts.addSpecial ?? true) && this.addBos) out.push(this.bosId!);
    let afterSpecial = true; // the start of the input counts as following a special token
    for (const fragment of this.partition(text)) {
      if (typeof fragment === 'number') {
        out.push(fragment);
        afterSpecial = true;
      } else {
        this.encodeFragment(fragment, afterSpecial, out);
        afterSpecial = false;
      }
    }
    return out;
  }

  /** Split `text` at every occurrence of a special token, longest tokens first (llama.cpp's order). */
  private partition(text: string): Fragment[] {
    let fragments: Fragment[] = text.length > 0 ? [text] : [];
    for (const id of this.specials) {
      const needle = this.tokens[id]!;
      if (!fragments.some((f) => typeof f === 'string' && f.includes(needle))) continue;
      const next: Fragment[] = [];
      for (const f of fragments) {
        if (typeof f === 'number') {
          next.push(f);
          continue;
        }
        let from = 0;
        for (let at = f.indexOf(needle); at >= 0; at = f.indexOf(needle, from)) {
          if (at > from) next.push(f.slice(from, at));
          next.push(id);
          from = at + needle.length;
        }
        if (from < f.length) next.push(f.slice(from));
      }
      fragments = next;
    }
    return fragments;
  }

  decode(ids: readonly number[], opts: { skipSpecial?: boolean } = {}): string {
    const skipSpecial = opts.skipSpecial ?? false;
    const parts: Uint8Array[] = [];
    let length = 0;
    for (const id of ids) {
      checkTokenId(id, this.vocabSize);
      const type = this.types[id]!;
      if (skipSpecial && (type === TOKEN_TYPE.CONTROL || type === TOKEN_TYPE.UNKNOWN)) continue;
      const piece = this.piece(id);
      parts.push(piece);
      length += piece.length;
    }
    const bytes = new Uint8Array(length);
    let at = 0;
    for (const p of parts) {
      bytes.set(p, at);
      at += p.length;
    }
    return this.finishDecode(utf8Decoder.decode(bytes));
  }

  protected finishDecode(text: string): string {
    return text;
  }

  private piece(id: number): Uint8Array {
    const cached = this.pieceCache[id];
    if (cached !== undefined) return cached;
    const text = this.tokens[id]!;
    let bytes: Uint8Array;
    switch (this.types[id]) {
      case TOKEN_TYPE.NORMAL:
        bytes = this.normalPiece(text);
        break;
      case TOKEN_TYPE.CONTROL:
      case TOKEN_TYPE.UNKNOWN:
      case TOKEN_TYPE.USER_DEFINED:
        bytes = utf8.encode(text);
        break;
      case TOKEN_TYPE.BYTE: {
        const m = /^<0x([0-9A-Fa-f]{2})>$/.exec(text);
        bytes = m ? Uint8Array.of(parseInt(m[1]!, 16)) : utf8.encode(text);
        break;
      }
      default: // unused and undefined tokens produce nothing, as in llama.cpp
        bytes = new Uint8Array(0);
    }
    this.pieceCache[id] = bytes;
    return bytes;
  }

  tokenText(id: number): string {
    checkTokenId(id, this.vocabSize);
    return this.tokens[id]!;
  }

  isSpecial(id: number): boolean {
    checkTokenId(id, this.vocabSize);
    const t = this.types[id];
    return t === TOKEN_TYPE.CONTROL || t === TOKEN_TYPE.UNKNOWN;
  }

  /** The token for something the vocabulary cannot spell: unk, or a clear error. */
  protected unknownFallback(what: string): number {
    if (this.unkId === undefined) fail('config', `the vocabulary has no token for ${what} and no unknown token`);
    return this.unkId;
  }
}

const SPACE = ' ';
const ESCAPED_SPACE = '\u2581';

class SpmTokenizer extends GgufTokenizerBase {
  readonly model = 'llama' as const;
  readonly pre = undefined;
  readonly preIsExact = true;
  private readonly scores: readonly number[];
  private readonly addSpacePrefix: boolean;
  private readonly byteIds: Int32Array;

  constructor(meta: GgufTokenizerMeta) {
    super(meta, { bosId: 1, eosId: 2, unkId: 0, addBos: true });
    this.scores = meta.scores ?? new Array<number>(meta.tokens.length).fill(0);
    this.addSpacePrefix = meta.addSpacePrefix ?? true;
    // Byte fallback: <0xXX>, else the one-character token for an ASCII byte, else none (-1).
    this.byteIds = new Int32Array(256).fill(-1);
    for (let b = 0; b < 256; b++) {
      const hex = `<0x${b.toString(16).toUpperCase().padStart(2, '0')}>`;
      this.byteIds[b] = this.idOf.get(hex) ?? (b < 0x80 ? this.idOf.get(String.fromCharCode(b)) : undefined) ?? -1;
    }
  }

  protected encodeFragment(fragment: string, afterSpecial: boolean, out: number[]): void {
    const text = (this.addSpacePrefix && afterSpecial ? SPACE : '') + fragment;
    const escaped = text.replaceAll(SPACE, ESCAPED_SPACE);
    const pieces = mergeSymbols(Array.from(escaped), (left, right) => {
      const id = this.idOf.get(left + right);
      return id === undefined ? undefined : -this.scores[id]!;
    });
    for (const piece of pieces) {
      const id = this.idOf.get(piece);
      if (id !== undefined) {
        out.push(id);
        continue;
      }
      for (const b of utf8.encode(piece)) {
        const byteId = this.byteIds[b]!;
        out.push(byteId >= 0 ? byteId : this.unknownFallback(`byte 0x${b.toString(16).padStart(2, '0')}`));
      }
    }
  }

  protected normalPiece(text: string): Uint8Array {
    return utf8.encode(text.replaceAll(ESCAPED_SPACE, SPACE));
  }

  protected override finishDecode(text: string): string {
    return this.addSpacePrefix && text.startsWith(SPACE) ? text.slice(1) : text;
  }
}

class ByteLevelBpeTokenizer extends GgufTokenizerBase {
  readonly model = 'gpt2' as const;
  readonly pre: string | undefined;
  readonly preIsExact: boolean;
  /** Merge rank by left piece, then right piece. */
  private readonly ranks = new Map<string, Map<string, number>>();

  constructor(meta: GgufTokenizerMeta) {
    super(meta, { addBos: true });
    this.pre = meta.pre;
    this.preIsExact = meta.pre !== undefined && LLAMA3_PRE_NAMES.includes(meta.pre);
    if (meta.merges === undefined) fail('config', "a 'gpt2' tokenizer needs tokenizer.ggml.merges");
    meta.merges.forEach((merge, rank) => {
      const cut = merge.indexOf(' ', 1); // as llama.cpp: the first space after the first character
      if (cut < 0 || cut === merge.length - 1) fail('config', `tokenizer.ggml.merges[${rank}] '${merge}' is not "left right"`);
      const left = merge.slice(0, cut);
      const right = merge.slice(cut + 1);
      let byRight = this.ranks.get(left);
      if (byRight === undefined) this.ranks.set(left, (byRight = new Map()));
      if (!byRight.has(right)) byRight.set(right, rank); // the first occurrence wins
    });
  }

  protected encodeFragment(fragment: string, _afterSpecial: boolean, out: number[]): void {
    for (const word of splitLlama3(fragment)) {
      const mapped = byteLevelEncode(word);
      const whole = this.idOf.get(mapped);
      if (whole !== undefined) {
        out.push(whole); // ignore_merges: a pre-token that is a token is taken whole
        continue;
      }
      const pieces = mergeSymbols(Array.from(mapped), (left, right) => this.ranks.get(left)?.get(right));
      for (const piece of pieces) {
        const id = this.idOf.get(piece);
        if (id !== undefined) {
          out.push(id);
          continue;
        }
        // A merge whose result is not a token: fall back to the single byte characters.
        for (const c of piece) out.push(this.idOf.get(c) ?? this.unknownFallback(`'${c}'`));
      }
    }
  }

  protected normalPiece(text: string): Uint8Array {
    const bytes: number[] = [];
    for (const c of text) {
      const b = CHAR_TO_BYTE.get(c);
      if (b !== undefined) bytes.push(b);
      else bytes.push(...utf8.encode(c)); // not a byte character: keep it as text
    }
    return Uint8Array.from(bytes);
  }
}
