import { request as httpRequest, type OutgoingHttpHeaders } from 'node:http';
import { fileURLToPath } from 'node:url';
import BetterSqlite3 from 'better-sqlite3-multiple-ciphers';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { Deadband, type EdgeGatewayOptions, SqliteStorage } from '../../src/index.js';
import type { HttpServerOptions } from '../../src/ops/http-server.js';
import { killChildren, TestChild } from '../chaos/lib/child-process.js';
import { defer } from '../helpers/cleanup.js';
import { createGateway, outboxCount, readDb } from '../helpers/gateway.js';
import { tempDbPath } from '../helpers/temp-dir.js';

const INGEST_GATEWAY = fileURLToPath(new URL('../fixtures/ingest-gateway.ts', import.meta.url));

afterEach(killChildren);

interface Posted {
  status: number;
  json: Record<string, unknown>;
  replayed: string | null;
}

async function post(url: string, body: unknown, key?: string): Promise<Posted> {
  const response = await fetch(`${url}/api/v1/data`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', ...(key === undefined ? {} : { 'idempotency-key': key }) },
    body: typeof body === 'string' ? body : JSON.stringify(body),
  });
  return {
    status: response.status,
    json: (await response.json()) as Record<string, unknown>,
    replayed: response.headers.get('idempotent-replayed'),
  };
}

/** POSTs with node:http, which sends header values fetch() would refuse or merge (raw pairs, latin1, tabs). */
function postRaw(url: string, body: string, headers: OutgoingHttpHeaders | string[]): Promise<Posted> {
  return new Promise((resolve, reject) => {
    const req = httpRequest(`${url}/api/v1/data`, { method: 'POST', headers }, (res) => {
      let text = '';
      res.setEncoding('utf8').on('data', (chunk: string) => {
        text += chunk;
      });
      res.on('end', () => {
        const replayed = res.headers['idempotent-replayed'];
        resolve({
          status: res.statusCode ?? 0,
          json: (text === '' ? {} : JSON.parse(text)) as Record<string, unknown>,
          replayed: typeof replayed === 'string' ? replayed : null,
        });
      });
    });
    req.on('error', reject);
    req.end(body);
  });
}

async function serve(http: HttpServerOptions = {}, options: Partial<EdgeGatewayOptions> = {}) {
  const path = tempDbPath();
  const gateway = createGateway({ localDb: path, ...options });
  await gateway.start();
  const server = await gateway.serveHttp({ port: 0, ...http });
  defer(() => server.close());
  return { gateway, server, path, post: (body: unknown, key?: string) => post(server.url, body, key) };
}

const ledgerCount = (path: string) =>
  readDb(path, (db) => db.prepare('SELECT count(*) FROM ingest_ledger').pluck().get() as number);

const three = [
  { sensorId: 'temp-01', value: 1, timestamp: '2026-01-01T00:00:00Z' },
  { sensorId: 'temp-01', value: 2, timestamp: '2026-01-01T00:00:01Z' },
  { sensorId: 'temp-01', value: 3, timestamp: '2026-01-01T00:00:02Z' },
];

describe('POST /api/v1/data with an Idempotency-Key', () => {
  it('stores the readings once and answers a retry with the first answer, flagged Idempotent-Replayed', async () => {
    const { post, path } = await serve();
    const first = await post(three, 'batch-0001');
    expect(first).toEqual({ status: 200, json: { accepted: 3, stored: 3 }, replayed: null });
    const retry = await post(three, 'batch-0001');
    expect(retry).toEqual({ status: 200, json: first.json, replayed: 'true' });
    expect(outboxCount(path)).toBe(3);
  });

  it('replays a single reading as it replays an array', async () => {
    const { post, path } = await serve();
    const reading = { sensorId: 'temp-01', value: 21.5 };
    expect(await post(reading, 'one')).toEqual({ status: 200, json: { accepted: 1, stored: 1 }, replayed: null });
    expect(await post(reading, 'one')).toEqual({ status: 200, json: { accepted: 1, stored: 1 }, replayed: 'true' });
    expect(outboxCount(path)).toBe(1);
  });

  it('keeps keys apart: another key stores its readings, the same body included', async () => {
    const { post, path } = await serve();
    expect((await post(three, 'a')).replayed).toBeNull();
    expect((await post(three, 'b')).replayed).toBeNull();
    expect(outboxCount(path)).toBe(6);
  });

  it('refuses the same key with another body with 422, storing nothing more', async () => {
    const { post, path } = await serve();
    await post(three, 'batch-0002');
    const reused = await post(three.slice(0, 2), 'batch-0002');
    expect(reused).toMatchObject({ status: 422, json: { error: 'idempotency_key_reused' }, replayed: null });
    expect(outboxCount(path)).toBe(3);
    // The first answer is still the key's.
    expect(await post(three, 'batch-0002')).toMatchObject({ status: 200, replayed: 'true' });
  });

  it('answers 409 with Retry-After to a request whose key is still in flight, then replays once it is answered', async () => {
    let entered: () => void = () => undefined;
    const inProcessor = new Promise<void>((resolve) => {
      entered = resolve;
    });
    let open: () => void = () => undefined;
    const gate = new Promise<void>((resolve) => {
      open = resolve;
    });
    const held = {
      name: 'gate',
      async process<T>(point: T) {
        entered();
        await gate;
        return point;
      },
    };
    const { post, server, path } = await serve({}, { processor: held });
    const first = post(three, 'slow');
    await inProcessor; // the first request holds its key, its readings not committed yet
    const second = await fetch(`${server.url}/api/v1/data`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', 'idempotency-key': 'slow' },
      body: JSON.stringify(three),
    });
    expect(second.status).toBe(409);
    expect(await second.json()).toMatchObject({ error: 'idempotency_key_in_use' });
    expect(second.headers.get('retry-after')).toBe('1');
    open();
    expect(await first).toEqual({ status: 200, json: { accepted: 3, stored: 3 }, replayed: null });
    expect(await post(three, 'slow')).toEqual({ status: 200, json: { accepted: 3, stored: 3 }, replayed: 'true' });
    expect(outboxCount(path)).toBe(3);
  });

  it('lets one of many concurrent requests with the same key store; the others get 409 or the replay', async () => {
    const { post, path } = await serve();
    const answers = await Promise.all(Array.from({ length: 12 }, () => post(three, 'racing')));
    const stored = answers.filter((a) => a.status === 200 && a.replayed === null);
    expect(stored).toHaveLength(1);
    for (const answer of answers) {
      if (answer === stored[0]) continue;
      if (answer.status === 200) expect(answer).toEqual({ status: 200, json: stored[0]?.json, replayed: 'true' });
      else expect(answer).toMatchObject({ status: 409, json: { error: 'idempotency_key_in_use' } });
    }
    expect(outboxCount(path)).toBe(3);
  });

  it('records no key for a request refused as invalid: the corrected body may use the key', async () => {
    const { post, path } = await serve();
    const invalid = await post([{ sensorId: 'temp-01', value: 'high' }], 'fix-me');
    expect(invalid).toMatchObject({ status: 400, json: { error: 'invalid_reading' }, replayed: null });
    expect(await post('{"sensorId": ', 'fix-me')).toMatchObject({ status: 400, json: { error: 'malformed_json' } });
    expect(ledgerCount(path)).toBe(0);
    expect(await post(three, 'fix-me')).toEqual({ status: 200, json: { accepted: 3, stored: 3 }, replayed: null });
    expect(outboxCount(path)).toBe(3);
  });

  it('records no key for readings the gateway could not take (503): the key then stores other readings', async () => {
    const { post, path } = await serve({}, { maxOfflineQueueSize: 3 });
    await post(three.slice(0, 2), 'fill');
    expect(await post(three, 'too-many')).toMatchObject({ status: 503, json: { error: 'queue_full' } });
    expect(ledgerCount(path)).toBe(1);
    expect(await post(three.slice(2), 'too-many')).toEqual({
      status: 200,
      json: { accepted: 1, stored: 1 },
      replayed: null,
    });
    expect(outboxCount(path)).toBe(3);
  });

  it('replays the answer of a request the processors kept part of', async () => {
    const { post, path } = await serve({}, { processors: [new Deadband({ absolute: 10, heartbeat: 0 })] });
    const body = [
      { sensorId: 'temp-01', value: 1 },
      { sensorId: 'temp-01', value: 2 },
      { sensorId: 'temp-01', value: 50 },
    ];
    const first = await post(body, 'filtered');
    expect(first).toEqual({ status: 200, json: { accepted: 3, stored: 2 }, replayed: null });
    expect(await post(body, 'filtered')).toEqual({ status: 200, json: first.json, replayed: 'true' });
    expect(outboxCount(path)).toBe(2);
  });

  it('forgets a key once idempotencyWindow has passed, by the gateway clock: the key then stores again', async () => {
    let now = Date.UTC(2026, 0, 1);
    const { post, path } = await serve({ idempotencyWindow: 60 }, { clock: () => now });
    await post(three, 'windowed');
    now += 59_000;
    expect((await post(three, 'windowed')).replayed).toBe('true');
    now += 1_000;
    expect(await post(three, 'windowed')).toEqual({ status: 200, json: { accepted: 3, stored: 3 }, replayed: null });
    expect(outboxCount(path)).toBe(6);
    expect((await post(three, 'windowed')).replayed).toBe('true');
    expect(ledgerCount(path)).toBe(1);
  });

  it('replays a key after the wall clock steps two days forward while the gateway runs', async () => {
    const { post, path } = await serve({ idempotencyWindow: 3600 });
    expect(await post(three, 'stepped')).toMatchObject({ status: 200, replayed: null });
    // NTP corrects a device that booted with an old time: the window is measured by the steady clock.
    const wall = Date.now;
    const stepped = vi.spyOn(Date, 'now').mockImplementation(() => wall() + 2 * 86_400_000);
    try {
      expect(await post(three, 'stepped')).toEqual({ status: 200, json: { accepted: 3, stored: 3 }, replayed: 'true' });
    } finally {
      stepped.mockRestore();
    }
    expect(outboxCount(path)).toBe(3);
  });

  it('forgets expired keys at the next cleanup, with no keyed request after them', async () => {
    let now = Date.UTC(2026, 0, 1);
    const { gateway, post, path } = await serve({ idempotencyWindow: 10 }, { clock: () => now });
    for (let i = 0; i < 5; i++) await post({ sensorId: 'temp-01', value: i }, `idle-${i}`);
    now += 9_000;
    expect((await gateway.runCleanup()).ingestKeys).toBe(0);
    expect(ledgerCount(path)).toBe(5);
    now += 1_000;
    expect((await gateway.runCleanup()).ingestKeys).toBe(5);
    expect(ledgerCount(path)).toBe(0);
  });

  it('keeps the keys to a tenth of maxDatabaseSize: 102 of the longest keys at 1 MiB', async () => {
    const { post, path } = await serve({}, { maxDatabaseSize: 1024 * 1024 });
    for (let i = 0; i < 150; i++) {
      expect((await post({ sensorId: 'temp-01', value: i }, `${i}-`.padEnd(255, 'k'))).status).toBe(200);
    }
    expect(ledgerCount(path)).toBe(102);
    expect((await post({ sensorId: 'temp-01', value: 149 }, '149-'.padEnd(255, 'k'))).replayed).toBe('true');
  });

  it('answers a failing key lookup as a storage failure, 500 storage_failed, storing nothing', async () => {
    const { post, path } = await serve();
    const db = new BetterSqlite3(path);
    db.exec('DROP TABLE ingest_ledger');
    db.close();
    expect(await post(three, 'lost-table')).toMatchObject({
      status: 500,
      json: { error: 'storage_failed', message: expect.stringMatching(/idempotency key lookup/) },
    });
    expect(outboxCount(path)).toBe(0);
  });

  it('keeps at most maxIdempotencyKeys keys, forgetting the oldest first', async () => {
    const { post, path } = await serve({ maxIdempotencyKeys: 3 });
    for (let i = 1; i <= 5; i++) await post({ sensorId: 'temp-01', value: i }, `key-${i}`);
    expect(ledgerCount(path)).toBe(3);
    expect((await post({ sensorId: 'temp-01', value: 5 }, 'key-5')).replayed).toBe('true');
    expect((await post({ sensorId: 'temp-01', value: 1 }, 'key-1')).replayed).toBeNull();
    expect(outboxCount(path)).toBe(6);
  });

  it('prunes expired keys as new keys come, a bounded number per request', async () => {
    let now = Date.UTC(2026, 0, 1);
    const { post, path } = await serve({ idempotencyWindow: 10 }, { clock: () => now });
    for (let i = 0; i < 40; i++) await post({ sensorId: 'temp-01', value: i }, `old-${i}`);
    now += 11_000;
    await post({ sensorId: 'temp-01', value: -1 }, 'new-1');
    // One key written, 17 of the oldest looked at and removed: the rest wait for later requests.
    expect(ledgerCount(path)).toBe(40 + 1 - 17);
    await post({ sensorId: 'temp-01', value: -2 }, 'new-2');
    await post({ sensorId: 'temp-01', value: -3 }, 'new-3');
    expect(ledgerCount(path)).toBe(3);
  });

  it('refuses a malformed Idempotency-Key with 400 naming the header, storing nothing', async () => {
    const { server, path } = await serve();
    const body = JSON.stringify(three);
    const type = { 'content-type': 'application/json' };
    const refusals = [
      await post(server.url, three, 'k'.repeat(256)),
      await postRaw(server.url, body, { ...type, 'idempotency-key': 'tab\there' }),
      await postRaw(server.url, body, { ...type, 'idempotency-key': 'caf\u00e9' }),
      await postRaw(server.url, body, { ...type, 'idempotency-key': '' }),
      await postRaw(server.url, body, [
        ...['host', new URL(server.url).host, 'content-type', 'application/json'],
        ...['content-length', String(Buffer.byteLength(body))],
        ...['Idempotency-Key', 'a', 'Idempotency-Key', 'b'],
      ]),
    ];
    for (const refusal of refusals) {
      expect(refusal).toMatchObject({ status: 400, json: { error: 'invalid_idempotency_key' } });
      expect(refusal.json.message).toMatch(/^the Idempotency-Key header /);
    }
    expect(outboxCount(path)).toBe(0);
    expect(ledgerCount(path)).toBe(0);
    expect((await post(server.url, three, 'k'.repeat(255))).status).toBe(200);
  });

  it('answers 501 when the storage keeps no idempotency keys, storing nothing; requests without a key go on', async () => {
    const storage = new SqliteStorage({ path: tempDbPath() });
    Object.assign(storage, { lookupIngestKey: undefined }); // a custom storage without the ledger
    const gateway = createGateway({ storage });
    await gateway.start();
    const server = await gateway.serveHttp({ port: 0 });
    defer(() => server.close());
    expect(await post(server.url, three, 'k')).toMatchObject({
      status: 501,
      json: { error: 'idempotency_unsupported' },
    });
    expect(gateway.getStatus().pendingSyncCount).toBe(0);
    expect((await post(server.url, three)).status).toBe(200);
  });

  it('answers a replay even when the rate limit would refuse the readings', async () => {
    const { post } = await serve({ rateLimit: 1, burst: 3 });
    await post(three, 'limited');
    expect(await post(three, 'limited')).toMatchObject({ status: 200, replayed: 'true' });
    expect(await post(three, 'fresh')).toMatchObject({ status: 429 });
  });
});

describe('POST /api/v1/data with an Idempotency-Key, across a crash', () => {
  it('knows every key it committed after a SIGKILL, answered or not, and stores each reading once when every key is retried', async () => {
    const path = tempDbPath();
    const spawn = (args: string[]) => {
      const lines: string[] = [];
      const child = new TestChild(INGEST_GATEWAY, [path, ...args], (line) => lines.push(line));
      return { child, lines };
    };
    const urlOf = async ({ child, lines }: ReturnType<typeof spawn>) => {
      await child.waitUntil('the gateway serves', () => lines.some((line) => line.startsWith('listening ')));
      return (lines.find((line) => line.startsWith('listening ')) as string).slice('listening '.length);
    };
    const bodyOf = (k: number) => [
      { sensorId: 'crash', value: 2 * k, timestamp: new Date(Date.UTC(2026, 0, 1) + 2 * k).toISOString() },
      { sensorId: 'crash', value: 2 * k + 1, timestamp: new Date(Date.UTC(2026, 0, 1) + 2 * k + 1).toISOString() },
    ];

    // Killed inside its 30th commit of readings, once SQLite returned and before any request of that commit is
    // answered, while 16 clients keep sending keyed requests.
    const first = spawn(['30']);
    const url = await urlOf(first);
    const acknowledged = new Set<number>();
    let sent = 0;
    const client = async () => {
      while (first.child.alive) {
        const k = sent++;
        try {
          const answer = await post(url, bodyOf(k), `crash-${k}`);
          expect(answer).toEqual({ status: 200, json: { accepted: 2, stored: 2 }, replayed: null });
          acknowledged.add(k);
        } catch (error) {
          // The connection died with the gateway (the parent may hear of the exit a moment later): that request may
          // or may not have been committed. Anything else is a failure.
          if (!(await first.child.exit(5_000).catch(() => undefined))) throw error;
        }
      }
    };
    await Promise.all(Array.from({ length: 16 }, client));
    expect(await first.child.exit()).toEqual({ code: null, signal: 'SIGKILL' });
    expect(acknowledged.size).toBeGreaterThan(0);

    // Every key sent, retried with its body: an acknowledged one replays; one committed in the commit the kill cut
    // short replays too, though it was never answered; the others store now.
    const second = spawn([]);
    const retryUrl = await urlOf(second);
    const replayed = new Set<number>();
    for (let k = 0; k < sent; k++) {
      const retry = await post(retryUrl, bodyOf(k), `crash-${k}`);
      expect(retry).toMatchObject({ status: 200, json: { accepted: 2, stored: 2 } });
      if (retry.replayed === 'true') replayed.add(k);
    }
    for (const k of acknowledged) expect(replayed.has(k), `acknowledged key crash-${k} replays`).toBe(true);
    expect(replayed.size).toBeGreaterThan(acknowledged.size);
    second.child.send('stop');
    await second.child.waitUntil('the gateway stops', () => second.lines.includes('stopped'));
    expect(second.child.stderr).not.toMatch(/^error /m);

    const values = readDb(path, (db) => db.prepare('SELECT value FROM outbox ORDER BY value').pluck().all());
    expect(values).toEqual(Array.from({ length: 2 * sent }, (_, i) => i));
    expect(ledgerCount(path)).toBe(sent);
  });
});
