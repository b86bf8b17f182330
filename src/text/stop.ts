/**
 * Stop strings over streamed text. Text is passed through as it arrives, except a suffix that could still turn
 * into a stop string, which is held back until the next push decides it. When a stop string appears (possibly
 * split across pushes), the text before its earliest occurrence is emitted, the stop string and everything after
 * it are discarded, and the matcher stays stopped.
 *
 * As llama.cpp's server, it stops as soon as a stop string has arrived, cutting at the earliest occurrence in the
 * text so far: with stops ["abb", "b"], pushing "ab" stops at "b" (emitting "a") rather than waiting to see
 * whether "abb" follows. Only stop strings that contain another stop after their first character can tell the
 * difference.
 */
import { fail } from '../core/errors.js';

export class StopMatcher {
  private readonly stops: readonly string[];
  private held = '';
  private done = false;
  private hit: string | null = null;

  /** `stops`: the stop strings (may be none); an empty stop string is a usage error. */
  constructor(stops: readonly string[]) {
    if (!Array.isArray(stops)) fail('usage', 'stop strings must be an array of strings');
    for (const s of stops) {
      if (typeof s !== 'string') fail('usage', `stop strings must be strings, got ${typeof s}`);
      if (s.length === 0) fail('usage', 'a stop string must not be empty');
    }
    this.stops = [...new Set(stops)];
  }

  /** whether a stop string has been seen */
  get stopped(): boolean {
    return this.done;
  }

  /** the stop string that ended the text (the earliest occurrence; the longest if several start there), once stopped */
  get matched(): string | null {
    return this.hit;
  }

  /**
   * Adds text; returns what can be emitted now and whether a stop string was reached. After a stop, every push
   * returns { emit: '', stopped: true }.
   */
  push(text: string): { emit: string; stopped: boolean } {
    if (this.done) return { emit: '', stopped: true };
    const buf = this.held + text;
    let at = -1;
    for (const s of this.stops) {
      const i = buf.indexOf(s);
      if (i >= 0 && (at < 0 || i < at || (i === at && s.length > this.hit!.length))) {
        at = i;
        this.hit = s;
      }
    }
    if (at >= 0) {
      this.done = true;
      this.held = '';
      return { emit: buf.slice(0, at), stopped: true };
    }
    const keep = this.partialSuffix(buf);
    this.held = buf.slice(buf.length - keep);
    return { emit: buf.slice(0, buf.length - keep), stopped: false };
  }

  /** The held-back text (the stream ended, so it cannot become a stop string any more); '' once stopped. */
  flush(): string {
    const out = this.done ? '' : this.held;
    this.held = '';
    return out;
  }

  /** Length of the longest suffix of buf that is a proper prefix of some stop string. */
  private partialSuffix(buf: string): number {
    let best = 0;
    for (const s of this.stops) {
      for (let k = Math.min(s.length - 1, buf.length); k > best; k--) {
        if (buf.endsWith(s.slice(0, k))) {
          best = k;
          break;
        }
      }
    }
    return best;
  }
}
