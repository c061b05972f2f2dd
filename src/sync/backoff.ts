/** Bounds of the retry backoff, in ms. */
export interface BackoffBounds {
  /** Delay ceiling of the first retry. */
  initialMs: number;
  /** No delay exceeds this. */
  maxMs: number;
}

/**
 * Exponential backoff with full jitter (a random delay between 0 and `initial · 2^(attempt-1)`, capped), so that a
 * fleet of gateways coming back after an outage does not reconnect in step. A `Retry-After` from the server is a
 * floor: the gateway never comes back sooner than it was asked to.
 */
export function backoffDelay(
  attempt: number,
  bounds: BackoffBounds,
  retryAfterMs?: number,
  random: () => number = Math.random,
): number {
  const ceiling = Math.min(bounds.maxMs, bounds.initialMs * 2 ** Math.max(0, attempt - 1));
  const jittered = Math.round(random() * ceiling);
  // Retry-After is already capped (at one hour) where it is parsed; capping it again here would break the floor.
  return retryAfterMs === undefined ? jittered : Math.max(jittered, retryAfterMs);
}

/** Resolves after `ms`, or rejects with the signal's reason when it aborts first. The timer does not hold the process. */
export function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) {
      reject(signal.reason);
      return;
    }
    const onAbort = () => {
      clearTimeout(timer);
      reject(signal?.reason);
    };
    const timer = setTimeout(() => {
      signal?.removeEventListener('abort', onAbort);
      resolve();
    }, ms);
    timer.unref();
    signal?.addEventListener('abort', onAbort, { once: true });
  });
}
