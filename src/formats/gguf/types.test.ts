import { test } from 'node:test';
import assert from 'node:assert/strict';
import { HalfpipeError } from '../../core/errors.js';
import {
  blockSize,
  GGML_TYPES,
  ggmlTypeFromId,
  ggmlTypeId,
  lookupGgmlType,
  lookupGgufValueType,
  parseGgmlType,
  rowBytes,
  SUPPORTED_GGML_TYPES,
  typeSize,
} from './types.js';

test('ggml type ids, block sizes and type sizes are ggml\'s', () => {
  // [name, id, elements per block, bytes per block] from ggml.h / ggml-common.h
  const expected: Array<[string, number, number, number]> = [
    ['F32', 0, 1, 4],
    ['F16', 1, 1, 2],
    ['Q4_0', 2, 32, 18],
    ['Q4_1', 3, 32, 20],
    ['Q5_0', 6, 32, 22],
    ['Q5_1', 7, 32, 24],
    ['Q8_0', 8, 32, 34],
    ['Q4_K', 12, 256, 144],
    ['Q5_K', 13, 256, 176],
    ['Q6_K', 14, 256, 210],
    ['BF16', 30, 1, 2],
  ];
  assert.deepEqual(SUPPORTED_GGML_TYPES, expected.map((e) => e[0]));
  for (const [name, id, bs, ts] of expected) {
    const t = parseGgmlType(name);
    assert.equal(ggmlTypeId(t), id);
    assert.equal(blockSize(t), bs);
    assert.equal(typeSize(t), ts);
    assert.equal(ggmlTypeFromId(id), name);
    assert.equal(GGML_TYPES[t].name, name);
  }
  assert.equal(parseGgmlType('q4_k'), 'Q4_K');
});

test('unknown ids and names are errors that list the supported types', () => {
  for (const id of [4, 5, 9, 10, 15, 16, 29, 31, 39, 2 ** 32 - 1]) {
    assert.equal(lookupGgmlType(id), undefined);
    assert.throws(
      () => ggmlTypeFromId(id),
      (e: unknown) =>
        e instanceof HalfpipeError &&
        e.message.includes(`id ${id}`) &&
        e.message.includes('Q4_K (12)') &&
        e.message.includes('BF16 (30)'),
    );
  }
  assert.throws(() => parseGgmlType('Q2_K'), /unknown ggml type 'Q2_K'.*Q6_K/);
  assert.throws(() => blockSize('nope' as never), HalfpipeError);
});

test('rowBytes', () => {
  assert.equal(rowBytes('F32', 7), 28);
  assert.equal(rowBytes('BF16', 3), 6);
  assert.equal(rowBytes('Q8_0', 4096), 128 * 34);
  assert.equal(rowBytes('Q4_K', 4096), 16 * 144);
  assert.equal(rowBytes('Q6_K', 0), 0);
  assert.throws(() => rowBytes('Q4_0', 48), (e: unknown) => e instanceof HalfpipeError && /48 is not a multiple of 32/.test(e.message));
  assert.throws(() => rowBytes('Q5_K', 128), /multiple of 256/);
  assert.throws(() => rowBytes('F16', -1), HalfpipeError);
  assert.throws(() => rowBytes('F16', 1.5), HalfpipeError);
});

test('GGUF value type ids', () => {
  const names = ['u8', 'i8', 'u16', 'i16', 'u32', 'i32', 'f32', 'bool', 'string', 'array', 'u64', 'i64', 'f64'];
  names.forEach((n, id) => assert.equal(lookupGgufValueType(id), n));
  assert.equal(lookupGgufValueType(13), undefined);
  assert.equal(lookupGgufValueType(-1), undefined);
});
