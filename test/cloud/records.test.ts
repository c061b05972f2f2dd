import { gzipSync } from 'node:zlib';
import { createClient } from '@redis/client';
import BetterSqlite3 from 'better-sqlite3-multiple-ciphers';
import { describe, expect, it } from 'vitest';
import {
  type CloudRecord,
  CloudServer,
  type CloudServerOptions,
  type MutationResult,
  RECORD_LIMITS,
  type RecordChange,
  type RecordStats,
} from '../../src/cloud/index.js';
import { isConfigError } from '../../src/errors.js';
import { formatHlc, parseHlc } from '../../src/model/records-wire.js';
import { defer } from '../helpers/cleanup.js';
import { CLOUD_STORE_KINDS, type CloudStoreKind, redisAvailable, useCloudStore } from '../helpers/cloud-stores.js';

const KEY = 'k';
const DEVICE = 'device-1';
const REPLICA = 'replica-1';
/** The server's injected wall clock starts here: 2026-01-01T00:00:00.000Z. */
const T0 = Date.UTC(2026, 0, 1);
const HOUR = 3_600_000;

/** A server's wall clock that a test moves by hand. */
interface TestClock {
  ms: number;
}

const stamp = (ms = T0 - 1000, counter = 0) => formatHlc({ ms, counter });

let mids = 0;
/** A put of `value` on `setpoints/{key}` made on `baseVersion`, with a fresh mid unless one is given. */
function put(key: string, value: unknown, baseVersion: number, init: Record<string, unknown> = {}) {
  return {
    mid: `${REPLICA}:${++mids}`,
    collection: 'setpoints',
    key,
    op: 'put',
    value,
    baseVersion,
    hlc: stamp(),
    ...init,
  };
}

function del(key: string, baseVersion: number, init: Record<string, unknown> = {}) {
  return {
    mid: `${REPLICA}:${++mids}`,
    collection: 'setpoints',
    key,
    op: 'delete',
    baseVersion,
    hlc: stamp(),
    ...init,
  };
}

interface SendOptions {
  apiKey?: string | null;
  gzip?: boolean;
  headers?: Record<string, string>;
}

async function request(server: CloudServer, method: string, path: string, body?: unknown, options: SendOptions = {}) {
  const headers: Record<string, string> = {};
  const apiKey = options.apiKey === undefined ? KEY : options.apiKey;
  if (apiKey !== null) headers.authorization = `Bearer ${apiKey}`;
  let payload: string | Uint8Array | undefined;
  if (body !== undefined) {
    headers['content-type'] = 'application/json';
    payload = typeof body === 'string' ? body : JSON.stringify(body);
    if (options.gzip) {
      payload = gzipSync(payload);
      headers['content-encoding'] = 'gzip';
    }
  }
  const response = await fetch(`${server.url}${path}`, {
    method,
    headers: { ...headers, ...options.headers },
    ...(payload === undefined ? {} : { body: payload }),
  });
  const text = await response.text();
  return { response, text, json: JSON.parse(text) as Record<string, unknown> };
}

/** POSTs a push; `body` replaces the whole envelope when given as a string or object without `mutations`. */
async function push(server: CloudServer, mutations: unknown[], options: SendOptions & { deviceId?: string } = {}) {
  const body = { deviceId: options.deviceId ?? DEVICE, replicaId: REPLICA, mutations };
  const sent = await request(server, 'POST', '/records/push', body, options);
  return { ...sent, results: sent.json.results as MutationResult[] };
}

/** Pushes and expects 200. */
async function pushOk(server: CloudServer, mutations: unknown[], options: SendOptions & { deviceId?: string } = {}) {
  const sent = await push(server, mutations, options);
  expect(sent.response.status, sent.text).toBe(200);
  return sent.results;
}

/** The query parameters that name the puller (this file's device and replica unless told). */
const as = (deviceId = DEVICE, replicaId = REPLICA) =>
  `deviceId=${encodeURIComponent(deviceId)}&replicaId=${encodeURIComponent(replicaId)}`;

async function pull(server: CloudServer, query: string) {
  const { response, json } = await request(server, 'GET', `/records/pull${query}`);
  expect(response.status).toBe(200);
  return json as { changes: RecordChange[]; cursor: number; hasMore: boolean; serverTime: string };
}

const recordPath = (key: string, collection = 'setpoints') =>
  `/records/${encodeURIComponent(collection)}/${encodeURIComponent(key)}`;

async function getRecord(server: CloudServer, key: string) {
  const { response, json } = await request(server, 'GET', recordPath(key));
  return { status: response.status, record: json as CloudRecord & { serverTime: string } };
}

async function stats(server: CloudServer): Promise<RecordStats> {
  const { response, json } = await request(server, 'GET', '/records/stats');
  expect(response.status).toBe(200);
  return json as unknown as RecordStats;
}

for (const kind of CLOUD_STORE_KINDS) {
  describe.skipIf(kind === 'redis' && !redisAvailable())(`CloudServer records on the ${kind} store`, () => suite(kind));
}

/** The suite, on one store: run on each, to prove they keep the same semantics. */
function suite(kind: CloudStoreKind): void {
  const store = useCloudStore(kind);

  /** A server on a fresh store of this suite's kind (unless `options` choose one), on `clock`. */
  async function listen(options: Partial<CloudServerOptions> & { clock?: TestClock } = {}) {
    const { clock = { ms: T0 }, ...rest } = options;
    const chosen = ['dbPath', 'redisUrl', 'store'].some((name) => name in rest);
    const server = await CloudServer.listen({
      port: 0,
      host: '127.0.0.1',
      ...(chosen ? {} : store.options()),
      apiKeys: [KEY],
      now: () => clock.ms,
      ...rest,
    });
    defer(() => server.close());
    return server;
  }

  describe('POST /records/push', () => {
    it('applies a put on a record that does not exist at version 1, with its stamp and its replica as origin', async () => {
      const server = await listen();
      const m = put('boiler-1', { target: 72 }, 0);

      const { results, json } = await push(server, [m]);

      expect(results).toEqual([{ mid: m.mid, status: 'applied', version: 1, hlc: m.hlc }]);
      expect(json.serverTime).toBe(new Date(T0).toISOString());
      expect((await getRecord(server, 'boiler-1')).record).toMatchObject({
        collection: 'setpoints',
        key: 'boiler-1',
        value: { target: 72 },
        deleted: false,
        version: 1,
        hlc: m.hlc,
        origin: REPLICA,
      });
    });

    it('applies each put made on the current version at the next version, in request order', async () => {
      const server = await listen();

      const results = await pushOk(server, [put('a', 1, 0), put('a', 2, 1), put('a', 3, 2)]);

      expect(results.map((r) => (r.status === 'applied' ? r.version : r.status))).toEqual([1, 2, 3]);
      expect((await getRecord(server, 'a')).record).toMatchObject({ value: 3, version: 3 });
    });

    it('answers conflict with the current record when baseVersion is not the current version, changing nothing', async () => {
      const server = await listen();
      const first = put('a', 'first', 0, { hlc: stamp(T0 - 5000) });
      await pushOk(server, [first, put('a', 'second', 1)]);
      const stale = put('a', 'stale', 1);

      const [result] = await pushOk(server, [stale]);

      const current = (await getRecord(server, 'a')).record;
      expect(current).toMatchObject({ value: 'second', version: 2 });
      expect(result).toEqual({
        mid: stale.mid,
        status: 'conflict',
        current: {
          collection: 'setpoints',
          key: 'a',
          value: 'second',
          deleted: false,
          version: 2,
          hlc: current.hlc,
          origin: REPLICA,
        },
      });
      expect((await stats(server)).changeSeq).toBe(2);
    });

    it('answers conflict with a version-0 tombstone when pushed on a version of a record the cloud never had', async () => {
      const server = await listen();
      const m = put('ghost', 1, 4);

      const [result] = await pushOk(server, [m]);

      expect(result).toEqual({
        mid: m.mid,
        status: 'conflict',
        current: {
          collection: 'setpoints',
          key: 'ghost',
          value: null,
          deleted: true,
          version: 0,
          hlc: '000000000000000-000000',
          origin: '',
        },
      });
      expect((await getRecord(server, 'ghost')).status).toBe(404);
    });

    it('answers a replayed push with byte-identical results and applies nothing twice', async () => {
      const server = await listen();
      const mutations = [
        put('a', { n: 1.5, s: 'é' }, 0),
        put('b', [1, 2], 0),
        put('a', 'loses', 0),
        put('c', 1, 0, { hlc: 'now' }),
      ];
      const first = await push(server, mutations);
      const before = await stats(server);

      const replay = await push(server, mutations);

      expect(replay.results.map((r) => r.status)).toEqual(['applied', 'applied', 'conflict', 'rejected']);
      expect(replay.results.map((r) => JSON.stringify(r))).toEqual(first.results.map((r) => JSON.stringify(r)));
      expect(await stats(server)).toEqual(before);
      expect((await pull(server, '')).changes.map((c) => [c.key, c.version])).toEqual([
        ['a', 1],
        ['b', 1],
      ]);
    });

    it('answers a replay with the outcome stored then, even after the record changed since', async () => {
      const server = await listen();
      const m = put('a', 'mine', 0);
      const [applied] = await pushOk(server, [m]);
      await request(server, 'PUT', recordPath('a'), { value: 'operator' });

      const [replayed] = await pushOk(server, [m]);

      expect(replayed).toEqual(applied);
      expect((await getRecord(server, 'a')).record).toMatchObject({ value: 'operator', version: 2, origin: 'cloud' });
    });

    it('applies a mutation once when the same push arrives several times at once', async () => {
      const server = await listen();
      const mutations = [put('a', 1, 0), put('b', 2, 0)];

      const answers = await Promise.all(Array.from({ length: 5 }, () => pushOk(server, mutations)));

      for (const results of answers) expect(results).toEqual(answers[0]);
      expect(answers[0]?.map((r) => r.status)).toEqual(['applied', 'applied']);
      expect((await stats(server)).changeSeq).toBe(2);
    });

    it('makes a tombstone of a delete: value null, the row kept at the next version', async () => {
      const server = await listen();
      await pushOk(server, [put('a', 1, 0)]);
      const d = del('a', 1);

      const [result] = await pushOk(server, [d]);

      expect(result).toEqual({ mid: d.mid, status: 'applied', version: 2, hlc: d.hlc });
      const { status, record } = await getRecord(server, 'a');
      expect(status).toBe(200);
      expect(record).toMatchObject({ value: null, deleted: true, version: 2, origin: REPLICA });
      expect(await stats(server)).toMatchObject({ records: 0, tombstones: 1 });
    });

    it('brings a tombstone back with a put made on its version', async () => {
      const server = await listen();
      await pushOk(server, [put('a', 1, 0), del('a', 1)]);

      const [result] = await pushOk(server, [put('a', 'again', 2)]);

      expect(result).toMatchObject({ status: 'applied', version: 3 });
      expect((await getRecord(server, 'a')).record).toMatchObject({ value: 'again', deleted: false, version: 3 });
    });

    it('stores a put of null as a value, not as a tombstone', async () => {
      const server = await listen();

      await pushOk(server, [put('a', null, 0)]);

      expect((await getRecord(server, 'a')).record).toMatchObject({ value: null, deleted: false, version: 1 });
    });

    it('accepts a delete whose value is null', async () => {
      const server = await listen();
      await pushOk(server, [put('a', 1, 0)]);

      const [result] = await pushOk(server, [del('a', 1, { value: null })]);

      expect(result).toMatchObject({ status: 'applied', version: 2 });
    });

    const invalid: [string, Record<string, unknown>, RegExp][] = [
      ['a collection name with a space', { collection: 'set points' }, /^collection: letters, digits/],
      ['a collection name that is too long', { collection: 'c'.repeat(129) }, /^collection: /],
      ['an empty key', { key: '' }, /^key: /],
      ['a key that is too long', { key: 'k'.repeat(513) }, /^key: /],
      ['an unknown op', { op: 'upsert' }, /^op: /],
      ['a negative baseVersion', { baseVersion: -1 }, /^baseVersion: /],
      ['a fractional baseVersion', { baseVersion: 1.5 }, /^baseVersion: /],
      ['an hlc that is not a stamp', { hlc: '2026-01-01T00:00:00Z' }, /^hlc: a hybrid logical clock stamp/],
      ['a field the protocol does not have', { extra: 1 }, /extra/],
      ['a put without a value', { value: undefined }, /^value: a put needs a value$/],
      [
        'a value over the size limit',
        { value: 'x'.repeat(RECORD_LIMITS.valueBytes) },
        new RegExp(`^value: ${RECORD_LIMITS.valueBytes + 2} bytes as JSON; at most ${RECORD_LIMITS.valueBytes}`),
      ],
      ['a delete with a value', { op: 'delete', value: 3 }, /^value: a delete carries no value$/],
    ];
    for (const [label, change, reason] of invalid) {
      it(`rejects a mutation with ${label}, naming the problem, and applies its valid siblings`, async () => {
        const server = await listen();
        const bad = put('bad', 1, 0, change);

        const results = await pushOk(server, [put('before', 1, 0), bad, put('after', 2, 0)]);

        expect(results.map((r) => r.status)).toEqual(['applied', 'rejected', 'applied']);
        expect(results[1]).toEqual({ mid: bad.mid, status: 'rejected', reason: expect.stringMatching(reason) });
        expect(await stats(server)).toMatchObject({ records: 2, changeSeq: 2 });
      });
    }

    it('answers a rejected mid with the same rejection, even when the mutation comes back corrected', async () => {
      const server = await listen();
      const bad = put('a', 1, 0, { collection: 'bad name' });
      const [rejected] = await pushOk(server, [bad]);

      const [again] = await pushOk(server, [{ ...bad, collection: 'setpoints' }]);

      expect(again).toEqual(rejected);
      expect((await stats(server)).changeSeq).toBe(0);
    });

    it("applies a gzip'd push", async () => {
      const server = await listen();

      const results = await pushOk(server, [put('a', { big: 'y'.repeat(10_000) }, 0)], { gzip: true });

      expect(results[0]).toMatchObject({ status: 'applied', version: 1 });
      expect((await getRecord(server, 'a')).record.value).toEqual({ big: 'y'.repeat(10_000) });
    });

    const unreadable: [string, unknown][] = [
      ['a body that is not JSON', '{"deviceId":'],
      ['a JSON array', '[]'],
      ['an envelope without deviceId', { replicaId: REPLICA, mutations: [put('a', 1, 0)] }],
      ['an envelope without replicaId', { deviceId: DEVICE, mutations: [put('a', 1, 0)] }],
      [
        'an envelope with a field the protocol does not have',
        { deviceId: DEVICE, replicaId: REPLICA, mutations: [put('a', 1, 0)], v: 2 },
      ],
      ['mutations that are not an array', { deviceId: DEVICE, replicaId: REPLICA, mutations: put('a', 1, 0) }],
      ['no mutations', { deviceId: DEVICE, replicaId: REPLICA, mutations: [] }],
      [
        'more mutations than a push may carry',
        {
          deviceId: DEVICE,
          replicaId: REPLICA,
          mutations: Array.from({ length: RECORD_LIMITS.mutationsPerPush + 1 }, (_, i) => put(`k${i}`, i, 0)),
        },
      ],
      [
        'a mutation that is not an object',
        { deviceId: DEVICE, replicaId: REPLICA, mutations: [put('a', 1, 0), 'm-2'] },
      ],
      [
        'a mutation without a mid',
        { deviceId: DEVICE, replicaId: REPLICA, mutations: [put('a', 1, 0), put('b', 1, 0, { mid: undefined })] },
      ],
      [
        'a mutation with a mid that is not a string',
        { deviceId: DEVICE, replicaId: REPLICA, mutations: [put('a', 1, 0), put('b', 1, 0, { mid: 7 })] },
      ],
      [
        'a mutation with a mid that is too long',
        { deviceId: DEVICE, replicaId: REPLICA, mutations: [put('a', 1, 0), put('b', 1, 0, { mid: 'm'.repeat(129) })] },
      ],
    ];
    for (const [label, body] of unreadable) {
      it(`answers 400 to ${label}, and applies nothing of the push`, async () => {
        const server = await listen();

        const { response, json } = await request(server, 'POST', '/records/push', body);

        expect(response.status).toBe(400);
        expect(json).toEqual({
          error: expect.stringMatching(/^(malformed_json|bad_push)$/),
          message: expect.any(String),
          serverTime: new Date(T0).toISOString(),
        });
        expect((await stats(server)).changeSeq).toBe(0);
      });
    }

    it('names the mutation without a readable mid by its index', async () => {
      const server = await listen();
      const body = { deviceId: DEVICE, replicaId: REPLICA, mutations: [put('a', 1, 0), put('b', 1, 0, { mid: '' })] };

      const { json } = await request(server, 'POST', '/records/push', body);

      expect(json).toMatchObject({
        error: 'bad_push',
        message: expect.stringMatching(/^mutations\.1: no readable mid/),
      });
    });

    it('answers 415 to a content type other than JSON', async () => {
      const server = await listen();

      const { response, json } = await push(server, [put('a', 1, 0)], { headers: { 'content-type': 'text/plain' } });

      expect(response.status).toBe(415);
      expect(json).toMatchObject({ error: 'unsupported_media_type' });
      expect((await stats(server)).changeSeq).toBe(0);
    });
  });

  describe('clock skew', () => {
    it('restamps a stamp more than maxClockSkewMs ahead with the server clock, and flags the device', async () => {
      const server = await listen();
      const fast = put('a', 1, 0, { hlc: stamp(T0 + HOUR) });

      const [result] = await pushOk(server, [fast]);

      expect(result).toEqual({ mid: fast.mid, status: 'applied', version: 1, hlc: stamp(T0), restamped: true });
      expect((await getRecord(server, 'a')).record.hlc).toBe(stamp(T0));
      expect((await stats(server)).flaggedDevices).toEqual([
        { deviceId: DEVICE, replicaId: REPLICA, skewMs: HOUR, at: new Date(T0).toISOString() },
      ]);
    });

    it('keeps a stamp within maxClockSkewMs, flags nothing, and stamps its next edit after it', async () => {
      const server = await listen();
      const ahead = put('a', 1, 0, { hlc: stamp(T0 + 60_000, 7) });

      const [result] = await pushOk(server, [ahead]);
      const edit = await request(server, 'PUT', recordPath('b'), { value: 2 });

      expect(result).toEqual({ mid: ahead.mid, status: 'applied', version: 1, hlc: ahead.hlc });
      expect((await stats(server)).flaggedDevices).toEqual([]);
      // Following the stamp took counter 8; the edit comes after it.
      expect(edit.json.hlc).toBe(stamp(T0 + 60_000, 9));
    });

    it('takes maxClockSkewMs from the options', async () => {
      const server = await listen({ maxClockSkewMs: 1000 });

      const results = await pushOk(server, [
        put('a', 1, 0, { hlc: stamp(T0 + 1000) }),
        put('b', 1, 0, { hlc: stamp(T0 + 1001) }),
      ]);

      expect(results.map((r) => r.status === 'applied' && r.restamped === true)).toEqual([false, true]);
      expect((await stats(server)).flaggedDevices).toMatchObject([{ skewMs: 1001 }]);
    });

    it('keeps the latest finding of each device', async () => {
      const clock = { ms: T0 };
      const server = await listen({ clock });
      await pushOk(server, [put('a', 1, 0, { hlc: stamp(T0 + HOUR) })]);
      await pushOk(server, [put('b', 1, 0, { hlc: stamp(T0 + 2 * HOUR) })], { deviceId: 'device-2' });
      clock.ms = T0 + 1000;

      await pushOk(server, [put('c', 1, 0, { hlc: stamp(T0 + 2 * 60_000) })]);

      expect((await stats(server)).flaggedDevices).toEqual([
        { deviceId: DEVICE, replicaId: REPLICA, skewMs: 2 * 60_000 - 1000, at: new Date(T0 + 1000).toISOString() },
        { deviceId: 'device-2', replicaId: REPLICA, skewMs: 2 * HOUR, at: new Date(T0).toISOString() },
      ]);
    });

    it('answers a replay of a restamped mutation with the stamp it was stored with', async () => {
      const clock = { ms: T0 };
      const server = await listen({ clock });
      const fast = put('a', 1, 0, { hlc: stamp(T0 + HOUR) });
      const [first] = await pushOk(server, [fast]);
      clock.ms = T0 + 5000;

      const [replayed] = await pushOk(server, [fast]);

      expect(replayed).toEqual(first);
      expect(replayed).toMatchObject({ hlc: stamp(T0), restamped: true });
    });

    it('lets a stamp from a clock an hour fast lose last-write-wins against a later honest one', async () => {
      const clock = { ms: T0 };
      const server = await listen({ clock });
      const [fast] = await pushOk(server, [put('a', 'fast', 0, { hlc: stamp(T0 + HOUR) })]);
      clock.ms = T0 + 10;

      const honest = put('b', 'honest', 0, { hlc: stamp(T0 + 5) });
      const [later] = await pushOk(server, [honest]);

      expect(fast).toMatchObject({ status: 'applied', restamped: true });
      expect(later).toMatchObject({ status: 'applied', hlc: honest.hlc });
      expect(honest.hlc > (fast as { hlc: string }).hlc).toBe(true);
    });

    it('refuses a negative maxClockSkewMs with a ConfigError naming the option', async () => {
      const error = await listen({ maxClockSkewMs: -1 }).catch((e: unknown) => e);

      expect(isConfigError(error)).toBe(true);
      expect((error as Error).message).toMatch(/"maxClockSkewMs".*got -1/);
    });
  });

  describe('GET /records/pull', () => {
    it('returns changes above the cursor oldest first, each record once in its latest state', async () => {
      const server = await listen();
      const a1 = put('a', 1, 0);
      const b1 = put('b', 1, 0);
      const a2 = put('a', 2, 1);
      await pushOk(server, [a1, b1, a2]);

      const page = await pull(server, '?cursor=0');

      expect(page).toEqual({
        changes: [
          {
            collection: 'setpoints',
            key: 'b',
            value: 1,
            deleted: false,
            version: 1,
            hlc: b1.hlc,
            origin: REPLICA,
            seq: 2,
          },
          {
            collection: 'setpoints',
            key: 'a',
            value: 2,
            deleted: false,
            version: 2,
            hlc: a2.hlc,
            origin: REPLICA,
            seq: 3,
          },
        ],
        cursor: 3,
        hasMore: false,
        serverTime: new Date(T0).toISOString(),
      });
      expect((await pull(server, '?cursor=2')).changes.map((c) => c.key)).toEqual(['a']);
    });

    it('starts from the first change without a cursor', async () => {
      const server = await listen();
      await pushOk(server, [put('a', 1, 0)]);

      expect((await pull(server, '')).changes.map((c) => c.seq)).toEqual([1]);
    });

    it('pages through every change with limit, cursor and hasMore, without repeats or gaps', async () => {
      const server = await listen();
      await pushOk(
        server,
        Array.from({ length: 25 }, (_, i) => put(`k${i}`, i, 0)),
      );

      const pages: { seqs: number[]; hasMore: boolean }[] = [];
      let cursor = 0;
      for (let hasMore = true; hasMore; ) {
        const page = await pull(server, `?cursor=${cursor}&limit=10`);
        pages.push({ seqs: page.changes.map((c) => c.seq), hasMore: page.hasMore });
        cursor = page.cursor;
        hasMore = page.hasMore;
        if (pages.length > 5) throw new Error('pull does not end');
      }

      expect(pages.map((p) => [p.seqs.length, p.hasMore])).toEqual([
        [10, true],
        [10, true],
        [5, false],
      ]);
      expect(pages.flatMap((p) => p.seqs)).toEqual(Array.from({ length: 25 }, (_, i) => i + 1));
      expect(cursor).toBe(25);
    });

    it('answers an empty page with the cursor asked for when nothing is newer', async () => {
      const server = await listen();
      await pushOk(server, [put('a', 1, 0)]);

      expect(await pull(server, '?cursor=7')).toMatchObject({ changes: [], cursor: 7, hasMore: false });
    });

    it('answers hasMore false on a last page that is exactly full', async () => {
      const server = await listen();
      await pushOk(server, [put('a', 1, 0), put('b', 1, 0)]);

      expect(await pull(server, '?limit=2')).toMatchObject({ cursor: 2, hasMore: false });
    });

    it('carries deletes as tombstones, from a push and from a cloud-side edit', async () => {
      const server = await listen();
      await pushOk(server, [put('a', 1, 0), put('b', 1, 0)]);
      await pushOk(server, [del('a', 1)]);
      await request(server, 'PUT', recordPath('b'), { deleted: true });

      const { changes } = await pull(server, '?cursor=2');

      expect(changes).toMatchObject([
        { key: 'a', value: null, deleted: true, version: 2, origin: REPLICA, seq: 3 },
        { key: 'b', value: null, deleted: true, version: 2, origin: 'cloud', seq: 4 },
      ]);
    });

    const badParams: [string, string][] = [
      ['a negative cursor', '?cursor=-1'],
      ['a cursor that is not a number', '?cursor=abc'],
      ['a fractional cursor', '?cursor=1.5'],
      ['a limit of 0', '?limit=0'],
      ['a limit over changesPerPull', `?limit=${RECORD_LIMITS.changesPerPull + 1}`],
      ['a limit that is not a number', '?limit=ten'],
    ];
    for (const [label, query] of badParams) {
      it(`answers 400 to ${label}`, async () => {
        const server = await listen();

        const { response, json } = await request(server, 'GET', `/records/pull${query}`);

        expect(response.status).toBe(400);
        expect(json).toMatchObject({
          error: 'bad_request',
          message: expect.any(String),
          serverTime: expect.any(String),
        });
      });
    }
  });

  describe('GET /records/pull with deviceId and replicaId', () => {
    /** A push from another device and replica than this file's. */
    async function pushFrom(server: CloudServer, deviceId: string, replicaId: string, mutations: unknown[]) {
      const { response, json } = await request(server, 'POST', '/records/push', { deviceId, replicaId, mutations });
      expect(response.status).toBe(200);
      return json.results as MutationResult[];
    }

    /** Moves a record to its next version as a server without the marks would: leaving those of the write before. */
    async function writeAsOlderServer(named: Partial<CloudServerOptions>, key: string): Promise<void> {
      if (kind === 'sqlite') {
        const db = new BetterSqlite3(named.dbPath as string);
        try {
          db.prepare(
            `UPDATE cloud_records SET value = '"older"', version = version + 1 WHERE collection = 'setpoints' AND key = ?`,
          ).run(key);
        } finally {
          db.close();
        }
        return;
      }
      const client = createClient({ url: named.redisUrl as string, RESP: 3 });
      await client.connect();
      try {
        await client.sendCommand(['HINCRBY', `{edge-gateway}:rec:setpoints:${key}`, 'version', '1']);
        await client.sendCommand(['HSET', `{edge-gateway}:rec:setpoints:${key}`, 'value', '"older"']);
      } finally {
        client.destroy();
      }
    }

    it('leaves out the changes the requester pushed itself, moving the cursor past them', async () => {
      const server = await listen();
      await pushOk(server, [put('a', 1, 0), put('b', 1, 0), del('b', 1)]);

      expect(await pull(server, `?cursor=0&${as()}`)).toMatchObject({ changes: [], cursor: 3, hasMore: false });
      expect((await pull(server, `?cursor=0&${as('device-2', 'replica-2')}`)).changes).toMatchObject([
        { key: 'a', value: 1, version: 1, origin: REPLICA, seq: 1 },
        { key: 'b', deleted: true, version: 2, origin: REPLICA, seq: 3 },
      ]);
    });

    it('returns every change, its own included, to a pull that names no requester (gateways before it)', async () => {
      const server = await listen();
      await pushOk(server, [put('a', 1, 0), put('b', 1, 0)]);

      expect(await pull(server, '?cursor=0')).toMatchObject({
        changes: [
          { key: 'a', origin: REPLICA },
          { key: 'b', origin: REPLICA },
        ],
        cursor: 2,
        hasMore: false,
      });
    });

    /** Pages through every change from 0 as this file's requester: `[keys returned, cursor, hasMore]` of each. */
    async function pages(server: CloudServer, limit: number): Promise<[string[], number, boolean][]> {
      const seen: [string[], number, boolean][] = [];
      let cursor = 0;
      for (let hasMore = true; hasMore; ) {
        const page = await pull(server, `?cursor=${cursor}&limit=${limit}&${as()}`);
        seen.push([page.changes.map((c) => c.key), page.cursor, page.hasMore]);
        cursor = page.cursor;
        hasMore = page.hasMore;
        if (seen.length > 10) throw new Error('pull does not end');
      }
      return seen;
    }

    /** Pushes `count` puts of new keys `{prefix}{i}` as this file's device and replica, 500 a push. */
    async function pushOwn(server: CloudServer, count: number, prefix = 'own-'): Promise<void> {
      for (let from = 0; from < count; from += RECORD_LIMITS.mutationsPerPush) {
        const n = Math.min(RECORD_LIMITS.mutationsPerPush, count - from);
        await pushOk(
          server,
          Array.from({ length: n }, (_, i) => put(`${prefix}${from + i}`, from + i, 0)),
        );
      }
    }

    it('does not count the changes it leaves out toward limit: one page returns the few among many it holds', async () => {
      const server = await listen();
      await pushOwn(server, 5);
      await request(server, 'PUT', recordPath('operator'), { value: 'cloud' });
      await pushOwn(server, 3, 'own-later-');

      expect(await pages(server, 4)).toEqual([[['operator'], 9, false]]);
    });

    it('passes over 1,000 changes it holds in one page of none, with hasMore false', async () => {
      const server = await listen();
      await pushOwn(server, 1000);

      expect(await pull(server, `?cursor=0&limit=200&${as()}`)).toMatchObject({
        changes: [],
        cursor: 1000,
        hasMore: false,
      });
    });

    it('looks at 2,000 changes a page by default: 5,000 it holds take three pages of none', async () => {
      const server = await listen();
      await pushOwn(server, 5000);

      expect(await pages(server, 200)).toEqual([
        [[], 2000, true],
        [[], 4000, true],
        [[], 5000, false],
      ]);
    });

    it('stops a page at pullScanRows changes looked at, or at limit returned, consuming none after the last returned', async () => {
      const server = await listen({ store: await store.open({ pullScanRows: 5 }) });
      await pushOwn(server, 5); // seq 1-5
      await request(server, 'PUT', recordPath('cloud-a'), { value: 'a' }); // 6
      await request(server, 'PUT', recordPath('cloud-b'), { value: 'b' }); // 7
      await pushOwn(server, 2, 'own-later-'); // 8-9
      await request(server, 'PUT', recordPath('cloud-c'), { value: 'c' }); // 10
      await pushOwn(server, 1, 'own-last-'); // 11

      expect(await pages(server, 2)).toEqual([
        // Five looked at, none returned: the scan bound, not limit, ends the page.
        [[], 5, true],
        // Full at seq 7: seq 8 and 9, left out, wait for the next page.
        [['cloud-a', 'cloud-b'], 7, true],
        [['cloud-c'], 11, false],
      ]);
    });

    it("finds the few changes it does not hold among hundreds it does, across the Redis script's slices of 64", async () => {
      const server = await listen({ store: await store.open({ pullScanRows: 300 }) });
      await pushOwn(server, 64, 'own-a-'); // seq 1-64
      await request(server, 'PUT', recordPath('cloud-a'), { value: 'a' }); // 65: the last of a slice
      await request(server, 'PUT', recordPath('cloud-b'), { value: 'b' }); // 66: the first of the next
      await pushOwn(server, 134, 'own-b-'); // 67-200
      await request(server, 'PUT', recordPath('cloud-c'), { value: 'c' }); // 201
      await pushOwn(server, 39, 'own-c-'); // 202-240
      await request(server, 'PUT', recordPath('cloud-d'), { value: 'd' }); // 241

      expect(await pages(server, 3)).toEqual([
        [['cloud-a', 'cloud-b', 'cloud-c'], 201, true],
        [['cloud-d'], 241, false],
      ]);
    });

    it('looks at limit changes a page when limit is over pullScanRows, so that a page can always fill', async () => {
      const server = await listen({ store: await store.open({ pullScanRows: 1 }) });
      await pushOwn(server, 2); // seq 1-2
      await request(server, 'PUT', recordPath('cloud-a'), { value: 'a' }); // 3
      await pushOwn(server, 2, 'own-later-'); // 4-5

      expect(await pages(server, 3)).toEqual([
        [['cloud-a'], 3, true],
        [[], 5, false],
      ]);
    });

    it("returns a change the server restamped to its author, who holds the stamp it wrote, not the server's", async () => {
      const server = await listen();
      const fast = put('a', 1, 0, { hlc: stamp(T0 + HOUR) });
      await pushOk(server, [fast, put('b', 1, 0)]);

      expect((await pull(server, `?${as()}`)).changes).toEqual([
        {
          collection: 'setpoints',
          key: 'a',
          value: 1,
          deleted: false,
          version: 1,
          hlc: stamp(T0),
          origin: REPLICA,
          seq: 1,
        },
      ]);
    });

    it("returns its own change once another write replaced it: a cloud-side edit, another replica's push", async () => {
      const server = await listen();
      await pushOk(server, [put('a', 1, 0), put('b', 1, 0), put('c', 1, 0)]);
      await request(server, 'PUT', recordPath('a'), { value: 'cloud' });
      await pushFrom(server, 'device-2', 'replica-2', [{ ...put('b', 'other', 1), mid: 'replica-2:1' }]);

      expect((await pull(server, `?cursor=3&${as()}`)).changes).toMatchObject([
        { key: 'a', value: 'cloud', version: 2, origin: 'cloud' },
        { key: 'b', value: 'other', version: 2, origin: 'replica-2' },
      ]);
    });

    it('leaves out its own write made on the version of a cloud-side edit, which it had to know to write on it', async () => {
      const server = await listen();
      await pushOk(server, [put('a', 1, 0)]);
      await request(server, 'PUT', recordPath('a'), { value: 'cloud' });

      await pushOk(server, [put('a', 'edge again', 2)]);

      expect(await pull(server, `?${as()}`)).toMatchObject({ changes: [], cursor: 3 });
    });

    it("returns the cloud's record to a requester whose push conflicted with it", async () => {
      const server = await listen();
      await request(server, 'PUT', recordPath('a'), { value: 'cloud' });
      const [result] = await pushOk(server, [put('a', 'edge', 0)]);

      expect(result).toMatchObject({ status: 'conflict' });
      expect((await pull(server, `?${as()}`)).changes).toMatchObject([{ key: 'a', value: 'cloud', origin: 'cloud' }]);
    });

    it('returns what its replica pushed under another device id, and what another replica pushed under its own', async () => {
      const server = await listen();
      await pushOk(server, [put('a', 1, 0)], { deviceId: 'device-2' });
      // A gateway whose database was made anew: the same device id, another replica, which holds none of it.
      await pushFrom(server, DEVICE, 'replica-before', [{ ...put('b', 1, 0), mid: 'replica-before:1' }]);

      expect((await pull(server, `?${as()}`)).changes.map((c) => c.key)).toEqual(['a', 'b']);
    });

    it('returns a change whose version moved past the one its writer was told, even when the marks stayed', async () => {
      const named = store.options('cloud');
      const server = await listen(named);
      await pushOk(server, [put('a', 1, 0), put('b', 1, 0)]);

      await writeAsOlderServer(named, 'a');

      expect((await pull(server, `?${as()}`)).changes).toMatchObject([{ key: 'a', value: 'older', version: 2 }]);
    });

    it('keeps leaving out a change after its push is replayed and answered from the stored outcome', async () => {
      const server = await listen();
      const m = put('a', 1, 0);
      await pushOk(server, [m]);

      await pushOk(server, [m]);

      expect(await pull(server, `?${as()}`)).toMatchObject({ changes: [], cursor: 1 });
    });

    for (const [label, query] of [
      ['deviceId without replicaId', `?deviceId=${DEVICE}`],
      ['replicaId without deviceId', `?replicaId=${REPLICA}`],
      ['an empty deviceId', `?deviceId=&replicaId=${REPLICA}`],
    ] as const) {
      it(`answers 400 to ${label}`, async () => {
        const server = await listen();

        const { response, json } = await request(server, 'GET', `/records/pull${query}`);

        expect(response.status).toBe(400);
        expect(json).toMatchObject({ error: 'bad_request', message: expect.stringMatching(/deviceId|replicaId/) });
      });
    }

    it('answers 403 when a key bound to devices names another device, as for a push', async () => {
      const server = await listen({ apiKeys: [{ key: KEY, devices: [DEVICE] }] });
      await pushOk(server, [put('a', 1, 0)]);

      const other = await request(server, 'GET', `/records/pull?${as('device-2')}`);
      const own = await pull(server, `?${as()}`);
      const unnamed = await pull(server, '');

      expect(other.response.status).toBe(403);
      expect(other.json).toMatchObject({ error: 'forbidden' });
      expect(own).toMatchObject({ changes: [], cursor: 1 });
      expect(unnamed.changes.map((c) => c.key)).toEqual(['a']);
    });
  });

  describe('PUT and GET /records/{collection}/{key}', () => {
    it('stores a cloud-side edit stamped by the server clock, and GET returns it', async () => {
      const server = await listen();

      const { response, json } = await request(server, 'PUT', recordPath('boiler-1'), { value: { target: 70 } });

      expect(response.status).toBe(200);
      const expected = {
        collection: 'setpoints',
        key: 'boiler-1',
        value: { target: 70 },
        deleted: false,
        version: 1,
        hlc: stamp(T0),
        origin: 'cloud',
        // As a conflict resolver sees it: the stamp's physical time.
        timestamp: new Date(T0).toISOString(),
        serverTime: new Date(T0).toISOString(),
      };
      expect(json).toEqual(expected);
      expect((await getRecord(server, 'boiler-1')).record).toEqual(expected);
    });

    it('makes each edit the next version, which a push on the older version then conflicts with', async () => {
      const server = await listen();
      await pushOk(server, [put('a', 'edge', 0)]);
      const { json: edited } = await request(server, 'PUT', recordPath('a'), { value: 'cloud' });

      const [result] = await pushOk(server, [put('a', 'edge again', 1)]);

      expect(edited).toMatchObject({ version: 2, origin: 'cloud' });
      expect(result).toMatchObject({ status: 'conflict', current: { value: 'cloud', version: 2, origin: 'cloud' } });
    });

    it('makes a tombstone of { deleted: true }, which GET still returns', async () => {
      const server = await listen();
      await request(server, 'PUT', recordPath('a'), { value: 1 });

      const { json } = await request(server, 'PUT', recordPath('a'), { deleted: true });

      expect(json).toMatchObject({ value: null, deleted: true, version: 2 });
      expect(await getRecord(server, 'a')).toMatchObject({ status: 200, record: { deleted: true, version: 2 } });
      expect(await stats(server)).toMatchObject({ records: 0, tombstones: 1 });
    });

    it('reads collection and key from URL-encoded path segments', async () => {
      const server = await listen();
      const key = 'line 3/valve #2 ?é';
      await pushOk(server, [{ ...put(key, 'open', 0), collection: 'work-orders' }]);

      const { response, json } = await request(server, 'GET', recordPath(key, 'work-orders'));

      expect(response.status).toBe(200);
      expect(json).toMatchObject({ collection: 'work-orders', key, value: 'open' });
    });

    it('answers 404 to GET of a record that never existed', async () => {
      const server = await listen();
      await pushOk(server, [put('a', 1, 0)]);

      const { response, json } = await request(server, 'GET', recordPath('b'));

      expect(response.status).toBe(404);
      expect(json).toMatchObject({ error: 'not_found', serverTime: expect.any(String) });
    });

    const badEdits: [string, unknown][] = [
      ['an empty object', {}],
      ['both a value and deleted: true', { value: 1, deleted: true }],
      ['deleted: false without a value', { deleted: false }],
      ['a field the protocol does not have', { value: 1, version: 3 }],
      ['a body that is not JSON', 'value=1'],
      ['a value over the size limit', { value: 'x'.repeat(RECORD_LIMITS.valueBytes) }],
    ];
    for (const [label, body] of badEdits) {
      it(`answers 400 to a PUT of ${label}, storing nothing`, async () => {
        const server = await listen();

        const { response } = await request(server, 'PUT', recordPath('a'), body);

        expect(response.status).toBe(400);
        expect((await getRecord(server, 'a')).status).toBe(404);
      });
    }

    const badPaths: [string, string][] = [
      ['a collection name with a space', '/records/set%20points/a'],
      ['a key that is too long', `/records/setpoints/${'k'.repeat(513)}`],
      ['a segment that is not valid percent-encoding', '/records/setpoints/%E0%A4%A'],
    ];
    for (const [label, path] of badPaths) {
      it(`answers 400 to a GET and a PUT of ${label}`, async () => {
        const server = await listen();

        const got = await request(server, 'GET', path);
        const putted = await request(server, 'PUT', path, { value: 1 });

        expect([got.response.status, putted.response.status]).toEqual([400, 400]);
        expect((await stats(server)).changeSeq).toBe(0);
      });
    }

    it('answers 404 to a path with more segments than collection and key', async () => {
      const server = await listen();

      const { response } = await request(server, 'GET', '/records/setpoints/a/b');

      expect(response.status).toBe(404);
    });
  });

  describe('GET /records/stats', () => {
    it('counts records, tombstones and the last change sequence number', async () => {
      const server = await listen();
      await pushOk(server, [put('a', 1, 0), put('b', 1, 0), put('c', 1, 0), del('c', 1)]);

      expect(await stats(server)).toEqual({
        records: 2,
        tombstones: 1,
        changeSeq: 4,
        flaggedDevices: [],
        serverTime: new Date(T0).toISOString(),
      });
    });
  });

  describe('authentication', () => {
    const routes: [string, string, unknown][] = [
      ['POST', '/records/push', { deviceId: DEVICE, replicaId: REPLICA, mutations: [put('a', 1, 0)] }],
      ['GET', '/records/pull', undefined],
      ['GET', '/records/stats', undefined],
      ['GET', '/records/setpoints/a', undefined],
      ['PUT', '/records/setpoints/a', { value: 1 }],
    ];
    for (const [method, path, body] of routes) {
      for (const [label, apiKey] of [
        ['without an API key', null],
        ['with a wrong API key', 'not-the-key'],
      ] as const) {
        it(`refuses ${method} ${path} ${label} with 401, changing nothing`, async () => {
          const server = await listen();

          const { response, json } = await request(server, method, path, body, { apiKey });

          expect(response.status).toBe(401);
          expect(response.headers.get('www-authenticate')).toBe('Bearer');
          expect(json).toMatchObject({ error: 'unauthorized' });
          expect(await server.store.recordStats()).toMatchObject({ changeSeq: 0 });
        });
      }
    }
  });

  describe('restart', () => {
    it('keeps records, the change sequence and stored outcomes across close and listen on the same file', async () => {
      const named = store.options('cloud');
      const first = await listen(named);
      const mutations = [put('a', 1, 0), put('a', 2, 0), put('b', 1, 0, { key: '' })];
      const before = await pushOk(first, mutations);
      await request(first, 'PUT', recordPath('c'), { value: 3 });
      await first.close();

      const second = await listen(named);

      const replayed = await pushOk(second, mutations);
      expect(replayed.map((r) => JSON.stringify(r))).toEqual(before.map((r) => JSON.stringify(r)));
      expect(await stats(second)).toMatchObject({ records: 2, changeSeq: 2 });
      const [next] = await pushOk(second, [put('d', 4, 0)]);
      expect(next).toMatchObject({ status: 'applied', version: 1 });
      expect((await pull(second, '')).changes.map((c) => [c.key, c.seq])).toEqual([
        ['a', 1],
        ['c', 2],
        ['d', 3],
      ]);
    });

    it('keeps its stamps increasing across a restart on a clock that went backwards', async () => {
      const named = store.options('cloud');
      const first = await listen(named);
      const { json: edited } = await request(first, 'PUT', recordPath('a'), { value: 1 });
      await first.close();

      const second = await listen({ ...named, clock: { ms: T0 - HOUR } });
      const { json: again } = await request(second, 'PUT', recordPath('a'), { value: 2 });

      expect(parseHlc(again.hlc as string).ms).toBeGreaterThanOrEqual(T0);
      expect((again.hlc as string) > (edited.hlc as string)).toBe(true);
    });

    it('keeps flagged devices across a restart', async () => {
      const named = store.options('cloud');
      const first = await listen(named);
      await pushOk(first, [put('a', 1, 0, { hlc: stamp(T0 + HOUR) })]);
      await first.close();

      const second = await listen(named);

      expect((await stats(second)).flaggedDevices).toMatchObject([{ deviceId: DEVICE, skewMs: HOUR }]);
    });

    // SQLite only: a Redis record is a hash with no schema to add columns to (its new fields are tested above).
    it.skipIf(kind !== 'sqlite')(
      'adds the columns of the pull marks to a store file made before them, returning its older changes',
      async () => {
        const named = store.options('cloud');
        const first = await listen(named);
        await pushOk(first, [put('a', 1, 0)]);
        await first.close();
        const db = new BetterSqlite3(named.dbPath as string);
        db.exec('ALTER TABLE cloud_records DROP COLUMN known_by; ALTER TABLE cloud_records DROP COLUMN known_at');
        db.close();

        const second = await listen(named);
        await pushOk(second, [put('b', 1, 0)]);

        expect(await pull(second, `?${as()}`)).toMatchObject({ changes: [{ key: 'a' }], cursor: 2 });
      },
    );
  });
}
