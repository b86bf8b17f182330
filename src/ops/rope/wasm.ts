/**
 * Dispatch from a validated RoPE plan to the WASM SIMD kernel. The kernel reads and writes the
 * tensors where they are, so it runs only when all four operands live in the wasm heap (allocate
 * them with `wasmAllocator`) with a contiguous head_dim axis; otherwise the strided TypeScript loop
 * runs, with bit-identical results.
 */
import type { Storage } from '../../core/dtype.js';
import type { Tensor } from '../../core/tensor.js';
import { wasmHeap } from '../../kernels/wasm/heap.js';
import { ropeWasm, type RopeOperand } from '../../kernels/wasm/rope.js';
import type { Bshd, RopePlan } from './rope.js';

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

export function runRopeWasm(plan: RopePlan): void {
  const heap = wasmHeap();
  const { table } = plan;
  const bytesPerValue = plan.math === 'f32' ? 4 : 8;
  const tablePtr = heap.alloc(table.length * bytesPerValue);
  try {
    // set() converts float64 to float32 with one rounding, natively.
    (plan.math === 'f32' ? heap.f32(tablePtr, table.length) : heap.f64(tablePtr, table.length)).set(table);
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
      table: tablePtr,
    });
  } finally {
    heap.free(tablePtr);
  }
}
