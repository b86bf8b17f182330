/**
 * CLIP / LLaVA-1.5 / LLaVA-NeXT image preprocessing, following HF transformers'
 * CLIPImageProcessor, LlavaImageProcessor and LlavaNextImageProcessor (slow, PIL-based path):
 *
 *   [pad to square with the mean colour]   (LLaVA-1.5: LlavaImageProcessor do_pad, or forced)
 *   -> resize (size.shortest_edge keeping aspect, or size.height x size.width), PIL resampling
 *   -> center crop (crop_size; zero padding where the image is smaller)
 *   -> rescale (rescale_factor) -> normalize ((x - mean) / std), float32 like numpy
 *   -> channel-first [3, H, W].
 *
 * LLaVA-NeXT "anyres" (`anyresPatches`): select_best_resolution over image_grid_pinpoints (given as
 * [height, width] pairs), resize keeping the aspect ratio to fit that resolution, pad with black
 * (zeros) centred, split into patch_size tiles in row-major order, and prepend the whole image
 * resized to size (shortest_edge x shortest_edge, i.e. squashed, as HF does); every tile then goes
 * through the same resize / crop / rescale / normalize as above.
 *
 * Token counting for LLaVA-NeXT (`anyresFeatureCount`) mirrors LlavaNextProcessor's
 * `_get_number_of_features` (base features + unpadded grid features + one newline per grid row).
 * Actually unpadding the features is left to the model side.
 */
import { fail } from '../core/errors.js';
import type { RgbImage } from './image.js';
import { resize, type ResampleFilter } from './resample.js';

export type Size = { shortestEdge: number } | { height: number; width: number };

export interface ImageProcessor {
  /** Which HF processor the config named (informational; behaviour is driven by the fields). */
  type: string;
  /** LLaVA-1.5 pad-to-square with the mean colour, before resizing. */
  padToSquare: boolean;
  doResize: boolean;
  size: Size;
  resample: ResampleFilter;
  doCenterCrop: boolean;
  cropSize: { height: number; width: number };
  doRescale: boolean;
  rescaleFactor: number;
  doNormalize: boolean;
  imageMean: [number, number, number];
  imageStd: [number, number, number];
  /** LLaVA-NeXT candidate resolutions as [height, width]; null when not an anyres processor. */
  imageGridPinpoints: [number, number][] | null;
}

export const OPENAI_CLIP_MEAN: [number, number, number] = [0.48145466, 0.4578275, 0.40821073];
export const OPENAI_CLIP_STD: [number, number, number] = [0.26862954, 0.26130258, 0.27577711];

type Json = Record<string, unknown>;

function posInt(v: unknown, what: string): number {
  if (typeof v !== 'number' || !Number.isInteger(v) || v < 1 || v > 16384) {
    fail('config', `preprocessor ${what} must be an integer in 1..16384, got ${JSON.stringify(v)}`);
  }
  return v;
}

function bool(cfg: Json, key: string, dflt: boolean): boolean {
  const v = cfg[key];
  if (v === undefined || v === null) return dflt;
  if (typeof v !== 'boolean') fail('config', `preprocessor ${key} must be a boolean, got ${JSON.stringify(v)}`);
  return v;
}

function triple(cfg: Json, key: string, dflt: [number, number, number]): [number, number, number] {
  const v = cfg[key];
  if (v === undefined || v === null) return dflt;
  if (typeof v === 'number' && Number.isFinite(v)) return [v, v, v];
  if (Array.isArray(v) && v.length === 3 && v.every((x) => typeof x === 'number' && Number.isFinite(x))) {
    return [v[0], v[1], v[2]];
  }
  return fail('config', `preprocessor ${key} must be a number or 3 numbers, got ${JSON.stringify(v)}`);
}

function parseSize(v: unknown, squareDefault: boolean, what: string): Size {
  if (typeof v === 'number') {
    const n = posInt(v, what);
    return squareDefault ? { height: n, width: n } : { shortestEdge: n };
  }
  if (v && typeof v === 'object' && !Array.isArray(v)) {
    const o = v as Json;
    if ('height' in o && 'width' in o) return { height: posInt(o.height, `${what}.height`), width: posInt(o.width, `${what}.width`) };
    if ('shortest_edge' in o) return { shortestEdge: posInt(o.shortest_edge, `${what}.shortest_edge`) };
  }
  return fail('config', `preprocessor ${what} must be an int, {shortest_edge} or {height, width}, got ${JSON.stringify(v)}`);
}

const RESAMPLE: Record<number, ResampleFilter> = { 2: 'bilinear', 3: 'bicubic' };

/**
 * Build a processor from a preprocessor_config.json object. `padToSquare` overrides the config
 * (original LLaVA checkpoints say `image_aspect_ratio: "pad"` in the model config, not here).
 * Only LlavaImageProcessor's `do_pad` means pad-to-square; LlavaNext's `do_pad` pads batches.
 */
export function imageProcessorFromConfig(cfg: unknown, opts: { padToSquare?: boolean } = {}): ImageProcessor {
  if (!cfg || typeof cfg !== 'object' || Array.isArray(cfg)) fail('config', 'preprocessor config must be a JSON object');
  const c = cfg as Json;
  const type = typeof c.image_processor_type === 'string' ? c.image_processor_type.replace(/Fast$/, '') : 'CLIPImageProcessor';
  const known = ['CLIPImageProcessor', 'LlavaImageProcessor', 'LlavaNextImageProcessor'];
  if (!known.includes(type)) fail('config', `unsupported image_processor_type '${type}'; supported: ${known.join(', ')}`);
  const resampleCode = c.resample ?? 3;
  const resample = typeof resampleCode === 'number' ? RESAMPLE[resampleCode] : undefined;
  if (!resample) fail('config', `unsupported preprocessor resample ${JSON.stringify(resampleCode)}; supported: 2 (bilinear), 3 (bicubic)`);
  const size = parseSize(c.size ?? { shortest_edge: 224 }, false, 'size');
  const crop = parseSize(c.crop_size ?? { height: 224, width: 224 }, true, 'crop_size');
  if (!('height' in crop)) fail('config', 'preprocessor crop_size must be {height, width} or an int');
  const rescaleFactor = c.rescale_factor ?? 1 / 255;
  if (typeof rescaleFactor !== 'number' || !Number.isFinite(rescaleFactor)) fail('config', 'preprocessor rescale_factor must be a number');
  const imageStd = triple(c, 'image_std', OPENAI_CLIP_STD);
  if (imageStd.some((s) => s === 0)) fail('config', 'preprocessor image_std must be non-zero');
  let pinpoints: [number, number][] | null = null;
  if (type === 'LlavaNextImageProcessor' || c.image_grid_pinpoints !== undefined) {
    pinpoints = parsePinpoints(c.image_grid_pinpoints ?? [[336, 672], [672, 336], [672, 672], [1008, 336], [336, 1008]]);
  }
  return {
    type,
    padToSquare: opts.padToSquare ?? (type === 'LlavaImageProcessor' && bool(c, 'do_pad', false)),
    doResize: bool(c, 'do_resize', true),
    size,
    resample,
    doCenterCrop: bool(c, 'do_center_crop', true),
    cropSize: crop,
    doRescale: bool(c, 'do_rescale', true),
    rescaleFactor,
    doNormalize: bool(c, 'do_normalize', true),
    imageMean: triple(c, 'image_mean', OPENAI_CLIP_MEAN),
    imageStd,
    imageGridPinpoints: pinpoints,
  };
}

function parsePinpoints(v: unknown): [number, number][] {
  if (!Array.isArray(v) || v.length === 0) fail('config', 'image_grid_pinpoints must be a non-empty list of [height, width]');
  return v.map((p, i) => {
    if (!Array.isArray(p) || p.length !== 2) fail('config', `image_grid_pinpoints[${i}] must be [height, width]`);
    return [posInt(p[0], `image_grid_pinpoints[${i}][0]`), posInt(p[1], `image_grid_pinpoints[${i}][1]`)] as [number, number];
  });
}

/** HF get_resize_output_image_size(default_to_square=False): [height, width]. */
export function shortestEdgeSize(height: number, width: number, shortestEdge: number): [number, number] {
  if (width <= height) return [Math.trunc((shortestEdge * height) / width), shortestEdge];
  return [shortestEdge, Math.trunc((shortestEdge * width) / height)];
}

/** The LLaVA-1.5 padding colour: tuple(int(x * 255) for x in image_mean) (truncation, as LLaVA and HF do). */
export function padColor(mean: readonly number[]): [number, number, number] {
  const c = mean.map((m) => Math.min(255, Math.max(0, Math.trunc(m * 255))));
  return [c[0]!, c[1]!, c[2]!];
}

/** Pad to a square, the image centred ((max - side) // 2 before), filled with `color`. */
export function padToSquare(img: RgbImage, color: readonly [number, number, number]): RgbImage {
  const { width: w, height: h } = img;
  if (w === h) return img;
  const s = Math.max(w, h);
  const ox = Math.floor((s - w) / 2);
  const oy = Math.floor((s - h) / 2);
  return placeOn(img, s, s, ox, oy, color);
}

/** A canvas of `w x h` filled with `color`, with `img` pasted at (ox, oy), clipped to the canvas. */
function placeOn(img: RgbImage, w: number, h: number, ox: number, oy: number, color: readonly number[]): RgbImage {
  const out = new Uint8Array(w * h * 3);
  if (color[0] !== 0 || color[1] !== 0 || color[2] !== 0) {
    for (let i = 0; i < w * h; i++) {
      out[i * 3] = color[0]!;
      out[i * 3 + 1] = color[1]!;
      out[i * 3 + 2] = color[2]!;
    }
  }
  const x0 = Math.max(0, ox);
  const x1 = Math.min(w, ox + img.width);
  if (x1 > x0) {
    for (let y = Math.max(0, oy); y < Math.min(h, oy + img.height); y++) {
      const sy = y - oy;
      const src = (sy * img.width + (x0 - ox)) * 3;
      out.set(img.data.subarray(src, src + (x1 - x0) * 3), (y * w + x0) * 3);
    }
  }
  return { width: w, height: h, data: out };
}

/** HF center_crop: top = (H - ch) // 2, left = (W - cw) // 2; zeros where the image does not reach. */
export function centerCrop(img: RgbImage, cropHeight: number, cropWidth: number): RgbImage {
  const top = Math.floor((img.height - cropHeight) / 2);
  const left = Math.floor((img.width - cropWidth) / 2);
  return placeOn(img, cropWidth, cropHeight, -left, -top, [0, 0, 0]);
}

/** Resize + center crop on uint8 pixels, as HF's `_preprocess` before rescaling. */
function resizeAndCrop(img: RgbImage, proc: ImageProcessor): RgbImage {
  let im = img;
  if (proc.doResize) {
    const [h, w] = 'shortestEdge' in proc.size
      ? shortestEdgeSize(im.height, im.width, proc.size.shortestEdge)
      : [proc.size.height, proc.size.width];
    im = resize(im, w, h, proc.resample);
  }
  if (proc.doCenterCrop) im = centerCrop(im, proc.cropSize.height, proc.cropSize.width);
  return im;
}

/** Rescale and normalize to float32, channel-first [3, H, W], with numpy's float32 rounding. */
export function toNormalizedCHW(img: RgbImage, proc: ImageProcessor): Float32Array {
  const n = img.width * img.height;
  const out = new Float32Array(3 * n);
  const f = Math.fround;
  for (let c = 0; c < 3; c++) {
    const mean = f(proc.imageMean[c]!);
    const std = f(proc.imageStd[c]!);
    // 256-entry table: every uint8 value maps to the same float.
    const lut = new Float32Array(256);
    for (let v = 0; v < 256; v++) {
      let x = proc.doRescale ? f(v * proc.rescaleFactor) : v;
      if (proc.doNormalize) x = f(f(x - mean) / std);
      lut[v] = x;
    }
    const plane = c * n;
    for (let i = 0; i < n; i++) out[plane + i] = lut[img.data[i * 3 + c]!]!;
  }
  return out;
}

export interface Preprocessed {
  pixels: Float32Array;
  width: number;
  height: number;
}

/** Full single-image pipeline (CLIP / LLaVA-1.5): pixels are [3, height, width]. */
export function preprocess(img: RgbImage, proc: ImageProcessor): Preprocessed {
  let im = img;
  if (proc.padToSquare) im = padToSquare(im, padColor(proc.imageMean));
  im = resizeAndCrop(im, proc);
  return { pixels: toNormalizedCHW(im, proc), width: im.width, height: im.height };
}

/** HF select_best_resolution: original [height, width], candidates [height, width]; returns [height, width]. */
export function selectBestResolution(
  original: readonly [number, number],
  candidates: readonly (readonly [number, number])[],
): [number, number] {
  const [oh, ow] = original;
  let best: [number, number] | null = null;
  let maxEffective = 0;
  let minWasted = Infinity;
  for (const [h, w] of candidates) {
    const scale = Math.min(w / ow, h / oh);
    const dw = Math.trunc(ow * scale);
    const dh = Math.trunc(oh * scale);
    const effective = Math.min(dw * dh, ow * oh);
    const wasted = w * h - effective;
    if (effective > maxEffective || (effective === maxEffective && wasted < minWasted)) {
      maxEffective = effective;
      minWasted = wasted;
      best = [h, w];
    }
  }
  if (best === null) fail('usage', 'select_best_resolution needs at least one candidate resolution');
  return best;
}

/** HF get_patch_output_size: the aspect-preserving size [height, width] that fits `target`. */
export function patchOutputSize(height: number, width: number, target: readonly [number, number]): [number, number] {
  const [th, tw] = target;
  const sw = tw / width;
  const sh = th / height;
  if (sw < sh) return [Math.min(Math.ceil(height * sw), th), tw];
  return [th, Math.min(Math.ceil(width * sh), tw)];
}

export interface AnyresResult {
  /** Base image first, then grid tiles in row-major order; each [3, H, W] normalized. */
  patches: Float32Array[];
  /** Tile grid [rows, cols]. */
  grid: [number, number];
  /** Selected resolution [height, width]. */
  bestResolution: [number, number];
  /** Size of each patch tensor (all equal): [height, width]. */
  patchShape: [number, number];
}

/** The grid [rows, cols] anyres produces for an image (HF get_anyres_image_grid_shape). */
export function anyresGridShape(
  height: number,
  width: number,
  gridPinpoints: readonly (readonly [number, number])[],
  patchSize: number,
): [number, number] {
  const [bh, bw] = selectBestResolution([height, width], gridPinpoints);
  return [Math.floor(bh / patchSize), Math.floor(bw / patchSize)];
}

/** LLaVA-NeXT anyres: base image + grid tiles, each preprocessed (see the module comment). */
export function anyresPatches(
  img: RgbImage,
  proc: ImageProcessor,
  gridPinpoints: readonly (readonly [number, number])[] | null = proc.imageGridPinpoints,
  patchSize: number = proc.cropSize.height,
): AnyresResult {
  if (!gridPinpoints || gridPinpoints.length === 0) fail('config', 'anyres needs image_grid_pinpoints');
  posInt(patchSize, 'patch size');
  for (const [h, w] of gridPinpoints) {
    if (h % patchSize !== 0 || w % patchSize !== 0) {
      fail('config', `image_grid_pinpoints entry [${h}, ${w}] is not a multiple of the patch size ${patchSize}`);
    }
  }
  const best = selectBestResolution([img.height, img.width], gridPinpoints);
  const [bh, bw] = best;
  const [nh, nw] = patchOutputSize(img.height, img.width, best);
  const resized = resize(img, nw, nh, proc.resample);
  const padded = placeOn(resized, bw, bh, Math.floor((bw - nw) / 2), Math.floor((bh - nh) / 2), [0, 0, 0]);
  const rows = bh / patchSize;
  const cols = bw / patchSize;
  const baseSize: [number, number] = 'shortestEdge' in proc.size
    ? [proc.size.shortestEdge, proc.size.shortestEdge]
    : [proc.size.height, proc.size.width];
  const tiles: RgbImage[] = [resize(img, baseSize[1], baseSize[0], proc.resample)];
  for (let r = 0; r < rows; r++) {
    for (let c = 0; c < cols; c++) tiles.push(placeOn(padded, patchSize, patchSize, -c * patchSize, -r * patchSize, [0, 0, 0]));
  }
  let shape: [number, number] = [0, 0];
  const patches = tiles.map((t) => {
    const im = resizeAndCrop(t, proc);
    shape = [im.height, im.width];
    return toNormalizedCHW(im, proc);
  });
  return { patches, grid: [rows, cols], bestResolution: best, patchShape: shape };
}

/** LLaVA-1.5 image tokens: (imageSize / visionPatchSize)^2 (CLS dropped), e.g. 336/14 -> 576. */
export function llavaFeatureCount(imageSize: number, visionPatchSize: number): number {
  const side = Math.floor(imageSize / visionPatchSize);
  return side * side;
}

/** Python's int(round(x, 7)) for the non-negative values used here. */
function truncRound7(x: number): number {
  return Math.trunc(Math.round(x * 1e7) / 1e7);
}

/**
 * LLaVA-NeXT image tokens for an original image of `height x width` (LlavaNextProcessor
 * `_get_number_of_features`): base (side^2 + extra, extra = 1 when the CLS token is kept, i.e. the
 * 'full' feature-select strategy) + unpadded grid features + one newline token per unpadded row.
 */
export function anyresFeatureCount(
  height: number,
  width: number,
  opts: {
    gridPinpoints: readonly (readonly [number, number])[];
    /** Vision tower input size (crop size), e.g. 336. */
    imageSize: number;
    /** ViT patch size, e.g. 14. */
    visionPatchSize: number;
    /** Extra base tokens (1 for 'full' strategy with CLS, 0 for 'default'). */
    additionalTokens?: number;
  },
): number {
  const [bh, bw] = selectBestResolution([height, width], opts.gridPinpoints);
  const scaleH = Math.floor(bh / opts.imageSize);
  const scaleW = Math.floor(bw / opts.imageSize);
  const side = Math.floor(opts.imageSize / opts.visionPatchSize);
  let curH = side * scaleH;
  let curW = side * scaleW;
  if (width / height > curW / curH) {
    const newH = truncRound7(height * (curW / width));
    curH -= Math.floor((curH - newH) / 2) * 2;
  } else {
    const newW = truncRound7(width * (curH / height));
    curW -= Math.floor((curW - newW) / 2) * 2;
  }
  return curH * curW + curH + side * side + (opts.additionalTokens ?? 0);
}
