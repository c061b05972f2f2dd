/**
 * The records section of `npm run bench`: shared records pushed from a gateway to a loopback reference cloud
 * server, against the same mutations posted straight to the server by a bare client (the reference: what the
 * server takes at most); and conflicts resolved per second when the cloud and the gateway both edited every key.
 */
import { EdgeGateway } from '../src/index.js';
import { formatHlc, type RecordMutation } from '../src/model/records-wire.js';
import { startCloudServer } from '../src/testing/index.js';

const fmt = (n: number) => Math.round(n).toLocaleString('en-US');

async function syncUntilSettled(gateway: EdgeGateway): Promise<void> {
  for (let i = 0; i < 10_000 && gateway.records.pendingCount() > 0; i++) await gateway.forceSync();
}

async function viaGateway(n: number, path: (name: string) => string): Promise<number> {
  const cloud = await startCloudServer({ dbPath: path('cloud') });
  const gateway = new EdgeGateway({
    deviceId: 'bench-records',
    localDb: path('edge'),
    cloudUrl: cloud.url,
    apiKey: cloud.apiKey,
    syncStrategy: 'fixed-interval',
    syncInterval: 3600,
  });
  await gateway.start();
  for (let i = 0; i < n; i++) await gateway.records.put('setpoints', `key-${i}`, { target: i, unit: 'celsius' });
  const t0 = performance.now();
  await syncUntilSettled(gateway);
  const seconds = (performance.now() - t0) / 1000;
  await gateway.stop();
  await cloud.close();
  return n / seconds;
}

async function direct(n: number, path: (name: string) => string): Promise<number> {
  const cloud = await startCloudServer({ dbPath: path('cloud') });
  const t0 = performance.now();
  for (let from = 0; from < n; from += 500) {
    const mutations: RecordMutation[] = [];
    for (let i = from; i < Math.min(n, from + 500); i++) {
      mutations.push({
        mid: `direct:${i}`,
        collection: 'setpoints',
        key: `key-${i}`,
        op: 'put',
        value: { target: i, unit: 'celsius' },
        baseVersion: 0,
        hlc: formatHlc({ ms: Date.now(), counter: 0 }),
      });
    }
    const response = await fetch(`${cloud.url}/records/push`, {
      method: 'POST',
      headers: { authorization: `Bearer ${cloud.apiKey}`, 'content-type': 'application/json' },
      body: JSON.stringify({ deviceId: 'direct', replicaId: 'direct', mutations }),
    });
    if (!response.ok) throw new Error(`push answered ${response.status}`);
    await response.arrayBuffer();
  }
  const seconds = (performance.now() - t0) / 1000;
  await cloud.close();
  return n / seconds;
}

async function conflicts(n: number, path: (name: string) => string): Promise<number> {
  const cloud = await startCloudServer({ dbPath: path('cloud') });
  const gateway = new EdgeGateway({
    deviceId: 'bench-conflicts',
    localDb: path('edge'),
    cloudUrl: cloud.url,
    apiKey: cloud.apiKey,
    syncStrategy: 'fixed-interval',
    syncInterval: 3600,
  });
  await gateway.start();
  for (let i = 0; i < n; i++) await gateway.records.put('setpoints', `key-${i}`, { target: i });
  await syncUntilSettled(gateway);
  // While the gateway is "offline" (it syncs only when told), both sides edit every key; the cloud's edit is later.
  for (let i = 0; i < n; i++) await gateway.records.put('setpoints', `key-${i}`, { target: i + 1, by: 'edge' });
  for (let i = 0; i < n; i++) {
    await cloud.server.store.editRecord(
      'setpoints',
      `key-${i}`,
      { op: 'put', value: { target: i + 2, by: 'cloud' } },
      formatHlc({ ms: Date.now() + 1000, counter: i }),
    );
  }
  let resolved = 0;
  gateway.on('conflict', () => resolved++);
  const t0 = performance.now();
  await syncUntilSettled(gateway);
  const seconds = (performance.now() - t0) / 1000;
  await gateway.stop();
  await cloud.close();
  if (resolved !== n) throw new Error(`expected ${n} conflicts, saw ${resolved}`);
  return n / seconds;
}

export async function recordsSection(n: number, path: (name: string) => string): Promise<void> {
  console.log(`## Shared records: ${n.toLocaleString('en-US')} records, loopback reference cloud (SQLite file)\n`);
  const reference = await direct(n, path);
  const pushed = await viaGateway(n, path);
  const resolved = await conflicts(n, path);
  console.log('| what | per second | ratio to the bare client |');
  console.log('|---|---:|---:|');
  console.log(`| mutations posted straight to the server (reference) | ${fmt(reference)} | 1.00 |`);
  console.log(
    `| records synced by the gateway (put → applied in the cloud) | ${fmt(pushed)} | ${(pushed / reference).toFixed(2)} |`,
  );
  console.log(
    `| conflicts resolved (last-write-wins, the cloud wins each) | ${fmt(resolved)} | ${(resolved / reference).toFixed(2)} |`,
  );
  console.log('');
}
