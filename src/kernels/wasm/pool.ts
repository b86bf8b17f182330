/**
 * A small fork/join pool of worker threads for the wasm kernels. Every thread instantiates
 * the same kernels over the ONE shared WebAssembly.Memory of the heap, so a job is only a
 * kernel export and its numeric arguments: `fn(...args, r0, r1, slot)` run over row ranges
 * [r0, r1) that together cover [0, rows) exactly once; slot (0 on the calling thread,
 * < threadCount()) tells a kernel which per-thread scratch it may use.
 *
 * Sync goes through a control block of Int32 words in the shared memory, not messages:
 * the caller publishes a job and bumps a sequence number; workers spin on it for a bounded
 * time (a wake-up through Atomics.wait/notify costs tens of microseconds), then park in
 * Atomics.wait. Rows are cut into chunks that every participant, the caller included,
 * claims one at a time with a compare-exchange, so a late or descheduled worker only
 * means the others take more chunks. The caller then spins until every chunk is done.
 *
 * Workers are created on first use, are unref()ed (they never keep the process alive),
 * and a job too small to be worth the sync runs on the calling thread only.
 */
import { availableParallelism } from 'node:os';
import { MessageChannel, type MessagePort, receiveMessageOnPort, Worker } from 'node:worker_threads';
import { compiledKernels, kernelModule, loadKernel, wasmHeap } from './heap.js';

export interface RowJob {
  /** Kernel name: build/<kernel>.wasm. */
  kernel: string;
  /** Export called as fn(...args, r0, r1, slot) for each row range (a kernel may ignore slot). */
  fn: string;
  /** Leading arguments (i32 or f64 values), the same for every range. */
  args: readonly number[];
  /** Rows [0, rows) to split. */
  rows: number;
  /** Work per row in any unit (e.g. elements); a chunk gets at least minChunkWork of it. */
  rowWork: number;
}

// Control block layout (Int32 word indices), shared with worker.ts.
export const SEQ = 0; // job sequence number; workers wait for it to change
export const CLAIM = 1; // (seq & TAG_MASK) << CHUNK_BITS | next unclaimed chunk
export const DONE = 2; // chunks finished in the current job
export const ERROR = 3; // set when a chunk threw in a worker (its message is on that worker's port)
export const FN = 4; // id of the export (registered with the workers through their ports)
export const NARGS = 5;
export const ROWS = 6;
export const CHUNKS = 7;
export const PARKED = 8; // workers in Atomics.wait
export const WORKER_CHUNKS = 9; // chunks run by workers so far (statistics, tests)
export const LIMIT = 10; // workers with index >= LIMIT sit the job out
export const ARGS_BYTE = 64; // f64 arguments
export const MAX_ARGS = 48;
export const CTL_BYTES = ARGS_BYTE + MAX_ARGS * 8;
export const CHUNK_BITS = 12;
export const CHUNK_MASK = (1 << CHUNK_BITS) - 1;
export const TAG_MASK = (1 << (31 - CHUNK_BITS)) - 1;
/** How long an idle worker spins before it parks, and the caller before it sleeps in 1 ms slices. */
export const SPIN_MS = 1;

/**
 * Claims the next chunk of job `seq`, or returns -1 when it has none left (or a newer job
 * replaced it). The tag keeps a participant that lags behind from claiming a newer job's chunks.
 */
export function claimChunk(ctl: Int32Array, seq: number): number {
  for (;;) {
    const word = Atomics.load(ctl, CLAIM);
    if (word >>> CHUNK_BITS !== (seq & TAG_MASK)) return -1;
    const chunk = word & CHUNK_MASK;
    if (chunk >= Atomics.load(ctl, CHUNKS)) return -1;
    if (Atomics.compareExchange(ctl, CLAIM, word, word + 1) === word) return chunk;
  }
}

/** Row range of a chunk: [floor(c*rows/chunks), floor((c+1)*rows/chunks)). */
export function chunkRows(chunk: number, rows: number, chunks: number): [number, number] {
  return [Math.floor((chunk * rows) / chunks), Math.floor(((chunk + 1) * rows) / chunks)];
}

type KernelFn = (...args: number[]) => void;

interface WorkerSlot {
  worker: Worker;
  /** The caller's end of the worker's private channel: registrations out, error messages in. */
  port: MessagePort;
  ready: Promise<void>;
}

/** Chunks per thread: enough for the claiming to even out threads that run at different speeds. */
const CHUNKS_PER_THREAD = 16;

let threads = availableParallelism();
let minChunkWork = 1 << 15;
let ctl: Int32Array | undefined;
let ctlArgs: Float64Array | undefined;
let seq = 0;
let busy = false;
const slots: WorkerSlot[] = [];
/** `${kernel}.${fn}` -> id known to every worker (they get the table when they start). */
const fnIds = new Map<string, number>();
const fnNames: Array<[string, string]> = [];

/** Threads used for a job (the caller plus threads - 1 workers). */
export function threadCount(): number {
  return threads;
}

/**
 * Sets the thread count (>= 1; 1 runs everything on the calling thread). Workers beyond the
 * new count sit jobs out (parked, no CPU) and come back if the count goes up again.
 */
export function setThreads(n: number): void {
  if (!Number.isInteger(n) || n < 1 || n > 256) throw new RangeError(`setThreads: n must be an integer in [1, 256], got ${n}`);
  threads = n;
}

/** Sets the least work per chunk (see RowJob.rowWork); a job with less than twice that stays on the caller. */
export function setMinChunkWork(work: number): void {
  if (!(work >= 1)) throw new RangeError(`setMinChunkWork: work must be >= 1, got ${work}`);
  minChunkWork = work;
}

/** Starts the workers now (they start lazily otherwise) and resolves once they can take jobs. */
export async function poolReady(): Promise<void> {
  startWorkers();
  await Promise.all(slots.slice(0, threads - 1).map((s) => s.ready));
}

/** Workers started, workers parked now, and chunks run by workers so far (for tests and benchmarks). */
export function poolStats(): { workers: number; parked: number; workerChunks: number } {
  return {
    workers: slots.length,
    parked: ctl ? Atomics.load(ctl, PARKED) : 0,
    workerChunks: ctl ? Atomics.load(ctl, WORKER_CHUNKS) : 0,
  };
}

function control(): Int32Array {
  if (!ctl) {
    const heap = wasmHeap();
    const ptr = heap.alloc(CTL_BYTES, 64);
    new Uint8Array(heap.buffer, ptr, CTL_BYTES).fill(0);
    ctl = new Int32Array(heap.buffer, ptr, ARGS_BYTE / 4);
    ctlArgs = new Float64Array(heap.buffer, ptr + ARGS_BYTE, MAX_ARGS);
  }
  return ctl;
}

function startWorkers(): void {
  const c = control();
  while (slots.length < threads - 1) {
    const index = slots.length;
    const { port1, port2 } = new MessageChannel();
    const worker = new Worker(new URL('./worker.js', import.meta.url), {
      // The compiled Modules travel too: the worker instantiates them instead of compiling its own.
      workerData: { memory: wasmHeap().memory, ctl: c.byteOffset, index, port: port2, fns: fnNames, modules: compiledKernels() },
      transferList: [port2],
    });
    worker.unref();
    port1.unref();
    const ready = new Promise<void>((resolve, reject) => {
      worker.once('message', () => resolve());
      worker.once('error', reject);
      worker.once('exit', (code) => reject(new Error(`pool worker ${index} exited (${code}) before it was ready`)));
    });
    // A failed start must not become an unhandled rejection; jobs simply run without that worker.
    ready.catch(() => {});
    slots.push({ worker, port: port1, ready });
  }
}

function fnId(kernel: string, fn: string): number {
  const key = `${kernel}.${fn}`;
  let id = fnIds.get(key);
  if (id === undefined) {
    id = fnNames.length;
    fnNames.push([kernel, fn]);
    fnIds.set(key, id);
    // Queued before the job that uses it is published; a worker reads it synchronously when it meets the id.
    const module = kernelModule(kernel);
    for (const s of slots) s.port.postMessage({ id, kernel, fn, module });
  }
  return id;
}

function publish(c: Int32Array, id: number, rows: number, chunks: number, args: readonly number[]): number {
  seq = (seq + 1) | 0;
  // Close claiming first: the new tag with no chunk left. Otherwise a participant that read the
  // previous job's claim word could see this job's CHUNKS, win its compare-exchange on the old
  // word and run a chunk of this job that another participant also claims (a row run twice).
  Atomics.store(c, CLAIM, ((seq & TAG_MASK) << CHUNK_BITS) | CHUNK_MASK);
  Atomics.store(c, LIMIT, threads - 1);
  Atomics.store(c, FN, id);
  Atomics.store(c, NARGS, args.length);
  ctlArgs!.set(args);
  Atomics.store(c, ROWS, rows);
  Atomics.store(c, CHUNKS, chunks);
  Atomics.store(c, DONE, 0);
  Atomics.store(c, ERROR, 0);
  // Open claiming: every field above is in place.
  Atomics.store(c, CLAIM, (seq & TAG_MASK) << CHUNK_BITS);
  Atomics.store(c, SEQ, seq);
  // Only parked workers need the (slow) notify; one that parks after this load sees the new SEQ.
  if (Atomics.load(c, PARKED) > 0) Atomics.notify(c, SEQ);
  return seq;
}

/**
 * Runs fn(...args, r0, r1, slot) over ranges covering [0, rows) exactly once, on this thread
 * (slot 0) and the workers (slots 1 .. threadCount() - 1), and returns when all are done.
 * If a range throws, the error (the calling thread's first, else the workers' messages) is
 * thrown after every range has finished.
 */
export function runRows(job: RowJob): void {
  const { kernel, fn: name, args, rows, rowWork } = job;
  if (!Number.isInteger(rows) || rows < 0 || rows > 0x7fffffff) throw new RangeError(`runRows: rows must be an integer in [0, 2^31), got ${rows}`);
  if (!(rowWork >= 0)) throw new RangeError(`runRows: rowWork must be >= 0, got ${rowWork}`);
  if (args.length > MAX_ARGS) throw new RangeError(`runRows: at most ${MAX_ARGS} arguments, got ${args.length}`);
  for (const a of args) if (typeof a !== 'number') throw new TypeError(`runRows: arguments must be numbers, got ${typeof a}`);
  const fn = loadKernel(kernel).exports[name];
  if (typeof fn !== 'function') throw new Error(`runRows: kernel ${kernel} has no export ${name}`);
  const run = fn as KernelFn;
  if (rows === 0) return;

  const maxChunks = Math.min(rows, threads * CHUNKS_PER_THREAD, CHUNK_MASK);
  const chunks = Math.min(maxChunks, Math.floor((rows * rowWork) / minChunkWork));
  if (threads === 1 || chunks < 2 || busy) {
    // Small (or nested) job: no sync at all.
    run(...args, 0, rows, 0);
    return;
  }

  busy = true;
  try {
    startWorkers();
    const c = control();
    const mySeq = publish(c, fnId(kernel, name), rows, chunks, args);
    let error: unknown;
    for (let chunk = claimChunk(c, mySeq); chunk >= 0; chunk = claimChunk(c, mySeq)) {
      const [r0, r1] = chunkRows(chunk, rows, chunks);
      try {
        run(...args, r0, r1, 0);
      } catch (err) {
        error ??= err;
      }
      Atomics.add(c, DONE, 1);
    }
    waitDone(c, chunks);
    // Drain the workers' messages either way, so that none is left for a later job.
    const messages = Atomics.load(c, ERROR) !== 0 ? workerErrors() : [];
    if (error !== undefined) throw error;
    if (messages.length > 0) throw new Error(`runRows: ${kernel}.${name} failed in a worker: ${messages.join('; ')}`);
  } finally {
    busy = false;
  }
}

/** Spins until `chunks` chunks are done, sleeping in 1 ms slices after SPIN_MS. */
function waitDone(c: Int32Array, chunks: number): void {
  const start = performance.now();
  let spins = 0;
  for (let done = Atomics.load(c, DONE); done < chunks; done = Atomics.load(c, DONE)) {
    if (++spins % 1024 === 0 && performance.now() - start > SPIN_MS) Atomics.wait(c, DONE, done, 1);
  }
}

/** The error messages that workers posted during the last job. */
function workerErrors(): string[] {
  const messages: string[] = [];
  for (const s of slots) {
    for (let m = receiveMessageOnPort(s.port); m; m = receiveMessageOnPort(s.port)) messages.push(String(m.message));
  }
  return messages.length > 0 ? messages : ['(no message)'];
}
