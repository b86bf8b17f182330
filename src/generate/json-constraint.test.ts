/**
 * JSON mode tests. Independent references: a plain recursive-descent reader over the decoded text
 * (complete / prefix / invalid), JSON.parse, and brute force (each token's bytes fed through a copy
 * of the automaton) for the allowed sets. Vocabularies: a fake byte-level one with JSON-shaped and
 * partial-UTF-8 pieces, and the project's tiny SentencePiece and byte-level BPE tokenizers loaded
 * through loadModel from GGUF and HF files.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import fc from 'fast-check';
import { CLOSING_BYTES, JsonMachine, MAX_WHITESPACE_RUN, jsonObjectConstraint, missingClosingTokens, tokenBytes } from './json-constraint.js';
import { Generation } from './generate.js';
import type { Tokenizer } from '../text/tokenizer.js';
import { BYTE_TO_CHAR, CHAR_TO_BYTE } from '../text/byte-level.js';
import { writeTinyModel } from '../models/tiny.js';
import { loadModel } from '../models/load.js';
import { concatBytes, uniform } from '../testing/helpers.js';

const utf8 = (s: string): Uint8Array => new TextEncoder().encode(s);
const lossy = new TextDecoder('utf-8', { ignoreBOM: true });


/**
 * A byte-level tokenizer whose token i is the byte string pieces[i], with <s> (BOS), </s> (EOS) and
 * <|tool|> (special, never allowed) in front. Pieces are written in the GPT-2 byte alphabet.
 */
class FakeByteTokenizer implements Tokenizer {
  readonly bosId = 0;
  readonly eosIds = [1];
  readonly addBos = false;
  readonly vocabSize: number;
  private readonly specials = ['<s>', '</s>', '<|tool|>'];
  constructor(readonly pieces: readonly Uint8Array[]) {
    this.vocabSize = this.specials.length + pieces.length;
  }
  bytesOf(id: number): Uint8Array | null {
    return id < this.specials.length ? null : this.pieces[id - this.specials.length]!;
  }
  encode(text: string): number[] {
    const i = this.pieces.findIndex((p) => lossy.decode(p) === text);
    assert.ok(i >= 0, `fake tokenizer cannot encode ${text}`);
    return [i + this.specials.length];
  }
  decode(ids: readonly number[], opts: { skipSpecial?: boolean } = {}): string {
    const parts = ids.map((id) => this.bytesOf(id) ?? (opts.skipSpecial ? new Uint8Array(0) : utf8(this.specials[id]!)));
    return lossy.decode(concatBytes(parts));
  }
  tokenText(id: number): string {
    const b = this.bytesOf(id);
    return b === null ? this.specials[id]! : [...b].map((x) => BYTE_TO_CHAR[x]).join('');
  }
  isSpecial(id: number): boolean {
    return id < this.specials.length;
  }
}

/** All 256 single bytes plus JSON-shaped multi-byte pieces (some crossing structure, some partial UTF-8). */
function smallPieces(): Uint8Array[] {
  const texts = [
    '{"', '":', '",', '"}', '}}', ']}', '}]', '[{', '[]', '{}', '":"', '": "', '", "', ' {', '\n ', '  ', '    ', '\n\n\n\n\n',
    'true', 'false', 'null', 'tr', 'ue', 'nu', '1e', '-0', '0.', '.5', 'E+', 'e-', '12', '00', '01', '\\u', '\\n', '\\"', '00e9',
    'name', ' name', 'a', 'ab', '"a', 'a"', '"}}', '1}', '0]', ',"', 'é', '€', '😀', 'x\u0001', '\t', '\r\n', '},{', '], [',
    '],{', '},[', '}],[{', ']],{"', '"}],"', // pop into the current stack and push a different container
  ];
  const pieces = texts.map(utf8);
  for (let b = 0; b < 256; b++) pieces.push(Uint8Array.of(b));
  pieces.push(Uint8Array.of(0xe2, 0x82), Uint8Array.of(0xac, 0x22), Uint8Array.of(0xf0, 0x9f), Uint8Array.of(0x98, 0x80));
  return pieces;
}

/** A 32k-token byte-level vocabulary shaped like a real one (words, spaces, digits, punctuation, UTF-8). */
export function syntheticPieces(count: number, seed = 1): Uint8Array[] {
  const rand = uniform(seed);
  const seen = new Set<string>();
  const pieces: Uint8Array[] = [];
  const add = (b: Uint8Array): void => {
    const k = b.join(',');
    if (b.length > 0 && !seen.has(k)) {
      seen.add(k);
      pieces.push(b);
    }
  };
  for (let b = 0; b < 256; b++) add(Uint8Array.of(b));
  const letters = 'abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ';
  const punct = ['{', '}', '[', ']', '"', ':', ',', '.', '-', '\\', '\n', '  ', '":', '",', '{"', '"}', '\\n', '});', '));', '==', '->'];
  const unicode = ['é', 'ü', '€', '漢', '字', '😀', 'ñ', 'ß'];
  while (pieces.length < count) {
    const r = rand();
    let s = '';
    if (r < 0.6) {
      s = rand() < 0.5 ? ' ' : '';
      const n = 1 + Math.floor(rand() * 9);
      for (let i = 0; i < n; i++) s += letters[Math.floor(rand() * letters.length)]!;
    } else if (r < 0.7) {
      s = String(Math.floor(rand() * 1000));
    } else if (r < 0.9) {
      const n = 1 + Math.floor(rand() * 3);
      for (let i = 0; i < n; i++) s += punct[Math.floor(rand() * punct.length)]!;
    } else {
      const n = 1 + Math.floor(rand() * 3);
      for (let i = 0; i < n; i++) s += unicode[Math.floor(rand() * unicode.length)]!;
    }
    add(utf8(s));
  }
  return pieces;
}


// ---------------------------------------------------------------------------------------------
// An independent reference: a plain recursive-descent JSON reader over text that says whether the
// text is a complete object document, a prefix of one, or neither (it throws).

const AT_END = Symbol('end of text');

function referenceStatus(text: string): 'complete' | 'prefix' {
  let i = 0;
  const peek = (): string => {
    if (i >= text.length) throw AT_END;
    return text[i]!;
  };
  const bad = (what: string): never => {
    throw new Error(`${what} at ${i} in ${JSON.stringify(text)}`);
  };
  const skipWs = (): void => {
    while (i < text.length && ' \t\n\r'.includes(text[i]!)) i++;
  };
  const expect = (c: string): void => {
    if (peek() !== c) bad(`expected ${c}`);
    i++;
  };
  const digits = (): void => {
    if (!/[0-9]/.test(peek())) bad('expected a digit');
    while (i < text.length && /[0-9]/.test(text[i]!)) i++;
  };
  const str = (): void => {
    expect('"');
    for (;;) {
      const c = peek();
      i++;
      if (c === '"') return;
      if (c === '\\') {
        const e = peek();
        i++;
        if (e === 'u') {
          for (let k = 0; k < 4; k++) {
            if (!/[0-9a-fA-F]/.test(peek())) bad('bad \\u escape');
            i++;
          }
        } else if (!'"\\/bfnrt'.includes(e)) bad('bad escape');
      } else if (c < ' ') bad('control character in a string');
    }
  };
  const num = (): void => {
    if (peek() === '-') i++;
    if (peek() === '0') i++;
    else digits();
    if (i < text.length && text[i] === '.') {
      i++;
      digits();
    }
    if (i < text.length && (text[i] === 'e' || text[i] === 'E')) {
      i++;
      if (peek() === '+' || peek() === '-') i++;
      digits();
    }
  };
  const value = (): void => {
    const c = peek();
    if (c === '{') obj();
    else if (c === '[') arr();
    else if (c === '"') str();
    else if (c === '-' || /[0-9]/.test(c)) num();
    else {
      const word = ['true', 'false', 'null'].find((w) => w[0] === c);
      if (word === undefined) bad('expected a value');
      for (const w of word!) expect(w);
    }
  };
  const obj = (): void => {
    expect('{');
    skipWs();
    if (peek() === '}') {
      i++;
      return;
    }
    for (;;) {
      skipWs();
      str();
      skipWs();
      expect(':');
      skipWs();
      value();
      skipWs();
      const c = peek();
      i++;
      if (c === '}') return;
      if (c !== ',') bad('expected , or }');
    }
  };
  const arr = (): void => {
    expect('[');
    skipWs();
    if (peek() === ']') {
      i++;
      return;
    }
    for (;;) {
      skipWs();
      value();
      skipWs();
      const c = peek();
      i++;
      if (c === ']') return;
      if (c !== ',') bad('expected , or ]');
    }
  };
  try {
    skipWs();
    if (peek() !== '{') bad('the document must be an object');
    obj();
  } catch (e) {
    if (e === AT_END) return 'prefix';
    throw e;
  }
  if (i !== text.length) bad('text after the document');
  return 'complete';
}

// ---------------------------------------------------------------------------------------------
// Driving a constraint the way a sampler does.

/** Bytes in the order the finisher prefers: closers first, so that the document ends soon. */
const FINISH_ORDER: number[] = (() => {
  const first = [...'"}]:0{'].map((c) => c.charCodeAt(0));
  const rest: number[] = [];
  for (let b = 0x61; b <= 0x7a; b++) rest.push(b);
  for (let b = 0x80; b <= 0xbf; b++) rest.push(b);
  const order = [...first, ...rest];
  for (let b = 0; b < 256; b++) if (!order.includes(b)) order.push(b);
  return order;
})();

interface DriveResult {
  ids: number[];
  complete: boolean;
}

/**
 * Samples up to `steps` tokens from random logits (greedy or by softmax), checking the EOS rule and
 * that every emitted prefix is a JSON prefix; then, when `finish`, steers towards the end with logits
 * that favour the single-byte token of the next closing byte. Stops at EOS.
 */
function drive(tok: Tokenizer, bytes: readonly (Uint8Array | null)[], seed: number, steps: number, greedy: boolean, finish: boolean, maxDepth?: number): DriveResult {
  const rand = uniform(seed);
  const constraint = jsonObjectConstraint(tok, maxDepth === undefined ? {} : { maxDepth });
  const shadow = new JsonMachine(maxDepth);
  const singleByteToken = new Map<number, number>();
  bytes.forEach((b, id) => {
    if (b !== null && b.length === 1 && !singleByteToken.has(b[0]!)) singleByteToken.set(b[0]!, id);
  });
  const ids: number[] = [];
  const eos = new Set(tok.eosIds);
  const n = tok.vocabSize + 3; // padded logits rows must stay masked
  for (let step = 0; step < steps + 400; step++) {
    const steering = step >= steps;
    if (steering && !finish) break;
    const logits = new Float32Array(n);
    for (let i = 0; i < n; i++) logits[i] = rand() * 8 - 4;
    if (steering && !constraint.complete) {
      const next = FINISH_ORDER.find((b) => shadow.clone().step(b))!;
      const id = singleByteToken.get(next);
      assert.ok(id !== undefined, `no single-byte token for ${next}`);
      logits[id] = 100;
    }
    constraint.mask(logits);
    for (let i = tok.vocabSize; i < n; i++) assert.equal(logits[i], -Infinity, 'padded rows are masked');
    for (const e of eos) assert.equal(Number.isFinite(logits[e]!), constraint.complete, `EOS allowed exactly when complete (step ${step})`);
    if (constraint.complete) {
      for (let i = 0; i < n; i++) if (!eos.has(i)) assert.equal(logits[i], -Infinity, 'only EOS after the document');
    }
    let id = -1;
    if (greedy) {
      for (let i = 0; i < n; i++) if (id < 0 || logits[i]! > logits[id]!) id = i;
    } else {
      let max = -Infinity;
      for (const v of logits) max = Math.max(max, v);
      let total = 0;
      const p = Array.from(logits, (v) => Math.exp(v - max));
      for (const v of p) total += v;
      let r = rand() * total;
      for (id = 0; id < n - 1 && (r -= p[id]!) > 0; id++);
      while (!Number.isFinite(logits[id]!)) id--; // rounding at the top end
    }
    assert.ok(Number.isFinite(logits[id]!), 'sampled a masked token');
    if (eos.has(id)) return { ids, complete: true };
    constraint.accept(id);
    assert.ok(shadow.feed(bytes[id]!), 'the shadow automaton accepts the token');
    ids.push(id);
    // Every emitted prefix is a prefix of a JSON object document (reference reader, on the text).
    const status = referenceStatus(tok.decode(ids, { skipSpecial: true }));
    assert.equal(status === 'complete', constraint.complete, 'complete agrees with the reference reader');
  }
  return { ids, complete: constraint.complete };
}

function checkFinished(tok: Tokenizer, r: DriveResult): void {
  assert.ok(r.complete, `the steered generation completes: ${JSON.stringify(tok.decode(r.ids, { skipSpecial: true }))}`);
  const text = tok.decode(r.ids, { skipSpecial: true });
  const value: unknown = JSON.parse(text);
  assert.ok(value !== null && typeof value === 'object' && !Array.isArray(value), `top level is an object: ${text}`);
}

// ---------------------------------------------------------------------------------------------

const fake = new FakeByteTokenizer(smallPieces());
const fakeBytes = tokenBytes(fake);

test('tokenBytes on a byte-level vocabulary: every ordinary token, partial UTF-8 included; specials and EOS never', () => {
  for (let id = 0; id < fake.vocabSize; id++) {
    const want = fake.bytesOf(id);
    if (want === null) assert.equal(fakeBytes[id], null, `special ${id}`);
    else assert.deepEqual(fakeBytes[id], want, `token ${id}`);
  }
});

test('random logits, greedy and sampled: every prefix is a JSON-object prefix, EOS exactly when complete, finished text parses to an object', () => {
  fc.assert(
    fc.property(fc.integer({ min: 0, max: 2 ** 31 - 1 }), fc.boolean(), fc.integer({ min: 0, max: 60 }), (seed, greedy, steps) => {
      checkFinished(fake, drive(fake, fakeBytes, seed, steps, greedy, true));
    }),
    { numRuns: 60, includeErrorInReport: true },
  );
});

test('depth limit: with maxDepth 2 nothing nests deeper, and the output still finishes', () => {
  fc.assert(
    fc.property(fc.integer({ min: 0, max: 2 ** 31 - 1 }), (seed) => {
      const r = drive(fake, fakeBytes, seed, 40, false, true, 2);
      checkFinished(fake, r);
      const depth = (v: unknown): number =>
        v !== null && typeof v === 'object' ? 1 + Math.max(0, ...Object.values(v as object).map(depth)) : 0;
      assert.ok(depth(JSON.parse(fake.decode(r.ids, { skipSpecial: true }))) <= 2);
    }),
    { numRuns: 30, includeErrorInReport: true },
  );
});

/** mask() from the constraint against feeding each token through a copy of the automaton. */
function checkAgainstBruteForce(tok: Tokenizer, bytes: readonly (Uint8Array | null)[], seed: number, steps: number): void {
  const rand = uniform(seed);
  const constraint = jsonObjectConstraint(tok);
  const shadow = new JsonMachine();
  const eos = new Set(tok.eosIds);
  for (let step = 0; step < steps; step++) {
    const logits = new Float32Array(tok.vocabSize);
    constraint.mask(logits);
    const allowed: number[] = [];
    const want: number[] = [];
    for (let id = 0; id < tok.vocabSize; id++) {
      if (logits[id] === 0) allowed.push(id);
      const b = bytes[id];
      if (eos.has(id) ? shadow.complete : b !== null && b !== undefined && shadow.clone().feed(b)) want.push(id);
    }
    assert.deepEqual(allowed, want, `step ${step}`);
    if (shadow.complete) return;
    // Take a random allowed token, favouring multi-byte ones to reach varied states.
    const id = allowed[Math.floor(rand() * allowed.length)]!;
    constraint.accept(id);
    shadow.feed(bytes[id]!);
  }
}

test('reference: each step, the allowed set equals the brute-force set (small byte-level vocabulary)', () => {
  fc.assert(
    fc.property(fc.integer({ min: 0, max: 2 ** 31 - 1 }), (seed) => checkAgainstBruteForce(fake, fakeBytes, seed, 80)),
    { numRuns: 40, includeErrorInReport: true },
  );
});

test('reference: fixed nested states (pops then pushes within one token) match brute force', () => {
  const single = (b: number): number => fakeBytes.findIndex((x) => x !== null && x.length === 1 && x[0] === b);
  for (const prefix of ['{"a":[[1', '{"a":[{"b":[1', '{"a":{"b":[[]', '{"a":[[{}', '{"a":[1,{"b":[[2]', '{"a":"x', '{"a":[{"b":{}}']) {
    const constraint = jsonObjectConstraint(fake);
    const shadow = new JsonMachine();
    for (const b of utf8(prefix)) {
      constraint.accept(single(b));
      assert.ok(shadow.step(b));
    }
    const logits = new Float32Array(fake.vocabSize);
    constraint.mask(logits);
    for (let id = 0; id < fake.vocabSize; id++) {
      const b = fakeBytes[id];
      const want = b !== null && b !== undefined && shadow.clone().feed(b);
      assert.equal(Number.isFinite(logits[id]!), want, `${prefix} + ${JSON.stringify(fake.tokenText(id))}`);
    }
  }
});

test('accept rejects a token that cannot come next', () => {
  const c = jsonObjectConstraint(fake);
  const id = (s: string): number => fakeBytes.findIndex((b) => b !== null && lossy.decode(b) === s && b.length === utf8(s).length);
  assert.throws(() => c.accept(id('}')), /cannot come next/);
  const d = jsonObjectConstraint(fake);
  d.accept(id('{}'));
  assert.equal(d.complete, true);
  assert.throws(() => d.accept(id(' ')), /cannot come next/);
  assert.throws(() => jsonObjectConstraint(fake, { maxDepth: 0 }), /maxDepth/);
});

// ---------------------------------------------------------------------------------------------
// The automaton on byte strings.

function run(text: string | Uint8Array, maxDepth?: number): 'complete' | 'prefix' | 'rejected' {
  const m = new JsonMachine(maxDepth);
  if (!m.feed(typeof text === 'string' ? utf8(text) : text)) return 'rejected';
  return m.complete ? 'complete' : 'prefix';
}

test('automaton: numbers, strings with escapes and unicode, literals, nesting', () => {
  const complete = [
    '{"a":-0}', '{"a":1e-5}', '{"a":0.5E+3}', '{"a":-12.25e10}', '{"a":0}', '{"a":10}', '{"a":[0,-0.0,1E2]}',
    '{"s":"\\u00e9\\n\\"x\\\\\\/\\b\\f\\r\\t"}', '{"u":"é€😀 漢字"}', '{"\\uD83D\\uDE00":""}',
    '{"a":[[],[{}],{"b":[1,2,{"c":null}]}],"t":true,"f":false}', '{}', '  {\n "a" : 1 ,\t"b":[ ] }',
  ];
  for (const t of complete) assert.equal(run(t), 'complete', t);
  const prefixes = ['', ' ', '{', '{"a":-', '{"a":1.', '{"a":1e', '{"a":1e+', '{"a":"\\u00', '{"a":tr', '{"a":[', '{"a":"é', '{"a":1'];
  for (const t of prefixes) assert.equal(run(t), 'prefix', t);
  const rejected = [
    '{"a":01}', '{"a":1.}', '{"a":.5}', '{"a":+1}', '{"a":1e}', '{"a":-}', '{"a":1.e5}', '[1]', '"x"', '1', '{"a":"\u0001"}',
    '{"a":"\\x"}', '{"a":"\\u12G4"}', '{"a":1,}', '{,}', '{"a" 1}', '{"a":tru}', '{"a":True}', '{}x', '{}{}', '{} ', '{"a"}',
    '{"a":1]', '{"a":[1}', "{'a':1}", '{a:1}', '{"a":NaN}', '{"a":Infinity}', '{"a":0x1}',
    ' '.repeat(MAX_WHITESPACE_RUN + 1) + '{}', '{"a":' + ' '.repeat(MAX_WHITESPACE_RUN + 1) + '1}',
  ];
  for (const t of rejected) assert.equal(run(t), 'rejected', t);
  // Whitespace inside strings is text, not layout: any run is fine.
  assert.equal(run(`{"a":"${' '.repeat(20)}"}`), 'complete');
  // Malformed UTF-8 inside strings: lone continuation, overlong, surrogate, beyond U+10FFFF, truncated.
  const q = utf8('{"a":"');
  for (const bad of [[0x80], [0xc0, 0x80], [0xc1, 0xbf], [0xe0, 0x80, 0x80], [0xed, 0xa0, 0x80], [0xf4, 0x90, 0x80, 0x80], [0xf5], [0xff], [0xe2, 0x82, 0x22]]) {
    assert.equal(run(concatBytes([q, Uint8Array.from(bad)])), 'rejected', bad.map((b) => b.toString(16)).join(' '));
  }
});

test('automaton: depth limit counts containers, the top-level object included', () => {
  assert.equal(run('{"a":[{"b":1}]}', 3), 'complete');
  assert.equal(run('{"a":[{"b":[]}]}', 3), 'rejected');
  assert.equal(run('{"a":{}}', 1), 'rejected');
  assert.equal(run('{"a":1}', 1), 'complete');
  const deep = '{"a":'.repeat(32) + '1' + '}'.repeat(32);
  assert.equal(run(deep), 'complete');
  assert.equal(run('{"a":'.repeat(33) + '1' + '}'.repeat(33)), 'rejected');
});

/** Nesting depth and the longest whitespace run outside strings, by a plain scan. */
function layout(text: string): { depth: number; wsRun: number } {
  let depth = 0;
  let maxDepth = 0;
  let run = 0;
  let wsRun = 0;
  let inString = false;
  for (let i = 0; i < text.length; i++) {
    const c = text[i]!;
    if (inString) {
      if (c === '\\') i++;
      else if (c === '"') inString = false;
      continue;
    }
    run = ' \t\n\r'.includes(c) ? run + 1 : 0;
    wsRun = Math.max(wsRun, run);
    if (c === '"') inString = true;
    else if (c === '{' || c === '[') maxDepth = Math.max(maxDepth, ++depth);
    else if (c === '}' || c === ']') depth--;
  }
  return { depth: maxDepth, wsRun };
}

test('automaton agrees with JSON.parse (plus the depth and whitespace bounds) on random JSON-shaped text', () => {
  const fragments = ['{', '}', '[', ']', '"', ':', ',', '0', '1', '-', '.', 'e', 'E', '+', 'true', 'null', 'fals', 'e', ' ', '\n', '\\', 'u', 'a', '"a"', '{"k":', '1.5', 'é'];
  fc.assert(
    fc.property(fc.array(fc.constantFrom(...fragments), { maxLength: 24 }), fc.integer({ min: 1, max: 4 }), (parts, maxDepth) => {
      const text = parts.join('');
      let parsed: unknown;
      let parses = true;
      try {
        parsed = JSON.parse(text);
      } catch {
        parses = false;
      }
      const isObject = parses && parsed !== null && typeof parsed === 'object' && !Array.isArray(parsed);
      const { depth, wsRun } = layout(text);
      const trailingWs = /\s$/.test(text);
      const want = isObject && depth <= maxDepth && wsRun <= MAX_WHITESPACE_RUN && !trailingWs;
      assert.equal(run(text, maxDepth) === 'complete', want, text);
    }),
    { numRuns: 3000, includeErrorInReport: true },
  );
});

test('automaton accepts JSON.stringify of random objects, and each of their prefixes as a prefix', () => {
  fc.assert(
    fc.property(fc.dictionary(fc.string(), fc.jsonValue({ maxDepth: 4 })), (obj) => {
      const text = JSON.stringify(obj);
      assert.equal(run(text), 'complete', text);
      const bytes = utf8(text);
      for (let k = 0; k < bytes.length; k++) assert.equal(run(bytes.subarray(0, k)), 'prefix');
    }),
    { numRuns: 300, includeErrorInReport: true },
  );
});

// ---------------------------------------------------------------------------------------------
// The project's tokenizers: tiny SentencePiece and byte-level BPE, as GGUF and as HF tokenizer.json.

let dir = '';
const loaded = new Map<string, Tokenizer>();
before(async () => {
  dir = mkdtempSync(join(tmpdir(), 'halfpipe-json-'));
  for (const vocab of ['llama', 'gpt2'] as const) {
    for (const format of ['gguf', 'hf'] as const) {
      const out = join(dir, format === 'gguf' ? `${vocab}.gguf` : `${vocab}-hf`);
      writeTinyModel({ format, out, vocab });
      loaded.set(`${vocab}-${format}`, (await loadModel(out)).tokenizer);
    }
  }
});
after(() => rmSync(dir, { recursive: true, force: true }));

/** What each tiny-vocabulary token stands for, from its piece alone. */
function expectedPieceBytes(tok: Tokenizer, vocab: 'llama' | 'gpt2', id: number): Uint8Array | null {
  if (tok.isSpecial(id) || tok.eosIds.includes(id)) return null;
  const piece = tok.tokenText(id);
  if (vocab === 'gpt2') return Uint8Array.from([...piece].map((c) => CHAR_TO_BYTE.get(c)!));
  const byte = /^<0x([0-9A-F]{2})>$/.exec(piece);
  return byte ? Uint8Array.of(parseInt(byte[1]!, 16)) : utf8(piece.replace(/\u2581/g, ' '));
}

for (const vocab of ['llama', 'gpt2'] as const) {
  for (const format of ['gguf', 'hf'] as const) {
    const name = `${vocab}-${format}`;
    test(`tiny ${vocab} vocabulary (${format}): token bytes from pieces, brute-force masks, random generations parse`, () => {
      const tok = loaded.get(name)!;
      const bytes = tokenBytes(tok);
      for (let id = 0; id < tok.vocabSize; id++) {
        assert.deepEqual(bytes[id], expectedPieceBytes(tok, vocab, id), `${name} token ${id} ${JSON.stringify(tok.tokenText(id))}`);
      }
      fc.assert(
        fc.property(fc.integer({ min: 0, max: 2 ** 31 - 1 }), (seed) => checkAgainstBruteForce(tok, bytes, seed, 60)),
        { numRuns: 8, includeErrorInReport: true },
      );
      fc.assert(
        fc.property(fc.integer({ min: 0, max: 2 ** 31 - 1 }), fc.boolean(), fc.integer({ min: 0, max: 40 }), (seed, greedy, steps) => {
          checkFinished(tok, drive(tok, bytes, seed, steps, greedy, true));
        }),
        { numRuns: 15, includeErrorInReport: true },
      );
    });
  }
}

test('a vocabulary that cannot continue leaves EOS allowed rather than an all -Infinity row', () => {
  // Only '{' and '"' exist: after '{"' nothing can follow except more quotes... which close the key,
  // and then no ':' exists.
  const tok = new FakeByteTokenizer([utf8('{'), utf8('"'), utf8('a')]);
  const c = jsonObjectConstraint(tok);
  for (const s of ['{', '"', '"']) c.accept(3 + ['{', '"', 'a'].indexOf(s));
  const logits = new Float32Array(tok.vocabSize);
  c.mask(logits);
  assert.deepEqual([...logits].map(Number.isFinite), [false, true, false, false, false, false]);
  assert.equal(c.complete, false);
});

// ---------------------------------------------------------------------------------------------
// The token budget: closingBytes and steering to a complete document before max_tokens.

/** Bytes the brute force may use: structure, digits, escapes, literal letters, UTF-8 leads and continuations. */
const BFS_ALPHABET: number[] = [...utf8('{}[]":,01-.eE+\\untrlsaf ')].concat([0xc3, 0xe0, 0xed, 0xf0, 0xf4, 0x80, 0x8f, 0x9f, 0xa0, 0xbf]);

/** The least number of bytes from BFS_ALPHABET that completes the document from `start` (breadth-first over states). */
function shortestCompletion(start: JsonMachine): number {
  if (start.complete) return 0;
  let frontier = [start];
  const seen = new Set([start.stateKey()]);
  for (let dist = 1; dist <= 64; dist++) {
    const next: JsonMachine[] = [];
    for (const m of frontier) {
      for (const b of BFS_ALPHABET) {
        const c = m.clone();
        if (!c.step(b)) continue;
        if (c.complete) return dist;
        const k = c.stateKey();
        if (!seen.has(k)) {
          seen.add(k);
          next.push(c);
        }
      }
    }
    frontier = next;
  }
  assert.fail('no completion within 64 bytes');
}

/** Random accepted walk over BFS_ALPHABET (plus whitespace), favouring bytes that open things. */
function randomPrefix(seed: number, length: number): JsonMachine {
  const rand = uniform(seed);
  const m = new JsonMachine(6);
  const alphabet = [...BFS_ALPHABET, ...utf8('"{[,\\:"u')];
  for (let i = 0; i < length && !m.complete; i++) {
    for (let tries = 0; tries < 50; tries++) {
      const b = alphabet[Math.floor(rand() * alphabet.length)]!;
      const c = m.clone();
      if (c.step(b) && !c.complete) {
        m.step(b);
        break;
      }
    }
  }
  return m;
}

test('closingBytes equals the brute-force shortest completion (BFS over bytes) on random prefixes', () => {
  fc.assert(
    fc.property(fc.integer({ min: 0, max: 2 ** 31 - 1 }), fc.integer({ min: 0, max: 30 }), (seed, length) => {
      const m = randomPrefix(seed, length);
      assert.equal(m.closingBytes(), shortestCompletion(m), `state ${m.stateKey()}`);
    }),
    { numRuns: 300, includeErrorInReport: true },
  );
  // Prefixes of real documents, and states the random walk rarely reaches.
  fc.assert(
    fc.property(fc.dictionary(fc.string({ unit: 'binary' }), fc.jsonValue({ maxDepth: 3 }), { maxKeys: 4 }), fc.double({ min: 0, max: 1, noNaN: true }), (obj, at) => {
      const bytes = utf8(JSON.stringify(obj));
      const m = new JsonMachine();
      assert.ok(m.feed(bytes.subarray(0, Math.floor(at * bytes.length))));
      assert.equal(m.closingBytes(), shortestCompletion(m));
    }),
    { numRuns: 200, includeErrorInReport: true },
  );
  const fixed: [string | Uint8Array, number][] = [
    ['', 2], ['  ', 2], ['{', 1], ['{"', 4], ['{"a', 4], ['{"a"', 3], ['{"a" ', 3], ['{"a":', 2], ['{"a":-', 2], ['{"a":1.', 2],
    ['{"a":1e', 2], ['{"a":1e+', 2], ['{"a":1e5', 1], ['{"a":0', 1], ['{"a":tr', 3], ['{"a":f', 5], ['{"a":n', 4], ['{"a":[', 2],
    ['{"a":[1,', 3], ['{"a":{', 2], ['{"a":{"b":1,', 6], ['{"a":"\\', 3], ['{"a":"\\u', 6], ['{"a":"\\u00', 4], ['{"\\u0', 7],
    [Uint8Array.of(0x7b, 0x22, 0xf0), 7], [Uint8Array.of(0x7b, 0x22, 0x61, 0x22, 0x3a, 0x22, 0xe0, 0xa0), 3], ['{}', 0],
  ];
  for (const [prefix, want] of fixed) {
    const m = new JsonMachine();
    assert.ok(m.feed(typeof prefix === 'string' ? utf8(prefix) : prefix), String(prefix));
    assert.equal(m.closingBytes(), want, `closingBytes after ${JSON.stringify(String(prefix))}`);
    assert.equal(shortestCompletion(m), want, `brute force after ${JSON.stringify(String(prefix))}`);
  }
});

test('budget: mask keeps exactly the tokens that can still close in the tokens left (brute force), else the least bad', () => {
  fc.assert(
    fc.property(fc.integer({ min: 0, max: 2 ** 31 - 1 }), fc.integer({ min: 0, max: 25 }), (seed, steps) => {
      const rand = uniform(seed);
      const constraint = jsonObjectConstraint(fake);
      const shadow = new JsonMachine();
      for (let step = 0; step <= steps && !shadow.complete; step++) {
        for (const tokensLeft of [1 + Math.floor(rand() * 12), 1000]) {
          constraint.budget!(tokensLeft);
          const logits = new Float32Array(fake.vocabSize + 2);
          constraint.mask(logits);
          const closing = new Map<number, number>();
          for (let id = 0; id < fake.vocabSize; id++) {
            const b = fakeBytes[id];
            const c = shadow.clone();
            if (b !== null && b !== undefined && c.feed(b)) closing.set(id, c.closingBytes());
          }
          const bound = Math.max(tokensLeft - 1, Math.min(...closing.values()));
          for (let id = 0; id < fake.vocabSize + 2; id++) {
            const want = (closing.get(id) ?? Infinity) <= bound;
            assert.equal(Number.isFinite(logits[id]!), want, `step ${step}, ${tokensLeft} left, token ${id < fake.vocabSize ? JSON.stringify(fake.tokenText(id)) : 'padding'}`);
          }
        }
        // Move on with any allowed token (unbudgeted), favouring long ones to reach varied states.
        constraint.budget!(1000);
        const logits = new Float32Array(fake.vocabSize);
        constraint.mask(logits);
        const allowed = [...logits.keys()].filter((id) => Number.isFinite(logits[id]!));
        const id = allowed[Math.floor(rand() * allowed.length)]!;
        constraint.accept(id);
        shadow.feed(fakeBytes[id]!);
      }
    }),
    { numRuns: 60, includeErrorInReport: true },
  );
});

test('budget below what the start needs: the least bad tokens, never an all -Infinity row', () => {
  const c = jsonObjectConstraint(fake);
  c.budget!(1);
  const logits = new Float32Array(fake.vocabSize);
  c.mask(logits);
  const allowed = [...logits.keys()].filter((id) => Number.isFinite(logits[id]!)).map((id) => lossy.decode(fakeBytes[id]!));
  assert.deepEqual(allowed, ['{}'], 'one token completes the document');
  // Only single bytes: '{' leaves 1 to close, the best there is.
  const bytesOnly = new FakeByteTokenizer(Array.from({ length: 256 }, (_, b) => Uint8Array.of(b)));
  const d = jsonObjectConstraint(bytesOnly);
  d.budget!(1);
  const row = new Float32Array(bytesOnly.vocabSize);
  d.mask(row);
  assert.deepEqual([...row.keys()].filter((id) => Number.isFinite(row[id]!)), [3 + 0x7b]);
  assert.throws(() => d.budget!(-1), /tokens left/);
  assert.deepEqual(missingClosingTokens(bytesOnly), []);
  assert.deepEqual(missingClosingTokens(new FakeByteTokenizer([utf8('a'), utf8('}')])), CLOSING_BYTES.filter((b) => b !== 0x7d && b !== 0x61));
});

/** Random logits through Generation (its sampler, its budget call), half the time favouring tokens that open things. */
function generateJson(tok: Tokenizer, seed: number, maxTokens: number, favourOpeners: boolean): Generation {
  const rand = uniform(seed);
  const bytes = tokenBytes(tok);
  const openers = new Set<number>();
  bytes.forEach((b, id) => {
    if (b !== null && [...b].some((x) => x === 0x7b || x === 0x5b || x === 0x2c || x === 0x5c || x === 0x22 || x >= 0xc0)) openers.add(id);
  });
  const gen = new Generation(tok, [tok.bosId ?? 0], { maxTokens, constraint: jsonObjectConstraint(tok), temperature: 1, topK: 0, topP: 1, minP: 0, seed });
  while (!gen.done) {
    const logits = new Float32Array(tok.vocabSize + 3);
    for (let i = 0; i < logits.length; i++) logits[i] = rand() * 6 + (favourOpeners && openers.has(i) ? 6 : 0);
    gen.next(logits);
  }
  return gen;
}

function checkGeneration(tok: Tokenizer, seed: number, maxTokens: number, favourOpeners: boolean): void {
  const gen = generateJson(tok, seed, maxTokens, favourOpeners);
  assert.ok(gen.tokens.length <= maxTokens);
  let value: unknown;
  assert.doesNotThrow(() => (value = JSON.parse(gen.text)), `max_tokens ${maxTokens} (${gen.finishReason}): ${JSON.stringify(gen.text)}`);
  assert.ok(value !== null && typeof value === 'object' && !Array.isArray(value), gen.text);
}

test('budget: Generation with JSON mode ends in a JSON object for every max_tokens 2..40 (small byte-level vocabulary)', () => {
  fc.assert(
    fc.property(fc.integer({ min: 0, max: 2 ** 31 - 1 }), fc.integer({ min: 2, max: 40 }), fc.boolean(), (seed, maxTokens, favour) =>
      checkGeneration(fake, seed, maxTokens, favour),
    ),
    { numRuns: 150, includeErrorInReport: true },
  );
});

for (const vocab of ['llama', 'gpt2'] as const) {
  test(`budget: Generation with JSON mode ends in a JSON object for max_tokens 2..40 (tiny ${vocab} vocabulary)`, () => {
    const tok = loaded.get(`${vocab}-gguf`)!;
    assert.deepEqual(missingClosingTokens(tok), [], 'every closing byte is a single token');
    for (let maxTokens = 2; maxTokens <= 40; maxTokens++) {
      for (const favour of [false, true]) checkGeneration(tok, maxTokens * 7919 + (favour ? 1 : 0), maxTokens, favour);
    }
    fc.assert(
      fc.property(fc.integer({ min: 0, max: 2 ** 31 - 1 }), fc.integer({ min: 2, max: 40 }), fc.boolean(), (seed, maxTokens, favour) =>
        checkGeneration(tok, seed, maxTokens, favour),
      ),
      { numRuns: 40, includeErrorInReport: true },
    );
  });
}
