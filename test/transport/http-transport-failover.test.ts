import { describe, expect, it } from 'vitest';
import { HttpTransport, isConfigError, type OutgoingBatch } from '../../src/index.js';
import { encodeBatch } from '../../src/sync/batch-codec.js';
import { defer } from '../helpers/cleanup.js';
import { freePort, sendJson, startTestServer, type TestServer } from '../helpers/http.js';

const REPLICA = '00000000-0000-4000-8000-000000000002';
const ACK = { ackThroughBatchNo: 1, accepted: 1, duplicates: 0, serverTime: '2024-01-01T00:00:00.000Z' };
const PULLED = { changes: [], cursor: 0, hasMore: false, serverTime: '2024-01-01T00:00:00.000Z' };

function batch(batchNo = 1): OutgoingBatch {
  const rows = [
    { seq: 1, kind: 'reading' as const, sensorId: 's', ts: 1, value: 1, unit: null, tags: null, payload: null },
  ];
  const sealed = encodeBatch({ deviceId: 'device-1', replicaId: REPLICA }, batchNo, rows, false);
  return {
    replicaId: REPLICA,
    batchNo,
    count: sealed.count,
    body: sealed.body,
    contentType: sealed.contentType,
    contentEncoding: sealed.contentEncoding,
    idempotencyKey: `${REPLICA}:${batchNo}`,
  };
}

function transportFor(urls: string[]): HttpTransport {
  const transport = new HttpTransport({ baseUrl: urls, apiKey: 'k', timeoutMs: 2000 });
  defer(() => transport.close());
  return transport;
}

/** A node that acknowledges every batch and answers every pull. */
const healthy = () =>
  startTestServer((request, response) => sendJson(response, 200, request.method === 'GET' ? PULLED : ACK));

const closedNode = async () => `http://127.0.0.1:${await freePort()}/api/v1`;

const hits = (server: TestServer) => server.requests.length;

describe('HttpTransport with several base URLs', () => {
  it('sends every request to the first node while it answers', async () => {
    const [a, b] = [await healthy(), await healthy()];
    const transport = transportFor([a.url, b.url]);

    for (let i = 1; i <= 3; i++) expect(await transport.sendBatch(batch(i))).toMatchObject({ status: 'acknowledged' });

    expect([hits(a), hits(b)]).toEqual([3, 0]);
  });

  it('sends the next attempt to the next node after a refused connection, and stays there', async () => {
    const b = await healthy();
    const transport = transportFor([await closedNode(), b.url]);

    const first = await transport.sendBatch(batch());
    const retried = await transport.sendBatch(batch());
    const next = await transport.sendBatch(batch(2));

    expect(first).toMatchObject({ status: 'retryable', code: 'network' });
    expect(retried).toMatchObject({ status: 'acknowledged' });
    expect(next).toMatchObject({ status: 'acknowledged' });
    expect(hits(b)).toBe(2);
    expect(transport.baseUrl).toBe(`${b.url}/`);
  });

  it('moves on after a 5xx, and comes back round to the first node after the last', async () => {
    const failing = () => startTestServer((_q, response) => sendJson(response, 503, { error: 'unavailable' }));
    const [a, b] = [await failing(), await failing()];
    const transport = transportFor([a.url, b.url]);

    for (let i = 0; i < 3; i++) await transport.sendBatch(batch());

    expect(hits(a)).toBe(2);
    expect(hits(b)).toBe(1);
  });

  it('stays on a node that answers 429 (its limit is the fleet’s), or refuses the batch', async () => {
    const a = await startTestServer((request, response) =>
      String(request.headers['idempotency-key']).endsWith(':1')
        ? sendJson(response, 429, { error: 'throttled' }, { 'retry-after': '1' })
        : sendJson(response, 422, { error: 'invalid_points', message: 'no', rejected: [{ seq: 1, reason: 'no' }] }),
    );
    const b = await healthy();
    const transport = transportFor([a.url, b.url]);

    expect(await transport.sendBatch(batch(1))).toMatchObject({ status: 'retryable', code: 'throttled' });
    expect(await transport.sendBatch(batch(2))).toMatchObject({ status: 'rejected' });
    expect(await transport.sendBatch(batch(1))).toMatchObject({ status: 'retryable', code: 'throttled' });

    expect([hits(a), hits(b)]).toEqual([3, 0]);
  });

  it('fails records exchanges and pings over the same way', async () => {
    const b = await healthy();
    const transport = transportFor([await closedNode(), b.url]);

    expect(await transport.pullRecords(0, 10)).toMatchObject({ status: 'retryable', code: 'network' });
    expect(await transport.pullRecords(0, 10)).toMatchObject({ status: 'ok' });
    const other = transportFor([await closedNode(), b.url]);
    expect(await other.ping()).toMatchObject({ reachable: false });
    expect(await other.ping()).toMatchObject({ reachable: true });
  });

  it('moves on once when two requests to the same node fail together', async () => {
    const [b, c] = [await healthy(), await healthy()];
    const transport = transportFor([await closedNode(), b.url, c.url]);

    await Promise.all([transport.sendBatch(batch()), transport.pullRecords(0, 10)]);

    expect(transport.baseUrl).toBe(`${b.url}/`);
  });

  it('refuses URLs of more than one scheme, or none, with a ConfigError', () => {
    for (const urls of [['http://a/api/v1', 'https://b/api/v1'], []]) {
      let caught: unknown;
      try {
        new HttpTransport({ baseUrl: urls });
      } catch (error) {
        caught = error;
      }
      expect(isConfigError(caught)).toBe(true);
    }
  });
});
