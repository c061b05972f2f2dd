import { describe, expect, it } from 'vitest';
import { CloudServer } from '../../src/cloud/index.js';
import type { SyncErrorEvent } from '../../src/index.js';
import { defer } from '../helpers/cleanup.js';
import { comparable, createGateway, readings } from '../helpers/gateway.js';
import { freePort } from '../helpers/http.js';
import { waitFor } from '../helpers/wait-for.js';

describe('EdgeGateway', () => {
  describe('offline, then online', () => {
    it('keeps readings while the cloud is unreachable and delivers each once when it comes up', async () => {
      const port = await freePort();
      const gateway = createGateway({
        cloudUrl: `http://127.0.0.1:${port}/api/v1`,
        apiKey: 'edge-key',
        syncStrategy: 'fixed-interval',
        batchSize: 25,
      });
      const deviceId = gateway.options.deviceId;
      const offline: { reason: string }[] = [];
      const errors: SyncErrorEvent[] = [];
      let online = 0;
      gateway.on('offline', (info) => offline.push(info));
      gateway.on('sync-error', (event) => errors.push(event));
      gateway.on('online', () => online++);
      await gateway.start();

      const sent = readings(60);
      expect(await gateway.sendBatch(sent)).toBe(60);
      await waitFor(() => offline.length > 0 && errors.length > 0, 5000, "'offline' and 'sync-error' events");

      const status = gateway.getStatus();
      expect(status.isOnline).toBe(false);
      expect(status.pendingSyncCount).toBe(60);
      expect(status.failedSyncCount).toBeGreaterThan(0);
      expect(offline).toHaveLength(1);
      expect(offline[0]?.reason).toMatch(/ECONNREFUSED/);
      expect(errors[0]).toMatchObject({ code: 'NETWORK' });
      expect(gateway.healthCheck()).toMatchObject({
        status: 'degraded',
        reasons: [expect.stringMatching(/unreachable/)],
      });
      expect(online).toBe(0);

      const cloud = await CloudServer.listen({ port, host: '127.0.0.1', apiKeys: ['edge-key'] });
      defer(() => cloud.close());
      await waitFor(async () => (await cloud.store.stats(deviceId)).points >= 60, 10_000, 'every reading in the cloud');
      await waitFor(() => gateway.getStatus().pendingSyncCount === 0, 5000, 'an empty local queue');

      const stored = (await cloud.store.query({ deviceId, limit: 1000 })).points;
      expect(stored.map(comparable)).toEqual(sent.map(comparable));
      expect(new Set(stored.map((p) => p.seq)).size).toBe(60);
      expect(await cloud.store.stats(deviceId)).toMatchObject({ points: 60, batches: 3 });
      expect(online).toBe(1);
      expect(gateway.getStatus()).toMatchObject({ isOnline: true, lastSyncTime: expect.any(Date) });
      expect(gateway.healthCheck().status).toBe('healthy');
    });
  });
});
