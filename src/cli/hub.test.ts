/** `halfpipe generate --model org/name` against a local server imitating the HF Hub (no internet here). */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { fakeCommit, HubImitation } from '../formats/hub-imitation.js';
import { writeTinyModel } from '../models/tiny.js';

const BIN = fileURLToPath(new URL('../../../bin/halfpipe.js', import.meta.url));
const run = promisify(execFile);
let dir: string;
let hub: HubImitation;

before(async () => {
  dir = mkdtempSync(join(tmpdir(), 'halfpipe-hubcli-'));
  const model = join(dir, 'model');
  writeTinyModel({ format: 'hf', out: model, seed: 9 });
  const files = Object.fromEntries(readdirSync(model).map((f) => [f, new Uint8Array(readFileSync(join(model, f)))]));
  hub = await HubImitation.start({ repos: [{ id: 'halfpipe/tiny-llama', commit: fakeCommit('tiny'), files }] });
});

after(async () => {
  await hub.close();
  rmSync(dir, { recursive: true, force: true });
});

async function halfpipe(env: Record<string, string>, ...args: string[]) {
  try {
    const r = await run(process.execPath, [BIN, ...args], { env: { ...process.env, HF_HOME: join(dir, 'hf-home'), HF_ENDPOINT: hub.endpoint, ...env }, timeout: 120_000 });
    return { code: 0, out: r.stdout, err: r.stderr };
  } catch (e) {
    const x = e as { code: number; stdout: string; stderr: string };
    return { code: x.code, out: x.stdout, err: x.stderr };
  }
}

test('--model org/name downloads into the HF cache, then works offline from it', async () => {
  const args = ['generate', '--model', 'halfpipe/tiny-llama', '--prompt-ids', '1,320,439', '--max-tokens', '6', '--temperature', '0', '--json'];
  const online = await halfpipe({}, ...args);
  assert.equal(online.code, 0, online.err);
  const snapshot = join(dir, 'hf-home', 'hub', 'models--halfpipe--tiny-llama', 'snapshots', fakeCommit('tiny'));
  assert.ok(existsSync(join(snapshot, 'model.safetensors')));
  const requests = hub.requests.length;
  const offline = await halfpipe({ HF_HUB_OFFLINE: '1' }, ...args);
  assert.equal(offline.code, 0, offline.err);
  assert.equal(hub.requests.length, requests, 'offline mode made requests');
  assert.deepEqual(JSON.parse(offline.out).tokens, JSON.parse(online.out).tokens);
  const missing = await halfpipe({ HF_HUB_OFFLINE: '1' }, 'generate', '--model', 'halfpipe/other', '--prompt', 'x');
  assert.notEqual(missing.code, 0);
  assert.match(missing.err.trim(), /^halfpipe: error: .*halfpipe\/other/);
  const unknown = await halfpipe({}, 'generate', '--model', 'halfpipe/nope', '--prompt', 'x');
  assert.notEqual(unknown.code, 0);
  assert.equal(unknown.err.trim().split('\n').length, 1, unknown.err);
});
