import { join } from 'node:path';
import { createGzip, deflateRawSync } from 'node:zlib';
import { describe, expect, it } from 'vitest';
import { type CloudServer, type CloudServerOptions, SqliteCloudStore } from '../../src/cloud/index.js';
import { COMPACT_BATCH_CONTENT_TYPE } from '../../src/model/compact-codec.js';
import { tempDir } from '../helpers/temp-dir.js';
import {
  codecRows,
  compactBatch,
  getWith,
  jsonBatch,
  listenCloud,
  postBatch,
  pushBody,
  send,
  T0,
  tableCounts,
  wirePoints,
} from '../security/lib/cloud-client.js';
import { captureLogger } from '../security/lib/log-capture.js';
import { rawClient, statusOf } from '../security/lib/raw-socket.js';

const KEY = 'hostile-key-0123456789';
const MiB = 1024 * 1024;

/** A server on a store file, with a little data in it already, and a way to check that nothing more was stored. */
async function listen(options: Partial<CloudServerOptions> = {}) {
  const dbPath = join(tempDir('edge-gateway-hostile-'), 'cloud.db');
  const server = await listenCloud({ apiKeys: [KEY], dbPath, ...options });
  expect((await postBatch(server, jsonBatch(wirePoints(1, 3), { deviceId: 'dev-a' }), KEY)).status).toBe(200);
  expect((await send(server, 'POST', '/records/push', pushBody('dev-a', 'seed:1'), { apiKey: KEY })).status).toBe(200);
  const before = tableCounts(dbPath);
  return { server, dbPath, unchanged: () => expect(tableCounts(dbPath)).toEqual(before) };
}

/** Sends `body` as a JSON batch under a fresh key and expects a 4xx with an error code. */
async function refusedBatch(server: CloudServer, body: string | Uint8Array, key = 'replica-x:1', headers = {}) {
  const answer = await postBatch(server, { body, key }, KEY, { headers });
  expect(answer.status, answer.text).toBeGreaterThanOrEqual(400);
  expect(answer.status, answer.text).toBeLessThan(500);
  expect(typeof answer.json.error, answer.text).toBe('string');
  expect(typeof answer.json.message, answer.text).toBe('string');
  return answer;
}

/** `[` × depth, a value, `]` × depth. */
const nested = (depth: number, inner = '1') => `${'['.repeat(depth)}${inner}${']'.repeat(depth)}`;

/** Unsigned LEB128. */
function uvarint(n: number): number[] {
  const out: number[] = [];
  let rest = n;
  while (rest >= 0x80) {
    out.push((rest % 0x80) | 0x80);
    rest = Math.floor(rest / 0x80);
  }
  out.push(rest);
  return out;
}

/** A gzip stream of `megabytes` MiB of zeros, made a mebibyte at a time. */
async function gzipBomb(megabytes: number): Promise<Buffer> {
  const gzip = createGzip({ level: 9 });
  const chunks: Buffer[] = [];
  gzip.on('data', (chunk: Buffer) => chunks.push(chunk));
  const done = new Promise<void>((resolve, reject) => {
    gzip.on('end', resolve);
    gzip.on('error', reject);
  });
  const zeros = Buffer.alloc(MiB);
  for (let i = 0; i < megabytes; i++) {
    if (!gzip.write(zeros)) await new Promise((resolve) => gzip.once('drain', resolve));
  }
  gzip.end();
  await done;
  return Buffer.concat(chunks);
}

describe('CloudServer under hostile input', () => {
  describe('truncated and malformed JSON', () => {
    it('answers 400 to every truncation of a valid batch, storing nothing', async () => {
      const { server, unchanged } = await listen();
      const { body, key } = jsonBatch(wirePoints(10, 4), { deviceId: 'dev-a', batchNo: 2 });

      for (let cut = 0; cut < body.length; cut += 7) {
        const answer = await refusedBatch(server, body.slice(0, cut), key);
        expect(answer.status).toBe(400);
      }
      unchanged();
    });

    for (const [label, body] of [
      ['a bare value', '42'],
      ['null', 'null'],
      ['a trailing comma', '{"v":1,}'],
      ['single quotes', "{'v':1}"],
      ['a lone surrogate in a string', '{"v":1,"deviceId":"\\ud800"}'],
      ['bytes that are not UTF-8', '\xff\xfe{"v":1}'],
      ['an envelope of the wrong types', JSON.stringify({ v: '1', deviceId: 5, points: {} })],
      ['points that are not objects', JSON.stringify({ ...JSON.parse(jsonBatch([]).body), points: [1, 'x', null] })],
      ['a __proto__ key', '{"__proto__":{"polluted":true},"v":1}'],
    ] as const) {
      it(`answers 4xx to ${label}, storing nothing`, async () => {
        const { server, unchanged } = await listen();

        await refusedBatch(server, body, 'replica-dev-a:1');

        unchanged();
        expect(({} as Record<string, unknown>).polluted).toBeUndefined();
      });
    }

    it('answers 400 to malformed records pushes and edits, storing nothing', async () => {
      const { server, unchanged } = await listen();

      for (const [method, path] of [
        ['POST', '/records/push'],
        ['PUT', '/records/config/alpha'],
      ] as const) {
        for (const body of ['', '{', '[]', '{"deviceId":', 'nul', pushBody('dev-a', 'm:1').slice(0, -3)]) {
          const answer = await send(server, method, path, body, { apiKey: KEY });
          expect(answer.status, `${method} ${path} ${body}`).toBe(400);
        }
      }
      unchanged();
    });
  });

  describe('deep nesting', () => {
    it('refuses a 1 MiB body of "[" with 400 before parsing, without growing the heap', async () => {
      const { server, unchanged } = await listen();
      const body = '['.repeat(MiB);
      global.gc?.();
      const heapBefore = process.memoryUsage().heapUsed;

      const answer = await refusedBatch(server, body);

      expect(answer.json).toMatchObject({ error: 'too_deep', message: 'the JSON nests deeper than 64 levels' });
      // The body itself is 1 MiB, and the request and answer a few more; a parse of it would be tens.
      expect(process.memoryUsage().heapUsed - heapBefore).toBeLessThan(24 * MiB);
      unchanged();
    });

    it('refuses deeply nested reading data, record values and edits with 400 (JSON.stringify would overflow)', async () => {
      const { server, unchanged } = await listen();
      const deep = nested(20_000);
      const batch = jsonBatch([{ seq: 1, sensorId: 's', ts: T0, data: 'X' }], { batchNo: 9 });
      const push = pushBody('dev-a', 'deep:1', 'alpha', 'X');

      const answers = [
        await postBatch(server, { body: batch.body.replace('"X"', deep), key: batch.key }, KEY),
        await send(server, 'POST', '/records/push', push.replace('"X"', deep), { apiKey: KEY }),
        await send(server, 'PUT', '/records/config/alpha', `{"value":${deep}}`, { apiKey: KEY }),
      ];

      expect(answers.map((a) => [a.status, a.json.error])).toEqual([
        [400, 'too_deep'],
        [400, 'too_deep'],
        [400, 'too_deep'],
      ]);
      unchanged();
    });

    it('takes nesting up to the bound', async () => {
      const { server } = await listen({ maxJsonDepth: 8 });
      // The envelope, the points array and the point are 3 levels: data may nest 5 more.
      const ok = jsonBatch([{ seq: 1, sensorId: 's', ts: T0, data: 'X' }], { batchNo: 7 });
      const over = jsonBatch([{ seq: 1, sensorId: 's', ts: T0, data: 'X' }], { batchNo: 8 });

      const accepted = await postBatch(server, { ...ok, body: ok.body.replace('"X"', nested(5)) }, KEY);
      const refused = await postBatch(server, { ...over, body: over.body.replace('"X"', nested(6)) }, KEY);

      expect(accepted.status, accepted.text).toBe(200);
      expect(refused.json.error).toBe('too_deep');
    });

    it('answers 422 naming a compact reading whose data nests too deep', async () => {
      const { server, unchanged } = await listen();
      const rows = [{ ...codecRows(1, 1)[0], value: null, payload: `{"a":${nested(100)}}` }] as ReturnType<
        typeof codecRows
      >;

      const answer = await postBatch(server, compactBatch(rows, { deviceId: 'dev-c' }), KEY, { compact: true });

      expect(answer.status).toBe(422);
      expect(answer.json.rejected).toEqual([{ seq: 1, reason: 'data: nests deeper than 64 levels' }]);
      unchanged();
    });
  });

  describe('huge strings and numbers', () => {
    it('answers 422 to readings with oversized strings, and numbers a Date or a double cannot hold, naming each', async () => {
      const { server, unchanged } = await listen();
      const huge = 'x'.repeat(2 * MiB);
      const points = [
        { seq: 1, sensorId: huge, ts: T0 },
        { seq: 2, sensorId: 's', ts: T0, unit: huge },
        { seq: 3, sensorId: 's', ts: T0, tags: { [huge.slice(0, 1000)]: 'v' } },
        { seq: 4, sensorId: 's', ts: T0, tags: { k: huge } },
        { seq: 5, sensorId: 's', ts: 9e15 },
        { seq: 6, sensorId: 's', ts: T0, value: 'HUGE' },
      ];
      const batch = jsonBatch(points, { deviceId: 'dev-a', batchNo: 5 });

      // 1e400 parses to Infinity, which no reading may hold.
      const answer = await postBatch(server, { ...batch, body: batch.body.replace('"HUGE"', '1e400') }, KEY);

      expect(answer.status).toBe(422);
      expect((answer.json.rejected as { seq: number }[]).map((r) => r.seq)).toEqual([1, 2, 3, 4, 5, 6]);
      expect(answer.text.length).toBeLessThan(10_000);
      unchanged();
    });

    it('answers 400 to an oversized device id, JSON or compact, storing nothing', async () => {
      const { server, unchanged } = await listen();
      const deviceId = 'D'.repeat(MiB);
      // 1 KiB on the wire: before the bound, it stored a 1 MiB device id with each of its 2000 readings.
      const compact = compactBatch(codecRows(1, 2000), { deviceId, replicaId: 'r' });
      expect(compact.body.length).toBeLessThan(4096);

      const answers = [
        await postBatch(server, compact, KEY, { compact: true }),
        await postBatch(server, jsonBatch(wirePoints(1, 1), { deviceId, replicaId: 'r' }), KEY),
      ];

      expect(answers.map((a) => a.status)).toEqual([400, 400]);
      expect(answers[0]?.json.message).toMatch(/deviceId/);
      unchanged();
    });

    it('answers 4xx to oversized headers, URLs and idempotency keys', async () => {
      const { server, unchanged } = await listen();
      const batch = jsonBatch(wirePoints(1, 1));

      const longKey = await postBatch(server, { ...batch, key: 'k'.repeat(10_000) }, KEY);
      const longHeader = await postBatch(server, batch, KEY, { headers: { 'x-filler': 'f'.repeat(20_000) } });
      const longUrl = await getWith(server, `/telemetry?sensorId=${'s'.repeat(20_000)}`, KEY);
      const longQuery = await getWith(server, `/telemetry?deviceId=${'d'.repeat(5000)}`, KEY);

      expect([longKey.status, longHeader.status, longUrl.status, longQuery.status]).toEqual([400, 431, 431, 400]);
      unchanged();
    });

    it('keeps error messages short when the request is long', async () => {
      const { server } = await listen();

      const answer = await getWith(server, `/${'p'.repeat(8000)}`, KEY);

      expect(answer.status).toBe(404);
      expect(answer.text.length).toBeLessThan(600);
    });
  });

  describe('bombs', () => {
    it("answers 413 to a gzip'd JSON bomb (256 MiB of zeros) without inflating past the bound", async () => {
      const { server, unchanged } = await listen({ maxInflatedBytes: 8 * MiB });
      const bomb = await gzipBomb(256);
      const rssBefore = process.memoryUsage().rss;

      const answer = await refusedBatch(server, bomb, 'replica-x:1', { 'content-encoding': 'gzip' });

      expect(answer.status).toBe(413);
      expect(process.memoryUsage().rss - rssBefore).toBeLessThan(64 * MiB);
      unchanged();
    });

    it('answers 413 to a compact body that deflates to more than the bound', async () => {
      const { server, unchanged } = await listen({ maxInflatedBytes: 8 * MiB });
      const bomb = deflateRawSync(Buffer.alloc(64 * MiB), { level: 9 });

      const answer = await postBatch(server, { body: bomb, key: 'r:1' }, KEY, { compact: true });

      expect(answer.status).toBe(413);
      unchanged();
    });

    it('answers 400 to a compact body announcing millions of rows, without allocating them', async () => {
      const { server, unchanged } = await listen();
      const rows = 5_000_000;
      // Magic, device "d", replica "r", batch 1, the row count, one series, then zeros: each an empty delta.
      const head = Buffer.from([0x45, 0x47, 0x42, 0x02, 1, 0x64, 1, 0x72, 1, ...uvarint(rows), 1, 0, 1, 0x73, 0, 0]);
      const bomb = deflateRawSync(Buffer.concat([head, Buffer.alloc(rows * 3)]), { level: 9 });
      expect(bomb.length).toBeLessThan(64 * 1024);
      const rssBefore = process.memoryUsage().rss;

      const answer = await postBatch(server, { body: bomb, key: 'r:1' }, KEY, { compact: true });

      expect(answer.status).toBe(400);
      expect(answer.json.message).toBe('5000000 rows; at most 100000 are accepted');
      expect(process.memoryUsage().rss - rssBefore).toBeLessThan(128 * MiB);
      unchanged();
    });
  });

  describe('content types and encodings', () => {
    for (const [label, headers, status] of [
      ['text/plain on a batch', { 'content-type': 'text/plain' }, 415],
      ['no content type on a batch', { 'content-type': '' }, 415],
      ['multipart on a batch', { 'content-type': 'multipart/form-data; boundary=x' }, 415],
      ['a compact content type on JSON bytes', { 'content-type': COMPACT_BATCH_CONTENT_TYPE }, 400],
      ['brotli', { 'content-encoding': 'br' }, 415],
      ['gzip twice', { 'content-encoding': 'gzip, gzip' }, 415],
      ['gzip on plain bytes', { 'content-encoding': 'gzip' }, 400],
    ] as const) {
      it(`answers ${status} to ${label}, storing nothing`, async () => {
        const { server, unchanged } = await listen();

        const answer = await postBatch(server, jsonBatch(wirePoints(20, 2), { batchNo: 9 }), KEY, { headers });

        expect(answer.status, answer.text).toBe(status);
        unchanged();
      });
    }

    it('answers 415 to a records push that is not JSON', async () => {
      const { server, unchanged } = await listen();

      const answer = await send(server, 'POST', '/records/push', pushBody('dev-a', 'm:9'), {
        apiKey: KEY,
        headers: { 'content-type': 'application/x-www-form-urlencoded' },
      });

      expect(answer.status).toBe(415);
      unchanged();
    });
  });

  describe('malformed requests', () => {
    it('answers 400, not 500, to a request target that is not a URL path', async () => {
      const { server } = await listen();
      const client = await rawClient(server.port);

      client.socket.write(`GET http://[ HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${KEY}\r\n\r\n`);
      await new Promise((resolve) => setTimeout(resolve, 200));

      expect(statusOf(client.received())).toBe(400);
    });

    for (const [label, query] of [
      ['a negative limit', 'limit=-1'],
      ['a limit past the bound', 'limit=100001'],
      ['a date that is no date', 'from=yesterday'],
      ['a cursor that is no cursor', 'cursor=%00'],
    ] as const) {
      it(`answers 400 to a telemetry query with ${label}`, async () => {
        const { server } = await listen();

        expect((await getWith(server, `/telemetry?${query}`, KEY)).status).toBe(400);
      });
    }
  });

  describe('a failure of its own', () => {
    it('answers 500 without details, logs the error, and keeps serving', async () => {
      const logger = captureLogger();
      const inner = new SqliteCloudStore(':memory:');
      const store = new Proxy(inner, {
        get(target, property, receiver) {
          if (property === 'ingest') return () => Promise.reject(new Error('disk I/O error at /srv/cloud/private.db'));
          const value: unknown = Reflect.get(target, property, receiver);
          return typeof value === 'function' ? value.bind(target) : value;
        },
      });
      const server = await listenCloud({ apiKeys: [KEY], store, logger });

      const failed = await postBatch(server, jsonBatch(wirePoints(1, 2)), KEY);
      const next = await getWith(server, '/telemetry/stats', KEY);

      expect(failed.status).toBe(500);
      expect(failed.json).toMatchObject({ error: 'internal', message: 'the server failed to handle the request' });
      expect(failed.text).not.toContain('private.db');
      expect(logger.entries.filter((e) => e.level === 'error').map((e) => String(e.fields.err))).toEqual([
        'Error: disk I/O error at /srv/cloud/private.db',
      ]);
      expect(next.status).toBe(200);
    });
  });

  describe('slow clients', () => {
    const timeouts = { headersTimeoutMs: 400, requestTimeoutMs: 1200, bodyIdleTimeoutMs: 300 };

    it('closes a connection that trickles its headers, within the headers timeout, serving others meanwhile', async () => {
      const { server } = await listen(timeouts);
      const client = await rawClient(server.port);
      client.trickle(`POST /api/v1/telemetry/batches HTTP/1.1\r\nHost: x\r\nX-Slow: ${'s'.repeat(1000)}`, 50);

      const others = await Promise.all([getWith(server, '/telemetry/stats', KEY), getWith(server, '/health', null)]);
      const closedAfterMs = await client.closed;

      expect(others.map((a) => a.status)).toEqual([200, 200]);
      // The timeout, plus the interval at which Node looks for overdue requests (100 ms here), plus slack.
      expect(closedAfterMs).toBeLessThan(400 + 100 + 1000);
      expect(statusOf(client.received())).toBe(408);
    });

    it('answers 408 and closes when the body stops arriving, storing nothing', async () => {
      const { server, unchanged } = await listen(timeouts);
      const { body, key } = jsonBatch(wirePoints(30, 5), { batchNo: 30 });
      const client = await rawClient(server.port);

      client.socket.write(
        `POST /api/v1/telemetry/batches HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${KEY}\r\n` +
          `Content-Type: application/json\r\nIdempotency-Key: ${key}\r\nContent-Length: ${body.length}\r\n\r\n${body.slice(0, 20)}`,
      );
      const closedAfterMs = await client.closed;

      expect(statusOf(client.received())).toBe(408);
      expect(client.received()).toContain('body_timeout');
      expect(closedAfterMs).toBeLessThan(300 + 1000);
      unchanged();
    });

    it('closes a connection whose body trickles under the idle timeout, at the request timeout', async () => {
      const { server, unchanged } = await listen(timeouts);
      const { body, key } = jsonBatch(wirePoints(40, 50), { batchNo: 40 });
      const client = await rawClient(server.port);

      client.socket.write(
        `POST /api/v1/telemetry/batches HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${KEY}\r\n` +
          `Content-Type: application/json\r\nIdempotency-Key: ${key}\r\nContent-Length: ${body.length}\r\n\r\n`,
      );
      client.trickle(body, 100, 2);
      const closedAfterMs = await client.closed;

      expect(closedAfterMs).toBeLessThan(1200 + 100 + 1500);
      expect(client.received()).not.toMatch(/^HTTP\/1\.1 [25]/);
      unchanged();
    });

    it("closes an unauthenticated client's oversized body instead of reading it", async () => {
      const { server, unchanged } = await listen(timeouts);
      const client = await rawClient(server.port);

      client.socket.write(
        'POST /api/v1/telemetry/batches HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n' +
          `Content-Length: ${64 * MiB}\r\n\r\n`,
      );
      const closedAfterMs = await client.closed;

      expect(statusOf(client.received())).toBe(401);
      expect(closedAfterMs).toBeLessThan(1000);
      unchanged();
    });
  });
});
