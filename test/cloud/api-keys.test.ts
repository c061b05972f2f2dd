import { createHash } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import type { StoredPoint } from '../../src/cloud/index.js';
import { isConfigError } from '../../src/errors.js';
import {
  codecRows,
  compactBatch,
  getWith,
  jsonBatch,
  listenCloud,
  postBatch,
  pushBody,
  send,
  storeCounts,
  wirePoints,
} from '../security/lib/cloud-client.js';

const FLEET = 'fleet-key-0123456789abcdef';
const KEY_A = 'device-a-key-0123456789abcdef';
const KEY_AB = 'device-ab-key-0123456789abcdef';

const sha256 = (text: string) => createHash('sha256').update(text).digest('hex');

/** A server with a fleet key, a key for dev-a and a key for dev-a and dev-b. */
function listen() {
  return listenCloud({
    apiKeys: [
      FLEET,
      { key: KEY_A, devices: ['dev-a'], name: 'dev-a-key' },
      { key: KEY_AB, devices: ['dev-a', 'dev-b'] },
    ],
  });
}

/** Stores `count` readings for each device through the fleet key. */
async function seed(server: Awaited<ReturnType<typeof listen>>, devices: string[], count = 3) {
  for (const deviceId of devices) {
    const answer = await postBatch(server, jsonBatch(wirePoints(1, count), { deviceId }), FLEET);
    expect(answer.status, answer.text).toBe(200);
  }
}

describe('CloudServer API keys', () => {
  describe('a plain string key', () => {
    it('acts for any device', async () => {
      const server = await listen();

      for (const deviceId of ['dev-a', 'dev-z']) {
        expect((await postBatch(server, jsonBatch(wirePoints(1, 2), { deviceId }), FLEET)).status).toBe(200);
      }

      expect((await getWith(server, '/telemetry?deviceId=dev-z', FLEET)).status).toBe(200);
      expect(await server.store.stats()).toMatchObject({ points: 4, batches: 2 });
    });
  });

  describe('a key bound to devices', () => {
    it('stores batches of its own device', async () => {
      const server = await listen();

      const answer = await postBatch(server, jsonBatch(wirePoints(1, 3), { deviceId: 'dev-a' }), KEY_A);

      expect(answer.status).toBe(200);
      expect(await server.store.stats('dev-a')).toMatchObject({ points: 3 });
    });

    it("refuses another device's batch with 403 naming the key and the device, and stores nothing", async () => {
      const server = await listen();

      const answer = await postBatch(server, jsonBatch(wirePoints(1, 3), { deviceId: 'dev-b' }), KEY_A);

      expect(answer.status).toBe(403);
      expect(answer.json).toMatchObject({ error: 'forbidden' });
      expect(answer.json.message).toBe('the API key "dev-a-key" may not act for device "dev-b"');
      expect(answer.text).not.toContain(KEY_A);
      expect(await storeCounts(server)).toMatchObject({ points: 0, batches: 0 });
    });

    it("refuses another device's compact batch with 403", async () => {
      const server = await listen();

      const answer = await postBatch(server, compactBatch(codecRows(1, 5), { deviceId: 'dev-b' }), KEY_A, {
        compact: true,
      });

      expect(answer.status).toBe(403);
      expect(await storeCounts(server)).toMatchObject({ points: 0, batches: 0 });
    });

    it("refuses a replay of another device's stored batch before looking at the ledger", async () => {
      const server = await listen();
      const batch = jsonBatch(wirePoints(1, 3), { deviceId: 'dev-b' });
      expect((await postBatch(server, batch, FLEET)).status).toBe(200);

      const replay = await postBatch(server, batch, KEY_A);
      const otherBytes = await postBatch(
        server,
        { ...batch, body: batch.body.replace('"value":1', '"value":9') },
        KEY_A,
      );

      expect(replay.status).toBe(403);
      expect(otherBytes.status).toBe(403);
      expect(await server.store.stats('dev-b')).toEqual({ points: 3, batches: 1, duplicateBatches: 0 });
    });

    it("refuses to read another device's readings or counts", async () => {
      const server = await listen();
      await seed(server, ['dev-a', 'dev-b']);

      for (const path of ['/telemetry?deviceId=dev-b', '/telemetry/stats?deviceId=dev-b']) {
        const answer = await getWith(server, path, KEY_A);
        expect(answer.status, path).toBe(403);
        expect(answer.json.error).toBe('forbidden');
      }
    });

    it('sees only its own device when it names none', async () => {
      const server = await listen();
      await seed(server, ['dev-a', 'dev-b', 'dev-c']);

      const page = await getWith(server, '/telemetry', KEY_A);
      const stats = await getWith(server, '/telemetry/stats', KEY_A);

      expect(page.status).toBe(200);
      expect(new Set((page.json.points as StoredPoint[]).map((p) => p.deviceId))).toEqual(new Set(['dev-a']));
      expect(stats.json).toMatchObject({ points: 3, batches: 1 });
    });

    it('pages through each of its devices in turn, once each, when bound to several and naming none', async () => {
      const server = await listen();
      await seed(server, ['dev-a', 'dev-b', 'dev-c'], 5);

      const seen: string[] = [];
      let cursor: string | null = null;
      let pages = 0;
      do {
        const query = new URLSearchParams({ limit: '3', ...(cursor ? { cursor } : {}) });
        const page = await getWith(server, `/telemetry?${query}`, KEY_AB);
        expect(page.status, page.text).toBe(200);
        seen.push(...(page.json.points as StoredPoint[]).map((p) => `${p.deviceId}#${p.seq}`));
        cursor = page.json.nextCursor as string | null;
        pages++;
      } while (cursor && pages < 20);

      const expected = ['dev-a', 'dev-b'].flatMap((d) => [1, 2, 3, 4, 5].map((seq) => `${d}#${seq}`));
      expect(seen).toEqual(expected);
      expect((await getWith(server, '/telemetry/stats', KEY_AB)).json).toMatchObject({ points: 10, batches: 2 });
    });

    it('refuses a cursor made for another query', async () => {
      const server = await listen();

      expect((await getWith(server, '/telemetry?cursor=m1.', KEY_A)).status).toBe(400);
      expect((await getWith(server, '/telemetry?cursor=12', KEY_AB)).status).toBe(400);
    });

    it("refuses a records push in another device's name with 403, applying nothing", async () => {
      const server = await listen();

      const refused = await send(server, 'POST', '/records/push', pushBody('dev-b', 'replica-dev-b:1'), {
        apiKey: KEY_A,
      });

      expect(refused.status).toBe(403);
      expect(await storeCounts(server)).toMatchObject({ records: 0, changeSeq: 0 });
      // The mid's outcome was not stored either: the rightful device's push of it applies.
      const rightful = await send(server, 'POST', '/records/push', pushBody('dev-b', 'replica-dev-b:1'), {
        apiKey: FLEET,
      });
      expect(rightful.json.results).toMatchObject([{ status: 'applied', version: 1 }]);
    });

    it('pushes, pulls and reads the fleet-shared records', async () => {
      const server = await listen();

      const pushed = await send(server, 'POST', '/records/push', pushBody('dev-a', 'replica-dev-a:1'), {
        apiKey: KEY_A,
      });
      const pulled = await getWith(server, '/records/pull', KEY_AB);
      const read = await getWith(server, '/records/config/alpha', KEY_AB);

      expect(pushed.json.results).toMatchObject([{ status: 'applied' }]);
      expect(pulled.json.changes).toMatchObject([{ collection: 'config', key: 'alpha', value: 1 }]);
      expect(read.json).toMatchObject({ value: 1, version: 1 });
    });

    it('may not make cloud-side record edits', async () => {
      const server = await listen();

      const bound = await send(server, 'PUT', '/records/config/alpha', JSON.stringify({ value: 2 }), { apiKey: KEY_A });
      const fleet = await send(server, 'PUT', '/records/config/alpha', JSON.stringify({ value: 2 }), { apiKey: FLEET });

      expect(bound.status).toBe(403);
      expect(bound.json.message).toMatch(/cloud-side record edits need a key valid for every device/);
      expect(fleet.status).toBe(200);
      expect(await storeCounts(server)).toMatchObject({ records: 1, changeSeq: 1 });
    });

    it('sees only its own devices among the clock-skew flags', async () => {
      const server = await listen();
      const ahead = '009999999999999-000000';
      for (const deviceId of ['dev-a', 'dev-b']) {
        const body = JSON.parse(pushBody(deviceId, `replica-${deviceId}:1`, deviceId)) as {
          mutations: { hlc: string }[];
        };
        for (const m of body.mutations) m.hlc = ahead;
        await send(server, 'POST', '/records/push', JSON.stringify(body), { apiKey: FLEET });
      }

      const fleet = await getWith(server, '/records/stats', FLEET);
      const bound = await getWith(server, '/records/stats', KEY_A);

      expect((fleet.json.flaggedDevices as { deviceId: string }[]).map((f) => f.deviceId).sort()).toEqual([
        'dev-a',
        'dev-b',
      ]);
      expect((bound.json.flaggedDevices as { deviceId: string }[]).map((f) => f.deviceId)).toEqual(['dev-a']);
    });
  });

  describe('a key given by its SHA-256', () => {
    it('is accepted without the server ever holding the key', async () => {
      const server = await listenCloud({ apiKeys: [{ sha256: sha256(KEY_A), devices: ['dev-a'] }] });

      const ok = await postBatch(server, jsonBatch(wirePoints(1, 1), { deviceId: 'dev-a' }), KEY_A);
      const wrong = await postBatch(server, jsonBatch(wirePoints(1, 1), { deviceId: 'dev-a' }), sha256(KEY_A));

      expect(ok.status).toBe(200);
      expect(wrong.status).toBe(401);
    });
  });

  describe('a refused key', () => {
    for (const [label, header] of [
      ['a wrong key', `Bearer ${KEY_A}x`],
      ['a prefix of a key', `Bearer ${KEY_A.slice(0, -1)}`],
      ['no key', undefined],
      ['an empty Bearer token', 'Bearer '],
      ['a key in another scheme', `Basic ${KEY_A}`],
    ] as const) {
      it(`is answered 401 for ${label}, storing nothing`, async () => {
        const server = await listen();

        const answer = await send(server, 'POST', '/telemetry/batches', jsonBatch(wirePoints(1, 1)).body, {
          headers: { 'idempotency-key': 'replica-dev-a:1', ...(header ? { authorization: header } : {}) },
        });

        expect(answer.status).toBe(401);
        expect(answer.headers.get('www-authenticate')).toBe('Bearer');
        expect(await storeCounts(server)).toMatchObject({ points: 0, batches: 0 });
      });
    }
  });

  describe('.listen() options', () => {
    const cases: [string, unknown[], RegExp][] = [
      ['an empty device list', [{ key: KEY_A, devices: [] }], /apiKeys\[0\]\.devices: at least one device id/],
      ['both a key and a hash', [{ key: KEY_A, sha256: sha256(KEY_A) }], /apiKeys\[0\]: give either "key" or "sha256"/],
      ['neither a key nor a hash', [{ devices: ['dev-a'] }], /apiKeys\[0\]: give either "key" or "sha256"/],
      ['a hash that is not 64 hex digits', [{ sha256: 'abc' }], /apiKeys\[0\]\.sha256: 64 hexadecimal digits/],
      ['a key with a space', ['secret with-space'], /apiKeys\[0\]: a key must be visible ASCII/],
      ['the same key twice', [KEY_A, { key: KEY_A, devices: ['dev-a'] }], /apiKeys\[1\]: the same key as apiKeys\[0\]/],
      ['a key and its own hash', [KEY_A, { sha256: sha256(KEY_A) }], /apiKeys\[1\]: the same key as apiKeys\[0\]/],
      ['a misspelled field', [{ key: KEY_A, device: ['dev-a'] }], /apiKeys\[0\]: Unrecognized key: "device"/],
    ];
    for (const [label, apiKeys, message] of cases) {
      it(`throws ConfigError for ${label}, without the key in the message`, async () => {
        const error = await listenCloud({ apiKeys: apiKeys as never }).catch((e: unknown) => e);

        expect(isConfigError(error)).toBe(true);
        expect((error as Error).message).toMatch(message);
        expect((error as Error).message).not.toContain(KEY_A);
        expect((error as Error).message).not.toContain('with-space');
      });
    }
  });

  describe('.setApiKeys()', () => {
    it('lets a new key in at once and refuses a removed one from the next request on', async () => {
      const server = await listenCloud({ apiKeys: ['old-key-0123456789'] });

      server.setApiKeys(['old-key-0123456789', 'new-key-0123456789']);
      const bothOld = await getWith(server, '/telemetry/stats', 'old-key-0123456789');
      const bothNew = await getWith(server, '/telemetry/stats', 'new-key-0123456789');
      server.setApiKeys(['new-key-0123456789']);
      const revoked = await getWith(server, '/telemetry/stats', 'old-key-0123456789');
      const kept = await getWith(server, '/telemetry/stats', 'new-key-0123456789');

      expect([bothOld.status, bothNew.status, revoked.status, kept.status]).toEqual([200, 200, 401, 200]);
    });

    it('changes nothing when the new list is invalid', async () => {
      const server = await listenCloud({ apiKeys: ['old-key-0123456789'] });

      expect(() => server.setApiKeys(['new-key-0123456789', { key: 'x', devices: [] }])).toThrow(/devices/);

      expect((await getWith(server, '/telemetry/stats', 'old-key-0123456789')).status).toBe(200);
      expect((await getWith(server, '/telemetry/stats', 'new-key-0123456789')).status).toBe(401);
    });

    it('can bind a key that was a fleet key to devices', async () => {
      const server = await listenCloud({ apiKeys: [KEY_A] });
      expect((await getWith(server, '/telemetry?deviceId=dev-b', KEY_A)).status).toBe(200);

      server.setApiKeys([{ key: KEY_A, devices: ['dev-a'] }]);

      expect((await getWith(server, '/telemetry?deviceId=dev-b', KEY_A)).status).toBe(403);
    });
  });
});
