/** The answer of {@link TokenBucket.take}. */
export type TakeResult = { readonly ok: true } | { readonly ok: false; readonly retryAfterSeconds: number };

/**
 * A token bucket: `ratePerSecond` tokens flow in, up to `capacity`; a request takes as many as it costs, or none
 * and is told how long to wait. Time is read from `now` (monotonic ms), so tests move it by hand.
 * @internal
 */
export class TokenBucket {
  readonly ratePerSecond: number;
  readonly capacity: number;
  readonly #now: () => number;
  #tokens: number;
  #at: number;

  constructor(ratePerSecond: number, capacity: number, now: () => number = () => performance.now()) {
    if (!(ratePerSecond > 0) || !(capacity > 0))
      throw new RangeError('a token bucket needs a positive rate and capacity');
    this.ratePerSecond = ratePerSecond;
    this.capacity = capacity;
    this.#now = now;
    this.#tokens = capacity;
    this.#at = now();
  }

  /** Tokens available now. */
  get tokens(): number {
    this.#refill();
    return this.#tokens;
  }

  /**
   * Takes `cost` tokens if they are there. When they are not, takes none and says how many whole seconds until
   * they will be (at least 1); a cost above the capacity never fits, and gets `Infinity`.
   */
  take(cost: number): TakeResult {
    this.#refill();
    if (cost <= this.#tokens) {
      this.#tokens -= cost;
      return { ok: true };
    }
    if (cost > this.capacity) return { ok: false, retryAfterSeconds: Number.POSITIVE_INFINITY };
    return { ok: false, retryAfterSeconds: Math.max(1, Math.ceil((cost - this.#tokens) / this.ratePerSecond)) };
  }

  #refill(): void {
    const now = this.#now();
    const elapsed = Math.max(0, now - this.#at) / 1000;
    this.#at = now;
    this.#tokens = Math.min(this.capacity, this.#tokens + elapsed * this.ratePerSecond);
  }
}
