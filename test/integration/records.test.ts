import { describe, expect, it } from 'vitest';
import {
  type ConflictEvent,
  type ConflictStrategy,
  EdgeGateway,
  SqliteStorage,
  type SyncErrorEvent,
  type SyncRecord,
} from '../../src/index.js';
import { defer } from '../helpers/cleanup.js';
import {
  heldBy,
  heldByCloud,
  type RecordsCloud,
  recordsGateway,
  type SharedClock,
  sharedClock,
  startRecordsCloud,
  syncAll,
} from '../helpers/records.js';
import { tempDbPath } from '../helpers/temp-dir.js';

const C = 'setpoints';
const K = 'boiler-1';

/** A custom resolver that merges objects key by key, the cloud's keys first: a value neither side had. */
const merge = (edge: SyncRecord, cloud: SyncRecord) => ({
  value: { ...(cloud.value as object), ...(edge.value as object), merged: true },
});

async function setup(strategy: ConflictStrategy, clock: SharedClock, gateways = 1) {
  const cloud = await startRecordsCloud(clock);
  const edges: EdgeGateway[] = [];
  for (let i = 0; i < gateways; i++) {
    const gateway = await recordsGateway(cloud, { clock: clock.read });
    if (strategy === 'custom') gateway.setConflictResolver(merge);
    else gateway.setConflictResolutionStrategy(strategy);
    edges.push(gateway);
  }
  return { cloud, edges };
}

async function expectEverywhere(cloud: RecordsCloud, edges: readonly EdgeGateway[], expected: unknown) {
  expect(await heldByCloud(cloud, C, K)).toEqual(expected);
  for (const gateway of edges) expect(heldBy(gateway, C, K)).toEqual(expected);
}

const STRATEGIES: ConflictStrategy[] = ['last-write-wins', 'cloud-wins', 'edge-wins', 'custom'];

describe.each(STRATEGIES)('records sync, %s', (strategy) => {
  it('an edge-only edit reaches the cloud and the other gateways', async () => {
    const clock = sharedClock();
    const { cloud, edges } = await setup(strategy, clock, 2);
    const [a, b] = edges as [EdgeGateway, EdgeGateway];
    await a.records.put(C, K, { target: 72 });
    const result = await a.forceSync();
    expect(result.records).toMatchObject({ pushed: 1, applied: 1, conflicts: 0 });
    const changes: SyncRecord[] = [];
    b.on('record-change', (r) => changes.push(r));
    await b.forceSync();
    await expectEverywhere(cloud, edges, { target: 72 });
    expect(changes).toMatchObject([{ key: K, value: { target: 72 }, version: 1, origin: a.getStatus().replicaId }]);
    expect(a.records.get(C, K)?.version).toBe(1);
    expect(a.records.pendingCount()).toBe(0);
  });

  it('a cloud-only edit reaches the gateway, as a record-change and to watchers', async () => {
    const clock = sharedClock();
    const { cloud, edges } = await setup(strategy, clock);
    const gateway = edges[0] as EdgeGateway;
    const watched: string[] = [];
    gateway.records.watch(C, (record, change) => watched.push(`${record.key}:${change.source}`));
    await cloud.put(C, K, { target: 60 });
    await gateway.forceSync();
    expect(heldBy(gateway, C, K)).toEqual({ target: 60 });
    expect(gateway.records.get(C, K)).toMatchObject({ origin: 'cloud', version: 1 });
    expect(watched).toEqual([`${K}:cloud`]);
  });

  for (const cloudLater of [true, false]) {
    it(`both edit while the edge is offline (${cloudLater ? 'the cloud' : 'the edge'} later)`, async () => {
      const clock = sharedClock();
      const { cloud, edges } = await setup(strategy, clock);
      const gateway = edges[0] as EdgeGateway;
      await gateway.records.put(C, K, { base: 1 });
      await gateway.forceSync();
      const conflicts: ConflictEvent[] = [];
      gateway.on('conflict', (c) => conflicts.push(c));
      const edgeEdit = () => gateway.records.put(C, K, { edge: 2 });
      const cloudEdit = () => cloud.put(C, K, { cloud: 3 });
      clock.advance();
      await (cloudLater ? edgeEdit() : cloudEdit());
      clock.advance();
      await (cloudLater ? cloudEdit() : edgeEdit());
      clock.advance();
      await syncAll(edges);
      const expected = {
        'last-write-wins': cloudLater ? { cloud: 3 } : { edge: 2 },
        'cloud-wins': { cloud: 3 },
        'edge-wins': { edge: 2 },
        custom: { cloud: 3, edge: 2, merged: true },
      }[strategy];
      await expectEverywhere(cloud, edges, expected);
      expect(conflicts).toHaveLength(1);
      expect(conflicts[0]).toMatchObject({ strategy, edge: { value: { edge: 2 } }, cloud: { value: { cloud: 3 } } });
      expect(gateway.records.pendingCount()).toBe(0);
    });
  }

  it('a delete on the edge against an edit in the cloud', async () => {
    const clock = sharedClock();
    const { cloud, edges } = await setup(strategy, clock);
    const gateway = edges[0] as EdgeGateway;
    await gateway.records.put(C, K, { v: 1 });
    await gateway.forceSync();
    clock.advance();
    await gateway.records.delete(C, K);
    clock.advance();
    await cloud.put(C, K, { v: 2 });
    await syncAll(edges);
    const expected = {
      'last-write-wins': { v: 2 }, // the cloud's edit is later
      'cloud-wins': { v: 2 },
      'edge-wins': 'deleted',
      custom: { v: 2, merged: true }, // the merge of a deleted edge (null value) and the cloud
    }[strategy];
    await expectEverywhere(cloud, edges, expected);
  });

  // Two gateways and the cloud edit one key, in every order of time; then the gateways reconnect in both orders.
  const writers = ['a', 'b', 'cloud'] as const;
  const orders = permutations([...writers]);
  for (const order of orders) {
    for (const reconnect of [
      ['a', 'b'],
      ['b', 'a'],
    ] as const) {
      it(`two gateways and the cloud edit one key (edits ${order.join('<')}, reconnect ${reconnect.join(',')})`, async () => {
        const clock = sharedClock();
        const { cloud, edges } = await setup(strategy, clock, 2);
        const byName = { a: edges[0] as EdgeGateway, b: edges[1] as EdgeGateway };
        for (const writer of order) {
          clock.advance();
          if (writer === 'cloud') await cloud.put(C, K, { by: 'cloud' });
          else await byName[writer].records.put(C, K, { by: writer });
        }
        clock.advance();
        for (const name of reconnect) await byName[name].forceSync();
        await syncAll(edges);
        const value = await heldByCloud(cloud, C, K);
        await expectEverywhere(cloud, edges, value);
        const first = reconnect[0];
        const last = reconnect[1];
        const promised = {
          // The latest edit in time wins, wherever it was made.
          'last-write-wins': { by: order[2] },
          // The cloud keeps what it had: its own edit, else the first gateway's to arrive.
          'cloud-wins': { by: 'cloud' },
          // Each gateway wins its conflict: the last to reconnect has the last word.
          'edge-wins': { by: last },
          // Each gateway merges its side over the cloud's; the last to reconnect merges last.
          custom: { by: last, merged: true },
        }[strategy];
        expect(value, `first to reconnect: ${first}`).toEqual(promised);
      });
    }
  }
});

describe('records sync, failures', () => {
  it('a resolver that throws leaves the edit pending, reports sync-error, and does not hold other keys', async () => {
    const clock = sharedClock();
    const { cloud, edges } = await setup('last-write-wins', clock);
    const gateway = edges[0] as EdgeGateway;
    let broken = true;
    gateway.setConflictResolver((edge, cloudSide) => {
      if (broken && edge.key === K) throw new Error('resolver bug');
      return edge.hlc > cloudSide.hlc ? edge : cloudSide;
    });
    const errors: SyncErrorEvent[] = [];
    gateway.on('sync-error', (e) => errors.push(e));
    await cloud.put(C, K, { cloud: 1 });
    clock.advance();
    await gateway.records.put(C, K, { edge: 1 });
    await gateway.records.put(C, 'other', { fine: true });
    await gateway.forceSync();
    expect(errors.map((e) => e.code)).toContain('CONFLICT_UNRESOLVED');
    expect(await heldByCloud(cloud, C, 'other')).toEqual({ fine: true });
    expect(heldBy(gateway, C, K)).toEqual({ edge: 1 });
    expect(gateway.records.pendingCount()).toBe(1);
    broken = false;
    await syncAll(edges);
    await expectEverywhere(cloud, edges, { edge: 1 });
  });

  it('a resolver that hangs is given up after its deadline, and the edit resolved later', async () => {
    const clock = sharedClock();
    const cloud = await startRecordsCloud(clock);
    const gateway = await recordsGateway(cloud, { clock: clock.read, conflictResolverTimeout: 0.05 });
    let hang = true;
    gateway.setConflictResolver((edge, cloudSide) =>
      hang ? new Promise<SyncRecord>(() => undefined) : { value: { both: [edge.value, cloudSide.value] } },
    );
    const errors: SyncErrorEvent[] = [];
    gateway.on('sync-error', (e) => errors.push(e));
    await cloud.put(C, K, 1);
    await gateway.records.put(C, K, 2);
    await gateway.forceSync();
    expect(errors.find((e) => e.code === 'CONFLICT_UNRESOLVED')?.message).toMatch(/no answer within 50 ms/);
    hang = false;
    await syncAll([gateway]);
    await expectEverywhere(cloud, [gateway], { both: [2, 1] });
  });

  it('an edit the cloud refuses goes to the record dead letters and does not block the queue', async () => {
    const clock = sharedClock();
    const cloud = await startRecordsCloud(clock);
    const gateway = await recordsGateway(cloud, { clock: clock.read });
    await gateway.records.put(C, 'good', 1);
    await gateway.stop();
    // A mutation the server cannot accept, written below the API (as a damaged or older client might).
    const raw = new SqliteStorage({ path: gateway.options.localDb });
    raw.open();
    raw.records.write({ collection: C, key: 'bad', value: '{"x":1}', hlc: 'not-a-stamp', origin: raw.replicaId });
    raw.close();
    const again = await recordsGateway(cloud, { clock: clock.read, localDb: gateway.options.localDb });
    await again.forceSync();
    expect(again.records.deadLetters()).toMatchObject([{ key: 'bad', reason: expect.stringMatching(/hlc/) }]);
    expect(await heldByCloud(cloud, C, 'good')).toBe(1);
    expect(again.records.pendingCount()).toBe(0);
  });

  it('a gateway whose wall clock is an hour fast does not win last-write-wins against a later cloud edit', async () => {
    const clock = sharedClock();
    const cloud = await startRecordsCloud(clock);
    const fast = () => clock.now + 3_600_000;
    const gateway = await recordsGateway(cloud, { clock: fast }); // its first sync measured the offset
    clock.advance();
    await gateway.records.put(C, K, 'edge, earlier');
    clock.advance(60_000);
    await cloud.put(C, K, 'cloud, later');
    await syncAll([gateway]);
    await expectEverywhere(cloud, [gateway], 'cloud, later');
    expect(gateway.getStatus().clockSkewMs).toBeLessThan(-3_500_000);
  });

  it('a gateway 30 s fast (inside the skew bound) stamps in the cloud time once it has met the cloud', async () => {
    const clock = sharedClock();
    const cloud = await startRecordsCloud(clock);
    const gateway = await recordsGateway(cloud, { clock: () => clock.now + 30_000 });
    clock.advance();
    const edit = await gateway.records.put(C, K, 'edge, earlier');
    expect(Math.abs(edit.timestamp.getTime() - clock.now)).toBeLessThan(1000);
    clock.advance(10_000); // later in real time, but earlier than the gateway's wall clock said
    await cloud.put(C, K, 'cloud, later');
    await syncAll([gateway]);
    await expectEverywhere(cloud, [gateway], 'cloud, later');
  });

  it('a gateway that never met the cloud and runs an hour fast is restamped, and loses to a later cloud edit', async () => {
    const clock = sharedClock();
    const cloud = await startRecordsCloud(clock);
    const fast = () => clock.now + 3_600_000;
    const offline = new EdgeGateway({ deviceId: 'fast-device', localDb: tempDbPath(), clock: fast });
    defer(() => offline.stop());
    await offline.start();
    await offline.records.put(C, K, 'edge, earlier');
    clock.advance(60_000);
    await cloud.put(C, K, 'cloud, later');
    offline.configure({
      cloudUrl: cloud.url,
      apiKey: cloud.apiKey,
      syncStrategy: 'fixed-interval',
      syncInterval: 3600,
    });
    await syncAll([offline]);
    await expectEverywhere(cloud, [offline], 'cloud, later');
  });
});

function permutations<T>(items: T[]): T[][] {
  if (items.length <= 1) return [items];
  return items.flatMap((item, i) =>
    permutations([...items.slice(0, i), ...items.slice(i + 1)]).map((rest) => [item, ...rest]),
  );
}
