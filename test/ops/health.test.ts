import { createServer, type Socket } from 'node:net';
import { describe, expect, it } from 'vitest';
import type { DataPoint, EdgeGateway, HealthStatus, SyncErrorEvent } from '../../src/index.js';
import { DataProcessor } from '../../src/index.js';
import type { HealthJson } from '../../src/ops/health-json.js';
import { startCloudServer } from '../../src/testing/index.js';
import { defer } from '../helpers/cleanup.js';
import { createGateway, readings } from '../helpers/gateway.js';
import { API_PREFIX, sendJson, startTestServer } from '../helpers/http.js';
import { waitFor } from '../helpers/wait-for.js';

const MIB = 1024 * 1024;

/** GET /health of the gateway's own HTTP server: the status code and the JSON. */
async function httpHealth(gateway: EdgeGateway): Promise<{ code: number; json: HealthJson }> {
  const server = await gateway.serveHttp({ port: 0 });
  try {
    const response = await fetch(`${server.url}/health`);
    return { code: response.status, json: (await response.json()) as HealthJson };
  } finally {
    await server.close();
  }
}

/** Asserts the health check and GET /health agree: the status, a reason matching `reason`, and the HTTP code. */
async function expectHealth(gateway: EdgeGateway, status: HealthStatus['status'], reason?: RegExp) {
  const health = gateway.healthCheck();
  expect(health.status).toBe(status);
  if (reason) expect(health.reasons.join('\n')).toMatch(reason);
  else expect(health.reasons).toEqual([]);
  const { code, json } = await httpHealth(gateway);
  expect(code).toBe(status === 'unhealthy' ? 503 : 200);
  expect(json.status).toBe(status);
  if (reason) expect(json.reasons.join('\n')).toMatch(reason);
}

/** A TCP server that takes connections and never says a word: a stuck cloud. */
async function silentServer(): Promise<string> {
  const sockets: Socket[] = [];
  const server = createServer((socket) => {
    sockets.push(socket);
    socket.on('error', () => {});
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  defer(
    () =>
      new Promise<void>((resolve) => {
        for (const socket of sockets) socket.destroy();
        server.close(() => resolve());
      }),
  );
  const address = server.address();
  if (address === null || typeof address === 'string') throw new Error('no port');
  return `http://127.0.0.1:${address.port}${API_PREFIX}`;
}

/** Fails on negative readings, which then go to the dead letters. */
class RefuseNegative extends DataProcessor {
  process(point: DataPoint) {
    if (point.value < 0) throw new Error('negative reading');
    return point;
  }
}

describe('EdgeGateway health', () => {
  it('answers GET /health with the seed fields, in snake_case, and reasons', async () => {
    const cloud = await startCloudServer();
    defer(() => cloud.close());
    const gateway = createGateway({ cloudUrl: cloud.url, apiKey: cloud.apiKey });
    await gateway.start();
    await gateway.sendBatch(readings(3));
    await gateway.forceSync();
    const { code, json } = await httpHealth(gateway);
    expect(code).toBe(200);
    expect(Object.keys(json)).toEqual([
      'status',
      'device_id',
      'is_online',
      'pending_sync_count',
      'last_sync',
      'uptime_seconds',
      'local_storage_mb',
      'cpu_percent',
      'memory_mb',
      'reasons',
    ]);
    expect(json).toMatchObject({
      status: 'healthy',
      device_id: gateway.options.deviceId,
      is_online: true,
      pending_sync_count: 0,
      last_sync: gateway.getStatus().lastSyncTime?.toISOString(),
      reasons: [],
    });
    expect(json.local_storage_mb).toBeGreaterThan(0);
    expect(json.memory_mb).toBeGreaterThan(10);
    expect(json.cpu_percent).toBeGreaterThanOrEqual(0);
  });

  it('is unhealthy (503) once stopped', async () => {
    const gateway = createGateway();
    await gateway.start();
    const server = await gateway.serveHttp({ port: 0 });
    defer(() => server.close());
    await gateway.stop();
    const response = await fetch(`${server.url}/health`);
    expect(response.status).toBe(503);
    expect(((await response.json()) as HealthJson).reasons.join(' ')).toMatch(/the gateway is stopped/);
  });

  it('is unhealthy (503) while the cloud answers 401 to the API key', async () => {
    const cloud = await startCloudServer({ apiKeys: ['right'] });
    defer(() => cloud.close());
    const gateway = createGateway({ cloudUrl: cloud.url, apiKey: 'wrong' });
    const errors: SyncErrorEvent[] = [];
    gateway.on('sync-error', (event) => errors.push(event));
    await gateway.start();
    await gateway.sendBatch(readings(2));
    await waitFor(() => errors.some((e) => e.httpStatus === 401), 5000, 'a 401');
    await expectHealth(gateway, 'unhealthy', /the cloud refuses the API key/);
  });

  it('is degraded near its disk budget, and unhealthy (503) once maxDatabaseSize is full', async () => {
    const gateway = createGateway({ maxDatabaseSize: MIB });
    await gateway.start();
    let stored = 0;
    let degraded = false;
    for (let i = 0; i < 1000; i++) {
      try {
        stored += await gateway.sendBatch(readings(200, 'temp-01', Date.UTC(2024, 0, 1) + stored * 1000));
      } catch (error) {
        expect(error).toMatchObject({ name: 'StorageError', sqliteCode: 'SQLITE_FULL' });
        break;
      }
      if (!degraded && gateway.healthCheck().status === 'degraded') {
        degraded = true;
        await expectHealth(gateway, 'degraded', /the local database is 9\d% full \(maxDatabaseSize\)/);
      }
    }
    expect(degraded).toBe(true);
    expect(stored).toBeGreaterThan(0);
    await expectHealth(gateway, 'unhealthy', /the local database refused a write: .*full/);
  });

  it('is degraded while a stuck cloud (a TCP server that never answers) leaves readings queued', async () => {
    const gateway = createGateway({ cloudUrl: await silentServer(), apiKey: 'k', connectionTimeout: 0.3 });
    const errors: SyncErrorEvent[] = [];
    gateway.on('sync-error', (event) => errors.push(event));
    await gateway.start();
    await gateway.sendBatch(readings(4));
    await waitFor(() => errors.some((e) => e.code === 'TIMEOUT'), 5000, 'a timed-out batch');
    await expectHealth(gateway, 'degraded', /the cloud is unreachable; 4 reading\(s\) queued/);
  });

  it('is degraded when online but nothing is acknowledged for longer than stallTimeout', async () => {
    // Answers its health probe (so the gateway knows it online) and holds every batch without an answer.
    const server = await startTestServer((request, response) => {
      if (request.method === 'GET' && request.url.endsWith('/health')) {
        sendJson(response, 200, { status: 'ok', serverTime: new Date().toISOString() });
      } else if (request.method === 'GET') sendJson(response, 404, { error: 'not_found', message: 'no records' });
    });
    const gateway = createGateway({ cloudUrl: server.url, apiKey: 'k', connectionTimeout: 60, stallTimeout: 0.3 });
    await gateway.start();
    await waitFor(() => gateway.getStatus().isOnline, 5000, 'online');
    await gateway.sendBatch(readings(3));
    await waitFor(() => server.requests.some((r) => r.method === 'POST'), 5000, 'a batch in flight');
    await waitFor(() => gateway.healthCheck().status !== 'healthy', 5000, 'a stall noticed');
    await expectHealth(gateway, 'degraded', /online, but nothing acknowledged for \d+ s while 3 reading\(s\) wait/);
    expect(gateway.getStatus().isOnline).toBe(true);
  });

  it('is degraded while readings go to the dead letters, and healthy again once the window passes', async () => {
    const gateway = createGateway({ processor: new RefuseNegative(), deadLetterWindow: 0.5 });
    await gateway.start();
    expect(await gateway.sendData({ sensorId: 's', value: -1 })).toBe(false);
    expect(await gateway.sendData({ sensorId: 's', value: -2 })).toBe(false);
    await expectHealth(gateway, 'degraded', /2 reading\(s\) went to the dead letters in the last 0.5 s \(2 kept/);
    await waitFor(() => gateway.healthCheck().status === 'healthy', 5000, 'the window passes');
    expect(gateway.getStatus().deadLetterCount).toBe(2);
    await gateway.sendData({ sensorId: 's', value: -3 });
    await expectHealth(gateway, 'degraded', /1 reading\(s\) went to the dead letters .* \(3 kept/);
  });

  it('is degraded when the offline queue is nearly full', async () => {
    const gateway = createGateway({ maxOfflineQueueSize: 10 });
    await gateway.start();
    await gateway.sendBatch(readings(9));
    await expectHealth(gateway, 'degraded', /the offline queue is 90% full/);
  });
});
