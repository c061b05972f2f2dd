/**
 * How hard the chaos suite pushes. `npm test` and CI run the short, seeded form; `npm run test:chaos:long` (or
 * CHAOS_LONG=1) runs the long form: at least 200 kills and 10 minutes of network faults.
 */
export const CHAOS_LONG = process.env.CHAOS_LONG === '1';

/** The seed of every random choice in the suite; set CHAOS_SEED to replay a failing run. */
export const CHAOS_SEED = Number(process.env.CHAOS_SEED ?? 0x5eed_c0de) >>> 0;

/** Picks the short or the long value. */
export const pick = <T>(short: T, long: T): T => (CHAOS_LONG ? long : short);

/** mulberry32: a small seeded PRNG, so that a failing schedule can be replayed from its seed. */
export function mulberry32(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}
