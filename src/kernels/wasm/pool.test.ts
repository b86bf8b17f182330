import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { after, before, describe, test } from 'node:test';
import { wasmHeap } from './heap.js';
import { MAX_ARGS, poolReady, poolStats, runRows, setMinChunkWork, setThreads, threadCount } from './pool.js';

// The probe kernel (assembly/pool_probe.ts): mark(counts, junk, spin, trapRow, r0, r1) adds 1 to
// counts[r] for every row of its range, after `spin` rounds of busy work, and traps at trapRow.
const heap = wasmHeap();

function probe(rows: number, opts: { spin?: number; trapRow?: number } = {}): number[] {
  const bytes = Math.max(4, rows * 4);
  const counts = heap.alloc(bytes);
  const junk = heap.alloc(bytes);
  try {
    new Int32Array(heap.buffer, counts, rows).fill(0);
    runRows({ kernel: 'pool_probe', fn: 'mark', args: [counts, junk, opts.spin ?? 0, opts.trapRow ?? -1], rows, rowWork: 1 });
    return [...new Int32Array(heap.buffer, counts, rows)];
  } finally {
    heap.free(counts);
    heap.free(junk);
  }
}

function assertOnce(counts: number[], what: string): void {
  const bad = counts.findIndex((c) => c !== 1);
  assert.equal(bad, -1, `${what}: row ${bad} ran ${counts[bad]} times`);
}

/**
 * Runs a slow job (about `ms` in all) until a worker took part in one; returns the tries. Up to 100:
 * on a loaded 2-core machine a worker can wait a long time for a core.
 */
function untilWorkersJoin(ms: number): number {
  for (let tries = 1; tries <= 100; tries++) {
    const before = poolStats().workerChunks;
    // About 1 ns per spin round: 64 rows of ms/64 each.
    assertOnce(probe(64, { spin: Math.round(ms * 14000) }), 'slow job');
    if (poolStats().workerChunks > before) return tries;
  }
  return Infinity;
}

describe('worker pool', () => {
  const threadsBefore = threadCount();
  before(async () => {
    setThreads(2);
    setMinChunkWork(1);
    await poolReady();
  });
  after(() => {
    setThreads(threadsBefore);
    setMinChunkWork(1 << 15);
  });

  test('every row runs exactly once, for any row count', () => {
    for (const rows of [0, 1, 2, 3, 7, 16, 17, 100, 1000, 4097]) assertOnce(probe(rows), `${rows} rows`);
  });

  test('many small jobs in a row', () => {
    for (let i = 0; i < 3000; i++) assertOnce(probe(1 + (i % 41)), `job ${i}`);
  });

  test('workers take part in a long job', () => {
    assert.ok(Number.isFinite(untilWorkersJoin(20)), 'no worker ever claimed a chunk');
  });

  test('a job after idle wakes the parked workers', async () => {
    // Past the spin time every worker parks in Atomics.wait.
    const deadline = Date.now() + 5000;
    while (poolStats().parked < poolStats().workers && Date.now() < deadline) await sleep(10);
    assert.equal(poolStats().parked, poolStats().workers, 'workers did not park');
    assert.ok(Number.isFinite(untilWorkersJoin(20)), 'parked workers never woke up');
  });

  test('a trap in any range becomes one clean error after all ranges finished; the pool keeps working', () => {
    for (const trapRow of [0, 37, 63]) {
      assert.throws(() => probe(64, { trapRow }), (err: Error) => /unreachable|failed in a worker/.test(err.message));
      assertOnce(probe(64), `job after the trap at ${trapRow}`);
    }
  });

  test('bad jobs are refused on the calling thread before anything runs', () => {
    const job = { kernel: 'pool_probe', fn: 'mark', args: [0, 0, 0, -1], rows: 4, rowWork: 1 };
    assert.throws(() => runRows({ ...job, fn: 'nope' }), /no export nope/);
    assert.throws(() => runRows({ ...job, kernel: 'no-such-kernel' }), /npm run build:wasm/);
    assert.throws(() => runRows({ ...job, rows: 2.5 }), RangeError);
    assert.throws(() => runRows({ ...job, rows: -1 }), RangeError);
    assert.throws(() => runRows({ ...job, args: new Array(MAX_ARGS + 1).fill(0) }), RangeError);
    assert.throws(() => runRows({ ...job, args: [0, 0, '0' as unknown as number, -1] }), TypeError);
    assert.throws(() => setThreads(0), RangeError);
    assert.throws(() => setMinChunkWork(0), RangeError);
    assertOnce(probe(50), 'job after refused ones');
  });

  test('one thread, or a job too small to split, never involves a worker', () => {
    const chunks = poolStats().workerChunks;
    setThreads(1);
    try {
      assertOnce(probe(64, { spin: 20000 }), 'one thread');
    } finally {
      setThreads(2);
    }
    setMinChunkWork(1e9);
    try {
      assertOnce(probe(64, { spin: 20000 }), 'small job');
    } finally {
      setMinChunkWork(1);
    }
    assert.equal(poolStats().workerChunks, chunks);
  });

  test('the process exits on its own with workers started, spinning or parked', () => {
    const pool = new URL('./pool.js', import.meta.url).href;
    const heapUrl = new URL('./heap.js', import.meta.url).href;
    const script = `
      import { poolReady, runRows, setMinChunkWork, setThreads } from ${JSON.stringify(pool)};
      import { wasmHeap } from ${JSON.stringify(heapUrl)};
      setThreads(3);
      setMinChunkWork(1);
      await poolReady();
      const heap = wasmHeap();
      const counts = heap.alloc(4096), junk = heap.alloc(4096);
      runRows({ kernel: 'pool_probe', fn: 'mark', args: [counts, junk, 1000, -1], rows: 1024, rowWork: 1 });
      const c = new Int32Array(heap.buffer, counts, 1024);
      if (!c.every((v) => v === 1)) process.exit(3);
    `;
    const dir = mkdtempSync(join(tmpdir(), 'halfpipe-pool-'));
    try {
      const file = join(dir, 'exit.mjs');
      writeFileSync(file, script);
      const started = Date.now();
      const child = spawnSync(process.execPath, [file], { timeout: 30000, encoding: 'utf8' });
      assert.equal(child.signal, null, `the child hung (killed after ${Date.now() - started} ms)`);
      assert.equal(child.status, 0, child.stderr);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
