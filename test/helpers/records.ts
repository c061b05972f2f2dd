import type { CloudRecord } from '../../src/index.js';
import { EdgeGateway, type EdgeGatewayOptions } from '../../src/index.js';
import { startCloudServer, type ThrowawayCloud } from '../../src/testing/index.js';
import { defer } from './cleanup.js';
import { FAST } from './gateway.js';
import { tempDbPath } from './temp-dir.js';

/** One wall clock that every participant of a test reads, moved by hand: who wrote last is then decided. */
export function sharedClock(start = Date.UTC(2026, 5, 1, 12)) {
  const clock = {
    now: start,
    read: () => clock.now,
    advance(ms = 1000) {
      clock.now += ms;
    },
  };
  return clock;
}

export type SharedClock = ReturnType<typeof sharedClock>;

/** A reference cloud server on loopback, on `clock`, with helpers to edit and read records as an operator would. */
export async function startRecordsCloud(clock?: SharedClock) {
  const cloud = await startCloudServer(clock ? { now: clock.read } : {});
  defer(() => cloud.close());
  const call = async (method: string, path: string, body?: unknown) => {
    const response = await fetch(`${cloud.url}${path}`, {
      method,
      headers: { authorization: `Bearer ${cloud.apiKey}`, 'content-type': 'application/json' },
      ...(body === undefined ? {} : { body: JSON.stringify(body) }),
    });
    const text = await response.text();
    return { status: response.status, json: text ? (JSON.parse(text) as unknown) : undefined };
  };
  const path = (collection: string, key: string) =>
    `/records/${encodeURIComponent(collection)}/${encodeURIComponent(key)}`;
  return {
    ...cloud,
    call,
    /** A cloud-side edit (`PUT /records/{collection}/{key}`). */
    async put(collection: string, key: string, value: unknown): Promise<CloudRecord> {
      const answer = await call('PUT', path(collection, key), { value });
      if (answer.status !== 200) throw new Error(`PUT answered ${answer.status}: ${JSON.stringify(answer.json)}`);
      return answer.json as CloudRecord;
    },
    async remove(collection: string, key: string): Promise<CloudRecord> {
      const answer = await call('PUT', path(collection, key), { deleted: true });
      if (answer.status !== 200) throw new Error(`PUT answered ${answer.status}: ${JSON.stringify(answer.json)}`);
      return answer.json as CloudRecord;
    },
    async get(collection: string, key: string): Promise<CloudRecord | undefined> {
      const answer = await call('GET', path(collection, key));
      if (answer.status === 404) return undefined;
      if (answer.status !== 200) throw new Error(`GET answered ${answer.status}`);
      return answer.json as CloudRecord;
    },
  };
}

export type RecordsCloud = Awaited<ReturnType<typeof startRecordsCloud>>;

/**
 * A gateway that syncs only when the test says so (`forceSync()`): between two syncs it is, for the cloud, offline.
 * Stopped after the test.
 */
export async function recordsGateway(
  cloud: ThrowawayCloud,
  options: Partial<EdgeGatewayOptions> = {},
): Promise<EdgeGateway> {
  const gateway = new EdgeGateway({
    deviceId: `device-${Math.random().toString(36).slice(2)}`,
    localDb: tempDbPath(),
    cloudUrl: cloud.url,
    apiKey: cloud.apiKey,
    ...FAST,
    syncStrategy: 'fixed-interval',
    syncInterval: 3600,
    ...options,
  });
  defer(() => gateway.stop());
  await gateway.start();
  // The first cycle starts at once; let it finish so that the test decides every later one.
  await gateway.forceSync();
  return gateway;
}

/** What a replica holds for a key: the value, or `deleted` for a tombstone or nothing. */
export function heldBy(gateway: EdgeGateway, collection: string, key: string): unknown {
  const record = gateway.records.get(collection, key);
  return record === undefined ? 'deleted' : record.value;
}

export async function heldByCloud(cloud: RecordsCloud, collection: string, key: string): Promise<unknown> {
  const record = await cloud.get(collection, key);
  return record === undefined || record.deleted ? 'deleted' : record.value;
}

/** Syncs every gateway, in order, `rounds` times: enough for every change to reach everyone. */
export async function syncAll(gateways: readonly EdgeGateway[], rounds = 2): Promise<void> {
  for (let i = 0; i < rounds; i++) for (const gateway of gateways) await gateway.forceSync();
}
