/**
 * Dispatch from a validated RoPE plan to the WASM SIMD kernels. They read and write the tensors
 * where they are, so they run only when all four operands live in the wasm heap (allocate them with
 * `wasmAllocator`) with a contiguous head_dim axis; otherwise the strided TypeScript loop runs, with
 * bit-identical results.
 *
 * Per call: the cos/sin rows are built in the heap (exact angles: by the angle-addition kernel from
 * the cached low table and this call's high table; hf-compatible angles: in TypeScript), then the
 * rotation kernel rotates q and k in one pass.
 */
import type { Storage } from '../../core/dtype.js';
import type { Tensor } from '../../core/tensor.js';
import { cosSinRowsWasm } from '../../kernels/wasm/angles.js';
import { wasmHeap } from '../../kernels/wasm/heap.js';
import { ropeWasm, type RopeOperand } from '../../kernels/wasm/rope.js';
import { highTable, LOW_SIZE, lowTable } from './angles.js';
import { type Bshd, planTable, type RopePlan } from './rope.js';

/** The heap byte pointer of a tensor's storage, or undefined when it lives elsewhere. */
export function heapPointer(data: Storage): number | undefined {
  return wasmHeap().ptrOf(data);
}

function operand(v: Bshd): RopeOperand | undefined {
  const t: Tensor = v.tensor;
  const base = heapPointer(t.data);
  if (base === undefined || (t.strides[3] !== 1 && v.headDim > 1)) return undefined;
  return { ptr: base + t.offset * t.data.BYTES_PER_ELEMENT, strides: [t.strides[0]!, t.strides[1]!, t.strides[2]!] };
}

export function ropeWasmAvailable(plan: RopePlan): boolean {
  return [plan.q.input, plan.q.output, plan.k.input, plan.k.output].every((v) => operand(v) !== undefined);
}

/** Scratch allocations in the heap, freed together. */
class Scratch {
  private readonly ptrs: number[] = [];
  take(bytes: number): number {
    const ptr = wasmHeap().alloc(bytes);
    this.ptrs.push(ptr);
    return ptr;
  }
  free(): void {
    for (const p of this.ptrs) wasmHeap().free(p);
  }
}

/** Builds the plan's cos/sin rows in the heap, as f32 or f64 per the plan's math; returns the pointer. */
function heapTable(plan: RopePlan, scratch: Scratch): number {
  const heap = wasmHeap();
  const { positions, freqs } = plan;
  const tokens = positions.length;
  const half = plan.rotaryDim / 2;
  const valueBytes = plan.math === 'f32' ? 4 : 8;
  const out = scratch.take(tokens * plan.rotaryDim * valueBytes);
  if (plan.angles !== 'exact') {
    // set() converts float64 to float32 with one rounding, natively.
    const table = planTable(plan);
    (plan.math === 'f32' ? heap.f32(out, table.length) : heap.f64(out, table.length)).set(table);
    return out;
  }
  const low = lowTable(freqs.invFreq);
  const high = highTable(freqs.invFreq, positions);
  const lowPtr = scratch.take(2 * LOW_SIZE * half * 8);
  const highPtr = scratch.take(2 * high.rows * half * 8);
  const positionsPtr = scratch.take(tokens * 4);
  const rowOfPtr = scratch.take(tokens * 4);
  heap.f64(lowPtr, LOW_SIZE * half).set(low.cos);
  heap.f64(lowPtr + LOW_SIZE * half * 8, LOW_SIZE * half).set(low.sin);
  heap.f64(highPtr, high.rows * half).set(high.cos);
  heap.f64(highPtr + high.rows * half * 8, high.rows * half).set(high.sin);
  new Int32Array(heap.buffer, positionsPtr, tokens).set(positions);
  new Int32Array(heap.buffer, rowOfPtr, tokens).set(high.rowOf);
  cosSinRowsWasm({
    out,
    outType: plan.math,
    positions: positionsPtr,
    highRowOf: rowOfPtr,
    tokens,
    half,
    low: lowPtr,
    high: highPtr,
    highRows: high.rows,
    factor: freqs.attentionFactor,
  });
  return out;
}

export function runRopeWasm(plan: RopePlan): void {
  const scratch = new Scratch();
  try {
    const table = heapTable(plan, scratch);
    const { input: q, output: qOut } = plan.q;
    const { input: k, output: kOut } = plan.k;
    ropeWasm({
      dtype: plan.dtype,
      math: plan.math,
      batch: q.batch,
      seqLen: q.seqLen,
      headDim: q.headDim,
      rotaryDim: plan.rotaryDim,
      pairing: plan.pairing,
      q: { heads: q.heads, input: operand(q)!, output: operand(qOut)! },
      k: { heads: k.heads, input: operand(k)!, output: operand(kOut)! },
      table,
    });
  } finally {
    scratch.free();
  }
}
