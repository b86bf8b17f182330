/**
 * A Hugging Face checkpoint directory: config.json, optional generation/tokenizer files, and the
 * weights as model.safetensors or as shards named by model.safetensors.index.json. Opening reads
 * the JSON files and every safetensors header (never the tensor data), so a broken checkpoint is
 * reported before any weight is loaded.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { fail } from '../core/errors.js';
import { readSafetensorsHeader, type SafetensorInfo } from './safetensors.js';

export interface HfCheckpoint {
  /** absolute path of the directory */
  readonly dir: string;
  /** config.json */
  readonly config: Record<string, unknown>;
  /** generation_config.json, when present */
  readonly generationConfig?: Record<string, unknown>;
  /** path of tokenizer.json, when present */
  readonly tokenizerJson?: string;
  /** tokenizer_config.json, when present */
  readonly tokenizerConfig?: Record<string, unknown>;
  /** path of chat_template.jinja, when present */
  readonly chatTemplate?: string;
  /** preprocessor_config.json (image processor of vision models), when present */
  readonly preprocessorConfig?: Record<string, unknown>;
  /** the safetensors files the weights came from, in order */
  readonly weightFiles: readonly string[];
  /** every tensor, by name */
  readonly tensors: Map<string, SafetensorInfo>;
}

export const SAFETENSORS_WEIGHTS = 'model.safetensors';
export const SAFETENSORS_INDEX = 'model.safetensors.index.json';

function isFile(p: string): boolean {
  try {
    return fs.statSync(p).isFile();
  } catch {
    return false;
  }
}

/** Reads a JSON object file; errors name the file. */
export function readJsonObject(file: string): Record<string, unknown> {
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch (e) {
    return fail('config', `cannot read ${file}: ${e instanceof Error ? ((e as NodeJS.ErrnoException).code ?? e.message) : String(e)}`);
  }
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (e) {
    return fail('config', `invalid JSON in ${file}: ${e instanceof Error ? e.message : String(e)}`);
  }
  if (typeof json !== 'object' || json === null || Array.isArray(json)) fail('config', `invalid JSON in ${file}: expected an object`);
  return json as Record<string, unknown>;
}

function optionalJson(file: string): Record<string, unknown> | undefined {
  return isFile(file) ? readJsonObject(file) : undefined;
}

/** A shard name from an index must stay inside the checkpoint directory. */
function checkShardName(name: string, index: string): void {
  const parts = name.split(/[\\/]/);
  if (name.length === 0 || path.isAbsolute(name) || /^[a-zA-Z]:/.test(name) || parts.includes('..')) {
    fail('config', `${index}: shard name '${name}' must be a relative path inside the checkpoint directory`);
  }
}

export function openHfCheckpoint(dir: string): HfCheckpoint {
  const abs = path.resolve(dir);
  let stat: fs.Stats;
  try {
    stat = fs.statSync(abs);
  } catch {
    return fail('config', `checkpoint directory not found: ${abs}`);
  }
  if (!stat.isDirectory()) fail('config', `not a checkpoint directory: ${abs} is a file`);
  const configFile = path.join(abs, 'config.json');
  if (!isFile(configFile)) fail('config', `${abs} has no config.json: not a Hugging Face checkpoint directory`);
  const config = readJsonObject(configFile);

  const tensors = new Map<string, SafetensorInfo>();
  const weightFiles: string[] = [];
  const single = path.join(abs, SAFETENSORS_WEIGHTS);
  const indexFile = path.join(abs, SAFETENSORS_INDEX);
  // model.safetensors wins when both exist, as in transformers.
  if (isFile(single)) {
    weightFiles.push(single);
    for (const t of readSafetensorsHeader(single).tensors) tensors.set(t.name, t);
  } else if (isFile(indexFile)) {
    const index = readJsonObject(indexFile);
    const weightMap = index.weight_map;
    if (typeof weightMap !== 'object' || weightMap === null || Array.isArray(weightMap)) fail('config', `${indexFile}: weight_map must be an object of tensor name -> shard file`);
    const listed = Object.entries(weightMap as Record<string, unknown>);
    if (listed.length === 0) fail('config', `${indexFile}: weight_map lists no tensors`);
    const shards: string[] = [];
    for (const [name, shard] of listed) {
      if (typeof shard !== 'string') fail('config', `${indexFile}: weight_map['${name}'] must be a file name`);
      checkShardName(shard, indexFile);
      if (!shards.includes(shard)) shards.push(shard);
    }
    for (const shard of shards) {
      const file = path.join(abs, shard);
      if (!isFile(file)) fail('config', `shard ${shard} listed in ${SAFETENSORS_INDEX} is missing from ${abs}`);
      weightFiles.push(file);
      for (const t of readSafetensorsHeader(file).tensors) {
        const other = tensors.get(t.name);
        if (other) fail('config', `tensor '${t.name}' is in both ${path.relative(abs, other.file)} and ${shard}`);
        tensors.set(t.name, t);
      }
    }
    for (const [name, shard] of listed as Array<[string, string]>) {
      const t = tensors.get(name);
      if (!t) fail('config', `tensor '${name}' listed in ${SAFETENSORS_INDEX} is not in shard ${shard}`);
      if (t.file !== path.join(abs, shard)) fail('config', `tensor '${name}' is listed in shard ${shard} but found in ${path.relative(abs, t.file)}`);
    }
  } else {
    const files = fs.readdirSync(abs);
    const stray = files.filter((f) => f.endsWith('.safetensors'));
    const other = files.filter((f) => /\.(bin|pth|pt|gguf|ckpt|h5|msgpack)$/.test(f));
    const list = (names: string[]) => names.slice(0, 4).join(', ') + (names.length > 4 ? ', ...' : '');
    let hint = '';
    if (stray.length > 0) hint = ` (found ${list(stray)} but no index naming the shards)`;
    else if (other.length > 0) hint = ` (found ${list(other)}; halfpipe reads HF checkpoints only as safetensors)`;
    fail('config', `${abs} has no ${SAFETENSORS_WEIGHTS} or ${SAFETENSORS_INDEX}${hint}`);
  }

  const tokenizerJson = path.join(abs, 'tokenizer.json');
  const chatTemplate = path.join(abs, 'chat_template.jinja');
  const checkpoint: HfCheckpoint = {
    dir: abs,
    config,
    weightFiles,
    tensors,
  };
  const generationConfig = optionalJson(path.join(abs, 'generation_config.json'));
  const tokenizerConfig = optionalJson(path.join(abs, 'tokenizer_config.json'));
  const preprocessorConfig = optionalJson(path.join(abs, 'preprocessor_config.json'));
  return {
    ...checkpoint,
    ...(generationConfig && { generationConfig }),
    ...(isFile(tokenizerJson) && { tokenizerJson }),
    ...(tokenizerConfig && { tokenizerConfig }),
    ...(isFile(chatTemplate) && { chatTemplate }),
    ...(preprocessorConfig && { preprocessorConfig }),
  };
}
