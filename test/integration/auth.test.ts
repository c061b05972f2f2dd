import { describe, expect, it } from 'vitest';
import type { SyncErrorEvent } from '../../src/index.js';
import { startCloudServer } from '../../src/testing/index.js';
import { defer } from '../helpers/cleanup.js';
import { comparable, createGateway, readings } from '../helpers/gateway.js';
import { waitFor } from '../helpers/wait-for.js';

describe('EdgeGateway', () => {
  describe('when the cloud refuses the API key', () => {
    async function setup() {
      const cloud = await startCloudServer({ apiKeys: ['right'] });
      defer(() => cloud.close());
      const gateway = createGateway({ cloudUrl: cloud.url, apiKey: 'wrong' });
      const errors: SyncErrorEvent[] = [];
      gateway.on('sync-error', (event) => errors.push(event));
      await gateway.start();
      const sent = readings(20);
      await gateway.sendBatch(sent);
      await waitFor(() => errors.some((e) => e.code === 'AUTH_REFUSED'), 5000, 'an AUTH_REFUSED sync-error');
      return { cloud, gateway, errors, sent };
    }

    it('emits a sync-error with code AUTH_REFUSED and the HTTP status', async () => {
      const { errors } = await setup();
      expect(errors.find((e) => e.code === 'AUTH_REFUSED')).toMatchObject({
        httpStatus: 401,
        message: expect.stringMatching(/API key/),
      });
    });

    it('says so in its status, and keeps every reading queued', async () => {
      const { gateway, cloud } = await setup();
      expect(gateway.getStatus()).toMatchObject({ authRefused: true, pendingSyncCount: 20 });
      expect(await cloud.points(gateway.options.deviceId)).toEqual([]);
    });

    it('reports unhealthy, naming the API key', async () => {
      const { gateway } = await setup();
      const health = gateway.healthCheck();
      expect(health.status).toBe('unhealthy');
      expect(health.reasons.join(' ')).toMatch(/API key/);
    });

    it('delivers everything once configure() gives it the right key', async () => {
      const { gateway, cloud, sent } = await setup();
      gateway.configure({ apiKey: 'right' });
      await waitFor(() => gateway.getStatus().pendingSyncCount === 0, 5000, 'an empty local queue');
      expect((await cloud.points(gateway.options.deviceId)).map(comparable)).toEqual(sent.map(comparable));
      expect(gateway.getStatus().authRefused).toBe(false);
      expect(gateway.healthCheck().status).toBe('healthy');
    });
  });
});
