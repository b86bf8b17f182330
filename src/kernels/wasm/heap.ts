/**
 * The wasm heap: ONE shared WebAssembly.Memory that every kernel imports as
 * env.memory (shared so worker threads can use it later), and a small first-fit
 * allocator over it.
 *
 * Layout: bytes [0, RESERVED_BYTES) are never handed out. They keep pointer 0
 * invalid and hold the kernels' own static data (asc places it from byte 1024;
 * scripts/build-wasm.js fails a kernel whose data reaches KERNEL_DATA_LIMIT or
 * overlaps another kernel's; rope has a 176-byte constant table) plus one probe
 * word used by ptrOf. Allocations live in [RESERVED_BYTES, memory size).
 */
import { existsSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

export const PAGE_BYTES = 65536;
/** Maximum pages of the shared memory (4 GiB); kernels are compiled with the same maximum. */
export const MAX_PAGES = 65536;
/** Bytes at the bottom of memory that the allocator never hands out. */
export const RESERVED_BYTES = 65536;
/** Kernels' static data must end below this (keep in sync with scripts/build-wasm.js). */
export const KERNEL_DATA_LIMIT = RESERVED_BYTES - 64;
/** An i32 in the reserved region that ptrOf bumps to tell whether an unknown buffer aliases this memory. */
const PROBE_OFFSET = RESERVED_BYTES - 8;
/** Allocation sizes are rounded up to this, so blocks keep 64-byte alignment cheaply. */
const GRANULE = 64;

interface Block {
  ptr: number;
  size: number;
}

export class WasmHeap {
  readonly memory: WebAssembly.Memory;
  /** Free blocks sorted by ptr, never adjacent (adjacent ones are merged). */
  private readonly freeList: Block[] = [];
  /** Live allocations: ptr -> size in bytes (rounded to GRANULE). */
  private readonly live = new Map<number, number>();
  /** Every buffer object this memory has produced that we have seen; old ones stay valid views after grow. */
  private readonly buffers = new WeakSet<ArrayBufferLike>();
  /** End of the bytes the allocator manages (= memory size after our last look). */
  private top: number;

  constructor(memory?: WebAssembly.Memory) {
    this.memory = memory ?? new WebAssembly.Memory({ initial: 2, maximum: MAX_PAGES, shared: true });
    this.top = RESERVED_BYTES;
    this.adoptGrowth();
  }

  /** The current buffer (a new SharedArrayBuffer object after every grow); recorded for ptrOf. */
  get buffer(): SharedArrayBuffer {
    const buf = this.memory.buffer as unknown as SharedArrayBuffer;
    this.buffers.add(buf);
    return buf;
  }

  /** Bytes currently handed out (rounded sizes). */
  get bytesInUse(): number {
    let n = 0;
    for (const size of this.live.values()) n += size;
    return n;
  }

  /**
   * Allocates `bytes` (rounded up to 64) aligned to `align` (a power of two);
   * returns the byte pointer. Grows the memory when no free block fits.
   * The contents are NOT cleared.
   */
  alloc(bytes: number, align = 64): number {
    if (!Number.isSafeInteger(bytes) || bytes < 0) throw new RangeError(`alloc: bytes must be a non-negative integer, got ${bytes}`);
    if (!Number.isSafeInteger(align) || align < 1 || (align & (align - 1)) !== 0 || align > PAGE_BYTES) {
      throw new RangeError(`alloc: align must be a power of two <= ${PAGE_BYTES}, got ${align}`);
    }
    const size = Math.max(GRANULE, Math.ceil(bytes / GRANULE) * GRANULE);
    this.adoptGrowth();
    let ptr = this.takeFirstFit(size, align);
    if (ptr === undefined) {
      this.growFor(size, align);
      ptr = this.takeFirstFit(size, align);
      if (ptr === undefined) throw new Error('alloc: internal error, no block after growing');
    }
    this.live.set(ptr, size);
    return ptr;
  }

  /** Returns an allocation to the free list, merging it with free neighbours. */
  free(ptr: number): void {
    const size = this.live.get(ptr);
    if (size === undefined) throw new Error(`free: ${ptr} is not a live allocation of this heap`);
    this.live.delete(ptr);
    this.insertFree(ptr, size);
  }

  /** Size in bytes (rounded to 64) of a live allocation, or undefined. */
  sizeOf(ptr: number): number | undefined {
    return this.live.get(ptr);
  }

  f32(ptr: number, n: number): Float32Array {
    return new Float32Array(this.buffer, ptr, n);
  }

  f64(ptr: number, n: number): Float64Array {
    return new Float64Array(this.buffer, ptr, n);
  }

  u16(ptr: number, n: number): Uint16Array {
    return new Uint16Array(this.buffer, ptr, n);
  }

  u8(ptr: number, n: number): Uint8Array {
    return new Uint8Array(this.buffer, ptr, n);
  }

  /** Byte pointer of `view` if it lies inside this memory (also views made before a grow), else undefined. */
  ptrOf(view: ArrayBufferView): number | undefined {
    const buf = view.buffer;
    if (!this.buffers.has(buf) && !this.aliases(buf)) return undefined;
    return view.byteOffset;
  }

  /** Free blocks as [ptr, size] pairs, sorted by ptr (for tests and debugging). */
  freeBlocks(): Array<[number, number]> {
    this.adoptGrowth();
    return this.freeList.map((b) => [b.ptr, b.size]);
  }

  /** Picks the first free block that fits, splitting off what is left on either side. */
  private takeFirstFit(size: number, align: number): number | undefined {
    for (let i = 0; i < this.freeList.length; i++) {
      const block = this.freeList[i]!;
      const start = Math.ceil(block.ptr / align) * align;
      const end = block.ptr + block.size;
      if (start + size > end) continue;
      // Replace the block by its leftovers before and after the allocation.
      const rest: Block[] = [];
      if (start > block.ptr) rest.push({ ptr: block.ptr, size: start - block.ptr });
      if (end > start + size) rest.push({ ptr: start + size, size: end - start - size });
      this.freeList.splice(i, 1, ...rest);
      return start;
    }
    return undefined;
  }

  /** Inserts [ptr, ptr+size) keeping the list sorted, merging with touching neighbours. */
  private insertFree(ptr: number, size: number): void {
    const list = this.freeList;
    // Binary search for the first block after ptr.
    let lo = 0;
    let hi = list.length;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if (list[mid]!.ptr < ptr) lo = mid + 1;
      else hi = mid;
    }
    const prev = lo > 0 ? list[lo - 1] : undefined;
    const next = lo < list.length ? list[lo] : undefined;
    if (prev && prev.ptr + prev.size > ptr) throw new Error(`free: ${ptr} overlaps a free block (double free?)`);
    if (next && ptr + size > next.ptr) throw new Error(`free: ${ptr} overlaps a free block (double free?)`);
    const joinsPrev = prev !== undefined && prev.ptr + prev.size === ptr;
    const joinsNext = next !== undefined && ptr + size === next.ptr;
    if (joinsPrev && joinsNext) {
      prev.size += size + next.size;
      list.splice(lo, 1);
    } else if (joinsPrev) {
      prev.size += size;
    } else if (joinsNext) {
      next.ptr = ptr;
      next.size += size;
    } else {
      list.splice(lo, 0, { ptr, size });
    }
  }

  /** Takes memory that grew behind our back (another thread, a kernel) into the free list. */
  private adoptGrowth(): void {
    const end = this.buffer.byteLength;
    if (end > this.top) {
      const from = this.top;
      this.top = end;
      this.insertFree(from, end - from);
    }
  }

  /** Grows the memory so that an aligned block of `size` fits at the top; at least doubles to amortise. */
  private growFor(size: number, align: number): void {
    const last = this.freeList[this.freeList.length - 1];
    const tailStart = last !== undefined && last.ptr + last.size === this.top ? last.ptr : this.top;
    const needEnd = Math.ceil(tailStart / align) * align + size;
    const curPages = this.top / PAGE_BYTES;
    const needPages = Math.ceil(needEnd / PAGE_BYTES);
    if (needPages > MAX_PAGES) {
      throw new RangeError(`alloc: ${size} bytes do not fit in the 4 GiB wasm heap (${this.bytesInUse} bytes in use)`);
    }
    const wantPages = Math.min(MAX_PAGES, Math.max(needPages, curPages * 2));
    try {
      this.memory.grow(wantPages - curPages);
    } catch {
      // The engine may refuse the generous request; retry with just what is needed.
      try {
        this.memory.grow(needPages - curPages);
      } catch (err) {
        throw new RangeError(`alloc: cannot grow the wasm heap to ${needPages} pages: ${(err as Error).message}`);
      }
    }
    this.adoptGrowth();
  }

  /** Whether an unknown buffer is an (older) buffer object of this memory: bump a probe word and watch it. */
  private aliases(buf: ArrayBufferLike): boolean {
    if (!(buf instanceof SharedArrayBuffer) || buf.byteLength < RESERVED_BYTES || buf.byteLength % PAGE_BYTES !== 0) return false;
    const mine = new Int32Array(this.buffer, PROBE_OFFSET, 1);
    const theirs = new Int32Array(buf, PROBE_OFFSET, 1);
    const before = Atomics.load(theirs, 0);
    Atomics.add(mine, 0, 1);
    const same = Atomics.load(theirs, 0) !== before;
    if (same) this.buffers.add(buf);
    return same;
  }
}

let singleton: WasmHeap | undefined;

/** The process-wide (per thread) wasm heap, created on first use. */
export function wasmHeap(): WasmHeap {
  singleton ??= new WasmHeap();
  return singleton;
}

/** Package root: the nearest ancestor of this file holding package.json (works from src/ and dist/src/). */
function packageRoot(): string {
  let dir = dirname(fileURLToPath(import.meta.url));
  for (;;) {
    if (existsSync(join(dir, 'package.json'))) return dir;
    const parent = dirname(dir);
    if (parent === dir) throw new Error(`cannot find package.json above ${fileURLToPath(import.meta.url)}`);
    dir = parent;
  }
}

const modules = new Map<string, WebAssembly.Module>();
const instances = new WeakMap<WebAssembly.Memory, Map<string, WebAssembly.Instance>>();

/** Path of build/<name>.wasm in this package. */
export function kernelPath(name: string): string {
  return join(packageRoot(), 'build', `${name}.wasm`);
}

/**
 * The compiled build/<name>.wasm, compiled once per thread. Pool workers are handed the main
 * thread's Module objects (adoptKernelModule) instead of compiling their own: V8 shares one
 * Module's machine code between threads, so a worker starts on the code the main thread has
 * already tiered up, and no thread holds a second copy of it.
 */
export function kernelModule(name: string): WebAssembly.Module {
  if (!/^[A-Za-z0-9_-]+$/.test(name)) throw new Error(`loadKernel: bad kernel name ${JSON.stringify(name)}`);
  let module = modules.get(name);
  if (!module) {
    const path = kernelPath(name);
    if (!existsSync(path)) throw new Error(`wasm kernel ${name} is missing (${path}); run \`npm run build:wasm\``);
    module = new WebAssembly.Module(readFileSync(path));
    modules.set(name, module);
  }
  return module;
}

/** Uses `module` (compiled on another thread, see kernelModule) for kernel `name` on this thread. */
export function adoptKernelModule(name: string, module: WebAssembly.Module): void {
  if (!modules.has(name)) modules.set(name, module);
}

/** Names and Modules of the kernels compiled (or adopted) on this thread so far. */
export function compiledKernels(): Array<[string, WebAssembly.Module]> {
  return [...modules];
}

/**
 * Instantiates build/<name>.wasm synchronously over `memory` (default: the
 * shared heap's), importing env.memory and an env.abort that throws.
 * Modules are compiled once; instances are cached per memory.
 */
export function loadKernel(name: string, memory: WebAssembly.Memory = wasmHeap().memory): WebAssembly.Instance {
  let perMemory = instances.get(memory);
  const cached = perMemory?.get(name);
  if (cached) return cached;
  const module = kernelModule(name);
  const instance = new WebAssembly.Instance(module, {
    env: {
      memory,
      abort(msg: number, file: number, line: number, column: number): never {
        throw new Error(`wasm kernel ${name} aborted (message ptr ${msg}, file ptr ${file}, ${line}:${column})`);
      },
    },
  });
  if (!perMemory) {
    perMemory = new Map();
    instances.set(memory, perMemory);
  }
  perMemory.set(name, instance);
  return instance;
}
