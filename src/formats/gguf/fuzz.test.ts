/**
 * Corrupted and hostile GGUF files: every failure is a HalfpipeError with a one-line message, fast,
 * without allocating in proportion to a corrupted length; nothing else is ever thrown.
 */
import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { performance } from 'node:perf_hooks';
import fc from 'fast-check';
import { HalfpipeError } from '../../core/errors.js';
import { GgufBytes, T } from './fixtures.js';
import { quantize } from './quants.js';
import { type GgufFile, readGguf, readTensorBytes } from './reader.js';
import { writeGguf } from './writer.js';

const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'halfpipe-gguf-fuzz-'));
after(() => fs.rmSync(dir, { recursive: true, force: true }));
const file = path.join(dir, 'f.gguf');

/** Parses `bytes` as a GGUF file: the file, or the HalfpipeError it fails with (anything else fails the test). */
function parse(bytes: Uint8Array): GgufFile | HalfpipeError {
  fs.writeFileSync(file, bytes);
  try {
    const g = readGguf(file);
    // Whatever parses must describe tensors that lie inside the file.
    for (const t of g.tensors) {
      assert.ok(t.offset >= g.dataOffset && t.offset + t.byteLength <= g.fileSize, `tensor ${t.name} outside the file`);
      assert.equal(t.offset % g.alignment, 0);
    }
    return g;
  } catch (e) {
    if (!(e instanceof HalfpipeError)) throw new Error(`not a HalfpipeError: ${String(e)}`, { cause: e });
    assert.equal(e.code, 'config');
    assert.ok(!/[\r\n]/.test(e.message), `multi-line message: ${e.message}`);
    assert.ok(e.message.length < 600, `message too long: ${e.message.length} chars`);
    return e;
  }
}

function expectError(bytes: Uint8Array, re: RegExp): HalfpipeError {
  const r = parse(bytes);
  assert.ok(r instanceof HalfpipeError, `expected an error matching ${re}, the file parsed`);
  assert.match(r.message, re);
  return r;
}

/** A valid file with some metadata and tensors, as bytes. */
function validFile(): { bytes: Uint8Array; dataEnd: number } {
  const f = path.join(dir, 'valid.gguf');
  writeGguf(f, {
    metadata: [
      ['general.architecture', { type: 'string', value: 'llama' }],
      ['llama.context_length', { type: 'u32', value: 2048 }],
      ['tokenizer.ggml.tokens', { type: 'array', itemType: 'string', value: ['a', 'bb', 'ccc', 'é'] }],
      ['tokenizer.ggml.scores', { type: 'array', itemType: 'f32', value: [1, 2, 3, 4] }],
      ['t.nested', { type: 'array', itemType: 'array', value: [{ type: 'array', itemType: 'u64', value: [1, 2n ** 62n] }] }],
      ['t.bool', { type: 'bool', value: true }],
    ],
    tensors: [
      { name: 'a', type: 'F32', dims: [8, 2], data: quantize('F32', new Float32Array(16).fill(1.5)) },
      { name: 'b', type: 'Q4_K', dims: [256], data: quantize('Q4_K', new Float32Array(256).fill(-2)) },
      { name: 'c', type: 'Q8_0', dims: [32, 3], data: quantize('Q8_0', new Float32Array(96).fill(0.25)) },
    ],
  });
  const bytes = new Uint8Array(fs.readFileSync(f));
  const g = readGguf(f);
  const last = g.tensors[g.tensors.length - 1]!;
  return { bytes, dataEnd: last.offset + last.byteLength };
}

const VALID = validFile();

test('truncated files fail with a HalfpipeError unless every tensor is still inside (property)', () => {
  fc.assert(
    fc.property(fc.integer({ min: 0, max: VALID.bytes.length }), (len) => {
      const r = parse(VALID.bytes.subarray(0, len));
      if (len < VALID.dataEnd) assert.ok(r instanceof HalfpipeError, `truncated to ${len} bytes and still parsed`);
      else assert.ok(!(r instanceof HalfpipeError), `${len} bytes hold every tensor but failed: ${(r as Error).message}`);
    }),
    { numRuns: 300, seed: 1 },
  );
  for (let len = 0; len < 64; len++) parse(VALID.bytes.subarray(0, len));
});

test('random byte corruption: a valid file or a HalfpipeError, never anything else (property)', () => {
  fc.assert(
    fc.property(
      fc.array(fc.tuple(fc.nat({ max: VALID.bytes.length - 1 }), fc.nat({ max: 255 })), { minLength: 1, maxLength: 8 }),
      (edits) => {
        const b = VALID.bytes.slice();
        for (const [at, v] of edits) b[at] = v;
        const r = parse(b);
        if (!(r instanceof HalfpipeError)) for (const t of r.tensors) readTensorBytes(r, t);
      },
    ),
    { numRuns: 400, seed: 2 },
  );
});

test('corrupted 64-bit lengths and counts in the header (property)', () => {
  // Overwrite any 8 aligned-or-not bytes of the header with a huge or random little-endian u64.
  const g = readGguf(path.join(dir, 'valid.gguf'));
  fc.assert(
    fc.property(
      fc.nat({ max: g.dataOffset - 8 }),
      fc.oneof(fc.bigInt({ min: 0n, max: 2n ** 64n - 1n }), fc.constantFrom(2n ** 40n, 2n ** 60n, 2n ** 63n, 2n ** 64n - 1n, 2n ** 32n)),
      (at, v) => {
        const b = VALID.bytes.slice();
        new DataView(b.buffer).setBigUint64(at, v, true);
        parse(b);
      },
    ),
    { numRuns: 400, seed: 3 },
  );
});

test('random garbage after a valid magic and version (property)', () => {
  fc.assert(
    fc.property(fc.constantFrom(2, 3), fc.uint8Array({ maxLength: 2048 }), (version, tail) => {
      const b = new GgufBytes().bytes([0x47, 0x47, 0x55, 0x46]).u32(version).bytes(tail).build();
      parse(b);
    }),
    { numRuns: 400, seed: 4 },
  );
});

/** Runs `parse` and checks it was quick and allocated next to nothing. */
function failsFast(bytes: Uint8Array, re: RegExp): void {
  const before = process.memoryUsage().arrayBuffers;
  const t0 = performance.now();
  expectError(bytes, re);
  const ms = performance.now() - t0;
  const grew = process.memoryUsage().arrayBuffers - before;
  assert.ok(ms < 1000, `took ${ms} ms`);
  assert.ok(grew < 32 * 2 ** 20, `array buffers grew by ${grew} bytes`);
}

test('a file claiming a 2^40-byte string (or a 1 GiB one) fails fast without allocating it', () => {
  failsFast(new GgufBytes().header(3, 0, 1).u64(2n ** 40n).bytes(new Uint8Array(20)).build(), /claims 1099511627776 bytes but only 20 are left/);
  // 1 GiB would be allocatable: the check against the bytes left must come first.
  failsFast(new GgufBytes().header(3, 0, 1).str('k').u32(T.string).u64(2 ** 30).bytes([1, 2, 3]).build(), /metadata 'k'.*claims 1073741824 bytes/);
  failsFast(new GgufBytes().header(3, 1, 0).u64(2n ** 40n).bytes(new Uint8Array(40)).build(), /name of tensor #0.*claims/);
});

test('huge array counts, tensor counts and metadata counts fail fast', () => {
  const kv = (): GgufBytes => new GgufBytes().header(3, 0, 1).str('a');
  failsFast(kv().u32(T.array).u32(T.u8).u64(2n ** 60n).bytes([1, 2]).build(), /item count of metadata 'a' at byte 41 is 1152921504606846976, more than/);
  failsFast(kv().u32(T.array).u32(T.u8).u64(2 ** 28 - 1).bytes([1, 2]).build(), /claims 268435455 items/);
  failsFast(kv().u32(T.array).u32(T.string).u64(1000).bytes(new Uint8Array(100)).build(), /claims 1000 items of string/);
  failsFast(kv().u32(T.array).u32(T.array).u64(1_000_000).bytes(new Uint8Array(100)).build(), /claims 1000000 items of array/);
  failsFast(new GgufBytes().header(3, 2n ** 60n, 0).build(), /tensor count at byte 8 is 1152921504606846976/);
  failsFast(new GgufBytes().header(3, 2n ** 64n - 1n, 0).build(), /tensor count at byte 8 is 18446744073709551615/);
  failsFast(new GgufBytes().header(3, 0, 2n ** 63n).build(), /metadata count at byte 16 is 9223372036854775808/);
  failsFast(new GgufBytes().header(3, 0, 2 ** 40).build(), /claims 1099511627776 metadata entries, more than the file can hold/);
  failsFast(new GgufBytes().header(3, 2 ** 40, 0).build(), /claims 1099511627776 tensors, more than the file can hold/);
  failsFast(new GgufBytes().header(3, 5, 0).build(), /claims 5 tensors/);
});

test('arrays nested 10000 deep are rejected, not a stack overflow', () => {
  const b = new GgufBytes().header(3, 0, 1).str('deep').u32(T.array);
  for (let i = 0; i < 10_000; i++) b.u32(T.array).u64(1);
  b.u32(T.u8).u64(0);
  failsFast(b.build(), /nests arrays more than 16 deep/);
});

/** A file with one tensor info (name 'w') and whatever data bytes follow, alignment 32. */
function oneTensor(dims: Array<number | bigint>, type: number, offset: number | bigint, dataBytes: number, nDims = dims.length): Uint8Array {
  const b = new GgufBytes().header(3, 1, 0).str('w').u32(nDims);
  for (const d of dims) b.u64(d);
  b.u32(type).u64(offset).pad(32);
  return b.bytes(new Uint8Array(dataBytes)).build();
}

test('tensor infos: offsets past the end, misaligned, absurd dims, unknown types', () => {
  assert.ok(!(parse(oneTensor([4], 0, 0, 16)) instanceof HalfpipeError)); // the baseline parses
  expectError(oneTensor([4], 0, 32, 16), /extends past the end of the file/);
  expectError(oneTensor([4], 0, 0, 15), /extends past the end of the file/);
  expectError(oneTensor([4], 0, 2n ** 64n - 32n, 16), /offset of tensor 'w' at byte \d+ is 18446744073709551584/);
  expectError(oneTensor([4], 0, 2 ** 40, 16), /extends past the end/);
  expectError(oneTensor([4], 0, 8, 64), /offset 8 is not a multiple of the alignment 32/);
  expectError(oneTensor([2n ** 32n, 2n ** 32n], 0, 0, 16), /more than 2\^53 elements/);
  expectError(oneTensor([2n ** 64n - 1n], 0, 0, 16), /dimension 0 of tensor 'w' at byte \d+ is 18446744073709551615/);
  expectError(oneTensor([4, 0], 0, 0, 16), /zero-sized dimension 1/);
  expectError(oneTensor([2n ** 40n], 0, 0, 16), /4398046511104 bytes .* extends past the end/);
  expectError(oneTensor([1, 1, 1, 1, 1], 0, 0, 16), /has 5 dimensions \(at most 4\)/);
  expectError(oneTensor([], 0, 0, 16, 2 ** 31), /has 2147483648 dimensions/);
  expectError(oneTensor([4], 99, 0, 16), /unsupported ggml type id 99 \(supported: F32 \(0\), .*BF16 \(30\)\)/);
  expectError(oneTensor([256], 15, 0, 1024), /unsupported ggml type id 15/); // Q8_K: not a storage type here
  expectError(oneTensor([4], 4, 0, 16), /unsupported ggml type id 4/); // Q4_2: removed from ggml
  expectError(oneTensor([48], 2, 0, 64), /rows of 48 elements, not a multiple of the block size 32/);
  // duplicate and overlapping tensors
  const two = (name2: string, off2: number): Uint8Array =>
    new GgufBytes().header(3, 2, 0).str('w').u32(1).u64(8).u32(0).u64(0).str(name2).u32(1).u64(8).u32(0).u64(off2).pad(32).bytes(new Uint8Array(96)).build();
  assert.ok(!(parse(two('v', 32)) instanceof HalfpipeError));
  expectError(two('w', 32), /duplicate tensor name 'w'/);
  expectError(two('v', 0), /tensors 'w' and 'v' overlap/);
  expectError(new GgufBytes().header(3, 1, 0).str('x'.repeat(65)).build(), /at most 64 allowed/);
  expectError(new GgufBytes().header(3, 1, 0).str('').u32(1).u64(1).u32(0).u64(0).pad(32).bytes(new Uint8Array(32)).build(), /empty name/);
});

test('metadata: unknown value types, bad bools, bad UTF-8, duplicate keys, bad alignment', () => {
  const kv = (key = 'a'): GgufBytes => new GgufBytes().header(3, 0, 1).str(key);
  expectError(kv().u32(13).u32(0).build(), /metadata 'a' .*unknown value type 13/);
  expectError(kv().u32(0xffffffff).u32(0).build(), /unknown value type 4294967295/);
  expectError(kv().u32(T.array).u32(42).u64(0).build(), /items of metadata 'a' .*unknown value type 42/);
  expectError(kv().u32(T.bool).u8(2).build(), /bool with byte value 2/);
  expectError(new GgufBytes().header(3, 0, 1).u64(2).bytes([0xc3, 0x28]).u32(T.u8).u8(1).build(), /metadata key #0 .*not valid UTF-8/);
  expectError(kv().u32(T.string).u64(1).bytes([0xff]).build(), /not valid UTF-8/);
  expectError(new GgufBytes().header(3, 0, 2).str('a').u32(T.u8).u8(1).str('a').u32(T.u8).u8(2).build(), /duplicate metadata key 'a'/);
  expectError(kv('').u32(T.u8).u8(1).u8(0).build(), /metadata key #0 is empty/);
  expectError(kv('general.alignment').u32(T.u32).u32(3).build(), /power of two .*found 3/);
  expectError(kv('general.alignment').u32(T.u32).u32(0).build(), /power of two .*found 0/);
  expectError(kv('general.alignment').u32(T.u32).u32(2 ** 31).build(), /power of two/);
  expectError(kv('general.alignment').u32(T.string).str('32').build(), /must be an unsigned integer, found string/);
  expectError(kv('general.alignment').u32(T.i32).i32(32).build(), /found i32/);
  expectError(kv().u32(T.u32).bytes([1, 2]).build(), /truncated: metadata 'a' at byte \d+ needs 4 bytes, 2 left/);
});

test('magic and version', () => {
  expectError(new Uint8Array(0), /not a GGUF file: only 0 bytes/);
  expectError(new Uint8Array([0x47, 0x47, 0x55]), /only 3 bytes/);
  expectError(new TextEncoder().encode('GGML\x03\0\0\0'), /magic is 47 47 4d 4c, expected 47 47 55 46/);
  expectError(new TextEncoder().encode('{"a": 1}'), /not a GGUF file/);
  expectError(new GgufBytes().header(1, 0, 0).build(), /GGUF v1 is not supported/);
  expectError(new GgufBytes().header(4, 0, 0).build(), /unsupported GGUF version 4/);
  expectError(new GgufBytes().header(0x03000000, 0, 0).build(), /big-endian/);
  expectError(new GgufBytes().bytes([0x47, 0x47, 0x55, 0x46, 3, 0]).build(), /truncated: version/);
  // an empty but complete header is a valid (empty) file
  const g = parse(new GgufBytes().header(3, 0, 0).build());
  assert.ok(!(g instanceof HalfpipeError) && g.tensors.length === 0 && g.metadata.size === 0);
});
