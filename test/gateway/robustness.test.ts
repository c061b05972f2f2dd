import { describe, expect, it, vi } from 'vitest';
import { type DataPoint, DataProcessor, SqliteStorage, StorageError } from '../../src/index.js';
import { MemoryTransport, startCloudServer } from '../../src/testing/index.js';
import { HttpTransport } from '../../src/transport/http-transport.js';
import { defer } from '../helpers/cleanup.js';
import { createGateway, readings } from '../helpers/gateway.js';
import { startTestServer } from '../helpers/http.js';
import { tempDbPath } from '../helpers/temp-dir.js';
import { waitFor } from '../helpers/wait-for.js';

async function cloud() {
  const c = await startCloudServer();
  defer(() => c.close());
  return c;
}

describe('EdgeGateway robustness', () => {
  it('keeps syncing when a host listener throws', async () => {
    const c = await cloud();
    const gateway = createGateway({
      cloudUrl: c.url,
      apiKey: c.apiKey,
      syncStrategy: 'fixed-interval',
      syncInterval: 0.05,
    });
    gateway.on('sync', () => {
      throw new Error('a bug in the host');
    });
    gateway.on('error', () => {
      throw new Error('another bug in the host');
    });
    await gateway.start();
    await gateway.sendBatch(readings(10));
    await waitFor(() => gateway.getStatus().pendingSyncCount === 0, 5000, 'the first readings to sync');
    await gateway.sendBatch(readings(10, 'temp-02'));
    await waitFor(
      () => gateway.getStatus().pendingSyncCount === 0,
      5000,
      'the next readings to sync after a listener threw',
    );
    expect(await c.points(gateway.options.deviceId)).toHaveLength(20);
  });

  it('does not take an answer for another batch as an acknowledgement', async () => {
    const transport = new MemoryTransport((batch) => ({
      status: 'acknowledged',
      replayed: false,
      ack: { ackThroughBatchNo: batch.batchNo - 1, accepted: 0, duplicates: 0, serverTime: new Date().toISOString() },
    }));
    const gateway = createGateway({ transport });
    await gateway.start();
    await gateway.sendBatch(readings(3));
    const result = await gateway.forceSync();
    expect(result.acknowledged).toBe(0);
    expect(gateway.getStatus().pendingSyncCount).toBe(3);
  });

  it('gives alerts to a processor set through configure()', async () => {
    class Loud extends DataProcessor {
      async process(point: DataPoint) {
        await this.triggerAlert({ severity: 'warning', message: `saw ${point.value}` });
        return point;
      }
    }
    const gateway = createGateway();
    const alerts: string[] = [];
    gateway.on('alert', (alert) => alerts.push(alert.message));
    await gateway.start();
    gateway.configure({ processor: new Loud() });
    await gateway.sendData({ sensorId: 's', value: 7 });
    expect(alerts).toEqual(['saw 7']);
  });

  it('does not report a stall for readings that arrive after a quiet spell', async () => {
    const c = await cloud();
    const gateway = createGateway({
      cloudUrl: c.url,
      apiKey: c.apiKey,
      syncStrategy: 'fixed-interval',
      syncInterval: 60,
    });
    await gateway.start();
    await gateway.sendData({ sensorId: 's', value: 1 });
    await gateway.forceSync();
    const now = performance.now();
    const clock = vi.spyOn(performance, 'now');
    try {
      clock.mockReturnValue(now + 600_000); // ten quiet minutes, then one reading
      await gateway.sendData({ sensorId: 's', value: 2 });
      expect(gateway.healthCheck()).toMatchObject({ status: 'healthy', reasons: [] });
      clock.mockReturnValue(now + 600_000 + 200_000); // and then nothing acknowledged for over three intervals
      const health = gateway.healthCheck();
      expect(health.status).toBe('degraded');
      expect(health.reasons.join(' ')).toMatch(/nothing acknowledged/);
    } finally {
      clock.mockRestore();
    }
  });
});

describe('forceSync()', () => {
  it('does not wait out a long Retry-After that arrives while it waits for a request in flight', async () => {
    let answered = 0;
    const server = await startTestServer(async (_request, response) => {
      answered++;
      await new Promise((resolve) => setTimeout(resolve, 300));
      response.writeHead(429, { 'retry-after': '3600', 'content-type': 'application/json' });
      response.end('{"error":"throttled","message":"later"}');
    });
    const gateway = createGateway({ cloudUrl: server.url, apiKey: 'k', syncStrategy: 'on-change', maxBackoff: 3600 });
    await gateway.start();
    await gateway.sendBatch(readings(2));
    await waitFor(() => answered > 0, 5000, 'a request in flight');
    const result = await gateway.forceSync();
    expect(result.acknowledged).toBe(0);
    expect(gateway.getStatus().pendingSyncCount).toBe(2);
  }, 15_000);
});

describe('HttpTransport', () => {
  it('retries, rather than dead-letters, a 400 that is not the protocol speaking (a proxy page)', async () => {
    const server = await startTestServer((_request, response) => {
      response.writeHead(400, { 'content-type': 'text/html' });
      response.end('<html><body>Bad Request</body></html>');
    });
    const transport = new HttpTransport({ baseUrl: server.url, timeoutMs: 2000 });
    defer(() => transport.close());
    const result = await transport.sendBatch({
      replicaId: 'r',
      batchNo: 1,
      count: 1,
      body: new Uint8Array([1]),
      contentType: 'application/json',
      contentEncoding: null,
      idempotencyKey: 'r:1',
    });
    expect(result).toMatchObject({ status: 'retryable', code: 'server', httpStatus: 400 });
  });
});

describe('EdgeGateway health after a refused acknowledgement', () => {
  /** The real SQLite storage, whose acknowledgements fail while `refuse` is set (an I/O error on the sync side). */
  class FlakyAckStorage extends SqliteStorage {
    refuse = false;

    override acknowledge(batchNo: number): number {
      if (this.refuse) throw new StorageError('disk I/O error (simulated)');
      return super.acknowledge(batchNo);
    }
  }

  it('stays unhealthy while intake works but acknowledging fails, and recovers once a batch is acknowledged', async () => {
    const storage = new FlakyAckStorage({ path: tempDbPath() });
    const transport = new MemoryTransport();
    const gateway = createGateway({ storage, transport });
    await gateway.start();
    storage.refuse = true;
    await gateway.sendData({ sensorId: 's', value: 1 });
    await expect(gateway.forceSync()).rejects.toThrow(/disk I\/O error/);
    await gateway.sendData({ sensorId: 's', value: 2 }); // intake still works
    const health = gateway.healthCheck();
    expect(health.status).toBe('unhealthy');
    expect(health.reasons.join(' ')).toMatch(/refused a write/);
    storage.refuse = false;
    expect((await gateway.forceSync()).acknowledged).toBe(2);
    expect(gateway.healthCheck().status).toBe('healthy');
  });
});
