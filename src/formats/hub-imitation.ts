/**
 * A test imitation of the Hugging Face Hub's download endpoints, on 127.0.0.1 (random ports), for
 * in-memory repos. Two servers, as in production: the hub (API and `resolve`) and an LFS storage
 * "CDN" on another origin that large files are 302-redirected to.
 *
 *   GET  /api/models/{repo}/revision/{revision}  -> { id, sha, siblings: [{ rfilename }] }
 *   HEAD|GET /{repo}/resolve/{revision}/{file}   -> small files: 200 with ETag (git blob sha1, weak)
 *                                                   LFS files: 302 to the CDN with X-Linked-Etag
 *                                                   (sha256), X-Linked-Size
 *                                                   both: X-Repo-Commit
 *   HEAD|GET {cdn}/lfs/{sha256}?sig=...           -> the bytes (own ETag, Range support)
 *
 * Errors carry X-Error-Code / X-Error-Message like the hub (RepoNotFound, RevisionNotFound,
 * EntryNotFound, GatedRepo). Every request is logged; faults can be injected: drop the connection
 * after K bytes of a file's content, answer Range requests with a full 200.
 */
import { createHash } from 'node:crypto';
import * as http from 'node:http';
import type { AddressInfo } from 'node:net';

export type ImitationFiles = Record<string, string | Uint8Array>;

export interface ImitationRepo {
  /** 'org/name' */
  id: string;
  /** the commit sha of `main` (40 hex digits; see fakeCommit) */
  commit: string;
  /** the files of `main` */
  files: ImitationFiles;
  /** other branches or tags: name -> snapshot */
  revisions?: Record<string, { commit: string; files: ImitationFiles }>;
  /** when set, every request for this repo needs `Authorization: Bearer <token>` (401 without one, 403 with another) */
  token?: string;
}

export interface HubImitationOptions {
  repos: ImitationRepo[];
  /** files of at least this many bytes are stored in LFS and redirected to the CDN (default 64) */
  lfsThreshold?: number;
}

export interface ImitationRequest {
  server: 'hub' | 'cdn';
  method: string;
  /** path and query as received */
  url: string;
  kind: 'api' | 'resolve' | 'lfs' | 'other';
  /** the repo file the request is about (resolve and lfs) */
  file?: string;
  status: number;
  range?: string;
  authorization?: string;
}

/** A deterministic 40-hex-digit commit sha. */
export function fakeCommit(seed: string): string {
  return createHash('sha1').update(`commit ${seed}`).digest('hex');
}

/** The git blob id of some bytes (what the hub sends as the ETag of a non-LFS file). */
export function gitBlobSha1(bytes: Uint8Array): string {
  return createHash('sha1').update(`blob ${bytes.length}\0`).update(bytes).digest('hex');
}

export function sha256Hex(bytes: Uint8Array): string {
  return createHash('sha256').update(bytes).digest('hex');
}

interface Snapshot {
  repo: ImitationRepo;
  commit: string;
  files: Map<string, Uint8Array>;
}

interface Drop {
  file: string;
  bytes: number;
  times: number;
}

function toBytes(v: string | Uint8Array): Uint8Array {
  return typeof v === 'string' ? new TextEncoder().encode(v) : v;
}

function listen(server: http.Server): Promise<string> {
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => resolve(`http://127.0.0.1:${(server.address() as AddressInfo).port}`));
  });
}

export class HubImitation {
  /** every request received, in order */
  readonly requests: ImitationRequest[] = [];
  /** answer Range requests with a full 200 (as some servers do) */
  ignoreRange = false;
  /** renamed repos, old id -> new id: requests for the old id get a relative 307 to the new one, as on the hub */
  readonly renamed = new Map<string, string>();

  private readonly repos = new Map<string, ImitationRepo>();
  private readonly lfs = new Map<string, { bytes: Uint8Array; file: string }>();
  private readonly drops: Drop[] = [];
  private readonly lfsThreshold: number;

  private constructor(
    readonly endpoint: string,
    readonly cdn: string,
    private readonly hubServer: http.Server,
    private readonly cdnServer: http.Server,
    opts: HubImitationOptions,
  ) {
    this.lfsThreshold = opts.lfsThreshold ?? 64;
    for (const repo of opts.repos) this.setRepo(repo);
  }

  static async start(opts: HubImitationOptions): Promise<HubImitation> {
    const hubServer = http.createServer();
    const cdnServer = http.createServer();
    const [endpoint, cdn] = await Promise.all([listen(hubServer), listen(cdnServer)]);
    const hub = new HubImitation(endpoint, cdn, hubServer, cdnServer, opts);
    hubServer.on('request', (req, res) => hub.handle('hub', req, res));
    cdnServer.on('request', (req, res) => hub.handle('cdn', req, res));
    return hub;
  }

  /** Adds or replaces a repo (e.g. to move `main` to a new commit). */
  setRepo(repo: ImitationRepo): void {
    this.repos.set(repo.id, repo);
    const all = [repo.files, ...Object.values(repo.revisions ?? {}).map((r) => r.files)];
    for (const files of all) {
      for (const [file, content] of Object.entries(files)) {
        const bytes = toBytes(content);
        if (this.isLfs(bytes)) this.lfs.set(sha256Hex(bytes), { bytes, file });
      }
    }
  }

  /** The next `times` GETs of `file`'s content send `bytes` bytes, then drop the connection. */
  dropAfter(file: string, bytes: number, times = 1): void {
    this.drops.push({ file, bytes, times });
  }

  /** Requests for file content or metadata (resolve and CDN), excluding the API listing. */
  fileRequests(): ImitationRequest[] {
    return this.requests.filter((r) => r.kind === 'resolve' || r.kind === 'lfs');
  }

  isLfs(bytes: Uint8Array): boolean {
    return bytes.length >= this.lfsThreshold;
  }

  async close(): Promise<void> {
    for (const s of [this.hubServer, this.cdnServer]) {
      s.closeAllConnections();
      await new Promise<void>((resolve) => s.close(() => resolve()));
    }
  }

  private snapshot(repo: ImitationRepo, revision: string): Snapshot | undefined {
    const mk = (commit: string, files: ImitationFiles): Snapshot => ({
      repo,
      commit,
      files: new Map(Object.entries(files).map(([f, c]) => [f, toBytes(c)])),
    });
    if (revision === 'main' || revision === repo.commit) return mk(repo.commit, repo.files);
    for (const [name, r] of Object.entries(repo.revisions ?? {})) if (revision === name || revision === r.commit) return mk(r.commit, r.files);
    return undefined;
  }

  private handle(server: 'hub' | 'cdn', req: http.IncomingMessage, res: http.ServerResponse): void {
    const record: ImitationRequest = { server, method: req.method ?? 'GET', url: req.url ?? '/', kind: 'other', status: 0 };
    if (req.headers.range) record.range = req.headers.range;
    if (req.headers.authorization) record.authorization = req.headers.authorization;
    this.requests.push(record);
    res.on('finish', () => (record.status = res.statusCode));
    res.on('close', () => (record.status ||= res.statusCode));
    try {
      if (server === 'cdn') this.serveCdn(record, req, res);
      else this.serveHub(record, req, res);
    } catch (e) {
      this.error(res, 500, 'InternalError', String(e));
    }
  }

  private error(res: http.ServerResponse, status: number, code: string | undefined, message: string): void {
    const headers: http.OutgoingHttpHeaders = { 'Content-Type': 'application/json', 'X-Error-Message': message };
    if (code) headers['X-Error-Code'] = code;
    res.writeHead(status, headers).end(JSON.stringify({ error: message }));
  }

  /** The repo a request names, after its auth check; undefined when an error was sent. */
  private repoFor(id: string, req: http.IncomingMessage, res: http.ServerResponse): ImitationRepo | undefined {
    const repo = this.repos.get(id);
    if (!repo) {
      this.error(res, 404, 'RepoNotFound', `Repository not found: ${id}`);
      return undefined;
    }
    if (repo.token !== undefined) {
      const auth = req.headers.authorization;
      if (!auth) {
        this.error(res, 401, 'GatedRepo', `Access to model ${id} is restricted. You must have access to it and be authenticated to access it. Please log in.`);
        return undefined;
      }
      if (auth !== `Bearer ${repo.token}`) {
        this.error(res, 403, 'GatedRepo', `Access to model ${id} is restricted and you are not in the authorized list.`);
        return undefined;
      }
    }
    return repo;
  }

  private serveHub(record: ImitationRequest, req: http.IncomingMessage, res: http.ServerResponse): void {
    const url = new URL(req.url ?? '/', this.endpoint);
    const parts = url.pathname.split('/').slice(1).map(decodeURIComponent);
    // /api/models/{org}/{name}/revision/{revision}
    if (parts[0] === 'api' && parts[1] === 'models' && parts[4] === 'revision' && parts.length === 6) {
      record.kind = 'api';
      const id = `${parts[2]}/${parts[3]}`;
      const renamed = this.renamed.get(id);
      if (renamed) {
        res.writeHead(307, { Location: `/api/models/${renamed}/revision/${encodeURIComponent(parts[5]!)}` }).end();
        return;
      }
      const repo = this.repoFor(id, req, res);
      if (!repo) return;
      const snap = this.snapshot(repo, parts[5]!);
      if (!snap) return this.error(res, 404, 'RevisionNotFound', `Invalid rev id: ${parts[5]}`);
      const body = JSON.stringify({
        _id: snap.commit.slice(0, 24),
        id: repo.id,
        modelId: repo.id,
        sha: snap.commit,
        private: repo.token !== undefined,
        siblings: [...snap.files.keys()].map((rfilename) => ({ rfilename })),
      });
      res.writeHead(200, { 'Content-Type': 'application/json' }).end(body);
      return;
    }
    // /{org}/{name}/resolve/{revision}/{file...}
    if (parts[2] === 'resolve' && parts.length >= 5) {
      record.kind = 'resolve';
      const id = `${parts[0]}/${parts[1]}`;
      const file = parts.slice(4).join('/');
      record.file = file;
      const renamed = this.renamed.get(id);
      if (renamed) {
        res.writeHead(307, { Location: `/${renamed}/resolve/${encodeURIComponent(parts[3]!)}/${parts.slice(4).map(encodeURIComponent).join('/')}` }).end();
        return;
      }
      const repo = this.repoFor(id, req, res);
      if (!repo) return;
      const snap = this.snapshot(repo, parts[3]!);
      if (!snap) return this.error(res, 404, 'RevisionNotFound', `Invalid rev id: ${parts[3]}`);
      const bytes = snap.files.get(file);
      if (!bytes) return this.error(res, 404, 'EntryNotFound', `${file} does not exist on "${parts[3]}"`);
      const common = { 'X-Repo-Commit': snap.commit, 'Access-Control-Expose-Headers': 'X-Repo-Commit,X-Linked-Etag,X-Linked-Size' };
      if (this.isLfs(bytes)) {
        const oid = sha256Hex(bytes);
        const location = `${this.cdn}/lfs/${oid}?sig=${createHash('md5').update(oid).digest('hex')}&expires=9999999999`;
        res
          .writeHead(302, {
            ...common,
            Location: location,
            'X-Linked-Etag': `"${oid}"`,
            'X-Linked-Size': String(bytes.length),
            ETag: `W/"${gitBlobSha1(Buffer.from(`version https://git-lfs.github.com/spec/v1\noid sha256:${oid}\nsize ${bytes.length}\n`))}"`,
          })
          .end(req.method === 'HEAD' ? undefined : `Found. Redirecting to ${location}`);
        return;
      }
      this.sendContent(record, req, res, file, bytes, { ...common, ETag: `W/"${gitBlobSha1(bytes)}"` });
      return;
    }
    this.error(res, 404, undefined, 'Not Found');
  }

  private serveCdn(record: ImitationRequest, req: http.IncomingMessage, res: http.ServerResponse): void {
    const url = new URL(req.url ?? '/', this.cdn);
    const m = /^\/lfs\/([0-9a-f]{64})$/.exec(url.pathname);
    const blob = m ? this.lfs.get(m[1]!) : undefined;
    if (!m || !blob || !url.searchParams.get('sig')) {
      res.writeHead(403, { 'Content-Type': 'application/xml' }).end('<Error><Code>AccessDenied</Code></Error>');
      return;
    }
    record.kind = 'lfs';
    record.file = blob.file;
    // S3-style ETag: not the sha256, so a client must use X-Linked-Etag from the hub
    this.sendContent(record, req, res, blob.file, blob.bytes, { ETag: `"${createHash('md5').update(blob.bytes).digest('hex')}"` });
  }

  private sendContent(_record: ImitationRequest, req: http.IncomingMessage, res: http.ServerResponse, file: string, bytes: Uint8Array, headers: http.OutgoingHttpHeaders): void {
    let start = 0;
    let end = bytes.length; // exclusive
    let status = 200;
    const range = req.headers.range;
    if (range && !this.ignoreRange) {
      const m = /^bytes=(\d+)-(\d*)$/.exec(range);
      if (m) {
        start = Number(m[1]);
        if (m[2]) end = Math.min(bytes.length, Number(m[2]) + 1);
        if (start >= bytes.length || start >= end) {
          res.writeHead(416, { 'Content-Range': `bytes */${bytes.length}` }).end();
          return;
        }
        status = 206;
        headers = { ...headers, 'Content-Range': `bytes ${start}-${end - 1}/${bytes.length}` };
      }
    }
    res.writeHead(status, { ...headers, 'Content-Type': 'application/octet-stream', 'Content-Length': String(end - start), 'Accept-Ranges': 'bytes' });
    if (req.method === 'HEAD') {
      res.end();
      return;
    }
    const drop = this.drops.find((d) => d.file === file && d.times > 0);
    if (drop) {
      drop.times--;
      const cut = Math.min(drop.bytes, end - start);
      res.write(bytes.subarray(start, start + cut), () => {
        // let the bytes reach the client before the connection goes
        setTimeout(() => res.socket?.destroy(), 20);
      });
      return;
    }
    res.end(bytes.subarray(start, end));
  }
}
