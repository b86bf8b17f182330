/** GGUF files and ggml block formats: read, write, (de)quantize. */
export {
  blockSize,
  GGML_TYPES,
  type GgmlType,
  type GgmlTypeInfo,
  ggmlTypeFromId,
  ggmlTypeId,
  GGUF_VALUE_TYPE_IDS,
  type GgufScalarType,
  type GgufTypedArray,
  type GgufTypedValue,
  type GgufValue,
  type GgufValueType,
  isQuantized,
  lookupGgmlType,
  parseGgmlType,
  plainValue,
  QK_K,
  rowBytes,
  SUPPORTED_GGML_TYPES,
  typeSize,
} from './types.js';
export {
  getTensor,
  GGUF_DEFAULT_ALIGNMENT,
  type GgufFile,
  type GgufTensorInfo,
  metaArray,
  metaBool,
  metaNumber,
  metaString,
  metaValue,
  readGguf,
  readTensorBytes,
  readTensorInto,
} from './reader.js';
export { GGUF_VERSION, type GgufTensorInput, type GgufWriteInput, writeGguf } from './writer.js';
export { dequantize, dequantizeToF32, dotQuantRow, quantize } from './quants.js';
