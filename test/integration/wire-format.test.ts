import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { COMPACT_BATCH_CONTENT_TYPE } from '../../src/model/compact-codec.js';
import { startTestCloud, type TestCloud } from '../helpers/cloud.js';
import { comparable, createGateway, readings } from '../helpers/gateway.js';
import { batchRequests, forward, sendJson, startTestServer } from '../helpers/http.js';

describe('EdgeGateway wire format', () => {
  let cloud: TestCloud;
  beforeAll(async () => {
    cloud = await startTestCloud();
  });
  afterAll(async () => {
    await cloud.close();
  });

  it('sends compact batches by default, and the cloud stores the same readings as from JSON', async () => {
    const sent = readings(250);
    const stored = [];
    for (const wireFormat of ['compact', 'json'] as const) {
      const gateway = createGateway({
        cloudUrl: cloud.url,
        apiKey: cloud.apiKey,
        batchSize: 100,
        ...(wireFormat === 'json' ? { wireFormat } : {}),
      });
      await gateway.start();
      await gateway.sendBatch(sent);
      expect((await gateway.forceSync()).acknowledged).toBe(250);
      stored.push((await cloud.points(gateway.options.deviceId)).map(comparable));
    }
    expect(stored[0]).toEqual(sent.map(comparable));
    expect(stored[1]).toEqual(stored[0]);
  });

  it('falls back to JSON when the cloud answers 415 to a compact batch, and delivers everything once', async () => {
    const proxy = await startTestServer(async (request, response) => {
      if (request.headers['content-type'] === COMPACT_BATCH_CONTENT_TYPE) {
        sendJson(response, 415, { error: 'unsupported_media_type', message: 'JSON only here' });
        return;
      }
      await forward(request, response, cloud.url);
    });
    const gateway = createGateway({ cloudUrl: proxy.url, apiKey: cloud.apiKey, batchSize: 20 });
    await gateway.start();
    const sent = readings(50);
    await gateway.sendBatch(sent);
    const result = await gateway.forceSync();
    expect(result.acknowledged).toBe(50);
    const types = batchRequests(proxy).map((r) => r.headers['content-type']);
    expect(types[0]).toBe(COMPACT_BATCH_CONTENT_TYPE);
    expect(types.slice(1)).toEqual(['application/json', 'application/json', 'application/json']);
    expect((await cloud.points(gateway.options.deviceId)).map(comparable)).toEqual(sent.map(comparable));
  });

  it('reports a cloud that refuses JSON too as a server error, and keeps the readings', async () => {
    const proxy = await startTestServer((_request, response) =>
      sendJson(response, 415, { error: 'nope', message: 'nothing' }),
    );
    const gateway = createGateway({ cloudUrl: proxy.url, apiKey: cloud.apiKey });
    const errors: string[] = [];
    gateway.on('sync-error', (event) => errors.push(event.code));
    await gateway.start();
    await gateway.sendBatch(readings(5));
    await gateway.forceSync();
    const result = await gateway.forceSync();
    expect(result.acknowledged).toBe(0);
    expect(errors).toContain('SERVER_ERROR');
    expect(gateway.getStatus().pendingSyncCount).toBe(5);
  });
});
