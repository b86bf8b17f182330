import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { HalfpipeError } from '../../core/errors.js';
import { GgufBytes, T } from './fixtures.js';
import { quantize } from './quants.js';
import {
  getTensor,
  metaArray,
  metaBool,
  metaNumber,
  metaString,
  readGguf,
  readTensorBytes,
  readTensorInto,
} from './reader.js';
import { GGML_TYPES, type GgmlType, type GgufTypedValue, SUPPORTED_GGML_TYPES } from './types.js';
import { type GgufTensorInput, writeGguf } from './writer.js';

const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'halfpipe-gguf-'));
after(() => fs.rmSync(dir, { recursive: true, force: true }));
let fileNo = 0;
const tmpFile = (): string => path.join(dir, `t${fileNo++}.gguf`);

function xorshift(seed: number): () => number {
  let s = seed >>> 0 || 1;
  return () => {
    s ^= s << 13;
    s >>>= 0;
    s ^= s >>> 17;
    s ^= s << 5;
    s >>>= 0;
    return s / 2 ** 32;
  };
}

function randomValues(n: number, seed: number): Float32Array {
  const r = xorshift(seed);
  return Float32Array.from({ length: n }, () => r() * 2 - 1);
}

/** Every value type, edge values, nested arrays; written as given and expected back unchanged. */
const METADATA: Array<[string, GgufTypedValue]> = [
  ['general.architecture', { type: 'string', value: 'llama' }],
  ['general.name', { type: 'string', value: 'héllo → 世界 🎉' }],
  ['general.empty', { type: 'string', value: '' }],
  ['llama.context_length', { type: 'u32', value: 4096 }],
  ['t.u8', { type: 'u8', value: 255 }],
  ['t.i8', { type: 'i8', value: -128 }],
  ['t.u16', { type: 'u16', value: 65535 }],
  ['t.i16', { type: 'i16', value: -32768 }],
  ['t.u32', { type: 'u32', value: 0xffffffff }],
  ['t.i32', { type: 'i32', value: -0x80000000 }],
  ['t.f32', { type: 'f32', value: Math.fround(0.1) }],
  ['t.f32.subnormal', { type: 'f32', value: Math.fround(-1e-40) }],
  ['t.f64', { type: 'f64', value: 0.1 }],
  ['t.u64.small', { type: 'u64', value: 7 }],
  ['t.u64.safe', { type: 'u64', value: Number.MAX_SAFE_INTEGER }],
  ['t.u64.big', { type: 'u64', value: 2n ** 53n }],
  ['t.u64.max', { type: 'u64', value: 2n ** 64n - 1n }],
  ['t.i64.safe', { type: 'i64', value: -Number.MAX_SAFE_INTEGER }],
  ['t.i64.min', { type: 'i64', value: -(2n ** 63n) }],
  ['t.bool.t', { type: 'bool', value: true }],
  ['t.bool.f', { type: 'bool', value: false }],
  ['tokenizer.ggml.tokens', { type: 'array', itemType: 'string', value: ['<s>', '', '▁the', '<0x0A>', '🎉'] }],
  ['tokenizer.ggml.scores', { type: 'array', itemType: 'f32', value: [0, -1.5, 2.25, -1000.125, 3] }],
  ['tokenizer.ggml.token_type', { type: 'array', itemType: 'i32', value: [2, 1, 1, 6, 1] }],
  ['t.arr.empty', { type: 'array', itemType: 'u8', value: [] }],
  ['t.arr.bool', { type: 'array', itemType: 'bool', value: [true, false, true] }],
  ['t.arr.u64', { type: 'array', itemType: 'u64', value: [0, 2n ** 60n, Number.MAX_SAFE_INTEGER] }],
  ['t.arr.f64', { type: 'array', itemType: 'f64', value: [Math.PI, -0.5] }],
  [
    't.arr.nested',
    {
      type: 'array',
      itemType: 'array',
      value: [
        { type: 'array', itemType: 'i16', value: [1, -2] },
        { type: 'array', itemType: 'string', value: ['a', 'bc'] },
        { type: 'array', itemType: 'array', value: [{ type: 'array', itemType: 'bool', value: [] }] },
      ],
    },
  ],
];

function tensorsOfEveryType(seed: number): GgufTensorInput[] {
  return SUPPORTED_GGML_TYPES.map((type, i) => {
    const bs = GGML_TYPES[type].blockSize;
    const dims = i % 3 === 0 ? [Math.max(bs, 8), 3] : i % 3 === 1 ? [2 * Math.max(bs, 4)] : [Math.max(bs, 2), 1, 2, 2];
    const n = dims.reduce((a, b) => a * b, 1);
    return { name: `blk.${i}.${type.toLowerCase()}`, type, dims, data: quantize(type, randomValues(n, seed + i)) };
  });
}

test('writeGguf -> readGguf: the same metadata (every value type, nested arrays) and tensor bytes', () => {
  for (const alignment of [undefined, 1, 64, 4096]) {
    const file = tmpFile();
    const tensors = tensorsOfEveryType(alignment ?? 32);
    writeGguf(file, { metadata: METADATA, tensors, ...(alignment !== undefined ? { alignment } : {}) });
    const g = readGguf(file);
    const align = alignment ?? 32;
    assert.equal(g.version, 3);
    assert.equal(g.alignment, align);
    const expected = align === 32 ? METADATA : [...METADATA, ['general.alignment', { type: 'u32', value: align }]];
    assert.deepEqual([...g.typedMetadata], expected);
    // plain values: arrays unwrapped
    assert.deepEqual(g.metadata.get('t.arr.nested'), [[1, -2], ['a', 'bc'], [[]]]);
    assert.equal(g.metadata.get('t.u64.big'), 2n ** 53n);
    assert.equal(g.metadata.get('t.u64.safe'), Number.MAX_SAFE_INTEGER);
    assert.equal(g.dataOffset % align, 0);
    assert.equal(g.tensors.length, tensors.length);
    let prevEnd = g.dataOffset;
    for (const [i, t] of tensors.entries()) {
      const info = g.tensors[i]!;
      assert.equal(info.name, t.name);
      assert.equal(info.type, t.type);
      assert.deepEqual(info.dims, t.dims);
      assert.equal(info.byteLength, t.data.byteLength);
      assert.equal(info.offset % align, 0, `${t.name} offset ${info.offset} not aligned to ${align}`);
      assert.ok(info.offset >= prevEnd);
      prevEnd = info.offset + info.byteLength;
      assert.deepEqual(readTensorBytes(g, info), t.data);
      const big = new Uint8Array(info.byteLength + 5).fill(7);
      readTensorInto(g, info, big);
      assert.deepEqual(big.subarray(0, info.byteLength), t.data);
      assert.equal(big[info.byteLength], 7);
    }
    // The last tensor is padded too, as ggml's writer does.
    assert.equal(g.fileSize, Math.ceil(prevEnd / align) * align);
    assert.equal(getTensor(g, tensors[3]!.name).type, tensors[3]!.type);
    assert.throws(() => getTensor(g, 'nope'), /no tensor named 'nope'/);
  }
});

test('large headers and tensors stream through the reader and writer buffers', () => {
  // A vocabulary header of several MiB (crossing the reader's 1 MiB buffer many times), a string
  // longer than that buffer, and a tensor larger than the writer's buffer.
  const n = 120_000;
  const tokens = Array.from({ length: n }, (_, i) => `tok${i}${'x'.repeat(i % 23)}`);
  const scores = Array.from({ length: n }, (_, i) => Math.fround(-i / 7));
  const types = Array.from({ length: n }, (_, i) => (i % 5) + 1);
  const long = 'ab€'.repeat(700_000); // ~3.5 MB of UTF-8
  const weights = randomValues(1024 * 2048, 3);
  const file = tmpFile();
  writeGguf(file, {
    metadata: [
      ['tokenizer.ggml.tokens', { type: 'array', itemType: 'string', value: tokens }],
      ['tokenizer.chat_template', { type: 'string', value: long }],
      ['tokenizer.ggml.scores', { type: 'array', itemType: 'f32', value: scores }],
      ['tokenizer.ggml.token_type', { type: 'array', itemType: 'i32', value: types }],
    ],
    tensors: [{ name: 'token_embd.weight', type: 'Q8_0', dims: [1024, 2048], data: quantize('Q8_0', weights) }],
  });
  const g = readGguf(file);
  assert.deepEqual(metaArray(g, 'tokenizer.ggml.tokens'), tokens);
  assert.equal(metaString(g, 'tokenizer.chat_template'), long);
  assert.deepEqual(metaArray(g, 'tokenizer.ggml.scores'), scores);
  assert.deepEqual(metaArray(g, 'tokenizer.ggml.token_type'), types);
  assert.deepEqual(readTensorBytes(g, g.tensors[0]!), quantize('Q8_0', weights));
});

test('a hand-written GGUF v2 file parses', () => {
  const b = new GgufBytes().header(2, 2, 4);
  b.str('general.architecture').u32(T.string).str('llama');
  b.str('llama.block_count').u32(T.u32).u32(2);
  b.str('general.alignment').u32(T.u32).u32(16);
  b.str('tokenizer.ggml.token_type').u32(T.array).u32(T.i32).u64(3).i32(1).i32(-2).i32(3);
  // tensor infos: name, n_dims, dims (u64, innermost first), type, offset relative to the data
  b.str('output_norm.weight').u32(1).u64(4).u32(0).u64(0);
  b.str('tok').u32(2).u64(32).u64(2).u32(8).u64(16);
  b.pad(16);
  const dataOffset = b.length;
  [1, -2, 0.5, 3].forEach((v) => b.f32(v));
  const q8 = quantize('Q8_0', randomValues(64, 9));
  b.bytes(q8);
  const file = tmpFile();
  fs.writeFileSync(file, b.build());
  const g = readGguf(file);
  assert.equal(g.version, 2);
  assert.equal(g.alignment, 16);
  assert.equal(g.dataOffset, dataOffset);
  assert.equal(metaString(g, 'general.architecture'), 'llama');
  assert.equal(metaNumber(g, 'llama.block_count'), 2);
  assert.deepEqual(metaArray(g, 'tokenizer.ggml.token_type'), [1, -2, 3]);
  assert.deepEqual(g.tensors, [
    { name: 'output_norm.weight', type: 'F32', dims: [4], offset: dataOffset, byteLength: 16 },
    { name: 'tok', type: 'Q8_0', dims: [32, 2], offset: dataOffset + 16, byteLength: 68 },
  ]);
  assert.deepEqual(
    Array.from(new Float32Array(readTensorBytes(g, g.tensors[0]!).buffer)),
    [1, -2, 0.5, 3],
  );
  assert.deepEqual(readTensorBytes(g, g.tensors[1]!), q8);
});

test('metadata getters: values, fallbacks, and errors naming the key', () => {
  const file = tmpFile();
  writeGguf(file, { metadata: METADATA, tensors: [] });
  const g = readGguf(file);
  assert.equal(metaString(g, 'general.architecture'), 'llama');
  assert.equal(metaNumber(g, 'llama.context_length'), 4096);
  assert.equal(metaNumber(g, 't.f32'), Math.fround(0.1));
  assert.equal(metaBool(g, 't.bool.t'), true);
  assert.deepEqual(metaArray(g, 'tokenizer.ggml.scores'), [0, -1.5, 2.25, -1000.125, 3]);
  assert.equal(metaNumber(g, 'llama.rope.freq_base', 10000), 10000);
  assert.equal(metaString(g, 'missing', 'x'), 'x');
  const err = (key: string, re: RegExp) => (e: unknown) =>
    e instanceof HalfpipeError && e.code === 'config' && e.message.includes(`'${key}'`) && re.test(e.message);
  assert.throws(() => metaString(g, 'llama.head_count'), err('llama.head_count', /is missing \(expected a string\)/));
  assert.throws(() => metaNumber(g, 'general.architecture'), err('general.architecture', /is string, expected a number/));
  assert.throws(() => metaString(g, 'llama.context_length'), err('llama.context_length', /is u32, expected a string/));
  assert.throws(() => metaArray(g, 't.u8'), err('t.u8', /is u8, expected an array/));
  assert.throws(() => metaNumber(g, 'tokenizer.ggml.tokens'), err('tokenizer.ggml.tokens', /is array of string/));
  assert.throws(() => metaNumber(g, 't.u64.max'), err('t.u64.max', /too large/));
  assert.throws(() => metaBool(g, 't.u8'), err('t.u8', /expected a bool/));
  // a fallback never hides a wrong type
  assert.throws(() => metaNumber(g, 'general.architecture', 1), HalfpipeError);
});

test('writeGguf rejects invalid input and leaves no file behind', () => {
  const ok: GgufTensorInput = { name: 'w', type: 'F32', dims: [2], data: new Uint8Array(8) };
  const cases: Array<[string, Parameters<typeof writeGguf>[1], RegExp]> = [
    ['duplicate key', { metadata: [['a', { type: 'u8', value: 1 }], ['a', { type: 'u8', value: 2 }]], tensors: [] }, /duplicate metadata key 'a'/],
    ['empty key', { metadata: [['', { type: 'u8', value: 1 }]], tensors: [] }, /non-empty/],
    ['u8 range', { metadata: [['a', { type: 'u8', value: 256 }]], tensors: [] }, /not a valid u8/],
    ['i32 fraction', { metadata: [['a', { type: 'i32', value: 1.5 }]], tensors: [] }, /not a valid i32/],
    ['u64 negative', { metadata: [['a', { type: 'u64', value: -1n }]], tensors: [] }, /not a valid u64/],
    ['u64 unsafe number', { metadata: [['a', { type: 'u64', value: 2 ** 60 }]], tensors: [] }, /not a valid u64/],
    ['i64 range', { metadata: [['a', { type: 'i64', value: 2n ** 63n }]], tensors: [] }, /not a valid i64/],
    ['string', { metadata: [['a', { type: 'string', value: 5 as unknown as string }]], tensors: [] }, /not a string/],
    ['lone surrogate', { metadata: [['a', { type: 'string', value: 'x\ud800y' }]], tensors: [] }, /lone UTF-16 surrogate/],
    ['array item', { metadata: [['a', { type: 'array', itemType: 'i32', value: [1, 'x' as unknown as number] }]], tensors: [] }, /'a'\[1\]: x is not a valid i32/],
    ['unknown type', { metadata: [['a', { type: 'u128', value: 1 } as unknown as GgufTypedValue]], tensors: [] }, /unknown GGUF value type/],
    ['alignment', { metadata: [], tensors: [], alignment: 48 }, /power of two/],
    ['alignment type', { metadata: [['general.alignment', { type: 'u64', value: 32 }]], tensors: [] }, /must be a u32/],
    ['alignment disagrees', { metadata: [['general.alignment', { type: 'u32', value: 32 }]], tensors: [], alignment: 64 }, /disagrees/],
    ['data size', { metadata: [], tensors: [{ ...ok, data: new Uint8Array(7) }] }, /needs 8 bytes/],
    ['dims zero', { metadata: [], tensors: [{ ...ok, dims: [0] }] }, /invalid dims/],
    ['dims rank', { metadata: [], tensors: [{ ...ok, dims: [1, 1, 1, 1, 2] }] }, /1\.\.4 dims/],
    ['partial block', { metadata: [], tensors: [{ name: 'q', type: 'Q4_0', dims: [16, 2], data: new Uint8Array(18) }] }, /multiple of 32/],
    ['unknown tensor type', { metadata: [], tensors: [{ ...ok, type: 'Q2_K' as GgmlType }] }, /unknown ggml type/],
    ['duplicate tensor', { metadata: [], tensors: [ok, ok] }, /duplicate tensor name 'w'/],
    ['long name', { metadata: [], tensors: [{ ...ok, name: 'x'.repeat(64) }] }, /at most 63 bytes/],
  ];
  for (const [what, input, re] of cases) {
    const file = tmpFile();
    assert.throws(() => writeGguf(file, input), (e: unknown) => e instanceof HalfpipeError && re.test(e.message), what);
    assert.equal(fs.existsSync(file), false, what);
  }
  assert.throws(() => writeGguf(path.join(dir, 'no/such/dir/x.gguf'), { metadata: [], tensors: [] }), HalfpipeError);
  assert.deepEqual(fs.readdirSync(dir).filter((f) => f.includes('partial')), []);
});

test('readTensorBytes notices a file that changed size', () => {
  const file = tmpFile();
  writeGguf(file, { metadata: [], tensors: [{ name: 'w', type: 'F32', dims: [8], data: new Uint8Array(32) }] });
  const g = readGguf(file);
  fs.truncateSync(file, g.tensors[0]!.offset + 4);
  assert.throws(() => readTensorBytes(g, g.tensors[0]!), (e: unknown) => e instanceof HalfpipeError && /changed size/.test(e.message));
  assert.throws(() => readTensorInto(g, g.tensors[0]!, new Uint8Array(31)), /holds only 31/);
  assert.throws(() => readGguf(path.join(dir, 'missing.gguf')), (e: unknown) => e instanceof HalfpipeError && e.code === 'usage');
});
