/**
 * The vector ops of a forward pass, by kernel choice: the plain TypeScript references (float64
 * arithmetic, the oracle every fast kernel is tested against) or the WASM SIMD kernels, which
 * take the same arguments and keep the same contracts (src/kernels/wasm/elementwise.ts,
 * src/kernels/wasm/attention.ts). Matrix products choose by their weights instead: a packed
 * matrix runs in WASM (see packForKernels in linear.ts).
 */
import { roundF32ArrayInPlace } from '../core/dtype.js';
import { attentionWasm } from '../kernels/wasm/attention.js';
import { rmsNormWasm, roundF32ArrayWasm, swigluWasm } from '../kernels/wasm/elementwise.js';
import { attention } from './attention.js';
import type { KernelChoice } from './linear.js';
import { rmsNorm } from './rmsnorm.js';
import { swiglu } from './swiglu.js';

export interface VectorKernels {
  rmsNorm: typeof rmsNorm;
  swiglu: typeof swiglu;
  attention: typeof attention;
  /** rounds f32 values in place to the policy's storage dtype (see roundF32ArrayInPlace) */
  round: typeof roundF32ArrayInPlace;
}

const KERNELS: Record<KernelChoice, VectorKernels> = {
  reference: { rmsNorm, swiglu, attention, round: roundF32ArrayInPlace },
  wasm: { rmsNorm: rmsNormWasm, swiglu: swigluWasm, attention: attentionWasm, round: roundF32ArrayWasm },
};

export function vectorKernels(choice: KernelChoice): VectorKernels {
  return KERNELS[choice];
}
