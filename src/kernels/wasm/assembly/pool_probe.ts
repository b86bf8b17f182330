// A probe kernel for the worker pool's tests (src/kernels/wasm/pool.test.ts): which rows ran,
// how often, with optional busy work per row and a trap at one row.

/**
 * Rows [r0, r1): counts[r] += 1 (atomically), after `spin` rounds of busy work whose result
 * lands in junk[r]; traps (unreachable) at row trapRow.
 */
export function mark(counts: usize, junk: usize, spin: i32, trapRow: i32, r0: i32, r1: i32): void {
  for (let r = r0; r < r1; r++) {
    if (r == trapRow) unreachable();
    let x = r;
    for (let i = 0; i < spin; i++) x = x * 1103515245 + 12345;
    store<i32>(junk + (<usize>r << 2), x);
    atomic.add<i32>(counts + (<usize>r << 2), 1);
  }
}
