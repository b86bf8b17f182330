/**
 * LLaVA (Liu et al. 2023; LLaVA-NeXT, Liu et al. 2024): a LLaMA text model whose image
 * placeholder tokens get projected CLIP features as their input embeddings.
 *
 *   prompt ids:  ... <image> ...          one placeholder per image
 *   expanded:    ... <image> x rows ...   rows = the image's feature rows (prompt.ts)
 *   forward:     token embeddings, except rows [at, at + rows) of each image span, which are the
 *                image's projected features (LlamaSession.forward's `embeddings`)
 *
 * Image tokens are ordinary positions: RoPE rotates them at their sequence positions, the KV
 * cache holds them like text, and decoding continues after them. A LlavaSession remembers where
 * its images sit (absolute positions), so however the prompt is split into forward() calls
 * (chunked prefill, a numerics re-run, an upcast), each call gets the slices of the image
 * features that fall inside it.
 */
import { fail } from '../../core/errors.js';
import { generateTokens, type GenerateOptions, type GenerateResult, type GeneratedToken, type NumericsGuard } from '../../generate/generate.js';
import { analyze, firstBadOp, NumericsMonitor, type TraceReport } from '../../monitor/index.js';
import { renderChat } from '../../text/chat.js';
import type { Tokenizer } from '../../text/tokenizer.js';
import { decodeImage, type RgbImage } from '../../vision/image.js';
import { anyresPatches, type ImageProcessor, preprocess } from '../../vision/preprocess.js';
import type { PrecisionPolicy } from '../../precision/policy.js';
import type { ClipModelOptions, ClipVisionModel, LlavaProjector } from '../clip/model.js';
import { LlamaModel, LlamaSession, type LlamaModelOptions } from '../llama/model.js';
import { argmax, type ModelInfo, type Prompt, TextModel, tracedGreedy, type TraceOptions, type TraceResult } from '../load.js';
import type { LlavaConfig } from './config.js';
import { nextLayout, packNextFeatures } from './next.js';
import { expandAt, type ImageSpan, imageSegments } from './prompt.js';

/** An image: a file path or data URI, encoded bytes, or decoded RGB. */
export type ImageInput = string | Buffer | Uint8Array | RgbImage;

/** Projected features (rows x text dim, row-major) of one decoded image. */
export interface ImageEncoder {
  /** the text model's embedding width: every feature row has this many values */
  readonly dim: number;
  encodeImage(image: RgbImage): Float32Array;
  /** encodeImage, giving the event loop turns while it works (a server's other requests go on) */
  encodeImageAsync?(image: RgbImage): Promise<Float32Array>;
  /**
   * The same encoder (shared weights) with a numerics probe on every vision and projector op
   * and/or another precision policy; absent when the encoder has no probes (trace then records
   * only the text model).
   */
  withOptions?(opts: ClipModelOptions): ImageEncoder;
}

/**
 * The CLIP + projector encoder: preprocess (pad/resize/crop/normalize), encode, project; for
 * LLaVA-NeXT the anyres tiles are encoded one by one and packed (next.ts).
 */
export class ClipImageEncoder implements ImageEncoder {
  readonly dim: number;

  constructor(
    readonly vision: ClipVisionModel,
    readonly projector: LlavaProjector,
    readonly processor: ImageProcessor,
    readonly next?: { gridPinpoints: Array<[number, number]>; newline: Float32Array },
  ) {
    this.dim = projector.config.outDim;
    if (vision.outputDim !== projector.config.inDim) fail('shape', `the vision tower gives ${vision.outputDim}-wide features but the projector takes ${projector.config.inDim}`);
  }

  withOptions(opts: ClipModelOptions): ClipImageEncoder {
    return new ClipImageEncoder(this.vision.withOptions(opts), this.projector.withOptions(opts), this.processor, this.next);
  }

  private tile(pixels: Float32Array): Float32Array {
    return this.projector.project(this.vision.encode(pixels), this.vision.outputRows);
  }

  encodeImage(image: RgbImage): Float32Array {
    if (!this.next) return this.tile(preprocess(image, this.processor).pixels);
    const { patches, pack } = this.anyres(image);
    return pack(patches.map((p) => this.tile(p)));
  }

  async encodeImageAsync(image: RgbImage): Promise<Float32Array> {
    const tile = async (pixels: Float32Array) => this.projector.project(await this.vision.encodeAsync(pixels), this.vision.outputRows);
    if (!this.next) return tile(preprocess(image, this.processor).pixels);
    const { patches, pack } = this.anyres(image);
    const tiles: Float32Array[] = [];
    for (const p of patches) tiles.push(await tile(p));
    return pack(tiles);
  }

  /** LLaVA-NeXT: the anyres tiles of an image, and how their features are packed. */
  private anyres(image: RgbImage): { patches: Float32Array[]; pack: (tiles: Float32Array[]) => Float32Array } {
    const next = this.next!;
    const { imageSize, patchSize } = this.vision.config;
    if (this.vision.strategy !== 'default') fail('config', "LLaVA-NeXT packing needs vision_feature_select_strategy 'default'");
    const { patches } = anyresPatches(image, this.processor, next.gridPinpoints, imageSize);
    const layout = nextLayout(image.height, image.width, next.gridPinpoints, imageSize, patchSize);
    return { patches, pack: (tiles) => packNextFeatures(tiles, layout, next.newline, this.dim) };
  }
}

/** Input embeddings at absolute sequence positions. */
export interface PlacedEmbeddings {
  at: number;
  data: Float32Array;
}

/**
 * A LlamaSession that knows where its images are: every pass that appends tokens (forward, or a
 * batch) takes, as input embeddings, the rows of every image span that fall inside them.
 */
export class LlavaSession extends LlamaSession {
  private readonly images: PlacedEmbeddings[];

  constructor(model: LlamaModel, images: readonly PlacedEmbeddings[] = []) {
    super(model);
    const dim = model.config.dim;
    for (const { at, data } of images) {
      if (!Number.isInteger(at) || at < 0 || data.length === 0 || data.length % dim !== 0) fail('shape', `image embeddings of ${data.length} values at ${at} do not fit width ${dim}`);
    }
    this.images = [...images];
  }

  /** Places more image rows (e.g. for a follow-up turn) at absolute positions. */
  addImages(images: readonly PlacedEmbeddings[]): void {
    this.images.push(...images);
  }

  /** The rows of every image span inside positions [start, end), as input embeddings relative to start. */
  override inputEmbeddings(start: number, end: number): Array<{ at: number; data: Float32Array }> {
    const dim = this.model.config.dim;
    const spans: Array<{ at: number; data: Float32Array }> = [];
    for (const { at, data } of this.images) {
      const lo = Math.max(at, start);
      const hi = Math.min(at + data.length / dim, end);
      if (lo < hi) spans.push({ at: lo - start, data: data.subarray((lo - at) * dim, (hi - at) * dim) });
    }
    return spans;
  }
}

/** A prompt with its images encoded: token ids (image placeholders expanded), spans and features. */
export interface PreparedPrompt {
  ids: number[];
  spans: ImageSpan[];
  /** features of each span, in span order */
  embeddings: PlacedEmbeddings[];
}

export interface LlavaGenerateOptions extends GenerateOptions {
  /** one per `<image>` placeholder, in order */
  images?: readonly ImageInput[];
}

export interface LlavaTraceOptions extends TraceOptions {
  images?: readonly ImageInput[];
}

const IMAGE_TEXT = '<image>';

function toRgb(image: ImageInput): RgbImage {
  if (typeof image === 'string' || image instanceof Uint8Array) return decodeImage(image);
  if (image && typeof image === 'object' && 'data' in image && 'width' in image) return image;
  return fail('usage', 'an image must be a path, a data URI, encoded bytes or {width, height, data}');
}


/**
 * A loaded LLaVA: the text model (a TextModel, so everything text-only still works) plus the image
 * encoder. `<image>` in a prompt string or in chat text (the template renders image parts as
 * `<image>`) marks where each image goes.
 *
 * Placeholder ids: when the tokenizer has `<image>` as one token (HF llava checkpoints, halfpipe's
 * tiny GGUF), the prompt is tokenized whole and each such id expanded, as HF's processor does. When
 * it has none (llama.cpp text GGUFs of LLaVA keep the base vocabulary), the text is split at each
 * `<image>`, the pieces tokenized separately (as llama.cpp's mtmd does) and `imageTokenId` (any id:
 * its embedding is replaced) fills the image rows.
 */
export class LlavaModel extends TextModel {
  constructor(
    model: LlamaModel,
    tokenizer: Tokenizer,
    chatTemplate: string | undefined,
    info: ModelInfo,
    readonly llava: LlavaConfig,
    readonly encoder: ImageEncoder,
    /** whether `<image>` is a single token of the tokenizer (see the class comment) */
    readonly imageTokenInVocab: boolean = true,
  ) {
    super(model, tokenizer, chatTemplate, info);
    if (encoder.dim !== model.config.dim) fail('shape', `the image encoder gives ${encoder.dim}-wide features but the text model's width is ${model.config.dim}`);
  }

  static fromText(text: TextModel, llava: LlavaConfig, encoder: ImageEncoder, architecture: string, imageTokenInVocab = true): LlavaModel {
    return new LlavaModel(text.model, text.tokenizer, text.chatTemplate, { ...text.info, architecture }, llava, encoder, imageTokenInVocab);
  }

  get imageTokenId(): number {
    return this.llava.imageTokenId;
  }

  /** Ids of a prompt with one (unexpanded) placeholder per `<image>`, and where the placeholders are. */
  private placeholderIds(prompt: Prompt): { ids: number[]; positions: number[] } {
    const found = (ids: number[]) => ({ ids, positions: ids.flatMap((id, i) => (id === this.imageTokenId ? [i] : [])) });
    if (this.imageTokenInVocab || Array.isArray(prompt)) return found(this.promptIds(prompt));
    let text: string;
    let addSpecial = true;
    if (typeof prompt === 'string') text = prompt;
    else {
      const { messages } = prompt as { messages: Parameters<typeof renderChat>[1] };
      if (!this.chatTemplate) fail('config', 'this model has no chat template');
      const t = this.tokenizer;
      const bos = t.bosId === undefined ? undefined : t.tokenText(t.bosId);
      const eos = t.eosIds[0] === undefined ? undefined : t.tokenText(t.eosIds[0]);
      text = renderChat(this.chatTemplate, messages, { ...(bos ? { bosToken: bos } : {}), ...(eos ? { eosToken: eos } : {}), addGenerationPrompt: true });
      addSpecial = bos === undefined || !text.startsWith(bos);
    }
    const pieces = text.split(IMAGE_TEXT);
    const ids = this.tokenizer.encode(pieces[0]!, { addSpecial });
    const positions: number[] = [];
    for (const piece of pieces.slice(1)) {
      positions.push(ids.length);
      ids.push(this.imageTokenId);
      if (piece.length > 0) ids.push(...this.tokenizer.encode(piece, { addSpecial: false }));
    }
    return { ids, positions };
  }

  /** Tokenizes the prompt, encodes the images and expands the placeholders. */
  prepare(prompt: Prompt, images: readonly ImageInput[] = [], encode: (image: RgbImage, index: number) => Float32Array = (img) => this.encoder.encodeImage(img)): PreparedPrompt {
    const { ids, positions } = this.placeholderIds(prompt);
    // Cheap check first: a mismatch fails before any image is decoded or encoded.
    if (positions.length !== images.length) expandAt(ids, positions, images.map(() => 1), this.imageTokenId);
    const features = images.map((img, k) => encode(toRgb(img), k));
    const dim = this.model.config.dim;
    const expanded = expandAt(ids, positions, features.map((f) => f.length / dim), this.imageTokenId);
    return { ...expanded, embeddings: expanded.spans.map((s) => ({ at: s.at, data: features[s.image]! })) };
  }

  /**
   * prepare(), with the images encoded by encodeImageAsync where the encoder has it: the event loop
   * gets turns while they are encoded (a server's other requests go on). The same result.
   */
  async prepareAsync(prompt: Prompt, images: readonly ImageInput[] = []): Promise<PreparedPrompt> {
    const { ids, positions } = this.placeholderIds(prompt);
    // Cheap check first, as prepare does: a count mismatch fails before any image is encoded.
    if (positions.length !== images.length) expandAt(ids, positions, images.map(() => 1), this.imageTokenId);
    const rgbs = images.map(toRgb);
    const features: Float32Array[] = [];
    for (const rgb of rgbs) features.push(this.encoder.encodeImageAsync ? await this.encoder.encodeImageAsync(rgb) : this.encoder.encodeImage(rgb));
    return this.prepare(prompt, rgbs, (_, k) => features[k]!);
  }

  /** A session of `model` (default: this one's) with the prepared images in place. */
  session(prepared: PreparedPrompt, model: LlamaModel = this.model): LlavaSession {
    return new LlavaSession(model, prepared.embeddings);
  }

  /** The numerics monitor's segment of each position: 'text', 'image 0', 'image 1', ..., 'generated'. */
  segments(prepared: PreparedPrompt): (position: number) => string {
    return imageSegments(prepared.spans, prepared.ids.length);
  }

  override async *generate(prompt: Prompt, opts: LlavaGenerateOptions = {}): AsyncGenerator<GeneratedToken, GenerateResult> {
    const prepared = this.prepare(prompt, opts.images ?? []);
    const session = this.session(prepared);
    try {
      return yield* generateTokens(session, this.tokenizer, prepared.ids, opts, this.imageGuard(prepared));
    } finally {
      session.dispose();
    }
  }

  /** Logits of every position of the prompt with its images (ids.length x vocab), from a fresh session. */
  override logits(prompt: Prompt, opts: { images?: readonly ImageInput[] } = {}): Float32Array {
    const prepared = this.prepare(prompt, opts.images ?? []);
    return this.session(prepared).forward(prepared.ids, { allLogits: true });
  }

  /** Non-finite handling with the images in place (TextModel's guard re-runs text only). */
  imageGuard(prepared: PreparedPrompt): NumericsGuard {
    return {
      diagnose: (ids) => {
        const monitor = new NumericsMonitor({});
        monitor.beginForward('diagnose');
        this.session(prepared, this.withOptions({ probe: monitor.probe })).forward(ids);
        return firstBadOp(monitor.report())?.message ?? 'non-finite logits';
      },
      upcast: (ids) => {
        const session = this.session(prepared, this.withOptions({ policy: 'f32', kvCache: 'f32' }));
        return { session, logits: session.forward(ids) };
      },
    };
  }

  /**
   * TextModel.trace with images: each image's vision tower and projector run first, with the
   * monitor's probe on every op, as its own forward ('vision image k', segment 'image k': its rows
   * are the image's patches); then the text prefill and decode steps, whose positions are
   * segmented 'text' / 'image N' / 'generated' unless opts.segments says otherwise. The encoder
   * runs under the load policy; the shadow run encodes the images again under the shadow policy
   * (same precision policy for vision and text, as in the main run).
   */
  override trace(prompt: Prompt, opts: LlavaTraceOptions = {}): TraceResult {
    const images = (opts.images ?? []).map(toRgb);
    const encodeWith = (monitor: NumericsMonitor, policy?: string | PrecisionPolicy) => {
      const encoder = this.encoder.withOptions ? this.encoder.withOptions({ probe: monitor.probe, ...(policy === undefined ? {} : { policy }) }) : this.encoder;
      return (image: RgbImage, k: number) => {
        monitor.beginForward(`vision image ${k}`, { segment: `image ${k}` });
        return encoder.encodeImage(image);
      };
    };
    const maxTokens = opts.maxTokens ?? 8;
    const run = (model: LlamaModel, monitor: NumericsMonitor, prepared: PreparedPrompt, segments: (position: number) => string, tokens: number[] | null) => {
      monitor.setSegments(segments);
      return tracedGreedy(this.session(prepared, model), prepared.ids, monitor, tokens ?? maxTokens);
    };
    const monitor = new NumericsMonitor({ residualChannels: true, keepData: opts.shadow !== undefined });
    const prepared = this.prepare(prompt, images, encodeWith(monitor));
    const segments = opts.segments ?? this.segments(prepared);
    const tokens = run(this.withOptions({ probe: monitor.probe }), monitor, prepared, segments, null);
    const report = monitor.report();
    let shadow: TraceReport | undefined;
    if (opts.shadow) {
      const shadowMonitor = new NumericsMonitor({ residualChannels: true, keepData: true });
      const shadowPrepared = this.prepare(prompt, images, encodeWith(shadowMonitor, opts.shadow));
      run(this.withOptions({ probe: shadowMonitor.probe, policy: opts.shadow, kvCache: 'f32' }), shadowMonitor, shadowPrepared, segments, tokens);
      shadow = shadowMonitor.report();
    }
    const analyses = analyze(report, shadow ? { shadow } : {});
    return { tokens, report, analyses, ...(shadow ? { shadow } : {}) };
  }

  /**
   * Several prompts (each with its own images) run as a batch of interleaved sessions: prefill in
   * chunks of `chunk` tokens round-robin, then `steps` greedy decode steps round-robin. Returns per
   * request the logits of its last prompt token and of each decode step. Sessions share only the
   * read-only weights, so this equals running each request alone.
   */
  batch(requests: ReadonlyArray<{ prompt: Prompt; images?: readonly ImageInput[] }>, opts: { steps?: number; chunk?: number; modelOptions?: LlamaModelOptions } = {}): Array<{ ids: number[]; tokens: number[]; logits: Float32Array[] }> {
    const steps = opts.steps ?? 4;
    const chunk = opts.chunk ?? 8;
    const model = opts.modelOptions ? this.withOptions(opts.modelOptions) : this.model;
    const states = requests.map((r) => {
      const prepared = this.prepare(r.prompt, r.images ?? []);
      return { prepared, session: this.session(prepared, model), done: 0, last: undefined as Float32Array | undefined, tokens: [] as number[], logits: [] as Float32Array[] };
    });
    for (let pending = true; pending; ) {
      pending = false;
      for (const s of states) {
        const n = s.prepared.ids.length;
        if (s.done >= n) continue;
        const m = Math.min(chunk, n - s.done);
        s.last = s.session.forward(s.prepared.ids.slice(s.done, s.done + m));
        s.done += m;
        pending ||= s.done < n;
      }
    }
    for (const s of states) s.logits.push(s.last!);
    for (let step = 0; step < steps; step++) {
      for (const s of states) {
        const next = argmax(s.logits[s.logits.length - 1]!);
        s.tokens.push(next);
        s.logits.push(s.session.forward([next]));
      }
    }
    return states.map((s) => ({ ids: s.prepared.ids, tokens: s.tokens, logits: s.logits }));
  }
}
