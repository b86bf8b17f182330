/**
 * Test helpers: a fake forward that calls a probe exactly as the LLaMA model does (same names,
 * order, layers, shapes, chunking and head rows), with values chosen by the caller. Lets the
 * monitor and its analyses be tested on hand-made numerics without a model.
 */
import type { DType } from '../core/dtype.js';
import { LAYER_PROBES } from './graph.js';
import type { LlamaProbeName, MonitorProbe } from './types.js';

export interface FakeShape {
  layers: number;
  dim: number;
  hidden: number;
  heads: number;
  kvHeads: number;
  headDim: number;
  vocab: number;
}

export const FAKE_SHAPE: FakeShape = { layers: 2, dim: 8, hidden: 12, heads: 2, kvHeads: 1, headDim: 4, vocab: 10 };

export interface FakeForwardOptions {
  shape?: FakeShape;
  /** sequence position of the first token of this forward */
  start: number;
  /** tokens in this forward */
  tokens: number;
  /** rows per prefill chunk (default: all) */
  chunk?: number;
  /** head rows: the last token only (default) or every token */
  allLogits?: boolean;
  /** the dtype reported for a probe (default f32) */
  dtype?: (name: LlamaProbeName, layer: number) => DType;
  /** the value of element `i` of the row of token `token` (default: a small deterministic pattern) */
  value?: (name: LlamaProbeName, layer: number, token: number, i: number) => number;
  /** ProbeContext.overflowed for a call (given the values of that call) */
  overflowed?: (name: LlamaProbeName, layer: number, data: Float32Array) => number;
  /** pass no ProbeContext at all (the model before the context was added) */
  noContext?: boolean;
}

/** The row shape (without the token dim) the model reports for a probe. */
export function fakeRowShape(name: LlamaProbeName, s: FakeShape): number[] {
  switch (name) {
    case 'q':
    case 'q_rope':
      return [s.heads, s.headDim];
    case 'k':
    case 'v':
    case 'k_rope':
      return [s.kvHeads, s.headDim];
    case 'attn_out':
      return [s.heads * s.headDim];
    case 'gate':
    case 'up':
    case 'act':
      return [s.hidden];
    case 'logits':
      return [s.vocab];
    default:
      return [s.dim];
  }
}

export function defaultFakeValue(name: LlamaProbeName, layer: number, token: number, i: number): number {
  return Math.sin(1 + i * 0.7 + token * 1.3 + layer * 0.11 + name.length) * (1 + (i % 3));
}

/** The layer probes fakeForward reports: all but scores and probs, whose width grows with the sequence. */
export const FAKE_LAYER_PROBES = LAYER_PROBES.filter((p) => p !== 'scores' && p !== 'probs');

/** Calls `probe` as one LlamaSession.forward of `tokens` tokens from position `start` would. */
export function fakeForward(probe: MonitorProbe, o: FakeForwardOptions): void {
  const s = o.shape ?? FAKE_SHAPE;
  const chunk = o.chunk ?? o.tokens;
  const value = o.value ?? defaultFakeValue;
  const call = (name: LlamaProbeName, layer: number, first: number, rows: number) => {
    const row = fakeRowShape(name, s);
    const rowLen = row.reduce((a, b) => a * b, 1);
    const data = new Float32Array(rows * rowLen);
    for (let r = 0; r < rows; r++) for (let i = 0; i < rowLen; i++) data[r * rowLen + i] = value(name, layer, first + r, i);
    const shape = [rows, ...row];
    if (o.noContext) probe(name, layer, data, shape);
    else probe(name, layer, data, shape, { dtype: o.dtype?.(name, layer) ?? 'f32', firstToken: first, overflowed: o.overflowed?.(name, layer, data) ?? 0, clamped: 0 });
  };
  for (let from = 0; from < o.tokens; from += chunk) {
    const m = Math.min(chunk, o.tokens - from);
    const first = o.start + from;
    call('embeddings', -1, first, m);
    for (let l = 0; l < s.layers; l++) for (const name of FAKE_LAYER_PROBES) call(name, l, first, m);
    if (o.allLogits) {
      call('final_norm', -1, first, m);
      call('logits', -1, first, m);
    } else if (from + m === o.tokens) {
      call('final_norm', -1, first + m - 1, 1);
      call('logits', -1, first + m - 1, 1);
    }
  }
}
