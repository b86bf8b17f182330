/**
 * `halfpipe trace` and the generation guard on the built-in stress model: naive-f16 overflows at
 * layer 2's down_proj (inf, then NaN) and the trace names that op; safe-f16 stays finite. The HTML
 * report is opened in headless Chromium (Debian's, which .ci/run installs).
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { validateTraceJson } from '../monitor/index.js';

const BIN = fileURLToPath(new URL('../../../bin/halfpipe.js', import.meta.url));
const CHROMIUM = '/usr/bin/chromium';
const PROMPT = 'The keeper lit the lamp. The ship';
let dir: string;
before(() => {
  dir = mkdtempSync(join(tmpdir(), 'halfpipe-trace-'));
});
after(() => rmSync(dir, { recursive: true, force: true }));

function halfpipe(...args: string[]) {
  const r = spawnSync(process.execPath, [BIN, ...args], { encoding: 'utf8', env: { ...process.env, XDG_CACHE_HOME: join(dir, 'cache') }, timeout: 120_000 });
  return { code: r.status, out: r.stdout, err: r.stderr };
}

test('trace names the first bad op of naive-f16 on the stress model, with its triage', () => {
  const json = join(dir, 'naive.json');
  const html = join(dir, 'naive.html');
  const r = halfpipe('trace', '--policy', 'naive-f16', '--prompt', PROMPT, '--shadow', 'f32', '--json', json, '--html', html);
  assert.equal(r.code, 0, r.err);
  assert.match(r.out, /first bad op: down \(layer 2\), forward 0 'prefill', token 0 \[text\], channel 12: inf/);
  assert.match(r.out, /triage: precision-overflow/);
  assert.match(r.out, /massive channels/);
  assert.match(r.out, /shadow: first divergence at down \(layer 2\)/);
  const trace = JSON.parse(readFileSync(json, 'utf8'));
  assert.deepEqual(validateTraceJson(trace), []);
  assert.equal(trace.firstBadOp.probe, 'down');
  assert.equal(trace.firstBadOp.layer, 2);
  assert.equal(trace.firstBadOp.channel, 12);
  assert.ok(existsSync(html));
});

test('trace under safe-f16 finds nothing non-finite', () => {
  const r = halfpipe('trace', '--policy', 'safe-f16', '--prompt', PROMPT, '--max-tokens', '4');
  assert.equal(r.code, 0, r.err);
  assert.match(r.out, /first bad op: none, all finite/);
});

test('the generation guard: error names the op, upcast recovers and says so', () => {
  const model = join(dir, 'stress');
  assert.equal(halfpipe('tiny', '--out', model, '--stress', 'massive-activations').code, 0);
  const failed = halfpipe('generate', '--model', model, '--policy', 'naive-f16', '--prompt', PROMPT, '--max-tokens', '4');
  assert.notEqual(failed.code, 0);
  assert.match(failed.err.trim(), /^halfpipe: error: precision overflow at down \(layer 2\)/);
  assert.equal(failed.err.trim().split('\n').length, 1);
  const upcast = halfpipe('generate', '--model', model, '--policy', 'naive-f16', '--prompt', PROMPT, '--max-tokens', '4', '--temperature', '0', '--on-nonfinite', 'upcast', '--json');
  assert.equal(upcast.code, 0, upcast.err);
  assert.match(upcast.err, /warning: precision overflow at down \(layer 2\).*redoing .* f32 policy/);
  const f32 = halfpipe('generate', '--model', model, '--policy', 'f32', '--prompt', PROMPT, '--max-tokens', '4', '--temperature', '0', '--json');
  assert.deepEqual(JSON.parse(upcast.out).tokens, JSON.parse(f32.out).tokens);
  const safe = halfpipe('generate', '--model', model, '--policy', 'safe-f16', '--prompt', PROMPT, '--max-tokens', '4', '--temperature', '0', '--json');
  assert.equal(safe.code, 0, safe.err);
  assert.deepEqual(JSON.parse(safe.out).tokens, JSON.parse(f32.out).tokens);
});

test('the HTML report renders in headless Chromium without console errors and shows the first bad op', { skip: !existsSync(CHROMIUM) && !process.env['CI'] ? 'Debian chromium is not installed (.ci/run installs it)' : false }, async () => {
  const html = join(dir, 'report.html');
  assert.equal(halfpipe('trace', '--policy', 'naive-f16', '--prompt', PROMPT, '--html', html).code, 0);
  const { chromium } = await import('playwright-core');
  const browser = await chromium.launch({
    executablePath: CHROMIUM,
    args: ['--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update', '--disable-sync', '--no-first-run'],
  });
  try {
    const page = await browser.newPage();
    const errors: string[] = [];
    page.on('console', (m) => m.type() === 'error' && errors.push(m.text()));
    page.on('pageerror', (e) => errors.push(String(e)));
    page.on('request', (req) => !req.url().startsWith('file:') && !req.url().startsWith('data:') && errors.push(`external request ${req.url()}`));
    await page.goto(pathToFileURL(html).href);
    const first = await page.locator('#first-bad-op').innerText();
    assert.match(first, /down \(layer 2\).*token 0.*channel 12/s);
    assert.ok((await page.locator('svg').count()) >= 3, 'charts are drawn');
    assert.deepEqual(errors, []);
  } finally {
    await browser.close();
  }
});
