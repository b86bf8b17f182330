/**
 * LLaVA prompts: each `<image>` placeholder becomes as many image tokens as the image has feature
 * rows, and the spans where the projected features replace those tokens' embeddings.
 *
 * The expansion works on token ids, not text: the prompt (a string, or chat text rendered by the
 * template) is tokenized once, the tokenizer recognizes `<image>` as one special token, and each
 * occurrence is repeated `rows` times. This is what HF's LlavaProcessor does in text
 * ("<image>" * n, then tokenize): n adjacent special tokens tokenize to n ids, whatever surrounds them.
 *
 *   LLaVA-1.5: rows = (image_size / patch_size)^2 (+1 with the 'full' strategy, which keeps CLS);
 *              576 for 336 / 14.
 *   LLaVA-NeXT: rows per image from its anyres grid and size (see next.ts).
 */
import { fail } from '../../core/errors.js';

/** Where one image's features go: token positions [at, at + rows). */
export interface ImageSpan {
  /** index of the image (its order in the prompt) */
  image: number;
  at: number;
  rows: number;
}

export interface ExpandedPrompt {
  ids: number[];
  spans: ImageSpan[];
}

/** Placeholder ids in `ids` (one per image). */
export function countImageTokens(ids: readonly number[], imageTokenId: number): number {
  let n = 0;
  for (const id of ids) if (id === imageTokenId) n++;
  return n;
}

/**
 * Replaces the i-th `imageTokenId` in `ids` by rows[i] copies of it. Each placeholder must be a
 * single id; already-expanded prompts (runs of image ids) are not accepted, since the runs would
 * be ambiguous. One-line errors name both counts when images and placeholders differ.
 */
export function expandImageTokens(ids: readonly number[], imageTokenId: number, rows: readonly number[]): ExpandedPrompt {
  const at: number[] = [];
  ids.forEach((id, i) => {
    if (id === imageTokenId) at.push(i);
  });
  return expandAt(ids, at, rows, imageTokenId);
}

/**
 * Replaces the ids at `positions` (ascending, one per image) by rows[i] copies of `fillId`. The
 * general form of expandImageTokens, for prompts whose placeholders are not a vocabulary token.
 */
export function expandAt(ids: readonly number[], positions: readonly number[], rows: readonly number[], fillId: number): ExpandedPrompt {
  const placeholders = positions.length;
  if (placeholders !== rows.length) {
    fail('usage', `the prompt has ${placeholders} <image> placeholder${placeholders === 1 ? '' : 's'} but ${rows.length} image${rows.length === 1 ? ' was' : 's were'} given`);
  }
  const out: number[] = [];
  const spans: ImageSpan[] = [];
  let next = 0;
  for (let i = 0; i < ids.length; i++) {
    if (i !== positions[next]) {
      out.push(ids[i]!);
      continue;
    }
    const image = next++;
    const n = rows[image]!;
    if (!Number.isInteger(n) || n < 1) fail('usage', `image ${image} has ${n} feature rows; expected a positive integer`);
    spans.push({ image, at: out.length, rows: n });
    for (let r = 0; r < n; r++) out.push(fillId);
  }
  if (next !== placeholders) fail('usage', `image placeholder positions must be ascending and inside the ${ids.length} prompt tokens`);
  return { ids: out, spans };
}

/** The numerics monitor's segment of each position: 'text', 'image N', or 'generated' from promptLength on. */
export function imageSegments(spans: readonly ImageSpan[], promptLength: number): (position: number) => string {
  return (p: number) => {
    if (p >= promptLength) return 'generated';
    for (const s of spans) if (p >= s.at && p < s.at + s.rows) return `image ${s.image}`;
    return 'text';
  };
}

/** Feature rows of one LLaVA-1.5 image: (image_size / patch_size)^2, plus CLS with the 'full' strategy. */
export function llavaImageRows(imageSize: number, patchSize: number, strategy: 'default' | 'full'): number {
  if (!Number.isInteger(imageSize / patchSize)) fail('config', `image_size ${imageSize} is not a multiple of patch_size ${patchSize}`);
  const side = imageSize / patchSize;
  return side * side + (strategy === 'full' ? 1 : 0);
}
