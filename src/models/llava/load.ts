/**
 * Loading LLaVA models:
 *
 *  - an HF directory (config.json architectures LlavaForConditionalGeneration or
 *    LlavaNextForConditionalGeneration, safetensors, tokenizer files, preprocessor_config.json).
 *    Weight names: the older layout `language_model.model.*` / `language_model.lm_head.weight` /
 *    `vision_tower.vision_model.*` / `multi_modal_projector.*` (/ `image_newline`), or the newer
 *    (transformers >= 4.52) `model.language_model.*` / `lm_head.weight` / `model.vision_tower.*` /
 *    `model.multi_modal_projector.*` (/ `model.image_newline`).
 *  - a llama.cpp pair: the text model as a llama GGUF plus an mmproj GGUF (general.architecture
 *    'clip'). loadModel(text.gguf, { mmproj }) names it; without the option, a file matching
 *    `mmproj*.gguf` beside the text GGUF is used: `mmproj-<text file name>` if present, else the
 *    only mmproj*.gguf in the directory (several candidates: an error asking for --mmproj).
 *    `mmproj: false` loads the text model alone. The image processor comes from the mmproj
 *    metadata (image size, mean/std; LLaVA-1.5's pad-to-square, as llama.cpp does).
 */
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { basename, dirname, join, resolve } from 'node:path';
import type { DType } from '../../core/dtype.js';
import { fail } from '../../core/errors.js';
import type { Allocator } from '../../core/tensor.js';
import { openHfCheckpoint, readJsonObject } from '../../formats/checkpoint.js';
import { readGguf } from '../../formats/gguf/reader.js';
import { loadTensor } from '../../formats/safetensors.js';
import type { KernelChoice } from '../../ops/linear.js';
import { chatTemplateFrom } from '../../text/chat.js';
import { ggufTokenizer, ggufTokenizerMetaFromKv } from '../../text/gguf-tokenizer.js';
import { loadHfTokenizer, type Tokenizer } from '../../text/tokenizer.js';
import { imageProcessorFromConfig } from '../../vision/preprocess.js';
import { llavaVisionConfigFromGguf, type LlavaVisionConfig } from '../clip/config.js';
import { ClipVisionModel, LlavaProjector } from '../clip/model.js';
import { type ClipVisionWeights, clipVisionWeightsFromGguf, clipVisionWeightsFromHf, projectorWeightsFromGguf, projectorWeightsFromHf, type ProjectorWeights } from '../clip/weights.js';
import type { HfCheckpoint } from '../../formats/checkpoint.js';
import type { LlamaWeights } from '../llama/weights.js';
import { llamaConfigFromGguf } from '../llama/gguf.js';
import { assemble, ggufLlamaWeights, hfLlamaWeights, hfTied, largestHfTensorBytes, type LoadOptions, MatrixFinisher, weightDtype } from '../load.js';
import { type LlavaConfig, llavaConfigFromHf } from './config.js';
import { ClipImageEncoder, LlavaModel } from './model.js';
import { clipPreprocessorConfig } from './tiny.js';

/** Whether `dir/config.json` names a LLaVA architecture. */
export function isLlavaDir(dir: string): boolean {
  const file = join(dir, 'config.json');
  if (!existsSync(file)) return false;
  try {
    const archs = (JSON.parse(readFileSync(file, 'utf8')) as { architectures?: unknown }).architectures;
    return Array.isArray(archs) && archs.some((a) => a === 'LlavaForConditionalGeneration' || a === 'LlavaNextForConditionalGeneration');
  } catch {
    return false;
  }
}

/** The mmproj GGUF beside `textGguf` (see the file comment), or undefined when there is none. */
export function findMmproj(textGguf: string): string | undefined {
  const dir = dirname(resolve(textGguf));
  const self = basename(textGguf);
  const paired = join(dir, `mmproj-${self}`);
  if (existsSync(paired)) return paired;
  const candidates = readdirSync(dir).filter((f) => /^mmproj.*\.gguf$/i.test(f) && f !== self);
  if (candidates.length === 0) return undefined;
  if (candidates.length > 1) fail('config', `several mmproj files beside ${self} (${candidates.join(', ')}): choose one with --mmproj, or --mmproj none`);
  return join(dir, candidates[0]!);
}

function visionModels(vc: LlavaVisionConfig, policy: string, kernels: KernelChoice, vision: ClipVisionWeights, projector: ProjectorWeights) {
  return {
    vision: new ClipVisionModel(vc.vision, vision, { policy, featureLayers: vc.featureLayers, strategy: vc.strategy, kernels }),
    projector: new LlavaProjector(vc.projector, projector, { policy, kernels }),
  };
}

/**
 * Runs `read` with a MatrixFinisher (see load.ts) whose staging region is sized for `largestBytes`,
 * releasing the region afterwards: each matrix is packed for the kernels as it is read, so the
 * loaded and packed copies never coexist.
 */
function finishing<T>(kernels: KernelChoice, dtype: DType | undefined, largestBytes: number, read: (finisher: MatrixFinisher) => T): T {
  const finisher = new MatrixFinisher(kernels, dtype, largestBytes);
  try {
    return read(finisher);
  } finally {
    finisher.done();
  }
}

/** Bytes of the largest tensor outside the text model (vision tower, projector), as stored. */
function largestVisionBytes(ckpt: HfCheckpoint, textPrefix: string, headName: string): number {
  let most = 0;
  for (const [name, t] of ckpt.tensors) if (!name.startsWith(textPrefix) && name !== headName) most = Math.max(most, t.byteLength);
  return most;
}

/** An HF LLaVA / LLaVA-NeXT checkpoint directory. */
export function loadLlavaHf(dir: string, opts: LoadOptions): LlavaModel {
  const ckpt = openHfCheckpoint(dir);
  const config: LlavaConfig = llavaConfigFromHf(ckpt.config);
  const has = (name: string) => ckpt.tensors.has(name);
  const get = (name: string) => ckpt.tensors.get(name) ?? fail('config', `checkpoint ${dir} is missing tensor ${name}`);
  const newer = has('model.language_model.embed_tokens.weight');
  const textPrefix = newer ? 'model.language_model.' : 'language_model.model.';
  const headName = newer ? 'lm_head.weight' : 'language_model.lm_head.weight';
  const text = config.text;
  const kernels = opts.kernels ?? 'wasm';
  const dtype = weightDtype(opts);
  const weights: LlamaWeights = finishing(kernels, dtype, largestHfTensorBytes(ckpt, dtype), (f) => hfLlamaWeights(ckpt, text, { model: textPrefix, head: headName }, dtype, f));
  if (!ckpt.tokenizerJson) fail('config', `checkpoint ${dir} has no tokenizer.json`);
  const tokenizer = loadHfTokenizer(ckpt.tokenizerJson, ckpt.tokenizerConfig, ckpt.generationConfig);
  const template = ckpt.chatTemplate ? readFileSync(ckpt.chatTemplate, 'utf8') : (chatTemplateFrom(ckpt.tokenizerConfig) ?? processorChatTemplate(dir));
  const textModel = assemble('hf', dir, { ...text, tiedEmbeddings: hfTied(ckpt, text, headName) }, weights, tokenizer, template, opts);

  const getTensor = (name: string, alloc?: Allocator) => loadTensor(get(name), alloc ? { alloc } : {});
  const vc = config.vision;
  // The vision side keeps its stored dtypes (the weight dtype option is the text model's).
  const [visionWeights, projectorWeights] = finishing(kernels, undefined, largestVisionBytes(ckpt, textPrefix, headName), (f) => [
    clipVisionWeightsFromHf(vc.vision, getTensor, undefined, f),
    projectorWeightsFromHf(vc.projector, getTensor, undefined, f),
  ] as const);
  const vm = visionModels(vc, textModel.info.policy, kernels, visionWeights, projectorWeights);
  if (!ckpt.preprocessorConfig) fail('config', `checkpoint ${dir} has no preprocessor_config.json`);
  const processor = imageProcessorFromConfig(ckpt.preprocessorConfig);
  let next: ConstructorParameters<typeof ClipImageEncoder>[3];
  if (config.next) {
    const name = ['image_newline', 'model.image_newline'].find(has) ?? fail('config', `checkpoint ${dir} has no image_newline (LLaVA-NeXT)`);
    const newline = Float32Array.from(getTensor(name).toFloat64Array());
    next = { gridPinpoints: config.next.gridPinpoints, newline };
  }
  const encoder = new ClipImageEncoder(vm.vision, vm.projector, processor, next);
  const arch = config.arch === 'llava' ? 'LlavaForConditionalGeneration' : 'LlavaNextForConditionalGeneration';
  return LlavaModel.fromText(textModel, config, encoder, arch, tokenizerHasImageToken(tokenizer, config.imageTokenId));
}

/** llava-hf repos keep the (processor's) chat template in chat_template.json: {"chat_template": "..."}. */
function processorChatTemplate(dir: string): string | undefined {
  const file = join(dir, 'chat_template.json');
  if (!existsSync(file)) return undefined;
  const t = readJsonObject(file)['chat_template'];
  if (typeof t !== 'string') fail('config', `${file}: chat_template must be a string`);
  return t;
}

/** Whether `<image>` tokenizes to exactly `id`. */
function tokenizerHasImageToken(tokenizer: Tokenizer, id: number): boolean {
  const ids = tokenizer.encode('<image>', { addSpecial: false });
  return ids.length === 1 && ids[0] === id;
}

/** A text GGUF plus an mmproj GGUF (LLaVA-1.5 layout). */
export function loadLlavaGguf(textPath: string, mmprojPath: string, opts: LoadOptions): LlavaModel {
  const file = readGguf(textPath);
  const text = llamaConfigFromGguf(file);
  const kernels = opts.kernels ?? 'wasm';
  const largestText = file.tensors.reduce((most, t) => Math.max(most, t.byteLength), 0);
  const weights = finishing(kernels, weightDtype(opts), largestText, (f) => ggufLlamaWeights(file, text, f));
  const kv = Object.fromEntries(file.metadata);
  const tokenizer = ggufTokenizer(ggufTokenizerMetaFromKv(kv));
  const template = chatTemplateFrom(undefined, typeof kv['tokenizer.chat_template'] === 'string' ? kv['tokenizer.chat_template'] : undefined);
  const textModel = assemble('gguf', textPath, text, weights, tokenizer, template, opts);

  const mm = readGguf(mmprojPath);
  const arch = mm.metadata.get('general.architecture');
  if (arch !== 'clip') fail('config', `${mmprojPath} is not an mmproj file (general.architecture '${String(arch)}', expected 'clip')`);
  const projectorType = mm.metadata.get('clip.projector_type');
  if (projectorType !== undefined && projectorType !== 'mlp') fail('config', `mmproj projector type '${String(projectorType)}' is not supported (supported: mlp)`);
  if (mm.metadata.get('clip.vision.image_grid_pinpoints') !== undefined || mm.tensors.some((t) => t.name === 'model.image_newline')) {
    fail('config', `${mmprojPath} is a LLaVA-NeXT mmproj; halfpipe loads LLaVA-NeXT from HF checkpoints only`);
  }
  const vc = llavaVisionConfigFromGguf(mm);
  if (vc.projector.outDim !== text.dim) fail('config', `the mmproj projector outputs ${vc.projector.outDim} values but the text model's width is ${text.dim}`);
  const largestMm = mm.tensors.reduce((most, t) => Math.max(most, t.byteLength), 0);
  const [visionWeights, projectorWeights] = finishing(kernels, undefined, largestMm, (f) => [clipVisionWeightsFromGguf(mm, vc.vision, undefined, f), projectorWeightsFromGguf(mm, vc.projector, f)] as const);
  const vm = visionModels(vc, textModel.info.policy, kernels, visionWeights, projectorWeights);
  const processor = imageProcessorFromConfig(clipPreprocessorConfig(vc.vision.imageSize, vc.imageMean, vc.imageStd), { padToSquare: true });
  const encoder = new ClipImageEncoder(vm.vision, vm.projector, processor);
  // The image token: `<image>` when the vocabulary has it, else any id (its embedding is replaced).
  const found = tokenizer.encode('<image>', { addSpecial: false });
  const inVocab = found.length === 1;
  const imageTokenId = inVocab ? found[0]! : (tokenizer.unkId ?? 0);
  const config: LlavaConfig = { arch: 'llava', text, vision: vc, imageTokenId, featureLayers: vc.featureLayers, strategy: vc.strategy, projectorAct: 'gelu' };
  return LlavaModel.fromText(textModel, config, encoder, 'LlavaForConditionalGeneration', inVocab);
}
