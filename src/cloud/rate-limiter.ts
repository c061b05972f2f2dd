import type { RateLimit } from './api-keys.js';

interface Bucket {
  tokens: number;
  at: number;
  limit: Required<RateLimit>;
}

/** What the limiter decided: go ahead, or wait `retryAfterSeconds` (a whole number, at least 1). */
export type RateDecision = { allowed: true } | { allowed: false; retryAfterSeconds: number };

/** The burst a limit allows when it names none: one second's worth, and at least one request. */
export const defaultBurst = (limit: RateLimit): number =>
  limit.burst ?? Math.max(1, Math.ceil(limit.requestsPerSecond));

/**
 * Token buckets, one per key id: each holds up to `burst` tokens, refills at `requestsPerSecond`, and a request
 * takes one. Memory is one small object per key the server holds; {@link retain} drops the buckets of revoked keys.
 */
export class RateLimiter {
  readonly #buckets = new Map<string, Bucket>();
  readonly #now: () => number;

  /** @param now a clock in milliseconds; a step backwards refills nothing and takes nothing. */
  constructor(now: () => number) {
    this.#now = now;
  }

  /** Takes one token from `id`'s bucket under `limit`, or says how long until one is there. */
  take(id: string, limit: RateLimit): RateDecision {
    const now = this.#now();
    const wanted = { requestsPerSecond: limit.requestsPerSecond, burst: defaultBurst(limit) };
    let bucket = this.#buckets.get(id);
    if (!bucket) {
      bucket = { tokens: wanted.burst, at: now, limit: wanted };
      this.#buckets.set(id, bucket);
    } else {
      const elapsedSeconds = Math.max(0, now - bucket.at) / 1000;
      bucket.at = Math.max(bucket.at, now);
      bucket.limit = wanted;
      bucket.tokens = Math.min(wanted.burst, bucket.tokens + elapsedSeconds * wanted.requestsPerSecond);
    }
    if (bucket.tokens >= 1) {
      bucket.tokens -= 1;
      return { allowed: true };
    }
    const waitSeconds = (1 - bucket.tokens) / wanted.requestsPerSecond;
    return { allowed: false, retryAfterSeconds: Math.max(1, Math.ceil(waitSeconds)) };
  }

  /** Forgets the buckets of every id not in `ids` (revoked keys). */
  retain(ids: ReadonlySet<string>): void {
    for (const id of this.#buckets.keys()) if (!ids.has(id)) this.#buckets.delete(id);
  }
}
