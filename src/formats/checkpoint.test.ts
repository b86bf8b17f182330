import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { HalfpipeError } from '../core/errors.js';
import { Tensor } from '../core/tensor.js';
import { openHfCheckpoint } from './checkpoint.js';
import { loadTensor, writeSafetensors } from './safetensors.js';

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'halfpipe-ckpt-'));
process.on('exit', () => fs.rmSync(tmp, { recursive: true, force: true }));
let counter = 0;

const rejects = (fn: () => unknown, pattern: RegExp) =>
  assert.throws(fn, (e: unknown) => {
    assert.ok(e instanceof HalfpipeError, `expected a HalfpipeError, got ${String(e)}`);
    assert.equal(e.code, 'config');
    assert.match(e.message, pattern);
    assert.ok(!e.message.includes('\n'), 'one-line message');
    return true;
  });

const vec = (...v: number[]) => Tensor.fromValues(v, [v.length], 'f32');

/** A fresh directory with config.json and the given shards (file -> tensor names) plus an index. */
function sharded(shards: Record<string, string[]>, weightMap?: Record<string, string>): string {
  const dir = path.join(tmp, `ckpt${counter++}`);
  fs.mkdirSync(dir);
  fs.writeFileSync(path.join(dir, 'config.json'), JSON.stringify({ model_type: 'llama', hidden_size: 4 }));
  const map: Record<string, string> = {};
  let k = 0;
  for (const [file, names] of Object.entries(shards)) {
    writeSafetensors(path.join(dir, file), names.map((name) => ({ name, tensor: vec(k++, k) })));
    for (const name of names) map[name] = file;
  }
  fs.writeFileSync(path.join(dir, 'model.safetensors.index.json'), JSON.stringify({ metadata: { total_size: 0 }, weight_map: weightMap ?? map }));
  return dir;
}

test('a single-file checkpoint with its config, generation and tokenizer files', () => {
  const dir = path.join(tmp, 'single');
  fs.mkdirSync(dir);
  fs.writeFileSync(path.join(dir, 'config.json'), JSON.stringify({ model_type: 'llama', vocab_size: 32 }));
  fs.writeFileSync(path.join(dir, 'generation_config.json'), JSON.stringify({ eos_token_id: 2 }));
  fs.writeFileSync(path.join(dir, 'tokenizer.json'), '{}');
  fs.writeFileSync(path.join(dir, 'tokenizer_config.json'), JSON.stringify({ bos_token: '<s>' }));
  writeSafetensors(path.join(dir, 'model.safetensors'), [
    { name: 'model.embed_tokens.weight', tensor: vec(1, 2, 3) },
    { name: 'lm_head.weight', tensor: vec(4) },
  ]);
  const ckpt = openHfCheckpoint(dir);
  assert.equal(ckpt.dir, dir);
  assert.deepEqual(ckpt.config, { model_type: 'llama', vocab_size: 32 });
  assert.deepEqual(ckpt.generationConfig, { eos_token_id: 2 });
  assert.deepEqual(ckpt.tokenizerConfig, { bos_token: '<s>' });
  assert.equal(ckpt.tokenizerJson, path.join(dir, 'tokenizer.json'));
  assert.equal(ckpt.chatTemplate, undefined);
  assert.deepEqual(ckpt.weightFiles, [path.join(dir, 'model.safetensors')]);
  assert.deepEqual([...ckpt.tensors.keys()].sort(), ['lm_head.weight', 'model.embed_tokens.weight']);
  assert.deepEqual([...loadTensor(ckpt.tensors.get('model.embed_tokens.weight')!).toFloat64Array()], [1, 2, 3]);

  // a checkpoint without the optional files
  for (const f of ['generation_config.json', 'tokenizer.json', 'tokenizer_config.json']) fs.rmSync(path.join(dir, f));
  const bare = openHfCheckpoint(dir);
  assert.equal(bare.generationConfig, undefined);
  assert.equal(bare.tokenizerJson, undefined);
  assert.equal(bare.tokenizerConfig, undefined);
});

test('a sharded checkpoint reads every shard and maps each tensor to its file', () => {
  const dir = sharded({
    'model-00001-of-00003.safetensors': ['a', 'b'],
    'model-00002-of-00003.safetensors': ['c'],
    'model-00003-of-00003.safetensors': ['d', 'e', 'f'],
  });
  const ckpt = openHfCheckpoint(dir);
  assert.equal(ckpt.tensors.size, 6);
  assert.equal(ckpt.weightFiles.length, 3);
  assert.equal(ckpt.tensors.get('c')!.file, path.join(dir, 'model-00002-of-00003.safetensors'));
  assert.equal(ckpt.tensors.get('f')!.file, path.join(dir, 'model-00003-of-00003.safetensors'));
  assert.deepEqual([...loadTensor(ckpt.tensors.get('d')!).toFloat64Array()], [3, 4]);
  assert.deepEqual([...loadTensor(ckpt.tensors.get('f')!).toFloat64Array()], [5, 6]);
});

test('model.safetensors wins over an index, as in transformers', () => {
  const dir = sharded({ 'model-00001-of-00001.safetensors': ['sharded'] });
  writeSafetensors(path.join(dir, 'model.safetensors'), [{ name: 'single', tensor: vec(1) }]);
  assert.deepEqual([...openHfCheckpoint(dir).tensors.keys()], ['single']);
});

test('a missing directory, a file, a missing or invalid config.json are clear errors', () => {
  rejects(() => openHfCheckpoint(path.join(tmp, 'nope')), /^checkpoint directory not found: .*nope$/);
  const file = path.join(tmp, 'plain-file');
  fs.writeFileSync(file, 'x');
  rejects(() => openHfCheckpoint(file), /not a checkpoint directory: .* is a file/);
  const dir = sharded({ 'm.safetensors': ['a'] });
  fs.rmSync(path.join(dir, 'config.json'));
  rejects(() => openHfCheckpoint(dir), /has no config\.json/);
  fs.writeFileSync(path.join(dir, 'config.json'), '{"model_type": "llama",}');
  rejects(() => openHfCheckpoint(dir), new RegExp(`invalid JSON in ${path.join(dir, 'config.json').replace(/[.]/g, '\\.')}: `));
  fs.writeFileSync(path.join(dir, 'config.json'), '[1]');
  rejects(() => openHfCheckpoint(dir), /invalid JSON in .*config\.json: expected an object/);
  fs.writeFileSync(path.join(dir, 'config.json'), '{}');
  fs.writeFileSync(path.join(dir, 'generation_config.json'), '{oops');
  rejects(() => openHfCheckpoint(dir), /invalid JSON in .*generation_config\.json/);
});

test('no weights, a missing shard or an invalid index are clear errors', () => {
  const dir = sharded({ 'model-00001-of-00002.safetensors': ['a'], 'model-00002-of-00002.safetensors': ['b'] });
  assert.equal(openHfCheckpoint(dir).tensors.size, 2); // valid before it is broken
  fs.rmSync(path.join(dir, 'model-00002-of-00002.safetensors'));
  rejects(() => openHfCheckpoint(dir), /shard model-00002-of-00002\.safetensors listed in model\.safetensors\.index\.json is missing from /);
  fs.writeFileSync(path.join(dir, 'model.safetensors.index.json'), '{"weight_map": {');
  rejects(() => openHfCheckpoint(dir), /invalid JSON in .*model\.safetensors\.index\.json/);
  fs.writeFileSync(path.join(dir, 'model.safetensors.index.json'), '{"weight_map": []}');
  rejects(() => openHfCheckpoint(dir), /weight_map must be an object/);
  fs.writeFileSync(path.join(dir, 'model.safetensors.index.json'), '{"weight_map": {}}');
  rejects(() => openHfCheckpoint(dir), /weight_map lists no tensors/);
  fs.rmSync(path.join(dir, 'model.safetensors.index.json'));
  rejects(() => openHfCheckpoint(dir), /has no model\.safetensors or model\.safetensors\.index\.json \(found model-00001-of-00002\.safetensors but no index/);
  fs.rmSync(path.join(dir, 'model-00001-of-00002.safetensors'));
  rejects(() => openHfCheckpoint(dir), /has no model\.safetensors or model\.safetensors\.index\.json$/);
  fs.writeFileSync(path.join(dir, 'pytorch_model.bin'), 'x');
  rejects(() => openHfCheckpoint(dir), /found .*pytorch_model\.bin.*only as safetensors/);
});

test('tensors missing from their shard, in the wrong shard or in two shards are rejected', () => {
  const files = { 's1.safetensors': ['a', 'b'], 's2.safetensors': ['c'] };
  rejects(() => openHfCheckpoint(sharded(files, { a: 's1.safetensors', b: 's1.safetensors', c: 's2.safetensors', z: 's2.safetensors' })), /tensor 'z' listed in .* is not in shard s2\.safetensors/);
  rejects(() => openHfCheckpoint(sharded(files, { a: 's1.safetensors', b: 's1.safetensors', c: 's1.safetensors', x: 's2.safetensors' })), /tensor 'c' is listed in shard s1\.safetensors but found in s2\.safetensors/);
  rejects(() => openHfCheckpoint(sharded({ 's1.safetensors': ['a', 'b'], 's2.safetensors': ['b'] })), /tensor 'b' is in both s1\.safetensors and s2\.safetensors/);
  rejects(() => openHfCheckpoint(sharded(files, { a: '../s1.safetensors' })), /shard name '\.\.\/s1\.safetensors' must be a relative path inside/);
  rejects(() => openHfCheckpoint(sharded(files, { a: '/etc/passwd' })), /must be a relative path inside/);
});

test('a corrupt shard header is reported with the shard file', () => {
  const dir = sharded({ 's1.safetensors': ['a'], 's2.safetensors': ['b'] });
  fs.writeFileSync(path.join(dir, 's2.safetensors'), Buffer.alloc(3));
  rejects(() => openHfCheckpoint(dir), /s2\.safetensors: 3 bytes is too small/);
});
