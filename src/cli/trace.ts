/** `halfpipe trace`: run a prompt with the numerics monitor on every op and report what it saw. */
import { writeFileSync } from 'node:fs';
import { fail } from '../core/errors.js';
import { renderHtml, renderTerminalSummary, traceJson } from '../monitor/index.js';
import { LlavaModel } from '../models/llava/model.js';
import { imagePrompt, type ModelFlags, openModel, stressModelPath } from './text.js';

export interface TraceFlags extends ModelFlags {
  prompt?: string;
  promptIds?: string;
  image?: string[];
  maxTokens: number;
  shadow?: string;
  json?: string;
  html?: string;
}

export async function traceCommand(flags: TraceFlags): Promise<void> {
  if ((flags.prompt === undefined) === (flags.promptIds === undefined)) fail('usage', 'give exactly one of --prompt TEXT and --prompt-ids 1,2,3');
  if (flags.shadow !== undefined && flags.shadow !== 'f32') fail('usage', `--shadow ${flags.shadow} is not available: the shadow run is f32 (an f64 forward is not built yet)`);
  const ids = flags.promptIds?.split(',').map((s) => {
    if (!/^\s*\d+\s*$/.test(s)) fail('usage', `--prompt-ids must be comma-separated token ids, got '${flags.promptIds}'`);
    return Number(s);
  });
  const { model } = await openModel({ ...flags, model: flags.model ?? stressModelPath() });
  const opts = { maxTokens: flags.maxTokens, ...(flags.shadow ? { shadow: 'f32' as const } : {}) };
  const images = flags.image ?? [];
  const { prompt, images: placed } = ids ? { prompt: ids, images } : imagePrompt(model, flags.prompt!, images, false);
  if (ids && images.length && !(model instanceof LlavaModel)) fail('usage', '--image needs a LLaVA model');
  const result = model instanceof LlavaModel ? model.trace(prompt, { ...opts, images: placed }) : model.trace(prompt, opts);
  const header = `trace: ${model.info.path}, policy ${model.info.policy}, ${result.report.forwards.length} forwards (${result.tokens.length} generated tokens)`;
  process.stdout.write(`${header}\n${renderTerminalSummary(result.report, result.analyses)}\n`);
  if (flags.json) {
    writeFileSync(flags.json, `${JSON.stringify(traceJson(result.report, result.analyses), null, 1)}\n`);
    process.stdout.write(`wrote ${flags.json}\n`);
  }
  if (flags.html) {
    writeFileSync(flags.html, renderHtml(result.report, result.analyses, { title: header }));
    process.stdout.write(`wrote ${flags.html}\n`);
  }
}
