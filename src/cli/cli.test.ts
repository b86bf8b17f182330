/** The command line as a user runs it: a child process of bin/halfpipe.js. */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

const BIN = fileURLToPath(new URL('../../../bin/halfpipe.js', import.meta.url));
let dir: string;
before(() => {
  dir = mkdtempSync(join(tmpdir(), 'halfpipe-cli-'));
});
after(() => rmSync(dir, { recursive: true, force: true }));

function halfpipe(...args: string[]) {
  return halfpipeWithInput(undefined, ...args);
}

function halfpipeWithInput(input: string | undefined, ...args: string[]) {
  const r = spawnSync(process.execPath, [BIN, ...args], { encoding: 'utf8', input, env: { ...process.env, XDG_CACHE_HOME: join(dir, 'cache') }, timeout: 120_000 });
  return { code: r.status, out: r.stdout, err: r.stderr };
}

function assertOneLineError(r: { code: number | null; err: string }, pattern: RegExp) {
  assert.notEqual(r.code, 0);
  const lines = r.err.trim().split('\n').filter((l) => !l.startsWith('(run with --help'));
  assert.equal(lines.length, 1, r.err);
  assert.match(lines[0]!, /^halfpipe: error: /);
  assert.match(lines[0]!, pattern);
}

test('the quick start generates text from the embedded default model', () => {
  const r = halfpipe('generate', '--prompt', 'Once upon a time', '--max-tokens', '16', '--seed', '1');
  assert.equal(r.code, 0, r.err);
  assert.ok(r.out.trim().length > 0);
  assert.match(r.err, /built-in tiny model/);
  // Deterministic with a seed.
  assert.equal(halfpipe('generate', '--prompt', 'Once upon a time', '--max-tokens', '16', '--seed', '1').out, r.out);
});

test('tiny, info and generate --json on HF and GGUF models', () => {
  const hf = join(dir, 'hf');
  const gguf = join(dir, 'm.gguf');
  assert.equal(halfpipe('tiny', '--out', hf, '--seed', '4').code, 0);
  assert.equal(halfpipe('tiny', '--out', gguf, '--format', 'gguf', '--quant', 'Q8_0', '--seed', '4').code, 0);
  const info = halfpipe('info', '--model', gguf);
  assert.equal(info.code, 0, info.err);
  assert.match(info.out, /LlamaForCausalLM/);
  assert.match(info.out, /Q8_0 x16/);
  for (const model of [hf, gguf]) {
    const r = halfpipe('generate', '--model', model, '--prompt-ids', '1,320,439', '--max-tokens', '5', '--temperature', '0', '--logprobs', '3', '--json');
    assert.equal(r.code, 0, r.err);
    const j = JSON.parse(r.out);
    assert.deepEqual(Object.keys(j).sort(), ['finish_reason', 'logprobs', 'text', 'timings', 'tokens']);
    assert.ok(j.tokens.length <= 5);
    assert.equal(j.logprobs[0].length, 3);
    assert.deepEqual(Object.keys(j.logprobs[0][0]).sort(), ['id', 'logprob', 'token']);
    assert.equal(j.tokens[0], j.logprobs[0][0].id, 'greedy picks the top token');
    assert.deepEqual(Object.keys(j.timings).sort(), ['decode_tokens_per_s', 'load_s', 'prefill_tokens_per_s']);
  }
  const chat = halfpipe('generate', '--model', hf, '--chat', '--prompt', 'Hello', '--max-tokens', '4');
  assert.equal(chat.code, 0, chat.err);
});

test('chat reads turns from stdin and answers each through the chat template', () => {
  const model = join(dir, 'chat');
  assert.equal(halfpipe('tiny', '--out', model, '--seed', '6').code, 0);
  const r = halfpipeWithInput('Hello there\n\nHow are you?\n/reset\nAgain\n/exit\nnever read\n', 'chat', '--model', model, '--max-tokens', '3', '--seed', '1');
  assert.equal(r.code, 0, r.err);
  // Three turns, three answers, each ended by a newline; the line after /exit is never answered.
  assert.ok(r.out.endsWith('\n') && r.out.split('\n').length - 1 >= 3, JSON.stringify(r.out));
  const more = halfpipeWithInput('Hello there\n\nHow are you?\n/reset\nAgain\n/exit\nnever read\nnor this\n', 'chat', '--model', model, '--max-tokens', '3', '--seed', '1');
  assert.equal(more.out, r.out);
});

test('bad input ends with one clear line and a non-zero exit', () => {
  assertOneLineError(halfpipe('generate', '--model', join(dir, 'missing'), '--prompt', 'x'), /no such model/);
  assertOneLineError(halfpipe('generate', '--prompt-ids', '1,x'), /--prompt-ids must be comma-separated/);
  assertOneLineError(halfpipe('generate'), /exactly one of --prompt/);
  assertOneLineError(halfpipe('generate', '--prompt', 'x', '--temperature', 'hot'), /temperature/);
  assertOneLineError(halfpipe('generate', '--prompt', 'x', '--temperature', '-1'), /temperature/);
  assertOneLineError(halfpipe('tiny', '--out', join(dir, 'q'), '--quant', 'Q8_0'), /needs --format gguf/);
  assertOneLineError(halfpipe('tiny', '--out', join(dir, 'q.gguf'), '--format', 'gguf', '--quant', 'Q9_9'), /Q9_9/);
  const ctx = join(dir, 'ctx');
  assert.equal(halfpipe('tiny', '--out', ctx, '--set', 'max_position_embeddings=8').code, 0);
  assertOneLineError(halfpipe('generate', '--model', ctx, '--prompt-ids', '1,2,3,4,5,6,7,8,9,10'), /context/);
  assertOneLineError(halfpipe('bogus'), /unknown command/);
});

test('serve: answers on the port it prints, exits 0 on SIGTERM; a port in use is one line and a non-zero exit', async () => {
  const { spawn } = await import('node:child_process');
  const child = spawn(process.execPath, [BIN, 'serve', '--port', '0', '--quiet'], { env: { ...process.env, XDG_CACHE_HOME: join(dir, 'cache') } });
  let err = '';
  child.stderr.setEncoding('utf8');
  const url = await new Promise<string>((resolve, reject) => {
    child.stderr.on('data', (chunk: string) => {
      err += chunk;
      const m = /serving \S+ at (http:\/\/\S+)/.exec(err);
      if (m) resolve(m[1]!);
    });
    child.once('exit', (code) => reject(new Error(`serve exited (${code}) before it was ready: ${err}`)));
  });
  try {
    const health = (await (await fetch(`${url}/health`)).json()) as { status: string };
    assert.equal(health.status, 'ok');
    const r = await fetch(`${url}/v1/completions`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ model: 'tiny-bigram-v2', prompt: 'The keeper', max_tokens: 4, temperature: 0 }) });
    assert.equal(r.status, 200);
    assert.equal(((await r.json()) as { usage: { completion_tokens: number } }).usage.completion_tokens, 4);
    // The same port again: one line, non-zero exit.
    const port = new URL(url).port;
    const again = halfpipe('serve', '--port', port);
    assertOneLineError({ code: again.code, err: again.err.replace(/^halfpipe: no --model given.*\n/, '') }, new RegExp(`port ${port} .*already in use`));
  } finally {
    const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
    child.kill('SIGTERM');
    assert.equal(await exited, 0, err);
  }
});
