/**
 * halfpipe: LLaMA-family and LLaVA inference in TypeScript where half precision never costs
 * correctness. This module is the public API; it re-exports named symbols only.
 */
export { HalfpipeError, type HalfpipeErrorCode } from './core/errors.js';
export {
  type DType,
  DTYPES,
  FORMATS,
  type FloatFormat,
  type Storage,
  parseDType,
  roundTo,
  ulp,
  numberToF16Bits,
  f16BitsToNumber,
  numberToBf16Bits,
  bf16BitsToNumber,
  encode,
  decode,
} from './core/dtype.js';
export { Tensor, type Shape, type Allocator, jsAllocator, contiguousStrides } from './core/tensor.js';
export { wasmAllocator } from './kernels/wasm/allocator.js';
export {
  Rope,
  type RopeOptions,
  type RopeInputs,
  type RopeOutputs,
  type RopeLayout,
  type RopePairing,
  type RopeMath,
  DEFAULT_POSITION_LIMIT,
} from './ops/rope/rope.js';
export type { AngleMode } from './ops/rope/angles.js';
export { ropeReference } from './ops/rope/reference.js';
export {
  ropeScaling,
  ropeScalingFromHfConfig,
  type RopeScaling,
  type RopeScalingType,
  type RopeFrequencies,
} from './ops/rope/scaling.js';
export { ropeAccuracyReport, pairErrorUlps, type RopeMethod, type RopeAccuracyRow } from './ops/rope/accuracy.js';
