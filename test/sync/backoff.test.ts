import { describe, expect, it } from 'vitest';
import { backoffDelay, sleep } from '../../src/sync/backoff.js';

const bounds = { initialMs: 100, maxMs: 1000 };

/** A random source that returns the given values in turn. */
const sequence = (...values: number[]) => {
  let i = 0;
  return () => values[i++ % values.length] as number;
};

describe('backoffDelay()', () => {
  it('stays within [0, initial] on the first attempt', () => {
    expect(backoffDelay(1, bounds, undefined, () => 0)).toBe(0);
    expect(backoffDelay(1, bounds, undefined, () => 0.999999)).toBe(100);
  });

  it('doubles its ceiling with each attempt', () => {
    const top = () => 0.999999;
    expect([1, 2, 3, 4].map((n) => backoffDelay(n, bounds, undefined, top))).toEqual([100, 200, 400, 800]);
  });

  it('never exceeds maxMs, however many attempts failed', () => {
    for (const attempt of [5, 10, 50, 1000]) {
      expect(backoffDelay(attempt, bounds, undefined, () => 0.999999)).toBe(1000);
    }
  });

  it('stays within [0, min(max, initial·2^(n-1))] for every random draw', () => {
    const random = sequence(0, 0.1, 0.25, 0.5, 0.75, 0.9, 0.999999);
    for (let attempt = 1; attempt <= 12; attempt++) {
      const ceiling = Math.min(bounds.maxMs, bounds.initialMs * 2 ** (attempt - 1));
      for (let draw = 0; draw < 7; draw++) {
        const delay = backoffDelay(attempt, bounds, undefined, random);
        expect(delay).toBeGreaterThanOrEqual(0);
        expect(delay).toBeLessThanOrEqual(ceiling);
      }
    }
  });

  it('spreads delays with full jitter', () => {
    const delays = new Set([0.1, 0.4, 0.7, 0.95].map((r) => backoffDelay(4, bounds, undefined, () => r)));
    expect(delays.size).toBe(4);
  });

  it('treats a Retry-After as a floor when the jittered delay is shorter', () => {
    expect(backoffDelay(1, bounds, 750, () => 0)).toBe(750);
  });

  it('keeps the jittered delay when it is longer than the Retry-After', () => {
    expect(backoffDelay(4, bounds, 50, () => 0.999999)).toBe(800);
  });

  it('honours a Retry-After longer than maxMs', () => {
    expect(backoffDelay(1, bounds, 30_000, () => 0.5)).toBe(30_000);
  });
});

describe('sleep()', () => {
  it('rejects with the reason when its signal aborts', async () => {
    const controller = new AbortController();
    const slept = sleep(60_000, controller.signal);
    controller.abort(new Error('stopping'));
    await expect(slept).rejects.toThrow('stopping');
  });

  it('rejects at once when its signal is already aborted', async () => {
    await expect(sleep(60_000, AbortSignal.abort(new Error('gone')))).rejects.toThrow('gone');
  });
});
