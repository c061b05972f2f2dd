import { describe, expect, it } from 'vitest';
import type { CloudServerOptions } from '../../src/cloud/index.js';
import { isConfigError } from '../../src/errors.js';
import { getWith, jsonBatch, listenCloud, postBatch, storeCounts, wirePoints } from '../security/lib/cloud-client.js';

const KEY = 'rate-key-0123456789';
const OTHER = 'other-key-0123456789';

/** A server whose rate limits read a clock the test moves by hand. */
async function listen(options: Partial<CloudServerOptions> = {}) {
  const clock = { ms: Date.UTC(2026, 0, 1) };
  const server = await listenCloud({ apiKeys: [KEY, OTHER], now: () => clock.ms, ...options });
  return { server, clock };
}

const stats = (server: Awaited<ReturnType<typeof listen>>['server'], key = KEY) =>
  getWith(server, '/telemetry/stats', key);

describe('CloudServer rate limits', () => {
  it('lets a burst through, then answers 429 with Retry-After in whole seconds', async () => {
    const { server } = await listen({ rateLimit: { requestsPerSecond: 0.5, burst: 3 } });

    const statuses = [];
    for (let i = 0; i < 3; i++) statuses.push((await stats(server)).status);
    const refused = await stats(server);

    expect(statuses).toEqual([200, 200, 200]);
    expect(refused.status).toBe(429);
    expect(refused.headers.get('retry-after')).toBe('2');
    expect(refused.json).toMatchObject({
      error: 'rate_limited',
      message: 'this API key is over its limit of 0.5 request(s) per second; retry after 2 s',
    });
  });

  it('lets the next request through once Retry-After has passed, and not before', async () => {
    const { server, clock } = await listen({ rateLimit: { requestsPerSecond: 0.25, burst: 1 } });
    expect((await stats(server)).status).toBe(200);
    const refused = await stats(server);
    const wait = Number(refused.headers.get('retry-after'));
    expect(wait).toBe(4);

    clock.ms += wait * 1000 - 1;
    expect((await stats(server)).status).toBe(429);
    clock.ms += 1;
    expect((await stats(server)).status).toBe(200);
  });

  it('keeps a budget per key', async () => {
    const { server } = await listen({ rateLimit: { requestsPerSecond: 1, burst: 1 } });

    expect((await stats(server, KEY)).status).toBe(200);
    expect((await stats(server, KEY)).status).toBe(429);
    expect((await stats(server, OTHER)).status).toBe(200);
  });

  it("applies a key's own limit over the server's, and none when it says false", async () => {
    const { server } = await listen({
      apiKeys: [
        { key: KEY, rateLimit: { requestsPerSecond: 1, burst: 2 } },
        { key: OTHER, rateLimit: false },
      ],
      rateLimit: { requestsPerSecond: 1, burst: 1 },
    });

    const own = [];
    for (let i = 0; i < 3; i++) own.push((await stats(server, KEY)).status);
    const unlimited = [];
    for (let i = 0; i < 20; i++) unlimited.push((await stats(server, OTHER)).status);

    expect(own).toEqual([200, 200, 429]);
    expect(unlimited.every((s) => s === 200)).toBe(true);
  });

  it('never limits GET /health', async () => {
    const { server } = await listen({ rateLimit: { requestsPerSecond: 1, burst: 1 } });

    const statuses = [];
    for (let i = 0; i < 5; i++) statuses.push((await getWith(server, '/health', KEY)).status);

    expect(statuses).toEqual([200, 200, 200, 200, 200]);
  });

  it('stores nothing of a throttled batch', async () => {
    const { server } = await listen({ rateLimit: { requestsPerSecond: 1, burst: 1 } });
    expect((await stats(server)).status).toBe(200);

    const refused = await postBatch(server, jsonBatch(wirePoints(1, 10)), KEY);

    expect(refused.status).toBe(429);
    expect(await storeCounts(server)).toMatchObject({ points: 0, batches: 0 });
  });

  it('keeps the budget of a key that setApiKeys() keeps, and forgets a revoked one', async () => {
    const { server } = await listen({ rateLimit: { requestsPerSecond: 1, burst: 1 } });
    expect((await stats(server, KEY)).status).toBe(200);

    server.setApiKeys([KEY, OTHER, 'third-key-0123456789']);
    expect((await stats(server, KEY)).status).toBe(429);

    server.setApiKeys([OTHER]);
    server.setApiKeys([KEY, OTHER]);
    expect((await stats(server, KEY)).status).toBe(200);
  });

  for (const [label, rateLimit] of [
    ['zero requests per second', { requestsPerSecond: 0 }],
    ['a fractional burst', { requestsPerSecond: 1, burst: 1.5 }],
    ['a misspelled field', { requestsPerSecond: 1, bursts: 2 }],
  ] as const) {
    it(`refuses a rateLimit of ${label} with ConfigError`, async () => {
      const error = await listenCloud({ apiKeys: [KEY], rateLimit: rateLimit as never }).catch((e: unknown) => e);

      expect(isConfigError(error)).toBe(true);
      expect((error as Error).message).toMatch(/rateLimit/);
    });
  }
});
