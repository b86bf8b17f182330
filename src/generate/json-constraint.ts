/**
 * JSON mode by constrained sampling (OpenAI's response_format {type: "json_object"}): whatever the
 * logits, the generated text is a prefix of a JSON document (RFC 8259) whose top level is an
 * object, and EOS can be sampled only once that object is closed, so a finished generation always
 * JSON.parse()s to an object.
 *
 * How:
 *  - Each token's contribution is worked out once per tokenizer as UTF-8 BYTES (tokenBytes): the
 *    text it adds after a fixed ordinary anchor token (decode([anchor, id]) minus decode([anchor]),
 *    which keeps SentencePiece's leading "▁" as a space). A token that adds part of a UTF-8
 *    character (byte-fallback <0xNN>, half-character byte-level BPE pieces) decodes to U+FFFD, so
 *    its bytes come from its piece instead (<0xNN>, or the GPT-2 byte-to-unicode alphabet), checked
 *    against the decoded text. Special tokens other than EOS, tokens that add nothing and tokens
 *    whose bytes cannot be established are never allowed (never allowing a token is always safe).
 *  - A byte-level pushdown automaton (JsonMachine) accepts exactly the prefixes of
 *    ws* object, with RFC 8259's grammar inside: strings need control characters escaped and hold
 *    well-formed UTF-8 (no overlongs, no surrogates), \uXXXX escapes, numbers
 *    -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?, true/false/null. Two bounds keep the model from
 *    running away in structure: containers nest at most maxDepth deep (default 32), and at most
 *    MAX_WHITESPACE_RUN whitespace bytes follow each other outside strings. Every state the
 *    automaton can reach can still be completed, so every emitted prefix extends to a document.
 *  - mask() walks a trie of all token byte strings in preorder while stepping the automaton,
 *    pruning a whole subtree at the first byte the automaton rejects (one step per trie node, with
 *    the container stack shared and pushes undone on the way back). The resulting allowed/denied
 *    id list is cached per automaton state (bounded), since states inside strings repeat a lot.
 *
 *  - A token budget (budget(tokensLeft), called by the sampler before each mask(); accept() also
 *    counts it down) steers to a complete document before max_tokens runs out. closingBytes() is
 *    the exact least number of bytes that completes the document from a state; a token is allowed
 *    only if closingBytes() after it <= tokensLeft - 1, taking the worst case that each closing
 *    byte costs one token. Induction: if closingBytes() <= tokensLeft now, the first byte of a
 *    cheapest completion, as a single-byte token, keeps it so; the start needs 2 ('{}'), so any
 *    max_tokens >= 2 ends in a complete document. The walk records closingBytes() after every
 *    allowed token; the cache keeps, per state, its maximum and the tokens that leave more to close
 *    than the state itself ("raisers", e.g. ',' or '"' or '\\u'). Near the end the cached mask
 *    is applied and the raisers that do not fit are masked too; only when the budget is below the
 *    state's own closingBytes() (the guarantee already lost) is the state walked again, uncached,
 *    for the least bad tokens. Limits: the guarantee needs single-byte tokens for the closing
 *    alphabet (CLOSING_BYTES, see missingClosingTokens(); every byte-level and byte-fallback
 *    vocabulary has all 256). Without them, or with a budget below 2, the filter keeps the least
 *    bad tokens (fewest closing bytes after) instead of an all -Infinity row, and the output may
 *    end unfinished as without a budget (finish_reason 'length', `complete` false).
 *
 * Contract with the sampler: mask() sets the disallowed logits to -Infinity in place and leaves
 * the allowed ones untouched. Logits beyond the tokenizer's vocabulary (padded embedding rows) are
 * always disallowed. If no token at all could continue the document (impossible for a vocabulary
 * with single-byte tokens, which every byte-level and byte-fallback vocabulary has), EOS is left
 * allowed rather than an all -Infinity row: the output is then an unfinished document, and
 * `complete` stays false so the caller can tell.
 */
import { fail } from '../core/errors.js';
import { CHAR_TO_BYTE } from '../text/byte-level.js';
import type { Tokenizer } from '../text/tokenizer.js';
import type { TokenConstraint } from './generate.js';

export type { TokenConstraint } from './generate.js';


export const DEFAULT_MAX_DEPTH = 32;
/** Longest run of whitespace bytes allowed outside strings (models otherwise loop on newlines). */
export const MAX_WHITESPACE_RUN = 4;
/** Automaton states whose mask is remembered, per tokenizer and depth bound. */
const MASK_CACHE_ENTRIES = 1024;

// Automaton modes. Structural modes (START..AFTER) accept bounded whitespace.
const START = 0; // before the top-level '{'
const OBJ_FIRST = 1; // after '{': a key or '}'
const OBJ_KEY = 2; // after ',' in an object: a key
const COLON = 3; // after a key
const VALUE = 4; // after ':' or ',' in an array: a value
const ARR_FIRST = 5; // after '[': a value or ']'
const AFTER = 6; // after a value: ',' or the closer of the innermost container
const STR = 7; // inside a string
const ESC = 8; // after '\' in a string
const HEX = 9; // in \uXXXX; aux = hex digits still needed
const UTF8_FIRST = 10; // first continuation byte of a character; aux = remaining | lo << 8 | hi << 16
const UTF8_CONT = 11; // later continuation bytes (0x80..0xBF); aux = remaining
const NUM_MINUS = 12; // after '-'
const NUM_ZERO = 13; // integer part is '0'
const NUM_INT = 14; // in integer digits (first was 1-9)
const NUM_DOT = 15; // after '.'
const NUM_FRAC = 16; // in fraction digits
const NUM_EXP = 17; // after 'e'/'E'
const NUM_EXP_SIGN = 18; // after the exponent's sign
const NUM_EXP_DIGITS = 19; // in exponent digits
const LITERAL = 20; // in true/false/null; aux = literal index << 3 | next position
const DONE = 21; // the top-level object is closed

const OBJECT = 1;
const ARRAY = 2;
const LITERALS: readonly Uint8Array[] = ['true', 'false', 'null'].map((s) => new TextEncoder().encode(s));

const isWhitespace = (b: number): boolean => b === 0x20 || b === 0x0a || b === 0x0d || b === 0x09;
const isDigit = (b: number): boolean => b >= 0x30 && b <= 0x39;
const isHex = (b: number): boolean => isDigit(b) || (b >= 0x41 && b <= 0x46) || (b >= 0x61 && b <= 0x66);

/**
 * The byte automaton. State: mode, aux (mode-specific), ws (current whitespace run), key (the open
 * string is an object key), depth and stack[0, depth) of OBJECT/ARRAY. step() returns false for a
 * byte that cannot come next; it never pushes on a rejected byte, and records its push (if any) in
 * pushedAt/pushedOld so that the trie walk can undo it.
 */
export class JsonMachine {
  mode = START;
  aux = 0;
  ws = 0;
  key = 0;
  depth = 0;
  readonly stack: Uint8Array;
  pushedAt = -1;
  pushedOld = 0;

  constructor(readonly maxDepth: number = DEFAULT_MAX_DEPTH) {
    if (!Number.isInteger(maxDepth) || maxDepth < 1) fail('usage', `JSON maxDepth must be an integer >= 1, got ${maxDepth}`);
    this.stack = new Uint8Array(maxDepth);
  }

  clone(): JsonMachine {
    const m = new JsonMachine(this.maxDepth);
    m.mode = this.mode;
    m.aux = this.aux;
    m.ws = this.ws;
    m.key = this.key;
    m.depth = this.depth;
    m.stack.set(this.stack);
    return m;
  }

  get complete(): boolean {
    return this.mode === DONE;
  }

  /**
   * The exact least number of bytes that completes the document from this state (0 once complete).
   * Cheapest completions: finish the open token (a pending escape takes one byte, \uXXXX its
   * remaining hex digits, a UTF-8 character its remaining continuation bytes, a literal its
   * remaining letters, a number one digit after '-', '.', 'e' or the exponent's sign), then
   * whatever the innermost container still needs to be closable (a key string '":0', after a key
   * ':0', a value '0', after ',' in an object '"":0'), then one closer per open container.
   * Closing never pushes and never needs whitespace, so the depth and whitespace bounds do not
   * matter. O(1): only the depth count is read, not the stack.
   */
  closingBytes(): number {
    const d = this.depth;
    switch (this.mode) {
      case START:
        return 2; // {}
      case OBJ_FIRST:
      case ARR_FIRST:
      case AFTER:
      case NUM_ZERO:
      case NUM_INT:
      case NUM_FRAC:
      case NUM_EXP_DIGITS:
        return d;
      case OBJ_KEY:
        return 4 + d; // "":0
      case COLON:
        return 2 + d; // :0
      case VALUE:
      case NUM_MINUS:
      case NUM_DOT:
      case NUM_EXP:
      case NUM_EXP_SIGN:
        return 1 + d; // 0
      case STR:
        return this.stringClose() + d;
      case ESC:
        return 1 + this.stringClose() + d;
      case HEX:
      case UTF8_CONT:
        return this.aux + this.stringClose() + d;
      case UTF8_FIRST:
        return (this.aux & 0xff) + this.stringClose() + d;
      case LITERAL:
        return LITERALS[this.aux >> 3]!.length - (this.aux & 7) + d;
      default:
        return 0; // DONE
    }
  }

  /** Bytes that end the open string and whatever it still owes: '"', or '":0' for a key. */
  private stringClose(): number {
    return this.key ? 3 : 1;
  }

  /** Feeds every byte; false (state then undefined) at the first rejected byte. */
  feed(bytes: Uint8Array): boolean {
    for (const b of bytes) if (!this.step(b)) return false;
    return true;
  }

  /** A key identifying the state, for the mask cache. */
  stateKey(): string {
    // Fields a mode does not read are left out, so that equal states share a cache entry.
    const m = this.mode;
    const usesAux = m === HEX || m === UTF8_FIRST || m === UTF8_CONT || m === LITERAL;
    const inString = m >= STR && m <= UTF8_CONT;
    let k = `${m},${usesAux ? this.aux : 0},${m <= AFTER ? this.ws : 0},${inString ? this.key : 0},`;
    for (let i = 0; i < this.depth; i++) k += this.stack[i] === OBJECT ? 'o' : 'a';
    return k;
  }

  step(b: number): boolean {
    this.pushedAt = -1;
    switch (this.mode) {
      case STR:
        if (b === 0x22) {
          this.mode = this.key ? COLON : AFTER;
          this.ws = 0;
          return true;
        }
        if (b === 0x5c) {
          this.mode = ESC;
          return true;
        }
        if (b < 0x20) return false;
        if (b < 0x80) return true;
        return this.utf8Lead(b);
      case ESC:
        if (b === 0x75) {
          this.mode = HEX;
          this.aux = 4;
          return true;
        }
        if (b === 0x22 || b === 0x5c || b === 0x2f || b === 0x62 || b === 0x66 || b === 0x6e || b === 0x72 || b === 0x74) {
          this.mode = STR;
          return true;
        }
        return false;
      case HEX:
        if (!isHex(b)) return false;
        if (--this.aux === 0) this.mode = STR;
        return true;
      case UTF8_FIRST: {
        const lo = (this.aux >> 8) & 0xff;
        const hi = (this.aux >> 16) & 0xff;
        if (b < lo || b > hi) return false;
        const remaining = (this.aux & 0xff) - 1;
        this.mode = remaining === 0 ? STR : UTF8_CONT;
        this.aux = remaining;
        return true;
      }
      case UTF8_CONT:
        if (b < 0x80 || b > 0xbf) return false;
        if (--this.aux === 0) this.mode = STR;
        return true;
      case NUM_MINUS:
        if (b === 0x30) this.mode = NUM_ZERO;
        else if (b >= 0x31 && b <= 0x39) this.mode = NUM_INT;
        else return false;
        return true;
      case NUM_ZERO:
        if (b === 0x2e) this.mode = NUM_DOT;
        else if (b === 0x65 || b === 0x45) this.mode = NUM_EXP;
        else return this.afterValue(b);
        return true;
      case NUM_INT:
        if (isDigit(b)) return true;
        if (b === 0x2e) this.mode = NUM_DOT;
        else if (b === 0x65 || b === 0x45) this.mode = NUM_EXP;
        else return this.afterValue(b);
        return true;
      case NUM_DOT:
        if (!isDigit(b)) return false;
        this.mode = NUM_FRAC;
        return true;
      case NUM_FRAC:
        if (isDigit(b)) return true;
        if (b === 0x65 || b === 0x45) {
          this.mode = NUM_EXP;
          return true;
        }
        return this.afterValue(b);
      case NUM_EXP:
        if (b === 0x2b || b === 0x2d) this.mode = NUM_EXP_SIGN;
        else if (isDigit(b)) this.mode = NUM_EXP_DIGITS;
        else return false;
        return true;
      case NUM_EXP_SIGN:
        if (!isDigit(b)) return false;
        this.mode = NUM_EXP_DIGITS;
        return true;
      case NUM_EXP_DIGITS:
        if (isDigit(b)) return true;
        return this.afterValue(b);
      case LITERAL: {
        const literal = LITERALS[this.aux >> 3]!;
        const at = this.aux & 7;
        if (b !== literal[at]) return false;
        if (at + 1 === literal.length) {
          this.mode = AFTER;
          this.ws = 0;
        } else {
          this.aux++;
        }
        return true;
      }
      case DONE:
        return false;
      default:
        return this.structural(b);
    }
  }

  /** A number ended: `b` is read as the byte after a value. */
  private afterValue(b: number): boolean {
    this.mode = AFTER;
    this.ws = 0;
    return this.structural(b);
  }

  private structural(b: number): boolean {
    if (isWhitespace(b)) {
      if (this.ws >= MAX_WHITESPACE_RUN) return false;
      this.ws++;
      return true;
    }
    switch (this.mode) {
      case START:
        if (b !== 0x7b) return false;
        return this.push(OBJECT, OBJ_FIRST);
      case OBJ_FIRST:
        if (b === 0x7d) return this.pop();
        return this.startKey(b);
      case OBJ_KEY:
        return this.startKey(b);
      case COLON:
        if (b !== 0x3a) return false;
        this.mode = VALUE;
        this.ws = 0;
        return true;
      case ARR_FIRST:
        if (b === 0x5d) return this.pop();
        return this.startValue(b);
      case VALUE:
        return this.startValue(b);
      case AFTER: {
        const top = this.stack[this.depth - 1];
        if (b === 0x2c) {
          this.mode = top === OBJECT ? OBJ_KEY : VALUE;
          this.ws = 0;
          return true;
        }
        if ((b === 0x7d && top === OBJECT) || (b === 0x5d && top === ARRAY)) return this.pop();
        return false;
      }
      default:
        return false;
    }
  }

  private startKey(b: number): boolean {
    if (b !== 0x22) return false;
    this.mode = STR;
    this.key = 1;
    return true;
  }

  private startValue(b: number): boolean {
    this.ws = 0;
    switch (b) {
      case 0x7b:
        return this.push(OBJECT, OBJ_FIRST);
      case 0x5b:
        return this.push(ARRAY, ARR_FIRST);
      case 0x22:
        this.mode = STR;
        this.key = 0;
        return true;
      case 0x2d:
        this.mode = NUM_MINUS;
        return true;
      case 0x30:
        this.mode = NUM_ZERO;
        return true;
      case 0x74: // true
      case 0x66: // false
      case 0x6e: // null
        this.mode = LITERAL;
        this.aux = ((b === 0x74 ? 0 : b === 0x66 ? 1 : 2) << 3) | 1;
        return true;
      default:
        if (b >= 0x31 && b <= 0x39) {
          this.mode = NUM_INT;
          return true;
        }
        return false;
    }
  }

  private push(kind: number, mode: number): boolean {
    if (this.depth >= this.maxDepth) return false;
    this.pushedAt = this.depth;
    this.pushedOld = this.stack[this.depth]!;
    this.stack[this.depth++] = kind;
    this.mode = mode;
    this.ws = 0;
    return true;
  }

  private pop(): boolean {
    this.depth--;
    this.mode = this.depth === 0 ? DONE : AFTER;
    this.ws = 0;
    return true;
  }

  /** The lead byte of a multi-byte UTF-8 character (RFC 3629's table). */
  private utf8Lead(b: number): boolean {
    if (b >= 0xc2 && b <= 0xdf) return this.expect(1, 0x80, 0xbf);
    if (b === 0xe0) return this.expect(2, 0xa0, 0xbf);
    if (b === 0xed) return this.expect(2, 0x80, 0x9f); // no surrogates
    if (b >= 0xe1 && b <= 0xef) return this.expect(2, 0x80, 0xbf);
    if (b === 0xf0) return this.expect(3, 0x90, 0xbf);
    if (b >= 0xf1 && b <= 0xf3) return this.expect(3, 0x80, 0xbf);
    if (b === 0xf4) return this.expect(3, 0x80, 0x8f);
    return false;
  }

  private expect(remaining: number, lo: number, hi: number): boolean {
    this.mode = UTF8_FIRST;
    this.aux = remaining | (lo << 8) | (hi << 16);
    return true;
  }
}

const utf8 = new TextEncoder();

/**
 * Every byte closingBytes()'s cheapest completions use: quote (string end, escape), colon, the
 * digit 0 (value, number digit, hex digit), the closers, the letters that finish true/false/null,
 * and a continuation byte in each lead byte's allowed range (0x80: 0x80..0x8F and 0x80..0x9F;
 * 0xA0: 0xA0..0xBF and 0x90..0xBF).
 */
export const CLOSING_BYTES: readonly number[] = [...utf8.encode('":0}]ruealls'), 0x80, 0xa0].filter((b, i, all) => all.indexOf(b) === i);

/** The bytes of CLOSING_BYTES no single token stands for: where the budget guarantee does not hold. */
export function missingClosingTokens(tokenizer: Tokenizer): number[] {
  const single = new Set<number>();
  for (const b of vocabTables(tokenizer).bytes) if (b !== null && b.length === 1) single.add(b[0]!);
  return CLOSING_BYTES.filter((b) => !single.has(b));
}
const lossyUtf8 = new TextDecoder('utf-8', { ignoreBOM: true });
const BYTE_PIECE = /^<0x([0-9A-Fa-f]{2})>$/;

/**
 * Each token's UTF-8 bytes as it continues a text, or null for tokens JSON mode never allows
 * (special tokens, EOS, tokens that add nothing, tokens whose bytes cannot be established).
 */
export function tokenBytes(tokenizer: Tokenizer): (Uint8Array | null)[] {
  const eos = new Set(tokenizer.eosIds);
  const anchor = tokenizer.encode('a', { addSpecial: false });
  const anchorText = tokenizer.decode(anchor);
  const out: (Uint8Array | null)[] = new Array<Uint8Array | null>(tokenizer.vocabSize).fill(null);
  for (let id = 0; id < tokenizer.vocabSize; id++) {
    if (eos.has(id)) continue;
    let piece: string;
    let text: string;
    try {
      if (tokenizer.isSpecial(id)) continue;
      piece = tokenizer.tokenText(id);
      text = tokenizer.decode([...anchor, id]);
    } catch {
      continue; // a gap in the ids
    }
    if (!text.startsWith(anchorText)) continue;
    const added = text.slice(anchorText.length);
    let bytes: Uint8Array | null = null;
    if (!added.includes('\uFFFD')) {
      bytes = utf8.encode(added);
    } else {
      // Part of a character: the piece says which bytes; accept them only if they decode the same way.
      const byte = BYTE_PIECE.exec(piece);
      if (byte) {
        bytes = Uint8Array.of(parseInt(byte[1]!, 16));
      } else {
        const mapped: number[] = [];
        for (const c of piece) {
          const b = CHAR_TO_BYTE.get(c);
          if (b === undefined) break;
          mapped.push(b);
        }
        if (mapped.length === piece.length) bytes = Uint8Array.from(mapped);
      }
      if (bytes !== null && lossyUtf8.decode(bytes) !== added) bytes = null;
    }
    if (bytes !== null && bytes.length > 0) out[id] = bytes;
  }
  return out;
}

/**
 * A trie of the token byte strings, flattened in preorder: node i (1..) has byte[i], its depth
 * level[i] (1 = first byte), the end of its subtree subtreeEnd[i] (exclusive), and the ids of the
 * tokens that end there, ids[idStart[i], idStart[i + 1]).
 */
interface TokenTrie {
  byte: Uint8Array;
  level: Uint16Array;
  subtreeEnd: Int32Array;
  idStart: Int32Array;
  ids: Int32Array;
  maxLevel: number;
}

function compareBytes(a: Uint8Array, b: Uint8Array): number {
  const n = Math.min(a.length, b.length);
  for (let i = 0; i < n; i++) if (a[i] !== b[i]) return a[i]! - b[i]!;
  return a.length - b.length;
}

function buildTrie(bytes: readonly (Uint8Array | null)[]): TokenTrie {
  const order: number[] = [];
  bytes.forEach((b, id) => {
    if (b !== null) order.push(id);
  });
  order.sort((x, y) => compareBytes(bytes[x]!, bytes[y]!) || x - y);
  let maxLevel = 0;
  for (const id of order) maxLevel = Math.max(maxLevel, bytes[id]!.length);
  if (maxLevel > 0xffff) fail('usage', `a token of ${maxLevel} bytes is too long for JSON mode`);

  // In sorted order, a token adds one node per byte past its common prefix with the previous one.
  const nodeByte: number[] = [0];
  const nodeLevel: number[] = [0];
  const nodeOfToken: number[] = [];
  const path: number[] = [0]; // path[l] = node at level l on the current path
  let prev: Uint8Array = new Uint8Array(0);
  for (const id of order) {
    const b = bytes[id]!;
    let common = 0;
    while (common < b.length && common < prev.length && b[common] === prev[common]) common++;
    for (let l = common; l < b.length; l++) {
      path[l + 1] = nodeByte.length;
      nodeByte.push(b[l]!);
      nodeLevel.push(l + 1);
    }
    nodeOfToken.push(path[b.length]!);
    prev = b;
  }
  const n = nodeByte.length;
  const subtreeEnd = new Int32Array(n);
  // Preorder: a node's subtree ends at the next node whose level is not deeper.
  const open: number[] = [];
  for (let i = 0; i < n; i++) {
    while (open.length > 0 && nodeLevel[open[open.length - 1]!]! >= nodeLevel[i]!) subtreeEnd[open.pop()!] = i;
    open.push(i);
  }
  for (const i of open) subtreeEnd[i] = n;
  // Tokens of a node are consecutive in sorted order, and nodes come in the same order.
  const idStart = new Int32Array(n + 1);
  for (const node of nodeOfToken) idStart[node + 1]!++;
  for (let i = 0; i < n; i++) idStart[i + 1]! += idStart[i]!;
  return {
    byte: Uint8Array.from(nodeByte),
    level: Uint16Array.from(nodeLevel),
    subtreeEnd,
    idStart,
    ids: Int32Array.from(order),
    maxLevel,
  };
}

/** What one automaton state allows: either the allowed ids or the denied ones, whichever is shorter. */
interface CachedMask {
  listed: Int32Array;
  listedAreAllowed: boolean;
  /** the largest closingBytes() after any allowed token: budgets above it filter nothing */
  maxClosingAfter: number;
  /** how many tokens are allowed */
  allowedCount: number;
  /** the allowed tokens that leave more to close than the state itself, and what they leave */
  raisers: Int32Array;
  raiserClosing: Int32Array;
}

interface VocabTables {
  bytes: (Uint8Array | null)[];
  trie: TokenTrie;
  eos: readonly number[];
  masks: Map<number, Map<string, CachedMask>>; // by maxDepth, then by state key
}

const tablesByTokenizer = new WeakMap<Tokenizer, VocabTables>();

function vocabTables(tokenizer: Tokenizer): VocabTables {
  let t = tablesByTokenizer.get(tokenizer);
  if (t === undefined) {
    const bytes = tokenBytes(tokenizer);
    t = { bytes, trie: buildTrie(bytes), eos: [...tokenizer.eosIds], masks: new Map() };
    tablesByTokenizer.set(tokenizer, t);
  }
  return t;
}

class JsonObjectConstraint implements TokenConstraint {
  private readonly machine: JsonMachine;
  private readonly walker: JsonMachine;
  private readonly tables: VocabTables;
  private readonly cache: Map<string, CachedMask>;
  private readonly vocabSize: number;
  /** allowedStamp[id] === stamp marks id allowed in the current walk */
  private readonly allowedStamp: Uint32Array;
  private stamp = 0;
  /** closingAfter[id]: closingBytes() after token id, for the ids the latest walk allowed */
  private readonly closingAfter: Int32Array;
  /** tokens left including the next one (budget()), or Infinity without a budget */
  private tokensLeft = Infinity;
  // Saved walker state per trie level (level 0 = the current state).
  private readonly saveMode: Int32Array;
  private readonly saveAux: Int32Array;
  private readonly saveWs: Int32Array;
  private readonly saveKey: Int32Array;
  private readonly saveDepth: Int32Array;
  private readonly savePushedAt: Int32Array;
  private readonly savePushedOld: Uint8Array;

  constructor(tokenizer: Tokenizer, maxDepth: number) {
    this.machine = new JsonMachine(maxDepth);
    this.walker = new JsonMachine(maxDepth);
    this.tables = vocabTables(tokenizer);
    if (this.tables.eos.length === 0) fail('usage', 'JSON mode needs a tokenizer with an end-of-sequence token');
    let cache = this.tables.masks.get(maxDepth);
    if (cache === undefined) this.tables.masks.set(maxDepth, (cache = new Map()));
    this.cache = cache;
    this.vocabSize = tokenizer.vocabSize;
    this.allowedStamp = new Uint32Array(this.vocabSize);
    this.closingAfter = new Int32Array(this.vocabSize);
    const levels = this.tables.trie.maxLevel + 1;
    this.saveMode = new Int32Array(levels);
    this.saveAux = new Int32Array(levels);
    this.saveWs = new Int32Array(levels);
    this.saveKey = new Int32Array(levels);
    this.saveDepth = new Int32Array(levels);
    this.savePushedAt = new Int32Array(levels).fill(-1);
    this.savePushedOld = new Uint8Array(levels);
  }

  get complete(): boolean {
    return this.machine.complete;
  }

  budget(tokensLeft: number): void {
    if (!(tokensLeft >= 0) || !Number.isInteger(tokensLeft)) fail('usage', `JSON mode: tokens left must be an integer >= 0, got ${tokensLeft}`);
    this.tokensLeft = tokensLeft;
  }

  mask(logits: Float32Array): void {
    const { eos } = this.tables;
    if (this.machine.complete) {
      this.keepOnly(logits, eos);
      return;
    }
    const key = this.machine.stateKey();
    let cached = this.cache.get(key);
    let walked = false; // whether allowedStamp/closingAfter hold this state's walk
    if (cached === undefined) {
      cached = this.walk();
      walked = true;
      if (this.cache.size >= MASK_CACHE_ENTRIES) this.cache.delete(this.cache.keys().next().value!);
      this.cache.set(key, cached);
    }
    // Near the end of the budget some allowed tokens would leave more to close than tokens remain.
    const bound = this.tokensLeft - 1;
    let tooCostly = 0;
    if (bound < cached.maxClosingAfter) {
      for (const c of cached.raiserClosing) if (c > bound) tooCostly++;
      // Usually only raisers exceed the bound (it is >= this state's own closingBytes()), and some
      // token still fits; otherwise walk again and keep the least bad tokens.
      if (bound < this.machine.closingBytes() || tooCostly === cached.allowedCount) {
        if (!walked) this.walk();
        this.keepWithinBudget(logits);
        return;
      }
    }
    this.applyCached(logits, cached);
    if (tooCostly > 0) {
      for (let k = 0; k < cached.raisers.length; k++) if (cached.raiserClosing[k]! > bound) logits[cached.raisers[k]!] = -Infinity;
    }
  }

  private applyCached(logits: Float32Array, cached: CachedMask): void {
    const { eos } = this.tables;
    if (cached.listedAreAllowed) {
      // Nothing can continue the document: leave EOS allowed rather than an all -Infinity row.
      this.keepOnly(logits, cached.listed.length > 0 ? cached.listed : eos);
    } else {
      for (const id of eos) if (id < logits.length) logits[id] = -Infinity;
      for (const id of cached.listed) if (id < logits.length) logits[id] = -Infinity;
      for (let i = this.vocabSize; i < logits.length; i++) logits[i] = -Infinity;
    }
  }

  accept(id: number): void {
    if (this.tables.eos.includes(id)) return; // the end: nothing to advance
    const bytes = id >= 0 && id < this.vocabSize ? this.tables.bytes[id] : undefined;
    if (bytes === null || bytes === undefined || !this.machine.feed(bytes)) {
      fail('usage', `JSON mode: token ${id} cannot come next (was it sampled from masked logits?)`);
    }
    this.tokensLeft--; // a caller that does not call budget() each step still counts down
  }

  /**
   * Keeps the tokens of the latest walk after which the document can still be closed in the
   * tokens left, one closing byte per token: closingBytes(after) <= tokensLeft - 1. If none can
   * (a budget below what even the start needs, or a vocabulary without single-byte closers), keeps
   * the least bad ones, those leaving the fewest closing bytes, rather than an all -Infinity row.
   */
  private keepWithinBudget(logits: Float32Array): void {
    const stamp = this.stamp;
    let least = Infinity;
    for (let id = 0; id < this.vocabSize; id++) {
      if (this.allowedStamp[id] === stamp && this.closingAfter[id]! < least) least = this.closingAfter[id]!;
    }
    if (least === Infinity) {
      this.keepOnly(logits, this.tables.eos); // nothing can continue: see mask()
      return;
    }
    const bound = Math.max(this.tokensLeft - 1, least);
    const kept: number[] = [];
    for (let id = 0; id < this.vocabSize; id++) {
      if (this.allowedStamp[id] === stamp && this.closingAfter[id]! <= bound) kept.push(id);
    }
    this.keepOnly(logits, kept);
  }

  /** Sets every logit to -Infinity except those of `ids`. */
  private keepOnly(logits: Float32Array, ids: ArrayLike<number>): void {
    const kept = new Float32Array(ids.length);
    for (let i = 0; i < ids.length; i++) kept[i] = ids[i]! < logits.length ? logits[ids[i]!]! : 0;
    logits.fill(-Infinity);
    for (let i = 0; i < ids.length; i++) if (ids[i]! < logits.length) logits[ids[i]!] = kept[i]!;
  }

  /** The set of tokens allowed from the current state, by a pruned preorder walk of the trie. */
  private walk(): CachedMask {
    const { byte, level, subtreeEnd, idStart, ids } = this.tables.trie;
    const w = this.walker;
    const m = this.machine;
    w.stack.set(m.stack);
    this.saveMode[0] = m.mode;
    this.saveAux[0] = m.aux;
    this.saveWs[0] = m.ws;
    this.saveKey[0] = m.key;
    this.saveDepth[0] = m.depth;
    this.savePushedAt[0] = -1;
    const stamp = ++this.stamp === 0xffffffff ? this.resetStamps() : this.stamp;
    let allowedCount = 0;
    let maxClosingAfter = 0;
    const closingNow = m.closingBytes();
    const raisers: number[] = [];
    const raiserClosing: number[] = [];
    let deepest = 0; // levels 1..deepest hold states whose pushes are applied to w.stack
    const n = byte.length;
    for (let i = 1; i < n; ) {
      const l = level[i]!;
      for (; deepest >= l; deepest--) {
        const at = this.savePushedAt[deepest]!;
        if (at >= 0) w.stack[at] = this.savePushedOld[deepest]!;
      }
      const p = l - 1;
      w.mode = this.saveMode[p]!;
      w.aux = this.saveAux[p]!;
      w.ws = this.saveWs[p]!;
      w.key = this.saveKey[p]!;
      w.depth = this.saveDepth[p]!;
      if (!w.step(byte[i]!)) {
        i = subtreeEnd[i]!;
        continue;
      }
      this.saveMode[l] = w.mode;
      this.saveAux[l] = w.aux;
      this.saveWs[l] = w.ws;
      this.saveKey[l] = w.key;
      this.saveDepth[l] = w.depth;
      this.savePushedAt[l] = w.pushedAt;
      this.savePushedOld[l] = w.pushedOld;
      deepest = l;
      if (idStart[i]! < idStart[i + 1]!) {
        const closing = w.closingBytes();
        if (closing > maxClosingAfter) maxClosingAfter = closing;
        for (let k = idStart[i]!; k < idStart[i + 1]!; k++) {
          this.allowedStamp[ids[k]!] = stamp;
          this.closingAfter[ids[k]!] = closing;
          allowedCount++;
          if (closing > closingNow) {
            raisers.push(ids[k]!);
            raiserClosing.push(closing);
          }
        }
      }
      i++;
    }
    const allowed = new Int32Array(allowedCount);
    const denied: number[] = [];
    let a = 0;
    for (let id = 0; id < this.vocabSize; id++) {
      if (this.allowedStamp[id] === stamp) allowed[a++] = id;
      else if (allowedCount * 2 > this.vocabSize) denied.push(id);
    }
    const budgetPart = { maxClosingAfter, allowedCount, raisers: Int32Array.from(raisers), raiserClosing: Int32Array.from(raiserClosing) };
    return allowedCount * 2 > this.vocabSize
      ? { listed: Int32Array.from(denied), listedAreAllowed: false, ...budgetPart }
      : { listed: allowed, listedAreAllowed: true, ...budgetPart };
  }

  private resetStamps(): number {
    this.allowedStamp.fill(0);
    this.stamp = 1;
    return 1;
  }
}

/**
 * A constraint under which the tokenizer's output is a JSON object: see the file header. The
 * per-tokenizer tables (token bytes, trie, mask cache) are built on first use and kept in a
 * WeakMap; each constraint holds the state of one generation.
 */
export function jsonObjectConstraint(tokenizer: Tokenizer, opts: { maxDepth?: number } = {}): TokenConstraint {
  return new JsonObjectConstraint(tokenizer, opts.maxDepth ?? DEFAULT_MAX_DEPTH);
}
