#!/usr/bin/env node
// Compiles every AssemblyScript entry file src/kernels/wasm/assembly/<name>.ts
// (files starting with "_" are shared helpers, not entries) to build/<name>.wasm.
//
// Usage: node scripts/build-wasm.js [--force] [--wat]
//   --force  rebuild even if build/<name>.wasm is newer than every input
//   --wat    also write build/<name>.wat (for reading the generated code)
//
// All kernels import ONE shared memory (env.memory) that the JS heap
// (src/kernels/wasm/heap.ts) owns, so a kernel must not own anything in it: the
// script fails if a kernel has static data at or above KERNEL_DATA_LIMIT (the
// heap reserves the first 64 KiB) or if two kernels' static data overlap.

import { existsSync, mkdirSync, readdirSync, readFileSync, renameSync, statSync, writeFileSync } from 'node:fs';
import { dirname, join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const srcDir = join(root, 'src', 'kernels', 'wasm', 'assembly');
const outDir = join(root, 'build');
/** Bytes below this belong to kernels' static data; must match heap.ts (RESERVED_BYTES - 64). */
const KERNEL_DATA_LIMIT = 65536 - 64;

const FLAGS = [
  '--runtime', 'stub',
  '--importMemory', '--sharedMemory',
  '--initialMemory', '1', '--maximumMemory', '65536',
  '--enable', 'simd', '--enable', 'threads',
  '-O3', '--noAssert',
];

const args = new Set(process.argv.slice(2));
const force = args.has('--force');
const wantWat = args.has('--wat');

function fail(message) {
  process.stderr.write(`build-wasm: ${message}\n`);
  process.exit(1);
}

/** Reads an unsigned LEB128 at bytes[pos]; returns [value, nextPos]. */
function leb(bytes, pos) {
  let value = 0;
  let scale = 1;
  for (;;) {
    const b = bytes[pos++];
    value += (b & 0x7f) * scale;
    scale *= 128;
    if ((b & 0x80) === 0) return [value, pos];
  }
}

/** Lists [start, end) of every active data segment of a wasm binary (offsets must be i32.const). */
function dataSegments(bytes) {
  const segments = [];
  let pos = 8; // magic + version
  while (pos < bytes.length) {
    const id = bytes[pos++];
    let size;
    [size, pos] = leb(bytes, pos);
    const end = pos + size;
    if (id === 11) {
      let count;
      let p = pos;
      [count, p] = leb(bytes, p);
      for (let i = 0; i < count; i++) {
        let flags;
        [flags, p] = leb(bytes, p);
        let start = -1;
        if (flags === 2) [, p] = leb(bytes, p); // explicit memory index
        if (flags === 0 || flags === 2) {
          if (bytes[p] !== 0x41) throw new Error('data segment offset is not i32.const');
          [start, p] = leb(bytes, p + 1); // i32.const offsets from asc are small and non-negative
          if (bytes[p++] !== 0x0b) throw new Error('data segment offset expression is not a single i32.const');
        }
        let len;
        [len, p] = leb(bytes, p);
        p += len;
        if (start >= 0 && len > 0) segments.push([start, start + len]);
      }
    }
    pos = end;
  }
  return segments;
}

function newestMtime(paths) {
  return Math.max(...paths.map((p) => statSync(p).mtimeMs));
}

if (!existsSync(srcDir)) fail(`no AssemblyScript sources at ${relative(root, srcDir)}`);
const sources = readdirSync(srcDir).filter((f) => f.endsWith('.ts') && !f.endsWith('.d.ts'));
const entries = sources.filter((f) => !f.startsWith('_')).map((f) => f.slice(0, -3));
mkdirSync(outDir, { recursive: true });

// Any source (helpers included), this script or the compiler changing makes every kernel stale.
const inputsMtime = newestMtime([
  ...sources.map((f) => join(srcDir, f)),
  fileURLToPath(import.meta.url),
  join(root, 'node_modules', 'assemblyscript', 'package.json'),
]);
const stale = entries.filter((name) => {
  const out = join(outDir, `${name}.wasm`);
  return force || !existsSync(out) || statSync(out).mtimeMs < inputsMtime;
});

if (stale.length > 0) {
  // Imported lazily: loading the compiler (binaryen) takes most of the time when nothing is stale.
  let asc;
  try {
    asc = (await import('assemblyscript/asc')).default;
  } catch (err) {
    fail(`cannot load the AssemblyScript compiler (is assemblyscript installed?): ${err.message}`);
  }
  for (const name of stale) {
    const started = performance.now();
    let binary = null;
    let text = null;
    const { error } = await asc.main(
      [join(srcDir, `${name}.ts`), '--outFile', `${name}.wasm`, ...(wantWat ? ['--textFile', `${name}.wat`] : []), ...FLAGS],
      {
        stdout: process.stdout,
        stderr: process.stderr,
        // Keep outputs in memory so a failed build never leaves a partial file behind.
        writeFile(filename, contents) {
          if (filename.endsWith('.wasm')) binary = contents;
          else if (filename.endsWith('.wat')) text = contents;
        },
      },
    );
    if (error) fail(`compiling ${relative(root, join(srcDir, `${name}.ts`))} failed: ${error.message}`);
    if (!binary) fail(`compiling ${name}.ts produced no binary`);
    const out = join(outDir, `${name}.wasm`);
    writeFileSync(`${out}.tmp`, binary);
    renameSync(`${out}.tmp`, out);
    if (text !== null) writeFileSync(join(outDir, `${name}.wat`), text);
    process.stdout.write(`build-wasm: ${name}.wasm (${binary.length} bytes, ${Math.round(performance.now() - started)} ms)\n`);
  }
}

// Check every kernel's static data against the heap's reserved region and the other kernels.
const owners = [];
for (const name of entries) {
  for (const [start, end] of dataSegments(readFileSync(join(outDir, `${name}.wasm`)))) {
    if (end > KERNEL_DATA_LIMIT) {
      fail(`${name}.wasm has static data at [${start}, ${end}), beyond the ${KERNEL_DATA_LIMIT} bytes reserved for kernels in the shared memory`);
    }
    for (const other of owners) {
      if (start < other.end && other.start < end) {
        fail(`static data of ${name}.wasm [${start}, ${end}) overlaps ${other.name}.wasm [${other.start}, ${other.end}) in the shared memory; give one of them a --memoryBase or drop the data`);
      }
    }
    owners.push({ name, start, end });
  }
}
if (stale.length === 0) process.stdout.write(`build-wasm: ${entries.length} kernel(s) up to date\n`);
