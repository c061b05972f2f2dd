import { createGzip, gzipSync } from 'node:zlib';
import { afterEach, describe, expect, it } from 'vitest';
import { CloudServer, type CloudServerOptions, type StoredPoint } from '../../src/cloud/index.js';
import { CLOUD_STORE_KINDS, type CloudStoreKind, redisAvailable, useCloudStore } from '../helpers/cloud-stores.js';

const KEY = 'k';
/** 2024-01-01T00:00:00.000Z: readings of the fixtures are at T0 + seq seconds. */
const T0 = Date.UTC(2024, 0, 1);

interface WireBody {
  v: number;
  deviceId: string;
  replicaId: string;
  batchNo: number;
  firstSeq: number;
  lastSeq: number;
  points: unknown[];
}

const servers: CloudServer[] = [];

afterEach(async () => {
  await Promise.all(servers.splice(0).map((server) => server.close()));
});

/** Readings `first`..`first + count - 1`, each with every optional field set. */
function readings(first: number, count: number, sensorId = 'temp-01'): Record<string, unknown>[] {
  return Array.from({ length: count }, (_, i) => {
    const seq = first + i;
    return { seq, sensorId, ts: T0 + seq * 1000, value: seq / 2, unit: 'celsius', tags: { room: `r${seq}` } };
  });
}

function batch(points: unknown[], init: Partial<Omit<WireBody, 'points'>> = {}): WireBody {
  const seqs = points.map((p) => (p as { seq?: unknown }).seq).filter((s): s is number => typeof s === 'number');
  return {
    v: 1,
    deviceId: 'device-1',
    replicaId: 'replica-1',
    batchNo: 1,
    firstSeq: seqs.length > 0 ? Math.min(...seqs) : 1,
    lastSeq: seqs.length > 0 ? Math.max(...seqs) : 1,
    points,
    ...init,
  };
}

interface PostOptions {
  /** `null` sends no Idempotency-Key; default `{replicaId}:{batchNo}` of the body. */
  idempotencyKey?: string | null;
  /** `null` sends no Authorization header. */
  apiKey?: string | null;
  gzip?: boolean;
  headers?: Record<string, string>;
}

function keyOf(body: WireBody | string | Uint8Array): string {
  if (typeof body === 'string' || body instanceof Uint8Array) return 'replica-1:1';
  return `${body.replicaId}:${body.batchNo}`;
}

async function post(server: CloudServer, body: WireBody | string | Uint8Array, options: PostOptions = {}) {
  const raw = typeof body === 'string' || body instanceof Uint8Array ? body : JSON.stringify(body);
  const headers: Record<string, string> = { 'content-type': 'application/json' };
  const key = options.idempotencyKey === undefined ? keyOf(body) : options.idempotencyKey;
  if (key !== null) headers['idempotency-key'] = key;
  const apiKey = options.apiKey === undefined ? KEY : options.apiKey;
  if (apiKey !== null) headers.authorization = `Bearer ${apiKey}`;
  let payload: string | Uint8Array = raw;
  if (options.gzip) {
    payload = gzipSync(raw);
    headers['content-encoding'] = 'gzip';
  }
  const response = await fetch(`${server.url}/telemetry/batches`, {
    method: 'POST',
    body: payload,
    headers: { ...headers, ...options.headers },
  });
  return { response, json: (await response.json()) as Record<string, unknown> };
}

async function get(server: CloudServer, path: string, apiKey: string | null = KEY) {
  const response = await fetch(`${server.url}${path}`, {
    headers: apiKey === null ? {} : { authorization: `Bearer ${apiKey}` },
  });
  return { response, json: (await response.json()) as Record<string, unknown> };
}

async function query(server: CloudServer, params: Record<string, string>) {
  const { response, json } = await get(server, `/telemetry?${new URLSearchParams(params)}`);
  expect(response.status).toBe(200);
  return json as { points: StoredPoint[]; nextCursor: string | null };
}

async function stats(server: CloudServer, deviceId?: string) {
  const { json } = await get(server, `/telemetry/stats${deviceId ? `?deviceId=${deviceId}` : ''}`);
  return { points: json.points, batches: json.batches, duplicateBatches: json.duplicateBatches };
}

/** A gzip stream of `megabytes` MiB of zeros, built a mebibyte at a time so the test itself stays small. */
async function gzipBomb(megabytes: number): Promise<Buffer> {
  const gzip = createGzip({ level: 9 });
  const chunks: Buffer[] = [];
  gzip.on('data', (chunk: Buffer) => chunks.push(chunk));
  const done = new Promise<void>((resolve, reject) => {
    gzip.on('end', resolve);
    gzip.on('error', reject);
  });
  const zeros = Buffer.alloc(1024 * 1024);
  for (let i = 0; i < megabytes; i++) {
    if (!gzip.write(zeros)) await new Promise((resolve) => gzip.once('drain', resolve));
  }
  gzip.end();
  await done;
  return Buffer.concat(chunks);
}

for (const kind of CLOUD_STORE_KINDS) {
  describe.skipIf(kind === 'redis' && !redisAvailable())(`CloudServer on the ${kind} store`, () => suite(kind));
}

/** The suite, on one store: run on each, to prove they keep the same semantics. */
function suite(kind: CloudStoreKind): void {
  const store = useCloudStore(kind);

  /** A server on a fresh store of this suite's kind, unless `options` choose one. */
  async function listen(options: Partial<CloudServerOptions> = {}): Promise<CloudServer> {
    const chosen = ['dbPath', 'redisUrl', 'store'].some((name) => name in options);
    const server = await CloudServer.listen({
      port: 0,
      host: '127.0.0.1',
      apiKeys: [KEY],
      ...(chosen ? {} : store.options()),
      ...options,
    });
    servers.push(server);
    return server;
  }

  describe('.listen()', () => {
    it('serves the API under /api/v1 on the port it picked', async () => {
      const server = await listen();

      expect(server.port).toBeGreaterThan(0);
      expect(server.url).toBe(`http://127.0.0.1:${server.port}/api/v1`);
    });
  });

  describe('GET /health', () => {
    it('answers 200 with the server time, without an API key', async () => {
      const server = await listen();

      const { response, json } = await get(server, '/health', null);

      expect(response.status).toBe(200);
      expect(response.headers.get('content-type')).toBe('application/json');
      expect(Number.isNaN(Date.parse(json.serverTime as string))).toBe(false);
    });
  });

  describe('authentication', () => {
    const routes = [
      ['POST', '/telemetry/batches'],
      ['GET', '/telemetry'],
      ['GET', '/telemetry/stats'],
    ] as const;
    const credentials = [
      ['without an API key', {}],
      ['with a wrong API key', { authorization: 'Bearer not-the-key' }],
      ['with a key that is not a Bearer token', { authorization: `Basic ${KEY}` }],
    ] as const;

    for (const [method, path] of routes) {
      for (const [label, headers] of credentials) {
        it(`refuses ${method} ${path} ${label} with 401 and WWW-Authenticate`, async () => {
          const server = await listen();

          const response = await fetch(`${server.url}${path}`, {
            method,
            headers: { ...headers, 'content-type': 'application/json', 'idempotency-key': 'replica-1:1' },
            ...(method === 'POST' ? { body: JSON.stringify(batch(readings(1, 1))) } : {}),
          });

          expect(response.status).toBe(401);
          expect(response.headers.get('www-authenticate')).toBe('Bearer');
          expect(await response.json()).toMatchObject({ error: 'unauthorized' });
          expect(await server.store.stats()).toEqual({ points: 0, batches: 0, duplicateBatches: 0 });
        });
      }
    }

    it('accepts any of several keys', async () => {
      const server = await listen({ apiKeys: ['first', 'second'] });

      const { response } = await get(server, '/telemetry/stats', 'second');

      expect(response.status).toBe(200);
    });
  });

  describe('POST /telemetry/batches', () => {
    it('stores a batch and acknowledges it', async () => {
      const server = await listen();

      const { response, json } = await post(server, batch(readings(1, 5), { batchNo: 7 }));

      expect(response.status).toBe(200);
      expect(response.headers.get('idempotent-replayed')).toBeNull();
      expect(json).toEqual({ ackThroughBatchNo: 7, accepted: 5, duplicates: 0, serverTime: expect.any(String) });
      expect(Number.isNaN(Date.parse(json.serverTime as string))).toBe(false);
      expect(await stats(server)).toEqual({ points: 5, batches: 1, duplicateBatches: 0 });
    });

    it('keeps the content of each reading, as GET /telemetry returns it', async () => {
      const server = await listen();
      const points = [
        {
          seq: 1,
          sensorId: 'temp-01',
          ts: T0 + 1500,
          value: -12.25,
          unit: 'celsius',
          tags: { room: 'lab', floor: '2' },
        },
        { seq: 2, sensorId: 'avg-01', ts: T0 + 2500, data: { avg: 21.5, samples: [1, 2] } },
      ];

      await post(server, batch(points, { deviceId: 'device-9', replicaId: 'replica-9', batchNo: 3 }));
      const page = await query(server, { deviceId: 'device-9' });

      expect(page.nextCursor).toBeNull();
      expect(page.points).toEqual([
        {
          deviceId: 'device-9',
          replicaId: 'replica-9',
          seq: 1,
          sensorId: 'temp-01',
          timestamp: '2024-01-01T00:00:01.500Z',
          value: -12.25,
          unit: 'celsius',
          tags: { room: 'lab', floor: '2' },
          receivedAt: expect.any(String),
        },
        {
          deviceId: 'device-9',
          replicaId: 'replica-9',
          seq: 2,
          sensorId: 'avg-01',
          timestamp: '2024-01-01T00:00:02.500Z',
          data: { avg: 21.5, samples: [1, 2] },
          receivedAt: expect.any(String),
        },
      ]);
    });

    it('answers a replay of the same key and bytes with the stored acknowledgement, storing nothing again', async () => {
      const server = await listen();
      const body = batch(readings(1, 4), { batchNo: 2 });
      const first = await post(server, body);

      const replay = await post(server, body);

      expect(replay.response.status).toBe(200);
      expect(replay.response.headers.get('idempotent-replayed')).toBe('true');
      const { serverTime: _a, ...firstAck } = first.json;
      const { serverTime: _b, ...replayAck } = replay.json;
      expect(replayAck).toEqual(firstAck);
      expect(replayAck).toEqual({ ackThroughBatchNo: 2, accepted: 4, duplicates: 0 });
      expect(await stats(server)).toEqual({ points: 4, batches: 1, duplicateBatches: 1 });
      expect((await query(server, {})).points.map((p) => p.seq)).toEqual([1, 2, 3, 4]);
    });

    it('stores a batch once when the same request arrives several times at once', async () => {
      const server = await listen();
      const body = batch(readings(1, 50));

      const answers = await Promise.all(Array.from({ length: 5 }, () => post(server, body)));

      for (const { response, json } of answers) {
        expect(response.status).toBe(200);
        expect(json).toMatchObject({ ackThroughBatchNo: 1, accepted: 50, duplicates: 0 });
      }
      expect(answers.filter(({ response }) => response.headers.get('idempotent-replayed') === 'true')).toHaveLength(4);
      expect(await stats(server)).toEqual({ points: 50, batches: 1, duplicateBatches: 4 });
    });

    it("treats a gzip'd body as the same body as its plain bytes", async () => {
      const server = await listen();
      const body = batch(readings(1, 3));
      await post(server, body);

      const replay = await post(server, body, { gzip: true });

      expect(replay.response.status).toBe(200);
      expect(replay.response.headers.get('idempotent-replayed')).toBe('true');
      expect(await stats(server)).toEqual({ points: 3, batches: 1, duplicateBatches: 1 });
    });

    it("stores a gzip'd batch", async () => {
      const server = await listen();

      const { response, json } = await post(server, batch(readings(1, 3)), { gzip: true });

      expect(response.status).toBe(200);
      expect(json).toMatchObject({ ackThroughBatchNo: 1, accepted: 3, duplicates: 0 });
      expect((await query(server, {})).points.map((p) => p.value)).toEqual([0.5, 1, 1.5]);
    });

    it('answers 409 when a key comes back with other bytes, and stores nothing of them', async () => {
      const server = await listen();
      await post(server, batch(readings(1, 3)));

      const { response, json } = await post(server, batch(readings(10, 3)));

      expect(response.status).toBe(409);
      expect(json).toMatchObject({ error: 'idempotency_key_reused' });
      expect((await query(server, {})).points.map((p) => p.seq)).toEqual([1, 2, 3]);
    });

    it('answers 409 to the same readings serialised differently under a used key', async () => {
      const server = await listen();
      const body = batch(readings(1, 2));
      await post(server, body);

      const { response } = await post(server, JSON.stringify(body, null, 2), { idempotencyKey: 'replica-1:1' });

      expect(response.status).toBe(409);
    });

    it('answers 400 when the key is not {replicaId}:{batchNo} of the body', async () => {
      const server = await listen();

      const { response, json } = await post(server, batch(readings(1, 1), { batchNo: 4 }), {
        idempotencyKey: 'replica-1:5',
      });

      expect(response.status).toBe(400);
      expect(json).toMatchObject({ error: 'bad_request' });
      expect(await stats(server)).toEqual({ points: 0, batches: 0, duplicateBatches: 0 });
    });

    it('answers 400 without an Idempotency-Key', async () => {
      const server = await listen();

      const { response, json } = await post(server, batch(readings(1, 1)), { idempotencyKey: null });

      expect(response.status).toBe(400);
      expect(json.message).toMatch(/Idempotency-Key/);
      expect(await stats(server)).toEqual({ points: 0, batches: 0, duplicateBatches: 0 });
    });

    it('answers 400 to a body that is not JSON', async () => {
      const server = await listen();

      const { response, json } = await post(server, '{"v":1,"deviceId":', { idempotencyKey: 'replica-1:1' });

      expect(response.status).toBe(400);
      expect(json).toMatchObject({ error: 'malformed_json' });
    });

    it("answers 400 to a body that claims gzip but is not gzip'd", async () => {
      const server = await listen();

      const { response, json } = await post(server, JSON.stringify(batch(readings(1, 1))), {
        headers: { 'content-encoding': 'gzip' },
      });

      expect(response.status).toBe(400);
      expect(json).toMatchObject({ error: 'bad_encoding' });
    });

    const badEnvelopes: [string, (body: WireBody) => unknown][] = [
      ['protocol version 2', (body) => ({ ...body, v: 2 })],
      ['no replicaId', ({ replicaId: _omitted, ...rest }) => rest],
      ['points that are not an array', (body) => ({ ...body, points: {} })],
      ['a batchNo of 0', (body) => ({ ...body, batchNo: 0 })],
    ];
    for (const [label, change] of badEnvelopes) {
      it(`answers 400 to an envelope with ${label}`, async () => {
        const server = await listen();

        const { response, json } = await post(server, JSON.stringify(change(batch(readings(1, 2)))), {
          idempotencyKey: 'replica-1:1',
        });

        expect(response.status).toBe(400);
        expect(json).toMatchObject({ error: 'bad_batch' });
        expect(await stats(server)).toEqual({ points: 0, batches: 0, duplicateBatches: 0 });
      });
    }

    it('answers 415 to a content type other than JSON', async () => {
      const server = await listen();

      const { response, json } = await post(server, batch(readings(1, 1)), {
        headers: { 'content-type': 'text/plain' },
      });

      expect(response.status).toBe(415);
      expect(json).toMatchObject({ error: 'unsupported_media_type' });
      expect(await stats(server)).toEqual({ points: 0, batches: 0, duplicateBatches: 0 });
    });

    it('answers 415 to a content encoding other than gzip', async () => {
      const server = await listen();

      const { response, json } = await post(server, batch(readings(1, 1)), {
        headers: { 'content-encoding': 'br' },
      });

      expect(response.status).toBe(415);
      expect(json).toMatchObject({ error: 'unsupported_encoding' });
      expect(await stats(server)).toEqual({ points: 0, batches: 0, duplicateBatches: 0 });
    });

    it('answers 422 naming the readings validatePoint refuses, and stores nothing of the batch', async () => {
      const server = await listen({
        validatePoint: (point, deviceId) =>
          deviceId === 'device-1' && (point.value ?? 0) > 2 ? `value ${point.value} is over 2` : undefined,
      });

      const { response, json } = await post(server, batch(readings(1, 6)));

      expect(response.status).toBe(422);
      expect(json).toMatchObject({ error: 'invalid_points' });
      expect(json.rejected).toEqual([
        { seq: 5, reason: 'value 2.5 is over 2' },
        { seq: 6, reason: 'value 3 is over 2' },
      ]);
      expect(await stats(server)).toEqual({ points: 0, batches: 0, duplicateBatches: 0 });
    });

    it('answers 422 naming the readings that fail the schema, and stores nothing of the batch', async () => {
      const server = await listen();
      const points = readings(1, 6);
      points[1] = { ...points[1], value: 'x' };
      points[3] = { ...points[3], sensorId: '' };
      points[4] = { ...points[4], colour: 'red' };

      const { response, json } = await post(server, batch(points));

      expect(response.status).toBe(422);
      const rejected = json.rejected as { seq: number; reason: string }[];
      expect(rejected.map((r) => r.seq)).toEqual([2, 4, 5]);
      for (const { reason } of rejected) expect(reason).toEqual(expect.any(String));
      expect(rejected[0]?.reason).toMatch(/value/);
      expect(rejected[1]?.reason).toMatch(/sensorId/);
      expect(rejected[2]?.reason).toMatch(/colour/);
      expect(await stats(server)).toEqual({ points: 0, batches: 0, duplicateBatches: 0 });
    });

    it('takes a corrected body under the key of a batch it refused with 422', async () => {
      const server = await listen();
      const points = readings(1, 3);
      await post(server, batch([points[0], { ...points[1], value: 'x' }, points[2]]));

      const { response, json } = await post(server, batch(points));

      expect(response.status).toBe(200);
      expect(json).toMatchObject({ ackThroughBatchNo: 1, accepted: 3 });
    });

    it('answers 413 to a body over maxBodyBytes that declares its Content-Length', async () => {
      const server = await listen({ maxBodyBytes: 1024 });
      const body = JSON.stringify(batch(readings(1, 40)));
      expect(Buffer.byteLength(body)).toBeGreaterThan(1024);

      const { response, json } = await post(server, body);

      expect(response.status).toBe(413);
      expect(json).toMatchObject({ error: 'payload_too_large' });
      expect(await server.store.stats()).toEqual({ points: 0, batches: 0, duplicateBatches: 0 });
    });

    it('answers 413 to a chunked body that grows past maxBodyBytes', async () => {
      const server = await listen({ maxBodyBytes: 1024 });
      const chunk = new TextEncoder().encode(' '.repeat(16 * 1024));
      let sent = 0;
      const body = new ReadableStream<Uint8Array>({
        pull(controller) {
          if (sent++ < 64) controller.enqueue(chunk);
          else controller.close();
        },
      });

      const response = await fetch(`${server.url}/telemetry/batches`, {
        method: 'POST',
        body,
        duplex: 'half',
        headers: {
          authorization: `Bearer ${KEY}`,
          'content-type': 'application/json',
          'idempotency-key': 'replica-1:1',
        },
      } as RequestInit);

      expect(response.status).toBe(413);
      expect(await response.json()).toMatchObject({ error: 'payload_too_large' });
    });

    it('keeps serving after refusing an oversized body', async () => {
      const server = await listen({ maxBodyBytes: 1024 });
      await post(server, JSON.stringify(batch(readings(1, 40))));

      const { response } = await post(server, batch(readings(1, 2)));

      expect(response.status).toBe(200);
    });

    it('answers 413 to a gzip bomb without inflating it', async () => {
      const server = await listen({ maxInflatedBytes: 1024 * 1024 });
      const bomb = await gzipBomb(50);
      expect(bomb.length).toBeLessThan(1024 * 1024);
      const before = process.memoryUsage().rss;
      const peakBefore = process.resourceUsage().maxRSS * 1024;

      const { response, json } = await post(server, bomb, {
        idempotencyKey: 'replica-1:1',
        headers: { 'content-encoding': 'gzip' },
      });

      expect(response.status).toBe(413);
      expect(json).toMatchObject({ error: 'payload_too_large' });
      const growth = process.memoryUsage().rss - before;
      const peakGrowth = process.resourceUsage().maxRSS * 1024 - peakBefore;
      expect(growth).toBeLessThan(30 * 1024 * 1024);
      expect(peakGrowth).toBeLessThan(30 * 1024 * 1024);
    });
  });

  describe('GET /telemetry', () => {
    async function seeded(): Promise<CloudServer> {
      const server = await listen();
      const points = readings(1, 10).map((p) => ({ ...p, sensorId: (p.seq as number) % 2 === 0 ? 'even' : 'odd' }));
      await post(server, batch(points));
      await post(server, batch(readings(1, 3, 'other'), { deviceId: 'device-2', replicaId: 'replica-2' }));
      return server;
    }

    it('filters by device', async () => {
      const server = await seeded();

      const page = await query(server, { deviceId: 'device-2' });

      expect(page.points.map((p) => [p.deviceId, p.sensorId, p.seq])).toEqual([
        ['device-2', 'other', 1],
        ['device-2', 'other', 2],
        ['device-2', 'other', 3],
      ]);
    });

    it('filters by sensorId', async () => {
      const server = await seeded();

      const page = await query(server, { deviceId: 'device-1', sensorId: 'even' });

      expect(page.points.map((p) => p.seq)).toEqual([2, 4, 6, 8, 10]);
    });

    it('filters from (inclusive) to (exclusive) given as ISO dates', async () => {
      const server = await seeded();

      const page = await query(server, {
        deviceId: 'device-1',
        from: new Date(T0 + 3000).toISOString(),
        to: new Date(T0 + 7000).toISOString(),
      });

      expect(page.points.map((p) => p.seq)).toEqual([3, 4, 5, 6]);
    });

    it('filters from (inclusive) to (exclusive) given as epoch milliseconds', async () => {
      const server = await seeded();

      const page = await query(server, { deviceId: 'device-1', from: String(T0 + 8000), to: String(T0 + 10_000) });

      expect(page.points.map((p) => p.seq)).toEqual([8, 9]);
    });

    it('pages through every reading with limit and nextCursor, without repeats or gaps', async () => {
      const server = await listen();
      for (let batchNo = 1; batchNo <= 3; batchNo++) {
        await post(server, batch(readings((batchNo - 1) * 9 + 1, 9), { batchNo }));
      }

      const seqs: number[] = [];
      const sizes: number[] = [];
      let cursor: string | null = null;
      do {
        const params: Record<string, string> = { deviceId: 'device-1', limit: '5' };
        if (cursor) params.cursor = cursor;
        const page = await query(server, params);
        seqs.push(...page.points.map((p) => p.seq));
        sizes.push(page.points.length);
        cursor = page.nextCursor;
      } while (cursor !== null && sizes.length < 20);

      expect(sizes).toEqual([5, 5, 5, 5, 5, 2]);
      expect(seqs).toEqual(Array.from({ length: 27 }, (_, i) => i + 1));
    });

    it('answers the last full page with no nextCursor', async () => {
      const server = await listen();
      await post(server, batch(readings(1, 4)));

      const page = await query(server, { limit: '4' });

      expect(page.points).toHaveLength(4);
      expect(page.nextCursor).toBeNull();
    });

    const badParams: [string, string][] = [
      ['limit=0', 'limit=0'],
      ['limit=10001', 'limit=10001'],
      ['a limit that is not a number', 'limit=many'],
      ['a from that is not a date', 'from=garbage'],
      ['a to that is not a date', 'to=2024-13-45'],
      ['a cursor that is not ours', 'cursor=abc'],
    ];
    for (const [label, search] of badParams) {
      it(`answers 400 to ${label}`, async () => {
        const server = await listen();

        const { response, json } = await get(server, `/telemetry?${search}`);

        expect(response.status).toBe(400);
        expect(json).toMatchObject({ error: 'bad_request' });
      });
    }
  });

  describe('GET /telemetry/stats', () => {
    it('counts readings, batches and replays per device, and in all', async () => {
      const server = await listen();
      const first = batch(readings(1, 4), { deviceId: 'device-a', replicaId: 'ra' });
      await post(server, first);
      await post(server, first);
      await post(server, first);
      await post(server, batch(readings(5, 2), { deviceId: 'device-a', replicaId: 'ra', batchNo: 2 }));
      await post(server, batch(readings(1, 3), { deviceId: 'device-b', replicaId: 'rb' }));

      expect(await stats(server, 'device-a')).toEqual({ points: 6, batches: 2, duplicateBatches: 2 });
      expect(await stats(server, 'device-b')).toEqual({ points: 3, batches: 1, duplicateBatches: 0 });
      expect(await stats(server, 'device-c')).toEqual({ points: 0, batches: 0, duplicateBatches: 0 });
      expect(await stats(server)).toEqual({ points: 9, batches: 3, duplicateBatches: 2 });
    });
  });

  describe('routing', () => {
    it('answers 404 to an unknown route', async () => {
      const server = await listen();

      const { response, json } = await get(server, '/telemetry/everything');

      expect(response.status).toBe(404);
      expect(json).toMatchObject({ error: 'not_found' });
    });

    it('answers 404 to a known path with another method', async () => {
      const server = await listen();

      const response = await fetch(`${server.url}/telemetry`, {
        method: 'DELETE',
        headers: { authorization: `Bearer ${KEY}` },
      });

      expect(response.status).toBe(404);
    });
  });

  describe('.close()', () => {
    it('is safe to call twice', async () => {
      const server = await listen();

      await server.close();
      await server.close();

      await expect(fetch(`${server.url}/health`)).rejects.toThrow();
    });

    it('keeps reporting the port and URL it listened on', async () => {
      const server = await listen();
      const { port, url } = server;

      await server.close();

      expect(server.port).toBe(port);
      expect(server.url).toBe(url);
    });

    it('keeps its store across close and listen on the same port', async () => {
      const named = store.options('cloud');
      const first = await listen(named);
      const body = batch(readings(1, 3));
      await post(first, body);
      const port = first.port;
      await first.close();

      const second = await listen({ ...named, port });

      expect(second.port).toBe(port);
      expect((await query(second, { deviceId: 'device-1' })).points.map((p) => p.seq)).toEqual([1, 2, 3]);
      const replay = await post(second, body);
      expect(replay.response.headers.get('idempotent-replayed')).toBe('true');
      expect(await stats(second)).toEqual({ points: 3, batches: 1, duplicateBatches: 1 });
    });
  });
}
