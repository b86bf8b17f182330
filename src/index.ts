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

// ---- text generation -------------------------------------------------------------------------
export { loadModel, TextModel, type LoadOptions, type ModelInfo, type Prompt } from './models/load.js';
export { writeTinyModel, type TinyOptions, TINY_QUANTS } from './models/tiny.js';
export { LlamaModel, LlamaSession, decodeBatch, forwardBatch, type LlamaModelOptions, type LlamaProbe, LLAMA_PROBE_NAMES } from './models/llama/model.js';
export { llamaConfigFromHf, type LlamaConfig } from './models/llama/config.js';
export { llamaConfigFromGguf, llamaWeightsFromGguf } from './models/llama/gguf.js';
export type { LlamaWeights, Matrix, QuantizedMatrix } from './models/llama/weights.js';
export { generateTokens, Generation, type GenerateOptions, type GenerateResult, type GeneratedToken, type FinishReason, type TokenConstraint } from './generate/generate.js';
export { jsonObjectConstraint } from './generate/json-constraint.js';
export { Sampler, type SamplingOptions, topLogprobs, logprobOf } from './generate/sampler.js';
export type { Tokenizer } from './text/tokenizer.js';
export { loadHfTokenizer } from './text/tokenizer.js';
export { ggufTokenizer } from './text/gguf-tokenizer.js';
export { renderChat, type ChatMessage } from './text/chat.js';
export { StreamingDetokenizer } from './text/detokenizer.js';
export { readGguf, type GgufFile } from './formats/gguf/reader.js';
export { writeGguf } from './formats/gguf/writer.js';
export { readSafetensorsHeader, loadTensor, writeSafetensors } from './formats/safetensors.js';
export { openHfCheckpoint } from './formats/checkpoint.js';
export { snapshotDownload, type HubOptions } from './formats/hub.js';

// ---- numerics --------------------------------------------------------------------------------
export { parsePolicy, defaultPolicy, POLICY_NAMES, type PrecisionPolicy, type PolicyName } from './precision/policy.js';
export {
  NumericsMonitor,
  type NumericsMonitorOptions,
  analyze,
  firstBadOp,
  massiveChannels,
  compareShadow,
  renderTerminalSummary,
  renderHtml,
  traceJson,
  validateTraceJson,
  type TraceReport,
  type TraceJson,
  type ProbeStats,
  type Analyses,
} from './monitor/index.js';
export type { TraceOptions, TraceResult } from './models/load.js';
export type { ProbeContext } from './models/llama/model.js';
export type { NonFiniteAction, NumericsGuard } from './generate/generate.js';
export { setThreads, threadCount } from './kernels/wasm/pool.js';

// ---- LLaVA -----------------------------------------------------------------------------------
export { LlavaModel, type LlavaGenerateOptions, type ImageInput } from './models/llava/model.js';
export { llavaConfigFromHf, type LlavaConfig } from './models/llava/config.js';
export { ClipVisionModel, LlavaProjector } from './models/clip/model.js';
export { decodeImage, type RgbImage } from './vision/image.js';
export { preprocess, imageProcessorFromConfig, anyresPatches } from './vision/preprocess.js';
export { resizeBicubic } from './vision/resample.js';

// ---- serving ---------------------------------------------------------------------------------
export { startServer, type ServeOptions, type RunningServer } from './server/http.js';
export { Engine, type EngineOptions, type EngineRequest, type EngineResult, QueueFullError, ShuttingDownError } from './server/engine.js';
