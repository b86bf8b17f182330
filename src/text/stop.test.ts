import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { HalfpipeError } from '../core/errors.js';
import { StopMatcher } from './stop.js';

/** Pushes the chunks; returns what was emitted per push, whether and when it stopped, and the flush. */
function run(stops: string[], chunks: string[]): { emits: string[]; stoppedAt: number; text: string } {
  const m = new StopMatcher(stops);
  const emits: string[] = [];
  let stoppedAt = -1;
  chunks.forEach((c, i) => {
    const r = m.push(c);
    emits.push(r.emit);
    if (r.stopped && stoppedAt < 0) stoppedAt = i;
    assert.equal(r.stopped, stoppedAt >= 0, 'once stopped, always stopped');
    if (stoppedAt >= 0 && i > stoppedAt) assert.equal(r.emit, '', 'nothing is emitted after the stop');
  });
  const text = emits.join('') + m.flush();
  return { emits, stoppedAt, text };
}

test('a stop string split across pushes: the text before it comes out, the rest is discarded', () => {
  const r = run(['STOP'], ['Hello wor', 'ld ST', 'O', 'P and more', 'even more']);
  assert.deepEqual(r.emits, ['Hello wor', 'ld ', '', '', '']);
  assert.equal(r.stoppedAt, 3);
  assert.equal(r.text, 'Hello world ');

  const chars = run(['</s>'], [...'abc</s>def']);
  assert.equal(chars.text, 'abc');
  assert.equal(chars.stoppedAt, 6);
});

test('a held-back prefix that does not become a stop string is released', () => {
  const r = run(['STOP'], ['a ST', 'ART', ' b']);
  assert.deepEqual(r.emits, ['a ', 'START', ' b']);
  assert.equal(r.stoppedAt, -1);
  // at the end of the stream, flush releases the held part
  const m = new StopMatcher(['END']);
  assert.deepEqual(m.push('the EN'), { emit: 'the ', stopped: false });
  assert.equal(m.flush(), 'EN');
});

test('overlapping prefixes: the stop string may start inside a held-back partial match', () => {
  assert.deepEqual(run(['abcd'], ['ab', 'ab', 'cd']).emits, ['', 'ab', '']);
  assert.equal(run(['aab'], ['a', 'a', 'a', 'b']).text, 'a');
  assert.equal(run(['aab'], ['a', 'a', 'a', 'b']).stoppedAt, 3);
  assert.equal(run(['ababc'], ['abab', 'abc', 'x']).text, 'ab');
});

test('several stop strings: the earliest occurrence wins', () => {
  assert.equal(run(['\n\n', 'User:'], ['Hi User', ': x\n\n']).text, 'Hi ');
  assert.equal(run(['\n\n', 'User:'], ['Hi\n', '\nUser:']).text, 'Hi');
  const m = new StopMatcher(['ab', 'abc', 'b']);
  assert.deepEqual(m.push('xabc'), { emit: 'x', stopped: true });
  assert.equal(m.matched, 'abc');
  assert.equal(m.stopped, true);
  assert.deepEqual(m.push('more'), { emit: '', stopped: true });
  assert.equal(m.flush(), '');
});

test('the matcher stops as soon as a stop string is there (llama.cpp), even if a longer one might start earlier', () => {
  // "abb" could still start at 0, but "b" has already appeared: stop now rather than generate on
  const m = new StopMatcher(['abb', 'b']);
  assert.deepEqual(m.push('ab'), { emit: 'a', stopped: true });
  assert.equal(m.matched, 'b');
  assert.equal(run(['abb', 'b'], ['abb']).text, '');
});

test('no stop strings: everything passes straight through', () => {
  const m = new StopMatcher([]);
  assert.deepEqual(m.push('anything'), { emit: 'anything', stopped: false });
  assert.equal(m.flush(), '');
  assert.equal(m.matched, null);
});

test('an empty or non-string stop string is a usage error', () => {
  const usage = (e: unknown): boolean => e instanceof HalfpipeError && e.code === 'usage' && !e.message.includes('\n');
  assert.throws(() => new StopMatcher(['ok', '']), usage);
  assert.throws(() => new StopMatcher([42 as unknown as string]), usage);
  assert.throws(() => new StopMatcher('STOP' as unknown as string[]), usage);
});

/** Longest suffix of s that is a proper prefix of one of the stops. */
function partial(s: string, stops: string[]): number {
  for (let k = s.length; k > 0; k--) if (stops.some((t) => k < t.length && t.startsWith(s.slice(s.length - k)))) return k;
  return 0;
}

test('random texts, stops and splits: the same as cutting the text at the first stop, as soon as one is seen', () => {
  const small = fc.string({ unit: fc.constantFrom('a', 'b', 'c', '€', '😀'), minLength: 1, maxLength: 4 });
  fc.assert(
    fc.property(
      fc.array(small, { minLength: 1, maxLength: 3 }),
      fc.array(fc.string({ unit: fc.constantFrom('a', 'b', 'c', '€', '😀', 'x'), maxLength: 5 }), { maxLength: 10 }),
      (stops, chunks) => {
        // the reference: after each chunk, look for the stops in all the text so far; the first time one is
        // there, cut at the earliest occurrence
        let whole = '';
        let cut = -1;
        for (const c of chunks) {
          whole += c;
          const firsts = stops.map((s) => whole.indexOf(s)).filter((i) => i >= 0);
          if (firsts.length > 0) {
            cut = Math.min(...firsts);
            break;
          }
        }
        const m = new StopMatcher(stops);
        let seen = '';
        let out = '';
        let stopped = false;
        for (const c of chunks) {
          const r = m.push(c);
          out += r.emit;
          stopped = r.stopped;
          seen += c;
          if (!stopped) {
            // nothing is held back that could not still start a stop string
            assert.equal(out, seen.slice(0, seen.length - partial(seen, stops)));
          }
        }
        out += m.flush();
        assert.equal(stopped, cut >= 0);
        assert.equal(out, cut >= 0 ? whole.slice(0, cut) : whole);
      },
    ),
    { numRuns: 500 },
  );
});
