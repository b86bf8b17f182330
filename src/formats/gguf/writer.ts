/**
 * GGUF v3 writer (little-endian), streaming to disk.
 *
 * Every metadata value carries its GGUF type explicitly (GgufTypedValue), so the file holds exactly
 * the types llama.cpp reads: e.g. `llama.context_length` as u32, `tokenizer.ggml.scores` as an array
 * of f32, `tokenizer.ggml.token_type` as an array of i32, `tokenizer.ggml.tokens` as an array of
 * strings. Tensors are laid out in the given order, each at a multiple of the alignment and padded
 * with zeros to the next multiple (the last one too), which is the layout ggml's own writer produces
 * and its reader checks. A non-default alignment is recorded as `general.alignment` (u32).
 *
 * Arrays of arrays are valid GGUF and round-trip through readGguf, but ggml's own reader (llama.cpp)
 * rejects them ("invalid GGUF type 9"): do not put them in files meant for llama.cpp.
 *
 * The header goes through a 1 MiB buffer; tensor data is written straight from the caller's arrays.
 * The file is written under a temporary name next to `path` and renamed into place when complete.
 */
import * as fs from 'node:fs';
import { fail, HalfpipeError } from '../../core/errors.js';
import { GGML_TYPES, type GgmlType, type GgufTypedArray, type GgufTypedValue, ggmlTypeId, GGUF_VALUE_TYPE_IDS, rowBytes } from './types.js';

export interface GgufTensorInput {
  name: string;
  type: GgmlType;
  /** GGUF `ne` order: dims[0] is the innermost, contiguous axis. */
  dims: readonly number[];
  /** the tensor's bytes in ggml's layout for `type` (see quants.ts) */
  data: Uint8Array;
}

export interface GgufWriteInput {
  metadata: ReadonlyArray<readonly [string, GgufTypedValue]>;
  tensors: readonly GgufTensorInput[];
  /** default 32, or general.alignment when the metadata has it */
  alignment?: number;
}

export const GGUF_VERSION = 3;
const MAX_TENSOR_NAME_BYTES = 63; // ggml's GGML_MAX_NAME (64) includes the terminating NUL
const MAX_DIMS = 4;
const BUFFER = 1 << 20;
const utf8 = new TextEncoder();

function usage(message: string): never {
  return fail('usage', message);
}

/** Appends to a file through a buffer; large byte arrays bypass it. */
class FileSink {
  private readonly buf = new Uint8Array(BUFFER);
  private readonly view = new DataView(this.buf.buffer);
  private len = 0;
  /** bytes written so far (flushed or buffered) */
  pos = 0;

  constructor(private readonly fd: number) {}

  private room(n: number): number {
    if (this.len + n > BUFFER) this.flush();
    const at = this.len;
    this.len += n;
    this.pos += n;
    return at;
  }

  private writeAll(data: Uint8Array): void {
    let done = 0;
    while (done < data.byteLength) done += fs.writeSync(this.fd, data, done, data.byteLength - done);
  }

  flush(): void {
    if (this.len > 0) this.writeAll(this.buf.subarray(0, this.len));
    this.len = 0;
  }

  u8(v: number): void {
    this.buf[this.room(1)] = v;
  }
  i8(v: number): void {
    this.view.setInt8(this.room(1), v);
  }
  u16(v: number): void {
    this.view.setUint16(this.room(2), v, true);
  }
  i16(v: number): void {
    this.view.setInt16(this.room(2), v, true);
  }
  u32(v: number): void {
    this.view.setUint32(this.room(4), v, true);
  }
  i32(v: number): void {
    this.view.setInt32(this.room(4), v, true);
  }
  f32(v: number): void {
    this.view.setFloat32(this.room(4), v, true);
  }
  f64(v: number): void {
    this.view.setFloat64(this.room(8), v, true);
  }
  u64(v: number | bigint): void {
    this.view.setBigUint64(this.room(8), BigInt(v), true);
  }
  i64(v: number | bigint): void {
    this.view.setBigInt64(this.room(8), BigInt(v), true);
  }

  bytes(data: Uint8Array): void {
    if (data.byteLength <= BUFFER / 4) {
      const at = this.room(data.byteLength);
      this.buf.set(data, at);
      return;
    }
    this.flush();
    this.writeAll(data);
    this.pos += data.byteLength;
  }

  string(s: string): void {
    const b = utf8.encode(s);
    this.u64(b.byteLength);
    this.bytes(b);
  }

  zeros(n: number): void {
    for (let i = 0; i < n; i++) this.u8(0);
  }
}

// ---- validation ----------------------------------------------------------------------------------

const INT_RANGES: Record<string, readonly [number, number]> = {
  u8: [0, 0xff],
  i8: [-0x80, 0x7f],
  u16: [0, 0xffff],
  i16: [-0x8000, 0x7fff],
  u32: [0, 0xffffffff],
  i32: [-0x80000000, 0x7fffffff],
};

function checkScalar(type: string, v: unknown, where: string): void {
  switch (type) {
    case 'u8':
    case 'i8':
    case 'u16':
    case 'i16':
    case 'u32':
    case 'i32': {
      const [lo, hi] = INT_RANGES[type]!;
      if (typeof v !== 'number' || !Number.isInteger(v) || v < lo || v > hi) {
        usage(`${where}: ${String(v)} is not a valid ${type} (integer in ${lo}..${hi})`);
      }
      return;
    }
    case 'u64':
    case 'i64': {
      const big = typeof v === 'bigint' ? v : typeof v === 'number' && Number.isSafeInteger(v) ? BigInt(v) : undefined;
      const ok = big !== undefined && (type === 'u64' ? BigInt.asUintN(64, big) === big : BigInt.asIntN(64, big) === big);
      if (!ok) usage(`${where}: ${String(v)} is not a valid ${type} (a safe integer or a bigint in range)`);
      return;
    }
    case 'f32':
    case 'f64':
      if (typeof v !== 'number') usage(`${where}: ${String(v)} is not a number`);
      return;
    case 'bool':
      if (typeof v !== 'boolean') usage(`${where}: ${String(v)} is not a boolean`);
      return;
    case 'string':
      if (typeof v !== 'string') usage(`${where}: ${String(v)} is not a string`);
      // UTF-8 cannot encode a lone surrogate: TextEncoder would silently write U+FFFD instead.
      if (/\p{Cs}/u.test(v)) usage(`${where}: string contains a lone UTF-16 surrogate`);
      return;
    default:
      usage(`${where}: unknown GGUF value type '${type}'`);
  }
}

function checkValue(v: GgufTypedValue, where: string, depth = 0): void {
  if (typeof v !== 'object' || v === null) usage(`${where}: expected a {type, value} object`);
  if (v.type !== 'array') return checkScalar(v.type, v.value, where);
  if (depth > 15) usage(`${where}: arrays nested too deep`);
  if (!Array.isArray(v.value)) usage(`${where}: an array value needs a JS array`);
  const item = v.itemType as string;
  if (item === 'array') {
    for (let i = 0; i < v.value.length; i++) {
      const inner = v.value[i] as GgufTypedArray;
      if (typeof inner !== 'object' || inner === null || inner.type !== 'array') {
        usage(`${where}[${i}]: items of an array of arrays must be {type: 'array', ...} values`);
      }
      checkValue(inner, `${where}[${i}]`, depth + 1);
    }
    return;
  }
  if (!Object.hasOwn(GGUF_VALUE_TYPE_IDS, item)) usage(`${where}: unknown item type '${item}'`);
  for (let i = 0; i < v.value.length; i++) checkScalar(item, v.value[i], `${where}[${i}]`);
}

function writeScalar(s: FileSink, type: string, v: unknown): void {
  switch (type) {
    case 'u8':
      return s.u8(v as number);
    case 'i8':
      return s.i8(v as number);
    case 'u16':
      return s.u16(v as number);
    case 'i16':
      return s.i16(v as number);
    case 'u32':
      return s.u32(v as number);
    case 'i32':
      return s.i32(v as number);
    case 'f32':
      return s.f32(v as number);
    case 'f64':
      return s.f64(v as number);
    case 'u64':
      return s.u64(v as number | bigint);
    case 'i64':
      return s.i64(v as number | bigint);
    case 'bool':
      return s.u8(v ? 1 : 0);
    case 'string':
      return s.string(v as string);
  }
}

function writeValueBody(s: FileSink, v: GgufTypedValue): void {
  if (v.type !== 'array') return writeScalar(s, v.type, v.value);
  s.u32(GGUF_VALUE_TYPE_IDS[v.itemType]);
  s.u64(v.value.length);
  if (v.itemType === 'array') {
    for (const inner of v.value) writeValueBody(s, inner);
  } else {
    for (const item of v.value) writeScalar(s, v.itemType, item);
  }
}

interface PlannedTensor {
  input: GgufTensorInput;
  rel: number;
  padded: number;
}

function planTensors(tensors: readonly GgufTensorInput[], alignment: number): PlannedTensor[] {
  const names = new Set<string>();
  const out: PlannedTensor[] = [];
  let rel = 0;
  for (const t of tensors) {
    const where = `tensor '${t.name}'`;
    if (typeof t.name !== 'string' || t.name.length === 0) usage('a tensor needs a non-empty name');
    if (utf8.encode(t.name).byteLength > MAX_TENSOR_NAME_BYTES) usage(`${where}: names are at most ${MAX_TENSOR_NAME_BYTES} bytes`);
    if (names.has(t.name)) usage(`duplicate tensor name '${t.name}'`);
    names.add(t.name);
    if (!Object.hasOwn(GGML_TYPES, t.type)) fail('dtype', `${where}: unknown ggml type '${String(t.type)}'`);
    if (!Array.isArray(t.dims) || t.dims.length < 1 || t.dims.length > MAX_DIMS) usage(`${where}: needs 1..${MAX_DIMS} dims`);
    let elements = 1;
    for (const d of t.dims) {
      if (!Number.isSafeInteger(d) || d < 1) fail('shape', `${where}: invalid dims [${t.dims.join(', ')}]`);
      elements *= d;
    }
    if (!Number.isSafeInteger(elements)) fail('shape', `${where}: dims [${t.dims.join(', ')}] have too many elements`);
    const row = rowBytes(t.type, t.dims[0]!);
    const bytes = row * (elements / t.dims[0]!);
    if (!(t.data instanceof Uint8Array) || t.data.byteLength !== bytes) {
      fail('shape', `${where}: ${t.type} [${t.dims.join(', ')}] needs ${bytes} bytes of data, got ${t.data?.byteLength}`);
    }
    const padded = Math.ceil(bytes / alignment) * alignment;
    out.push({ input: t, rel, padded });
    rel += padded;
  }
  return out;
}

/** Writes a GGUF v3 file. */
export function writeGguf(path: string, input: GgufWriteInput): void {
  // Metadata: unique, non-empty keys; general.alignment a power-of-two u32 agreeing with `alignment`.
  const keys = new Set<string>();
  for (const [key, value] of input.metadata) {
    if (typeof key !== 'string' || key.length === 0) usage('metadata keys must be non-empty strings');
    if (utf8.encode(key).byteLength > 65535) usage(`metadata key '${key.slice(0, 40)}...' is longer than 65535 bytes`);
    if (keys.has(key)) usage(`duplicate metadata key '${key}'`);
    keys.add(key);
    checkValue(value, `metadata '${key}'`);
  }
  const metadata = [...input.metadata];
  const declared = metadata.find(([k]) => k === 'general.alignment')?.[1];
  if (declared !== undefined && declared.type !== 'u32') usage(`general.alignment must be a u32, got ${declared.type}`);
  const alignment = input.alignment ?? (declared?.value as number | undefined) ?? 32;
  if (!Number.isInteger(alignment) || alignment < 1 || alignment > 2 ** 30 || (alignment & (alignment - 1)) !== 0) {
    usage(`alignment must be a power of two, got ${alignment}`);
  }
  if (declared !== undefined && declared.value !== alignment) {
    usage(`general.alignment (${String(declared.value)}) disagrees with the alignment option (${alignment})`);
  }
  if (declared === undefined && alignment !== 32) metadata.push(['general.alignment', { type: 'u32', value: alignment }]);

  const planned = planTensors(input.tensors, alignment);

  const tmp = `${path}.${process.pid}.partial`;
  let fd: number;
  try {
    fd = fs.openSync(tmp, 'w');
  } catch (e) {
    return usage(`cannot create '${tmp}': ${(e as Error).message}`.replace(/\s+/g, ' '));
  }
  let ok = false;
  try {
    const s = new FileSink(fd);
    s.bytes(utf8.encode('GGUF'));
    s.u32(GGUF_VERSION);
    s.u64(planned.length);
    s.u64(metadata.length);
    for (const [key, value] of metadata) {
      s.string(key);
      s.u32(GGUF_VALUE_TYPE_IDS[value.type]);
      writeValueBody(s, value);
    }
    for (const { input: t, rel } of planned) {
      s.string(t.name);
      s.u32(t.dims.length);
      for (const d of t.dims) s.u64(d);
      s.u32(ggmlTypeId(t.type));
      s.u64(rel);
    }
    s.zeros((alignment - (s.pos % alignment)) % alignment);
    for (const { input: t, padded } of planned) {
      s.bytes(t.data);
      s.zeros(padded - t.data.byteLength);
    }
    s.flush();
    fs.fsyncSync(fd);
    ok = true;
  } catch (e) {
    if (e instanceof HalfpipeError) throw e;
    usage(`cannot write '${path}': ${(e as Error).message}`.replace(/\s+/g, ' '));
  } finally {
    fs.closeSync(fd);
    if (!ok) fs.rmSync(tmp, { force: true });
  }
  try {
    fs.renameSync(tmp, path);
  } catch (e) {
    fs.rmSync(tmp, { force: true });
    usage(`cannot move '${tmp}' to '${path}': ${(e as Error).message}`.replace(/\s+/g, ' '));
  }
}
