/**
 * Image decoding for the vision front end: JPEG, PNG, WebP and GIF (first frame) to 8-bit RGB.
 *
 * Colour conversion follows PIL's `Image.convert('RGB')`, which is what HF image processors apply
 * (`convert_rgb`): alpha is DROPPED, not composited (a transparent pixel keeps its stored colour);
 * grey is replicated to R=G=B; palette images take the palette colour of each index. For GIF this
 * means transparent pixels, and the canvas outside the first frame's rectangle, take the palette
 * colour of the transparency index (index 0 when there is none), as Pillow fills the first frame.
 *
 * Known differences from PIL (documented, not hidden):
 *  - JPEG is decoded by jpeg-js, whose IDCT/upsampling may differ from libjpeg by a level or two;
 *  - 16-bit PNGs are scaled to 8 bits by pngjs (PIL opens 16-bit RGB as the high byte, and 16-bit
 *    grey as mode I;16, whose RGB conversion clips rather than scales);
 *  - EXIF orientation is NOT applied by default, like a plain `Image.open(...).convert('RGB')`;
 *    pass `{ exifTranspose: true }` to rotate/flip JPEGs as HF's `load_image` (PIL's
 *    `ImageOps.exif_transpose`) does. Orientation in PNG eXIf / WebP EXIF chunks is not read.
 *
 * Every failure is a one-line HalfpipeError; dimensions are read from the header and checked
 * before any pixel buffer is allocated.
 */
import { readFileSync, statSync } from 'node:fs';
import jpeg from 'jpeg-js';
import pngjs from 'pngjs';
import omggif from 'omggif';
import webp from '@cwasm/webp';
import { fail } from '../core/errors.js';

/** 8-bit RGB, row-major, 3 bytes per pixel (R, G, B). */
export interface RgbImage {
  width: number;
  height: number;
  data: Uint8Array;
}

export type ImageFormat = 'jpeg' | 'png' | 'webp' | 'gif';

export const MAX_IMAGE_SIDE = 16384;
export const MAX_IMAGE_PIXELS = 2 ** 26;
/** Largest encoded image accepted from a file or data URI. */
export const MAX_IMAGE_BYTES = 256 * 1024 * 1024;

const SUPPORTED = 'supported: JPEG, PNG, WebP, GIF';

function startsWith(b: Uint8Array, sig: readonly number[], at = 0): boolean {
  if (b.length < at + sig.length) return false;
  for (let i = 0; i < sig.length; i++) if (b[at + i] !== sig[i]) return false;
  return true;
}

function ascii(s: string): number[] {
  return [...s].map((c) => c.charCodeAt(0));
}

/** Format from the magic bytes, or null. */
export function detectFormat(b: Uint8Array): ImageFormat | null {
  if (startsWith(b, [0xff, 0xd8, 0xff])) return 'jpeg';
  if (startsWith(b, [0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a])) return 'png';
  if (startsWith(b, ascii('RIFF')) && startsWith(b, ascii('WEBP'), 8)) return 'webp';
  if (startsWith(b, ascii('GIF87a')) || startsWith(b, ascii('GIF89a'))) return 'gif';
  return null;
}

/** A short description of unrecognised leading bytes, naming common formats we do not decode. */
function describeMagic(b: Uint8Array): string {
  const head = [...b.subarray(0, 8)].map((x) => x.toString(16).padStart(2, '0')).join(' ');
  let name: string | null = null;
  if (b.length === 0) return 'empty input';
  if (startsWith(b, ascii('BM'))) name = 'BMP';
  else if (startsWith(b, [0x49, 0x49, 0x2a, 0x00]) || startsWith(b, [0x4d, 0x4d, 0x00, 0x2a])) name = 'TIFF';
  else if (startsWith(b, ascii('ftyp'), 4)) {
    const brand = String.fromCharCode(...b.subarray(8, 12));
    name = /avi[fs]/.test(brand) ? 'AVIF' : /hei[cx]|mif1|msf1|hev[cx]/.test(brand) ? 'HEIF/HEIC' : `ISO-BMFF '${brand}'`;
  } else if (startsWith(b, [0x00, 0x00, 0x01, 0x00])) name = 'ICO';
  else if (startsWith(b, ascii('RIFF'))) name = 'RIFF (not WebP)';
  else if (startsWith(b, ascii('%PDF'))) name = 'PDF';
  else if (startsWith(b, ascii('<')) || startsWith(b, [0xef, 0xbb, 0xbf])) name = 'text/SVG/HTML';
  else if (startsWith(b, [0xff, 0x0a]) || startsWith(b, [0x00, 0x00, 0x00, 0x0c, 0x4a, 0x58, 0x4c, 0x20])) name = 'JPEG XL';
  return name ? `${name} (magic bytes ${head})` : `unrecognised magic bytes ${head}`;
}

function checkDims(format: string, width: number, height: number): void {
  if (!(width >= 1 && height >= 1)) fail('usage', `corrupt ${format} image: invalid size ${width}x${height}`);
  if (width > MAX_IMAGE_SIDE || height > MAX_IMAGE_SIDE || width * height > MAX_IMAGE_PIXELS) {
    fail(
      'usage',
      `${format} image ${width}x${height} is too large (max ${MAX_IMAGE_SIDE} per side and 2^26 pixels)`,
    );
  }
}

const be16 = (b: Uint8Array, i: number) => (b[i]! << 8) | b[i + 1]!;
const le16 = (b: Uint8Array, i: number) => b[i]! | (b[i + 1]! << 8);
const be32 = (b: Uint8Array, i: number) => ((b[i]! << 24) >>> 0) + ((b[i + 1]! << 16) | (b[i + 2]! << 8) | b[i + 3]!);
const le24 = (b: Uint8Array, i: number) => b[i]! | (b[i + 1]! << 8) | (b[i + 2]! << 16);

/** Width and height from the header, without decoding pixels. */
export function probeSize(b: Uint8Array, format: ImageFormat): { width: number; height: number } {
  const truncated = (): never => fail('usage', `corrupt ${format} image: truncated header`);
  switch (format) {
    case 'png': {
      if (b.length < 24) truncated();
      if (!startsWith(b, ascii('IHDR'), 12)) fail('usage', 'corrupt png image: first chunk is not IHDR');
      return { width: be32(b, 16), height: be32(b, 20) };
    }
    case 'gif': {
      if (b.length < 10) truncated();
      return { width: le16(b, 6), height: le16(b, 8) };
    }
    case 'webp': {
      if (b.length < 30) truncated();
      const chunk = String.fromCharCode(...b.subarray(12, 16));
      if (chunk === 'VP8 ') {
        if (!startsWith(b, [0x9d, 0x01, 0x2a], 23)) fail('usage', 'corrupt webp image: bad VP8 start code');
        return { width: le16(b, 26) & 0x3fff, height: le16(b, 28) & 0x3fff };
      }
      if (chunk === 'VP8L') {
        if (b[20] !== 0x2f) fail('usage', 'corrupt webp image: bad VP8L signature');
        const bits = b[21]! | (b[22]! << 8) | (b[23]! << 16) | (b[24]! << 24);
        return { width: (bits & 0x3fff) + 1, height: ((bits >>> 14) & 0x3fff) + 1 };
      }
      if (chunk === 'VP8X') {
        if ((b[20]! & 0x02) !== 0) fail('usage', 'animated WebP is not supported; supported: still WebP');
        return { width: le24(b, 24) + 1, height: le24(b, 27) + 1 };
      }
      return fail('usage', `corrupt webp image: unknown first chunk '${chunk.replace(/[^\x20-\x7e]/g, '?')}'`);
    }
    case 'jpeg': {
      let i = 2;
      while (i + 1 < b.length) {
        if (b[i] !== 0xff) fail('usage', `corrupt jpeg image: expected a marker at byte ${i}`);
        const m = b[i + 1]!;
        if (m === 0xff) {
          i++; // fill byte
          continue;
        }
        if (m === 0xd8 || m === 0x01 || (m >= 0xd0 && m <= 0xd7)) {
          i += 2;
          continue;
        }
        if (m === 0xd9 || m === 0xda) fail('usage', 'corrupt jpeg image: no frame header before scan data');
        if (i + 4 > b.length) break;
        const len = be16(b, i + 2);
        if (len < 2) fail('usage', `corrupt jpeg image: bad segment length at byte ${i}`);
        const isSof = m >= 0xc0 && m <= 0xcf && m !== 0xc4 && m !== 0xc8 && m !== 0xcc;
        if (isSof) {
          if (i + 9 > b.length) break;
          return { width: be16(b, i + 7), height: be16(b, i + 5) };
        }
        i += 2 + len;
      }
      return truncated();
    }
  }
}

function oneLine(e: unknown): string {
  const msg = e instanceof Error ? e.message : String(e);
  const line = msg.split('\n')[0]!.trim();
  return line.length > 200 ? `${line.slice(0, 200)}...` : line || 'decoder error';
}

function rgbaToRgb(rgba: ArrayLike<number>, width: number, height: number): Uint8Array {
  const n = width * height;
  if (rgba.length < n * 4) fail('usage', `decoder returned ${rgba.length} bytes for ${width}x${height} RGBA`);
  const out = new Uint8Array(n * 3);
  for (let i = 0, j = 0; i < n; i++, j += 4) {
    out[i * 3] = rgba[j]!;
    out[i * 3 + 1] = rgba[j + 1]!;
    out[i * 3 + 2] = rgba[j + 2]!;
  }
  return out;
}

function decodeJpeg(b: Uint8Array, width: number, height: number): RgbImage {
  let img: { width: number; height: number; data: Uint8Array };
  try {
    img = jpeg.decode(b, {
      useTArray: true,
      formatAsRGBA: false,
      // PIL refuses truncated JPEGs by default (LOAD_TRUNCATED_IMAGES = False); do the same.
      tolerantDecoding: false,
      maxResolutionInMP: MAX_IMAGE_PIXELS / 1e6,
      maxMemoryUsageInMB: 1024,
    });
  } catch (e) {
    return fail('usage', `corrupt jpeg image: ${oneLine(e)}`);
  }
  if (img.width !== width || img.height !== height) {
    fail('usage', `corrupt jpeg image: decoded ${img.width}x${img.height}, header says ${width}x${height}`);
  }
  // jpeg-js returns 3 bytes per pixel here for grey, RGB and CMYK sources alike.
  if (img.data.length !== width * height * 3) fail('usage', 'corrupt jpeg image: unexpected decoded length');
  return { width, height, data: new Uint8Array(img.data.buffer, img.data.byteOffset, img.data.length) };
}

function decodePng(b: Uint8Array, width: number, height: number): RgbImage {
  let png: { width: number; height: number; data: Buffer };
  try {
    png = pngjs.PNG.sync.read(Buffer.from(b.buffer, b.byteOffset, b.byteLength));
  } catch (e) {
    return fail('usage', `corrupt png image: ${oneLine(e)}`);
  }
  if (png.width !== width || png.height !== height) fail('usage', 'corrupt png image: size mismatch');
  return { width, height, data: rgbaToRgb(png.data, width, height) };
}

function decodeWebp(b: Uint8Array, width: number, height: number): RgbImage {
  let img: { width: number; height: number; data: ArrayLike<number> };
  try {
    img = webp.decode(b);
  } catch (e) {
    return fail('usage', `corrupt webp image: ${oneLine(e)}`);
  }
  if (img.width !== width || img.height !== height) {
    fail('usage', `corrupt webp image: decoded ${img.width}x${img.height}, header says ${width}x${height}`);
  }
  return { width, height, data: rgbaToRgb(img.data, width, height) };
}

function decodeGif(b: Uint8Array, width: number, height: number): RgbImage {
  let reader: InstanceType<typeof omggif.GifReader>;
  try {
    reader = new omggif.GifReader(b);
    if (reader.numFrames() < 1) throw new Error('no frames');
    const f = reader.frameInfo(0);
    // omggif allocates one byte per frame pixel before blitting; a frame may claim more than the canvas.
    if (f.width * f.height > MAX_IMAGE_PIXELS) throw new Error(`first frame ${f.width}x${f.height} is too large`);
    // Prefill with the colour Pillow gives uncovered / transparent pixels of the first frame.
    const fillIndex = f.transparent_index ?? 0;
    let fill = [0, 0, 0];
    if (f.palette_offset !== null && f.palette_size !== null && fillIndex < f.palette_size) {
      const p = f.palette_offset + fillIndex * 3;
      fill = [b[p] ?? 0, b[p + 1] ?? 0, b[p + 2] ?? 0];
    }
    const rgba = new Uint8Array(width * height * 4);
    for (let i = 0; i < rgba.length; i += 4) {
      rgba[i] = fill[0]!;
      rgba[i + 1] = fill[1]!;
      rgba[i + 2] = fill[2]!;
      rgba[i + 3] = 255;
    }
    reader.decodeAndBlitFrameRGBA(0, rgba);
    return { width, height, data: rgbaToRgb(rgba, width, height) };
  } catch (e) {
    return fail('usage', `corrupt gif image: ${oneLine(e)}`);
  }
}

/** Bytes of a `data:` URI (base64 or percent-encoded). */
function dataUriBytes(uri: string): Uint8Array {
  const comma = uri.indexOf(',');
  if (comma < 0) fail('usage', 'invalid data URI: missing comma');
  const meta = uri.slice(5, comma).toLowerCase();
  const payload = uri.slice(comma + 1);
  const mime = meta.split(';')[0]!.trim();
  if (mime !== '' && !mime.startsWith('image/')) fail('usage', `data URI has media type '${mime}', expected image/*`);
  if (meta.split(';').some((p) => p.trim() === 'base64')) {
    const clean = payload.replace(/\s+/g, '');
    if (!/^[A-Za-z0-9+/_-]*={0,2}$/.test(clean)) fail('usage', 'invalid data URI: payload is not base64');
    if ((clean.length * 3) / 4 > MAX_IMAGE_BYTES) fail('usage', 'data URI image is larger than 256 MiB');
    return Buffer.from(clean, clean.includes('-') || clean.includes('_') ? 'base64url' : 'base64');
  }
  return percentDecode(payload);
}

/** RFC 3986 percent-decoding to raw bytes (decodeURIComponent would insist on UTF-8). */
function percentDecode(s: string): Uint8Array {
  const out = new Uint8Array(s.length);
  let n = 0;
  for (let i = 0; i < s.length; i++) {
    const ch = s.charCodeAt(i);
    if (ch === 0x25) {
      const hex = s.slice(i + 1, i + 3);
      if (!/^[0-9a-fA-F]{2}$/.test(hex)) fail('usage', `invalid data URI: bad percent-encoding at ${i}`);
      out[n++] = parseInt(hex, 16);
      i += 2;
    } else {
      if (ch > 0xff) fail('usage', 'invalid data URI: non-ASCII character in payload');
      out[n++] = ch;
    }
  }
  return out.subarray(0, n);
}

function readInput(input: string | Buffer | Uint8Array): Uint8Array {
  if (typeof input !== 'string') {
    if (!(input instanceof Uint8Array)) fail('usage', 'decodeImage expects a path, a data URI, or bytes');
    return input;
  }
  if (/^data:/i.test(input)) return dataUriBytes(input);
  if (/^[a-z][a-z0-9+.-]*:\/\//i.test(input)) {
    fail('usage', `cannot read image ${JSON.stringify(input.slice(0, 100))}: URLs are not fetched; pass a file path, a data URI or bytes`);
  }
  let size: number;
  try {
    const st = statSync(input);
    if (!st.isFile()) fail('usage', `cannot read image ${JSON.stringify(input)}: not a regular file`);
    size = st.size;
  } catch (e) {
    if (e instanceof Error && e.name === 'HalfpipeError') throw e;
    const code = (e as NodeJS.ErrnoException).code ?? oneLine(e);
    return fail('usage', `cannot read image ${JSON.stringify(input)}: ${code}`);
  }
  if (size > MAX_IMAGE_BYTES) fail('usage', `image file ${JSON.stringify(input)} is larger than 256 MiB`);
  try {
    return readFileSync(input);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code ?? oneLine(e);
    return fail('usage', `cannot read image ${JSON.stringify(input)}: ${code}`);
  }
}

/** EXIF orientation (1..8) of a JPEG from its APP1 "Exif" segment; 1 when absent or unreadable. */
export function jpegExifOrientation(b: Uint8Array): number {
  let i = 2;
  while (i + 4 <= b.length && b[i] === 0xff) {
    const m = b[i + 1]!;
    if (m === 0xda || m === 0xd9) break;
    if (m === 0xd8 || m === 0x01 || (m >= 0xd0 && m <= 0xd7) || m === 0xff) {
      i += m === 0xff ? 1 : 2;
      continue;
    }
    const len = be16(b, i + 2);
    if (len < 2) break;
    const seg = i + 4;
    if (m === 0xe1 && startsWith(b, [0x45, 0x78, 0x69, 0x66, 0, 0], seg) && seg + len - 2 <= b.length) {
      return tiffOrientation(b.subarray(seg + 6, seg + len - 2));
    }
    i += 2 + len;
  }
  return 1;
}

function tiffOrientation(t: Uint8Array): number {
  if (t.length < 8) return 1;
  const le = t[0] === 0x49 && t[1] === 0x49;
  if (!le && !(t[0] === 0x4d && t[1] === 0x4d)) return 1;
  const u16 = (o: number) => (le ? le16(t, o) : be16(t, o));
  const u32 = (o: number) => (le ? (t[o]! | (t[o + 1]! << 8) | (t[o + 2]! << 16)) + t[o + 3]! * 2 ** 24 : be32(t, o));
  const ifd = u32(4);
  if (ifd + 2 > t.length) return 1;
  const n = u16(ifd);
  for (let k = 0; k < n; k++) {
    const e = ifd + 2 + k * 12;
    if (e + 12 > t.length) return 1;
    if (u16(e) === 0x0112 && u16(e + 2) === 3) {
      const v = u16(e + 8);
      return v >= 1 && v <= 8 ? v : 1;
    }
  }
  return 1;
}

/** Apply an EXIF orientation the way PIL's ImageOps.exif_transpose does. */
export function applyOrientation(img: RgbImage, orientation: number): RgbImage {
  if (orientation <= 1 || orientation > 8) return img;
  const { width: W, height: H } = img;
  const swap = orientation >= 5;
  const ow = swap ? H : W;
  const oh = swap ? W : H;
  const out = new Uint8Array(img.data.length);
  for (let y = 0; y < oh; y++) {
    for (let x = 0; x < ow; x++) {
      let sx: number;
      let sy: number;
      switch (orientation) {
        case 2: sx = W - 1 - x; sy = y; break; // FLIP_LEFT_RIGHT
        case 3: sx = W - 1 - x; sy = H - 1 - y; break; // ROTATE_180
        case 4: sx = x; sy = H - 1 - y; break; // FLIP_TOP_BOTTOM
        case 5: sx = y; sy = x; break; // TRANSPOSE
        case 6: sx = y; sy = H - 1 - x; break; // ROTATE_270 (90 degrees clockwise)
        case 7: sx = W - 1 - y; sy = H - 1 - x; break; // TRANSVERSE
        default: sx = W - 1 - y; sy = x; break; // 8: ROTATE_90 (counter-clockwise)
      }
      const s = (sy * W + sx) * 3;
      const o = (y * ow + x) * 3;
      out[o] = img.data[s]!;
      out[o + 1] = img.data[s + 1]!;
      out[o + 2] = img.data[s + 2]!;
    }
  }
  return { width: ow, height: oh, data: out };
}

export interface DecodeOptions {
  /** Rotate/flip JPEGs by their EXIF orientation (HF load_image behaviour). Default false. */
  exifTranspose?: boolean;
}

/**
 * Decode a JPEG, PNG, WebP or GIF (first frame) given as a file path, a `data:image/...;base64,`
 * URI, or raw bytes, into 8-bit RGB (alpha dropped, as PIL's convert('RGB')).
 */
export function decodeImage(input: string | Buffer | Uint8Array, opts: DecodeOptions = {}): RgbImage {
  const bytes = readInput(input);
  const format = detectFormat(bytes);
  if (format === null) fail('usage', `unsupported image format: ${describeMagic(bytes)}; ${SUPPORTED}`);
  const { width, height } = probeSize(bytes, format);
  checkDims(format, width, height);
  switch (format) {
    case 'jpeg': {
      const img = decodeJpeg(bytes, width, height);
      return opts.exifTranspose ? applyOrientation(img, jpegExifOrientation(bytes)) : img;
    }
    case 'png':
      return decodePng(bytes, width, height);
    case 'webp':
      return decodeWebp(bytes, width, height);
    case 'gif':
      return decodeGif(bytes, width, height);
  }
}
