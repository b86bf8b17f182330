import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { tinyGenerationConfig, tinyTokenizerConfig, tinyTokenizerJson, tinyVocab } from './tiny-vocab.js';
import { hfTokenizerFromJson, loadHfTokenizer } from './tokenizer.js';
import { errorText as code } from '../testing/helpers.js';

const llama = tinyVocab('llama');
const gpt2 = tinyVocab('gpt2');


const ROUND_TRIP = [
  'The lighthouse keeper climbed 154 steps.',
  'Ça a été très agréable, naïve façade, Ærø, ñandú',
  '灯塔看守人每天晚上点灯。東京タワー 등대',
  'emoji 🎉👩‍👩‍👧 ✅ 🇳🇴',
  '  two leading spaces, trailing  ',
  'tabs\tand\nnew\r\nlines\n\n',
  '\uFEFFbyte order mark',
];

test('HF tokenizer (tiny llama tokenizer.json): round trips, byte fallback for what the vocabulary lacks', () => {
  const t = hfTokenizerFromJson(tinyTokenizerJson(llama), tinyTokenizerConfig(llama));
  for (const text of ROUND_TRIP) {
    const ids = t.encode(text);
    assert.equal(ids[0], 1, 'BOS first');
    assert.equal(t.decode(ids, { skipSpecial: true }), text, JSON.stringify(text));
  }
  // Characters outside the training text come out as UTF-8 byte tokens: 你 = E4 BD A0.
  const ids = t.encode('你', { addSpecial: false });
  assert.deepEqual(ids.map((id) => t.tokenText(id)), ['▁', '<0xE4>', '<0xBD>', '<0xA0>']);
  // 🎉 = F0 9F 8E 89
  assert.deepEqual(
    t.encode('🎉', { addSpecial: false }).slice(1).map((id) => t.tokenText(id)),
    ['<0xF0>', '<0x9F>', '<0x8E>', '<0x89>'],
  );
});

test('HF tokenizer (tiny gpt2 tokenizer.json): byte-level round trips', () => {
  const t = hfTokenizerFromJson(tinyTokenizerJson(gpt2), tinyTokenizerConfig(gpt2), tinyGenerationConfig(gpt2));
  for (const text of ROUND_TRIP) {
    const ids = t.encode(text);
    assert.equal(ids[0], gpt2.bosId);
    assert.equal(t.decode(ids, { skipSpecial: true }), text, JSON.stringify(text));
  }
  assert.deepEqual(t.encode(' the', { addSpecial: false }).map((id) => t.tokenText(id)), ['Ġthe']);
});

test('HF tokenizer: special tokens in the text and decode(skipSpecial)', () => {
  const t = hfTokenizerFromJson(tinyTokenizerJson(gpt2), tinyTokenizerConfig(gpt2), tinyGenerationConfig(gpt2));
  const eot = gpt2.tokens.indexOf('<|eot_id|>');
  const header = gpt2.tokens.indexOf('<|start_header_id|>');
  const ids = t.encode('<|start_header_id|>user<|end_header_id|>hi<|eot_id|>', { addSpecial: false });
  assert.equal(ids[0], header);
  assert.equal(ids[ids.length - 1], eot);
  assert.equal(t.decode(ids), '<|start_header_id|>user<|end_header_id|>hi<|eot_id|>');
  assert.equal(t.decode(ids, { skipSpecial: true }), 'userhi');
  assert.equal(t.isSpecial(eot), true);
  assert.equal(t.isSpecial(ids[1]!), false);

  const l = hfTokenizerFromJson(tinyTokenizerJson(llama), tinyTokenizerConfig(llama));
  assert.deepEqual(l.encode('</s>', { addSpecial: false }), [2]);
  assert.equal(l.decode([1, ...l.encode('hi', { addSpecial: false }), 2]), '<s> hi</s>');
  assert.equal(l.decode([1, ...l.encode('hi', { addSpecial: false }), 2], { skipSpecial: true }), 'hi');
  assert.equal(l.decode([]), '');
});

test('HF tokenizer: BOS/EOS from tokenizer_config.json and generation_config.json', () => {
  const json = tinyTokenizerJson(gpt2);
  const eot = gpt2.eotId!;
  // Llama 3 style: no add_bos_token, BOS comes from the post-processor; eos from both files.
  const t = hfTokenizerFromJson(json, tinyTokenizerConfig(gpt2), tinyGenerationConfig(gpt2));
  assert.equal(t.bosId, gpt2.bosId);
  assert.equal(t.addBos, true);
  assert.deepEqual(t.eosIds, [eot, gpt2.eosId]);
  assert.equal(t.vocabSize, 512);
  // {content} objects, add_bos_token false, eos_token_id as a single number.
  const u = hfTokenizerFromJson(
    json,
    { bos_token: { content: '<|begin_of_text|>', lstrip: false }, eos_token: { content: '<|end_of_text|>' }, add_bos_token: false },
    { eos_token_id: eot },
  );
  assert.equal(u.bosId, gpt2.bosId);
  assert.equal(u.addBos, false);
  assert.deepEqual(u.eosIds, [gpt2.eosId, eot]);
  assert.equal(u.encode('hi')[0] === gpt2.bosId, false);
  // No config at all: BOS unknown, nothing added, no EOS.
  const bare = hfTokenizerFromJson(json);
  assert.equal(bare.bosId, undefined);
  assert.equal(bare.addBos, false);
  assert.deepEqual(bare.eosIds, []);
  // generation_config.json alone can name BOS; then the post-processor decides add_bos.
  assert.equal(hfTokenizerFromJson(json, {}, { bos_token_id: gpt2.bosId }).addBos, true);
});

test('HF tokenizer: config errors and out-of-range ids', () => {
  const json = tinyTokenizerJson(llama);
  const t = hfTokenizerFromJson(json, tinyTokenizerConfig(llama));
  assert.equal(code(() => t.decode([1, 512])), 'usage: token id 512 is out of range: the vocabulary has ids 0..511');
  assert.match(code(() => t.decode([-3])), /^usage: token id -3 is out of range/);
  assert.match(code(() => t.tokenText(9999)), /^usage: /);
  assert.match(code(() => hfTokenizerFromJson(json, { bos_token: '<nope>' })), /^config: tokenizer_config\.json bos_token '<nope>' is not in the vocabulary/);
  assert.match(code(() => hfTokenizerFromJson(json, { eos_token: 7 })), /^config: tokenizer_config\.json eos_token must be/);
  assert.match(code(() => hfTokenizerFromJson(json, {}, { eos_token_id: 'x' })), /^config: generation_config\.json eos_token_id/);
  assert.match(code(() => hfTokenizerFromJson(json, {}, { eos_token_id: [2, 600] })), /^config: generation_config\.json eos_token_id 600 is outside/);
  assert.match(code(() => hfTokenizerFromJson({ ...json, model: { type: 'Nope' } })), /^config: unsupported or malformed tokenizer\.json: /);
  assert.match(code(() => hfTokenizerFromJson([])), /^config: tokenizer\.json must hold a JSON object/);
});

test('loadHfTokenizer reads tokenizer.json from disk', () => {
  const dir = mkdtempSync(join(tmpdir(), 'halfpipe-tok-'));
  try {
    const path = join(dir, 'tokenizer.json');
    writeFileSync(path, JSON.stringify(tinyTokenizerJson(llama)));
    const t = loadHfTokenizer(path, tinyTokenizerConfig(llama));
    assert.equal(t.decode(t.encode('Hello, Ada!'), { skipSpecial: true }), 'Hello, Ada!');
    assert.match(code(() => loadHfTokenizer(join(dir, 'missing.json'))), /^config: cannot read tokenizer .*missing\.json/);
    writeFileSync(path, '{ not json');
    assert.match(code(() => loadHfTokenizer(path)), /^config: cannot read tokenizer /);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
