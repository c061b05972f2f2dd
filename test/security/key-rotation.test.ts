import { describe, expect, it } from 'vitest';
import type { CloudStore, IncomingBatch, IngestOutcome } from '../../src/cloud/index.js';
import { SqliteCloudStore } from '../../src/cloud/index.js';
import type { SyncErrorEvent } from '../../src/index.js';
import { startCloudServer } from '../../src/testing/index.js';
import { defer } from '../helpers/cleanup.js';
import { comparable, createGateway, readings } from '../helpers/gateway.js';
import { waitFor } from '../helpers/wait-for.js';
import { captureLogger, requestLines } from './lib/log-capture.js';

const OLD = 'old-key-5f0c7d1e9a2b4c6d8e0f1a2b';
const NEW = 'new-key-8a9b0c1d2e3f4a5b6c7d8e9f';
const old = { key: OLD, name: 'old' };
const fresh = { key: NEW, name: 'new' };

/** A store whose first ingest waits until `release()`: a batch held in flight at the cloud. */
function gatedStore(inner: CloudStore): { store: CloudStore; entered: Promise<void>; release: () => void } {
  let release = () => {};
  let enter = () => {};
  const gate = new Promise<void>((resolve) => {
    release = resolve;
  });
  const entered = new Promise<void>((resolve) => {
    enter = resolve;
  });
  let calls = 0;
  const ingest = async (batch: IncomingBatch): Promise<IngestOutcome> => {
    if (calls++ === 0) {
      enter();
      await gate;
    }
    return inner.ingest(batch);
  };
  const store = new Proxy(inner, {
    get(target, property, receiver) {
      if (property === 'ingest') return ingest;
      const value: unknown = Reflect.get(target, property, receiver);
      return typeof value === 'function' ? value.bind(target) : value;
    },
  });
  return { store, entered, release };
}

describe('API key rotation', () => {
  it('moves a running gateway to a new key before the old one is revoked, losing and repeating nothing', async () => {
    const logger = captureLogger();
    const cloud = await startCloudServer({ apiKeys: [old], logger });
    defer(() => cloud.close());
    const gateway = createGateway({ cloudUrl: cloud.url, apiKey: OLD });
    const errors: SyncErrorEvent[] = [];
    gateway.on('sync-error', (event) => errors.push(event));
    await gateway.start();
    const deviceId = gateway.options.deviceId;
    const sent = readings(90);
    const drained = () => waitFor(() => gateway.getStatus().pendingSyncCount === 0, 5000, 'an empty queue');

    await gateway.sendBatch(sent.slice(0, 30));
    await drained();
    cloud.server.setApiKeys([old, fresh]);
    gateway.setApiKey(NEW);
    const switchedAt = Date.now();
    await gateway.sendBatch(sent.slice(30, 60));
    await drained();
    cloud.server.setApiKeys([fresh]);
    await gateway.sendBatch(sent.slice(60));
    await drained();

    const stored = await cloud.points(deviceId);
    expect(stored.map(comparable)).toEqual(sent.map(comparable));
    expect(new Set(stored.map((p) => p.seq)).size).toBe(90);
    expect(errors.filter((e) => e.code === 'AUTH_REFUSED')).toEqual([]);
    const lines = requestLines(logger.entries);
    expect(lines.filter((l) => l.at > switchedAt + 50).every((l) => l.key === 'new' || l.path === '/health')).toBe(
      true,
    );
    expect(lines.some((l) => l.key === 'old' && l.status === 200)).toBe(true);
    expect(lines.some((l) => l.status === 401)).toBe(false);
    expect(gateway.healthCheck().status).toBe('healthy');
  });

  it('stores a batch once when the key changes while the batch is in flight', async () => {
    const gated = gatedStore(new SqliteCloudStore(':memory:'));
    const logger = captureLogger();
    const cloud = await startCloudServer({ apiKeys: [old], store: gated.store, logger });
    defer(() => cloud.close());
    const gateway = createGateway({ cloudUrl: cloud.url, apiKey: OLD });
    await gateway.start();
    const sent = readings(40);

    await gateway.sendBatch(sent);
    await gated.entered;
    cloud.server.setApiKeys([old, fresh]);
    gateway.setApiKey(NEW);
    cloud.server.setApiKeys([fresh]);
    gated.release();
    await waitFor(() => gateway.getStatus().pendingSyncCount === 0, 5000, 'an empty queue');

    const stored = await cloud.points(gateway.options.deviceId);
    expect(stored.map(comparable)).toEqual(sent.map(comparable));
    // Sent twice, the first try cut when the key changed; stored once, the later store answered from the ledger.
    const batchPosts = () => requestLines(logger.entries).filter((l) => l.path === '/telemetry/batches');
    await waitFor(() => batchPosts().length === 2, 5000, 'both tries logged');
    expect(
      batchPosts()
        .map((l) => l.key)
        .sort(),
    ).toEqual(['new', 'old']);
    expect(await cloud.server.store.stats(gateway.options.deviceId)).toEqual({
      points: 40,
      batches: 1,
      duplicateBatches: 1,
    });
  });

  it('reports the refusal when the old key is revoked before the gateway moves, then recovers on setApiKey()', async () => {
    const cloud = await startCloudServer({ apiKeys: [old] });
    defer(() => cloud.close());
    const gateway = createGateway({ cloudUrl: cloud.url, apiKey: OLD });
    const errors: SyncErrorEvent[] = [];
    gateway.on('sync-error', (event) => errors.push(event));
    await gateway.start();
    cloud.server.setApiKeys([fresh]);
    const sent = readings(10);

    await gateway.sendBatch(sent);
    await waitFor(() => gateway.getStatus().authRefused, 5000, 'an auth refusal');
    gateway.setApiKey(NEW);
    await waitFor(() => gateway.getStatus().pendingSyncCount === 0, 5000, 'an empty queue');

    expect(errors.find((e) => e.code === 'AUTH_REFUSED')).toMatchObject({ httpStatus: 401 });
    expect((await cloud.points(gateway.options.deviceId)).map(comparable)).toEqual(sent.map(comparable));
    expect(gateway.getStatus().authRefused).toBe(false);
  });

  it('refuses an invalid key with ConfigError, keeping the one in force', async () => {
    const gateway = createGateway({ apiKey: OLD });

    expect(() => gateway.setApiKey('')).toThrow(/apiKey/);
  });
});
