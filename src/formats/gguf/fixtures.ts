/**
 * Hand-assembled GGUF bytes, field by field, for tests: files the writer would never produce
 * (GGUF v2, corrupted lengths and counts, unknown types). Little-endian throughout.
 */
export class GgufBytes {
  private readonly out: number[] = [];

  get length(): number {
    return this.out.length;
  }

  bytes(b: ArrayLike<number>): this {
    for (let i = 0; i < b.length; i++) this.out.push(b[i]! & 0xff);
    return this;
  }

  u8(v: number): this {
    return this.bytes([v]);
  }

  u32(v: number): this {
    return this.bytes([v, v >>> 8, v >>> 16, v >>> 24]);
  }

  i32(v: number): this {
    return this.u32(v >>> 0);
  }

  f32(v: number): this {
    const b = new Uint8Array(4);
    new DataView(b.buffer).setFloat32(0, v, true);
    return this.bytes(b);
  }

  u64(v: number | bigint): this {
    const b = new Uint8Array(8);
    new DataView(b.buffer).setBigUint64(0, BigInt.asUintN(64, BigInt(v)), true);
    return this.bytes(b);
  }

  /** A GGUF string: u64 byte length, then the UTF-8 bytes. */
  str(s: string): this {
    const b = new TextEncoder().encode(s);
    return this.u64(b.length).bytes(b);
  }

  /** Magic, version, tensor count, metadata count. */
  header(version: number, tensors: number | bigint, kvs: number | bigint): this {
    return this.bytes([0x47, 0x47, 0x55, 0x46]).u32(version).u64(tensors).u64(kvs);
  }

  /** Zero bytes up to the next multiple of `alignment`. */
  pad(alignment: number): this {
    while (this.out.length % alignment !== 0) this.out.push(0);
    return this;
  }

  build(): Uint8Array {
    return Uint8Array.from(this.out);
  }
}

/** GGUF value type ids. */
export const T = { u8: 0, i8: 1, u16: 2, i16: 3, u32: 4, i32: 5, f32: 6, bool: 7, string: 8, array: 9, u64: 10, i64: 11, f64: 12 } as const;
