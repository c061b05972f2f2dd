import { deflateRawSync } from 'node:zlib';
import { afterEach, describe, expect, it } from 'vitest';
import { CloudServer } from '../../src/cloud/index.js';
import { COMPACT_BATCH_CONTENT_TYPE, encodeCompactRaw } from '../../src/model/compact-codec.js';
import { CLOUD_STORE_KINDS, type CloudStoreKind, redisAvailable, useCloudStore } from '../helpers/cloud-stores.js';

const REPLICA = '6f1c0a52-8a7e-4c4e-9a54-2b1f0f7d1c33';
const servers: CloudServer[] = [];
afterEach(async () => {
  await Promise.all(servers.splice(0).map((s) => s.close()));
});

const post = (s: CloudServer, body: Uint8Array, key = `${REPLICA}:1`) =>
  fetch(`${s.url}/telemetry/batches`, {
    method: 'POST',
    headers: { authorization: 'Bearer k', 'content-type': COMPACT_BATCH_CONTENT_TYPE, 'idempotency-key': key },
    body,
  });

const rows = (values: number[]) =>
  values.map((value, i) => ({
    seq: i + 1,
    sensorId: 's',
    ts: 1_795_000_000_000 + i,
    value,
    unit: 'bar',
    tags: '{"a":"b"}',
    payload: null,
  }));

for (const kind of CLOUD_STORE_KINDS) {
  describe.skipIf(kind === 'redis' && !redisAvailable())(`CloudServer compact batches on the ${kind} store`, () =>
    suite(kind),
  );
}

/** The suite, on one store: run on each, to prove they keep the same semantics. */
function suite(kind: CloudStoreKind): void {
  const store = useCloudStore(kind);

  async function server(options: Partial<Parameters<typeof CloudServer.listen>[0]> = {}): Promise<CloudServer> {
    const s = await CloudServer.listen({ port: 0, apiKeys: ['k'], ...store.options(), ...options });
    servers.push(s);
    return s;
  }

  it('stores a compact batch and answers a replay of it from the ledger', async () => {
    const s = await server();
    const body = deflateRawSync(
      encodeCompactRaw({ deviceId: 'd', replicaId: REPLICA, batchNo: 1 }, rows([1.5, 2.25, -3])),
    );
    const first = await post(s, body);
    expect(first.status).toBe(200);
    expect(await first.json()).toMatchObject({ ackThroughBatchNo: 1, accepted: 3 });
    const replay = await post(s, body);
    expect(replay.headers.get('idempotent-replayed')).toBe('true');
    const { points } = await s.store.query({ deviceId: 'd', limit: 10 });
    expect(points.map((p) => [p.seq, p.value, p.unit, p.tags])).toEqual([
      [1, 1.5, 'bar', { a: 'b' }],
      [2, 2.25, 'bar', { a: 'b' }],
      [3, -3, 'bar', { a: 'b' }],
    ]);
    expect(await s.store.stats('d')).toEqual({ points: 3, batches: 1, duplicateBatches: 1 });
  });

  it('refuses a body that does not inflate, or is not a compact batch, with 400 and stores nothing', async () => {
    const s = await server();
    expect((await post(s, Uint8Array.from([1, 2, 3, 4]))).status).toBe(400);
    expect((await post(s, deflateRawSync(Buffer.from('{"v":1}')))).status).toBe(400);
    expect((await s.store.stats()).points).toBe(0);
  });

  it('refuses a compact body that inflates past maxInflatedBytes with 413', async () => {
    const s = await server({ maxInflatedBytes: 1024 });
    const big = deflateRawSync(
      encodeCompactRaw({ deviceId: 'd', replicaId: REPLICA, batchNo: 1 }, rows(Array(2000).fill(1))),
    );
    expect(big.length).toBeLessThan(1024);
    expect((await post(s, big)).status).toBe(413);
  });

  it('names the readings it refuses in a compact batch, as for JSON', async () => {
    const s = await server({ validatePoint: (p) => (p.value === 666 ? 'no devils' : undefined) });
    const body = deflateRawSync(encodeCompactRaw({ deviceId: 'd', replicaId: REPLICA, batchNo: 1 }, rows([1, 666, 2])));
    const response = await post(s, body);
    expect(response.status).toBe(422);
    expect(((await response.json()) as { rejected: unknown }).rejected).toEqual([{ seq: 2, reason: 'no devils' }]);
  });

  it('refuses a key that does not match the body', async () => {
    const s = await server();
    const body = deflateRawSync(encodeCompactRaw({ deviceId: 'd', replicaId: REPLICA, batchNo: 1 }, rows([1])));
    expect((await post(s, body, `${REPLICA}:2`)).status).toBe(400);
  });
}
