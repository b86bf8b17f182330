/**
 * Images of chat requests (image_url parts): `data:` URIs are decoded from base64 in memory; http(s)
 * URLs are fetched only when the server allows it (with a timeout and a byte limit, never following
 * more than fetch's own redirects); anything else, a local path above all, is refused. The bytes are
 * decoded to RGB here, so that a bad image is a 400 naming the part before any model work starts.
 */
import { HalfpipeError } from '../core/errors.js';
import { decodeImage, type RgbImage } from '../vision/image.js';
import { ApiError } from './openai.js';

export interface ImageFetchOptions {
  allowRemote: boolean;
  /** bytes an image may have at most (encoded) */
  maxBytes: number;
  /** milliseconds a remote fetch may take */
  timeoutMs: number;
}

export const DEFAULT_IMAGE_FETCH: Omit<ImageFetchOptions, 'allowRemote'> = { maxBytes: 20 * 1024 * 1024, timeoutMs: 10_000 };

/** The bytes of a `data:[<mime>][;base64],<data>` URI (base64 or percent-encoded). */
export function dataUriBytes(uri: string, param: string): Uint8Array {
  const comma = uri.indexOf(',');
  if (comma < 0) throw new ApiError(400, `${param}: a data URI needs a ',' before its data`, param);
  const header = uri.slice(5, comma);
  const body = uri.slice(comma + 1);
  if (/;base64$/i.test(header)) {
    const clean = body.replace(/\s+/g, '');
    if (!/^[A-Za-z0-9+/_-]*={0,2}$/.test(clean)) throw new ApiError(400, `${param}: the data URI is not valid base64`, param);
    return Buffer.from(clean, 'base64');
  }
  try {
    return Buffer.from(decodeURIComponent(body), 'latin1');
  } catch {
    throw new ApiError(400, `${param}: the data URI is not valid percent-encoding`, param);
  }
}

/** Fetches a remote image with a deadline and a size limit (the body is read in pieces and cut off). */
async function fetchBytes(url: string, opts: ImageFetchOptions, param: string): Promise<Uint8Array> {
  const abort = new AbortController();
  const timer = setTimeout(() => abort.abort(), opts.timeoutMs);
  try {
    const res = await fetch(url, { signal: abort.signal });
    if (!res.ok) throw new ApiError(400, `${param}: fetching the image gave HTTP ${res.status}`, param);
    const declared = Number(res.headers.get('content-length') ?? NaN);
    if (declared > opts.maxBytes) throw new ApiError(400, `${param}: the image is larger than ${opts.maxBytes} bytes`, param);
    if (!res.body) return new Uint8Array(0);
    const pieces: Uint8Array[] = [];
    let total = 0;
    for await (const piece of res.body as AsyncIterable<Uint8Array>) {
      total += piece.length;
      if (total > opts.maxBytes) {
        abort.abort();
        throw new ApiError(400, `${param}: the image is larger than ${opts.maxBytes} bytes`, param);
      }
      pieces.push(piece);
    }
    return Buffer.concat(pieces);
  } catch (e) {
    if (e instanceof ApiError) throw e;
    const why = abort.signal.aborted ? `no answer within ${opts.timeoutMs} ms` : e instanceof Error ? e.message : String(e);
    throw new ApiError(400, `${param}: cannot fetch the image: ${why}`, param);
  } finally {
    clearTimeout(timer);
  }
}

/** The decoded image an image_url names, or an ApiError (400) that names `param`. */
export async function loadImageUrl(url: string, opts: ImageFetchOptions, param: string): Promise<RgbImage> {
  let bytes: Uint8Array;
  if (/^data:/i.test(url)) bytes = dataUriBytes(url, param);
  else if (/^https?:\/\//i.test(url)) {
    if (!opts.allowRemote) throw new ApiError(400, `${param}: remote image URLs are disabled on this server (start it with --allow-remote-images, or send a data: URI)`, param);
    bytes = await fetchBytes(url, opts, param);
  } else throw new ApiError(400, `${param}: an image URL must be a data: URI${opts.allowRemote ? ' or an http(s) URL' : ''}`, param);
  if (bytes.length > opts.maxBytes) throw new ApiError(400, `${param}: the image is larger than ${opts.maxBytes} bytes`, param);
  try {
    // Bytes, never a string: decodeImage would read a string as a file path.
    return decodeImage(bytes);
  } catch (e) {
    if (e instanceof HalfpipeError) throw new ApiError(400, `${param}: ${e.message}`, param);
    throw new ApiError(400, `${param}: the image does not decode`, param);
  }
}
