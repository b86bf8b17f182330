/** `halfpipe rope-report`: the RoPE accuracy table, so users can check the claim themselves. */
import type { DType } from '../core/dtype.js';
import { fail } from '../core/errors.js';
import { ROPE_METHODS, ropeAccuracyReport, type RopeMethod } from '../ops/rope/accuracy.js';

export interface RopeReportOptions {
  dtype: DType;
  headDim: number;
  base: number;
  samples: number;
  json?: boolean;
}

const TITLES: Record<RopeMethod, string> = {
  halfpipe: 'halfpipe fused',
  'storage-dtype': 'storage-dtype math',
  'f32-angle': 'f32 angle',
  ggml: 'ggml iterated angle',
};

export function ropeReportCommand(opts: RopeReportOptions): void {
  if (opts.headDim % 2 !== 0) fail('usage', `--head-dim must be even, got ${opts.headDim}`);
  const rows = ropeAccuracyReport({ dtype: opts.dtype, headDim: opts.headDim, base: opts.base, samples: opts.samples });
  if (opts.json) {
    process.stdout.write(`${JSON.stringify({ dtype: opts.dtype, headDim: opts.headDim, base: opts.base, samples: opts.samples, unit: 'ulp per rotated pair', rows })}\n`);
    return;
  }
  const out: string[] = [];
  out.push(`RoPE worst-case error per rotated pair, in ulps of ${opts.dtype} (relative to the pair's norm), vs a float64 rotation`);
  out.push(`head_dim ${opts.headDim}, base ${opts.base}, NeoX pairing, ${opts.samples} random vectors at 2^k and positions within 2^k +- 25%`);
  out.push('');
  const widths = ROPE_METHODS.map((m) => Math.max(TITLES[m].length, 10));
  out.push(['position', ...ROPE_METHODS.map((m, i) => TITLES[m].padStart(widths[i]!))].join('  '));
  for (const row of rows) {
    const cells = ROPE_METHODS.map((m, i) => row.worstUlps[m].toFixed(2).padStart(widths[i]!));
    out.push([`2^${row.log2Position}`.padEnd(8), ...cells].join('  '));
  }
  out.push('');
  out.push('halfpipe fused: float64-accurate angles, f32 math (f64 for f32 storage), one rounding on store. Best possible: ~0.71.');
  out.push('storage-dtype math: cos/sin cast to the storage dtype and x cos - y sin rounded after each op (HF transformers, candle).');
  out.push("f32 angle: float32 position x float32 inv_freq as HF computes it, f32 math (halfpipe's angles: 'hf-compatible' option).");
  out.push('ggml iterated angle: theta *= theta_scale in float32 per pair (llama.cpp), f32 math.');
  process.stdout.write(`${out.join('\n')}\n`);
}
