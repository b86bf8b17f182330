#!/usr/bin/env node
// The halfpipe command: the compiled CLI lives in dist/ (built by `npm ci` / `npm run build`).
import { existsSync } from 'node:fs';

const entry = new URL('../dist/src/cli/main.js', import.meta.url);
if (!existsSync(entry)) {
  process.stderr.write('halfpipe: error: not built yet; run `npm run build` (npm ci does it)\n');
  process.exit(1);
}
const { main } = await import(entry.href);
process.exitCode = await main(process.argv);
