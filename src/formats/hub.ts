/**
 * Downloads a model snapshot from the Hugging Face Hub into the standard cache, laid out exactly as
 * huggingface_hub (Python) does, so both share downloads:
 *
 *   $HF_HUB_CACHE (or $HF_HOME/hub, or ~/.cache/huggingface/hub)
 *     models--org--name/
 *       blobs/<etag>                  the file contents, named by ETag (sha256 for LFS files)
 *       blobs/<etag>.incomplete       a download in progress (resumed with Range)
 *       snapshots/<commit>/<file>     relative symlink to ../../blobs/<etag>
 *       refs/<revision>               the commit sha the revision pointed to (no newline)
 *
 * Why not @huggingface/hub (2.17.5) here: its snapshotDownload downloads every file of the repo
 * (no selection), neither of its downloaders resumes a partial download (they rewrite
 * blobs/<etag>.incomplete from scratch), there is no offline mode, it resolves ETags through the
 * POST paths-info API instead of the resolve endpoint's X-Linked-Etag, and it logs to the console.
 * It does take a custom hubUrl, but the rest would have to be rebuilt around it, so this module
 * implements the protocol on node's fetch (undici) directly, following huggingface_hub's
 * file_download.py: HEAD resolve/<commit>/<file> without following the absolute (CDN) redirect to
 * read X-Linked-Etag / X-Linked-Size, then GET the redirect target, with Authorization sent only to
 * the hub's own origin.
 */
import * as fs from 'node:fs';
import * as fsp from 'node:fs/promises';
import * as os from 'node:os';
import * as path from 'node:path';
import { MultiBar, Presets, type SingleBar } from 'cli-progress';
import { fail, HalfpipeError } from '../core/errors.js';

export const DEFAULT_ENDPOINT = 'https://huggingface.co';
export const DEFAULT_REVISION = 'main';
/** Fetched besides the weights when the repo has them. */
export const HUB_METADATA_FILES: readonly string[] = [
  'config.json',
  'generation_config.json',
  'tokenizer.json',
  'tokenizer_config.json',
  'special_tokens_map.json',
  'chat_template.jinja',
  'chat_template.json',
  'preprocessor_config.json',
];
const WEIGHTS = 'model.safetensors';
const WEIGHTS_INDEX = 'model.safetensors.index.json';
const MAX_REDIRECTS = 5;
const COMMIT_RE = /^[0-9a-f]{40}$/;

export interface HubOptions {
  /** the hub's base URL (default: $HF_ENDPOINT, else https://huggingface.co) */
  endpoint?: string;
  /** access token (default: $HF_TOKEN, $HUGGING_FACE_HUB_TOKEN, else the token file of `hf auth login`) */
  token?: string;
  /** the hub cache directory (default: $HF_HUB_CACHE, $HF_HOME/hub, ~/.cache/huggingface/hub) */
  cacheDir?: string;
  /** never touch the network; use the cache only (default: $HF_HUB_OFFLINE) */
  offline?: boolean;
  /** exactly these repo files instead of the default selection (config, tokenizer files and safetensors weights) */
  files?: readonly string[];
  /** a progress bar on stderr when it is a TTY (default true); off when onProgress is given */
  progress?: boolean;
  /** called as bytes of a file arrive; total is undefined when the size is unknown */
  onProgress?: (file: string, done: number, total: number | undefined) => void;
  /** files downloaded at once (default 4) */
  concurrency?: number;
  /** retries of a request after a network error, a dropped connection or a 5xx, resuming downloads (default 5) */
  retries?: number;
  /** delay before the first retry, doubled for each next one (default 1000 ms) */
  retryDelayMs?: number;
  signal?: AbortSignal;
  /** the environment to read HF_* variables from (default process.env) */
  env?: NodeJS.ProcessEnv;
}

// ---- repo ids, cache paths and settings --------------------------------------------------------

export interface RepoSpec {
  repo: string;
  revision: string;
}

/** Parses 'org/name' or 'org/name@revision' (revision defaults to main). */
export function parseRepoSpec(spec: string): RepoSpec {
  const at = spec.indexOf('@');
  const repo = at < 0 ? spec : spec.slice(0, at);
  const revision = at < 0 ? DEFAULT_REVISION : spec.slice(at + 1);
  if (!/^([\w.-]+\/)?[\w.-]+$/.test(repo) || repo.includes('--') || repo.includes('..') || repo.length > 96) {
    fail('usage', `invalid Hugging Face repo id '${repo}' (expected org/name, optionally @revision)`);
  }
  if (revision.length === 0 || !isSafeRelative(revision) || /[\s\x00-\x1f]/.test(revision)) {
    fail('usage', `invalid revision '${revision}' in '${spec}'`);
  }
  return { repo, revision };
}

/** A relative path that stays inside its directory: no absolute, drive or '..' parts. */
function isSafeRelative(p: string): boolean {
  if (p.length === 0 || p.startsWith('/') || p.includes('\\') || /^[a-zA-Z]:/.test(p)) return false;
  return p.split('/').every((s) => s.length > 0 && s !== '..' && s !== '.');
}

function expandUser(p: string): string {
  return p === '~' || p.startsWith('~/') ? path.join(os.homedir(), p.slice(1)) : p;
}

function hfHome(env: NodeJS.ProcessEnv): string {
  if (env.HF_HOME) return expandUser(env.HF_HOME);
  return path.join(expandUser(env.XDG_CACHE_HOME || '~/.cache'), 'huggingface');
}

/** The hub cache directory, resolved as huggingface_hub does. */
export function hubCacheDir(env: NodeJS.ProcessEnv = process.env): string {
  const explicit = env.HF_HUB_CACHE || env.HUGGINGFACE_HUB_CACHE;
  return path.resolve(explicit ? expandUser(explicit) : path.join(hfHome(env), 'hub'));
}

/** 'org/name' -> 'models--org--name' */
export function repoFolderName(repo: string): string {
  return ['models', ...repo.split('/')].join('--');
}

function isTrue(v: string | undefined): boolean {
  return v !== undefined && ['1', 'ON', 'YES', 'TRUE'].includes(v.trim().toUpperCase());
}

function tokenFrom(env: NodeJS.ProcessEnv): string | undefined {
  const fromEnv = env.HF_TOKEN || env.HUGGING_FACE_HUB_TOKEN;
  if (fromEnv) return fromEnv.trim();
  const file = env.HF_TOKEN_PATH ? expandUser(env.HF_TOKEN_PATH) : path.join(hfHome(env), 'token');
  try {
    return fs.readFileSync(file, 'utf8').trim() || undefined;
  } catch {
    return undefined;
  }
}

function exists(p: string): boolean {
  return fs.existsSync(p); // follows symlinks: a dangling snapshot link does not count
}

function pointerPath(snapshot: string, file: string): string {
  return path.join(snapshot, ...file.split('/'));
}

/**
 * The cached snapshot directory of 'org/name[@revision]' (refs/<revision> resolved, or a commit
 * sha), or undefined when it is not in the cache. Touches no network and checks no files.
 */
export function cachedSnapshotDir(spec: string, opts: Pick<HubOptions, 'cacheDir' | 'env'> = {}): string | undefined {
  const { repo, revision } = parseRepoSpec(spec);
  const storage = path.join(opts.cacheDir ?? hubCacheDir(opts.env ?? process.env), repoFolderName(repo));
  let commit = revision;
  if (!COMMIT_RE.test(revision)) {
    try {
      commit = fs.readFileSync(path.join(storage, 'refs', ...revision.split('/')), 'utf8').trim();
    } catch {
      return undefined;
    }
    if (!COMMIT_RE.test(commit)) return undefined;
  }
  const dir = path.join(storage, 'snapshots', commit);
  return fs.existsSync(dir) ? dir : undefined;
}

/** The files of the default selection a cached snapshot lacks (or of `files` when given). */
function missingFromSnapshot(dir: string, files: readonly string[] | undefined): string[] {
  if (files) return files.filter((f) => !exists(pointerPath(dir, f)));
  const missing: string[] = [];
  if (!exists(path.join(dir, 'config.json'))) missing.push('config.json');
  if (exists(path.join(dir, WEIGHTS))) return missing;
  const index = path.join(dir, WEIGHTS_INDEX);
  if (!exists(index)) return [...missing, `${WEIGHTS} or ${WEIGHTS_INDEX}`];
  return [...missing, ...shardsOf(index).filter((s) => !exists(pointerPath(dir, s)))];
}

/** The distinct shard files a model.safetensors.index.json names. */
function shardsOf(indexFile: string): string[] {
  let json: unknown;
  try {
    json = JSON.parse(fs.readFileSync(indexFile, 'utf8'));
  } catch (e) {
    return fail('config', `invalid JSON in ${indexFile}: ${e instanceof Error ? e.message : String(e)}`);
  }
  const map = (json as { weight_map?: unknown } | null)?.weight_map;
  if (typeof map !== 'object' || map === null || Array.isArray(map)) fail('config', `${indexFile}: weight_map must be an object of tensor name -> shard file`);
  const shards = new Set<string>();
  for (const [name, shard] of Object.entries(map)) {
    if (typeof shard !== 'string' || !isSafeRelative(shard)) fail('config', `${indexFile}: weight_map['${name}'] must be a relative file name, got ${JSON.stringify(shard)}`);
    shards.add(shard);
  }
  if (shards.size === 0) fail('config', `${indexFile}: weight_map lists no shards`);
  return [...shards];
}

// ---- HTTP --------------------------------------------------------------------------------------

/** A failure worth retrying: network errors, dropped connections, 5xx, 429. */
class TransientError extends Error {}

function causeOf(e: unknown): string {
  const cause = (e as { cause?: unknown })?.cause;
  const c = (cause ?? e) as { code?: string; message?: string };
  return c?.code ?? c?.message ?? String(e);
}

function isAbort(e: unknown): boolean {
  return (e as { name?: string })?.name === 'AbortError';
}

function normalizeEtag(v: string | null): string | undefined {
  if (!v) return undefined;
  return v.trim().replace(/^W\//, '').replace(/^"|"$/g, '') || undefined;
}

function intHeader(v: string | null): number | undefined {
  if (v === null || !/^\d+$/.test(v.trim())) return undefined;
  const n = Number(v.trim());
  return Number.isSafeInteger(n) ? n : undefined;
}

function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) return reject(signal.reason);
    const t = setTimeout(() => {
      signal?.removeEventListener('abort', onAbort);
      resolve();
    }, ms);
    const onAbort = () => {
      clearTimeout(t);
      reject(signal!.reason);
    };
    signal?.addEventListener('abort', onAbort, { once: true });
  });
}

interface Context {
  repo: string;
  revision: string;
  endpoint: string;
  file?: string;
}

function originOf(endpoint: string): string {
  try {
    return new URL(endpoint).origin;
  } catch {
    return fail('usage', `invalid hub endpoint '${endpoint}'`);
  }
}

class HubHttp {
  private readonly origin: string;

  constructor(
    readonly endpoint: string,
    private readonly token: string | undefined,
    private readonly retries: number,
    private readonly retryDelayMs: number,
    readonly signal: AbortSignal | undefined,
  ) {
    this.origin = originOf(endpoint);
  }

  get hasToken(): boolean {
    return this.token !== undefined;
  }

  /**
   * One request, following redirects by hand (at most 5): all of them, or with followAbsolute
   * false only relative ones (the hub's renamed-repo redirects), returning an absolute redirect
   * (to the LFS CDN) as is. The token goes to the hub's own origin only.
   */
  async send(url: string, method: 'GET' | 'HEAD', extra: Record<string, string>, followAbsolute: boolean): Promise<{ res: Response; url: string }> {
    let current = new URL(url);
    for (let hop = 0; ; hop++) {
      const headers: Record<string, string> = { 'User-Agent': 'halfpipe (node)', 'Accept-Encoding': 'identity', ...extra };
      if (this.token && current.origin === this.origin) headers.Authorization = `Bearer ${this.token}`;
      let res: Response;
      try {
        res = await fetch(current, { method, headers, redirect: 'manual', ...(this.signal && { signal: this.signal }) });
      } catch (e) {
        if (isAbort(e)) throw e;
        throw new TransientError(`network error on ${method} ${current.href}: ${causeOf(e)}`);
      }
      const location = res.headers.get('location');
      if (res.status >= 300 && res.status < 400 && location) {
        const absolute = /^[a-z][a-z0-9+.-]*:|^\/\//i.test(location);
        if (absolute && !followAbsolute) return { res, url: current.href };
        await res.body?.cancel().catch(() => undefined);
        if (hop >= MAX_REDIRECTS) fail('config', `more than ${MAX_REDIRECTS} redirects starting at ${url}`);
        current = new URL(location, current);
        continue;
      }
      return { res, url: current.href };
    }
  }

  /** Runs fn, retrying transient failures with exponential backoff; the last one becomes a HalfpipeError. */
  async retrying<T>(fn: () => Promise<T>): Promise<T> {
    for (let attempt = 0; ; attempt++) {
      try {
        return await fn();
      } catch (e) {
        if (!(e instanceof TransientError)) throw e;
        if (attempt >= this.retries) throw new HalfpipeError('config', `${e.message}${attempt > 0 ? ` (gave up after ${attempt + 1} attempts)` : ''}`);
        await sleep(Math.min(this.retryDelayMs * 2 ** attempt, 30_000), this.signal);
      }
    }
  }

  /** Throws the error an unsuccessful response means. */
  async failure(res: Response, url: string, ctx: Context): Promise<never> {
    let message = res.headers.get('x-error-message') ?? '';
    const code = res.headers.get('x-error-code') ?? '';
    if (!message) {
      try {
        const text = (await res.text()).slice(0, 500);
        try {
          const j = JSON.parse(text) as { error?: unknown };
          message = typeof j.error === 'string' ? j.error : text;
        } catch {
          message = text;
        }
      } catch {
        // no body
      }
    } else {
      await res.body?.cancel().catch(() => undefined);
    }
    message = message.replace(/\s+/g, ' ').trim();
    const status = res.status;
    const what = `${ctx.repo}@${ctx.revision}`;
    const detail = `HTTP ${status} from ${url}${message ? `: ${message}` : ''}`;
    if (status >= 500 || status === 429) throw new TransientError(detail);
    const privateNote = 'if it is private or gated, set HF_TOKEN to a token with access';
    if (code === 'RepoNotFound') fail('config', `repository ${ctx.repo} not found at ${ctx.endpoint} (${detail}); ${privateNote}`);
    if (code === 'RevisionNotFound') fail('config', `revision '${ctx.revision}' not found in ${ctx.repo} (${detail})`);
    if (status === 404 && !ctx.file) fail('config', `repository ${ctx.repo} or its revision '${ctx.revision}' not found at ${ctx.endpoint} (${detail}); ${privateNote}`);
    if (status === 401 || status === 403 || code === 'GatedRepo') {
      const tokenNote = this.hasToken ? 'the token sent was refused: check HF_TOKEN' : 'no token was sent: set HF_TOKEN to a token with access';
      fail('config', `access to ${what} denied, it is gated or private (${detail}); ${tokenNote}`);
    }
    if (status === 404) fail('config', `${ctx.file ?? 'file'} not found in ${what} (${detail})`);
    return fail('config', `${ctx.file ? `${ctx.file} of ${what}` : what}: ${detail}`);
  }
}

// ---- progress ----------------------------------------------------------------------------------

function formatBytes(n: number): string {
  if (n < 1024) return `${n} B`;
  const units = ['KiB', 'MiB', 'GiB', 'TiB'];
  let v = n / 1024;
  let u = 0;
  while (v >= 1024 && u < units.length - 1) {
    v /= 1024;
    u++;
  }
  return `${v.toFixed(v < 10 ? 2 : 1)} ${units[u]}`;
}

class Progress {
  private multibar: MultiBar | undefined;
  private readonly bars = new Map<string, SingleBar>();

  constructor(
    show: boolean,
    private readonly callback: HubOptions['onProgress'],
  ) {
    if (show) {
      this.multibar = new MultiBar(
        { stream: process.stderr, format: ' {bar} {percentage}% | {bytes} | {file}', hideCursor: true, clearOnComplete: false, barsize: 30 },
        Presets.shades_classic,
      );
    }
  }

  update(file: string, done: number, total: number | undefined): void {
    this.callback?.(file, done, total);
    if (!this.multibar) return;
    const payload = { file, bytes: `${formatBytes(done)}${total !== undefined ? ` / ${formatBytes(total)}` : ''}` };
    let bar = this.bars.get(file);
    if (!bar) {
      bar = this.multibar.create(total ?? 0, done, payload);
      this.bars.set(file, bar);
    } else {
      if (total !== undefined && bar.getTotal() !== total) bar.setTotal(total);
      bar.update(done, payload);
    }
  }

  stop(): void {
    this.multibar?.stop();
    this.multibar = undefined;
  }
}

// ---- download ----------------------------------------------------------------------------------

interface Run {
  http: HubHttp;
  ctx: Context;
  commit: string;
  storage: string;
  snapshot: string;
  progress: Progress;
  /** blob downloads in flight, by etag: two files with the same content share one download */
  blobs: Map<string, Promise<void>>;
}

function encodePath(file: string): string {
  return file.split('/').map(encodeURIComponent).join('/');
}

/** Puts `file` into the snapshot: skipped when linked already, the blob reused when present. */
async function fetchFile(run: Run, file: string): Promise<void> {
  if (!isSafeRelative(file)) fail('config', `refusing repo file name '${file}': it leaves the snapshot directory`);
  const pointer = pointerPath(run.snapshot, file);
  if (exists(pointer)) return;
  const ctx = { ...run.ctx, file };
  const resolveUrl = `${run.http.endpoint}/${run.ctx.repo}/resolve/${run.commit}/${encodePath(file)}`;
  const meta = await run.http.retrying(async () => {
    const { res, url } = await run.http.send(resolveUrl, 'HEAD', {}, false);
    await res.body?.cancel().catch(() => undefined);
    const redirect = res.status >= 300 && res.status < 400 && res.headers.has('location');
    if (!res.ok && !redirect) await run.http.failure(res, url, ctx);
    const etag = normalizeEtag(res.headers.get('x-linked-etag') ?? res.headers.get('etag'));
    if (!etag) fail('config', `${url} answered without an ETag: is ${run.http.endpoint} a Hugging Face hub?`);
    if (!/^[\w-]+$/.test(etag)) fail('config', `${url} answered with an unusable ETag '${etag}'`);
    const commit = res.headers.get('x-repo-commit');
    if (commit && commit !== run.commit) fail('config', `${url} served commit ${commit}, expected ${run.commit}`);
    const size = intHeader(res.headers.get('x-linked-size')) ?? (redirect ? undefined : intHeader(res.headers.get('content-length')));
    const location = redirect ? new URL(res.headers.get('location')!, url).href : url;
    return { etag, size, location };
  });
  const blob = path.join(run.storage, 'blobs', meta.etag);
  if (!exists(blob)) {
    let pending = run.blobs.get(meta.etag);
    if (!pending) {
      pending = downloadBlob(run, ctx, meta.location, blob, meta.size);
      run.blobs.set(meta.etag, pending);
    }
    await pending;
  }
  await linkIntoSnapshot(pointer, blob);
}

/** Downloads to blob + '.incomplete', resuming what is there with a Range request, then renames. */
async function downloadBlob(run: Run, ctx: Context & { file: string }, location: string, blob: string, size: number | undefined): Promise<void> {
  await fsp.mkdir(path.dirname(blob), { recursive: true });
  const partial = `${blob}.incomplete`;
  await run.http.retrying(async () => {
    let have = 0;
    try {
      have = (await fsp.stat(partial)).size;
    } catch {
      // nothing to resume
    }
    if (size !== undefined && have > size) {
      await fsp.rm(partial, { force: true }); // not a prefix of this file
      have = 0;
    }
    if (size !== undefined && have === size && have > 0) return;
    const { res, url } = await run.http.send(location, 'GET', have > 0 ? { Range: `bytes=${have}-` } : {}, true);
    if (res.status === 416) {
      await res.body?.cancel().catch(() => undefined);
      await fsp.rm(partial, { force: true });
      throw new TransientError(`${url} cannot resume ${ctx.file} at byte ${have} (HTTP 416); restarting it`);
    }
    if (!res.ok) await run.http.failure(res, url, ctx);
    let append = false;
    if (res.status === 206) {
      const range = /^bytes (\d+)-\d+\/(?:\d+|\*)$/.exec(res.headers.get('content-range') ?? '');
      if (!range || Number(range[1]) !== have) {
        await res.body?.cancel().catch(() => undefined);
        await fsp.rm(partial, { force: true });
        throw new TransientError(`${url} answered a resume at byte ${have} with Content-Range '${res.headers.get('content-range')}'; restarting ${ctx.file}`);
      }
      append = true;
    } // a 200 ignored the Range: start over
    let done = append ? have : 0;
    const length = intHeader(res.headers.get('content-length'));
    const total = size ?? (length !== undefined ? done + length : undefined);
    const fh = await fsp.open(partial, append ? 'a' : 'w');
    try {
      run.progress.update(ctx.file, done, total);
      if (res.body) {
        for await (const chunk of res.body as AsyncIterable<Uint8Array>) {
          await fh.write(chunk);
          done += chunk.length;
          run.progress.update(ctx.file, done, total);
        }
      }
    } catch (e) {
      if (isAbort(e)) throw e;
      throw new TransientError(`connection lost downloading ${ctx.file} of ${ctx.repo} after ${done} bytes: ${causeOf(e)}`);
    } finally {
      await fh.close();
    }
    if (total !== undefined && done < total) throw new TransientError(`download of ${ctx.file} of ${ctx.repo} ended after ${done} of ${total} bytes`);
    if (total !== undefined && done > total) {
      await fsp.rm(partial, { force: true });
      fail('config', `download of ${ctx.file} of ${ctx.repo} from ${url} gave ${done} bytes, expected ${total}`);
    }
  });
  await fsp.rename(partial, blob);
}

async function linkIntoSnapshot(pointer: string, blob: string): Promise<void> {
  await fsp.mkdir(path.dirname(pointer), { recursive: true });
  await fsp.rm(pointer, { force: true }); // a dangling link from an earlier, cleaned-up blob
  try {
    await fsp.symlink(path.relative(path.dirname(pointer), blob), pointer);
  } catch {
    await fsp.copyFile(blob, pointer); // no symlinks here (e.g. Windows without developer mode)
  }
}

async function pool<T>(items: readonly T[], concurrency: number, fn: (item: T) => Promise<void>): Promise<void> {
  let next = 0;
  let failure: unknown;
  const worker = async () => {
    while (failure === undefined && next < items.length) {
      const item = items[next++]!;
      try {
        await fn(item);
      } catch (e) {
        failure ??= e;
      }
    }
  };
  await Promise.all(Array.from({ length: Math.max(1, Math.min(concurrency, items.length)) }, worker));
  if (failure !== undefined) throw failure;
}

/**
 * Downloads `org/name[@revision]` (revision defaults to main) into the hub cache and returns the
 * local snapshot directory. By default it fetches the metadata files the repo has (config,
 * generation config, tokenizer files, chat template, preprocessor config) and the safetensors
 * weights: model.safetensors, or model.safetensors.index.json and every shard it names; opts.files
 * replaces this selection. Files already in the snapshot are not requested, blobs already in the
 * cache are not downloaded again, partial downloads are resumed. Offline ($HF_HUB_OFFLINE or
 * opts.offline), the cached snapshot is returned without any network access.
 */
export async function snapshotDownload(repoIdWithRevision: string, opts: HubOptions = {}): Promise<string> {
  const { repo, revision } = parseRepoSpec(repoIdWithRevision);
  const env = opts.env ?? process.env;
  const cacheDir = opts.cacheDir ? path.resolve(opts.cacheDir) : hubCacheDir(env);
  const storage = path.join(cacheDir, repoFolderName(repo));
  const files = opts.files ? [...new Set(opts.files)] : undefined;
  for (const f of files ?? []) if (!isSafeRelative(f)) fail('usage', `invalid repo file name '${f}'`);
  const spec = `${repo}@${revision}`;

  if (opts.offline ?? isTrue(env.HF_HUB_OFFLINE ?? env.TRANSFORMERS_OFFLINE)) {
    const dir = cachedSnapshotDir(spec, { cacheDir });
    if (!dir) fail('config', `${spec} is not in the Hugging Face cache (${storage}) and offline mode (HF_HUB_OFFLINE) is on: download it once online first`);
    const missing = missingFromSnapshot(dir, files);
    if (missing.length > 0) fail('config', `the cached snapshot ${dir} of ${spec} lacks ${missing.join(', ')} and offline mode (HF_HUB_OFFLINE) is on`);
    return dir;
  }

  const endpoint = (opts.endpoint ?? env.HF_ENDPOINT ?? DEFAULT_ENDPOINT).replace(/\/+$/, '');
  const http = new HubHttp(endpoint, opts.token ?? tokenFrom(env), opts.retries ?? 5, opts.retryDelayMs ?? 1000, opts.signal);
  const ctx: Context = { repo, revision, endpoint };

  // 1. the commit and the file list
  const apiUrl = `${endpoint}/api/models/${repo}/revision/${encodeURIComponent(revision)}`;
  let info: { sha?: unknown; siblings?: unknown };
  try {
    info = await http.retrying(async () => {
      const { res, url } = await http.send(apiUrl, 'GET', { Accept: 'application/json' }, true);
      if (!res.ok) await http.failure(res, url, ctx);
      let text: string;
      try {
        text = await res.text();
      } catch (e) {
        throw new TransientError(`connection lost reading ${url}: ${causeOf(e)}`);
      }
      try {
        return JSON.parse(text) as { sha?: unknown; siblings?: unknown };
      } catch {
        return fail('config', `invalid JSON from ${url}: is ${endpoint} a Hugging Face hub?`);
      }
    });
  } catch (e) {
    if (e instanceof HalfpipeError && /network error|connection lost|HTTP 5\d\d/.test(e.message) && cachedSnapshotDir(spec, { cacheDir })) {
      throw new HalfpipeError('config', `${e.message}; ${spec} is in the cache: set HF_HUB_OFFLINE=1 to use it without the network`);
    }
    throw e;
  }
  const commit = info.sha;
  if (typeof commit !== 'string' || !COMMIT_RE.test(commit)) fail('config', `${apiUrl} gave no commit sha: is ${endpoint} a Hugging Face hub?`);
  if (!Array.isArray(info.siblings)) fail('config', `${apiUrl} gave no file list`);
  const siblings = new Set(info.siblings.map((s) => (s as { rfilename?: unknown })?.rfilename).filter((f): f is string => typeof f === 'string'));

  const snapshot = path.join(storage, 'snapshots', commit);
  const show = opts.progress !== false && !opts.onProgress && process.stderr.isTTY === true;
  const run: Run = { http, ctx, commit, storage, snapshot, progress: new Progress(show, opts.onProgress), blobs: new Map() };
  const concurrency = opts.concurrency ?? 4;
  const listed = (names: Iterable<string>) => {
    const all = [...names];
    return all.slice(0, 8).join(', ') + (all.length > 8 ? ', ...' : '');
  };

  try {
    // 2. the selection
    let selected: string[];
    if (files) {
      const absent = files.filter((f) => !siblings.has(f));
      if (absent.length > 0) fail('config', `${spec} has no ${absent.join(', ')} (it has ${listed(siblings)})`);
      selected = files;
    } else {
      if (!siblings.has('config.json')) fail('config', `${spec} has no config.json: not a transformers model repo (it has ${listed(siblings)}); pass the files to download explicitly`);
      selected = HUB_METADATA_FILES.filter((f) => siblings.has(f));
      if (siblings.has(WEIGHTS)) selected.push(WEIGHTS);
      else if (siblings.has(WEIGHTS_INDEX)) {
        await fetchFile(run, WEIGHTS_INDEX);
        const shards = shardsOf(pointerPath(snapshot, WEIGHTS_INDEX));
        const absent = shards.filter((s) => !siblings.has(s));
        if (absent.length > 0) fail('config', `${WEIGHTS_INDEX} of ${spec} names shards the repo does not have: ${absent.join(', ')}`);
        selected.push(WEIGHTS_INDEX, ...shards);
      } else {
        const other = [...siblings].filter((f) => /\.(safetensors|bin|pth|pt|gguf|ckpt|h5|msgpack)$/.test(f));
        fail(
          'config',
          `${spec} has no ${WEIGHTS} or ${WEIGHTS_INDEX}` +
            (other.length > 0 ? ` (it has ${listed(other)}); pass opts.files to download other files explicitly` : ''),
        );
      }
    }
    // 3. the files
    await pool(selected, concurrency, (f) => fetchFile(run, f));
  } finally {
    run.progress.stop();
  }

  // 4. the ref, once the snapshot is complete (an older complete snapshot stays reachable until then)
  if (revision !== commit) {
    const ref = path.join(storage, 'refs', ...revision.split('/'));
    let current: string | undefined;
    try {
      current = fs.readFileSync(ref, 'utf8');
    } catch {
      // no ref yet
    }
    if (current !== commit) {
      await fsp.mkdir(path.dirname(ref), { recursive: true });
      await fsp.writeFile(ref, commit);
    }
  }
  if (!exists(snapshot)) await fsp.mkdir(snapshot, { recursive: true });
  return snapshot;
}
