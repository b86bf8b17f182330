/**
 * The LLaMA forward, and the LLaVA vision tower and projector before it, as a graph of probes:
 * which probes feed which, and their execution order.
 */
import { CLIP_PROBE_NAMES } from '../models/clip/model.js';
import { LLAMA_PROBE_NAMES } from '../models/llama/model.js';
import type { ClipProbeName, LlamaProbeName, ProbeName } from './types.js';

/** Every probe name the monitor takes: the text model's, then the vision tower's and projector's. */
export const PROBE_NAMES: readonly ProbeName[] = [...LLAMA_PROBE_NAMES, ...CLIP_PROBE_NAMES];

/** The per-layer probes of the vision tower in execution order. */
export const VISION_LAYER_PROBES: readonly ClipProbeName[] = CLIP_PROBE_NAMES.filter((p) => p.startsWith('vision.') && p !== 'vision.embeddings' && p !== 'vision.pre_ln');

/** The projector's probes in execution order. */
export const PROJECTOR_PROBES: readonly ClipProbeName[] = CLIP_PROBE_NAMES.filter((p) => p.startsWith('projector.'));

/** Which part of the model a probe belongs to: the vision tower, the projector, or the text model. */
export type Tower = 'vision' | 'projector' | 'text';

export function towerOf(name: ProbeName): Tower {
  if (name.startsWith('vision.')) return 'vision';
  if (name.startsWith('projector.')) return 'projector';
  return 'text';
}

/** Whether a probe belongs to the image side (vision tower or projector). */
export function isImageProbe(name: ProbeName): name is ClipProbeName {
  return towerOf(name) !== 'text';
}

/** The per-layer probes in execution order: the model's, without the ones outside the layers. */
export const LAYER_PROBES: readonly LlamaProbeName[] = LLAMA_PROBE_NAMES.filter((p) => p !== 'embeddings' && p !== 'final_norm' && p !== 'logits');

export interface ProbeRef {
  probe: ProbeName;
  layer: number;
}

/** The residual stream entering layer `layer`: the embeddings for layer 0, else residual_2 of the layer before. */
function residualInto(layer: number): ProbeRef {
  return layer <= 0 ? { probe: 'embeddings', layer: -1 } : { probe: 'residual_2', layer: layer - 1 };
}

/** The vision residual stream entering layer `layer`: pre_ln for layer 0, else residual_2 of the layer before. */
function visionResidualInto(layer: number): ProbeRef {
  return layer <= 0 ? { probe: 'vision.pre_ln', layer: -1 } : { probe: 'vision.residual_2', layer: layer - 1 };
}

/**
 * The probes whose values an op reads (its inputs in the dataflow), for a model of `nLayers`
 * text layers (and `nVisionLayers` vision layers run): act reads gate and up, down reads act,
 * mlp_norm reads residual_1, residual_1 reads the incoming residual stream and o_proj, scores read
 * q_rope and k_rope (and the cached keys), probs read scores, attn_out reads probs and v,
 * final_norm reads the last residual_2. Vision: ln1 reads the incoming residual, q/k/v read ln1,
 * attn_out reads q, k and v, and so on as in the text model; projector.linear_1 reads the last
 * vision layer run (the deepest feature layer; vision.pre_ln when no layer ran).
 */
export function probeInputs(name: ProbeName, layer: number, nLayers: number, nVisionLayers = 0): ProbeRef[] {
  const at = (probe: ProbeName): ProbeRef => ({ probe, layer });
  switch (name) {
    case 'vision.embeddings':
      return [];
    case 'vision.pre_ln':
      return [{ probe: 'vision.embeddings', layer: -1 }];
    case 'vision.ln1':
      return [visionResidualInto(layer)];
    case 'vision.q':
    case 'vision.k':
    case 'vision.v':
      return [at('vision.ln1')];
    case 'vision.attn_out':
      return [at('vision.q'), at('vision.k'), at('vision.v')];
    case 'vision.o_proj':
      return [at('vision.attn_out')];
    case 'vision.residual_1':
      return [visionResidualInto(layer), at('vision.o_proj')];
    case 'vision.ln2':
      return [at('vision.residual_1')];
    case 'vision.fc1':
      return [at('vision.ln2')];
    case 'vision.act':
      return [at('vision.fc1')];
    case 'vision.fc2':
      return [at('vision.act')];
    case 'vision.residual_2':
      return [at('vision.residual_1'), at('vision.fc2')];
    case 'projector.linear_1':
      return [visionResidualInto(nVisionLayers)];
    case 'projector.act':
      return [{ probe: 'projector.linear_1', layer: -1 }];
    case 'projector.linear_2':
      return [{ probe: 'projector.act', layer: -1 }];
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

/**
 * A sort key for (probe, layer) in the order one chunk executes them; the vision tower's probes
 * (an image's forward) rank before the projector's, and both before the text model's.
 */
export function executionRank(name: ProbeName, layer: number): number {
  if (name.startsWith('projector.')) return -1e9 + PROJECTOR_PROBES.indexOf(name as ClipProbeName);
  if (name === 'vision.embeddings') return -3e9;
  if (name === 'vision.pre_ln') return -3e9 + 1;
  if (name.startsWith('vision.')) return -3e9 + 2 + layer * VISION_LAYER_PROBES.length + VISION_LAYER_PROBES.indexOf(name as ClipProbeName);
  if (name === 'embeddings') return -1;
  if (name === 'final_norm') return 1e9;
  if (name === 'logits') return 1e9 + 1;
  const i = name === 'scores' ? LAYER_PROBES.indexOf('k_rope') + 0.5 : LAYER_PROBES.indexOf(name as LlamaProbeName);
  return layer * LAYER_PROBES.length + i;
}

/** Whether a probe carries the text model's residual stream tracked per channel (embeddings and residual_2; not the vision tower's). */
export function isResidualProbe(name: ProbeName): boolean {
  return name === 'embeddings' || name === 'residual_2';
}
