/**
 * A small seeded PRNG for sampling: xoshiro128** 1.1 (Blackman & Vigna, https://prng.di.unimi.it/xoshiro128starstar.c)
 * with its 128-bit state filled from SplitMix64 (https://prng.di.unimi.it/splitmix64.c) run on the integer seed.
 *
 * Everything is 32-bit integer arithmetic (Math.imul, >>>) plus BigInt for the one-off seeding, so the same seed
 * gives the same sequence on every run, engine and platform. Without a seed, the seed itself is drawn from the
 * system CSPRNG and kept in `seed`, so a run can be reproduced by passing it back.
 */
import { getRandomValues } from 'node:crypto';
import { fail } from '../core/errors.js';

const MASK64 = (1n << 64n) - 1n;

/** SplitMix64 as published: returns the next output and advances `state` (a 64-bit counter). */
function splitmix64(state: { x: bigint }): bigint {
  state.x = (state.x + 0x9e3779b97f4a7c15n) & MASK64;
  let z = state.x;
  z = ((z ^ (z >> 30n)) * 0xbf58476d1ce4e5b9n) & MASK64;
  z = ((z ^ (z >> 27n)) * 0x94d049bb133111ebn) & MASK64;
  return z ^ (z >> 31n);
}

/** A fresh seed from the system CSPRNG: a uniformly random integer in [0, 2^53). */
export function randomSeed(): number {
  const w = getRandomValues(new Uint32Array(2));
  return (w[0]! >>> 11) * 2 ** 32 + w[1]!;
}

export class Rng {
  /** the seed this generator started from (drawn from crypto when none was given) */
  readonly seed: number;
  private s0 = 0;
  private s1 = 0;
  private s2 = 0;
  private s3 = 0;

  /** `seed`: an integer in [0, 2^53); omitted → a random seed from the system CSPRNG. */
  constructor(seed?: number) {
    if (seed === undefined) seed = randomSeed();
    if (!Number.isSafeInteger(seed) || seed < 0) fail('usage', `seed must be an integer in [0, 2^53), got ${seed}`);
    this.seed = seed;
    const sm = { x: BigInt(seed) };
    const a = splitmix64(sm);
    const b = splitmix64(sm);
    // Two consecutive SplitMix64 outputs are never both 0 (it is a bijection of its counter), so the state is valid.
    this.setState([Number(a & 0xffffffffn), Number(a >> 32n), Number(b & 0xffffffffn), Number(b >> 32n)]);
  }

  /** A generator started from a raw xoshiro128** state (four uint32, not all zero); for tests against the reference. */
  static fromState(state: readonly [number, number, number, number]): Rng {
    const r = new Rng(0);
    r.setState(state);
    return r;
  }

  private setState(state: readonly number[]): void {
    const [a, b, c, d] = state.map((v) => v >>> 0) as [number, number, number, number];
    if ((a | b | c | d) === 0) fail('usage', 'xoshiro128** state must not be all zero');
    this.s0 = a;
    this.s1 = b;
    this.s2 = c;
    this.s3 = d;
  }

  /** The next 32 random bits as an unsigned integer in [0, 2^32). */
  nextUint32(): number {
    const s1 = this.s1;
    const x = Math.imul(s1, 5);
    const result = Math.imul((x << 7) | (x >>> 25), 9) >>> 0;
    const t = s1 << 9;
    this.s2 ^= this.s0;
    this.s3 ^= s1;
    this.s1 ^= this.s2;
    this.s0 ^= this.s3;
    this.s2 ^= t;
    this.s3 = (this.s3 << 11) | (this.s3 >>> 21);
    return result;
  }

  /** A uniform double in [0, 1) with 53 random bits (the top 27 + 26 bits of two outputs). */
  nextFloat(): number {
    const hi = this.nextUint32() >>> 5; // 27 bits
    const lo = this.nextUint32() >>> 6; // 26 bits
    return (hi * 67108864 + lo) / 9007199254740992; // (hi * 2^26 + lo) / 2^53
  }
}
