/**
 * Entry of a pool worker (see pool.ts): instantiates kernels over the shared memory it is
 * given and runs chunks of the published jobs for the life of the process (the pool
 * unref()s it, so it never keeps the process alive). Slot = index + 1; the caller is slot 0.
 */
import { type MessagePort, parentPort, receiveMessageOnPort, workerData } from 'node:worker_threads';
import { adoptKernelModule, loadKernel } from './heap.js';
import { ARGS_BYTE, CHUNKS, chunkRows, claimChunk, DONE, ERROR, FN, LIMIT, MAX_ARGS, NARGS, PARKED, ROWS, SEQ, SPIN_MS, WORKER_CHUNKS } from './pool.js';

interface PoolWorkerData {
  memory: WebAssembly.Memory;
  /** Byte offset of the control block in the memory. */
  ctl: number;
  index: number;
  /** Registrations of kernel exports come in here; error messages go out. */
  port: MessagePort;
  /** Exports registered before this worker started: [kernel, fn] by id. */
  fns: Array<[string, string]>;
  /** The kernels the caller had compiled when this worker started (later ones come with their registrations). */
  modules: Array<[string, WebAssembly.Module]>;
}

type KernelFn = (...args: number[]) => void;

const data = workerData as PoolWorkerData;
const ctl = new Int32Array(data.memory.buffer, data.ctl, ARGS_BYTE / 4);
const argv = new Float64Array(data.memory.buffer, data.ctl + ARGS_BYTE, MAX_ARGS);
const names: Array<[string, string] | undefined> = [...data.fns];
for (const [name, module] of data.modules) adoptKernelModule(name, module);
const fns: Array<KernelFn | undefined> = [];

/** The export with this id; its registration was queued on the port before the job was published. */
function kernelFn(id: number): KernelFn {
  let fn = fns[id];
  if (fn) return fn;
  while (names[id] === undefined) {
    const m = receiveMessageOnPort(data.port);
    if (!m) throw new Error(`pool worker ${data.index}: unknown kernel function id ${id}`);
    const { id: got, kernel, fn: name, module } = m.message as { id: number; kernel: string; fn: string; module: WebAssembly.Module };
    adoptKernelModule(kernel, module);
    names[got] = [kernel, name];
  }
  const [kernel, name] = names[id]!;
  fn = loadKernel(kernel, data.memory).exports[name] as KernelFn;
  fns[id] = fn;
  return fn;
}

/** Runs chunks of job `seq` until none is left. */
function work(seq: number): void {
  if (data.index >= Atomics.load(ctl, LIMIT)) return;
  let fn: KernelFn | undefined;
  let args: number[] = [];
  for (let chunk = claimChunk(ctl, seq); chunk >= 0; chunk = claimChunk(ctl, seq)) {
    // The job cannot change while one of its chunks is unfinished: read it after the first claim.
    const rows = Atomics.load(ctl, ROWS);
    const chunks = Atomics.load(ctl, CHUNKS);
    try {
      if (!fn) {
        args = Array.from(argv.subarray(0, Atomics.load(ctl, NARGS)));
        fn = kernelFn(Atomics.load(ctl, FN));
      }
      const [r0, r1] = chunkRows(chunk, rows, chunks);
      fn(...args, r0, r1, data.index + 1);
    } catch (err) {
      // Message first: the caller reads it once every chunk is done.
      data.port.postMessage(err instanceof Error ? (err.stack ?? err.message) : String(err));
      Atomics.store(ctl, ERROR, 1);
    }
    Atomics.add(ctl, WORKER_CHUNKS, 1);
    Atomics.add(ctl, DONE, 1);
  }
}

/** Waits for a job newer than `seen`: spins for SPIN_MS, then parks until notified. */
function nextJob(seen: number): number {
  let start = performance.now();
  let spins = 0;
  for (;;) {
    const seq = Atomics.load(ctl, SEQ);
    if (seq !== seen) return seq;
    if (++spins % 1024 === 0 && performance.now() - start > SPIN_MS) {
      // The caller notifies only when PARKED > 0; it bumps SEQ first, so a job published
      // between these two lines makes the wait return at once.
      Atomics.add(ctl, PARKED, 1);
      Atomics.wait(ctl, SEQ, seen);
      Atomics.sub(ctl, PARKED, 1);
      start = performance.now();
    }
  }
}

parentPort!.postMessage('ready');
// Join a job that may already be running, then serve the next ones.
let seq = Atomics.load(ctl, SEQ);
work(seq);
for (;;) {
  seq = nextJob(seq);
  work(seq);
}
