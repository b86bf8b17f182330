import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as http from 'node:http';
import type { AddressInfo } from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';
import { HalfpipeError } from '../core/errors.js';
import { Tensor } from '../core/tensor.js';
import { openHfCheckpoint } from './checkpoint.js';
import { cachedSnapshotDir, hubCacheDir, type HubOptions, parseRepoSpec, repoFolderName, snapshotDownload } from './hub.js';
import { fakeCommit, gitBlobSha1, HubImitation, type ImitationFiles, sha256Hex } from './hub-imitation.js';
import { loadTensor, writeSafetensors } from './safetensors.js';

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'halfpipe-hub-'));
process.on('exit', () => fs.rmSync(tmp, { recursive: true, force: true }));
let homes = 0;
const newHome = () => fs.mkdtempSync(path.join(tmp, `home${homes++}-`));

function safetensorsBytes(tensors: Array<{ name: string; tensor: Tensor }>): Uint8Array {
  const file = path.join(tmp, `st${homes++}.safetensors`);
  writeSafetensors(file, tensors);
  return fs.readFileSync(file);
}

const ramp = (n: number, shape: number[], k = 1) => Tensor.fromValues(Array.from({ length: n }, (_, i) => (i % 97) * k), shape, 'f32');
const randomBytes = (n: number, seed: number) => Uint8Array.from({ length: n }, (_, i) => (i * 2654435761 + seed) >>> 24);

const LFS_THRESHOLD = 1024;
const SHARD1 = 'model-00001-of-00002.safetensors';
const SHARD2 = 'model-00002-of-00002.safetensors';
const shard1 = safetensorsBytes([{ name: 'model.embed_tokens.weight', tensor: ramp(16384, [256, 64]) }]); // 64 KiB
const shard2 = safetensorsBytes([
  { name: 'model.norm.weight', tensor: ramp(64, [64], 2) },
  { name: 'lm_head.weight', tensor: ramp(1024, [16, 64], 3) },
]);
const tokenizerJson = JSON.stringify({ version: '1.0', model: { type: 'BPE', vocab: Object.fromEntries(Array.from({ length: 60 }, (_, i) => [`t${i}`, i])) } });
const specialTokens = JSON.stringify({ bos_token: '<s>', eos_token: '</s>' });
const tinyFiles: ImitationFiles = {
  'config.json': JSON.stringify({ model_type: 'llama', hidden_size: 64 }),
  'generation_config.json': JSON.stringify({ eos_token_id: 2 }),
  'tokenizer.json': tokenizerJson,
  // identical contents: one blob, downloaded once
  'tokenizer_config.json': specialTokens,
  'special_tokens_map.json': specialTokens,
  'README.md': '# tiny\n',
  'model.safetensors.index.json': JSON.stringify({
    metadata: { total_size: shard1.length + shard2.length },
    weight_map: { 'model.embed_tokens.weight': SHARD1, 'model.norm.weight': SHARD2, 'lm_head.weight': SHARD2 },
  }),
  [SHARD1]: shard1,
  [SHARD2]: shard2,
  'pytorch_model.bin': randomBytes(4096, 1),
  'model.gguf': randomBytes(3000, 2),
};
const TINY = 'halfpipe-test/tiny';
const tinyCommit = fakeCommit('tiny main');
const v2Commit = fakeCommit('tiny v2');
const v2Files: ImitationFiles = { ...tinyFiles, 'config.json': JSON.stringify({ model_type: 'llama', hidden_size: 64, v: 2 }) };
const SINGLE = 'halfpipe-test/single';
const singleCommit = fakeCommit('single');
const singleWeights = safetensorsBytes([{ name: 'w', tensor: ramp(2048, [2048]) }]);
const GATED = 'halfpipe-test/gated';
const TOKEN = 'hf_test_secret';

let hub: HubImitation;
before(async () => {
  hub = await HubImitation.start({
    lfsThreshold: LFS_THRESHOLD,
    repos: [
      { id: TINY, commit: tinyCommit, files: tinyFiles, revisions: { v2: { commit: v2Commit, files: v2Files } } },
      { id: SINGLE, commit: singleCommit, files: { 'config.json': '{}', 'model.safetensors': singleWeights } },
      { id: GATED, commit: fakeCommit('gated'), files: { 'config.json': '{}', 'model.safetensors': singleWeights }, token: TOKEN },
    ],
  });
});
after(() => hub.close());

/** snapshotDownload against the imitation, with HF_HOME = home and fast retries. */
function download(spec: string, home: string, opts: HubOptions = {}, env: NodeJS.ProcessEnv = {}): Promise<string> {
  return snapshotDownload(spec, { progress: false, retryDelayMs: 1, ...opts, env: { HF_HOME: home, HF_ENDPOINT: hub.endpoint, ...env } });
}

function since(n: number) {
  return hub.requests.slice(n);
}

async function rejectsWith(p: Promise<unknown>, pattern: RegExp): Promise<HalfpipeError> {
  let caught: unknown;
  await p.then(
    () => assert.fail(`expected a rejection matching ${pattern}`),
    (e: unknown) => (caught = e),
  );
  assert.ok(caught instanceof HalfpipeError, `expected a HalfpipeError, got ${String(caught)}`);
  assert.equal(caught.code, 'config');
  assert.match(caught.message, pattern);
  assert.ok(!caught.message.includes('\n'));
  return caught;
}

const bytesOf = (v: string | Uint8Array) => (typeof v === 'string' ? Buffer.from(v) : Buffer.from(v));
const etagOf = (v: string | Uint8Array) => (bytesOf(v).length >= LFS_THRESHOLD ? sha256Hex(bytesOf(v)) : gitBlobSha1(bytesOf(v)));

test('downloads the selection into the exact huggingface_hub cache layout', async () => {
  const home = newHome();
  const n = hub.requests.length;
  const dir = await download(TINY, home, { concurrency: 8 }); // the two identical files start together
  const storage = path.join(home, 'hub', 'models--halfpipe-test--tiny');
  assert.equal(dir, path.join(storage, 'snapshots', tinyCommit));
  assert.equal(fs.readFileSync(path.join(storage, 'refs', 'main'), 'utf8'), tinyCommit); // no newline

  const expected = ['config.json', 'generation_config.json', 'tokenizer.json', 'tokenizer_config.json', 'special_tokens_map.json', 'model.safetensors.index.json', SHARD1, SHARD2];
  assert.deepEqual(fs.readdirSync(dir).sort(), [...expected].sort());
  for (const f of expected) {
    const link = path.join(dir, f);
    assert.ok(fs.lstatSync(link).isSymbolicLink(), `${f} is a symlink`);
    assert.equal(fs.readlinkSync(link), `../../blobs/${etagOf(tinyFiles[f]!)}`, f);
    assert.deepEqual(fs.readFileSync(link), bytesOf(tinyFiles[f]!), f);
  }
  const blobs = fs.readdirSync(path.join(storage, 'blobs')).sort();
  assert.deepEqual(blobs, [...new Set(expected.map((f) => etagOf(tinyFiles[f]!)))].sort()); // no .incomplete left
  assert.equal(blobs.length, expected.length - 1); // two files share one blob

  // never fetched: README, .bin, .gguf; the shared blob downloaded once
  const reqs = since(n);
  for (const f of ['README.md', 'pytorch_model.bin', 'model.gguf']) assert.ok(!reqs.some((r) => r.file === f), f);
  const gets = reqs.filter((r) => r.method === 'GET' && (r.file === 'tokenizer_config.json' || r.file === 'special_tokens_map.json'));
  assert.equal(gets.length, 1);
  // LFS content came from the CDN, without the (absent) token
  assert.ok(reqs.some((r) => r.server === 'cdn' && r.file === SHARD1 && r.method === 'GET'));
  assert.ok(reqs.every((r) => r.authorization === undefined));

  // the snapshot is a checkpoint halfpipe reads
  const ckpt = openHfCheckpoint(dir);
  assert.deepEqual(ckpt.config, { model_type: 'llama', hidden_size: 64 });
  assert.equal(ckpt.tensors.size, 3);
  assert.deepEqual([...loadTensor(ckpt.tensors.get('lm_head.weight')!).toFloat64Array()], [...ramp(1024, [16, 64], 3).toFloat64Array()]);
});

test('a second call lists the repo but makes no file requests; offline needs no network at all', async () => {
  const home = newHome();
  const dir = await download(TINY, home);
  const n = hub.requests.length;
  assert.equal(await download(TINY, home), dir);
  assert.deepEqual(since(n).map((r) => r.kind), ['api']);

  const m = hub.requests.length;
  // offline: an unreachable endpoint, and not even the listing
  assert.equal(await snapshotDownload(TINY, { env: { HF_HOME: home, HF_HUB_OFFLINE: '1', HF_ENDPOINT: 'http://127.0.0.1:9' } }), dir);
  assert.equal(await snapshotDownload(`${TINY}@${tinyCommit}`, { offline: true, env: { HF_HOME: home } }), dir);
  assert.equal(cachedSnapshotDir(TINY, { env: { HF_HOME: home } }), dir);
  assert.equal(hub.requests.length, m);
});

test('offline mode fails clearly when the snapshot is not cached or incomplete', async () => {
  const home = newHome();
  const offline = { HF_HUB_OFFLINE: 'true' };
  await rejectsWith(download(TINY, home, {}, offline), /halfpipe-test\/tiny@main is not in the Hugging Face cache .* offline mode \(HF_HUB_OFFLINE\) is on/);
  const dir = await download(TINY, home);
  await rejectsWith(download(`${TINY}@v2`, home, {}, offline), /tiny@v2 is not in the Hugging Face cache/);
  await rejectsWith(download(TINY, home, { files: ['model.gguf'] }, offline), /lacks model\.gguf/);
  fs.rmSync(path.join(dir, SHARD2));
  await rejectsWith(download(TINY, home, {}, offline), new RegExp(`snapshot .* lacks ${SHARD2.replace(/\./g, '\\.')} and offline mode`));
  // online again, only the missing file is fetched
  const n = hub.requests.length;
  await download(TINY, home);
  assert.deepEqual([...new Set(since(n).filter((r) => r.file).map((r) => r.file))], [SHARD2]);
  // the blob was still there: a HEAD for its etag, no content request
  assert.deepEqual(since(n).filter((r) => r.file).map((r) => r.method), ['HEAD']);
});

test('a blob already in the cache is not downloaded again for another revision', async () => {
  const home = newHome();
  await download(TINY, home);
  const n = hub.requests.length;
  const dir = await download(`${TINY}@v2`, home);
  const storage = path.join(home, 'hub', repoFolderName(TINY));
  assert.equal(dir, path.join(storage, 'snapshots', v2Commit));
  assert.equal(fs.readFileSync(path.join(storage, 'refs', 'v2'), 'utf8'), v2Commit);
  assert.equal(fs.readFileSync(path.join(storage, 'refs', 'main'), 'utf8'), tinyCommit);
  const gets = since(n).filter((r) => r.method === 'GET' && r.file);
  assert.deepEqual(gets.map((r) => r.file), ['config.json']); // the only new content
  assert.deepEqual(JSON.parse(fs.readFileSync(path.join(dir, 'config.json'), 'utf8')), { model_type: 'llama', hidden_size: 64, v: 2 });
  assert.equal(fs.readlinkSync(path.join(dir, SHARD1)), `../../blobs/${sha256Hex(shard1)}`);
});

test('a dropped connection is resumed with a Range request in the same call (CDN and hub files)', async () => {
  const home = newHome();
  hub.dropAfter(SHARD1, 10_000);
  hub.dropAfter('tokenizer.json', 300);
  const seen: Array<[string, number, number | undefined]> = [];
  const n = hub.requests.length;
  const dir = await download(TINY, home, { onProgress: (f, d, t) => seen.push([f, d, t]) });
  assert.deepEqual(fs.readFileSync(path.join(dir, SHARD1)), Buffer.from(shard1));
  assert.deepEqual(fs.readFileSync(path.join(dir, 'tokenizer.json')), Buffer.from(tokenizerJson));
  const shardGets = since(n).filter((r) => r.method === 'GET' && r.file === SHARD1);
  assert.deepEqual(shardGets.map((r) => [r.server, r.range]), [['cdn', undefined], ['cdn', 'bytes=10000-']]);
  assert.equal(shardGets[1]!.status, 206);
  const tokGets = since(n).filter((r) => r.method === 'GET' && r.file === 'tokenizer.json');
  assert.deepEqual(tokGets.map((r) => [r.server, r.range]), [['hub', undefined], ['hub', 'bytes=300-']]);
  // progress reached the total of each file
  const last = seen.filter(([f]) => f === SHARD1).at(-1)!;
  assert.deepEqual(last, [SHARD1, shard1.length, shard1.length]);
});

test('a partial download left by a failed call is resumed by the next one', async () => {
  const home = newHome();
  hub.dropAfter(SHARD1, 20_000);
  await rejectsWith(download(TINY, home, { retries: 0 }), /connection lost downloading model-00001-of-00002\.safetensors of halfpipe-test\/tiny after 20000 bytes/);
  const partial = path.join(home, 'hub', repoFolderName(TINY), 'blobs', `${sha256Hex(shard1)}.incomplete`);
  assert.equal(fs.statSync(partial).size, 20_000);
  assert.ok(!fs.existsSync(path.join(home, 'hub', repoFolderName(TINY), 'refs', 'main')), 'no ref before the snapshot is complete');
  const n = hub.requests.length;
  const dir = await download(TINY, home);
  const gets = since(n).filter((r) => r.method === 'GET' && r.file === SHARD1);
  assert.deepEqual(gets.map((r) => r.range), ['bytes=20000-']);
  assert.deepEqual(fs.readFileSync(path.join(dir, SHARD1)), Buffer.from(shard1));
  assert.ok(!fs.existsSync(partial));
});

test('a server that ignores Range (200) restarts the file from zero', async () => {
  const home = newHome();
  hub.dropAfter(SHARD1, 5000);
  hub.ignoreRange = true;
  try {
    const n = hub.requests.length;
    const dir = await download(TINY, home);
    const gets = since(n).filter((r) => r.method === 'GET' && r.file === SHARD1);
    assert.deepEqual(gets.map((r) => [r.range, r.status]), [[undefined, 200], ['bytes=5000-', 200]]);
    assert.deepEqual(fs.readFileSync(path.join(dir, SHARD1)), Buffer.from(shard1));
  } finally {
    hub.ignoreRange = false;
  }
});

test('a stale partial longer than the file is discarded', async () => {
  const home = newHome();
  const blobs = path.join(home, 'hub', repoFolderName(SINGLE), 'blobs');
  fs.mkdirSync(blobs, { recursive: true });
  fs.writeFileSync(path.join(blobs, `${sha256Hex(singleWeights)}.incomplete`), Buffer.alloc(singleWeights.length + 10, 7));
  const n = hub.requests.length;
  const dir = await download(SINGLE, home);
  assert.deepEqual(fs.readFileSync(path.join(dir, 'model.safetensors')), Buffer.from(singleWeights));
  // discarded up front: one plain GET, no doomed Range request
  assert.deepEqual(since(n).filter((r) => r.method === 'GET' && r.file === 'model.safetensors').map((r) => r.range), [undefined]);
});

test('HF_TOKEN is sent as a Bearer token to the hub only, never to the CDN', async () => {
  const home = newHome();
  const n = hub.requests.length;
  const dir = await download(GATED, home, {}, { HF_TOKEN: TOKEN });
  assert.deepEqual(fs.readFileSync(path.join(dir, 'model.safetensors')), Buffer.from(singleWeights));
  const reqs = since(n);
  const hubReqs = reqs.filter((r) => r.server === 'hub');
  const cdnReqs = reqs.filter((r) => r.server === 'cdn');
  assert.ok(hubReqs.length >= 3 && cdnReqs.length === 1);
  for (const r of hubReqs) assert.equal(r.authorization, `Bearer ${TOKEN}`);
  for (const r of cdnReqs) assert.equal(r.authorization, undefined);
  // opts.token overrides the environment
  const m = hub.requests.length;
  await download(GATED, newHome(), { token: TOKEN }, { HF_TOKEN: 'hf_wrong' });
  assert.equal(since(m)[0]!.authorization, `Bearer ${TOKEN}`);
});

test('401 and 403 name the gated repo and point at HF_TOKEN', async () => {
  await rejectsWith(download(GATED, newHome()), /access to halfpipe-test\/gated@main denied, it is gated or private \(HTTP 401 .*\); no token was sent: set HF_TOKEN/);
  await rejectsWith(download(GATED, newHome(), {}, { HF_TOKEN: 'hf_wrong' }), /denied.*HTTP 403.*the token sent was refused: check HF_TOKEN/);
});

test('404s: unknown repo, unknown revision, a file the repo does not have', async () => {
  await rejectsWith(download('halfpipe-test/missing', newHome()), /repository halfpipe-test\/missing not found at http:\/\/127\.0\.0\.1:\d+ \(HTTP 404.*HF_TOKEN/);
  await rejectsWith(download(`${TINY}@nope`, newHome()), /revision 'nope' not found in halfpipe-test\/tiny/);
  await rejectsWith(download(TINY, newHome(), { files: ['model.gguf', 'nope.bin'] }), /tiny@main has no nope\.bin \(it has /);
  await rejectsWith(download(TINY, newHome(), { files: ['config.json'], endpoint: `${hub.endpoint}/prefix` }), /repository halfpipe-test\/tiny or its revision 'main' not found .*HTTP 404/);
});

test('opts.files downloads exactly the listed files (e.g. a single gguf)', async () => {
  const home = newHome();
  const dir = await download(TINY, home, { files: ['model.gguf'] });
  assert.deepEqual(fs.readdirSync(dir), ['model.gguf']);
  assert.deepEqual(fs.readFileSync(path.join(dir, 'model.gguf')), Buffer.from(tinyFiles['model.gguf'] as Uint8Array));
});

test('a repo without safetensors weights or config.json is refused before downloading', async () => {
  hub.setRepo({ id: 'halfpipe-test/bin-only', commit: fakeCommit('bin'), files: { 'config.json': '{}', 'pytorch_model.bin': randomBytes(2000, 3) } });
  hub.setRepo({ id: 'halfpipe-test/gguf-only', commit: fakeCommit('gguf'), files: { 'model.gguf': randomBytes(2000, 4) } });
  const n = hub.requests.length;
  await rejectsWith(download('halfpipe-test/bin-only', newHome()), /has no model\.safetensors or model\.safetensors\.index\.json \(it has pytorch_model\.bin\); pass opts\.files/);
  await rejectsWith(download('halfpipe-test/gguf-only', newHome()), /has no config\.json: not a transformers model repo/);
  assert.equal(since(n).filter((r) => r.kind !== 'api').length, 0);
});

test('relative redirects of a renamed repo are followed', async () => {
  hub.renamed.set('halfpipe-test/old-name', SINGLE);
  const dir = await download('halfpipe-test/old-name', newHome());
  assert.ok(dir.includes(`models--halfpipe-test--old-name${path.sep}snapshots${path.sep}${singleCommit}`));
  assert.deepEqual(fs.readFileSync(path.join(dir, 'model.safetensors')), Buffer.from(singleWeights));
});

test('network errors are retried, then reported, with a hint when the snapshot is cached', async () => {
  const closed = http.createServer();
  await new Promise<void>((r) => closed.listen(0, '127.0.0.1', () => r()));
  const port = (closed.address() as AddressInfo).port;
  await new Promise<void>((r) => closed.close(() => r()));
  const home = newHome();
  const endpoint = `http://127.0.0.1:${port}`;
  const e = await rejectsWith(download(TINY, home, { endpoint, retries: 2 }), /network error on GET http:\/\/127\.0\.0\.1:\d+\/api\/models\/halfpipe-test\/tiny\/revision\/main: ECONNREFUSED \(gave up after 3 attempts\)/);
  assert.ok(!e.message.includes('HF_HUB_OFFLINE'));
  await download(TINY, home);
  await rejectsWith(download(TINY, home, { endpoint, retries: 0 }), /ECONNREFUSED; halfpipe-test\/tiny@main is in the cache: set HF_HUB_OFFLINE=1/);
});

test('repo specs, cache directories and folder names follow huggingface_hub', () => {
  assert.deepEqual(parseRepoSpec('org/name'), { repo: 'org/name', revision: 'main' });
  assert.deepEqual(parseRepoSpec('org/na.me-1_x@refs/pr/1'), { repo: 'org/na.me-1_x', revision: 'refs/pr/1' });
  assert.deepEqual(parseRepoSpec('gpt2@abc'), { repo: 'gpt2', revision: 'abc' });
  for (const bad of ['org/a/b', 'org/', 'org/a--b', 'org/a@', 'org/a@../x', 'org/a@/abs', ' org/a']) {
    assert.throws(() => parseRepoSpec(bad), (e: unknown) => e instanceof HalfpipeError && e.code === 'usage', bad);
  }
  assert.equal(repoFolderName('org/name'), 'models--org--name');
  assert.equal(hubCacheDir({ HF_HUB_CACHE: '/x/hub', HF_HOME: '/y' }), '/x/hub');
  assert.equal(hubCacheDir({ HUGGINGFACE_HUB_CACHE: '/old', HF_HOME: '/y' }), '/old');
  assert.equal(hubCacheDir({ HF_HOME: '/y', XDG_CACHE_HOME: '/z' }), '/y/hub');
  assert.equal(hubCacheDir({ XDG_CACHE_HOME: '/z' }), '/z/huggingface/hub');
  assert.equal(hubCacheDir({}), path.join(os.homedir(), '.cache', 'huggingface', 'hub'));
  assert.equal(hubCacheDir({ HF_HOME: '~/hf' }), path.join(os.homedir(), 'hf', 'hub'));
});

test('revisions with slashes get nested refs, as huggingface_hub writes them', async () => {
  hub.setRepo({ id: 'halfpipe-test/pr', commit: fakeCommit('pr main'), files: {}, revisions: { 'refs/pr/1': { commit: fakeCommit('pr1'), files: { 'config.json': '{}', 'model.safetensors': singleWeights } } } });
  const home = newHome();
  const dir = await download('halfpipe-test/pr@refs/pr/1', home);
  const storage = path.join(home, 'hub', 'models--halfpipe-test--pr');
  assert.equal(dir, path.join(storage, 'snapshots', fakeCommit('pr1')));
  assert.equal(fs.readFileSync(path.join(storage, 'refs', 'refs', 'pr', '1'), 'utf8'), fakeCommit('pr1'));
  assert.equal(await download('halfpipe-test/pr@refs/pr/1', home, {}, { HF_HUB_OFFLINE: '1' }), dir);
});
