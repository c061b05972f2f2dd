/**
 * `npm run bench`: every figure of docs/benchmarks.md, each beside a ceiling or a reference measured in the same
 * run, because these machines are shared and noisy. Sections (all by default; `--only=wire,backlog` to choose):
 *
 *   throughput  awaited sendData() (many concurrent callers) and sendBatch() against a raw better-sqlite3 insert of
 *               the same rows with the same durability (the ceiling); end to end to a loopback reference cloud
 *   wire        bytes per reading on the wire, compact codec against gzip'd JSON of the same batch
 *   footprint   CPU share of one core and peak RSS of a gateway process at 10, 100 and 1000 readings/s
 *   backlog     ingest and drain cost per reading, RSS and start-up time with 10k, 1M and 10M readings queued
 *   eventloop   event-loop delay and sendData() latency while a backlog drains, batches encoded inline or in a
 *               worker thread (workerThreads), compact and JSON, batches of 1000 and 5000
 *               (`--eventloop-rounds=2 --eventloop-backlog=200000`)
 */
import { spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { cpus, tmpdir } from 'node:os';
import { join } from 'node:path';
import { MessageChannel } from 'node:worker_threads';
import BetterSqlite3 from 'better-sqlite3';
import { gzipSync as fflateGzip } from 'fflate';
import { EdgeGateway } from '../src/index.js';
import { MIGRATIONS } from '../src/storage/migrations.js';
import { encodeBatch } from '../src/sync/batch-codec.js';
import { startCloudServer } from '../src/testing/index.js';

const args = new Map(process.argv.slice(2).map((a) => a.replace(/^--/, '').split('=') as [string, string]));
const ONLY = new Set((args.get('only') ?? 'throughput,wire,footprint,backlog,eventloop').split(','));
const FOOTPRINT_SECONDS = Number(args.get('footprint-seconds') ?? 60);
const BACKLOGS = (args.get('backlogs') ?? '10000,1000000,10000000').split(',').map(Number);
const N = Number(args.get('n') ?? 200_000);
const ROUNDS = Number(args.get('rounds') ?? 3);
const CALLERS = Number(args.get('callers') ?? 1000);
/** `--durability=normal` runs the ingest figures without an fsync per commit: the code's own cost, not the disk's. */
const DURABILITY = (args.get('durability') ?? 'full') as 'full' | 'normal';
const EVENTLOOP_ROUNDS = Number(args.get('eventloop-rounds') ?? 2);
const EVENTLOOP_BACKLOG = Number(args.get('eventloop-backlog') ?? 200_000);

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

/**
 * The ceiling: the same rows inserted with better-sqlite3 directly, 1000 to a transaction, WAL, synchronous=FULL.
 * `perInsert` rows go in each INSERT statement: 1 is the plain way; 32 is what SqliteStorage.append() does.
 */
function ceiling(perInsert: 1 | 32): number {
  const db = new BetterSqlite3(freshPath());
  db.pragma('journal_mode = WAL');
  db.pragma(`synchronous = ${DURABILITY}`);
  db.exec(MIGRATIONS[0] as string);
  const statement = (rowsPer: number) =>
    db.prepare(
      `INSERT INTO outbox (seq, kind, sensor_id, ts, value, unit, tags, payload) VALUES ${Array(rowsPer).fill('(?, ?, ?, ?, ?, ?, ?, ?)').join(', ')}`,
    );
  const many = statement(perInsert);
  const one = statement(1);
  const tags = JSON.stringify({ location: 'warehouse-A' });
  const args: unknown[] = [];
  const write = db.transaction((from: number, to: number) => {
    for (let i = from; i < to; ) {
      const rowsPer = to - i >= perInsert ? perInsert : 1;
      if (rowsPer === 1) {
        const r = reading(i);
        one.run(i + 1, 0, r.sensorId, r.timestamp, r.value, r.unit, tags, null);
        i++;
        continue;
      }
      args.length = 0;
      for (let j = i; j < i + rowsPer; j++) {
        const r = reading(j);
        args.push(j + 1, 0, r.sensorId, r.timestamp, r.value, r.unit, tags, null);
      }
      many.run(args);
      i += rowsPer;
    }
  });
  const t0 = performance.now();
  for (let i = 0; i < N; i += 1000) write(i, Math.min(N, i + 1000));
  const seconds = (performance.now() - t0) / 1000;
  db.close();
  return N / seconds;
}

async function viaSendData(): Promise<number> {
  const gateway = new EdgeGateway({
    deviceId: 'bench',
    localDb: freshPath(),
    maxOfflineQueueSize: 10 * N,
    durability: DURABILITY,
  });
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
  const gateway = new EdgeGateway({
    deviceId: 'bench',
    localDb: freshPath(),
    maxOfflineQueueSize: 10 * N,
    durability: DURABILITY,
  });
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
    durability: DURABILITY,
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
  console.log(
    `## Throughput: ${N.toLocaleString('en-US')} readings, median of ${ROUNDS} rounds, synchronous=${DURABILITY.toUpperCase()}\n`,
  );
  const rows: Record<string, number[]> = {
    ceiling: [],
    ceiling32: [],
    sendData: [],
    sendBatch: [],
    e2e100: [],
    e2e1000: [],
  };
  const paired: number[] = [];
  for (let round = 0; round < ROUNDS; round++) {
    // Interleaved, so that a noisy neighbour weighs on the ceilings and the figures alike.
    const c = ceiling(1);
    const sendData = await viaSendData();
    rows.ceiling?.push(c);
    rows.sendData?.push(sendData);
    paired.push(sendData / c);
    rows.ceiling32?.push(ceiling(32));
    rows.sendBatch?.push(await viaSendBatch());
    rows.e2e100?.push(await endToEnd(100));
    rows.e2e1000?.push(await endToEnd(1000));
  }
  const c = median(rows.ceiling ?? []);
  const c32 = median(rows.ceiling32 ?? []);
  const table = [
    ['raw better-sqlite3 insert, 1000-row transactions, one row per INSERT (ceiling)', c],
    ['raw better-sqlite3 insert, 1000-row transactions, 32 rows per INSERT (as SqliteStorage does)', c32],
    [`awaited sendData(), ${CALLERS} concurrent callers`, median(rows.sendData ?? [])],
    ['awaited sendBatch() of 1000', median(rows.sendBatch ?? [])],
    ['end to end to a loopback cloud, batchSize 100, compact codec', median(rows.e2e100 ?? [])],
    ['end to end to a loopback cloud, batchSize 1000, compact codec', median(rows.e2e1000 ?? [])],
  ] as const;
  console.log('| what | readings/s | ratio to ceiling | ratio to 32 rows per INSERT |');
  console.log('|---|---:|---:|---:|');
  for (const [name, rate] of table) {
    console.log(`| ${name} | ${fmt(rate)} | ${(rate / c).toFixed(2)} | ${(rate / c32).toFixed(2)} |`);
  }
  console.log(
    `\nsendData() over the ceiling of the same round: ${paired.map((r) => r.toFixed(2)).join(', ')} (median ${median(paired).toFixed(2)}).`,
  );
  console.log(
    `Durability is the same everywhere on the gateway's side: WAL, synchronous=${DURABILITY.toUpperCase()}, one commit per transaction (the reference cloud keeps synchronous=FULL).\n`,
  );
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
  encodeCost(header);
}

/** Median µs per call of `work`, after a warm-up. */
function timeUs(work: () => unknown, calls = 200): number {
  for (let i = 0; i < 20; i++) work();
  const times: number[] = [];
  for (let i = 0; i < calls; i++) {
    const t0 = performance.now();
    work();
    times.push((performance.now() - t0) * 1000);
  }
  return median(times);
}

// What encoding costs the event loop, per reading, and what handing the rows to a worker thread costs instead
// (the structured clone postMessage makes, on the sending side): the figures behind workerThreads' rule.
function encodeCost(header: { deviceId: string; replicaId: string }): void {
  console.log('## Encoding cost on the event loop, µs per reading (median of 200 batches), random walks\n');
  console.log(
    '| batch | compact | JSON, no compression | JSON + gzip, node:zlib | JSON + gzip, fflate (before) | copying the rows to a thread |',
  );
  console.log('|---:|---:|---:|---:|---:|---:|');
  const { port1, port2 } = new MessageChannel();
  port2.on('message', () => undefined);
  port2.unref();
  for (const n of [100, 1000, 5000]) {
    const rows = wireRows(n, 'walk');
    const compact = timeUs(() => encodeBatch(header, 1, rows, { level: 6 }, 'compact')) / n;
    const plain = timeUs(() => encodeBatch(header, 1, rows, false, 'json')) / n;
    const zlib = timeUs(() => encodeBatch(header, 1, rows, { level: 6 }, 'json')) / n;
    const fflate = timeUs(() => fflateGzip(encodeBatch(header, 1, rows, false, 'json').body, { level: 6 })) / n;
    const copy = timeUs(() => port1.postMessage(rows)) / n;
    console.log(
      `| ${n} | ${compact.toFixed(2)} | ${plain.toFixed(2)} | ${zlib.toFixed(2)} | ${fflate.toFixed(2)} | ${copy.toFixed(2)} |`,
    );
  }
  port1.close();
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

async function eventLoop(): Promise<void> {
  console.log(
    `## Event loop: draining ${EVENTLOOP_BACKLOG.toLocaleString('en-US')} queued readings while sendData() callers send 1000/s; each trial in a process of its own, ${EVENTLOOP_ROUNDS} rounds (values per round)\n`,
  );
  const trials: Record<string, Record<string, number>[]> = {};
  for (let round = 0; round < EVENTLOOP_ROUNDS; round++) {
    for (const format of ['compact', 'json']) {
      for (const batch of ['1000', '5000']) {
        for (const mode of ['inline', 'workers']) {
          const r = await runChild('eventloop-child.ts', [format, batch, mode, String(EVENTLOOP_BACKLOG)]);
          const key = `${format}|${batch}|${mode}`;
          trials[key] = [...(trials[key] ?? []), r];
        }
      }
    }
  }
  const each = (rs: Record<string, number>[], field: string, digits: number) =>
    rs.map((r) => (r[field] as number).toFixed(digits)).join(' / ');
  console.log(
    '| wire format | batch | encoding | event loop per batch sealed (median), ms | event-loop delay p99, ms | event-loop delay max, ms | sendData() p99, ms | drain, readings/s |',
  );
  console.log('|---|---:|---|---:|---:|---:|---:|---:|');
  for (const [key, rs] of Object.entries(trials)) {
    const [format, batch, mode] = key.split('|');
    console.log(
      `| ${format} | ${batch} | ${mode === 'workers' ? 'worker thread' : 'inline'} | ${each(rs, 'sealMsPerBatch', 1)} | ${each(rs, 'loopP99Ms', 1)} | ${each(rs, 'loopMaxMs', 0)} | ${each(rs, 'sendP99Ms', 1)} | ${rs.map((r) => fmt(r.drainPerSecond as number)).join(' / ')} |`,
    );
  }
  console.log(
    '\nDurability normal (no fsync per commit) in these trials, so that the disk does not drown the CPU; a simulated 5 ms round trip per batch.\n',
  );
}

async function main(): Promise<void> {
  console.log(`edge-gateway bench, node ${process.version}, ${cpus().length} × ${cpus()[0]?.model ?? 'cpu'}\n`);
  if (ONLY.has('throughput')) await throughput();
  if (ONLY.has('wire')) wire();
  if (ONLY.has('footprint')) await footprint();
  if (ONLY.has('backlog')) await backlog();
  if (ONLY.has('eventloop')) await eventLoop();
}

main()
  .catch((error: unknown) => {
    console.error(error);
    process.exitCode = 1;
  })
  .finally(() => rmSync(dir, { recursive: true, force: true }));
