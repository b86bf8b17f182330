/**
 * ggml tensor types that halfpipe reads and writes, and the GGUF metadata value types.
 *
 * A ggml tensor is stored as rows of whole blocks: `blockSize` elements packed into `typeSize` bytes.
 * Float types have blocks of one element. The numeric ids are ggml's `enum ggml_type`, the ids GGUF
 * files store; the block layouts themselves are in quants.ts.
 */
import { fail } from '../../core/errors.js';

export type GgmlType = 'F32' | 'F16' | 'BF16' | 'Q8_0' | 'Q4_0' | 'Q4_1' | 'Q5_0' | 'Q5_1' | 'Q4_K' | 'Q5_K' | 'Q6_K';

export interface GgmlTypeInfo {
  readonly name: GgmlType;
  /** ggml's numeric type id, as stored in GGUF tensor infos */
  readonly id: number;
  /** elements per block */
  readonly blockSize: number;
  /** bytes per block */
  readonly typeSize: number;
}

function info(name: GgmlType, id: number, blockSize: number, typeSize: number): GgmlTypeInfo {
  return { name, id, blockSize, typeSize };
}

/** QK_K: the super-block size of the K-quants. */
export const QK_K = 256;

export const GGML_TYPES: { readonly [T in GgmlType]: GgmlTypeInfo } = {
  F32: info('F32', 0, 1, 4),
  F16: info('F16', 1, 1, 2),
  Q4_0: info('Q4_0', 2, 32, 2 + 16), // d, 16 bytes of nibbles
  Q4_1: info('Q4_1', 3, 32, 2 + 2 + 16), // d, m, nibbles
  Q5_0: info('Q5_0', 6, 32, 2 + 4 + 16), // d, qh (32 high bits), nibbles
  Q5_1: info('Q5_1', 7, 32, 2 + 2 + 4 + 16), // d, m, qh, nibbles
  Q8_0: info('Q8_0', 8, 32, 2 + 32), // d, 32 int8
  Q4_K: info('Q4_K', 12, QK_K, 2 + 2 + 12 + 128), // d, dmin, 12 bytes of 6-bit scales/mins, nibbles
  Q5_K: info('Q5_K', 13, QK_K, 2 + 2 + 12 + 32 + 128), // d, dmin, scales, qh, nibbles
  Q6_K: info('Q6_K', 14, QK_K, 128 + 64 + 16 + 2), // ql, qh, int8 scales, d
  BF16: info('BF16', 30, 1, 2),
};

/** The supported types in ggml id order. */
export const SUPPORTED_GGML_TYPES: readonly GgmlType[] = (Object.values(GGML_TYPES) as GgmlTypeInfo[])
  .sort((a, b) => a.id - b.id)
  .map((t) => t.name);

const BY_ID = new Map<number, GgmlType>(SUPPORTED_GGML_TYPES.map((t) => [GGML_TYPES[t].id, t]));

function supportedList(): string {
  return SUPPORTED_GGML_TYPES.map((t) => `${t} (${GGML_TYPES[t].id})`).join(', ');
}

/** The type with ggml id `id`, or undefined when halfpipe does not support it. */
export function lookupGgmlType(id: number): GgmlType | undefined {
  return BY_ID.get(id);
}

/** The type with ggml id `id`; an unknown id is an error that names it and lists the supported types. */
export function ggmlTypeFromId(id: number): GgmlType {
  const t = BY_ID.get(id);
  if (t === undefined) return fail('dtype', `unsupported ggml type id ${id} (supported: ${supportedList()})`);
  return t;
}

/** Parses a type name ('Q4_K', case-insensitive). */
export function parseGgmlType(name: string): GgmlType {
  const upper = name.toUpperCase();
  if (Object.hasOwn(GGML_TYPES, upper)) return upper as GgmlType;
  return fail('dtype', `unknown ggml type '${name}' (supported: ${SUPPORTED_GGML_TYPES.join(', ')})`);
}

function typeInfo(type: GgmlType): GgmlTypeInfo {
  // Guards calls from untyped JS: a bad name would otherwise surface as a TypeError.
  if (!Object.hasOwn(GGML_TYPES, type)) {
    return fail('dtype', `unknown ggml type '${String(type)}' (supported: ${SUPPORTED_GGML_TYPES.join(', ')})`);
  }
  return GGML_TYPES[type];
}

export function ggmlTypeId(type: GgmlType): number {
  return typeInfo(type).id;
}

export function blockSize(type: GgmlType): number {
  return typeInfo(type).blockSize;
}

export function typeSize(type: GgmlType): number {
  return typeInfo(type).typeSize;
}

export function isQuantized(type: GgmlType): boolean {
  return typeInfo(type).blockSize > 1;
}

/** Bytes of a row of `n` elements; n must be a whole number of blocks. */
export function rowBytes(type: GgmlType, n: number): number {
  const t = typeInfo(type);
  if (!Number.isSafeInteger(n) || n < 0) fail('shape', `invalid element count ${n} for ${type}`);
  if (n % t.blockSize !== 0) {
    fail('shape', `${type} stores blocks of ${t.blockSize} elements: ${n} is not a multiple of ${t.blockSize}`);
  }
  return (n / t.blockSize) * t.typeSize;
}

// ---- GGUF metadata value types -----------------------------------------------------------------

/** GGUF metadata value types (`enum gguf_metadata_value_type`), by name. */
export type GgufValueType =
  | 'u8'
  | 'i8'
  | 'u16'
  | 'i16'
  | 'u32'
  | 'i32'
  | 'f32'
  | 'bool'
  | 'string'
  | 'array'
  | 'u64'
  | 'i64'
  | 'f64';

/** The ids GGUF stores for each value type. */
export const GGUF_VALUE_TYPE_IDS: { readonly [T in GgufValueType]: number } = {
  u8: 0,
  i8: 1,
  u16: 2,
  i16: 3,
  u32: 4,
  i32: 5,
  f32: 6,
  bool: 7,
  string: 8,
  array: 9,
  u64: 10,
  i64: 11,
  f64: 12,
};

const VALUE_TYPE_BY_ID: readonly GgufValueType[] = (Object.keys(GGUF_VALUE_TYPE_IDS) as GgufValueType[]).sort(
  (a, b) => GGUF_VALUE_TYPE_IDS[a] - GGUF_VALUE_TYPE_IDS[b],
);

/** The value type with GGUF id `id`, or undefined for an unknown id. */
export function lookupGgufValueType(id: number): GgufValueType | undefined {
  return Number.isInteger(id) && id >= 0 && id < VALUE_TYPE_BY_ID.length ? VALUE_TYPE_BY_ID[id] : undefined;
}

/** Encoded size in bytes of a fixed-size value type; undefined for string and array. */
export function ggufScalarBytes(type: GgufValueType): number | undefined {
  switch (type) {
    case 'u8':
    case 'i8':
    case 'bool':
      return 1;
    case 'u16':
    case 'i16':
      return 2;
    case 'u32':
    case 'i32':
    case 'f32':
      return 4;
    case 'u64':
    case 'i64':
    case 'f64':
      return 8;
    default:
      return undefined;
  }
}

/**
 * A decoded metadata value. Integers up to 64 bits are numbers when they are within +-2^53
 * (Number.MAX_SAFE_INTEGER), and bigints only beyond that; so a u64 is a number unless it needs more
 * than 53 bits. Floats are numbers (an f32 exactly, widened). Arrays are plain JS arrays.
 */
export type GgufValue = number | bigint | string | boolean | GgufValue[];

/** A GGUF value type other than array: what an array's items can be besides nested arrays. */
export type GgufScalarType = Exclude<GgufValueType, 'array'>;

/**
 * A metadata value with its GGUF type, as the writer emits it and as the reader reports it
 * (GgufFile.typedMetadata). An array holds scalars of one type, or nested arrays (itemType 'array',
 * each element a typed array value of its own; valid GGUF, but llama.cpp's reader rejects them).
 */
export type GgufTypedValue =
  | { type: 'u8' | 'i8' | 'u16' | 'i16' | 'u32' | 'i32' | 'f32' | 'f64'; value: number }
  | { type: 'u64' | 'i64'; value: number | bigint }
  | { type: 'bool'; value: boolean }
  | { type: 'string'; value: string }
  | GgufTypedArray;

export type GgufTypedArray =
  | { type: 'array'; itemType: 'u8' | 'i8' | 'u16' | 'i16' | 'u32' | 'i32' | 'f32' | 'f64'; value: number[] }
  | { type: 'array'; itemType: 'u64' | 'i64'; value: Array<number | bigint> }
  | { type: 'array'; itemType: 'bool'; value: boolean[] }
  | { type: 'array'; itemType: 'string'; value: string[] }
  | { type: 'array'; itemType: 'array'; value: GgufTypedArray[] };

/** The plain value of a typed value (nested arrays unwrapped; scalar arrays shared, not copied). */
export function plainValue(v: GgufTypedValue): GgufValue {
  if (v.type !== 'array') return v.value;
  if (v.itemType === 'array') return v.value.map(plainValue);
  return v.value;
}
