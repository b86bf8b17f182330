import { test } from 'node:test';
import assert from 'node:assert/strict';

import { byteLevelAlphabet } from './byte-level.js';
import { ggufTokenizer, ggufTokenizerMetaFromKv, TOKEN_TYPE } from './gguf-tokenizer.js';
import type { GgufTokenizerMeta } from './gguf-tokenizer.js';
import { errorText as code } from '../testing/helpers.js';

const { NORMAL, UNKNOWN, CONTROL, USER_DEFINED, UNUSED, BYTE } = TOKEN_TYPE;

/**
 * A hand-made SPM vocabulary. Scores: bc -0.5 > ab -1 > aa -1.5 > ▁a -2 > abc -3; the single
 * characters are far below. Only three byte tokens exist (0xC3, 0xA9 for 'é'; 0x0A for newline).
 */
const SPM: GgufTokenizerMeta = {
  model: 'llama',
  //        0        1      2       3         4         5         6     7    8    9
  tokens: ['<unk>', '<s>', '</s>', '<0xC3>', '<0xA9>', '<0x0A>', '▁', 'a', 'b', 'c',
  //        10    11    12    13     14    15          16
           'ab', 'bc', '▁a', 'abc', 'aa', '<|user|>', '<unused0>'],
  scores: [0, 0, 0, 0, 0, 0, -100, -101, -102, -103, -1, -0.5, -2, -3, -1.5, 0, 0],
  tokenTypes: [UNKNOWN, CONTROL, CONTROL, BYTE, BYTE, BYTE, NORMAL, NORMAL, NORMAL, NORMAL,
               NORMAL, NORMAL, NORMAL, NORMAL, NORMAL, USER_DEFINED, UNUSED],
};


test('SPM: hand-computed merges follow the highest score, not the longest piece', () => {
  const t = ggufTokenizer(SPM);
  // "▁abc": pairs ▁a(-2) ab(-1) bc(-0.5) -> merge bc; then a+bc="abc"(-3) and ▁a(-2) are candidates
  // and the stale ab is skipped -> merge ▁a; "▁abc" is not a token. So [▁a, bc], not [▁, abc].
  assert.deepEqual(t.encode('abc', { addSpecial: false }), [12, 11]);
  assert.deepEqual(t.encode('abc'), [1, 12, 11]);
  // "▁ca": no pair is a token.
  assert.deepEqual(t.encode('ca', { addSpecial: false }), [6, 9, 7]);
});

test('SPM: equal scores merge the leftmost pair first', () => {
  const t = ggufTokenizer(SPM);
  // "▁aaa": aa at (1,2) and (2,3) tie at -1.5 and beat ▁a (-2). Leftmost first gives [▁, aa, a];
  // the rightmost would give [▁, a, aa] and then [▁a, aa].
  assert.deepEqual(t.encode('aaa', { addSpecial: false }), [6, 14, 7]);
});

test('SPM: byte fallback to <0xXX>, then to unk', () => {
  const t = ggufTokenizer(SPM);
  assert.deepEqual(t.encode('é', { addSpecial: false }), [6, 3, 4]); // ▁ then C3 A9
  assert.deepEqual(t.encode('a\nb', { addSpecial: false }), [12, 5, 8]);
  assert.deepEqual(t.encode('ax', { addSpecial: false }), [12, 0]); // no <0x78>, no 'x': unk
  assert.equal(t.decode([6, 3, 4]), 'é');
  assert.equal(t.decode([3]), '\uFFFD'); // a lone lead byte
});

test('SPM: the space prefix and spaces as ▁', () => {
  const t = ggufTokenizer(SPM);
  assert.deepEqual(t.encode(' a', { addSpecial: false }), [6, 12]); // "▁▁a" -> ▁, ▁a
  assert.deepEqual(t.encode('', { addSpecial: false }), []);
  assert.deepEqual(t.encode(''), [1]);
  const noPrefix = ggufTokenizer({ ...SPM, addSpacePrefix: false });
  assert.deepEqual(noPrefix.encode('ab', { addSpecial: false }), [10]);
  assert.equal(noPrefix.decode([6, 10]), ' ab'); // nothing to strip without the prefix
  assert.equal(t.decode([6, 10]), 'ab');
  assert.equal(t.decode([6, 6, 10]), ' ab'); // exactly one space is dropped
});

test('SPM: special tokens in the text, and the prefix after them', () => {
  const t = ggufTokenizer(SPM);
  // <s>, then "ab" prefixed (it follows a special token): "▁ab" -> ab(-1) first, "▁ab" is no token.
  assert.deepEqual(t.encode('<s>ab</s>'), [1, 1, 6, 10, 2]);
  // User-defined tokens are matched too; the text after them gets the prefix again.
  assert.deepEqual(t.encode('a<|user|>a', { addSpecial: false }), [12, 15, 12]);
  assert.deepEqual(t.encode('<unk>', { addSpecial: false }), [0]);
  assert.deepEqual(t.encode('<s', { addSpecial: false }), [6, 0, 0]); // not a token: '<' and 's' are unknown
});

test('SPM: decode renders specials unless skipSpecial, user-defined always, unused never', () => {
  const t = ggufTokenizer(SPM);
  assert.equal(t.decode([1, 12, 11]), '<s> abc');
  assert.equal(t.decode([1, 12, 11], { skipSpecial: true }), 'abc');
  assert.equal(t.decode([12, 15, 12]), 'a<|user|> a');
  assert.equal(t.decode([12, 15, 12], { skipSpecial: true }), 'a<|user|> a');
  assert.equal(t.decode([0, 2]), '<unk></s>');
  assert.equal(t.decode([0, 2], { skipSpecial: true }), '');
  assert.equal(t.decode([16, 7]), 'a');
  assert.equal(t.decode([]), '');
  assert.equal(t.tokenText(12), '▁a');
  assert.equal(t.tokenText(3), '<0xC3>');
  assert.deepEqual([0, 1, 2, 3, 12, 15].map((id) => t.isSpecial(id)), [true, true, true, false, false, false]);
});

test('SPM: defaults and metadata', () => {
  const t = ggufTokenizer(SPM);
  assert.equal(t.vocabSize, 17);
  assert.equal(t.bosId, 1);
  assert.deepEqual(t.eosIds, [2]);
  assert.equal(t.addBos, true);
  assert.equal(t.unkId, 0);
  const noBos = ggufTokenizer({ ...SPM, addBos: false, eosId: 2, eotId: 15 });
  assert.deepEqual(noBos.encode('ab'), [6, 10]);
  assert.deepEqual(noBos.eosIds, [2, 15]);
});

/**
 * A hand-made byte-level vocabulary: the 256 byte characters (e = 68, t = 83, x = 87, ? = 30), four
 * merges, control tokens, two of which overlap ("<tag>" and "<tag>!"), and "hex" (265), which no
 * merge produces.
 */
function bpeMeta(): GgufTokenizerMeta {
  const tokens = [...byteLevelAlphabet(), 'he', 'Ġt', 'Ġthe', 'the', '<|eot_id|>', '<|end_of_text|>', '<|begin_of_text|>', '<tag>', '<tag>!', 'hex'];
  return {
    model: 'gpt2',
    pre: 'llama-bpe',
    tokens,
    tokenTypes: tokens.map((_, i) => (i < 260 || i === 265 ? NORMAL : CONTROL)),
    merges: ['h e', 'Ġ t', 'Ġt he', 't he'],
    bosId: 262,
    eosId: 261,
  };
}

test('BPE: hand-computed merges by rank, leftmost first, whole-token pre-tokens kept', () => {
  const t = ggufTokenizer(bpeMeta());
  assert.equal(byteLevelAlphabet().indexOf('e'), 68);
  // "thee": (h,e) rank 0 -> t he e; (t,he) rank 3 -> the e.
  assert.deepEqual(t.encode('thee', { addSpecial: false }), [259, 68]);
  // " thehe" -> Ġ t h e h e: both "he" (rank 0, left one first), then Ġt (1), then Ġt+he (2).
  assert.deepEqual(t.encode(' thehe', { addSpecial: false }), [258, 256]);
  // "the the": pre-tokens "the" and " the" are whole tokens.
  assert.deepEqual(t.encode('the the', { addSpecial: false }), [259, 258]);
  // "hex" is a token that merges cannot reach (they give he x = [256, 87]); ignore_merges takes it whole.
  assert.equal(byteLevelAlphabet().indexOf('x'), 87);
  assert.deepEqual(t.encode('hex', { addSpecial: false }), [265]);
  assert.deepEqual(t.encode('hexx', { addSpecial: false }), [256, 87, 87]);
  // "?" alone, and BOS by default for llama-bpe.
  assert.deepEqual(t.encode('?'), [262, 30]);
});

test('BPE: special tokens, longest first, and decode', () => {
  const t = ggufTokenizer(bpeMeta());
  assert.deepEqual(t.encode('<|begin_of_text|>the<|eot_id|>', { addSpecial: false }), [262, 259, 260]);
  assert.deepEqual(t.encode('<tag>!', { addSpecial: false }), [264]);
  assert.deepEqual(t.encode('<tag>?', { addSpecial: false }), [263, 30]);
  assert.equal(t.decode([262, 259, 260]), '<|begin_of_text|>the<|eot_id|>');
  assert.equal(t.decode([262, 259, 260], { skipSpecial: true }), 'the');
  assert.equal(t.decode([258, 256]), ' thehe');
  assert.equal(t.tokenText(258), 'Ġthe');
  // eos, then <|eot_id|> found by its text (as llama.cpp does).
  assert.deepEqual(t.eosIds, [261, 260]);
  assert.equal(t.preIsExact, true);
  assert.equal(ggufTokenizer({ ...bpeMeta(), pre: 'qwen2' }).preIsExact, false);
});

test('BPE: bytes that are not UTF-8 decode to U+FFFD; text round trips', () => {
  const t = ggufTokenizer(bpeMeta());
  const alphabet = byteLevelAlphabet();
  const e4 = alphabet.indexOf('ä'); // the character for byte 0xE4
  assert.equal(t.decode([e4]), '\uFFFD');
  for (const text of ['héllo wörld', '中文 🎉', 'tab\there\r\n', ' \u0085\u00a0 x']) {
    assert.equal(t.decode(t.encode(text, { addSpecial: false })), text);
  }
});

test('decode rejects ids outside the vocabulary with a usage error', () => {
  for (const t of [ggufTokenizer(SPM), ggufTokenizer(bpeMeta())]) {
    assert.match(code(() => t.decode([1, t.vocabSize])), /^usage: token id \d+ is out of range/);
    assert.match(code(() => t.decode([-1])), /^usage: token id -1 is out of range/);
    assert.match(code(() => t.decode([1.5])), /^usage: /);
    assert.match(code(() => t.tokenText(t.vocabSize)), /^usage: /);
  }
});

test('unsupported tokenizer models are rejected by name, listing the supported ones', () => {
  assert.equal(
    code(() => ggufTokenizer({ model: 'bert', tokens: ['[PAD]'] })),
    "config: unsupported tokenizer model 'bert' (tokenizer.ggml.model); supported: llama, gpt2",
  );
  assert.match(code(() => ggufTokenizer({ model: 't5', tokens: ['<pad>'] })), /'t5'.*supported: llama, gpt2/);
});

test('malformed metadata is a config error', () => {
  assert.match(code(() => ggufTokenizer({ ...bpeMeta(), merges: undefined })), /^config: .*needs tokenizer\.ggml\.merges/);
  assert.match(code(() => ggufTokenizer({ ...bpeMeta(), merges: ['nospace'] })), /^config: .*merges\[0\]/);
  assert.match(code(() => ggufTokenizer({ ...SPM, scores: [0] })), /^config: tokenizer\.ggml\.scores has 1 entries for 17 tokens/);
  assert.match(code(() => ggufTokenizer({ ...SPM, bosId: 99 })), /^config: tokenizer\.ggml\.bos_token_id 99 is outside/);
  assert.match(code(() => ggufTokenizer({ model: 'llama', tokens: [] })), /^config: /);
});

test('ggufTokenizerMetaFromKv maps the tokenizer.ggml.* keys', () => {
  const meta = ggufTokenizerMetaFromKv({
    'tokenizer.ggml.model': 'llama',
    'tokenizer.ggml.tokens': SPM.tokens,
    'tokenizer.ggml.scores': Float32Array.from(SPM.scores!),
    'tokenizer.ggml.token_type': Int32Array.from(SPM.tokenTypes!),
    'tokenizer.ggml.bos_token_id': 1,
    'tokenizer.ggml.eos_token_id': 2n,
    'tokenizer.ggml.unknown_token_id': 0,
    'tokenizer.ggml.add_bos_token': false,
    'tokenizer.ggml.add_space_prefix': true,
    'general.name': 'ignored',
  });
  assert.equal(meta.model, 'llama');
  assert.deepEqual(meta.tokenTypes, SPM.tokenTypes);
  assert.equal(meta.scores![11], -0.5);
  assert.equal(meta.eosId, 2);
  assert.equal(meta.addBos, false);
  assert.equal('merges' in meta, false);
  assert.deepEqual(ggufTokenizer(meta).encode('abc'), [12, 11]);
  assert.match(code(() => ggufTokenizerMetaFromKv({ 'tokenizer.ggml.tokens': [] })), /^config: GGUF metadata has no tokenizer\.ggml\.model/);
  assert.match(
    code(() => ggufTokenizerMetaFromKv({ 'tokenizer.ggml.model': 'llama', 'tokenizer.ggml.tokens': [1, 2] })),
    /^config: GGUF tokenizer\.ggml\.tokens must be an array of strings/,
  );
});
