/**
 * `npm run bench`: every figure of docs/benchmarks.md, each beside a ceiling or a reference measured in the same
 * run, because these machines are shared and noisy. Sections (all by default; `--only=wire,backlog` to choose):
 *
 *   throughput  awaited sendData() (many concurrent callers) and sendBatch() against a raw better-sqlite3 insert of
 *               the same rows with the same durability (the ceiling); end to end to a loopback reference cloud
 *   wire        bytes per reading on the wire, compact codec against gzip'd JSON of the same batch
 *   footprint   CPU share of one core and peak RSS of a gateway process at 10, 100 and 1000 readings/s
 *   backlog     ingest and drain cost per reading, RSS and start-up time with 10k, 1M and 10M readings queued
 *   records     shared records synced and conflicts resolved per second, against a bare client of the server
 *   retention   intake at a full queue (drop-oldest, downsample-oldest), cleanup cost per row and its longest
 *               step, giving space back, and what auto_vacuum=INCREMENTAL costs
 */
import { spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { cpus, tmpdir } from 'node:os';
import { join } from 'node:path';
import BetterSqlite3 from 'better-sqlite3';
import { EdgeGateway } from '../src/index.js';
import { MIGRATIONS } from '../src/storage/migrations.js';
import { encodeBatch } from '../src/sync/batch-codec.js';
import { startCloudServer } from '../src/testing/index.js';
import { recordsSection } from './records.js';
import { retentionSection } from './retention.js';

const args = new Map(process.argv.slice(2).map((a) => a.replace(/^--/, '').split('=') as [string, string]));
const ONLY = new Set((args.get('only') ?? 'throughput,wire,footprint,backlog,records,retention').split(','));
const FOOTPRINT_SECONDS = Number(args.get('footprint-seconds') ?? 60);
const BACKLOGS = (args.get('backlogs') ?? '10000,1000000,10000000').split(',').map(Number);
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

async function throughput(): Promise<void> {
  console.log(`## Throughput: ${N.toLocaleString('en-US')} readings, median of ${ROUNDS} rounds\n`);
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
    ['raw better-sqlite3 insert, 1000-row transactions (ceiling)', c],
    [`awaited sendData(), ${CALLERS} concurrent callers`, median(rows.sendData ?? [])],
    ['awaited sendBatch() of 1000', median(rows.sendBatch ?? [])],
    ['end to end to a loopback cloud, batchSize 100, compact codec', median(rows.e2e100 ?? [])],
    ['end to end to a loopback cloud, batchSize 1000, compact codec', median(rows.e2e1000 ?? [])],
  ] as const;
  console.log('| what | readings/s | ratio to ceiling |');
  console.log('|---|---:|---:|');
  for (const [name, rate] of table) console.log(`| ${name} | ${fmt(rate)} | ${(rate / c).toFixed(2)} |`);
  console.log('\nDurability is the same everywhere: WAL, synchronous=FULL, one commit per transaction.\n');
}

function wireRows(n: number, kind: 'walk' | 'noisy') {
  let seed = 12345;
  const random = () => {
    seed = (seed * 1103515245 + 12345) % 2 ** 31;
    return seed / 2 ** 31;
  };
  const level = Array.from({ length: 10 }, (_, i) => 20 + i);
  return Array.from({ length: n }, (_, i) => {
    const s = i % 10;
    level[s] =
      kind === 'walk' ? Math.round(((level[s] as number) + (random() - 0.5) * 0.1) * 100) / 100 : random() * 1000;
    return {
      seq: 1 + i,
      kind: 'reading' as const,
      sensorId: `sensor-${s}`,
      ts: 1_795_000_000_000 + Math.floor(i / 10) * 1000,
      value: level[s] as number,
      unit: 'celsius',
      tags: '{"location":"warehouse-A"}',
      payload: null,
    };
  });
}

function wire(): void {
  console.log('## Wire size: bytes per reading, 10 series\n');
  console.log('| data | batch | compact codec | JSON + gzip (level 6) | ratio |');
  console.log('|---|---:|---:|---:|---:|');
  const header = { deviceId: 'device-001', replicaId: '6f1c0a52-8a7e-4c4e-9a54-2b1f0f7d1c33' };
  for (const kind of ['walk', 'noisy'] as const) {
    for (const n of [100, 1000]) {
      const rows = wireRows(n, kind);
      const compact = encodeBatch(header, 1, rows, { level: 6 }, 'compact').body.length / n;
      const json = encodeBatch(header, 1, rows, { level: 6 }, 'json').body.length / n;
      const label = kind === 'walk' ? 'random walks, 0.01 resolution' : 'noisy float64';
      console.log(`| ${label} | ${n} | ${compact.toFixed(2)} | ${json.toFixed(2)} | ${(compact / json).toFixed(2)} |`);
    }
  }
  console.log('');
}

function runChild(script: string, childArgs: string[]): Promise<Record<string, number>> {
  return new Promise((resolve, reject) => {
    const loader = script.endsWith('.mjs') ? [] : ['--import', 'tsx'];
    const child = spawn(process.execPath, [...loader, join(import.meta.dirname, script), ...childArgs], {
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    let out = '';
    child.stdout.on('data', (chunk) => {
      out += chunk;
    });
    child.on('exit', (code) => {
      if (code !== 0) reject(new Error(`${script} ${childArgs.join(' ')} exited ${code}`));
      else resolve(JSON.parse(out.trim().split('\n').at(-1) as string) as Record<string, number>);
    });
  });
}

async function footprint(): Promise<void> {
  console.log(
    `## Footprint: a gateway process (built dist/, default options) syncing to a loopback cloud, ${FOOTPRINT_SECONDS} s per rate\n`,
  );
  const build = spawnSync('npx', ['tsup', '--silent'], { stdio: 'inherit' });
  if (build.status !== 0) throw new Error('the build failed');
  const cloud = await startCloudServer();
  const idle = await runChild('footprint-child.mjs', ['0', '5', cloud.url, cloud.apiKey]);
  console.log(
    "| readings/s | CPU, share of one core | peak RSS | seed's table: CPU | seed's table: RAM | left unsent |",
  );
  console.log('|---:|---:|---:|---:|---:|---:|');
  console.log(
    `| idle (0) | ${((idle.cpuShare as number) * 100).toFixed(1)}% | ${(idle.peakRssMb as number).toFixed(0)} MiB | | | |`,
  );
  const seed: Record<number, [string, string]> = {
    10: ['0.2 cores', '50 MB'],
    100: ['0.5 cores', '100 MB'],
    1000: ['1.5 cores', '250 MB'],
  };
  for (const rate of [10, 100, 1000]) {
    const r = await runChild('footprint-child.mjs', [String(rate), String(FOOTPRINT_SECONDS), cloud.url, cloud.apiKey]);
    const [cpu, ram] = seed[rate] as [string, string];
    console.log(
      `| ${rate} | ${((r.cpuShare as number) * 100).toFixed(1)}% | ${(r.peakRssMb as number).toFixed(0)} MiB | ${cpu} | ${ram} | ${r.pending} |`,
    );
  }
  await cloud.close();
  console.log('');
}

async function backlog(): Promise<void> {
  console.log('## Scale with backlog: each size in a process of its own\n');
  console.log('| queued | start() | ingest, µs/reading | drain (gateway side), µs/reading | RSS after drain |');
  console.log('|---:|---:|---:|---:|---:|');
  const results = [];
  for (const size of BACKLOGS) {
    const r = await runChild('backlog-child.ts', [String(size)]);
    results.push(r);
    console.log(
      `| ${size.toLocaleString('en-US')} | ${(r.startMs as number).toFixed(0)} ms | ${(r.ingestUs as number).toFixed(2)} | ${(r.drainUs as number).toFixed(2)} | ${(r.rssMb as number).toFixed(0)} MiB |`,
    );
  }
  const first = results[0];
  const last = results.at(-1);
  if (first && last && results.length > 1) {
    console.log(
      `\nlargest/smallest: ingest ${((last.ingestUs as number) / (first.ingestUs as number)).toFixed(2)}, drain ${((last.drainUs as number) / (first.drainUs as number)).toFixed(2)}, RSS ${((last.rssMb as number) / (first.rssMb as number)).toFixed(2)}\n`,
    );
  }
}

async function main(): Promise<void> {
  console.log(`edge-gateway bench, node ${process.version}, ${cpus().length} × ${cpus()[0]?.model ?? 'cpu'}\n`);
  if (ONLY.has('throughput')) await throughput();
  if (ONLY.has('wire')) wire();
  if (ONLY.has('footprint')) await footprint();
  if (ONLY.has('backlog')) await backlog();
  if (ONLY.has('records')) await recordsSection(Number(args.get('records') ?? 5000), (name) => freshPath() + name);
  if (ONLY.has('retention')) await retentionSection((name) => `${freshPath()}-${name}`, N, ROUNDS);
}

main()
  .catch((error: unknown) => {
    console.error(error);
    process.exitCode = 1;
  })
  .finally(() => rmSync(dir, { recursive: true, force: true }));
