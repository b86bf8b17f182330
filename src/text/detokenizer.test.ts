import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { StreamingDetokenizer } from './detokenizer.js';
import { concatBytes } from '../testing/helpers.js';

const utf8 = (s: string): Uint8Array => new TextEncoder().encode(s);
// ignoreBOM: a U+FEFF in the middle of a random string must survive decoding like any other character
const decodeBytes = (b: Uint8Array): string => new TextDecoder('utf-8', { ignoreBOM: true }).decode(b);


/** A fake byte-level BPE tokenizer whose token i is the byte string vocab[i]. */
function byteLevel(vocab: readonly Uint8Array[]): (ids: readonly number[]) => string {
  return (ids) => decodeBytes(concatBytes(ids.map((id) => vocab[id]!)));
}

/** Splits bytes at the given cut points into tokens (each a vocab entry of its own). */
function tokenize(bytes: Uint8Array, cuts: number[]): Uint8Array[] {
  const at = [...new Set(cuts.map((c) => c % (bytes.length + 1)))].filter((c) => c > 0 && c < bytes.length).sort((a, b) => a - b);
  const out: Uint8Array[] = [];
  let prev = 0;
  for (const c of [...at, bytes.length]) {
    out.push(bytes.subarray(prev, c));
    prev = c;
  }
  return bytes.length === 0 ? [] : out;
}

test('byte-level tokens: streaming yields exactly the full decode, never half a character, nothing held at a boundary', () => {
  fc.assert(
    fc.property(
      fc.string({ unit: 'binary', maxLength: 40 }).filter((s) => !s.includes('\uFFFD')),
      fc.array(fc.nat(), { maxLength: 60 }),
      (s, cuts) => {
        const bytes = utf8(s);
        const vocab = tokenize(bytes, cuts);
        const detok = new StreamingDetokenizer(byteLevel(vocab));
        let out = '';
        let clean = ''; // the decode up to the last token that ended on a character boundary
        for (let id = 0; id < vocab.length; id++) {
          const piece = detok.push(id);
          assert.ok(!piece.includes('\uFFFD'), `U+FFFD emitted for token ${id}: ${JSON.stringify(piece)}`);
          out += piece;
          const sofar = decodeBytes(concatBytes(vocab.slice(0, id + 1)));
          // a token that ends inside a character is held back whole; at a boundary, everything is out
          if (!sofar.endsWith('\uFFFD')) clean = sofar;
          assert.equal(out, clean, `after token ${id}`);
        }
        assert.equal(detok.flush(), '');
        assert.equal(out, s);
      },
    ),
    { numRuns: 500 },
  );
});

test('byte-level tokens with invalid UTF-8: the stream still adds up to the full decode', () => {
  fc.assert(
    fc.property(fc.uint8Array({ maxLength: 40 }), fc.array(fc.nat(), { maxLength: 40 }), (bytes, cuts) => {
      const vocab = tokenize(bytes, cuts);
      const decode = byteLevel(vocab);
      const full = decode(vocab.map((_, i) => i));
      const detok = new StreamingDetokenizer(decode);
      let out = '';
      for (let id = 0; id < vocab.length; id++) {
        out += detok.push(id);
        assert.ok(full.startsWith(out), `after token ${id}: ${JSON.stringify(out)} is not a prefix of ${JSON.stringify(full)}`);
      }
      assert.equal(out + detok.flush(), full);
    }),
    { numRuns: 500 },
  );
});

test('a character split across tokens is held back, then emitted whole; flush gives up on an incomplete one', () => {
  const euro = utf8('€'); // E2 82 AC
  const vocab = [utf8('a'), euro.subarray(0, 1), euro.subarray(1, 2), euro.subarray(2, 3), utf8('b')];
  const detok = new StreamingDetokenizer(byteLevel(vocab));
  assert.deepEqual(
    [0, 1, 2, 3, 4].map((id) => detok.push(id)),
    ['a', '', '', '€', 'b'],
  );
  assert.equal(detok.push(1), '');
  assert.equal(detok.flush(), '\uFFFD');
  assert.equal(detok.flush(), '');
  // after flush it starts over, as a new detokenizer would
  assert.deepEqual(
    [0, 1, 2, 3].map((id) => detok.push(id)),
    ['a', '', '', '€'],
  );
  const sp1 = new StreamingDetokenizer(spDecode);
  sp1.push(sp('▁Hello'));
  assert.equal(sp1.flush(), '');
  assert.equal(sp1.push(sp('▁world')), 'world');
});

// A fake SentencePiece (Llama) tokenizer: "▁" is a space, <0xHH> are byte-fallback tokens, special tokens are
// skipped, and the decoder strips one leading space (as HF's Llama decoder does).
const SP = [
  '<unk>', '<s>', '</s>', '▁', '▁Hello', '▁world', 'Hello', 'a', '!', '<0x20>', '<0xE2>', '<0x82>', '<0xAC>',
  '<0xF0>', '<0x9F>', '<0x98>', '<0x80>', '<0xC3>', '<0xA9>', '▁€', 'é', '▁▁', '▁there', '▁Hi',
];
const sp = (piece: string): number => {
  const i = SP.indexOf(piece);
  assert.ok(i >= 0, piece);
  return i;
};
function spDecode(ids: readonly number[]): string {
  let text = '';
  let bytes: number[] = [];
  const flushBytes = (): void => {
    text += decodeBytes(Uint8Array.from(bytes));
    bytes = [];
  };
  for (const id of ids) {
    const piece = SP[id]!;
    if (piece === '<s>' || piece === '</s>' || piece === '<unk>') continue;
    const byte = /^<0x([0-9A-F]{2})>$/.exec(piece);
    if (byte) {
      bytes.push(parseInt(byte[1]!, 16));
      continue;
    }
    flushBytes();
    text += piece.replaceAll('▁', ' ');
  }
  flushBytes();
  return text.startsWith(' ') ? text.slice(1) : text;
}

test('SentencePiece byte fallback: <0xE2><0x82><0xAC> comes out as one €, spaces kept mid-text', () => {
  const ids = ['▁Hello', '▁', '<0xE2>', '<0x82>', '<0xAC>', '▁world', '!'].map(sp);
  const detok = new StreamingDetokenizer(spDecode);
  const pieces = ids.map((id) => detok.push(id));
  assert.deepEqual(pieces, ['Hello', ' ', '', '', '€', ' world', '!']);
  assert.equal(pieces.join(''), spDecode(ids));
  assert.equal(spDecode(ids), 'Hello € world!');
  // decoded alone, "▁world" loses its space; the prefix window keeps it
  assert.equal(spDecode([sp('▁world')]), 'world');
});

test('the context tokens give the first token its leading space; a skipped special token keeps the context', () => {
  const withContext = new StreamingDetokenizer(spDecode, [sp('<s>'), sp('▁Hi')]);
  assert.equal(withContext.push(sp('▁there')), ' there');
  assert.equal(new StreamingDetokenizer(spDecode).push(sp('▁there')), 'there');

  const detok = new StreamingDetokenizer(spDecode);
  assert.deepEqual(
    ['▁Hello', '</s>', '▁world', '▁', '▁there'].map((p) => detok.push(sp(p))),
    ['Hello', '', ' world', ' ', ' there'],
  );
});

test('tokens that decode to nothing on their own stay as context (a decoder that strips all leading spaces)', () => {
  const lstripAll = (ids: readonly number[]): string => spDecode(ids).replace(/^ +/, '');
  const detok = new StreamingDetokenizer(lstripAll);
  const ids = ['▁Hello', '▁', '▁there', '▁▁', '▁world'].map(sp);
  assert.deepEqual(
    ids.map((id) => detok.push(id)),
    ['Hello', ' ', ' there', '  ', ' world'],
  );
  assert.equal(lstripAll(ids), 'Hello  there   world');
});

test('random SentencePiece token streams add up to the full decode', () => {
  fc.assert(
    fc.property(fc.array(fc.nat({ max: SP.length - 1 }), { maxLength: 40 }), fc.array(fc.nat({ max: SP.length - 1 }), { maxLength: 8 }), (ids, context) => {
      const full = spDecode(ids);
      const detok = new StreamingDetokenizer(spDecode);
      let out = '';
      for (const id of ids) {
        out += detok.push(id);
        assert.ok(full.startsWith(out), `${JSON.stringify(out)} is not a prefix of ${JSON.stringify(full)}`);
      }
      assert.equal(out + detok.flush(), full);
      // with context (the detokenizer keeps the last 6): the text the ids add after the context
      const ctx = context.slice(-6);
      fc.pre(!spDecode(ctx).endsWith('\uFFFD'));
      const tail = spDecode([...ctx, ...ids]).slice(spDecode(ctx).length);
      const d2 = new StreamingDetokenizer(spDecode, context);
      assert.equal(ids.map((id) => d2.push(id)).join('') + d2.flush(), tail);
    }),
    { numRuns: 500 },
  );
});
