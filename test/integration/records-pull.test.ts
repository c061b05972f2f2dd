import { describe, expect, it } from 'vitest';
import { type CloudRecord, EdgeGateway, type PullResponse, type SyncRecord } from '../../src/index.js';
import { startCloudServer, type ThrowawayCloud } from '../../src/testing/index.js';
import { defer } from '../helpers/cleanup.js';
import { CLOUD_STORE_KINDS, type CloudStoreKind, redisAvailable, useCloudStore } from '../helpers/cloud-stores.js';
import { forward, type RecordedRequest, startTestServer } from '../helpers/http.js';
import { heldBy, recordsGateway, type SharedClock, sharedClock } from '../helpers/records.js';
import { tempDbPath } from '../helpers/temp-dir.js';

const C = 'setpoints';
const K = 'boiler-1';

/** A cloud-side edit, as an operator makes it (`PUT /records/{collection}/{key}`). */
async function cloudPut(cloud: ThrowawayCloud, key: string, value: unknown): Promise<CloudRecord> {
  const response = await fetch(`${cloud.url}/records/${C}/${encodeURIComponent(key)}`, {
    method: 'PUT',
    headers: { authorization: `Bearer ${cloud.apiKey}`, 'content-type': 'application/json' },
    body: JSON.stringify({ value }),
  });
  expect(response.status).toBe(200);
  return (await response.json()) as CloudRecord;
}

/** A pull as it went over the wire: the query the gateway sent and the page the cloud answered. */
interface SeenPull {
  query: URLSearchParams;
  page: PullResponse;
}

for (const kind of CLOUD_STORE_KINDS) {
  describe.skipIf(kind === 'redis' && !redisAvailable())(`a gateway's records pull, on the ${kind} store`, () =>
    suite(kind),
  );
}

function suite(kind: CloudStoreKind): void {
  const store = useCloudStore(kind);

  /**
   * The reference cloud on this suite's store, behind a proxy that records every pull and its answer. `rewrite`
   * changes a request's path and query before it goes on (to play an older gateway).
   */
  async function setup(clock: SharedClock, rewrite: (url: string) => string = (url) => url) {
    const cloud = await startCloudServer({ ...store.options(), now: clock.read });
    defer(() => cloud.close());
    const pulls: SeenPull[] = [];
    const proxy = await startTestServer(async (request, response) => {
      const sent: RecordedRequest = { ...request, url: rewrite(request.url) };
      const answer = await forward(sent, response, cloud.url);
      const url = new URL(sent.url, 'http://proxy');
      if (url.pathname.endsWith('/records/pull') && answer.status === 200) {
        pulls.push({ query: url.searchParams, page: JSON.parse(answer.body.toString('utf8')) as PullResponse });
      }
    });
    return { cloud, proxy, pulls };
  }

  const gatewayOf = (cloud: ThrowawayCloud, proxyUrl: string, clock: SharedClock) =>
    recordsGateway(cloud, { clock: clock.read, cloudUrl: proxyUrl });

  /** `[cursor asked, changes returned, cursor answered, hasMore]` of each pull. */
  const shape = (pulls: readonly SeenPull[]) =>
    pulls.map((p) => [Number(p.query.get('cursor')), p.page.changes.length, p.page.cursor, p.page.hasMore]);

  it('gets none of its own edits back, over pages that hold none, and another gateway gets them all', async () => {
    const clock = sharedClock();
    const { cloud, proxy, pulls } = await setup(clock);
    const [a, b] = [await gatewayOf(cloud, proxy.url, clock), await gatewayOf(cloud, proxy.url, clock)];
    // More than a page looks at (2,000 changes, the store's default): the first page returns none yet goes on.
    const n = 2500;
    for (let i = 0; i < n; i++) await a.records.put(C, `key-${i}`, { target: i });
    pulls.length = 0;

    const synced = await a.forceSync();

    expect(synced.records).toMatchObject({ pushed: n, applied: n, pulled: 0 });
    expect(shape(pulls)).toEqual([
      [0, 0, 2000, true],
      [2000, 0, n, false],
    ]);
    expect(pulls[0]?.query.get('deviceId')).toBe(a.options.deviceId);
    expect(pulls[0]?.query.get('replicaId')).toBe(a.getStatus().replicaId);
    pulls.length = 0;

    const changed: SyncRecord[] = [];
    b.on('record-change', (record) => changed.push(record));
    await b.forceSync();

    expect(pulls.reduce((sum, p) => sum + p.page.changes.length, 0)).toBe(n);
    expect(changed).toHaveLength(n);
    for (let i = 0; i < n; i++) expect(heldBy(b, C, `key-${i}`)).toEqual({ target: i });
    pulls.length = 0;

    await a.forceSync();

    expect(shape(pulls)).toEqual([[n, 0, n, false]]);
  });

  it("returns a change the cloud restamped to its author, which holds the cloud's stamp", async () => {
    const clock = sharedClock();
    const { cloud, proxy, pulls } = await setup(clock);
    // Its wall clock an hour fast, and it never met the cloud: its stamp is restamped.
    const gateway = new EdgeGateway({
      deviceId: 'fast-device',
      localDb: tempDbPath(),
      clock: () => clock.now + 3_600_000,
    });
    defer(() => gateway.stop());
    await gateway.start();
    await gateway.records.put(C, K, 'edge');
    gateway.configure({
      cloudUrl: proxy.url,
      apiKey: cloud.apiKey,
      syncStrategy: 'fixed-interval',
      syncInterval: 3600,
    });

    await gateway.forceSync();

    const stored = await cloud.server.store.getRecord(C, K);
    expect(stored).toMatchObject({ value: 'edge', version: 1, origin: gateway.getStatus().replicaId });
    const returned = pulls.flatMap((p) => p.page.changes);
    expect(returned).toMatchObject([{ key: K, version: 1, hlc: stored?.hlc }]);
    expect(gateway.records.get(C, K)).toMatchObject({ value: 'edge', version: 1, hlc: stored?.hlc });
    expect(gateway.records.pendingCount()).toBe(0);
  });

  it('returns the record of a conflict the cloud won to the gateway that pushed the losing edit', async () => {
    const clock = sharedClock();
    const { cloud, proxy, pulls } = await setup(clock);
    const gateway = await gatewayOf(cloud, proxy.url, clock);
    await gateway.records.put(C, K, { by: 'edge', n: 1 });
    await gateway.forceSync();
    clock.advance();
    await gateway.records.put(C, K, { by: 'edge', n: 2 });
    clock.advance();
    const edited = await cloudPut(cloud, K, { by: 'cloud' });
    pulls.length = 0;

    const synced = await gateway.forceSync();

    expect(synced.records).toMatchObject({ conflicts: 1 });
    expect(pulls.flatMap((p) => p.page.changes)).toMatchObject([{ key: K, version: 2, origin: 'cloud' }]);
    expect(gateway.records.get(C, K)).toMatchObject({ value: { by: 'cloud' }, version: 2, hlc: edited.hlc });
  });

  it('leaves out a merge for the gateway that pushed it, which holds it, and brings it to the other gateway', async () => {
    const clock = sharedClock();
    const { cloud, proxy, pulls } = await setup(clock);
    const [a, b] = [await gatewayOf(cloud, proxy.url, clock), await gatewayOf(cloud, proxy.url, clock)];
    a.setConflictResolver((edge, cloudSide) => ({ value: { edge: edge.value, cloud: cloudSide.value } }));
    await a.records.put(C, K, 'base');
    await a.forceSync();
    clock.advance();
    await a.records.put(C, K, 'edge');
    await cloudPut(cloud, K, 'cloud');
    pulls.length = 0;

    const synced = await a.forceSync();

    const merged = { edge: 'edge', cloud: 'cloud' };
    expect(synced.records).toMatchObject({ conflicts: 1, applied: 1 });
    expect(await cloud.server.store.getRecord(C, K)).toMatchObject({ value: merged, version: 3 });
    expect(pulls.flatMap((p) => p.page.changes)).toEqual([]);
    expect(a.records.get(C, K)).toMatchObject({ value: merged, version: 3 });
    pulls.length = 0;

    await b.forceSync();

    expect(pulls.flatMap((p) => p.page.changes)).toMatchObject([{ key: K, value: merged, version: 3 }]);
    expect(heldBy(b, C, K)).toEqual(merged);
  });

  it('names no gateway at durability normal, whose own edits come back: a power cut may have undone them locally', async () => {
    const clock = sharedClock();
    const { cloud, proxy, pulls } = await setup(clock);
    const gateway = await recordsGateway(cloud, { clock: clock.read, cloudUrl: proxy.url, durability: 'normal' });
    for (let i = 0; i < 3; i++) await gateway.records.put(C, `key-${i}`, i);
    pulls.length = 0;

    const synced = await gateway.forceSync();

    expect(pulls.length).toBeGreaterThan(0);
    expect(pulls.every((p) => !p.query.has('deviceId') && !p.query.has('replicaId'))).toBe(true);
    expect(shape(pulls)).toEqual([[0, 3, 3, false]]);
    expect(synced.records).toMatchObject({ applied: 3, pulled: 0 });
  });

  it('sends an older gateway, which names itself in no pull, its own edits back, which it skips by version', async () => {
    const clock = sharedClock();
    const older = (url: string) => url.replace(/&deviceId=[^&]*&replicaId=[^&]*/, '');
    const { cloud, proxy, pulls } = await setup(clock, older);
    const gateway = await gatewayOf(cloud, proxy.url, clock);
    for (let i = 0; i < 3; i++) await gateway.records.put(C, `key-${i}`, i);
    const changed: SyncRecord[] = [];
    gateway.on('record-change', (record) => changed.push(record));
    pulls.length = 0;

    const synced = await gateway.forceSync();

    expect(pulls.every((p) => !p.query.has('deviceId') && !p.query.has('replicaId'))).toBe(true);
    expect(shape(pulls)).toEqual([[0, 3, 3, false]]);
    expect(synced.records).toMatchObject({ applied: 3, pulled: 0 });
    expect(changed).toEqual([]);
    for (let i = 0; i < 3; i++) expect(gateway.records.get(C, `key-${i}`)).toMatchObject({ value: i, version: 1 });
  });
}
