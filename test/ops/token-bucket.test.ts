import { describe, expect, it } from 'vitest';
import { TokenBucket } from '../../src/ops/token-bucket.js';

describe('TokenBucket', () => {
  const clock = () => {
    const c = { now: 0, read: () => c.now };
    return c;
  };

  it('starts full and lets a burst of its capacity through', () => {
    const c = clock();
    const bucket = new TokenBucket(10, 20, c.read);
    expect(bucket.take(20)).toEqual({ ok: true });
    expect(bucket.take(1)).toEqual({ ok: false, retryAfterSeconds: 1 });
  });

  it('refills at its rate, up to its capacity', () => {
    const c = clock();
    const bucket = new TokenBucket(10, 20, c.read);
    bucket.take(20);
    c.now += 500;
    expect(bucket.tokens).toBeCloseTo(5);
    expect(bucket.take(6).ok).toBe(false);
    expect(bucket.take(5).ok).toBe(true);
    c.now += 60_000;
    expect(bucket.tokens).toBe(20);
  });

  it('says how many whole seconds until a cost fits', () => {
    const c = clock();
    const bucket = new TokenBucket(2, 10, c.read);
    bucket.take(10);
    expect(bucket.take(7)).toEqual({ ok: false, retryAfterSeconds: 4 });
    expect(bucket.tokens).toBe(0); // a refusal takes nothing
  });

  it('never fits a cost above its capacity', () => {
    const bucket = new TokenBucket(100, 10, clock().read);
    expect(bucket.take(11)).toEqual({ ok: false, retryAfterSeconds: Number.POSITIVE_INFINITY });
  });

  it('refuses a rate or capacity that is not positive', () => {
    expect(() => new TokenBucket(0, 1)).toThrow(RangeError);
    expect(() => new TokenBucket(1, 0)).toThrow(RangeError);
  });
});
