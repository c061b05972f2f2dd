import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startTestCloud, type TestCloud } from '../helpers/cloud.js';
import { comparable, createGateway, outboxCount, readings } from '../helpers/gateway.js';
import { batchRequests, decodeBatch, forward, startTestServer } from '../helpers/http.js';
import { tempDbPath } from '../helpers/temp-dir.js';
import { waitFor } from '../helpers/wait-for.js';

describe('EdgeGateway', () => {
  let cloud: TestCloud;
  beforeAll(async () => {
    cloud = await startTestCloud();
  });
  afterAll(() => cloud.close());

  /** Waits until the cloud holds `n` readings of `deviceId`, and returns them. */
  const arrived = (deviceId: string, n: number) =>
    waitFor(
      async () => {
        const points = await cloud.points(deviceId);
        return points.length >= n ? points : undefined;
      },
      5000,
      `${n} readings in the cloud`,
    );

  describe("syncStrategy 'on-change'", () => {
    it('syncs shortly after intake, long before syncInterval', async () => {
      const gateway = createGateway({
        cloudUrl: cloud.url,
        apiKey: cloud.apiKey,
        syncStrategy: 'on-change',
        syncInterval: 60,
      });
      await gateway.start();
      await waitFor(() => gateway.getStatus().isOnline, 5000, 'the first contact');
      const sent = readings(5);
      await gateway.sendBatch(sent);
      expect((await arrived(gateway.options.deviceId, 5)).map(comparable)).toEqual(sent.map(comparable));
    });
  });

  describe("syncStrategy 'fixed-interval'", () => {
    it('delivers on its interval', async () => {
      const gateway = createGateway({
        cloudUrl: cloud.url,
        apiKey: cloud.apiKey,
        syncStrategy: 'fixed-interval',
        syncInterval: 0.2,
      });
      await gateway.start();
      await waitFor(() => gateway.getStatus().isOnline, 5000, 'the first contact');
      await gateway.sendBatch(readings(5));
      await arrived(gateway.options.deviceId, 5);
      await waitFor(() => gateway.getStatus().pendingSyncCount === 0, 5000, 'an empty local queue');
    });

    it('schedules its next sync within the interval', async () => {
      const gateway = createGateway({
        cloudUrl: cloud.url,
        apiKey: cloud.apiKey,
        syncStrategy: 'fixed-interval',
        syncInterval: 30,
      });
      await gateway.start();
      await waitFor(() => gateway.getStatus().isOnline, 5000, 'the first contact');
      const next = await waitFor(() => gateway.getStatus().nextSyncAt, 5000, 'a scheduled sync');
      expect(next.getTime() - Date.now()).toBeGreaterThan(20_000);
      expect(next.getTime() - Date.now()).toBeLessThanOrEqual(30_000);
    });
  });

  describe("syncStrategy 'adaptive'", () => {
    it('syncs early once a full batch is waiting', async () => {
      const gateway = createGateway({
        cloudUrl: cloud.url,
        apiKey: cloud.apiKey,
        syncStrategy: 'adaptive',
        syncInterval: 60,
        batchSize: 10,
      });
      await gateway.start();
      await waitFor(() => gateway.getStatus().isOnline, 5000, 'the first contact');
      await gateway.sendBatch(readings(10));
      await arrived(gateway.options.deviceId, 10);
    });
  });

  describe('.forceSync()', () => {
    it('sends everything queued and returns what it did', async () => {
      const gateway = createGateway({
        cloudUrl: cloud.url,
        apiKey: cloud.apiKey,
        syncStrategy: 'fixed-interval',
        syncInterval: 3600,
        batchSize: 10,
      });
      await gateway.start();
      const sent = readings(25);
      await gateway.sendBatch(sent);
      const result = await gateway.forceSync();
      expect(result).toMatchObject({ sent: 25, acknowledged: 25, duplicates: 0, failed: 0, remaining: 0 });
      expect(gateway.getStatus().pendingSyncCount).toBe(0);
      expect((await cloud.points(gateway.options.deviceId)).map(comparable)).toEqual(sent.map(comparable));
    });

    it('commits readings accepted in the same tick before syncing', async () => {
      const gateway = createGateway({
        cloudUrl: cloud.url,
        apiKey: cloud.apiKey,
        syncStrategy: 'fixed-interval',
        syncInterval: 3600,
      });
      await gateway.start();
      const accepted = readings(3).map((point) => gateway.sendData(point));
      const result = await gateway.forceSync();
      await Promise.all(accepted);
      expect(result).toMatchObject({ acknowledged: 3, remaining: 0 });
    });

    it('without a cloudUrl, stores locally and reports everything as remaining', async () => {
      const path = tempDbPath();
      const gateway = createGateway({ localDb: path });
      await gateway.start();
      await gateway.sendBatch(readings(12));
      expect(await gateway.forceSync()).toMatchObject({ sent: 0, acknowledged: 0, remaining: 12 });
      expect(gateway.getStatus()).toMatchObject({ pendingSyncCount: 12, isOnline: false });
      await gateway.stop();
      expect(outboxCount(path)).toBe(12);
    });
  });

  describe('.stop()', () => {
    it('sends what is queued before it resolves', async () => {
      const gateway = createGateway({
        cloudUrl: cloud.url,
        apiKey: cloud.apiKey,
        syncStrategy: 'fixed-interval',
        syncInterval: 3600,
        stopTimeout: 5,
      });
      await gateway.start();
      await waitFor(() => gateway.getStatus().isOnline, 5000, 'the first contact');
      const sent = readings(30);
      await gateway.sendBatch(sent);
      await gateway.sendData({ sensorId: 'last', value: 99 });
      await gateway.stop();
      const stored = await cloud.points(gateway.options.deviceId);
      expect(stored).toHaveLength(31);
      expect(stored.at(-1)).toMatchObject({ sensorId: 'last', value: 99 });
    });

    it('gives up after stopTimeout when the cloud does not answer, keeping the readings for the next start', async () => {
      const hanging = await startTestServer((request, response) => {
        if (request.url.endsWith('/health')) response.writeHead(200).end('{}');
        if (request.url.includes('/records/')) response.writeHead(404).end('{"error":"not_found"}'); // no records API
        // Batches are never answered.
      });
      const path = tempDbPath();
      const gateway = createGateway({
        localDb: path,
        cloudUrl: hanging.url,
        apiKey: 'k',
        syncStrategy: 'fixed-interval',
        syncInterval: 3600,
        connectionTimeout: 3600,
        stopTimeout: 0.3,
      });
      await gateway.start();
      await waitFor(() => gateway.getStatus().isOnline, 5000, 'the first contact');
      await gateway.sendBatch(readings(8));
      // Bounded far above stopTimeout: only a stop() that ignored it would miss this.
      const outcome = await Promise.race([
        gateway.stop().then(() => 'stopped'),
        new Promise((resolve) => setTimeout(resolve, 10_000, 'still stopping')),
      ]);
      expect(outcome).toBe('stopped');
      expect(batchRequests(hanging)).toHaveLength(1);
      expect(outboxCount(path)).toBe(8);
    });

    it('gives up after stopTimeout on a batch the loop already has in flight', async () => {
      const hanging = await startTestServer((request, response) => {
        if (request.url.endsWith('/health')) response.writeHead(200).end('{}');
        if (request.url.includes('/records/')) response.writeHead(404).end('{"error":"not_found"}'); // no records API
      });
      const path = tempDbPath();
      const gateway = createGateway({
        localDb: path,
        cloudUrl: hanging.url,
        apiKey: 'k',
        syncStrategy: 'on-change',
        syncInterval: 3600,
        connectionTimeout: 3600,
        stopTimeout: 0.3,
      });
      await gateway.start();
      await gateway.sendBatch(readings(8));
      await waitFor(() => batchRequests(hanging).length === 1, 5000, 'the batch in flight');
      const outcome = await Promise.race([
        gateway.stop().then(() => 'stopped'),
        new Promise((resolve) => setTimeout(resolve, 10_000, 'still stopping')),
      ]);
      expect(outcome).toBe('stopped');
      expect(outboxCount(path)).toBe(8);
    });
  });

  describe('compression', () => {
    /** A gateway behind a recording proxy to the cloud. */
    async function viaProxy(compression: boolean) {
      const proxy = await startTestServer((request, response) => forward(request, response, cloud.url));
      const gateway = createGateway({ cloudUrl: proxy.url, apiKey: cloud.apiKey, compression, wireFormat: 'json' });
      await gateway.start();
      const sent = readings(40);
      await gateway.sendBatch(sent);
      await waitFor(() => gateway.getStatus().pendingSyncCount === 0, 5000, 'an empty local queue');
      return { proxy, sent, stored: await cloud.points(gateway.options.deviceId) };
    }

    it('on, sends gzip bodies with Content-Encoding: gzip, and delivers', async () => {
      const { proxy, sent, stored } = await viaProxy(true);
      const [request] = batchRequests(proxy);
      expect(request?.headers['content-encoding']).toBe('gzip');
      expect(request?.body.subarray(0, 2)).toEqual(Buffer.from([0x1f, 0x8b]));
      expect(decodeBatch(request as never).points).toHaveLength(40);
      expect(stored.map(comparable)).toEqual(sent.map(comparable));
    });

    it('off, sends plain JSON without Content-Encoding, and delivers', async () => {
      const { proxy, sent, stored } = await viaProxy(false);
      const [request] = batchRequests(proxy);
      expect(request?.headers['content-encoding']).toBeUndefined();
      expect(JSON.parse(request?.body.toString() as string).points).toHaveLength(40);
      expect(stored.map(comparable)).toEqual(sent.map(comparable));
    });

    it('on, sends fewer bytes than off for the same readings', async () => {
      const on = await viaProxy(true);
      const off = await viaProxy(false);
      const bytes = (p: typeof on) => batchRequests(p.proxy).reduce((n, r) => n + r.body.length, 0);
      expect(bytes(on)).toBeLessThan(bytes(off) / 2);
    });
  });
});
