/**
 * Typed glue for the fused q/k RoPE kernel (src/kernels/wasm/assembly/rope.ts,
 * built to build/rope.wasm). Operands are byte pointers into the wasm heap.
 */
import { wasmHeap } from './heap.js';
import { runRows, threadCount } from './pool.js';

export type StorageDType = 'f32' | 'f16' | 'bf16';

export interface RopeOperand {
  /** Byte pointer (in the wasm heap) of element [0,0,0,0]. */
  ptr: number;
  /** Element strides of batch, seq, head; the head_dim axis is contiguous (stride 1). */
  strides: readonly [number, number, number];
}

export interface RopeWasmCall {
  /** Storage dtype of q/k, input and output alike (f32 = 4 bytes, f16/bf16 = 2 bytes, raw IEEE bits). */
  dtype: StorageDType;
  /** Arithmetic precision; the cos/sin table has this element type. */
  math: 'f32' | 'f64';
  batch: number;
  seqLen: number;
  headDim: number;
  /** Even, 2 <= rotaryDim <= headDim; dims [rotaryDim, headDim) are copied bit-exact. */
  rotaryDim: number;
  pairing: 'neox' | 'gptj';
  q: { heads: number; input: RopeOperand; output: RopeOperand };
  k: { heads: number; input: RopeOperand; output: RopeOperand };
  /** Byte ptr: for token t = b*seqLen + s, rotaryDim values: rotaryDim/2 cos then rotaryDim/2 sin. */
  table: number;
}

const DTYPE_CODE: Record<StorageDType, number> = { f32: 0, f16: 1, bf16: 2 };
const DTYPE_BYTES: Record<StorageDType, number> = { f32: 4, f16: 2, bf16: 2 };
const MATH_CODE = { f32: 0, f64: 1 } as const;
const PAIRING_CODE = { neox: 0, gptj: 1 } as const;
const I32_MAX = 2 ** 31 - 1;

/** Per-thread scratch of the kernel (rotaryDim f32 per thread), kept between calls. */
let scratch = { ptr: 0, bytes: 0 };

function scratchFor(bytes: number): number {
  if (bytes > scratch.bytes) {
    const heap = wasmHeap();
    if (scratch.bytes > 0) heap.free(scratch.ptr);
    scratch = { ptr: heap.alloc(bytes), bytes };
  }
  return scratch.ptr;
}

function checkCount(name: string, v: number, min: number): void {
  if (!Number.isInteger(v) || v < min || v > I32_MAX) throw new RangeError(`ropeWasm: ${name} must be an integer >= ${min}, got ${v}`);
}

/** Checks an operand and that every byte it touches lies in [0, memBytes). */
function checkOperand(name: string, op: RopeOperand, heads: number, call: RopeWasmCall, memBytes: number): void {
  const { ptr, strides } = op;
  if (!Number.isInteger(ptr) || ptr < 0) throw new RangeError(`ropeWasm: ${name}.ptr must be a non-negative integer, got ${ptr}`);
  if (!Array.isArray(strides) || strides.length !== 3) throw new RangeError(`ropeWasm: ${name}.strides must be [batch, seq, head]`);
  for (const s of strides) {
    if (!Number.isInteger(s) || Math.abs(s) > I32_MAX) throw new RangeError(`ropeWasm: ${name}.strides must be 32-bit integers, got [${strides.join(', ')}]`);
  }
  if (heads === 0) return;
  // Lowest and highest element offsets over (b, s, h), plus the contiguous head_dim run.
  const counts = [call.batch, call.seqLen, heads];
  let lo = 0;
  let hi = call.headDim - 1;
  for (let axis = 0; axis < 3; axis++) {
    const span = (counts[axis]! - 1) * strides[axis]!;
    if (span < 0) lo += span;
    else hi += span;
  }
  const bytes = DTYPE_BYTES[call.dtype];
  if (ptr + lo * bytes < 0 || ptr + (hi + 1) * bytes > memBytes) {
    throw new RangeError(`ropeWasm: ${name} spans bytes [${ptr + lo * bytes}, ${ptr + (hi + 1) * bytes}) outside the wasm heap (${memBytes} bytes)`);
  }
}

/**
 * Fused RoPE on q and k in the wasm heap: for token t = b*seqLen + s, every
 * head, every pair i < rotaryDim/2 (neox: x[i], x[i+half]; gptj: x[2i], x[2i+1]):
 *   y1 = (x1*cos) - (x2*sin),  y2 = (x2*cos) + (x1*sin)
 * in `math` precision, rounded once to `dtype`. Output may equal input (in place)
 * but must not otherwise overlap it.
 */
export function ropeWasm(call: RopeWasmCall): void {
  const dtype = DTYPE_CODE[call.dtype];
  const math = MATH_CODE[call.math];
  const pairing = PAIRING_CODE[call.pairing];
  if (dtype === undefined) throw new RangeError(`ropeWasm: unknown dtype ${String(call.dtype)}`);
  if (math === undefined) throw new RangeError(`ropeWasm: unknown math ${String(call.math)}`);
  if (pairing === undefined) throw new RangeError(`ropeWasm: unknown pairing ${String(call.pairing)}`);
  checkCount('batch', call.batch, 0);
  checkCount('seqLen', call.seqLen, 0);
  checkCount('headDim', call.headDim, 2);
  checkCount('rotaryDim', call.rotaryDim, 2);
  checkCount('q.heads', call.q.heads, 0);
  checkCount('k.heads', call.k.heads, 0);
  if (call.rotaryDim % 2 !== 0 || call.rotaryDim > call.headDim) {
    throw new RangeError(`ropeWasm: rotaryDim must be even and <= headDim (${call.headDim}), got ${call.rotaryDim}`);
  }
  const tokens = call.batch * call.seqLen;
  if (tokens === 0 || call.q.heads + call.k.heads === 0) return;

  // Validate everything against the memory as it is now, before touching it.
  const memBytes = wasmHeap().buffer.byteLength;
  checkOperand('q.input', call.q.input, call.q.heads, call, memBytes);
  checkOperand('q.output', call.q.output, call.q.heads, call, memBytes);
  checkOperand('k.input', call.k.input, call.k.heads, call, memBytes);
  checkOperand('k.output', call.k.output, call.k.heads, call, memBytes);
  const tableBytes = tokens * call.rotaryDim * (call.math === 'f64' ? 8 : 4);
  if (!Number.isInteger(call.table) || call.table < 0 || call.table + tableBytes > memBytes) {
    throw new RangeError(`ropeWasm: table [${call.table}, +${tableBytes}) is not inside the wasm heap (${memBytes} bytes)`);
  }

  // Tokens are independent: the pool splits them over threads (small calls stay on this one).
  const { q, k } = call;
  runRows({
    kernel: 'rope',
    fn: 'rope',
    args: [
      dtype, math, pairing,
      call.batch, call.seqLen, call.headDim, call.rotaryDim,
      q.heads,
      q.input.ptr, q.input.strides[0], q.input.strides[1], q.input.strides[2],
      q.output.ptr, q.output.strides[0], q.output.strides[1], q.output.strides[2],
      k.heads,
      k.input.ptr, k.input.strides[0], k.input.strides[1], k.input.strides[2],
      k.output.ptr, k.output.strides[0], k.output.strides[1], k.output.strides[2],
      call.table, scratchFor(threadCount() * call.rotaryDim * 4),
    ],
    rows: tokens,
    rowWork: (q.heads + k.heads) * call.headDim,
  });
}
