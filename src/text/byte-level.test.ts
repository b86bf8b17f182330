import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import * as hfTokenizers from '@huggingface/tokenizers';

import { BYTE_TO_CHAR, CHAR_TO_BYTE, LLAMA3_SPLIT_PATTERN, byteLevelAlphabet, byteLevelEncode, splitLlama3 } from './byte-level.js';

test('GPT-2 byte-to-unicode table', () => {
  assert.equal(new Set(BYTE_TO_CHAR).size, 256);
  assert.equal(BYTE_TO_CHAR[0x20], 'Ġ');
  assert.equal(BYTE_TO_CHAR[0x0a], 'Ċ');
  assert.equal(BYTE_TO_CHAR[0x00], '\u0100');
  assert.equal(BYTE_TO_CHAR[0x41], 'A');
  assert.equal(BYTE_TO_CHAR[0xad], '\u0143'); // soft hyphen is the last remapped byte
  assert.equal(BYTE_TO_CHAR[0xff], 'ÿ');
  for (let b = 0; b < 256; b++) assert.equal(CHAR_TO_BYTE.get(BYTE_TO_CHAR[b]!), b);
  const alphabet = byteLevelAlphabet();
  assert.equal(alphabet.length, 256);
  assert.deepEqual(alphabet.slice(0, 3), ['!', '"', '#']);
  assert.equal(alphabet[188], 'Ā'); // 94 + 12 + 82 printable bytes come first
  assert.equal(byteLevelEncode(' héllo\n'), 'ĠhÃ©lloĊ');
});

test('Llama-3 pre-tokenizer splits', () => {
  assert.deepEqual(splitLlama3("Hello world's  I'LL 12345 \n\n  x"), [
    'Hello', ' world', "'s", ' ', ' I', "'LL", ' ', '123', '45', ' \n\n', ' ', ' x',
  ]);
  assert.deepEqual(splitLlama3('a...b!!\n'), ['a', '...', 'b', '!!\n']);
  assert.deepEqual(splitLlama3(''), []);
});

test('the Llama-3 split equals tokenizers.js compiling the published Oniguruma pattern', () => {
  // (tokenizers.js's .d.ts re-exports do not resolve under NodeNext; declare the one class used.)
  const { SplitPreTokenizer } = hfTokenizers as unknown as {
    SplitPreTokenizer: new (config: object) => { pre_tokenize_text(text: string): string[] };
  };
  const hf = new SplitPreTokenizer({ type: 'Split', pattern: { Regex: LLAMA3_SPLIT_PATTERN }, behavior: 'Isolated', invert: false });
  const tricky = fc.constantFrom("'s", "'S", "'ll", "'ſ", ' ', '  ', '\n', '\r\n', '\t', '\u00a0', '\u0085', '\ufeff', '\u3000', 'a', 'Z', 'é', '你', '1', '٣', 'Ⅻ', '!', '🎉', '\u0301');
  fc.assert(
    fc.property(fc.string({ unit: fc.oneof(tricky, fc.string({ unit: 'binary', minLength: 1, maxLength: 1 })), maxLength: 30 }), (text) => {
      const ours = splitLlama3(text);
      assert.deepEqual(ours, hf.pre_tokenize_text(text));
      assert.equal(ours.join(''), text);
    }),
    { numRuns: 500 },
  );
});
