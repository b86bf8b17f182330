/**
 * safetensors: an 8-byte little-endian u64 header length N, N bytes of UTF-8 JSON
 * `{ name: { dtype, shape, data_offsets: [begin, end] }, "__metadata__": { string: string } }`,
 * then the data; offsets are relative to the first byte after the header.
 *
 * Reading validates the whole header before any tensor is touched, and reads only the header
 * (bounded memory). Loading a tensor reads its bytes straight into the final tensor's storage; a
 * dtype conversion runs in bounded chunks so the peak stays about one copy of the tensor.
 * Only F32, F16 and BF16 are supported: halfpipe computes in these.
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { type DType, f16BitsToNumber } from '../core/dtype.js';
import { fail, HalfpipeError } from '../core/errors.js';
import { type Allocator, jsAllocator, numel, Tensor } from '../core/tensor.js';

export type SafetensorDType = 'F32' | 'F16' | 'BF16';
export const SAFETENSOR_DTYPES: readonly SafetensorDType[] = ['F32', 'F16', 'BF16'];

export interface SafetensorInfo {
  readonly name: string;
  readonly dtype: SafetensorDType;
  readonly shape: readonly number[];
  /** absolute path of the file that holds the tensor */
  readonly file: string;
  /** absolute byte offset of the tensor's data in `file` */
  readonly byteOffset: number;
  readonly byteLength: number;
}

export interface SafetensorsHeader {
  /** every tensor of the file, in data order */
  tensors: SafetensorInfo[];
  metadata: Record<string, string>;
}

/** The largest header accepted (the reference Rust implementation's limit). */
export const MAX_HEADER_BYTES = 100_000_000;

const ELEMENT_BYTES: Record<SafetensorDType, 2 | 4> = { F32: 4, F16: 2, BF16: 2 };
const TO_DTYPE: Record<SafetensorDType, DType> = { F32: 'f32', F16: 'f16', BF16: 'bf16' };
const FROM_DTYPE: Record<DType, SafetensorDType> = { f32: 'F32', f16: 'F16', bf16: 'BF16' };

export function safetensorDTypeOf(dtype: DType): SafetensorDType {
  return FROM_DTYPE[dtype];
}

export function dtypeOfSafetensor(dtype: SafetensorDType): DType {
  return TO_DTYPE[dtype];
}

let endiannessChecked = false;
/** Typed arrays use the host's byte order and safetensors is little-endian: refuse big-endian hosts. */
function checkLittleEndian(): void {
  if (endiannessChecked) return;
  if (os.endianness() !== 'LE') fail('layout', 'safetensors are little-endian and halfpipe reads them in place: big-endian hosts are not supported');
  endiannessChecked = true;
}

function describe(e: unknown): string {
  return e instanceof Error ? ((e as NodeJS.ErrnoException).code ?? e.message) : String(e);
}

/** Reads exactly `length` bytes at `position` into `into`, in chunks; fails if the file ends early. */
function readExactly(fd: number, into: Uint8Array, position: number, file: string): void {
  const CHUNK = 1 << 30; // readSync takes at most 2^31 - 1 bytes at once
  let done = 0;
  while (done < into.length) {
    const want = Math.min(CHUNK, into.length - done);
    let n: number;
    try {
      n = fs.readSync(fd, into, done, want, position + done);
    } catch (e) {
      return fail('config', `${file}: read failed at byte ${position + done}: ${describe(e)}`);
    }
    if (n === 0) fail('config', `${file}: file ends at byte ${position + done}, expected ${into.length - done} more bytes (truncated or changed since its header was read)`);
    done += n;
  }
}

function isPlainObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function isSize(v: unknown): v is number {
  return typeof v === 'number' && Number.isSafeInteger(v) && v >= 0;
}

/** Reads and validates the header of a safetensors file (and nothing else). */
export function readSafetensorsHeader(file: string): SafetensorsHeader {
  const abs = path.resolve(file);
  let fd: number;
  try {
    fd = fs.openSync(abs, 'r');
  } catch (e) {
    return fail('config', `${abs}: cannot open safetensors file: ${describe(e)}`);
  }
  try {
    const size = fs.fstatSync(fd).size;
    if (size < 8) fail('config', `${abs}: ${size} bytes is too small for a safetensors file (needs an 8-byte header length)`);
    const lenBytes = new Uint8Array(8);
    readExactly(fd, lenBytes, 0, abs);
    const headerLength = Buffer.from(lenBytes.buffer).readBigUInt64LE(0);
    if (headerLength > BigInt(MAX_HEADER_BYTES)) {
      fail('config', `${abs}: header length ${headerLength} exceeds the ${MAX_HEADER_BYTES}-byte limit (not a safetensors file?)`);
    }
    const n = Number(headerLength);
    if (n > size - 8) fail('config', `${abs}: header length ${n} reaches past the end of the ${size}-byte file (truncated or not a safetensors file)`);
    if (n < 2) fail('config', `${abs}: header length ${n} is too small for a JSON header`);
    const headerBytes = new Uint8Array(n);
    readExactly(fd, headerBytes, 8, abs);
    return parseHeader(abs, headerBytes, size);
  } finally {
    fs.closeSync(fd);
  }
}

function parseHeader(file: string, bytes: Uint8Array, fileSize: number): SafetensorsHeader {
  let json: unknown;
  try {
    json = JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(bytes));
  } catch (e) {
    return fail('config', `${file}: invalid safetensors header JSON: ${e instanceof Error ? e.message : String(e)}`);
  }
  if (!isPlainObject(json)) fail('config', `${file}: the safetensors header must be a JSON object`);
  const dataStart = 8 + bytes.length;
  const dataSize = fileSize - dataStart;
  const metadata: Record<string, string> = {};
  const entries: Array<{ info: SafetensorInfo; begin: number; end: number }> = [];
  for (const [name, entry] of Object.entries(json)) {
    if (name === '__metadata__') {
      if (!isPlainObject(entry)) fail('config', `${file}: __metadata__ must be an object of strings`);
      for (const [k, v] of Object.entries(entry)) {
        if (typeof v !== 'string') fail('config', `${file}: __metadata__ value '${k}' must be a string, got ${JSON.stringify(v)}`);
        metadata[k] = v;
      }
      continue;
    }
    const where = `${file}: tensor '${name}'`;
    if (!isPlainObject(entry)) fail('config', `${where}: entry must be an object with dtype, shape and data_offsets`);
    const { dtype, shape, data_offsets: offsets } = entry;
    if (typeof dtype !== 'string') fail('config', `${where}: dtype must be a string`);
    if (!(SAFETENSOR_DTYPES as readonly string[]).includes(dtype)) {
      fail('dtype', `${where} has unsupported dtype ${dtype} (supported: ${SAFETENSOR_DTYPES.join(', ')})`);
    }
    const st = dtype as SafetensorDType;
    if (!Array.isArray(shape) || !shape.every(isSize)) fail('shape', `${where}: shape must be an array of integers >= 0, got ${JSON.stringify(shape)}`);
    if (!Array.isArray(offsets) || offsets.length !== 2 || !offsets.every(isSize)) {
      fail('config', `${where}: data_offsets must be [begin, end] integers >= 0, got ${JSON.stringify(offsets)}`);
    }
    const [begin, end] = offsets as [number, number];
    if (begin > end) fail('config', `${where}: data_offsets [${begin}, ${end}] end before they begin`);
    if (end > dataSize) fail('config', `${where}: data_offsets [${begin}, ${end}] reach past the end of the data (${dataSize} bytes; truncated file?)`);
    const count = numel(shape as number[]);
    const expected = count * ELEMENT_BYTES[st];
    if (!Number.isSafeInteger(expected) || expected !== end - begin) {
      fail('shape', `${where}: ${end - begin} bytes of data for ${st} shape [${(shape as number[]).join(', ')}] (expected ${expected})`);
    }
    entries.push({
      begin,
      end,
      info: { name, dtype: st, shape: Object.freeze([...(shape as number[])]), file, byteOffset: dataStart + begin, byteLength: end - begin },
    });
  }
  entries.sort((a, b) => a.begin - b.begin || a.end - b.end);
  for (let i = 1; i < entries.length; i++) {
    const prev = entries[i - 1]!;
    const cur = entries[i]!;
    if (cur.begin < prev.end) {
      fail('config', `${file}: tensors '${prev.info.name}' [${prev.begin}, ${prev.end}) and '${cur.info.name}' [${cur.begin}, ${cur.end}) overlap`);
    }
  }
  return { tensors: entries.map((e) => e.info), metadata };
}

export interface LoadTensorOptions {
  /** the dtype of the returned tensor (default: the file's); values are rounded once */
  dtype?: DType;
  alloc?: Allocator;
}

/** Bytes converted per step when the requested dtype differs from the file's. */
const CONVERT_CHUNK_BYTES = 1 << 20;

function bytesOf(data: ArrayBufferView, length: number): Uint8Array {
  return new Uint8Array(data.buffer, data.byteOffset, length);
}

/**
 * Loads one tensor: a contiguous tensor of `info.shape`. Same dtype: the bytes are read straight
 * into the new tensor's storage. Another dtype: the file is read in 1 MiB chunks and each value is
 * rounded once (to nearest, ties to even) into the new storage.
 */
export function loadTensor(info: SafetensorInfo, opts: LoadTensorOptions = {}): Tensor {
  checkLittleEndian();
  const from = TO_DTYPE[info.dtype];
  if (!from) fail('dtype', `tensor '${info.name}' has unsupported dtype ${info.dtype} (supported: ${SAFETENSOR_DTYPES.join(', ')})`);
  const to = opts.dtype ?? from;
  const count = numel(info.shape);
  if (count * ELEMENT_BYTES[info.dtype] !== info.byteLength) {
    fail('shape', `tensor '${info.name}': ${info.byteLength} bytes for ${info.dtype} shape [${info.shape.join(', ')}]`);
  }
  const tensor = Tensor.empty(info.shape, to, opts.alloc ?? jsAllocator);
  if (count === 0) return tensor;
  let fd: number;
  try {
    fd = fs.openSync(info.file, 'r');
  } catch (e) {
    return fail('config', `${info.file}: cannot open safetensors file: ${describe(e)}`);
  }
  try {
    if (to === from) {
      readExactly(fd, bytesOf(tensor.data, info.byteLength), info.byteOffset, info.file);
    } else {
      convertInChunks(fd, info, from, to, tensor.data, count);
    }
  } finally {
    fs.closeSync(fd);
  }
  return tensor;
}

/** Reads `count` elements of `from` and stores them as `to` in `out`, one chunk at a time. */
function convertInChunks(fd: number, info: SafetensorInfo, from: DType, to: DType, out: Float32Array | Uint16Array, count: number): void {
  const inBytes = ELEMENT_BYTES[info.dtype];
  const chunkElems = CONVERT_CHUNK_BYTES / 4;
  const scratch = new Uint8Array(chunkElems * inBytes);
  // Each chunk is decoded exactly to f32 bits (every f16 and bf16 value is an f32), then encoded.
  const f32 = new Float32Array(chunkElems);
  const f32Bits = new Uint32Array(f32.buffer);
  const outBits = to === 'f32' ? new Uint32Array(out.buffer, out.byteOffset, count) : (out as Uint16Array);
  for (let start = 0; start < count; start += chunkElems) {
    const n = Math.min(chunkElems, count - start);
    const raw = scratch.subarray(0, n * inBytes);
    readExactly(fd, raw, info.byteOffset + start * inBytes, info.file);
    if (from === 'f32') {
      f32Bits.set(new Uint32Array(scratch.buffer, 0, n));
    } else {
      const src = new Uint16Array(scratch.buffer, 0, n);
      if (from === 'bf16') for (let i = 0; i < n; i++) f32Bits[i] = src[i]! << 16;
      else for (let i = 0; i < n; i++) f32[i] = f16BitsToNumber(src[i]!);
    }
    if (to === 'f32') outBits.set(f32Bits.subarray(0, n), start);
    else if (to === 'f16') for (let i = 0; i < n; i++) outBits[start + i] = f32BitsToF16Bits(f32Bits[i]!);
    else for (let i = 0; i < n; i++) outBits[start + i] = f32BitsToBf16Bits(f32Bits[i]!);
  }
}

/**
 * f32 bits -> bf16 bits, rounded to nearest with ties to even; NaN becomes the quiet NaN 0x7fc0
 * with its sign (as numberToBf16Bits does). Integer rounding on the bits is exact for every finite
 * input, subnormals included, and carries into +-inf past the largest bf16.
 */
function f32BitsToBf16Bits(b: number): number {
  if ((b & 0x7fffffff) > 0x7f800000) return ((b >>> 16) & 0x8000) | 0x7fc0;
  return ((b + 0x7fff + ((b >>> 16) & 1)) >>> 16) & 0xffff;
}

/** f32 bits -> f16 bits, rounded to nearest with ties to even (as numberToF16Bits on the f32's value). */
function f32BitsToF16Bits(b: number): number {
  const sign = (b >>> 16) & 0x8000;
  const abs = b & 0x7fffffff;
  if (abs > 0x7f800000) return sign | 0x7e00; // NaN
  if (abs >= 0x477ff000) return sign | 0x7c00; // >= 65520 rounds to infinity
  if (abs >= 0x38800000) {
    // normal f16: rebias the exponent (127 -> 15) and round off 13 mantissa bits
    let h = (abs - 0x38000000) >>> 13;
    const rem = abs & 0x1fff;
    if (rem > 0x1000 || (rem === 0x1000 && h & 1)) h++;
    return sign | h;
  }
  const e = abs >>> 23;
  if (e < 102) return sign; // below 2^-25: rounds to zero
  // subnormal f16: value = m * 2^(e - 150) = k * 2^-24 with k = m * 2^(e - 126)
  const m = (abs & 0x7fffff) | 0x800000;
  const shift = 126 - e; // 14..24
  let k = m >>> shift;
  const rem = m & ((1 << shift) - 1);
  const half = 1 << (shift - 1);
  if (rem > half || (rem === half && k & 1)) k++;
  return sign | k;
}

/**
 * Writes tensors (any layout; stored row-major) as a safetensors file, data in the given order.
 * The header is padded with spaces to a multiple of 8 bytes, as Hugging Face's writer does.
 */
export function writeSafetensors(file: string, tensors: ReadonlyArray<{ name: string; tensor: Tensor }>, metadata?: Record<string, string>): void {
  checkLittleEndian();
  const header: Record<string, unknown> = {};
  if (metadata && Object.keys(metadata).length > 0) {
    for (const [k, v] of Object.entries(metadata)) if (typeof v !== 'string') fail('usage', `metadata value '${k}' must be a string`);
    header.__metadata__ = metadata;
  }
  const payload: Uint8Array[] = [];
  let offset = 0;
  for (const { name, tensor } of tensors) {
    if (name === '__metadata__' || name.length === 0) fail('usage', `invalid tensor name '${name}'`);
    if (Object.hasOwn(header, name)) fail('usage', `tensor '${name}' is written twice`);
    const t = tensor.contiguous();
    const elemBytes = t.dtype === 'f32' ? 4 : 2;
    const bytes = new Uint8Array(t.data.buffer, t.data.byteOffset + t.offset * elemBytes, t.numel * elemBytes);
    header[name] = { dtype: FROM_DTYPE[t.dtype], shape: [...t.shape], data_offsets: [offset, offset + bytes.length] };
    payload.push(bytes);
    offset += bytes.length;
  }
  let json = JSON.stringify(header);
  let jsonBytes = Buffer.from(json, 'utf8');
  const pad = (8 - (jsonBytes.length % 8)) % 8;
  if (pad > 0) {
    json += ' '.repeat(pad);
    jsonBytes = Buffer.from(json, 'utf8');
  }
  const lengthBytes = Buffer.alloc(8);
  lengthBytes.writeBigUInt64LE(BigInt(jsonBytes.length));
  let fd: number;
  try {
    fd = fs.openSync(file, 'w');
  } catch (e) {
    return fail('usage', `${file}: cannot create safetensors file: ${describe(e)}`);
  }
  try {
    writeAll(fd, lengthBytes, file);
    writeAll(fd, jsonBytes, file);
    for (const bytes of payload) writeAll(fd, bytes, file);
  } finally {
    fs.closeSync(fd);
  }
}

function writeAll(fd: number, bytes: Uint8Array, file: string): void {
  let done = 0;
  while (done < bytes.length) {
    try {
      done += fs.writeSync(fd, bytes, done, Math.min(1 << 30, bytes.length - done));
    } catch (e) {
      throw new HalfpipeError('usage', `${file}: write failed: ${describe(e)}`);
    }
  }
}
