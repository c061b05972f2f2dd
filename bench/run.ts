/**
 * `npm run bench`: throughput of the spine, each figure beside a ceiling measured in the same run, because these
 * machines are shared and noisy. Figures are medians of several rounds; ratios are what to compare across runs.
 *
 *   ceiling   raw better-sqlite3: the same rows into the same table, WAL, synchronous=FULL, 1000-row transactions
 *   sendData  awaited sendData() from many concurrent callers (validation, group commit, same durability)
 *   sendBatch awaited sendBatch() of 1000 readings
 *   e2e       sendBatch() to acknowledged by a reference cloud server on 127.0.0.1, gzip on
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import BetterSqlite3 from 'better-sqlite3';
import { EdgeGateway } from '../src/index.js';
import { MIGRATIONS } from '../src/storage/migrations.js';
import { startCloudServer } from '../src/testing/index.js';

const args = new Map(process.argv.slice(2).map((a) => a.replace(/^--/, '').split('=') as [string, string]));
const N = Number(args.get('n') ?? 200_000);
const ROUNDS = Number(args.get('rounds') ?? 3);
const CALLERS = Number(args.get('callers') ?? 1000);

const dir = mkdtempSync(join(tmpdir(), 'edge-gateway-bench-'));
let fileNo = 0;
const freshPath = () => join(dir, `db-${fileNo++}.db`);

const reading = (i: number) => ({
  sensorId: `sensor-${i % 10}`,
  value: 20 + (i % 1000) / 100,
  unit: 'celsius',
  tags: { location: 'warehouse-A' },
  timestamp: 1_780_000_000_000 + i,
});

function ceiling(): number {
  const db = new BetterSqlite3(freshPath());
  db.pragma('journal_mode = WAL');
  db.pragma('synchronous = FULL');
  db.exec(MIGRATIONS[0] as string);
  const insert = db.prepare(
    'INSERT INTO outbox (seq, kind, sensor_id, ts, value, unit, tags, payload) VALUES (?, ?, ?, ?, ?, ?, ?, ?)',
  );
  const tags = JSON.stringify({ location: 'warehouse-A' });
  const write = db.transaction((from: number, to: number) => {
    for (let i = from; i < to; i++) {
      const r = reading(i);
      insert.run(i + 1, 0, r.sensorId, r.timestamp, r.value, r.unit, tags, null);
    }
  });
  const t0 = performance.now();
  for (let i = 0; i < N; i += 1000) write(i, Math.min(N, i + 1000));
  const seconds = (performance.now() - t0) / 1000;
  db.close();
  return N / seconds;
}

async function viaSendData(): Promise<number> {
  const gateway = new EdgeGateway({ deviceId: 'bench', localDb: freshPath(), maxOfflineQueueSize: 10 * N });
  await gateway.start();
  let next = 0;
  const t0 = performance.now();
  await Promise.all(
    Array.from({ length: CALLERS }, async () => {
      for (let i = next++; i < N; i = next++) await gateway.sendData(reading(i));
    }),
  );
  const seconds = (performance.now() - t0) / 1000;
  await gateway.stop();
  return N / seconds;
}

async function viaSendBatch(): Promise<number> {
  const gateway = new EdgeGateway({ deviceId: 'bench', localDb: freshPath(), maxOfflineQueueSize: 10 * N });
  await gateway.start();
  const batch = Array.from({ length: 1000 }, (_, i) => reading(i));
  const t0 = performance.now();
  for (let i = 0; i < N; i += 1000) await gateway.sendBatch(batch);
  const seconds = (performance.now() - t0) / 1000;
  await gateway.stop();
  return N / seconds;
}

async function endToEnd(batchSize: number): Promise<number> {
  const cloud = await startCloudServer();
  const gateway = new EdgeGateway({
    deviceId: 'bench',
    cloudUrl: cloud.url,
    apiKey: cloud.apiKey,
    localDb: freshPath(),
    batchSize,
    syncStrategy: 'on-change',
    maxOfflineQueueSize: 10 * N,
  });
  await gateway.start();
  const total = Math.min(N, 100_000);
  const t0 = performance.now();
  for (let i = 0; i < total; i += 1000) {
    await gateway.sendBatch(Array.from({ length: 1000 }, (_, j) => reading(i + j)));
  }
  while (gateway.getStatus().pendingSyncCount > 0) await gateway.forceSync();
  const seconds = (performance.now() - t0) / 1000;
  const stats = await cloud.server.store.stats('bench');
  await gateway.stop();
  await cloud.close();
  if (stats.points !== total) throw new Error(`end to end: the cloud holds ${stats.points} of ${total} readings`);
  return total / seconds;
}

const median = (values: number[]) => {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.floor(sorted.length / 2)] as number;
};
const fmt = (n: number) => `${Math.round(n).toLocaleString('en-US')}/s`;

async function main(): Promise<void> {
  console.log(`edge-gateway bench: ${N.toLocaleString('en-US')} readings, ${ROUNDS} rounds, node ${process.version}\n`);
  const rows: Record<string, number[]> = { ceiling: [], sendData: [], sendBatch: [], e2e100: [], e2e1000: [] };
  for (let round = 0; round < ROUNDS; round++) {
    // Interleaved, so that a noisy neighbour weighs on the ceiling and the figures alike.
    rows.ceiling?.push(ceiling());
    rows.sendData?.push(await viaSendData());
    rows.sendBatch?.push(await viaSendBatch());
    rows.e2e100?.push(await endToEnd(100));
    rows.e2e1000?.push(await endToEnd(1000));
  }
  const c = median(rows.ceiling ?? []);
  const table = [
    ['raw better-sqlite3 insert (ceiling)', c],
    [`awaited sendData(), ${CALLERS} concurrent callers`, median(rows.sendData ?? [])],
    ['awaited sendBatch() of 1000', median(rows.sendBatch ?? [])],
    ['end to end, batchSize 100, gzip', median(rows.e2e100 ?? [])],
    ['end to end, batchSize 1000, gzip', median(rows.e2e1000 ?? [])],
  ] as const;
  console.log('| what | readings/s | ratio to ceiling |');
  console.log('|---|---:|---:|');
  for (const [name, rate] of table) console.log(`| ${name} | ${fmt(rate)} | ${(rate / c).toFixed(2)} |`);
  console.log('\nDurability is the same everywhere: WAL, synchronous=FULL, a commit per transaction.');
}

main()
  .catch((error: unknown) => {
    console.error(error);
    process.exitCode = 1;
  })
  .finally(() => rmSync(dir, { recursive: true, force: true }));
