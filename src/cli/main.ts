/**
 * The halfpipe command line: argument parsing and printing only; the work happens in the library.
 * Bad input ends with a one-line `halfpipe: error: ...` on stderr and a non-zero exit status.
 */
import { readFileSync } from 'node:fs';
import { Command, CommanderError, InvalidArgumentError, Option } from 'commander';
import { HalfpipeError } from '../core/errors.js';
import { ropeReportCommand } from './rope-report.js';

const pkg = JSON.parse(readFileSync(new URL('../../../package.json', import.meta.url), 'utf8')) as { version: string };

/** Parses a positive integer option value, or fails with commander's one-line error. */
export function positiveInt(value: string): number {
  const n = Number(value);
  if (!Number.isInteger(n) || n < 1) throw new InvalidArgumentError('expected a positive integer');
  return n;
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

  return program;
}

/** Runs the CLI; returns the exit status. */
export async function main(argv: string[]): Promise<number> {
  const program = buildProgram();
  if (argv.length <= 2) {
    program.outputHelp();
    return 0;
  }
  try {
    await program.parseAsync(argv);
    return 0;
  } catch (e) {
    if (e instanceof CommanderError) return e.exitCode === 0 ? 0 : 2;
    if (e instanceof HalfpipeError) {
      process.stderr.write(`halfpipe: error: ${e.message}\n`);
      return 1;
    }
    const message = e instanceof Error ? e.message : String(e);
    process.stderr.write(`halfpipe: internal error: ${message.split('\n')[0]}\n`);
    return 70;
  }
}
