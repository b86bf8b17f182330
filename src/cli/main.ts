/**
 * The halfpipe command line: argument parsing and printing only; the work happens in the library.
 * Bad input ends with a one-line `halfpipe: error: ...` on stderr and a non-zero exit status.
 */
import { readFileSync } from 'node:fs';
import { Command, CommanderError, InvalidArgumentError, Option } from 'commander';
import { HalfpipeError } from '../core/errors.js';
import { ropeReportCommand } from './rope-report.js';
import { serveCommand } from './serve.js';
import { chatCommand, generateCommand, infoCommand, tinyCommand } from './text.js';
import { traceCommand } from './trace.js';

const pkg = JSON.parse(readFileSync(new URL('../../../package.json', import.meta.url), 'utf8')) as { version: string };

/** Parses a positive integer option value, or fails with commander's one-line error. */
export function positiveInt(value: string): number {
  const n = Number(value);
  if (!Number.isInteger(n) || n < 1) throw new InvalidArgumentError('expected a positive integer');
  return n;
}

export function nonNegativeInt(value: string): number {
  const n = Number(value);
  if (!Number.isInteger(n) || n < 0) throw new InvalidArgumentError('expected an integer >= 0');
  return n;
}

export function finiteNumber(value: string): number {
  const n = Number(value);
  if (value.trim() === '' || !Number.isFinite(n)) throw new InvalidArgumentError('expected a number');
  return n;
}

function collect(value: string, previous: string[] = []): string[] {
  return [...previous, value];
}

/** The options every command that loads a model shares. */
function modelOptions(cmd: Command): Command {
  return cmd
    .option('--model <pathOrId>', 'HF checkpoint directory, .gguf file, or org/name[@revision] on the HF Hub (default: the built-in tiny model)')
    .addOption(new Option('--dtype <dtype>', 'storage dtype for an HF checkpoint\'s weights').choices(['f32', 'f16', 'bf16']))
    .addOption(new Option('--kv-cache <dtype>', 'KV cache dtype').choices(['f32', 'f16']))
    .option('--policy <policy>', "precision policy: f32, naive-f16, safe-f16 or bf16, then optional ,pattern=dtype overrides and ,clamp (default: safe-f16 for f16 weights, else f32)")
    .option('--offline', 'never use the network (HF cache only)')
    .addOption(new Option('--kernels <kind>', 'kernels: wasm (SIMD on worker threads) or reference (plain TypeScript)').choices(['wasm', 'reference']).default('wasm'))
    .option('--threads <n>', 'worker threads for the wasm kernels (default: the cores available)', positiveInt)
    .option('--mmproj <path>', "the mmproj GGUF of a LLaVA text GGUF (default: an mmproj*.gguf beside it; 'none' loads the text model alone)");
}

function samplingOptions(cmd: Command): Command {
  return cmd
    .option('--max-tokens <n>', 'tokens to generate at most', nonNegativeInt, 128)
    .option('--temperature <t>', 'sampling temperature (0 = greedy)', finiteNumber)
    .option('--top-k <k>', 'keep the k most likely tokens (0 = off)', nonNegativeInt)
    .option('--top-p <p>', 'nucleus sampling mass (1 = off)', finiteNumber)
    .option('--min-p <p>', 'drop tokens below p x the top probability (0 = off)', finiteNumber)
    .option('--repeat-penalty <r>', 'penalty for recently seen tokens (1 = off)', finiteNumber)
    .option('--seed <s>', 'random seed: the same seed gives the same output', nonNegativeInt)
    .option('--stop <text>', 'stop before this string (repeatable)', collect);
}

export function positiveNumber(value: string): number {
  const n = Number(value);
  if (!Number.isFinite(n) || n <= 0) throw new InvalidArgumentError('expected a positive number');
  return n;
}

export function buildProgram(): Command {
  const program = new Command('halfpipe')
    .description('LLaMA/LLaVA inference in TypeScript where half precision never costs correctness')
    .version(pkg.version)
    .exitOverride()
    .showHelpAfterError('(run with --help for usage)')
    .option('--verbose', 'print stack traces with errors')
    .configureOutput({ outputError: (msg, write) => write(`halfpipe: ${msg.trim().replace(/^error: /, 'error: ')}\n`) });

  program
    .command('rope-report')
    .description("worst-case RoPE error per rotated pair (ulps) of halfpipe's fused kernel next to other engines' methods, at positions 2^4 .. 2^24")
    .addOption(new Option('--dtype <dtype>', 'storage dtype of q/k').choices(['f16', 'bf16', 'f32']).default('f16'))
    .option('--head-dim <n>', 'head dimension', positiveInt, 128)
    .option('--base <theta>', 'rope_theta', positiveNumber, 10000)
    .option('--samples <n>', 'random positions and vectors per power of two', positiveInt, 24)
    .option('--json', 'print one JSON object instead of a table')
    .action((opts) => ropeReportCommand(opts));

  samplingOptions(
    modelOptions(
      program
        .command('generate')
        .description('generate text from a prompt, streamed to stdout')
        .option('--prompt <text>', 'the prompt text (BOS added as the tokenizer says)')
        .option('--prompt-ids <ids>', 'raw comma-separated token ids (no BOS added)')
        .option('--chat', "wrap the prompt as a user turn in the model's chat template")
        .option('--image <path>', 'an image for a LLaVA model: a file or a data: URI (repeatable); placed at <image> in the prompt, else before it', collect),
    ),
  )
    .option('--logprobs <k>', 'report the top k log-probabilities per step (with --json)', nonNegativeInt)
    .addOption(new Option('--on-nonfinite <action>', 'non-finite logits: stop naming the first bad op, warn and go on, or redo in f32').choices(['error', 'warn', 'upcast']).default('error'))
    .option('--json', 'print one JSON object {tokens, text, logprobs, finish_reason, timings}')
    .action((opts) => generateCommand(opts));

  samplingOptions(modelOptions(program.command('chat').description("an interactive multi-turn chat through the model's template"))).action((opts) =>
    chatCommand(opts),
  );

  modelOptions(
    program
      .command('trace')
      .description('run a prompt with the numerics monitor on every op: first non-finite op, headroom per layer, massive channels (default model: the built-in stress model)'),
  )
    .option('--prompt <text>', 'the prompt text')
    .option('--prompt-ids <ids>', 'raw comma-separated token ids')
    .option('--image <path>', 'an image for a LLaVA model (repeatable)', collect)
    .option('--max-tokens <n>', 'greedy steps after the prompt', nonNegativeInt, 8)
    .option('--shadow <dtype>', 'compare every op with the same run under the f32 policy (f32)')
    .option('--json <file>', 'write the trace as JSON (schema: src/monitor/schema.ts)')
    .option('--html <file>', 'write a self-contained HTML report')
    .action((opts) => traceCommand(opts));

  modelOptions(program.command('serve').description('serve the model over an OpenAI-compatible HTTP API (/v1/chat/completions, /v1/completions, /v1/models, /health)'))
    .option('--host <host>', 'address to listen on', '127.0.0.1')
    .option('--port <port>', 'port to listen on (0 = any free port)', nonNegativeInt, 8080)
    .option('--api-key <key>', 'require Authorization: Bearer <key> on /v1/* requests (default: $HALFPIPE_API_KEY, if set)')
    .option('--model-id <id>', 'the model id clients name (default: the model directory or file name)')
    .option('--max-concurrency <n>', 'requests generating at once', positiveInt, 8)
    .option('--max-queue <n>', 'requests waiting at most (429 beyond)', nonNegativeInt, 64)
    .option('--max-tokens-cap <n>', 'the largest max_tokens a request may ask for (400 beyond)', positiveInt, 4096)
    .option('--max-body-mb <n>', 'the largest request body in MiB (413 beyond; images arrive as data: URIs)', positiveInt, 20)
    .option('--no-batching', 'one forward per running request instead of one batched decode pass')
    .option('--allow-remote-images', 'fetch http(s) image URLs (default: only data: URIs)')
    .option('--quiet', 'no log line per request')
    .action((opts) => serveCommand(opts));

  modelOptions(program.command('info').description('architecture, parameters, dtypes, context, rope and tokenizer of a model'))
    .option('--json', 'print one JSON object')
    .action((opts) => infoCommand(opts));

  program
    .command('tiny')
    .description('write a small random-weights model with a working tokenizer, deterministically')
    .addOption(new Option('--arch <arch>', 'architecture').choices(['llama', 'llava', 'llava-next']).default('llama'))
    .requiredOption('--out <path>', 'directory (hf) or file (gguf) to write')
    .addOption(new Option('--format <format>', 'file format').choices(['hf', 'gguf']).default('hf'))
    .addOption(new Option('--dtype <dtype>', 'weight dtype').choices(['f32', 'f16', 'bf16']))
    .addOption(new Option('--quant <type>', 'GGUF quant type').choices(['Q8_0', 'Q4_0', 'Q4_1', 'Q5_0', 'Q5_1', 'Q4_K', 'Q5_K', 'Q6_K']))
    .addOption(new Option('--vocab <kind>', "tokenizer: 'llama' (SentencePiece) or 'gpt2' (byte-level BPE)").choices(['llama', 'gpt2']))
    .addOption(
      new Option('--stress <kind>', 'build in a numerics failure: massive-activations (llama: LLaMA-2-like massive activations, an f16 down_proj overflow) or image-overflow (llava: image features that overflow an f16 MLP)').choices(['massive-activations', 'image-overflow']),
    )
    .option('--seed <n>', 'weights seed', nonNegativeInt, 0)
    .option('--set <key=value>', 'override an HF config.json field (repeatable; JSON values)', collect)
    .action((opts) => tinyCommand(opts));

  return program;
}

/** Runs the CLI; returns the exit status. */
export async function main(argv: string[]): Promise<number> {
  const program = buildProgram();
  const verbose = argv.includes('--verbose');
  argv = argv.filter((a) => a !== '--verbose');
  if (argv.length <= 2) {
    program.outputHelp();
    return 0;
  }
  try {
    await program.parseAsync(argv);
    return 0;
  } catch (e) {
    if (e instanceof CommanderError) return e.exitCode === 0 ? 0 : 2;
    if (verbose && e instanceof Error) process.stderr.write(`${e.stack}\n`);
    if (e instanceof HalfpipeError) {
      process.stderr.write(`halfpipe: error: ${e.message}\n`);
      return 1;
    }
    const message = e instanceof Error ? e.message : String(e);
    process.stderr.write(`halfpipe: error: ${message.split('\n')[0]}${verbose ? '' : ' (--verbose shows the stack)'}\n`);
    return 1;
  }
}
