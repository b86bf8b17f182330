/**
 * The LLaMA forward as a graph of probes: which probes feed which, and their execution order.
 */
import { LLAMA_PROBE_NAMES } from '../models/llama/model.js';
import type { LlamaProbeName } from './types.js';

/** The per-layer probes in execution order: the model's, without the ones outside the layers. */
export const LAYER_PROBES: readonly LlamaProbeName[] = LLAMA_PROBE_NAMES.filter((p) => p !== 'embeddings' && p !== 'final_norm' && p !== 'logits');

export interface ProbeRef {
  probe: LlamaProbeName;
  layer: number;
}

/** The residual stream entering layer `layer`: the embeddings for layer 0, else residual_2 of the layer before. */
function residualInto(layer: number): ProbeRef {
  return layer <= 0 ? { probe: 'embeddings', layer: -1 } : { probe: 'residual_2', layer: layer - 1 };
}

/**
 * The probes whose values an op reads (its inputs in the dataflow), for a model of `nLayers`
 * layers: act reads gate and up, down reads act, mlp_norm reads residual_1, residual_1 reads the
 * incoming residual stream and o_proj, scores read q_rope and k_rope (and the cached keys), probs
 * read scores, attn_out reads probs and v, final_norm reads the last residual_2.
 */
export function probeInputs(name: LlamaProbeName, layer: number, nLayers: number): ProbeRef[] {
  const at = (probe: LlamaProbeName): ProbeRef => ({ probe, layer });
  switch (name) {
    case 'embeddings':
      return [];
    case 'attn_norm':
      return [residualInto(layer)];
    case 'q':
    case 'k':
    case 'v':
      return [at('attn_norm')];
    case 'q_rope':
      return [at('q')];
    case 'k_rope':
      return [at('k')];
    case 'scores':
      return [at('q_rope'), at('k_rope')];
    case 'probs':
      return [at('scores')];
    case 'attn_out':
      return [at('probs'), at('v')];
    case 'o_proj':
      return [at('attn_out')];
    case 'residual_1':
      return [residualInto(layer), at('o_proj')];
    case 'mlp_norm':
      return [at('residual_1')];
    case 'gate':
    case 'up':
      return [at('mlp_norm')];
    case 'act':
      return [at('gate'), at('up')];
    case 'down':
      return [at('act')];
    case 'residual_2':
      return [at('residual_1'), at('down')];
    case 'final_norm':
      return [nLayers > 0 ? { probe: 'residual_2', layer: nLayers - 1 } : { probe: 'embeddings', layer: -1 }];
    case 'logits':
      return [{ probe: 'final_norm', layer: -1 }];
  }
}

/** A sort key for (probe, layer) in the order one chunk executes them. */
export function executionRank(name: LlamaProbeName, layer: number): number {
  if (name === 'embeddings') return -1;
  if (name === 'final_norm') return 1e9;
  if (name === 'logits') return 1e9 + 1;
  const i = name === 'scores' ? LAYER_PROBES.indexOf('k_rope') + 0.5 : LAYER_PROBES.indexOf(name);
  return layer * LAYER_PROBES.length + i;
}

/** Whether a probe carries the residual stream tracked per channel (embeddings and residual_2). */
export function isResidualProbe(name: LlamaProbeName): boolean {
  return name === 'embeddings' || name === 'residual_2';
}
