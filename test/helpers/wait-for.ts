/**
 * Polls `predicate` until it returns a truthy value (awaited when it is a promise) and resolves with that value;
 * rejects with `message` after `timeoutMs`. For conditions the code under test reaches in the background.
 */
export async function waitFor<T>(
  predicate: () => T | Promise<T>,
  timeoutMs = 5000,
  message = 'condition not met',
): Promise<NonNullable<T>> {
  const deadline = Date.now() + timeoutMs;
  let last: unknown;
  for (;;) {
    try {
      const value = await predicate();
      if (value) return value as NonNullable<T>;
      last = value;
    } catch (error) {
      last = error;
    }
    if (Date.now() > deadline) {
      throw new Error(`waitFor timed out after ${timeoutMs} ms: ${message} (last: ${String(last)})`);
    }
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
}
