/**
 * Byte-level BPE helpers shared by the GGUF 'gpt2' tokenizer and the tiny vocabulary generator:
 * the GPT-2 byte-to-unicode table and the Llama-3 ('llama-bpe') pre-tokenizer.
 *
 * GPT-2 byte-to-unicode: every byte 0..255 gets one printable character so that BPE pieces are
 * plain strings without whitespace or control characters. Bytes that are already printable
 * Latin-1 characters ('!'..'~', '¡'..'¬', '®'..'ÿ') map to themselves; the remaining 68 bytes
 * (controls, space, DEL, NBSP, soft hyphen) map, in increasing byte order, to U+0100, U+0101, ...
 * So space (0x20) becomes 'Ġ' (U+0120) and newline (0x0A) becomes 'Ċ' (U+010A).
 */

function isPrintableLatin1(b: number): boolean {
  return (b >= 0x21 && b <= 0x7e) || (b >= 0xa1 && b <= 0xac) || (b >= 0xae && b <= 0xff);
}

/** BYTE_TO_CHAR[b] is the single character that stands for byte b. */
export const BYTE_TO_CHAR: readonly string[] = (() => {
  const table: string[] = new Array<string>(256);
  let shifted = 0;
  for (let b = 0; b < 256; b++) {
    table[b] = String.fromCharCode(isPrintableLatin1(b) ? b : 256 + shifted++);
  }
  return table;
})();

/** The inverse of BYTE_TO_CHAR, keyed by UTF-16 code unit (all 256 characters are below U+0144). */
export const CHAR_TO_BYTE: ReadonlyMap<string, number> = new Map(BYTE_TO_CHAR.map((c, b) => [c, b]));

/**
 * The 256 byte characters in GPT-2's vocabulary order: the printable bytes in increasing order,
 * then the remapped ones. GPT-2 and Llama 3 use this order for their first 256 token ids.
 */
export function byteLevelAlphabet(): string[] {
  const printable: string[] = [];
  const shifted: string[] = [];
  for (let b = 0; b < 256; b++) (isPrintableLatin1(b) ? printable : shifted).push(BYTE_TO_CHAR[b]!);
  return [...printable, ...shifted];
}

const utf8Encoder = new TextEncoder();

/** UTF-8 encode `text` (lone surrogates become U+FFFD) and map every byte to its character. */
export function byteLevelEncode(text: string): string {
  let out = '';
  for (const b of utf8Encoder.encode(text)) out += BYTE_TO_CHAR[b];
  return out;
}

/**
 * The Llama-3 pre-tokenizer pattern exactly as Meta's tokenizer.json writes it (Oniguruma syntax,
 * as the Rust `tokenizers` crate compiles it). Used verbatim in generated tokenizer.json files.
 */
export const LLAMA3_SPLIT_PATTERN =
  "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";

/**
 * The same pattern for JavaScript's `u` mode. Two translations are needed:
 *  - `(?i:...)` (inline case-insensitivity, unsupported by Node 20) is spelled out per letter, as
 *    llama.cpp does ("'[sS]|'[tT]|..."); only ASCII case folding, so "'ſ" is not a contraction.
 *  - `\s`/`\S` become `\p{White_Space}`/`\P{White_Space}`: Oniguruma's `\s` is the Unicode
 *    White_Space property, while JavaScript's `\s` adds U+FEFF and lacks U+0085.
 */
export const LLAMA3_SPLIT_REGEX =
  /(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\p{White_Space}\p{L}\p{N}]+[\r\n]*|\p{White_Space}*[\r\n]+|\p{White_Space}+(?!\P{White_Space})|\p{White_Space}+/gu;

/**
 * Split `text` into pre-tokens with the Llama-3 pattern, "Isolated" behaviour: every match is a
 * pre-token and so is any unmatched gap between matches (the pattern matches every character, so
 * gaps do not occur in practice). Concatenating the result gives back `text`.
 */
export function splitLlama3(text: string): string[] {
  const pieces: string[] = [];
  let last = 0;
  for (const m of text.matchAll(LLAMA3_SPLIT_REGEX)) {
    const at = m.index;
    if (at > last) pieces.push(text.slice(last, at));
    if (m[0].length > 0) pieces.push(m[0]);
    last = at + m[0].length;
  }
  if (last < text.length) pieces.push(text.slice(last));
  return pieces;
}
