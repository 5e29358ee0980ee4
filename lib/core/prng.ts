/**
 * A small seeded pseudo-random number generator: sfc32 (Chris Doty-Humphrey's Small Fast
 * Chaotic generator, 128-bit state, 32-bit output), seeded through splitmix32.
 *
 * Pure and deterministic: the same seed gives the same sequence on every runtime, because it
 * uses only 32-bit integer arithmetic (`Math.imul`, `>>> 0`). The simulator draws everything
 * from one of these; `fork(label)` derives an independent generator for one purpose so that
 * adding a draw in one place does not shift every other random choice of the run.
 */
import { assert } from "./assert.ts";

/** The largest seed accepted: seeds are safe integers so they print and parse exactly. */
export const SEED_MAX = Number.MAX_SAFE_INTEGER;

/** splitmix32 step: a good 32-bit mixer to spread a seed over the state words. */
function mix32(value: number): number {
  let z = (value + 0x9e3779b9) | 0;
  z = Math.imul(z ^ (z >>> 16), 0x85ebca6b);
  z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35);
  return (z ^ (z >>> 16)) >>> 0;
}

/** FNV-1a over a string's UTF-16 code units: turns a fork label into 32 bits. */
export function hash32(text: string, basis = 0x811c9dc5): number {
  let h = basis >>> 0;
  for (let i = 0; i < text.length; i++) {
    h ^= text.charCodeAt(i);
    h = Math.imul(h, 0x01000193) >>> 0;
  }
  return h >>> 0;
}

export class Prng {
  private a: number;
  private b: number;
  private c: number;
  private d: number;

  /** `seed` is any safe non-negative integer; its high and low 32 bits both count. */
  constructor(readonly seed: number) {
    assert(Number.isSafeInteger(seed) && seed >= 0, `seed must be a safe non-negative integer, got ${seed}`);
    const low = seed >>> 0;
    const high = Math.floor(seed / 0x1_0000_0000) >>> 0;
    this.a = mix32(low);
    this.b = mix32(high ^ 0x6a09e667);
    this.c = mix32(low ^ 0xbb67ae85);
    this.d = 1;
    // The first outputs of sfc32 are weakly mixed; discard a few as the reference code does.
    for (let i = 0; i < 12; i++) this.nextU32();
  }

  /** The next 32-bit unsigned integer. */
  nextU32(): number {
    const t = (((this.a + this.b) | 0) + this.d) | 0;
    this.d = (this.d + 1) | 0;
    this.a = this.b ^ (this.b >>> 9);
    this.b = (this.c + (this.c << 3)) | 0;
    this.c = (this.c << 21) | (this.c >>> 11);
    this.c = (this.c + t) | 0;
    return t >>> 0;
  }

  /** A float in [0, 1) with 32 random bits. */
  float(): number {
    return this.nextU32() / 0x1_0000_0000;
  }

  /** An integer in [0, bound), without modulo bias; bound ≤ 2^32. */
  below(bound: number): number {
    assert(Number.isSafeInteger(bound) && bound > 0 && bound <= 0x1_0000_0000, `bad bound ${bound}`);
    // Rejection sampling: the loop ends with probability ≥ 1/2 per round; 64 rounds bound it.
    const limit = 0x1_0000_0000 - (0x1_0000_0000 % bound);
    for (let round = 0; round < 64; round++) {
      const value = this.nextU32();
      if (value < limit) return value % bound;
    }
    return this.nextU32() % bound;
  }

  /** An integer in [min, max], both ends included. */
  between(min: number, max: number): number {
    assert(Number.isSafeInteger(min) && Number.isSafeInteger(max) && min <= max, `bad range ${min}..${max}`);
    return min + this.below(max - min + 1);
  }

  /** True with probability `p` (0 never draws true, 1 always). */
  chance(p: number): boolean {
    assert(p >= 0 && p <= 1, `probability out of range: ${p}`);
    return this.float() < p;
  }

  /** One element of a non-empty array. */
  pick<T>(items: readonly T[]): T {
    assert(items.length > 0, "pick from an empty array");
    return items[this.below(items.length)];
  }

  /** An independent generator for one purpose, derived from this one's seed and `label`. */
  fork(label: string): Prng {
    const h = hash32(label, mix32(this.seed >>> 0) ^ mix32(Math.floor(this.seed / 0x1_0000_0000)));
    // 32 + 21 bits: below 2^53, so the derived seed is a safe integer.
    return new Prng(h * 0x20_0000 + (hash32(label) & 0x1f_ffff));
  }
}
