/** `halfpipe serve`: load a model, serve the OpenAI-compatible API until SIGINT/SIGTERM. */
import { basename } from 'node:path';
import { startServer } from '../server/http.js';
import { type ModelFlags, openModel } from './text.js';

export interface ServeFlags extends ModelFlags {
  host: string;
  port: number;
  apiKey?: string;
  maxConcurrency: number;
  maxQueue: number;
  maxTokensCap: number;
  maxBodyMb: number;
  batching: boolean;
  allowRemoteImages?: boolean;
  modelId?: string;
  quiet?: boolean;
}

export async function serveCommand(flags: ServeFlags): Promise<void> {
  // The key can come from the environment, out of sight of `ps`.
  const apiKey = flags.apiKey ?? (process.env['HALFPIPE_API_KEY'] || undefined);
  const { model } = await openModel(flags);
  const server = await startServer({
    model,
    host: flags.host,
    port: flags.port,
    maxConcurrency: flags.maxConcurrency,
    maxQueue: flags.maxQueue,
    maxTokensCap: flags.maxTokensCap,
    maxBodyBytes: Math.round(flags.maxBodyMb * 2 ** 20),
    batching: flags.batching,
    allowRemoteImages: flags.allowRemoteImages ?? false,
    ...(apiKey !== undefined ? { apiKey } : {}),
    ...(flags.modelId !== undefined ? { modelId: flags.modelId } : {}),
    ...(flags.quiet ? {} : { log: (line: string) => process.stderr.write(`halfpipe: ${line}\n`) }),
  });
  // The same default as startServer's.
  const modelId = flags.modelId ?? basename(model.info.path);
  process.stderr.write(`halfpipe: serving ${modelId} at ${server.url}\n`);
  // Serve until a signal; then finish what is running and exit 0.
  await new Promise<void>((resolve) => {
    const stop = (signal: string) => {
      process.stderr.write(`halfpipe: ${signal}: finishing ${server.engine.load.running + server.engine.load.queued} request(s), then closing\n`);
      process.off('SIGINT', stop);
      process.off('SIGTERM', stop);
      void server.close().then(resolve);
    };
    process.on('SIGINT', stop);
    process.on('SIGTERM', stop);
  });
}
