import { describe, expect, it } from 'vitest';
import type { SyncErrorEvent } from '../../src/index.js';
import { startCloudServer } from '../../src/testing/index.js';
import { defer } from '../helpers/cleanup.js';
import { comparable, createGateway, readings } from '../helpers/gateway.js';
import { waitFor } from '../helpers/wait-for.js';
import { captureLogger, requestLines } from './lib/log-capture.js';

const KEY = 'throttled-key-3c4d5e6f7a8b9c0d';

describe('a rate-limited cloud', () => {
  it('gets no request from the gateway before its Retry-After, on any route, and every reading in the end', async () => {
    const logger = captureLogger();
    // One request a second: the gateway's own backoff (10 to 200 ms here) would try several times a second.
    const cloud = await startCloudServer({ apiKeys: [KEY], rateLimit: { requestsPerSecond: 1, burst: 1 }, logger });
    defer(() => cloud.close());
    const gateway = createGateway({ cloudUrl: cloud.url, apiKey: KEY });
    const errors: SyncErrorEvent[] = [];
    gateway.on('sync-error', (event) => errors.push(event));
    await gateway.start();
    const sent = readings(30);

    // Each round's readings arrive just after the last round's batch spent the budget: the next cycle's records
    // pull is refused with readings queued, as well as batches.
    for (let round = 0; round < 3; round++) {
      await gateway.sendBatch(sent.slice(round * 10, round * 10 + 10));
      await waitFor(() => gateway.getStatus().pendingSyncCount === 0, 10_000, 'an empty queue');
    }

    expect((await cloud.points(gateway.options.deviceId)).map(comparable)).toEqual(sent.map(comparable));
    const lines = requestLines(logger.entries).filter((l) => l.path !== '/health');
    const throttled = lines.filter((l) => l.status === 429);
    expect(new Set(throttled.map((l) => l.path))).toEqual(new Set(['/telemetry/batches', '/records/pull']));
    for (const refusal of throttled) {
      const next = lines.find((l) => l.at > refusal.at);
      if (!next) continue;
      // The server logs each request as it answers it: the gap between two answers is at least the wait asked.
      expect(next.at - refusal.at, `${refusal.path} refused, then ${next.path}`).toBeGreaterThanOrEqual(
        (refusal.retryAfterSeconds ?? Number.NaN) * 1000 - 20,
      );
    }
    // Honouring the waits keeps the refusals to about one per request that got through.
    expect(throttled.length).toBeLessThanOrEqual(lines.length - throttled.length + 1);
    expect(errors.some((e) => e.code === 'THROTTLED')).toBe(true);
  }, 30_000);
});
