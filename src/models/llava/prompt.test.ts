import { test } from 'node:test';
import assert from 'node:assert/strict';
import { HalfpipeError } from '../../core/errors.js';
import { llavaConfigFromHf } from './config.js';
import { anyresGrid, nextLayout, packNextFeatures, selectBestResolution } from './next.js';
import { anyresFeatureCount } from '../../vision/preprocess.js';
import { expandAt, expandImageTokens, imageSegments, llavaImageRows } from './prompt.js';

const oneLineError = (pattern: RegExp) => (e: unknown) => e instanceof HalfpipeError && pattern.test(e.message) && !e.message.includes('\n');

const IMG = 99;

test('each <image> id becomes `rows` image ids, spans say where', () => {
  const { ids, spans } = expandImageTokens([1, 5, IMG, 6, IMG, 7], IMG, [3, 2]);
  assert.deepEqual(ids, [1, 5, IMG, IMG, IMG, 6, IMG, IMG, 7]);
  assert.deepEqual(spans, [
    { image: 0, at: 2, rows: 3 },
    { image: 1, at: 6, rows: 2 },
  ]);
});

test('LLaVA-1.5 image rows: 576 for 336/14, CLS only with the full strategy', () => {
  assert.equal(llavaImageRows(336, 14, 'default'), 576);
  assert.equal(llavaImageRows(336, 14, 'full'), 577);
  assert.equal(llavaImageRows(56, 14, 'default'), 16);
  const { ids, spans } = expandImageTokens([1, IMG, 2], IMG, [llavaImageRows(336, 14, 'default')]);
  assert.equal(ids.length, 578);
  assert.deepEqual(spans, [{ image: 0, at: 1, rows: 576 }]);
});

test('more or fewer images than placeholders: one-line errors naming both counts', () => {
  assert.throws(() => expandImageTokens([1, IMG, 2], IMG, [4, 4]), oneLineError(/1 <image> placeholder but 2 images were given/));
  assert.throws(() => expandImageTokens([1, IMG, IMG], IMG, [4]), oneLineError(/2 <image> placeholders but 1 image was given/));
  assert.throws(() => expandImageTokens([1, 2], IMG, [4]), oneLineError(/0 <image> placeholders but 1 image was given/));
  assert.throws(() => expandImageTokens([1, IMG], IMG, [0]), oneLineError(/feature rows/));
});

test('expandAt: placeholders by position (a vocabulary without <image>), real ids equal to the fill id untouched', () => {
  const { ids, spans } = expandAt([0, 5, 0, 6], [2], [3], 0);
  assert.deepEqual(ids, [0, 5, 0, 0, 0, 6]);
  assert.deepEqual(spans, [{ image: 0, at: 2, rows: 3 }]);
});

test('segments: text, image N, generated', () => {
  const seg = imageSegments([{ image: 0, at: 1, rows: 2 }, { image: 1, at: 4, rows: 1 }], 6);
  assert.deepEqual([0, 1, 2, 3, 4, 5, 6, 7].map(seg), ['text', 'image 0', 'image 0', 'text', 'image 1', 'text', 'generated', 'generated']);
});

test('llavaConfigFromHf: text and vision configs, image token, unknown architectures', () => {
  const base = {
    architectures: ['LlavaForConditionalGeneration'],
    text_config: { model_type: 'llama', hidden_size: 64, intermediate_size: 128, num_hidden_layers: 2, num_attention_heads: 4, vocab_size: 600 },
    vision_config: { hidden_size: 32, intermediate_size: 64, num_hidden_layers: 3, num_attention_heads: 2, image_size: 56, patch_size: 14 },
    image_token_index: 512,
    vision_feature_layer: -2,
  };
  const c = llavaConfigFromHf(base);
  assert.equal(c.arch, 'llava');
  assert.equal(c.text.dim, 64);
  assert.equal(c.vision.vision.nLayers, 3);
  assert.equal(c.imageTokenId, 512);
  assert.deepEqual(c.featureLayers, [-2]);
  assert.equal(c.strategy, 'default');
  assert.equal(c.next, undefined);
  const next = llavaConfigFromHf({ ...base, architectures: ['LlavaNextForConditionalGeneration'], image_grid_pinpoints: [[112, 56], [56, 112]] });
  assert.deepEqual(next.next?.gridPinpoints, [[112, 56], [56, 112]]);
  assert.throws(() => llavaConfigFromHf({ ...base, architectures: ['Qwen2VLForConditionalGeneration'] }), oneLineError(/unsupported architecture "Qwen2VLForConditionalGeneration" \(supported: LlavaForConditionalGeneration, LlavaNextForConditionalGeneration\)/));
  assert.throws(() => llavaConfigFromHf({ ...base, image_token_index: 600 }), oneLineError(/image_token_index/));
});

test('NeXT: best resolution, grid, and packed rows = HF token count', () => {
  const pins: Array<[number, number]> = [[336, 672], [672, 336], [672, 672], [1008, 336], [336, 1008]];
  assert.deepEqual(selectBestResolution(480, 640, pins), [672, 672]);
  assert.deepEqual(anyresGrid(480, 640, pins, 336), [2, 2]);
  // 640x480 with llava-v1.6 settings: a 2x2 grid of 24x24 patches is a 48x48 map; unpadding keeps
  // 480 * 48 / 640 = 36 rows; each row gets a newline; the 576 base rows come first.
  const layout = nextLayout(480, 640, pins, 336, 14);
  assert.equal(layout.rows, 36);
  assert.equal(layout.cols, 48);
  assert.equal(layout.featureRows, 576 + 36 * 49);
  // The same count as the image processor's (vision/preprocess.ts, after HF _get_number_of_features), over many sizes.
  for (const [h, w] of [[480, 640], [640, 480], [100, 1000], [1000, 100], [336, 336], [337, 901], [50, 51]] as const) {
    assert.equal(nextLayout(h, w, pins, 336, 14).featureRows, anyresFeatureCount(h, w, { gridPinpoints: pins, imageSize: 336, visionPatchSize: 14 }), `${h}x${w}`);
  }
  // Packing: rows come from the right tiles, a newline ends each row.
  const small = nextLayout(20, 40, [[28, 56]], 28, 14); // grid 1x2, side 2 -> map 2x4, no unpad
  assert.deepEqual(small.grid, [1, 2]);
  const dim = 1;
  const tiles = [Float32Array.of(0, 0, 0, 0), Float32Array.of(1, 2, 5, 6), Float32Array.of(3, 4, 7, 8)];
  assert.deepEqual([...packNextFeatures(tiles, small, Float32Array.of(-1), dim)], [0, 0, 0, 0, 1, 2, 3, 4, -1, 5, 6, 7, 8, -1]);
});
