import { createHash } from 'node:crypto';
import { createClient } from '@redis/client';
import { describe, expect, it } from 'vitest';
import type { CloudServerOptions } from '../../src/cloud/index.js';
import { isConfigError } from '../../src/errors.js';
import { CLOUD_STORE_KINDS, type CloudStoreKind, redisAvailable, useCloudStore } from '../helpers/cloud-stores.js';
import { getWith, jsonBatch, listenCloud, postBatch, storeCounts, wirePoints } from '../security/lib/cloud-client.js';

const KEY = 'rate-key-0123456789';
const OTHER = 'other-key-0123456789';
const T0 = Date.UTC(2026, 0, 1);

const stats = (server: Awaited<ReturnType<typeof listenCloud>>, key = KEY) => getWith(server, '/telemetry/stats', key);

for (const kind of CLOUD_STORE_KINDS) {
  describe.skipIf(kind === 'redis' && !redisAvailable())(`CloudServer rate limits on the ${kind} store`, () =>
    suite(kind),
  );
}

/** The suite, on one store: the same answers whether the buckets live in the process (SQLite) or in Redis. */
function suite(kind: CloudStoreKind): void {
  const store = useCloudStore(kind);

  /** A server whose rate limits read a clock the test moves by hand. */
  async function listen(options: Partial<CloudServerOptions> = {}) {
    const clock = { ms: T0 };
    const server = await listenCloud({ apiKeys: [KEY, OTHER], now: () => clock.ms, ...store.options(), ...options });
    return { server, clock };
  }

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

  it('refills nothing on a clock step backwards, and counts the time from the latest time seen', async () => {
    const { server, clock } = await listen({ rateLimit: { requestsPerSecond: 1, burst: 1 } });
    expect((await stats(server)).status).toBe(200);

    clock.ms -= 10_000;
    const afterStep = await stats(server);
    clock.ms += 10_000;
    const backAgain = await stats(server);
    clock.ms += 1000;
    const aSecondLater = await stats(server);

    expect([afterStep.status, backAgain.status, aSecondLater.status]).toEqual([429, 429, 200]);
    expect(afterStep.headers.get('retry-after')).toBe('1');
  });
}

describe('CloudServer rate limit options', () => {
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

describe.skipIf(!redisAvailable())('CloudServer rate limits over one Redis', () => {
  const store = useCloudStore('redis');

  /** Two server nodes over the same Redis, on their own ports, reading one clock the test moves by hand. */
  async function twoNodes(options: Partial<CloudServerOptions>) {
    const clock = { ms: T0 };
    const listen = () => listenCloud({ apiKeys: [KEY, OTHER], now: () => clock.ms, ...store.options(), ...options });
    const nodes = [await listen(), await listen()] as const;
    return { nodes, clock };
  }

  it("shares one key's budget between two nodes, and keeps another key's apart", async () => {
    const { nodes, clock } = await twoNodes({ rateLimit: { requestsPerSecond: 1, burst: 3 } });
    const [a, b] = nodes;
    expect(a.port).not.toBe(b.port);

    const alternated = [];
    for (let i = 0; i < 6; i++) alternated.push(await stats(i % 2 === 0 ? a : b));
    const other = [];
    for (let i = 0; i < 4; i++) other.push((await stats(i % 2 === 0 ? b : a, OTHER)).status);
    clock.ms += 1000;
    const refilled = [(await stats(a)).status, (await stats(b)).status];

    // Each node on its own would have let 3 through: 6 in all.
    expect(alternated.map((answer) => answer.status)).toEqual([200, 200, 200, 429, 429, 429]);
    expect(alternated[3]?.headers.get('retry-after')).toBe('1');
    expect(other).toEqual([200, 200, 200, 429]);
    expect(refilled).toEqual([200, 429]);
  });

  it('keeps a bucket under rate:{key id} that expires, so an idle key leaves nothing behind', async () => {
    const { nodes } = await twoNodes({ rateLimit: { requestsPerSecond: 1, burst: 3 } });
    await stats(nodes[0]);

    const client = createClient({ url: store.options().redisUrl as string, RESP: 3 });
    await client.connect();
    try {
      const bucket = `{edge-gateway}:rate:${createHash('sha256').update(KEY).digest('hex')}`;
      expect(await client.sendCommand(['HGETALL', bucket])).toEqual({ tokens: '2', at: String(T0) });
      const ttl = Number(await client.sendCommand(['PTTL', bucket]));
      expect(ttl).toBeGreaterThan(0);
      expect(ttl).toBeLessThanOrEqual(60_000);
    } finally {
      client.destroy();
    }
  });
});
