import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { createServer as createHttpsServer } from 'node:https';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { gunzipSync } from 'node:zlib';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CloudServer } from '../../src/cloud/index.js';
import { HttpTransport, type OutgoingBatch } from '../../src/index.js';
import { encodeBatch } from '../../src/sync/batch-codec.js';
import { defer } from '../helpers/cleanup.js';
import { freePort, sendJson, startTestServer } from '../helpers/http.js';
import { tempDir } from '../helpers/temp-dir.js';

const REPLICA = '00000000-0000-4000-8000-000000000001';

interface BatchOptions {
  batchNo?: number;
  compression?: false | { level: 6 };
  replicaId?: string;
  /** Added to every value, to make other bytes under the same key. */
  offset?: number;
}

function batch({ batchNo = 1, compression = { level: 6 }, replicaId = REPLICA, offset = 0 }: BatchOptions = {}) {
  const rows = [1, 2, 3].map((seq) => ({
    seq,
    kind: 'reading' as const,
    sensorId: 'temp-01',
    ts: Date.UTC(2024, 0, 1) + seq,
    value: seq * 1.5 + offset,
    unit: 'celsius',
    tags: null,
    payload: null,
  }));
  const sealed = encodeBatch({ deviceId: 'device-1', replicaId }, batchNo, rows, compression);
  return {
    replicaId,
    batchNo,
    count: sealed.count,
    body: sealed.body,
    contentType: sealed.contentType,
    contentEncoding: sealed.contentEncoding,
    idempotencyKey: `${replicaId}:${batchNo}`,
  } satisfies OutgoingBatch;
}

const ACK = { ackThroughBatchNo: 1, accepted: 3, duplicates: 0, serverTime: '2024-01-01T00:00:00.000Z' };

function transportFor(url: string, options: { apiKey?: string; timeoutMs?: number } = {}): HttpTransport {
  const transport = new HttpTransport({ baseUrl: url, apiKey: 'k', ...options });
  defer(() => transport.close());
  return transport;
}

describe('HttpTransport', () => {
  describe('against the reference cloud server', () => {
    let cloud: CloudServer;
    beforeAll(async () => {
      cloud = await CloudServer.listen({ port: 0, host: '127.0.0.1', apiKeys: ['right'] });
    });
    afterAll(() => cloud.close());

    it('gets a gzip batch acknowledged', async () => {
      const result = await transportFor(cloud.url, { apiKey: 'right' }).sendBatch(batch());
      expect(result).toMatchObject({ status: 'acknowledged', replayed: false, ack: { accepted: 3, duplicates: 0 } });
    });

    it('gets an uncompressed batch acknowledged', async () => {
      const b = batch({ compression: false, replicaId: 'replica-plain' });
      expect(b.contentEncoding).toBeNull();
      const result = await transportFor(cloud.url, { apiKey: 'right' }).sendBatch(b);
      expect(result).toMatchObject({ status: 'acknowledged', ack: { accepted: 3 } });
    });

    it('reports a resent batch as replayed', async () => {
      const transport = transportFor(cloud.url, { apiKey: 'right' });
      const b = batch({ batchNo: 7 });
      await transport.sendBatch(b);
      const again = await transport.sendBatch(b);
      expect(again).toMatchObject({ status: 'acknowledged', replayed: true, ack: { ackThroughBatchNo: 7 } });
    });

    it('reports a refused API key as unauthorized', async () => {
      const result = await transportFor(cloud.url, { apiKey: 'wrong' }).sendBatch(batch({ batchNo: 2 }));
      expect(result).toMatchObject({ status: 'unauthorized', httpStatus: 401 });
    });

    it('reports other bytes under a used key as a conflict', async () => {
      const transport = transportFor(cloud.url, { apiKey: 'right' });
      await transport.sendBatch(batch({ batchNo: 9 }));
      const result = await transport.sendBatch(batch({ batchNo: 9, offset: 100 }));
      expect(result.status).toBe('conflict');
    });

    it('finds the server reachable with its time', async () => {
      const ping = await transportFor(cloud.url).ping();
      expect(ping).toEqual({ reachable: true, serverTime: expect.any(String) });
    });
  });

  describe('.sendBatch()', () => {
    it('sends the body as is, with the content headers, the idempotency key and the API key', async () => {
      const server = await startTestServer((_request, response) => sendJson(response, 200, ACK));
      const b = batch();
      await transportFor(server.url, { apiKey: 'secret' }).sendBatch(b);
      const [request] = server.requests;
      expect(request?.method).toBe('POST');
      expect(request?.url).toBe('/api/v1/telemetry/batches');
      expect(request?.headers).toMatchObject({
        'content-type': 'application/json',
        'content-encoding': 'gzip',
        'idempotency-key': b.idempotencyKey,
        authorization: 'Bearer secret',
      });
      expect(request?.body.equals(Buffer.from(b.body))).toBe(true);
      expect(JSON.parse(gunzipSync(request?.body as Buffer).toString())).toMatchObject({ batchNo: 1, firstSeq: 1 });
    });

    it('reports a 500 as retryable with code server', async () => {
      const server = await startTestServer((_q, response) => sendJson(response, 500, { error: 'internal' }));
      expect(await transportFor(server.url).sendBatch(batch())).toMatchObject({
        status: 'retryable',
        code: 'server',
        httpStatus: 500,
      });
    });

    it('reports a 503 with Retry-After as retryable with the delay', async () => {
      const server = await startTestServer((_q, response) =>
        sendJson(response, 503, { error: 'unavailable' }, { 'retry-after': '2' }),
      );
      expect(await transportFor(server.url).sendBatch(batch())).toMatchObject({
        status: 'retryable',
        code: 'server',
        httpStatus: 503,
        retryAfterMs: 2000,
      });
    });

    it('reports a 429 as throttled with the Retry-After delay', async () => {
      const server = await startTestServer((_q, response) =>
        sendJson(response, 429, { error: 'slow_down' }, { 'retry-after': '1' }),
      );
      expect(await transportFor(server.url).sendBatch(batch())).toMatchObject({
        status: 'retryable',
        code: 'throttled',
        httpStatus: 429,
        retryAfterMs: 1000,
      });
    });

    it('reports a 200 whose body is not an acknowledgement as retryable, not acknowledged', async () => {
      const server = await startTestServer((_q, response) => {
        response.writeHead(200, { 'content-type': 'text/html' });
        response.end('<html>captive portal</html>');
      });
      expect(await transportFor(server.url).sendBatch(batch())).toMatchObject({
        status: 'retryable',
        code: 'server',
        httpStatus: 200,
      });
    });

    it('reports a 422 naming readings as rejected with the readings and reasons', async () => {
      const rejected = [{ seq: 2, reason: 'value out of range' }];
      const server = await startTestServer((_q, response) =>
        sendJson(response, 422, { error: 'invalid_points', message: '1 refused', rejected }),
      );
      expect(await transportFor(server.url).sendBatch(batch())).toEqual({
        status: 'rejected',
        httpStatus: 422,
        message: 'invalid_points: 1 refused',
        rejected,
      });
    });

    it('reports a 400 without named readings as rejected without a list', async () => {
      const server = await startTestServer((_q, response) => sendJson(response, 400, { error: 'bad_batch' }));
      const result = await transportFor(server.url).sendBatch(batch());
      expect(result).toMatchObject({ status: 'rejected', httpStatus: 400 });
      expect(result).not.toHaveProperty('rejected');
    });

    it('reports a 403 as unauthorized', async () => {
      const server = await startTestServer((_q, response) => sendJson(response, 403, { error: 'forbidden' }));
      expect(await transportFor(server.url).sendBatch(batch())).toMatchObject({
        status: 'unauthorized',
        httpStatus: 403,
      });
    });

    it('reports an answer that never comes as a timeout', async () => {
      const server = await startTestServer(() => {
        // Never answers; the server closes the connection after the test.
      });
      expect(await transportFor(server.url, { timeoutMs: 200 }).sendBatch(batch())).toMatchObject({
        status: 'retryable',
        code: 'timeout',
      });
    });

    it('reports a refused connection as a network failure', async () => {
      const port = await freePort();
      const result = await transportFor(`http://127.0.0.1:${port}/api/v1`).sendBatch(batch());
      expect(result).toMatchObject({ status: 'retryable', code: 'network' });
      expect((result as { message: string }).message).toMatch(/ECONNREFUSED/);
    });

    it('throws when its signal aborts, instead of reporting a failure', async () => {
      const server = await startTestServer(() => {});
      const controller = new AbortController();
      const sending = transportFor(server.url).sendBatch(batch(), controller.signal);
      await new Promise((resolve) => setTimeout(resolve, 20));
      controller.abort(new Error('stopping'));
      await expect(sending).rejects.toThrow();
    });
  });

  describe('.ping()', () => {
    it('finds a server answering 503 unreachable', async () => {
      const server = await startTestServer((_q, response) => sendJson(response, 503, { error: 'down' }));
      expect(await transportFor(server.url).ping()).toEqual({ reachable: false, message: 'HTTP 503' });
    });

    it('finds a closed port unreachable', async () => {
      const port = await freePort();
      expect(await transportFor(`http://127.0.0.1:${port}/api/v1`).ping()).toMatchObject({ reachable: false });
    });

    it('speaks TLS to an https URL: a server with a certificate nobody signed is refused as such', async () => {
      const dir = tempDir();
      const made = spawnSync('openssl', [
        'req',
        '-x509',
        '-newkey',
        'ec',
        '-pkeyopt',
        'ec_paramgen_curve:prime256v1',
        '-nodes',
        '-subj',
        '/CN=127.0.0.1',
        '-days',
        '1',
        '-keyout',
        join(dir, 'key.pem'),
        '-out',
        join(dir, 'cert.pem'),
      ]);
      expect(made.status).toBe(0);
      const server = createHttpsServer(
        { key: readFileSync(join(dir, 'key.pem')), cert: readFileSync(join(dir, 'cert.pem')) },
        (_request, response) => sendJson(response, 200, { ok: true }),
      );
      await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
      defer(() => new Promise((resolve) => server.close(resolve)));
      const { port } = server.address() as AddressInfo;
      const result = await transportFor(`https://127.0.0.1:${port}/api/v1`).ping();
      expect(result).toMatchObject({ reachable: false });
      expect((result as { message: string }).message).toMatch(/self[- ]signed certificate/);
    });
  });
});
