import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import fc from 'fast-check';
import { bf16BitsToNumber, f16BitsToNumber, numberToBf16Bits, numberToF16Bits, type DType } from '../core/dtype.js';
import { HalfpipeError } from '../core/errors.js';
import { Tensor } from '../core/tensor.js';
import { loadTensor, MAX_HEADER_BYTES, readSafetensorsHeader, writeSafetensors } from './safetensors.js';

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'halfpipe-st-'));
process.on('exit', () => fs.rmSync(tmp, { recursive: true, force: true }));
let counter = 0;
const tmpFile = () => path.join(tmp, `t${counter++}.safetensors`);

const rejects = (fn: () => unknown, pattern: RegExp, code?: string) =>
  assert.throws(fn, (e: unknown) => {
    assert.ok(e instanceof HalfpipeError, `expected a HalfpipeError, got ${String(e)}`);
    assert.match(e.message, pattern);
    if (code) assert.equal(e.code, code);
    return true;
  });

/** A safetensors file from a raw header (object or exact string) and data bytes. */
function craft(header: unknown, data: Uint8Array = new Uint8Array(0), lengthOverride?: bigint): string {
  const json = header instanceof Uint8Array ? header : Buffer.from(typeof header === 'string' ? header : JSON.stringify(header), 'utf8');
  const len = Buffer.alloc(8);
  len.writeBigUInt64LE(lengthOverride ?? BigInt(json.length));
  const file = tmpFile();
  fs.writeFileSync(file, Buffer.concat([len, json, data]));
  return file;
}

const iota = (n: number, scale = 1) => Array.from({ length: n }, (_, i) => (i - n / 2) * scale);

test('round trip keeps dtype, shape and bits for F32, F16 and BF16, including scalars and empty tensors', () => {
  const tensors: Array<{ name: string; tensor: Tensor }> = [];
  const shapes = [[2, 3], [], [0], [3, 0, 2], [1, 1, 5]];
  for (const dtype of ['f32', 'f16', 'bf16'] as DType[]) {
    shapes.forEach((shape, i) => {
      const n = shape.reduce((a, b) => a * b, 1);
      tensors.push({ name: `${dtype}.${i}`, tensor: Tensor.fromValues(iota(n, 0.37), shape, dtype) });
    });
  }
  // raw bits survive: a signalling-NaN payload in f16 and -0 in bf16
  tensors.push({ name: 'nan', tensor: new Tensor('f16', new Uint16Array([0x7d01, 0x8000]), [2]) });
  const file = tmpFile();
  writeSafetensors(file, tensors, { format: 'pt', note: 'ünïcode' });
  const { tensors: infos, metadata } = readSafetensorsHeader(file);
  assert.deepEqual(metadata, { format: 'pt', note: 'ünïcode' });
  assert.deepEqual(infos.map((i) => i.name), tensors.map((t) => t.name)); // data order = write order
  for (const { name, tensor } of tensors) {
    const info = infos.find((i) => i.name === name)!;
    assert.equal(info.dtype, tensor.dtype.toUpperCase());
    assert.deepEqual(info.shape, tensor.shape);
    assert.equal(info.file, path.resolve(file));
    const back = loadTensor(info);
    assert.equal(back.dtype, tensor.dtype);
    assert.deepEqual(back.shape, tensor.shape);
    assert.deepEqual([...back.data], [...tensor.data], name);
  }
  // header padded with spaces to a multiple of 8, data right after it
  const bytes = fs.readFileSync(file);
  const n = Number(bytes.readBigUInt64LE(0));
  assert.equal(n % 8, 0);
  const headerText = bytes.subarray(8, 8 + n).toString('utf8');
  assert.equal(headerText.trimEnd(), JSON.stringify(JSON.parse(headerText)));
  assert.equal(infos[0]!.byteOffset, 8 + n);
});

test('a hand-written file (as another writer produces) reads back exactly', () => {
  const data = new Uint8Array(new Float32Array([1.5, -2]).buffer);
  const bf = new Uint8Array(new Uint16Array([0x3f80, 0xc000, 0x7f80]).buffer); // 1, -2, inf
  const file = craft(
    { __metadata__: { format: 'pt' }, b: { dtype: 'BF16', shape: [3], data_offsets: [8, 14] }, a: { dtype: 'F32', shape: [2, 1], data_offsets: [0, 8] } },
    Buffer.concat([data, bf]),
  );
  const { tensors } = readSafetensorsHeader(file);
  assert.deepEqual(tensors.map((t) => [t.name, t.byteLength]), [['a', 8], ['b', 6]]);
  assert.deepEqual([...loadTensor(tensors[0]!).toFloat64Array()], [1.5, -2]);
  assert.deepEqual([...loadTensor(tensors[1]!).toFloat64Array()], [1, -2, Infinity]);
  assert.deepEqual([...loadTensor(tensors[1]!, { dtype: 'f32' }).toFloat64Array()], [1, -2, Infinity]);
});

test('a non-contiguous view is written row-major', () => {
  const t = Tensor.fromValues(iota(6), [2, 3], 'f32').transpose(0, 1).narrow(0, 1, 2);
  const file = tmpFile();
  writeSafetensors(file, [{ name: 'v', tensor: t }]);
  const back = loadTensor(readSafetensorsHeader(file).tensors[0]!);
  assert.deepEqual(back.shape, [2, 2]);
  assert.deepEqual([...back.toFloat64Array()], [...t.toFloat64Array()]);
});

/** f32 bit patterns covering every f16/bf16 rounding region, ties, subnormals, overflow and NaN. */
function interestingF32Bits(): Uint32Array {
  const bits: number[] = [0, 0x80000000, 0x7f800000, 0xff800000, 0x7fc00000, 0x7f800001, 0xffc12345, 0x7f7fffff, 0x00000001, 0x007fffff];
  const around = [0x477fe000, 0x477ff000, 0x477fefff, 0x477ff001, 0x38800000, 0x387fffff, 0x33000000, 0x33000001, 0x32ffffff, 0x33800000, 0x337fffff, 0x3f800000, 0x3f801000, 0x3f803000, 0x3f808000, 0x3f818000, 0x3f7fffff];
  for (const a of around) for (let d = -2; d <= 2; d++) bits.push(a + d, (a + d) | 0x80000000);
  // every f16 value's halfway points to its neighbours, and every bf16 halfway point in a few binades
  for (let h = 0; h < 0x7c00; h++) {
    const v = new Float32Array([f16BitsToNumber(h)]);
    const b = new Uint32Array(v.buffer)[0]!;
    bits.push(b, b + 0x1000, b - 0x1000 + 1, b + 1);
  }
  for (let h = 0x3e00; h < 0x4100; h++) bits.push((h << 16) | 0x8000, (h << 16) | 0x8001, (h << 16) | 0x7fff);
  // and random patterns
  const rnd = fc.sample(fc.integer({ min: 0, max: 0xffffffff }), { numRuns: 200_000, seed: 42 });
  return new Uint32Array([...bits.map((b) => b >>> 0), ...rnd]);
}

test('loading as another dtype rounds each value once (to nearest, ties to even) across chunk boundaries', () => {
  const bits = interestingF32Bits();
  assert.ok(bits.length > 300_000); // more than one 1 MiB conversion chunk
  const values = new Float32Array(bits.buffer);
  const file = tmpFile();
  writeSafetensors(file, [{ name: 'x', tensor: new Tensor('f32', values, [bits.length]) }]);
  const info = readSafetensorsHeader(file).tensors[0]!;
  const f16 = loadTensor(info, { dtype: 'f16' });
  const bf16 = loadTensor(info, { dtype: 'bf16' });
  assert.equal(f16.dtype, 'f16');
  for (let i = 0; i < bits.length; i++) {
    const x = values[i]!;
    if (f16.data[i] !== numberToF16Bits(x)) assert.fail(`f16 of f32 bits 0x${bits[i]!.toString(16)}: got 0x${f16.data[i]!.toString(16)}, want 0x${numberToF16Bits(x).toString(16)}`);
    if (bf16.data[i] !== numberToBf16Bits(x)) assert.fail(`bf16 of f32 bits 0x${bits[i]!.toString(16)}: got 0x${bf16.data[i]!.toString(16)}, want 0x${numberToBf16Bits(x).toString(16)}`);
  }

  // half -> f32 is exact; f16 <-> bf16 rounds once from the exact value
  const all16 = new Uint16Array(65536).map((_, i) => i);
  const file16 = tmpFile();
  writeSafetensors(file16, [
    { name: 'h', tensor: new Tensor('f16', all16, [65536]) },
    { name: 'b', tensor: new Tensor('bf16', all16, [256, 256]) },
  ]);
  const [h, b] = readSafetensorsHeader(file16).tensors;
  const h32 = loadTensor(h!, { dtype: 'f32' });
  const b32 = loadTensor(b!, { dtype: 'f32' });
  const hb = loadTensor(h!, { dtype: 'bf16' });
  const bh = loadTensor(b!, { dtype: 'f16' });
  assert.deepEqual(b32.shape, [256, 256]);
  for (let i = 0; i < 65536; i++) {
    assert.ok(Object.is(h32.data[i], Math.fround(f16BitsToNumber(i))) || Number.isNaN(h32.data[i]!));
    if (Number.isNaN(bf16BitsToNumber(i))) assert.ok(Number.isNaN(b32.data[i]!));
    else assert.equal(new Uint32Array(b32.data.buffer)[i], (i << 16) >>> 0); // bit-exact
    if (hb.data[i] !== numberToBf16Bits(f16BitsToNumber(i))) assert.fail(`f16 0x${i.toString(16)} -> bf16`);
    if (bh.data[i] !== numberToF16Bits(bf16BitsToNumber(i))) assert.fail(`bf16 0x${i.toString(16)} -> f16`);
  }
});

test('loadTensor reads into storage from the given allocator', () => {
  const file = tmpFile();
  writeSafetensors(file, [{ name: 'x', tensor: Tensor.fromValues([1, 2, 3], [3], 'f16') }]);
  const info = readSafetensorsHeader(file).tensors[0]!;
  const calls: string[] = [];
  const alloc = (dtype: DType, n: number) => {
    calls.push(`${dtype}:${n}`);
    return dtype === 'f32' ? new Float32Array(n) : new Uint16Array(n);
  };
  assert.deepEqual([...loadTensor(info, { alloc }).toFloat64Array()], [1, 2, 3]);
  assert.deepEqual([...loadTensor(info, { alloc, dtype: 'f32' }).toFloat64Array()], [1, 2, 3]);
  assert.deepEqual(calls, ['f16:3', 'f32:3']);
});

test('property: random tensors round trip through a file in every dtype pair', () => {
  fc.assert(
    fc.property(
      fc.constantFrom<DType>('f32', 'f16', 'bf16'),
      fc.constantFrom<DType>('f32', 'f16', 'bf16'),
      fc.array(fc.integer({ min: 0, max: 4 }), { maxLength: 3 }),
      fc.double({ min: -1e5, max: 1e5, noNaN: true }),
      (src, dst, shape, scale) => {
        const n = shape.reduce((a, b) => a * b, 1);
        const t = Tensor.fromValues(iota(n, scale / 7), shape, src);
        const file = tmpFile();
        writeSafetensors(file, [{ name: 't', tensor: t }]);
        const back = loadTensor(readSafetensorsHeader(file).tensors[0]!, { dtype: dst });
        fs.rmSync(file);
        assert.deepEqual(back.shape, shape);
        assert.deepEqual([...back.data], [...t.to(dst).data]);
      },
    ),
    { numRuns: 150 },
  );
});

// ---- validation ------------------------------------------------------------------------------

const good = { w: { dtype: 'F32', shape: [2], data_offsets: [0, 8] } };
const eight = new Uint8Array(8);

test('a file too small or with a header length past the end or over the limit is rejected', () => {
  const tiny = tmpFile();
  fs.writeFileSync(tiny, Buffer.alloc(5));
  rejects(() => readSafetensorsHeader(tiny), /5 bytes is too small/, 'config');
  rejects(() => readSafetensorsHeader(craft(good, eight, 10_000n)), /header length 10000 reaches past the end/, 'config');
  rejects(() => readSafetensorsHeader(craft(good, eight, BigInt(MAX_HEADER_BYTES) + 1n)), /exceeds the 100000000-byte limit/, 'config');
  rejects(() => readSafetensorsHeader(craft(good, eight, 0xffffffffffffffffn)), /exceeds/, 'config');
  rejects(() => readSafetensorsHeader(path.join(tmp, 'missing.safetensors')), /cannot open.*ENOENT/, 'config');
  assert.equal(readSafetensorsHeader(craft(good, eight)).tensors.length, 1); // the control is valid
});

test('bad JSON, a non-object header and invalid UTF-8 are rejected with the file named', () => {
  const bad = craft('{"w": {"dtype": "F32",', eight);
  rejects(() => readSafetensorsHeader(bad), new RegExp(`${bad.replace(/[.]/g, '\\.')}: invalid safetensors header JSON`), 'config');
  rejects(() => readSafetensorsHeader(craft('[1, 2]   ', eight)), /must be a JSON object/);
  rejects(() => readSafetensorsHeader(craft(Buffer.from('{"\xff": 1}', 'latin1'), eight)), /invalid safetensors header JSON/);
  rejects(() => readSafetensorsHeader(craft({ w: 'F32' }, eight)), /tensor 'w': entry must be an object/);
  rejects(() => readSafetensorsHeader(craft({ ...good, __metadata__: { n: 1 } }, eight)), /__metadata__ value 'n' must be a string/);
  rejects(() => readSafetensorsHeader(craft({ ...good, __metadata__: [] }, eight)), /__metadata__ must be an object/);
});

test('offsets out of range, reversed, overlapping or not matching the shape are rejected', () => {
  const truncated = tmpFile();
  writeSafetensors(truncated, [{ name: 'a', tensor: Tensor.fromValues([1, 2, 3, 4], [4], 'f32') }]);
  fs.truncateSync(truncated, fs.statSync(truncated).size - 3);
  rejects(() => readSafetensorsHeader(truncated), /tensor 'a': data_offsets \[0, 16\] reach past the end of the data \(13 bytes; truncated/, 'config');
  rejects(() => readSafetensorsHeader(craft({ w: { dtype: 'F32', shape: [2], data_offsets: [8, 16] } }, eight)), /reach past the end/);
  rejects(() => readSafetensorsHeader(craft({ w: { dtype: 'F32', shape: [0], data_offsets: [8, 0] } }, eight)), /end before they begin/);
  rejects(() => readSafetensorsHeader(craft({ w: { dtype: 'F32', shape: [2], data_offsets: [0, -8] } }, eight)), /data_offsets must be/);
  rejects(() => readSafetensorsHeader(craft({ w: { dtype: 'F32', shape: [2], data_offsets: [0] } }, eight)), /data_offsets must be/);
  rejects(
    () =>
      readSafetensorsHeader(
        craft({ a: { dtype: 'F16', shape: [2], data_offsets: [0, 4] }, b: { dtype: 'F16', shape: [2], data_offsets: [2, 6] } }, eight),
      ),
    /tensors 'a' \[0, 4\) and 'b' \[2, 6\) overlap/,
    'config',
  );
  rejects(() => readSafetensorsHeader(craft({ w: { dtype: 'F32', shape: [3], data_offsets: [0, 8] } }, eight)), /8 bytes of data for F32 shape \[3\] \(expected 12\)/, 'shape');
  rejects(() => readSafetensorsHeader(craft({ w: { dtype: 'F32', shape: [2, -1], data_offsets: [0, 8] } }, eight)), /shape must be an array of integers/, 'shape');
  rejects(() => readSafetensorsHeader(craft({ w: { dtype: 'F32', shape: [1.5], data_offsets: [0, 8] } }, eight)), /shape must be/);
  // adjacent and empty tensors do not overlap
  const ok = craft(
    { a: { dtype: 'F16', shape: [2], data_offsets: [0, 4] }, e: { dtype: 'F32', shape: [0], data_offsets: [4, 4] }, b: { dtype: 'F16', shape: [2], data_offsets: [4, 8] } },
    eight,
  );
  assert.deepEqual(readSafetensorsHeader(ok).tensors.map((t) => t.name), ['a', 'e', 'b']);
});

test('unknown dtypes are rejected naming the tensor, the dtype and the supported ones', () => {
  for (const dtype of ['F64', 'I64', 'F8_E4M3', 'bf16']) {
    rejects(
      () => readSafetensorsHeader(craft({ ...good, 'model.x': { dtype, shape: [1], data_offsets: [0, 8] } }, eight)),
      new RegExp(`tensor 'model\\.x' has unsupported dtype ${dtype} \\(supported: F32, F16, BF16\\)`),
      'dtype',
    );
  }
  rejects(() => readSafetensorsHeader(craft({ w: { dtype: 5, shape: [2], data_offsets: [0, 8] } }, eight)), /dtype must be a string/);
});

test('a file truncated after its header was read fails on load', () => {
  const file = tmpFile();
  writeSafetensors(file, [{ name: 'a', tensor: Tensor.fromValues([1, 2, 3, 4], [4], 'f32') }]);
  const info = readSafetensorsHeader(file).tensors[0]!;
  fs.truncateSync(file, fs.statSync(file).size - 4);
  rejects(() => loadTensor(info), /file ends at byte \d+, expected 4 more bytes/, 'config');
  rejects(() => loadTensor(info, { dtype: 'f16' }), /file ends/, 'config');
});

test('writeSafetensors rejects duplicate and reserved names', () => {
  const t = Tensor.fromValues([1], [1], 'f32');
  rejects(() => writeSafetensors(tmpFile(), [{ name: 'a', tensor: t }, { name: 'a', tensor: t }]), /'a' is written twice/, 'usage');
  rejects(() => writeSafetensors(tmpFile(), [{ name: '__metadata__', tensor: t }]), /invalid tensor name/, 'usage');
});
