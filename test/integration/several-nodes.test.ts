import { describe, expect, it } from 'vitest';
import { CloudServer } from '../../src/cloud/index.js';
import { isConfigError } from '../../src/index.js';
import { defer } from '../helpers/cleanup.js';
import { redisAvailable, useCloudStore } from '../helpers/cloud-stores.js';
import { freePort } from '../helpers/free-port.js';
import { createGateway, readings } from '../helpers/gateway.js';
import { waitFor } from '../helpers/wait-for.js';

const KEY = 'k';

async function node(options: Partial<Parameters<typeof CloudServer.listen>[0]> = {}): Promise<CloudServer> {
  const server = await CloudServer.listen({ port: 0, apiKeys: [KEY], ...options });
  defer(() => server.close());
  return server;
}

describe('EdgeGateway with several cloud URLs', () => {
  it('delivers everything through the next node when the first never answers', async () => {
    const live = await node();
    const gateway = createGateway({ cloudUrl: [`http://127.0.0.1:${await freePort()}/api/v1`, live.url], apiKey: KEY });
    await gateway.start();

    await gateway.sendBatch(readings(20));

    await waitFor(() => gateway.getStatus().pendingSyncCount === 0, 10_000, 'an empty queue');
    expect(await live.store.stats(gateway.options.deviceId)).toMatchObject({ points: 20 });
  });

  it('refuses URLs of two schemes, and an empty list, naming the option', () => {
    for (const cloudUrl of [['http://a.example/api/v1', 'https://b.example/api/v1'], []]) {
      let caught: unknown;
      try {
        createGateway({ cloudUrl });
      } catch (error) {
        caught = error;
      }
      expect(isConfigError(caught)).toBe(true);
      expect((caught as Error).message).toContain('"cloudUrl"');
    }
  });

  describe.skipIf(!redisAvailable())('over nodes that share one Redis', () => {
    const store = useCloudStore('redis');

    it('stores each reading once when its node dies mid-stream and the next one takes over', async () => {
      const redisUrl = store.options().redisUrl as string;
      const [a, b] = [await node({ redisUrl }), await node({ redisUrl })];
      const gateway = createGateway({ cloudUrl: [a.url, b.url], apiKey: KEY, batchSize: 10 });
      await gateway.start();
      await gateway.sendBatch(readings(50));
      await waitFor(async () => (await b.store.stats(gateway.options.deviceId)).points > 0, 10_000, 'a first batch');

      await a.close();
      await gateway.sendBatch(readings(50, 'temp-02'));

      await waitFor(() => gateway.getStatus().pendingSyncCount === 0, 10_000, 'an empty queue');
      const { points } = await b.store.query({ deviceId: gateway.options.deviceId, limit: 1000 });
      expect(points.map((p) => p.seq)).toEqual(Array.from({ length: 100 }, (_, i) => i + 1));
    });
  });
});
