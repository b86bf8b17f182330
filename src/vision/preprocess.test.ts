import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { RgbImage } from './image.js';
import { resizeBicubic } from './resample.js';
import {
  OPENAI_CLIP_MEAN,
  OPENAI_CLIP_STD,
  anyresFeatureCount,
  anyresGridShape,
  anyresPatches,
  centerCrop,
  imageProcessorFromConfig,
  llavaFeatureCount,
  padColor,
  padToSquare,
  patchOutputSize,
  preprocess,
  selectBestResolution,
  shortestEdgeSize,
} from './preprocess.js';

/** preprocessor_config.json of llava-hf/llava-1.5-7b-hf (CLIP ViT-L/14-336). */
const LLAVA15 = {
  crop_size: { height: 336, width: 336 },
  do_center_crop: true,
  do_convert_rgb: true,
  do_normalize: true,
  do_rescale: true,
  do_resize: true,
  image_mean: OPENAI_CLIP_MEAN,
  image_processor_type: 'CLIPImageProcessor',
  image_std: OPENAI_CLIP_STD,
  processor_class: 'LlavaProcessor',
  resample: 3,
  rescale_factor: 0.00392156862745098,
  size: { shortest_edge: 336 },
};

const PINPOINTS: [number, number][] = [[336, 672], [672, 336], [672, 672], [1008, 336], [336, 1008]];
const LLAVA_NEXT = { ...LLAVA15, image_processor_type: 'LlavaNextImageProcessor', image_grid_pinpoints: PINPOINTS, do_pad: true };

function solid(w: number, h: number, rgb: [number, number, number]): RgbImage {
  const data = new Uint8Array(w * h * 3);
  for (let i = 0; i < w * h; i++) data.set(rgb, i * 3);
  return { width: w, height: h, data };
}

function gradient(w: number, h: number): RgbImage {
  const data = new Uint8Array(w * h * 3);
  for (let y = 0; y < h; y++) {
    for (let x = 0; x < w; x++) data.set([(x * 7) & 255, (y * 5) & 255, (x + y) & 255], (y * w + x) * 3);
  }
  return { width: w, height: h, data };
}

/** numpy float32: (float32(v * rescale) - float32(mean)) / float32(std). */
function normalized(v: number, c: number): number {
  const f = Math.fround;
  return f(f(f(v * 0.00392156862745098) - f(OPENAI_CLIP_MEAN[c]!)) / f(OPENAI_CLIP_STD[c]!));
}

test('shortest-edge output size follows HF get_resize_output_image_size', () => {
  assert.deepEqual(shortestEdgeSize(480, 640, 336), [336, 448]);
  assert.deepEqual(shortestEdgeSize(640, 480, 336), [448, 336]);
  assert.deepEqual(shortestEdgeSize(500, 333, 224), [336, 224]); // int(224 * 500 / 333) = 336
  assert.deepEqual(shortestEdgeSize(333, 500, 224), [224, 336]);
  assert.deepEqual(shortestEdgeSize(100, 100, 336), [336, 336]);
  assert.deepEqual(shortestEdgeSize(1, 1000, 224), [224, 224000]);
});

test('center crop offsets are (size - crop) // 2, with zero fill when the image is smaller', () => {
  const img = gradient(7, 5);
  const c = centerCrop(img, 3, 4); // top = 1, left = 1
  assert.deepEqual([c.width, c.height], [4, 3]);
  assert.deepEqual([...c.data.subarray(0, 3)], [...img.data.subarray((1 * 7 + 1) * 3, (1 * 7 + 1) * 3 + 3)]);
  const big = centerCrop(solid(2, 1, [9, 9, 9]), 4, 5); // top = (1-4)//2 = -2, left = (2-5)//2 = -2
  const rows = [...Array(4)].map((_, y) => [...Array(5)].map((_, x) => big.data[(y * 5 + x) * 3]));
  assert.deepEqual(rows, [
    [0, 0, 0, 0, 0],
    [0, 0, 0, 0, 0],
    [0, 0, 9, 9, 0],
    [0, 0, 0, 0, 0],
  ]);
});

test('config parsing: defaults, legacy ints, validation', () => {
  const p = imageProcessorFromConfig(LLAVA15);
  assert.deepEqual(p.size, { shortestEdge: 336 });
  assert.deepEqual(p.cropSize, { height: 336, width: 336 });
  assert.equal(p.resample, 'bicubic');
  assert.equal(p.padToSquare, false);
  assert.equal(p.imageGridPinpoints, null);
  const legacy = imageProcessorFromConfig({ size: 224, crop_size: 224, feature_extractor_type: 'CLIPFeatureExtractor' });
  assert.deepEqual(legacy.size, { shortestEdge: 224 });
  assert.deepEqual(legacy.cropSize, { height: 224, width: 224 });
  assert.equal(imageProcessorFromConfig({ ...LLAVA15, image_processor_type: 'LlavaImageProcessor', do_pad: true }).padToSquare, true);
  assert.equal(imageProcessorFromConfig(LLAVA15, { padToSquare: true }).padToSquare, true);
  // LLaVA-NeXT's do_pad pads the batch, not the image
  const next = imageProcessorFromConfig(LLAVA_NEXT);
  assert.equal(next.padToSquare, false);
  assert.deepEqual(next.imageGridPinpoints, PINPOINTS);
  const bad: [unknown, RegExp][] = [
    [{ ...LLAVA15, resample: 1 }, /unsupported preprocessor resample 1/],
    [{ ...LLAVA15, image_processor_type: 'SiglipImageProcessor' }, /unsupported image_processor_type 'SiglipImageProcessor'/],
    [{ ...LLAVA15, size: { longest_edge: 3 } }, /size must be/],
    [{ ...LLAVA15, image_mean: [1, 2] }, /image_mean must be/],
    [{ ...LLAVA15, image_std: [0, 1, 1] }, /image_std must be non-zero/],
    [{ ...LLAVA_NEXT, image_grid_pinpoints: [[336]] }, /image_grid_pinpoints\[0\]/],
    [[], /must be a JSON object/],
  ];
  for (const [cfg, re] of bad) {
    assert.throws(() => imageProcessorFromConfig(cfg), (e: Error) => e.name === 'HalfpipeError' && re.test(e.message) && !e.message.includes('\n'));
  }
});

test('normalization matches numpy float32 rescale + normalize, channel-first', () => {
  const proc = imageProcessorFromConfig(LLAVA15);
  const out = preprocess(solid(640, 480, [0, 128, 255]), proc);
  assert.deepEqual([out.width, out.height], [336, 336]);
  assert.equal(out.pixels.length, 3 * 336 * 336);
  const plane = 336 * 336;
  for (const i of [0, 1000, plane - 1]) {
    assert.equal(out.pixels[i], normalized(0, 0));
    assert.equal(out.pixels[plane + i], normalized(128, 1));
    assert.equal(out.pixels[2 * plane + i], normalized(255, 2));
  }
  assert.ok(Math.abs(out.pixels[0]! - -1.7922626) < 1e-6); // (0 - 0.48145466) / 0.26862954
  assert.ok(Math.abs(out.pixels[2 * plane]! - 2.145897) < 1e-5); // (1 - 0.40821073) / 0.27577711
});

test('preprocess = shortest-edge bicubic resize, then center crop, then normalize', () => {
  const img = gradient(64, 40);
  const proc = imageProcessorFromConfig({ ...LLAVA15, size: { shortest_edge: 20 }, crop_size: { height: 20, width: 20 } });
  const out = preprocess(img, proc);
  const resized = resizeBicubic(img, 32, 20); // int(20 * 64 / 40) = 32
  // crop left = (32 - 20) // 2 = 6
  for (const [x, y] of [[0, 0], [5, 7], [19, 19]] as const) {
    for (let c = 0; c < 3; c++) {
      const v = resized.data[(y * 32 + x + 6) * 3 + c]!;
      assert.equal(out.pixels[c * 400 + y * 20 + x], normalized(v, c), `(${x},${y},${c})`);
    }
  }
});

test('LLaVA-1.5 pad-to-square uses int(mean * 255) and centres the image', () => {
  assert.deepEqual(padColor(OPENAI_CLIP_MEAN), [122, 116, 104]);
  const wide = padToSquare(solid(4, 2, [255, 0, 0]), [122, 116, 104]);
  assert.deepEqual([wide.width, wide.height], [4, 4]);
  const col0 = [0, 1, 2, 3].map((y) => wide.data[y * 4 * 3]);
  assert.deepEqual(col0, [122, 255, 255, 122]); // (4 - 2) // 2 = 1 row above
  const tall = padToSquare(solid(2, 5, [0, 0, 0]), [1, 2, 3]);
  const row0 = [0, 1, 2, 3, 4].map((x) => tall.data[x * 3 + 2]);
  assert.deepEqual(row0, [3, 0, 0, 3, 3]); // (5 - 2) // 2 = 1 column left, 2 right

  const proc = imageProcessorFromConfig({ ...LLAVA15, image_processor_type: 'LlavaImageProcessor', do_pad: true, size: { shortest_edge: 4 }, crop_size: 4 });
  const out = preprocess(solid(4, 2, [255, 0, 0]), proc);
  assert.deepEqual([out.width, out.height], [4, 4]);
  assert.equal(out.pixels[0], normalized(122, 0));
  assert.equal(out.pixels[16], normalized(116, 1));
  assert.equal(out.pixels[4], normalized(255, 0)); // row 1
  assert.equal(out.pixels[12], normalized(122, 0)); // row 3
  // without padding the same image is cropped from a resize instead: no mean colour anywhere
  const noPad = preprocess(solid(4, 2, [255, 0, 0]), imageProcessorFromConfig({ ...LLAVA15, size: 4, crop_size: 4 }));
  assert.ok(noPad.pixels.subarray(0, 16).every((v) => v === normalized(255, 0)));
});

test('select_best_resolution on several aspect ratios', () => {
  const cases: [[number, number], [number, number]][] = [
    [[500, 500], [672, 672]],
    [[300, 1000], [336, 1008]], // wide
    [[1000, 300], [1008, 336]], // tall
    [[480, 640], [672, 672]],
    [[800, 1200], [672, 672]],
    [[336, 700], [336, 1008]], // [336,672] would downscale (effective 672*322); [336,1008] keeps all 700*336
    [[336, 672], [336, 672]], // exact fit beats [336,1008] and [672,672] (same effective, less waste)
    [[100, 100], [336, 672]], // all effective = 10000: least waste, first on ties
    [[2000, 400], [1008, 336]],
  ];
  for (const [orig, want] of cases) assert.deepEqual(selectBestResolution(orig, PINPOINTS), want, `${orig}`);
  assert.deepEqual(anyresGridShape(300, 1000, PINPOINTS, 336), [1, 3]);
  assert.deepEqual(anyresGridShape(480, 640, PINPOINTS, 336), [2, 2]);
});

test('patch output size keeps the aspect ratio and fits the target', () => {
  assert.deepEqual(patchOutputSize(300, 1000, [336, 1008]), [303, 1008]); // ceil(300 * 1.008)
  assert.deepEqual(patchOutputSize(480, 640, [672, 672]), [504, 672]);
  assert.deepEqual(patchOutputSize(1000, 300, [1008, 336]), [1008, 303]);
  assert.deepEqual(patchOutputSize(100, 100, [336, 672]), [336, 336]);
});

test('anyres patches: base image first, grid tiles, zero padding centred', () => {
  const proc = imageProcessorFromConfig(LLAVA_NEXT);
  const cases: [number, number, [number, number], [number, number]][] = [
    [1000, 300, [1, 3], [336, 1008]],
    [300, 1000, [3, 1], [1008, 336]],
    [640, 480, [2, 2], [672, 672]],
    [100, 100, [1, 2], [336, 672]],
  ];
  for (const [w, h, grid, best] of cases) {
    const r = anyresPatches(solid(w, h, [200, 100, 50]), proc);
    assert.deepEqual(r.grid, grid, `${w}x${h}`);
    assert.deepEqual(r.bestResolution, best);
    assert.equal(r.patches.length, 1 + grid[0] * grid[1]);
    assert.deepEqual(r.patchShape, [336, 336]);
    for (const p of r.patches) assert.equal(p.length, 3 * 336 * 336);
  }
  // 1000x300 -> resized to 1008x303, padded with 16 rows on top and 17 below (black)
  const r = anyresPatches(solid(1000, 300, [200, 100, 50]), proc);
  const tile = r.patches[2]!;
  assert.equal(tile[15 * 336 + 100], normalized(0, 0));
  assert.equal(tile[16 * 336 + 100], normalized(200, 0));
  assert.equal(tile[318 * 336 + 100], normalized(200, 0));
  assert.equal(tile[319 * 336 + 100], normalized(0, 0));
  // the base image is squashed to 336x336 (not padded): all image colour
  assert.ok(r.patches[0]!.subarray(0, 336 * 336).every((v) => v === normalized(200, 0)));
  // tiles are row-major: on a horizontal gradient tile 1 starts where tile 0 ends
  const g = anyresPatches(gradient(672, 336), proc, PINPOINTS, 336);
  assert.deepEqual(g.grid, [1, 2]);
  const t1 = g.patches[2]!;
  assert.equal(t1[0], normalized((336 * 7) & 255, 0));
  assert.throws(() => anyresPatches(solid(10, 10, [0, 0, 0]), proc, [[500, 500]], 336), /not a multiple of the patch size/);
});

test('image feature counts (LLaVA-1.5 and LLaVA-NeXT unpadded grid)', () => {
  assert.equal(llavaFeatureCount(336, 14), 576);
  assert.equal(llavaFeatureCount(224, 14), 256);
  const opts = { gridPinpoints: PINPOINTS, imageSize: 336, visionPatchSize: 14 };
  // 640x480: best 672x672 -> 48x48 grid features; new height int(480 * 48 / 640) = 36 -> padding 6
  // -> 36 * 48 unpadded + 36 newlines + 576 base
  assert.equal(anyresFeatureCount(480, 640, opts), 36 * 48 + 36 + 576);
  assert.equal(anyresFeatureCount(480, 640, { ...opts, additionalTokens: 1 }), 36 * 48 + 36 + 577);
  // square 500x500 -> 672x672, no unpadding
  assert.equal(anyresFeatureCount(500, 500, opts), 48 * 48 + 48 + 576);
  // tall 1000x300 -> 1008x336: 72 x 24 grid; width int(300 * 72 / 1000) = 21 -> padding 1 -> 22
  assert.equal(anyresFeatureCount(1000, 300, opts), 72 * 22 + 72 + 576);
});
