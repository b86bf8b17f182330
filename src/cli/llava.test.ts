/** LLaVA from the command line: tiny models in HF form and as GGUF + mmproj, images, errors. */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { PNG } from 'pngjs';

const BIN = fileURLToPath(new URL('../../../bin/halfpipe.js', import.meta.url));
let dir: string;
let image: string;

before(() => {
  dir = mkdtempSync(join(tmpdir(), 'halfpipe-llava-cli-'));
  const png = new PNG({ width: 40, height: 30 });
  for (let i = 0; i < png.data.length; i += 4) png.data.set([(i * 7) % 256, (i / 4) % 200, 90, 255], i);
  image = join(dir, 'image.png');
  writeFileSync(image, PNG.sync.write(png));
});
after(() => rmSync(dir, { recursive: true, force: true }));

function halfpipe(input: string | undefined, ...args: string[]) {
  const r = spawnSync(process.execPath, [BIN, ...args], { encoding: 'utf8', input, env: { ...process.env, XDG_CACHE_HOME: join(dir, 'cache') }, timeout: 120_000 });
  return { code: r.status, out: r.stdout, err: r.stderr };
}

function oneLineError(r: { code: number | null; err: string }, pattern: RegExp) {
  assert.notEqual(r.code, 0);
  const lines = r.err.trim().split('\n');
  assert.equal(lines.length, 1, r.err);
  assert.match(lines[0]!, pattern);
}

test('generate --image on a tiny LLaVA, HF and GGUF + mmproj alike', () => {
  const hf = join(dir, 'hf');
  const gguf = join(dir, 'gguf', 'tiny-llava.gguf');
  assert.equal(halfpipe(undefined, 'tiny', '--arch', 'llava', '--out', hf, '--seed', '3').code, 0);
  assert.equal(halfpipe(undefined, 'tiny', '--arch', 'llava', '--format', 'gguf', '--out', gguf, '--seed', '3').code, 0);
  const args = ['--image', image, '--prompt', '<image>\nDescribe the image.', '--max-tokens', '6', '--temperature', '0', '--json'];
  const a = halfpipe(undefined, 'generate', '--model', hf, ...args);
  const b = halfpipe(undefined, 'generate', '--model', gguf, ...args);
  assert.equal(a.code, 0, a.err);
  assert.equal(b.code, 0, b.err);
  assert.deepEqual(JSON.parse(a.out).tokens, JSON.parse(b.out).tokens);
  // The image changes what the model says.
  const noImage = halfpipe(undefined, 'generate', '--model', hf, '--prompt', 'Describe the image.', '--max-tokens', '6', '--temperature', '0', '--json');
  assert.notDeepEqual(JSON.parse(noImage.out).tokens, JSON.parse(a.out).tokens);
  const info = halfpipe(undefined, 'info', '--model', gguf);
  assert.match(info.out, /vision tower {3}CLIP ViT: 56px images, patch 14/);
  assert.match(info.out, /projector {6}32 -> 64 \(gelu\) -> 64/);
  const next = join(dir, 'next');
  assert.equal(halfpipe(undefined, 'tiny', '--arch', 'llava-next', '--out', next, '--seed', '3').code, 0);
  const n = halfpipe(undefined, 'generate', '--model', next, ...args);
  assert.equal(n.code, 0, n.err);
  assert.match(halfpipe(undefined, 'info', '--model', next).out, /anyres grid pinpoints/);
  const chat = halfpipe(`/image ${image}\nWhat is in it?\n/exit\n`, 'chat', '--model', hf, '--max-tokens', '3', '--seed', '2');
  assert.equal(chat.code, 0, chat.err);
});

test('image errors are one clear line', () => {
  const hf = join(dir, 'hf-errors');
  assert.equal(halfpipe(undefined, 'tiny', '--arch', 'llava', '--out', hf).code, 0);
  oneLineError(halfpipe(undefined, 'generate', '--model', hf, '--image', image, '--prompt', '<image> and <image>?'), /2 .*placeholder.*1 image|1 image.*2/);
  const junk = join(dir, 'junk.png');
  writeFileSync(junk, 'not an image at all');
  oneLineError(halfpipe(undefined, 'generate', '--model', hf, '--image', junk, '--prompt', 'x'), /unsupported image format|image/);
  oneLineError(halfpipe(undefined, 'generate', '--model', hf, '--image', join(dir, 'missing.png'), '--prompt', 'x'), /missing\.png/);
  const text = join(dir, 'text');
  assert.equal(halfpipe(undefined, 'tiny', '--out', text).code, 0);
  oneLineError(halfpipe(undefined, 'generate', '--model', text, '--image', image, '--prompt', 'x'), /--image needs a LLaVA model/);
});

test('the founding failure from the command line: image-overflow under naive-f16, fixed by safe-f16', () => {
  const model = join(dir, 'stress');
  assert.equal(halfpipe(undefined, 'tiny', '--arch', 'llava', '--stress', 'image-overflow', '--out', model).code, 0);
  const prompt = ['--image', image, '--prompt', '<image>\nWhat is this?'];
  const naive = halfpipe(undefined, 'trace', '--model', model, '--policy', 'naive-f16', ...prompt);
  assert.equal(naive.code, 0, naive.err);
  assert.match(naive.out, /first bad op: down \(layer 2\), forward 1 'prefill', token \d+ \[image 0\], channel 12: inf/);
  const textOnly = halfpipe(undefined, 'trace', '--model', model, '--policy', 'naive-f16', '--prompt', 'What is this?', '--max-tokens', '2');
  assert.match(textOnly.out, /first bad op: none, all finite/);
  const safe = halfpipe(undefined, 'trace', '--model', model, '--policy', 'safe-f16', ...prompt, '--max-tokens', '2');
  assert.match(safe.out, /first bad op: none, all finite/);
});
