import { request as httpRequest } from 'node:http';
import { describe, expect, it } from 'vitest';
import { ConfigError, type EdgeGateway, type EdgeGatewayOptions } from '../../src/index.js';
import type { GatewayHttpServer, HttpServerOptions } from '../../src/ops/http-server.js';
import { defer } from '../helpers/cleanup.js';
import { createGateway, outboxCount, readings } from '../helpers/gateway.js';
import { parsePrometheus } from '../helpers/prometheus.js';
import { tempDbPath } from '../helpers/temp-dir.js';

interface Served {
  gateway: EdgeGateway;
  server: GatewayHttpServer;
  path: string;
  post(
    body: unknown,
    headers?: Record<string, string>,
  ): Promise<{ status: number; json: Record<string, unknown>; headers: Headers }>;
}

async function serve(http: HttpServerOptions = {}, options: Partial<EdgeGatewayOptions> = {}): Promise<Served> {
  const path = tempDbPath();
  const gateway = createGateway({ localDb: path, ...options });
  await gateway.start();
  const server = await gateway.serveHttp({ port: 0, ...http });
  defer(() => server.close());
  return {
    gateway,
    server,
    path,
    async post(body, headers = {}) {
      const response = await fetch(`${server.url}/api/v1/data`, {
        method: 'POST',
        headers: { 'content-type': 'application/json', ...headers },
        body: typeof body === 'string' ? body : JSON.stringify(body),
      });
      return {
        status: response.status,
        json: (await response.json()) as Record<string, unknown>,
        headers: response.headers,
      };
    },
  };
}

/** POSTs `body` in chunks without a content-length, as a streaming client would. */
function postChunked(url: string, chunks: Buffer[]): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = httpRequest(
      `${url}/api/v1/data`,
      { method: 'POST', headers: { 'content-type': 'application/json', 'transfer-encoding': 'chunked' } },
      (res) => {
        let body = '';
        res.on('data', (chunk) => {
          body += chunk;
        });
        res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
      },
    );
    req.on('error', reject);
    for (const chunk of chunks) req.write(chunk);
    req.end();
  });
}

describe('EdgeGateway.serveHttp()', () => {
  it('listens on 127.0.0.1 unless told otherwise', async () => {
    const { server } = await serve();
    expect(server.host).toBe('127.0.0.1');
    expect(server.url).toBe(`http://127.0.0.1:${server.port}`);
    expect(server.port).toBeGreaterThan(0);
  });

  it('refuses a port that is in use with a ConfigError naming it', async () => {
    const { server, gateway } = await serve();
    await expect(gateway.serveHttp({ port: server.port })).rejects.toThrow(/EADDRINUSE \(the port is in use\)/);
    await expect(gateway.serveHttp({ port: server.port })).rejects.toBeInstanceOf(ConfigError);
  });

  it('refuses a misspelled or out-of-range option with a ConfigError', async () => {
    const gateway = createGateway();
    await gateway.start();
    await expect(gateway.serveHttp({ prot: 1 } as HttpServerOptions)).rejects.toThrow(/Misspelled .*"prot"/);
    await expect(gateway.serveHttp({ port: 70_000 })).rejects.toThrow(/"port" option/);
  });

  it('refuses an idempotencyWindow under a second, which would remember keys for 0 ms', async () => {
    const gateway = createGateway();
    await gateway.start();
    await expect(gateway.serveHttp({ port: 0, idempotencyWindow: 0.0004 })).rejects.toThrow(
      /"idempotencyWindow" option of serveHttp\(\) to be valid: .*>=1/,
    );
    const server = await gateway.serveHttp({ port: 0, idempotencyWindow: 1 });
    await server.close();
  });

  it('answers 404 for an unknown path and 405, with Allow, for a wrong method', async () => {
    const { server } = await serve();
    expect((await fetch(`${server.url}/nope`)).status).toBe(404);
    const wrong = await fetch(`${server.url}/api/v1/data`);
    expect(wrong.status).toBe(405);
    expect(wrong.headers.get('allow')).toBe('POST');
  });

  it('stops listening on close(), and close() is safe to call twice', async () => {
    const { server } = await serve();
    await Promise.all([server.close(), server.close()]);
    await expect(fetch(`${server.url}/health`)).rejects.toThrow();
  });
});

describe('POST /api/v1/data', () => {
  it('stores one reading and answers once it is durable', async () => {
    const { post, path } = await serve();
    const answer = await post({ sensorId: 'temp-01', value: 21.5, unit: 'celsius', tags: { site: 'a' } });
    expect(answer).toMatchObject({ status: 200, json: { accepted: 1, stored: 1 } });
    expect(outboxCount(path)).toBe(1); // on disk, read by another connection, as soon as the answer came
  });

  it('stores an array of readings in one go', async () => {
    const { post, path, gateway } = await serve();
    const answer = await post(readings(25).map((r) => ({ ...r, timestamp: r.timestamp.toISOString() })));
    expect(answer).toMatchObject({ status: 200, json: { accepted: 25, stored: 25 } });
    expect(outboxCount(path)).toBe(25);
    expect(parsePrometheus(await gateway.metrics()).value('edge_gateway_data_points_total')).toBe(25);
  });

  it('answers malformed JSON with 400 and stores nothing', async () => {
    const { post, path } = await serve();
    expect(await post('{"sensorId": "a", "value": ')).toMatchObject({ status: 400, json: { error: 'malformed_json' } });
    expect(outboxCount(path)).toBe(0);
  });

  it('answers an array with one invalid reading with 400 listing it, and stores none of them', async () => {
    const { post, path } = await serve();
    const answer = await post([{ sensorId: 'a', value: 1 }, { sensorId: 'a', value: 'high' }, { value: 3 }]);
    expect(answer.status).toBe(400);
    expect(answer.json).toMatchObject({
      error: 'invalid_reading',
      issues: [
        { index: 1, field: 'value' },
        { index: 2, field: 'sensorId' },
      ],
    });
    expect(outboxCount(path)).toBe(0);
  });

  it('answers an empty array, null or a bare number with 400', async () => {
    const { post, path } = await serve();
    expect((await post([])).status).toBe(400);
    expect((await post('null')).status).toBe(400);
    expect((await post('42')).status).toBe(400);
    expect(outboxCount(path)).toBe(0);
  });

  it('answers a body other than JSON with 415', async () => {
    const { post, path } = await serve();
    const answer = await post({ sensorId: 'a', value: 1 }, { 'content-type': 'text/plain' });
    expect(answer).toMatchObject({ status: 415, json: { error: 'unsupported_media_type' } });
    expect((await post({ sensorId: 'a', value: 1 }, { 'content-encoding': 'gzip' })).status).toBe(415);
    expect(outboxCount(path)).toBe(0);
  });

  it('answers a body over maxBodyBytes with 413 and stores nothing, declared or streamed', async () => {
    const { post, path, server } = await serve({ maxBodyBytes: 4096 });
    const big = readings(100).map((r) => ({ sensorId: r.sensorId, value: r.value, tags: r.tags }));
    expect(JSON.stringify(big).length).toBeGreaterThan(4096);
    expect(await post(big)).toMatchObject({ status: 413, json: { error: 'payload_too_large' } });
    const streamed = await postChunked(server.url, [
      Buffer.from(JSON.stringify(big).slice(0, 3000)),
      Buffer.from(JSON.stringify(big).slice(3000)),
    ]);
    expect(streamed.status).toBe(413);
    expect(outboxCount(path)).toBe(0);
    expect(await post(big.slice(0, 10))).toMatchObject({ status: 200, json: { stored: 10 } });
  });

  it('rate-limits readings with 429 and Retry-After, storing nothing of the refused request', async () => {
    const { post, path } = await serve({ rateLimit: 1, burst: 10 });
    expect((await post(readings(10).map((r) => ({ sensorId: r.sensorId, value: r.value })))).status).toBe(200);
    const limited = await post({ sensorId: 'a', value: 1 });
    expect(limited).toMatchObject({ status: 429, json: { error: 'rate_limited' } });
    expect(Number(limited.headers.get('retry-after'))).toBeGreaterThanOrEqual(1);
    expect(outboxCount(path)).toBe(10);
    const tooMany = await post(readings(11).map((r) => ({ sensorId: r.sensorId, value: r.value })));
    expect(tooMany).toMatchObject({ status: 413, json: { error: 'too_many_readings' } });
    expect(outboxCount(path)).toBe(10);
  });

  it('requires the ingest token when one is set, leaving /health open', async () => {
    const { post, path, server } = await serve({ ingestToken: 'local-token-1' });
    expect(await post({ sensorId: 'a', value: 1 })).toMatchObject({ status: 401, json: { error: 'unauthorized' } });
    expect((await post({ sensorId: 'a', value: 1 }, { authorization: 'Bearer nope' })).status).toBe(401);
    expect((await post({ sensorId: 'a', value: 1 }, { authorization: 'Bearer local-token-1' })).status).toBe(200);
    expect(outboxCount(path)).toBe(1);
    expect((await fetch(`${server.url}/health`)).status).toBe(200);
  });

  it('answers 503 when the offline queue is full', async () => {
    const { post, path } = await serve({}, { maxOfflineQueueSize: 2 });
    expect(
      (
        await post([
          { sensorId: 'a', value: 1 },
          { sensorId: 'a', value: 2 },
        ])
      ).status,
    ).toBe(200);
    const full = await post({ sensorId: 'a', value: 3 });
    expect(full).toMatchObject({ status: 503, json: { error: 'queue_full' } });
    expect(full.headers.get('retry-after')).not.toBeNull();
    expect(outboxCount(path)).toBe(2);
  });

  it('answers 503 once the gateway is stopped', async () => {
    const { post, gateway } = await serve();
    await gateway.stop();
    expect(await post({ sensorId: 'a', value: 1 })).toMatchObject({ status: 503, json: { error: 'not_running' } });
  });
});
