/** Vision front end: image decoding, PIL-compatible resampling, CLIP/LLaVA preprocessing. */
export { decodeImage, detectFormat, probeSize, jpegExifOrientation, applyOrientation, MAX_IMAGE_SIDE, MAX_IMAGE_PIXELS, MAX_IMAGE_BYTES } from './image.js';
export type { RgbImage, ImageFormat, DecodeOptions } from './image.js';
export { resize, resizeBicubic, resizeBilinear, bicubicKernel, bilinearKernel, axisCoefficients } from './resample.js';
export type { ResampleFilter } from './resample.js';
export {
  imageProcessorFromConfig,
  preprocess,
  anyresPatches,
  anyresGridShape,
  anyresFeatureCount,
  llavaFeatureCount,
  selectBestResolution,
  patchOutputSize,
  shortestEdgeSize,
  centerCrop,
  padToSquare,
  padColor,
  toNormalizedCHW,
  OPENAI_CLIP_MEAN,
  OPENAI_CLIP_STD,
} from './preprocess.js';
export type { ImageProcessor, Size, Preprocessed, AnyresResult } from './preprocess.js';
