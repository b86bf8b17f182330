/**
 * GGUF reader (v2 and v3, little-endian).
 *
 * File layout: magic 'GGUF', u32 version, u64 tensor count, u64 metadata count, the metadata
 * key/value pairs, the tensor infos (name, u32 n_dims, u64 dims[n_dims] innermost first, u32 ggml
 * type, u64 offset relative to the data section), zero padding to `general.alignment` (default 32),
 * then the tensor data. Strings are a u64 byte length and UTF-8 bytes; arrays a u32 item type, a u64
 * count and the items. (v1 used 32-bit lengths and counts; it is rejected.)
 *
 * The header is read incrementally through a bounded buffer. Every length and count read from the
 * file is checked against the bytes left in the file before anything is allocated for it, so a
 * corrupted or hostile file fails fast with a HalfpipeError (code 'config') and a one-line message,
 * and never makes the reader allocate in proportion to a number it has not checked.
 *
 * Tensor data is not read by readGguf; readTensorBytes / readTensorInto read one tensor when asked.
 */
import * as fs from 'node:fs';
import { fail, HalfpipeError } from '../../core/errors.js';
import {
  GGML_TYPES,
  type GgmlType,
  type GgufTypedArray,
  type GgufTypedValue,
  type GgufValue,
  type GgufValueType,
  ggufScalarBytes,
  lookupGgmlType,
  lookupGgufValueType,
  plainValue,
  SUPPORTED_GGML_TYPES,
} from './types.js';

export type { GgufValue, GgufTypedValue } from './types.js';

export interface GgufTensorInfo {
  readonly name: string;
  readonly type: GgmlType;
  /** GGUF `ne` order: dims[0] is the innermost, contiguous axis (a row has dims[0] elements). */
  readonly dims: number[];
  /** absolute byte offset of the tensor's data in the file */
  readonly offset: number;
  readonly byteLength: number;
}

export interface GgufFile {
  readonly path: string;
  /** 2 or 3 */
  readonly version: number;
  /** Plain values, in file order. See GgufValue for how integers are represented. */
  readonly metadata: Map<string, GgufValue>;
  /**
   * The same values with their GGUF types (file order): enough to write them back unchanged
   * (`writeGguf(path, { metadata: [...file.typedMetadata], ... })`). Arrays of scalars share their JS
   * array with `metadata`.
   */
  readonly typedMetadata: Map<string, GgufTypedValue>;
  /** tensors in file order */
  readonly tensors: GgufTensorInfo[];
  readonly alignment: number;
  /** absolute offset of the tensor data section */
  readonly dataOffset: number;
  readonly fileSize: number;
}

export const GGUF_MAGIC = 'GGUF';
export const GGUF_DEFAULT_ALIGNMENT = 32;

/** Limits beyond what the format needs; exceeding one means the file is corrupt. */
const MAX_KEY_BYTES = 65535;
const MAX_TENSOR_NAME_BYTES = 64; // the spec's limit (ggml itself keeps 63 + NUL)
const MAX_DIMS = 4;
const MAX_ARRAY_DEPTH = 16;
const MAX_STRING_BYTES = 1 << 28; // 256 MiB: far above any real metadata string, below V8's string limit
const MAX_ARRAY_ITEMS = 1 << 28;

const CHUNK = 1 << 20;
const utf8 = new TextDecoder('utf-8', { fatal: true });

/** One line: error messages must never span lines, whatever a file or an OS message contains. */
function oneLine(s: string): string {
  return s.replace(/\s+/g, ' ').trim();
}

/** A name or key from the file, quoted for a message: control characters escaped, at most 100 characters. */
function show(s: string): string {
  const t = s.length > 100 ? `${s.slice(0, 100)}...` : s;
  const escaped = t.replace(/[\u0000-\u001f\u007f-\u009f\u2028\u2029'\\]/g, (c) =>
    c === "'" || c === '\\' ? `\\${c}` : `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`,
  );
  return `'${escaped}'`;
}

/** A forward-only reader over the header, through one reused 1 MiB buffer. */
class Cursor {
  private readonly buf = new Uint8Array(CHUNK);
  private readonly view = new DataView(this.buf.buffer);
  private bufStart = 0;
  private bufLen = 0;
  pos = 0;

  constructor(
    private readonly fd: number,
    readonly size: number,
    private readonly path: string,
  ) {}

  fail(message: string): never {
    return fail('config', `${this.path}: ${message}`.replace(/[\r\n\u2028\u2029]+/g, ' '));
  }

  remaining(): number {
    return this.size - this.pos;
  }

  /** Makes [pos, pos + n) available in the buffer (n <= CHUNK) and returns its index there. */
  private take(n: number, what: string): number {
    if (n > this.size - this.pos) {
      this.fail(`truncated: ${what} at byte ${this.pos} needs ${n} bytes, ${this.size - this.pos} left`);
    }
    let at = this.pos - this.bufStart;
    if (at < 0 || at + n > this.bufLen) {
      const want = Math.min(CHUNK, this.size - this.pos);
      let got = 0;
      while (got < want) {
        const r = fs.readSync(this.fd, this.buf, got, want - got, this.pos + got);
        if (r === 0) this.fail(`file ended early at byte ${this.pos + got} (did it shrink while being read?)`);
        got += r;
      }
      this.bufStart = this.pos;
      this.bufLen = got;
      at = 0;
    }
    this.pos += n;
    return at;
  }

  bytes(n: number, what: string): Uint8Array {
    if (n <= CHUNK) {
      const at = this.take(n, what);
      return this.buf.subarray(at, at + n);
    }
    // Longer than the buffer: n was checked against the bytes left in the file by the caller.
    if (n > this.remaining()) this.take(n, what);
    const out = new Uint8Array(n);
    let got = 0;
    while (got < n) {
      const r = fs.readSync(this.fd, out, got, n - got, this.pos + got);
      if (r === 0) this.fail(`file ended early at byte ${this.pos + got}`);
      got += r;
    }
    this.pos += n;
    return out;
  }

  u8(what: string): number {
    return this.buf[this.take(1, what)]!;
  }
  i8(what: string): number {
    return this.view.getInt8(this.take(1, what));
  }
  u16(what: string): number {
    return this.view.getUint16(this.take(2, what), true);
  }
  i16(what: string): number {
    return this.view.getInt16(this.take(2, what), true);
  }
  u32(what: string): number {
    return this.view.getUint32(this.take(4, what), true);
  }
  i32(what: string): number {
    return this.view.getInt32(this.take(4, what), true);
  }
  f32(what: string): number {
    return this.view.getFloat32(this.take(4, what), true);
  }
  f64(what: string): number {
    return this.view.getFloat64(this.take(8, what), true);
  }

  /**
   * A u64 length, count, dimension or offset as a JS number. Any of them beyond 2^53 - 1 is larger
   * than a file can be, so it is an error right here (with the exact value in the message).
   */
  u64Count(what: string): number {
    const start = this.pos;
    const at = this.take(8, what);
    const lo = this.view.getUint32(at, true);
    const hi = this.view.getUint32(at + 4, true);
    if (hi >= 0x200000) this.fail(`${what} at byte ${start} is ${this.view.getBigUint64(at, true)}, more than any file can hold`);
    return hi * 2 ** 32 + lo;
  }

  /** A u64 value: a number when it is at most 2^53 - 1, a bigint beyond. */
  u64(what: string): number | bigint {
    const at = this.take(8, what);
    const lo = this.view.getUint32(at, true);
    const hi = this.view.getUint32(at + 4, true);
    if (hi < 0x200000) return hi * 2 ** 32 + lo;
    return (BigInt(hi) << 32n) | BigInt(lo);
  }

  /** An i64 value: a number when |v| <= 2^53 - 1, a bigint beyond. */
  i64(what: string): number | bigint {
    const at = this.take(8, what);
    const big = this.view.getBigInt64(at, true);
    return big >= -BigInt(Number.MAX_SAFE_INTEGER) && big <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(big) : big;
  }

  /** A GGUF string (u64 length + UTF-8), its length checked before anything is allocated. */
  string(what: string, maxBytes = MAX_STRING_BYTES): string {
    const start = this.pos;
    const len = this.u64Count(`length of ${what}`);
    if (len > this.remaining()) {
      this.fail(`${what} at byte ${start} claims ${len} bytes but only ${this.remaining()} are left in the file`);
    }
    if (len > maxBytes) this.fail(`${what} at byte ${start} is ${len} bytes long (at most ${maxBytes} allowed)`);
    const raw = this.bytes(len, what);
    try {
      return utf8.decode(raw);
    } catch {
      return this.fail(`${what} at byte ${start} is not valid UTF-8`);
    }
  }
}

/** Minimum encoded size of one item of `type` (for bounding counts by the bytes left). */
function minItemBytes(type: GgufValueType): number {
  if (type === 'string') return 8; // the length
  if (type === 'array') return 12; // item type + count
  return ggufScalarBytes(type)!;
}

function readScalar(c: Cursor, type: GgufValueType, what: string): number | bigint | boolean | string {
  switch (type) {
    case 'u8':
      return c.u8(what);
    case 'i8':
      return c.i8(what);
    case 'u16':
      return c.u16(what);
    case 'i16':
      return c.i16(what);
    case 'u32':
      return c.u32(what);
    case 'i32':
      return c.i32(what);
    case 'f32':
      return c.f32(what);
    case 'f64':
      return c.f64(what);
    case 'u64':
      return c.u64(what);
    case 'i64':
      return c.i64(what);
    case 'bool': {
      const at = c.pos;
      const b = c.u8(what);
      if (b > 1) c.fail(`${what} at byte ${at} is a bool with byte value ${b} (must be 0 or 1)`);
      return b === 1;
    }
    case 'string':
      return c.string(what);
    default:
      return c.fail(`internal: ${type} is not a scalar type`);
  }
}

function readValueType(c: Cursor, what: string): GgufValueType {
  const at = c.pos;
  const id = c.u32(`value type of ${what}`);
  const type = lookupGgufValueType(id);
  if (type === undefined) c.fail(`${what} at byte ${at} has unknown value type ${id} (known: 0..12)`);
  return type;
}

function readArray(c: Cursor, what: string, depth: number): GgufTypedArray {
  if (depth > MAX_ARRAY_DEPTH) c.fail(`${what} nests arrays more than ${MAX_ARRAY_DEPTH} deep`);
  const itemType = readValueType(c, `items of ${what}`);
  const at = c.pos;
  const count = c.u64Count(`item count of ${what}`);
  const need = count * minItemBytes(itemType);
  if (need > c.remaining()) {
    c.fail(`${what} at byte ${at} claims ${count} items of ${itemType} (>= ${need} bytes) but only ${c.remaining()} bytes are left`);
  }
  if (count > MAX_ARRAY_ITEMS) c.fail(`${what} at byte ${at} has ${count} items (at most ${MAX_ARRAY_ITEMS} allowed)`);
  if (itemType === 'array') {
    const items: GgufTypedArray[] = new Array(count);
    for (let i = 0; i < count; i++) items[i] = readArray(c, `${what}[${i}]`, depth + 1);
    return { type: 'array', itemType, value: items };
  }
  const items: Array<number | bigint | boolean | string> = new Array(count);
  for (let i = 0; i < count; i++) items[i] = readScalar(c, itemType, what);
  return { type: 'array', itemType, value: items } as GgufTypedArray;
}

function readValue(c: Cursor, what: string): GgufTypedValue {
  const type = readValueType(c, what);
  if (type === 'array') return readArray(c, what, 1);
  return { type, value: readScalar(c, type, what) } as GgufTypedValue;
}

function describeType(v: GgufTypedValue): string {
  return v.type === 'array' ? `array of ${v.itemType}` : v.type;
}

function parse(fd: number, path: string, size: number): GgufFile {
  const c: Cursor = new Cursor(fd, size, path);
  if (size < 4) c.fail(`not a GGUF file: only ${size} bytes`);
  const magic = c.bytes(4, 'magic');
  if (String.fromCharCode(...magic) !== GGUF_MAGIC) {
    const hex = Array.from(magic, (b) => b.toString(16).padStart(2, '0')).join(' ');
    c.fail(`not a GGUF file: magic is ${hex}, expected 47 47 55 46 ('GGUF')`);
  }
  const version = c.u32('version');
  if (version === 1) c.fail('GGUF v1 is not supported (it used 32-bit lengths); convert the model to GGUF v2 or v3');
  if (version !== 2 && version !== 3) {
    // A big-endian file's version reads byte-swapped here: 0x03000000 or 0x02000000.
    if (version === 0x02000000 || version === 0x03000000) c.fail('big-endian GGUF files are not supported');
    c.fail(`unsupported GGUF version ${version} (supported: 2, 3)`);
  }
  const tensorCount = c.u64Count('tensor count');
  const kvCount = c.u64Count('metadata count');
  // Cheapest possible encodings: a key/value pair needs >= 8 + 1 + 4 + 1 bytes, a tensor info 8 + 4 + 4 + 8.
  if (kvCount * 14 > c.remaining()) c.fail(`header claims ${kvCount} metadata entries, more than the file can hold`);
  if (tensorCount * 24 > c.remaining()) c.fail(`header claims ${tensorCount} tensors, more than the file can hold`);

  const metadata = new Map<string, GgufValue>();
  const typedMetadata = new Map<string, GgufTypedValue>();
  for (let i = 0; i < kvCount; i++) {
    const key = c.string(`metadata key #${i}`, MAX_KEY_BYTES);
    if (key.length === 0) c.fail(`metadata key #${i} is empty`);
    if (typedMetadata.has(key)) c.fail(`duplicate metadata key ${show(key)}`);
    const value = readValue(c, `metadata ${show(key)}`);
    typedMetadata.set(key, value);
    metadata.set(key, plainValue(value));
  }

  let alignment = GGUF_DEFAULT_ALIGNMENT;
  const align = typedMetadata.get('general.alignment');
  if (align !== undefined) {
    const ok = align.type === 'u8' || align.type === 'u16' || align.type === 'u32' || align.type === 'u64';
    if (!ok) c.fail(`general.alignment must be an unsigned integer, found ${describeType(align)}`);
    const a = align.value as number | bigint;
    if (typeof a !== 'number' || a < 1 || a > 2 ** 30 || (a & (a - 1)) !== 0) {
      c.fail(`general.alignment must be a power of two (at most 2^30), found ${a}`);
    }
    alignment = a;
  }

  interface RawTensor {
    name: string;
    type: GgmlType;
    dims: number[];
    rel: number;
    byteLength: number;
  }
  const raw: RawTensor[] = [];
  const names = new Set<string>();
  for (let i = 0; i < tensorCount; i++) {
    const name = c.string(`name of tensor #${i}`, MAX_TENSOR_NAME_BYTES);
    if (name.length === 0) c.fail(`tensor #${i} has an empty name`);
    if (names.has(name)) c.fail(`duplicate tensor name ${show(name)}`);
    names.add(name);
    const nDims = c.u32(`dimension count of tensor ${show(name)}`);
    if (nDims > MAX_DIMS) c.fail(`tensor ${show(name)} has ${nDims} dimensions (at most ${MAX_DIMS})`);
    const dims: number[] = [];
    let elements = 1;
    for (let d = 0; d < nDims; d++) {
      const n = c.u64Count(`dimension ${d} of tensor ${show(name)}`);
      if (n === 0) c.fail(`tensor ${show(name)} has a zero-sized dimension ${d}`);
      elements *= n;
      if (elements > Number.MAX_SAFE_INTEGER) {
        c.fail(`tensor ${show(name)} has dims [${[...dims, n].join(', ')}${d + 1 < nDims ? ', ...' : ''}]: more than 2^53 elements`);
      }
      dims.push(n);
    }
    const typeAt = c.pos;
    const typeId = c.u32(`type of tensor ${show(name)}`);
    const type = lookupGgmlType(typeId);
    if (type === undefined) {
      c.fail(
        `tensor ${show(name)} at byte ${typeAt} has unsupported ggml type id ${typeId} ` +
          `(supported: ${SUPPORTED_GGML_TYPES.map((t) => `${t} (${GGML_TYPES[t].id})`).join(', ')})`,
      );
    }
    const { blockSize, typeSize } = GGML_TYPES[type];
    const rowLength = nDims === 0 ? 1 : dims[0]!;
    if (rowLength % blockSize !== 0) {
      c.fail(`tensor ${show(name)} (${type}) has rows of ${rowLength} elements, not a multiple of the block size ${blockSize}`);
    }
    const byteLength = (elements / blockSize) * typeSize;
    const rel = c.u64Count(`offset of tensor ${show(name)}`);
    raw.push({ name, type, dims, rel, byteLength });
  }

  const dataOffset = Math.ceil(c.pos / alignment) * alignment;
  const tensors: GgufTensorInfo[] = [];
  for (const t of raw) {
    if (t.rel % alignment !== 0) c.fail(`tensor ${show(t.name)} data offset ${t.rel} is not a multiple of the alignment ${alignment}`);
    const offset = dataOffset + t.rel;
    if (t.byteLength > size || offset > size - t.byteLength) {
      c.fail(
        `tensor ${show(t.name)} (${t.type} [${t.dims.join(', ')}], ${t.byteLength} bytes at byte ${offset}) ` +
          `extends past the end of the file (${size} bytes)`,
      );
    }
    tensors.push({ name: t.name, type: t.type, dims: t.dims, offset, byteLength: t.byteLength });
  }
  // Tensors may come in any order, but must not share bytes.
  const sorted = [...tensors].sort((a, b) => a.offset - b.offset);
  for (let i = 1; i < sorted.length; i++) {
    const prev = sorted[i - 1]!;
    if (prev.offset + prev.byteLength > sorted[i]!.offset) c.fail(`tensors ${show(prev.name)} and ${show(sorted[i]!.name)} overlap`);
  }
  return { path, version, metadata, typedMetadata, tensors, alignment, dataOffset, fileSize: size };
}

function openForRead(path: string): { fd: number; size: number } {
  let fd: number;
  try {
    fd = fs.openSync(path, 'r');
  } catch (e) {
    return fail('usage', oneLine(`cannot open GGUF file '${path}': ${(e as Error).message}`));
  }
  try {
    const st = fs.fstatSync(fd);
    if (!st.isFile()) fail('usage', `'${path}' is not a regular file`);
    return { fd, size: st.size };
  } catch (e) {
    fs.closeSync(fd);
    throw e;
  }
}

function wrap(path: string, e: unknown): HalfpipeError {
  if (e instanceof HalfpipeError) return e;
  return new HalfpipeError('config', oneLine(`${path}: cannot read GGUF: ${e instanceof Error ? e.message : String(e)}`));
}

/** Parses the header of the GGUF file at `path` (metadata and tensor infos; no tensor data). */
export function readGguf(path: string): GgufFile {
  const { fd, size } = openForRead(path);
  try {
    return parse(fd, path, size);
  } catch (e) {
    throw wrap(path, e);
  } finally {
    fs.closeSync(fd);
  }
}

const READ_CHUNK = 1 << 26; // 64 MiB per readSync

/** Reads one tensor's bytes into `target` (which must hold at least info.byteLength bytes). */
export function readTensorInto(file: GgufFile, info: GgufTensorInfo, target: Uint8Array): void {
  if (target.byteLength < info.byteLength) {
    fail('usage', `tensor ${show(info.name)} has ${info.byteLength} bytes; the target holds only ${target.byteLength}`);
  }
  if (info.offset < 0 || info.offset + info.byteLength > file.fileSize) {
    fail('usage', `tensor ${show(info.name)} is not inside ${file.path}`);
  }
  const { fd, size } = openForRead(file.path);
  try {
    if (size !== file.fileSize) fail('config', `${file.path} changed size since it was read (${file.fileSize} -> ${size} bytes)`);
    let done = 0;
    while (done < info.byteLength) {
      const n = Math.min(READ_CHUNK, info.byteLength - done);
      const r = fs.readSync(fd, target, done, n, info.offset + done);
      if (r === 0) fail('config', `${file.path}: file ended early reading tensor ${show(info.name)}`);
      done += r;
    }
  } catch (e) {
    throw wrap(file.path, e);
  } finally {
    fs.closeSync(fd);
  }
}

/** Reads one tensor's bytes into a fresh Uint8Array. */
export function readTensorBytes(file: GgufFile, info: GgufTensorInfo): Uint8Array {
  const out = new Uint8Array(info.byteLength);
  readTensorInto(file, info, out);
  return out;
}

/** The tensor called `name`; an error naming it when the file has none. */
export function getTensor(file: GgufFile, name: string): GgufTensorInfo {
  const t = file.tensors.find((x) => x.name === name);
  if (t === undefined) fail('config', `${file.path}: no tensor named ${show(name)}`);
  return t;
}

// ---- metadata getters --------------------------------------------------------------------------

function typeOfKey(file: GgufFile, key: string): string {
  const tv = file.typedMetadata.get(key);
  return tv === undefined ? typeof file.metadata.get(key) : describeType(tv);
}

function missing(file: GgufFile, key: string, expected: string): never {
  return fail('config', `${file.path}: metadata key ${show(key)} is missing (expected ${expected})`);
}

function wrongType(file: GgufFile, key: string, expected: string): never {
  return fail('config', `${file.path}: metadata key ${show(key)} is ${typeOfKey(file, key)}, expected ${expected}`);
}

/** The value of `key`, or undefined. */
export function metaValue(file: GgufFile, key: string): GgufValue | undefined {
  return file.metadata.get(key);
}

/** A string value; `fallback` when the key is absent (an error without one). */
export function metaString(file: GgufFile, key: string, fallback?: string): string {
  const v = file.metadata.get(key);
  if (v === undefined) return fallback !== undefined ? fallback : missing(file, key, 'a string');
  if (typeof v !== 'string') return wrongType(file, key, 'a string');
  return v;
}

/** A numeric value (any integer or float type) as a JS number; a u64/i64 beyond 2^53 is an error. */
export function metaNumber(file: GgufFile, key: string, fallback?: number): number {
  const v = file.metadata.get(key);
  if (v === undefined) return fallback !== undefined ? fallback : missing(file, key, 'a number');
  if (typeof v === 'bigint') return fail('config', `${file.path}: metadata key ${show(key)} is ${v}, too large for a JS number`);
  if (typeof v !== 'number') return wrongType(file, key, 'a number');
  return v;
}

/** A boolean value. */
export function metaBool(file: GgufFile, key: string, fallback?: boolean): boolean {
  const v = file.metadata.get(key);
  if (v === undefined) return fallback !== undefined ? fallback : missing(file, key, 'a bool');
  if (typeof v !== 'boolean') return wrongType(file, key, 'a bool');
  return v;
}

/** An array value (items as in GgufValue). */
export function metaArray(file: GgufFile, key: string, fallback?: GgufValue[]): GgufValue[] {
  const v = file.metadata.get(key);
  if (v === undefined) return fallback !== undefined ? fallback : missing(file, key, 'an array');
  if (!Array.isArray(v)) return wrongType(file, key, 'an array');
  return v;
}
