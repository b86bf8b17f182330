import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, writeFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import fc from 'fast-check';
import jpeg from 'jpeg-js';
import pngjs from 'pngjs';
import omggif from 'omggif';
import { applyOrientation, decodeImage, detectFormat, jpegExifOrientation } from './image.js';

/** A HalfpipeError with a one-line message matching `re`. */
function oneLineError(re: RegExp) {
  return (e: unknown) => {
    assert.ok(e instanceof Error, `not an Error: ${String(e)}`);
    assert.equal(e.name, 'HalfpipeError', e.message);
    assert.ok(!e.message.includes('\n'), `multi-line message: ${e.message}`);
    assert.match(e.message, re);
    return true;
  };
}

/** 3x2 RGBA test pattern; pixel (2,1) is fully transparent but carries a colour. */
const W = 3;
const H = 2;
const RGBA = new Uint8Array([
  255, 0, 0, 255, /**/ 0, 255, 0, 255, /**/ 0, 0, 255, 255,
  10, 20, 30, 255, /**/ 128, 64, 32, 128, /**/ 200, 10, 20, 0,
]);
const RGB = [255, 0, 0, 0, 255, 0, 0, 0, 255, 10, 20, 30, 128, 64, 32, 200, 10, 20];

function encodePng(rgba: Uint8Array, w: number, h: number, opts: Record<string, unknown> = {}): Buffer {
  const png = new pngjs.PNG({ width: w, height: h });
  png.data = Buffer.from(rgba);
  return pngjs.PNG.sync.write(png, opts);
}

function encodeGif(): Buffer {
  // palette: 0 black, 1 red, 2 green, 3 "transparent" magenta
  const palette = [0x000000, 0xff0000, 0x00ff00, 0xff00ff];
  const buf = Buffer.alloc(1024);
  const gw = new omggif.GifWriter(buf, 4, 3, { palette });
  // first frame covers only the top-left 3x2; index 3 is transparent
  gw.addFrame(0, 0, 3, 2, [1, 2, 3, 2, 1, 0], { transparent: 3 });
  gw.addFrame(0, 0, 4, 3, new Array(12).fill(2)); // second frame must be ignored
  return buf.subarray(0, gw.end());
}

// Small WebP files (1x1): lossy VP8, lossless VP8L (transparent black), extended VP8X with alpha.
const WEBP_LOSSY = 'UklGRiIAAABXRUJQVlA4IBYAAAAwAQCdASoBAAEADsD+JaQAA3AAAAAA';
const WEBP_LOSSLESS = 'UklGRhoAAABXRUJQVlA4TA0AAAAvAAAAEAcQERGIiP4HAA==';
const WEBP_ALPHA =
  'UklGRkoAAABXRUJQVlA4WAoAAAAQAAAAAAAAAAAAQUxQSAwAAAARBxAR/Q9ERP8DAABWUDggGAAAABQBAJ0BKgEAAQAAAP4AAA3AAP7mtQAAAA==';

test('PNG: RGBA decodes to RGB with alpha dropped (not composited), as PIL convert("RGB")', () => {
  const img = decodeImage(encodePng(RGBA, W, H));
  assert.equal(img.width, W);
  assert.equal(img.height, H);
  assert.deepEqual([...img.data], RGB);
});

test('PNG: greyscale and RGB colour types expand to RGB', () => {
  const grey = decodeImage(encodePng(RGBA, W, H, { colorType: 0 }));
  // pngjs converts to grey on write; every pixel must be replicated R = G = B
  for (let i = 0; i < W * H; i++) {
    assert.equal(grey.data[i * 3], grey.data[i * 3 + 1]);
    assert.equal(grey.data[i * 3], grey.data[i * 3 + 2]);
  }
  const rgb = decodeImage(encodePng(RGBA, W, H, { colorType: 2 }));
  assert.equal(rgb.data.length, W * H * 3);
  assert.deepEqual([...rgb.data.subarray(0, 9)], RGB.slice(0, 9));
});

test('JPEG: flat colours and a gradient decode close to the source', () => {
  const w = 16;
  const h = 16;
  const rgba = new Uint8Array(w * h * 4);
  for (let y = 0; y < h; y++) {
    for (let x = 0; x < w; x++) {
      const i = (y * w + x) * 4;
      rgba[i] = x < 8 ? 200 : 30;
      rgba[i + 1] = 100;
      rgba[i + 2] = y * 16;
      rgba[i + 3] = 255;
    }
  }
  const bytes = jpeg.encode({ width: w, height: h, data: rgba }, 100).data;
  const img = decodeImage(bytes);
  assert.equal(img.width, w);
  assert.equal(img.height, h);
  let sum = 0;
  for (let i = 0; i < w * h; i++) {
    for (let c = 0; c < 3; c++) sum += Math.abs(img.data[i * 3 + c]! - rgba[i * 4 + c]!);
  }
  assert.ok(sum / (w * h * 3) < 4, `mean abs error ${sum / (w * h * 3)}`);
  // interior of the left block stays red-ish
  assert.ok(Math.abs(img.data[(4 * w + 3) * 3]! - 200) <= 6);
});

test('GIF: first frame only; transparent and uncovered pixels take the transparent index colour', () => {
  const img = decodeImage(encodeGif());
  assert.equal(img.width, 4);
  assert.equal(img.height, 3);
  const px = (x: number, y: number) => [...img.data.subarray((y * 4 + x) * 3, (y * 4 + x) * 3 + 3)];
  assert.deepEqual(px(0, 0), [255, 0, 0]);
  assert.deepEqual(px(1, 0), [0, 255, 0]);
  assert.deepEqual(px(2, 0), [255, 0, 255]); // transparent -> palette[3]
  assert.deepEqual(px(1, 1), [255, 0, 0]);
  assert.deepEqual(px(2, 1), [0, 0, 0]);
  assert.deepEqual(px(3, 0), [255, 0, 255]); // outside the frame rectangle
  assert.deepEqual(px(0, 2), [255, 0, 255]);
});

test('WebP: lossy, lossless and extended (alpha) files decode; alpha is dropped', () => {
  const lossy = decodeImage(Buffer.from(WEBP_LOSSY, 'base64'));
  assert.deepEqual([lossy.width, lossy.height, ...lossy.data], [1, 1, 130, 130, 130]);
  const lossless = decodeImage(Buffer.from(WEBP_LOSSLESS, 'base64'));
  assert.deepEqual([lossless.width, lossless.height, ...lossless.data], [1, 1, 0, 0, 0]);
  const alpha = decodeImage(new Uint8Array(Buffer.from(WEBP_ALPHA, 'base64')));
  assert.deepEqual([alpha.width, alpha.height], [1, 1]);
});

/**
 * A lossless WebP (VP8L) built bit by bit: no transforms, no colour cache, five "simple" prefix
 * codes: green has two symbols {0, 255} (one bit per pixel), red/blue/alpha one symbol each
 * (zero bits), distance one symbol. `greens[i]` picks 0 or 255 for pixel i.
 */
function buildVp8l(w: number, h: number, greens: number[], red: number, blue: number, alpha: number): Buffer {
  const bits: number[] = [];
  const put = (v: number, n: number) => {
    for (let i = 0; i < n; i++) bits.push((v >>> i) & 1);
  };
  put(w - 1, 14);
  put(h - 1, 14);
  put(alpha === 255 ? 0 : 1, 1); // alpha_is_used hint
  put(0, 3); // version
  put(0, 1); // no transform
  put(0, 1); // no colour cache
  put(0, 1); // no meta prefix codes
  put(1, 1), put(1, 1), put(0, 1), put(0, 1), put(255, 8); // green: simple, 2 symbols: 0 (1-bit form), 255
  for (const v of [red, blue, alpha]) put(1, 1), put(0, 1), put(1, 1), put(v, 8); // simple, 1 symbol, 8-bit form
  put(1, 1), put(0, 1), put(0, 1), put(0, 1); // distance: simple, 1 symbol, 1-bit form: 0
  for (const g of greens) put(g ? 1 : 0, 1);
  const body = [0x2f];
  for (let i = 0; i < bits.length; i += 8) {
    let b = 0;
    for (let j = 0; j < 8 && i + j < bits.length; j++) b |= bits[i + j]! << j;
    body.push(b);
  }
  const size = body.length;
  if (size % 2) body.push(0);
  const hdr = Buffer.alloc(20);
  hdr.write('RIFF', 0);
  hdr.writeUInt32LE(4 + 8 + body.length, 4);
  hdr.write('WEBP', 8);
  hdr.write('VP8L', 12);
  hdr.writeUInt32LE(size, 16);
  return Buffer.concat([hdr, Buffer.from(body)]);
}

test('WebP: a hand-built lossless image decodes pixel-exactly; alpha 0 keeps the colour', () => {
  const greens = [0, 1, 1, 0, 1, 0];
  const img = decodeImage(buildVp8l(3, 2, greens, 200, 50, 255));
  assert.deepEqual([img.width, img.height], [3, 2]);
  assert.deepEqual([...img.data], greens.flatMap((g) => [200, g ? 255 : 0, 50]));
  const transparent = decodeImage(buildVp8l(3, 2, greens, 10, 20, 0));
  assert.deepEqual([...transparent.data], greens.flatMap((g) => [10, g ? 255 : 0, 20]));
});

test('data URIs (base64 and percent-encoded) and file paths', () => {
  const png = encodePng(RGBA, W, H);
  const uri = `data:image/png;base64,${png.toString('base64')}`;
  assert.deepEqual([...decodeImage(uri).data], RGB);
  // whitespace in the payload is tolerated; the media type need not match the bytes
  const wrapped = `data:image/jpeg;base64,${png.toString('base64').replace(/(.{20})/g, '$1\n')}`;
  assert.deepEqual([...decodeImage(wrapped).data], RGB);
  const pct = `data:image/png,${[...png].map((b) => '%' + b.toString(16).padStart(2, '0')).join('')}`;
  assert.deepEqual([...decodeImage(pct).data], RGB);
  assert.throws(() => decodeImage('data:text/plain;base64,aGVsbG8='), oneLineError(/media type 'text\/plain'/));
  assert.throws(() => decodeImage('data:image/png;base64,@@@@'), oneLineError(/not base64/));
  assert.throws(() => decodeImage('data:image/png;base64'), oneLineError(/missing comma/));

  const dir = mkdtempSync(join(tmpdir(), 'halfpipe-vision-'));
  try {
    const path = join(dir, 'x.png');
    writeFileSync(path, png);
    assert.deepEqual([...decodeImage(path).data], RGB);
    assert.throws(() => decodeImage(join(dir, 'missing.png')), oneLineError(/cannot read image .*ENOENT/));
    assert.throws(() => decodeImage(dir), oneLineError(/not a regular file/));
    assert.throws(() => decodeImage('https://example.com/cat.png'), oneLineError(/URLs are not fetched/));
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('unsupported formats name what they look like and list the supported ones', () => {
  const bmp = Buffer.from('424d3a0000000000000036000000280000000100', 'hex');
  assert.throws(() => decodeImage(bmp), oneLineError(/unsupported image format: BMP \(magic bytes 42 4d .*supported: JPEG, PNG, WebP, GIF/));
  const tiff = Buffer.from('49492a0008000000', 'hex');
  assert.throws(() => decodeImage(tiff), oneLineError(/TIFF/));
  const avif = Buffer.from('0000001c6674797061766966000000', 'hex');
  assert.throws(() => decodeImage(avif), oneLineError(/AVIF/));
  assert.throws(() => decodeImage(new Uint8Array(0)), oneLineError(/empty input/));
  assert.throws(() => decodeImage(Buffer.from('hello world')), oneLineError(/unrecognised magic bytes 68 65 6c 6c/));
  assert.equal(detectFormat(Buffer.from('GIF89a')), 'gif');
});

test('corrupt and truncated images give one-line errors', () => {
  const png = encodePng(RGBA, W, H);
  const jpg = jpeg.encode({ width: 16, height: 16, data: new Uint8Array(16 * 16 * 4).fill(90) }, 90).data;
  const gif = encodeGif();
  const webpBytes = Buffer.from(WEBP_LOSSY, 'base64');
  const cases: [string, Uint8Array][] = [
    ['png header only', png.subarray(0, 20)],
    ['png truncated', png.subarray(0, png.length - 20)],
    ['png bad crc', Buffer.concat([png.subarray(0, 30), Buffer.from([png[30]! ^ 0xff]), png.subarray(31)])],
    ['jpeg truncated header', jpg.subarray(0, 10)],
    ['jpeg truncated data', jpg.subarray(0, Math.floor(jpg.length * 0.6))],
    ['gif truncated', gif.subarray(0, gif.length - 15)],
    ['gif header only', gif.subarray(0, 8)],
    ['webp truncated', webpBytes.subarray(0, 25)],
    ['webp garbage', Buffer.concat([webpBytes.subarray(0, 30), Buffer.alloc(20, 0x55)])],
  ];
  for (const [name, bytes] of cases) {
    assert.throws(() => decodeImage(bytes), oneLineError(/corrupt (png|jpeg|gif|webp) image/), name);
  }
});

test('absurd dimensions are rejected from the header, before decoding', () => {
  const png = Buffer.from(encodePng(RGBA, W, H));
  png.writeUInt32BE(20000, 16); // IHDR width (CRC now wrong: the size check must come first)
  assert.throws(() => decodeImage(png), oneLineError(/png image 20000x2 is too large/));
  const big = Buffer.from(encodePng(RGBA, W, H));
  big.writeUInt32BE(10000, 16);
  big.writeUInt32BE(10000, 20); // 1e8 pixels > 2^26
  assert.throws(() => decodeImage(big), oneLineError(/10000x10000 is too large/));
  const gif = Buffer.from(encodeGif());
  gif.writeUInt16LE(65535, 6);
  gif.writeUInt16LE(65535, 8);
  assert.throws(() => decodeImage(gif), oneLineError(/gif image 65535x65535 is too large/));
  // JPEG: SOI, SOF0 claiming 60000x60000, nothing else
  const sof = Buffer.from('ffd8ffc0000b08ea60ea60010111 00'.replace(/ /g, ''), 'hex');
  assert.throws(() => decodeImage(sof), oneLineError(/jpeg image 60000x60000 is too large/));
  // GIF whose first frame claims far more pixels than the canvas (omggif would allocate them)
  const frameBomb = Buffer.from(encodeGif());
  const desc = frameBomb.indexOf(0x2c, 13 + 4 * 3); // image descriptor after header + 4-colour palette
  frameBomb.writeUInt16LE(65535, desc + 5);
  frameBomb.writeUInt16LE(65535, desc + 7);
  assert.throws(() => decodeImage(frameBomb), oneLineError(/corrupt gif image: first frame 65535x65535 is too large/));
  const zero = Buffer.from(encodePng(RGBA, W, H));
  zero.writeUInt32BE(0, 16);
  assert.throws(() => decodeImage(zero), oneLineError(/invalid size 0x2/));
});

test('fuzz: mutated images either decode or throw a one-line HalfpipeError', () => {
  const seeds = [
    encodePng(RGBA, W, H),
    jpeg.encode({ width: 8, height: 8, data: new Uint8Array(256).fill(120) }, 80).data,
    encodeGif(),
    Buffer.from(WEBP_LOSSY, 'base64'),
    Buffer.from(WEBP_LOSSLESS, 'base64'),
    buildVp8l(3, 2, [0, 1, 1, 0, 1, 0], 200, 50, 255),
  ];
  fc.assert(
    fc.property(
      fc.integer({ min: 0, max: seeds.length - 1 }),
      fc.array(fc.tuple(fc.nat(), fc.integer({ min: 0, max: 255 })), { maxLength: 4 }),
      fc.nat(),
      (which, edits, cut) => {
        const src = seeds[which]!;
        const bytes = Buffer.from(src.subarray(0, Math.max(4, src.length - (cut % (src.length + 1)))));
        for (const [pos, val] of edits) if (bytes.length > 0) bytes[pos % bytes.length] = val;
        try {
          const img = decodeImage(bytes);
          return img.data.length === img.width * img.height * 3;
        } catch (e) {
          return e instanceof Error && e.name === 'HalfpipeError' && !e.message.includes('\n');
        }
      },
    ),
    { numRuns: 400 },
  );
});

/** APP1 Exif segment with a little- or big-endian IFD0 holding only the Orientation tag. */
function exifApp1(orientation: number, littleEndian: boolean): Buffer {
  const t = Buffer.alloc(8 + 2 + 12 + 4);
  if (littleEndian) {
    t.write('II', 0);
    t.writeUInt16LE(42, 2);
    t.writeUInt32LE(8, 4);
    t.writeUInt16LE(1, 8);
    t.writeUInt16LE(0x0112, 10);
    t.writeUInt16LE(3, 12);
    t.writeUInt32LE(1, 14);
    t.writeUInt16LE(orientation, 18);
  } else {
    t.write('MM', 0);
    t.writeUInt16BE(42, 2);
    t.writeUInt32BE(8, 4);
    t.writeUInt16BE(1, 8);
    t.writeUInt16BE(0x0112, 10);
    t.writeUInt16BE(3, 12);
    t.writeUInt32BE(1, 14);
    t.writeUInt16BE(orientation, 18);
  }
  const payload = Buffer.concat([Buffer.from('Exif\0\0', 'latin1'), t]);
  const head = Buffer.from([0xff, 0xe1, 0, 0]);
  head.writeUInt16BE(payload.length + 2, 2);
  return Buffer.concat([head, payload]);
}

test('EXIF orientation: read from JPEG APP1, applied only when asked, as PIL exif_transpose', () => {
  // 2x1 image: left red, right blue (large blocks so JPEG keeps the colours apart)
  const w = 32;
  const h = 16;
  const rgba = new Uint8Array(w * h * 4);
  for (let y = 0; y < h; y++) {
    for (let x = 0; x < w; x++) rgba.set(x < 16 ? [255, 0, 0, 255] : [0, 0, 255, 255], (y * w + x) * 4);
  }
  const plain = jpeg.encode({ width: w, height: h, data: rgba }, 95).data;
  const withExif = (o: number, le: boolean) => Buffer.concat([plain.subarray(0, 2), exifApp1(o, le), plain.subarray(2)]);
  assert.equal(jpegExifOrientation(plain), 1);
  assert.equal(jpegExifOrientation(withExif(6, true)), 6);
  assert.equal(jpegExifOrientation(withExif(8, false)), 8);
  // default: not applied
  const raw = decodeImage(withExif(6, true));
  assert.deepEqual([raw.width, raw.height], [32, 16]);
  // 6 = rotate 90 degrees clockwise: red (left) ends up on top
  const rot = decodeImage(withExif(6, true), { exifTranspose: true });
  assert.deepEqual([rot.width, rot.height], [16, 32]);
  assert.ok(rot.data[(4 * 16 + 8) * 3]! > 200 && rot.data[(4 * 16 + 8) * 3 + 2]! < 50, 'top is red');
  assert.ok(rot.data[(28 * 16 + 8) * 3 + 2]! > 200, 'bottom is blue');
  // 8 = rotate 90 counter-clockwise: blue (right) ends up on top
  const ccw = decodeImage(withExif(8, false), { exifTranspose: true });
  assert.ok(ccw.data[(4 * 16 + 8) * 3 + 2]! > 200, 'top is blue');
});

test('applyOrientation matches the eight EXIF transforms on a 3x2 pattern', () => {
  // pixel value = 10 * row + column, in the red channel
  const img = { width: 3, height: 2, data: new Uint8Array([0, 0, 0, 1, 0, 0, 2, 0, 0, 10, 0, 0, 11, 0, 0, 12, 0, 0]) };
  const red = (o: number) => {
    const r = applyOrientation(img, o);
    return { w: r.width, h: r.height, v: [...r.data].filter((_, i) => i % 3 === 0) };
  };
  assert.deepEqual(red(1), { w: 3, h: 2, v: [0, 1, 2, 10, 11, 12] });
  assert.deepEqual(red(2), { w: 3, h: 2, v: [2, 1, 0, 12, 11, 10] });
  assert.deepEqual(red(3), { w: 3, h: 2, v: [12, 11, 10, 2, 1, 0] });
  assert.deepEqual(red(4), { w: 3, h: 2, v: [10, 11, 12, 0, 1, 2] });
  assert.deepEqual(red(5), { w: 2, h: 3, v: [0, 10, 1, 11, 2, 12] });
  assert.deepEqual(red(6), { w: 2, h: 3, v: [10, 0, 11, 1, 12, 2] }); // clockwise
  assert.deepEqual(red(7), { w: 2, h: 3, v: [12, 2, 11, 1, 10, 0] });
  assert.deepEqual(red(8), { w: 2, h: 3, v: [2, 12, 1, 11, 0, 10] }); // counter-clockwise
});
