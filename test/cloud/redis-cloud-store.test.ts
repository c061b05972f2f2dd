import { createClient } from '@redis/client';
import { afterEach, describe, expect, it } from 'vitest';
import { CloudServer, RedisCloudStore } from '../../src/cloud/index.js';
import { isCloudStoreError, isConfigError } from '../../src/errors.js';
import { formatHlc, type MutationResult } from '../../src/model/records-wire.js';
import { defer } from '../helpers/cleanup.js';
import { redisAvailable, useCloudStore } from '../helpers/cloud-stores.js';
import { freePort } from '../helpers/http.js';
import { startRedisServer } from '../helpers/redis-server.js';

const KEY = 'k';
const T0 = Date.UTC(2026, 0, 1);

const servers: CloudServer[] = [];
afterEach(async () => {
  await Promise.all(servers.splice(0).map((server) => server.close()));
});

async function node(redisUrl: string, now?: () => number): Promise<CloudServer> {
  const server = await CloudServer.listen({ port: 0, redisUrl, apiKeys: [KEY], ...(now ? { now } : {}) });
  servers.push(server);
  return server;
}

function batchBody(seqs: number[], batchNo = 1, deviceId = 'device-1') {
  return JSON.stringify({
    v: 1,
    deviceId,
    replicaId: `replica-of-${deviceId}`,
    batchNo,
    firstSeq: seqs[0],
    lastSeq: seqs.at(-1),
    points: seqs.map((seq) => ({ seq, sensorId: 's', ts: T0 + seq, value: seq })),
  });
}

async function postBatch(server: CloudServer, body: string) {
  const { replicaId, batchNo } = JSON.parse(body) as { replicaId: string; batchNo: number };
  const response = await fetch(`${server.url}/telemetry/batches`, {
    method: 'POST',
    headers: {
      authorization: `Bearer ${KEY}`,
      'content-type': 'application/json',
      'idempotency-key': `${replicaId}:${batchNo}`,
    },
    body,
  });
  return { status: response.status, replayed: response.headers.get('idempotent-replayed') === 'true' };
}

async function call(server: CloudServer, method: string, path: string, body?: unknown) {
  const response = await fetch(`${server.url}${path}`, {
    method,
    headers: { authorization: `Bearer ${KEY}`, 'content-type': 'application/json' },
    ...(body === undefined ? {} : { body: JSON.stringify(body) }),
  });
  return { status: response.status, json: (await response.json()) as Record<string, unknown> };
}

let mids = 0;
const put = (key: string, value: unknown, baseVersion: number, hlc = formatHlc({ ms: T0 - 1000, counter: 0 })) => ({
  mid: `replica-1:${++mids}`,
  collection: 'setpoints',
  key,
  op: 'put',
  value,
  baseVersion,
  hlc,
});

async function push(server: CloudServer, mutations: unknown[]): Promise<MutationResult[]> {
  const { status, json } = await call(server, 'POST', '/records/push', {
    deviceId: 'device-1',
    replicaId: 'replica-1',
    mutations,
  });
  expect(status).toBe(200);
  return json.results as MutationResult[];
}

describe('RedisCloudStore.connect()', () => {
  it('refuses a URL that is not redis:// with a ConfigError naming the option', async () => {
    const error = await RedisCloudStore.connect({ url: 'http://127.0.0.1:6379' }).catch((e: unknown) => e);

    expect(isConfigError(error)).toBe(true);
    expect((error as Error).message).toMatch(/"url".*redis:\/\//);
  });

  it('rejects with a CloudStoreError, password hidden, when no Redis answers within connectTimeoutMs', async () => {
    const port = await freePort();
    const started = Date.now();

    const error = await RedisCloudStore.connect({
      url: `redis://user:secret@127.0.0.1:${port}`,
      connectTimeoutMs: 300,
    }).catch((e: unknown) => e);

    expect(isCloudStoreError(error)).toBe(true);
    expect((error as Error).message).toMatch(/Could not connect to Redis/);
    expect((error as Error).message).not.toContain('secret');
    expect(Date.now() - started).toBeLessThan(10_000);
  });

  it('makes CloudServer.listen() refuse a redisUrl that is not redis://, naming the option', async () => {
    const error = await CloudServer.listen({ apiKeys: [], redisUrl: 'localhost:6379' }).catch((e: unknown) => e);

    expect(isConfigError(error)).toBe(true);
    expect((error as Error).message).toMatch(/"redisUrl".*"localhost:6379"/);
  });

  it('makes CloudServer.listen() refuse a redisUrl given with a dbPath', async () => {
    const error = await CloudServer.listen({ apiKeys: [], dbPath: ':memory:', redisUrl: 'redis://127.0.0.1:1' }).catch(
      (e: unknown) => e,
    );

    expect(isConfigError(error)).toBe(true);
    expect((error as Error).message).toMatch(/"dbPath", "redisUrl" and "store".*dbPath, redisUrl/);
  });
});

describe.skipIf(!redisAvailable())('RedisCloudStore', () => {
  const store = useCloudStore('redis');
  const redisUrl = () => store.options().redisUrl as string;

  async function keys(): Promise<string[]> {
    const client = createClient({ url: redisUrl(), RESP: 3 });
    await client.connect();
    try {
      return ((await client.sendCommand(['KEYS', '*'])) as string[]).sort();
    } finally {
      client.destroy();
    }
  }

  describe('key layout', () => {
    it('keeps every key under its prefix, so that stores with other prefixes share one Redis apart', async () => {
      const a = await RedisCloudStore.connect({ url: redisUrl(), keyPrefix: '{tenant-a}:' });
      const b = await RedisCloudStore.connect({ url: redisUrl(), keyPrefix: '{tenant-b}:' });
      const serverA = await CloudServer.listen({ port: 0, store: a, apiKeys: [KEY] });
      const serverB = await CloudServer.listen({ port: 0, store: b, apiKeys: [KEY] });
      servers.push(serverA, serverB);

      await postBatch(serverA, batchBody([1, 2, 3]));
      await push(serverA, [put('x', 1, 0)]);
      await call(serverA, 'PUT', '/records/setpoints/y', { value: 2 });

      expect(await b.stats()).toEqual({ points: 0, batches: 0, duplicateBatches: 0 });
      expect(await b.recordStats()).toMatchObject({ records: 0, changeSeq: 0 });
      expect((await a.stats()).points).toBe(3);
      const all = await keys();
      expect(all.every((key) => key.startsWith('{tenant-a}:'))).toBe(true);
      expect(all.map((key) => key.slice('{tenant-a}:'.length))).toEqual([
        'batches',
        'change-seq',
        'changes',
        'device-batches:device-1',
        'device-stats:device-1',
        'hlc-high',
        `ledger:replica-of-device-1:1`,
        `mid:replica-1:${mids}`,
        'point-id',
        'points',
        'rec:setpoints:x',
        'rec:setpoints:y',
        'record-counts',
        'stats',
      ]);
    });

    it('uses the prefix {edge-gateway}: unless told, a hash tag that keeps every key in one Redis Cluster slot', async () => {
      const server = await node(redisUrl());

      await postBatch(server, batchBody([1]));

      expect((await keys()).every((key) => key.startsWith('{edge-gateway}:'))).toBe(true);
    });
  });

  describe('several server nodes over one Redis', () => {
    it('answers a batch stored through one node as a replay through another', async () => {
      const [a, b] = [await node(redisUrl()), await node(redisUrl())];
      const body = batchBody([1, 2, 3, 4]);

      const first = await postBatch(a, body);
      const again = await postBatch(b, body);

      expect(first).toEqual({ status: 200, replayed: false });
      expect(again).toEqual({ status: 200, replayed: true });
      expect(await b.store.stats()).toEqual({ points: 4, batches: 1, duplicateBatches: 1 });
    });

    it('stores a batch once when it reaches three nodes at the same moment', async () => {
      const nodes = [await node(redisUrl()), await node(redisUrl()), await node(redisUrl())];
      const body = batchBody(Array.from({ length: 200 }, (_, i) => i + 1));

      const answers = await Promise.all(nodes.flatMap((n) => [postBatch(n, body), postBatch(n, body)]));

      expect(answers.every((answer) => answer.status === 200)).toBe(true);
      expect(answers.filter((answer) => !answer.replayed)).toHaveLength(1);
      expect(await nodes[0]?.store.stats()).toEqual({ points: 200, batches: 1, duplicateBatches: 5 });
      const { points } = await (nodes[2] as CloudServer).store.query({ deviceId: 'device-1', limit: 1000 });
      expect(points.map((p) => p.seq)).toEqual(Array.from({ length: 200 }, (_, i) => i + 1));
    });

    it('applies a mutation once when the same push reaches two nodes at once, and either node pulls it', async () => {
      const [a, b] = [await node(redisUrl()), await node(redisUrl())];
      const mutations = [put('a', 1, 0), put('b', 2, 0), put('a', 3, 1)];

      const [fromA, fromB] = await Promise.all([push(a, mutations), push(b, mutations)]);

      expect(fromA).toEqual(fromB);
      expect(fromA.map((r) => r.status)).toEqual(['applied', 'applied', 'applied']);
      const { json } = await call(b, 'GET', '/records/pull?cursor=0');
      expect(json).toMatchObject({
        changes: [
          { key: 'b', value: 2, version: 1, seq: 2 },
          { key: 'a', value: 3, version: 2, seq: 3 },
        ],
        cursor: 3,
        hasMore: false,
      });
    });

    it('lets exactly one of two nodes apply concurrent edits made on the same version', async () => {
      const [a, b] = [await node(redisUrl()), await node(redisUrl())];
      await push(a, [put('k', 'base', 0)]);

      const [[onA], [onB]] = await Promise.all([push(a, [put('k', 'from a', 1)]), push(b, [put('k', 'from b', 1)])]);

      expect([onA?.status, onB?.status].sort()).toEqual(['applied', 'conflict']);
      const winner = onA?.status === 'applied' ? 'from a' : 'from b';
      expect((await call(a, 'GET', '/records/setpoints/k')).json).toMatchObject({ value: winner, version: 2 });
    });

    it('stamps a cloud-side edit on one node after a stamp another node accepted from a clock that runs ahead', async () => {
      const now = () => T0;
      const [a, b] = [await node(redisUrl(), now), await node(redisUrl(), now)];
      const ahead = formatHlc({ ms: T0 + 30_000, counter: 4 });
      await push(a, [put('k', 'edge', 0, ahead)]);

      const { json } = await call(b, 'PUT', '/records/setpoints/k', { value: 'operator' });

      expect((json.hlc as string) > ahead).toBe(true);
    });
  });

  describe('when Redis goes away', () => {
    it('answers 500 at once while Redis is down, and serves again once it is back', async () => {
      const redis = await startRedisServer();
      defer(() => redis.stop());
      const server = await node(redis.url);
      expect((await postBatch(server, batchBody([1]))).status).toBe(200);

      await redis.kill();
      const started = Date.now();
      const down = await postBatch(server, batchBody([2], 2));
      const downFor = Date.now() - started;

      expect(down.status).toBe(500);
      expect(downFor).toBeLessThan(5000);
      const back = await startRedisServer({ port: redis.port });
      defer(() => back.stop());
      // A fresh Redis knows none of the scripts: the store loads them again.
      let status = 0;
      for (let i = 0; i < 100 && status !== 200; i++) {
        status = (await postBatch(server, batchBody([3], 3))).status;
        if (status !== 200) await new Promise((resolve) => setTimeout(resolve, 50));
      }
      expect(status).toBe(200);
      expect(await server.store.stats()).toMatchObject({ points: 1, batches: 1 });
    });
  });
});
