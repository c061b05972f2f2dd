/**
 * `npm run bench`: every figure of docs/benchmarks.md, each beside a ceiling or a reference measured in the same
 * run, because these machines are shared and noisy. Sections (all by default; `--only=wire,backlog`, or the names
 * alone as in `npm run bench -- peers`, to choose):
 *
 *   throughput  awaited sendData() (many concurrent callers) and sendBatch() against a raw better-sqlite3 insert of
 *               the same rows with the same durability (the ceiling); end to end to a loopback reference cloud
 *   wire        bytes per reading on the wire, compact codec against gzip'd JSON of the same batch
 *   footprint   CPU share of one core and peak RSS of a gateway process at 10, 100 and 1000 readings/s
 *   backlog     ingest and drain cost per reading, RSS and start-up time with 10k, 1M and 10M readings queued
 *   eventloop   event-loop delay and sendData() latency while a backlog drains, batches encoded inline or in a
 *               worker thread (workerThreads), compact and JSON, batches of 1000 and 5000
 *               (`--eventloop-rounds=2 --eventloop-backlog=200000`)
 *   records     shared records synced and conflicts resolved per second, against a bare client of the server
 *   retention   intake at a full queue (drop-oldest, downsample-oldest), cleanup cost per row and its longest
 *               step, giving space back, and what auto_vacuum=INCREMENTAL costs
 *   processing  the cost of the built-in chain (aggregation + deadband + one alert rule) against no processors
 *   peers       the same readings through what a user would otherwise pick (PouchDB replicating to express-pouchdb,
 *               MQTT.js QoS 1 with a LevelDB store to an Aedes broker): durable ingest, end to end, bytes on the
 *               wire and peak RSS, as ratios to edge-gateway
 *   disk        bytes a queued reading takes in the local database, for sizing disks against outages
 *   encryption  durable ingest with at-rest encryption against plaintext; the cost of opening and re-keying
 */
import { spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { createServer as createTcpServer } from 'node:net';
import { cpus, tmpdir } from 'node:os';
import { join } from 'node:path';
import { MessageChannel } from 'node:worker_threads';
import BetterSqlite3 from 'better-sqlite3-multiple-ciphers';
import { gzipSync as fflateGzip } from 'fflate';
import { Deadband, EdgeGateway, type EdgeGatewayOptions, ThresholdAlerts, WindowedAggregation } from '../src/index.js';
import { MIGRATIONS } from '../src/storage/migrations.js';
import { encodeBatch } from '../src/sync/batch-codec.js';
import { startCloudServer } from '../src/testing/index.js';
import { diskSection } from './disk.js';
import { encryptionSection } from './encryption.js';
import { recordsSection } from './records.js';
import { retentionSection } from './retention.js';

const argv = process.argv.slice(2);
const args = new Map(argv.map((a) => a.replace(/^--/, '').split('=') as [string, string]));
const named = argv.filter((a) => !a.startsWith('--'));
const ONLY = new Set(
  (
    args.get('only') ??
    (named.length > 0
      ? named.join(',')
      : 'throughput,wire,footprint,backlog,eventloop,records,processing,disk,peers,encryption,retention')
  ).split(','),
);
const FOOTPRINT_SECONDS = Number(args.get('footprint-seconds') ?? 60);
const BACKLOGS = (args.get('backlogs') ?? '10000,1000000,10000000').split(',').map(Number);
const N = Number(args.get('n') ?? 200_000);
const ROUNDS = Number(args.get('rounds') ?? 3);
const CALLERS = Number(args.get('callers') ?? 1000);
/** `--durability=normal` runs the ingest figures without an fsync per commit: the code's own cost, not the disk's. */
const DURABILITY = (args.get('durability') ?? 'full') as 'full' | 'normal';
const EVENTLOOP_ROUNDS = Number(args.get('eventloop-rounds') ?? 2);
const EVENTLOOP_BACKLOG = Number(args.get('eventloop-backlog') ?? 200_000);
// Under 65,535: MQTT.js keeps at most that many QoS 1 packets in its store (one per 16-bit packet id).
const PEERS_N = Number(args.get('peers-n') ?? 50_000);
const PEERS_BATCH = Number(args.get('peers-batch') ?? 100);

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

let built = false;
/** Builds dist/ once a run, for the sections whose child processes run the package as users do. */
function buildDist(): void {
  if (built) return;
  const build = spawnSync('npx', ['tsup', '--silent'], { stdio: 'inherit' });
  if (build.status !== 0) throw new Error('the build failed');
  built = true;
}

async function footprint(): Promise<void> {
  console.log(
    `## Footprint: a gateway process (built dist/, default options) syncing to a loopback cloud, ${FOOTPRINT_SECONDS} s per rate\n`,
  );
  buildDist();
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
  console.log('## Scale with backlog: each size filled by one process, measured by the next (built dist/)\n');
  buildDist();
  console.log(
    '| queued | start() | ingest, µs/reading | drain (gateway side), µs/reading | RSS after drain | peak RSS |',
  );
  console.log('|---:|---:|---:|---:|---:|---:|');
  const results = [];
  for (const size of BACKLOGS) {
    // Filled by one process, measured by the next: what filling allocated is not counted against the backlog.
    const dir = mkdtempSync(join(tmpdir(), 'edge-gateway-backlog-'));
    const db = join(dir, 'edge.db');
    try {
      await runChild('backlog-child.mjs', [String(size), 'fill', db]);
      const r = await runChild('backlog-child.mjs', [String(size), 'measure', db]);
      results.push(r);
      console.log(
        `| ${size.toLocaleString('en-US')} | ${(r.startMs as number).toFixed(0)} ms | ${(r.ingestUs as number).toFixed(2)} | ${(r.drainUs as number).toFixed(2)} | ${(r.rssMb as number).toFixed(0)} MiB | ${(r.peakRssMb as number).toFixed(0)} MiB |`,
      );
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  }
  const first = results[0];
  const last = results.at(-1);
  if (first && last && results.length > 1) {
    console.log(
      `\nlargest/smallest: ingest ${((last.ingestUs as number) / (first.ingestUs as number)).toFixed(2)}, drain ${((last.drainUs as number) / (first.drainUs as number)).toFixed(2)}, RSS after drain ${((last.rssMb as number) / (first.rssMb as number)).toFixed(2)}, peak RSS ${((last.peakRssMb as number) / (first.peakRssMb as number)).toFixed(2)}\n`,
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

/** The chain the processing section measures: what a plant-floor gateway would typically run. */
const benchChain = (): Partial<EdgeGatewayOptions> => ({
  processors: [
    new Deadband({ absolute: 0.25, heartbeat: 300 }),
    new ThresholdAlerts({ rules: [{ above: 29.5, hysteresis: 1, severity: 'warning' }] }),
    new WindowedAggregation({ window: 60, grace: 5 }),
  ],
});

async function processingRun(
  chain: Partial<EdgeGatewayOptions>,
  mode: 'sendBatch' | 'sendData',
): Promise<{ rate: number; stored: number; alerts: number }> {
  const gateway = new EdgeGateway({ deviceId: 'bench', localDb: freshPath(), maxOfflineQueueSize: 10 * N, ...chain });
  await gateway.start();
  const t0 = performance.now();
  if (mode === 'sendBatch') {
    for (let i = 0; i < N; i += 1000) {
      await gateway.sendBatch(Array.from({ length: Math.min(1000, N - i) }, (_, j) => reading(i + j)));
    }
  } else {
    let next = 0;
    await Promise.all(
      Array.from({ length: CALLERS }, async () => {
        for (let i = next++; i < N; i = next++) await gateway.sendData(reading(i));
      }),
    );
  }
  const seconds = (performance.now() - t0) / 1000;
  const stored = gateway.getStatus().pendingSyncCount;
  const alerts = gateway.alerts({ limit: 100_000 }).length;
  await gateway.stop();
  return { rate: N / seconds, stored, alerts };
}

async function processing(): Promise<void> {
  console.log(
    `## Processing: ${N.toLocaleString('en-US')} readings of 10 sensors, median of ${ROUNDS} rounds, no cloud\n`,
  );
  const modes = ['sendBatch', 'sendData'] as const;
  const runs: Record<string, { rate: number; stored: number; alerts: number }[]> = {};
  for (const mode of modes) {
    runs[`${mode}/none`] = [];
    runs[`${mode}/chain`] = [];
  }
  for (let round = 0; round < ROUNDS; round++) {
    for (const mode of modes) {
      // Interleaved, so that a noisy neighbour weighs on both alike.
      runs[`${mode}/none`]?.push(await processingRun({}, mode));
      runs[`${mode}/chain`]?.push(await processingRun(benchChain(), mode));
    }
  }
  console.log(
    '| intake | no processors | deadband + alert rule + 60 s aggregation | ratio | rows stored (of all) | alerts |',
  );
  console.log('|---|---:|---:|---:|---:|---:|');
  for (const mode of modes) {
    const none = median((runs[`${mode}/none`] ?? []).map((r) => r.rate));
    const chain = runs[`${mode}/chain`] ?? [];
    const rate = median(chain.map((r) => r.rate));
    const label = mode === 'sendBatch' ? 'awaited sendBatch() of 1000' : `awaited sendData(), ${CALLERS} callers`;
    console.log(
      `| ${label} | ${fmt(none)} | ${fmt(rate)} | ${(rate / none).toFixed(2)} | ${chain[0]?.stored.toLocaleString('en-US')} | ${chain[0]?.alerts} |`,
    );
  }
  console.log(
    '\nThe chain runs inside the group commit; its state is written in the same transaction as the readings.\n',
  );
}

/** A server of one `peers` trial, on 127.0.0.1 with a free port. */
interface PeerServer {
  url: string;
  apiKey?: string;
  /** Readings the server holds (edge-gateway, PouchDB) or accepted (the MQTT broker), to check the trial by. */
  received(): Promise<number>;
  close(): Promise<void>;
}

type Peer = 'edge-full' | 'edge-normal' | 'pouchdb' | 'mqtt';
type PeerPhase = 'ingest-one' | 'ingest-batch' | 'e2e';

const listenOnLoopback = (server: { listen(port: number, host: string, done: () => void): unknown }) =>
  new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));

async function edgeCloud(): Promise<PeerServer> {
  const cloud = await startCloudServer();
  return {
    url: cloud.url,
    apiKey: cloud.apiKey,
    received: async () => (await cloud.server.store.stats('peers-bench')).points,
    close: () => cloud.close(),
  };
}

/** express-pouchdb (the core of pouchdb-server) in its minimal mode, over PouchDB on LevelDB in a temp folder. */
async function pouchServer(): Promise<PeerServer> {
  const { default: PouchDB } = await import('pouchdb-node');
  const { default: expressPouchDB } = await import('express-pouchdb');
  const ServerPouch = PouchDB.defaults({ prefix: `${mkdtempSync(join(dir, 'pouchdb-server-'))}/` });
  const server = createServer(expressPouchDB(ServerPouch, { mode: 'minimumForPouchDB' }));
  await listenOnLoopback(server);
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}/telemetry`,
    async received() {
      const db = new ServerPouch('telemetry');
      const { doc_count } = await db.info();
      await db.close();
      return doc_count;
    },
    close: () =>
      new Promise((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}

/** An Aedes broker (in-memory persistence) on a plain TCP listener, counting the PUBLISHes clients sent it. */
async function mqttBroker(): Promise<PeerServer> {
  const { Aedes } = await import('aedes');
  const broker = await Aedes.createBroker();
  let accepted = 0;
  broker.on('publish', (_packet, client) => {
    if (client) accepted++;
  });
  const server = createTcpServer((socket) => broker.handle(socket));
  await listenOnLoopback(server);
  return {
    url: `mqtt://127.0.0.1:${(server.address() as AddressInfo).port}`,
    received: async () => accepted,
    close: () =>
      new Promise((resolve) => {
        broker.close(() => server.close(() => resolve()));
      }),
  };
}

const PEERS: readonly { peer: Peer; label: string; server: () => Promise<PeerServer> }[] = [
  { peer: 'edge-full', label: 'edge-gateway, durability full (default)', server: edgeCloud },
  { peer: 'edge-normal', label: 'edge-gateway, durability normal', server: edgeCloud },
  { peer: 'pouchdb', label: 'PouchDB 9 (LevelDB) → express-pouchdb', server: pouchServer },
  { peer: 'mqtt', label: 'MQTT.js 5 QoS 1 + mqtt-level-store → Aedes', server: mqttBroker },
];

async function peerTrial(
  entry: (typeof PEERS)[number],
  phase: PeerPhase,
): Promise<Record<string, number> & { duplicates: number }> {
  const server = phase === 'e2e' ? await entry.server() : undefined;
  try {
    const target = server ? [server.url, server.apiKey ?? ''] : [];
    const counts = [String(PEERS_N), String(CALLERS), String(PEERS_BATCH)];
    const result = await runChild('peers-child.mjs', [entry.peer, phase, ...counts, ...target]);
    const received = server ? await server.received() : PEERS_N;
    if (received < PEERS_N) throw new Error(`peers: ${entry.peer} ${phase}: the server has ${received} of ${PEERS_N}`);
    return { ...result, duplicates: received - PEERS_N };
  } finally {
    await server?.close();
  }
}

async function peers(): Promise<void> {
  console.log(
    `## Against the peers: ${PEERS_N.toLocaleString('en-US')} readings, ${CALLERS} concurrent writers, sync batches of ${PEERS_BATCH}, median of ${ROUNDS} rounds\n`,
  );
  buildDist();
  const phases: PeerPhase[] = ['ingest-one', 'ingest-batch', 'e2e'];
  const results = new Map<string, Record<string, number>[]>();
  const key = (peer: Peer, phase: PeerPhase) => `${peer} ${phase}`;
  for (let round = 0; round < ROUNDS; round++) {
    // Interleaved, phase by phase, so that a noisy neighbour weighs on every side alike.
    for (const phase of phases) {
      for (const entry of PEERS) {
        if (entry.peer === 'mqtt' && phase === 'ingest-batch') continue;
        const r = await peerTrial(entry, phase);
        if (r.duplicates > 0) console.log(`(${entry.peer}: ${r.duplicates} readings arrived twice)`);
        results.set(key(entry.peer, phase), [...(results.get(key(entry.peer, phase)) ?? []), r]);
      }
    }
  }
  // Each ratio is taken within its round, then the median of the rounds.
  const ratio = (peer: Peer, phase: PeerPhase, field: string) => {
    const mine = results.get(key(peer, phase)) ?? [];
    const edge = results.get(key('edge-full', phase)) ?? [];
    return median(mine.map((r, i) => (r[field] as number) / (edge[i]?.[field] as number)));
  };
  const rate = (peer: Peer, phase: PeerPhase) => {
    const runs = results.get(key(peer, phase));
    if (!runs) return 'n/a';
    return `${fmt(median(runs.map((r) => r.rate as number)))} (${ratio(peer, phase, 'rate').toFixed(3)})`;
  };
  console.log(
    '| device side → server | durable ingest, one a call | durable ingest, batches of 1000 | end to end to acknowledged | wire, bytes/reading up + down | peak RSS, end to end |',
  );
  console.log('|---|---:|---:|---:|---:|---:|');
  for (const { peer, label } of PEERS) {
    const e2e = results.get(key(peer, 'e2e')) ?? [];
    const up = median(e2e.map((r) => (r.bytesUp as number) / PEERS_N));
    const down = median(e2e.map((r) => (r.bytesDown as number) / PEERS_N));
    const rss = median(e2e.map((r) => r.peakRssMb as number));
    console.log(
      `| ${label} | ${rate(peer, 'ingest-one')} | ${rate(peer, 'ingest-batch')} | ${rate(peer, 'e2e')} | ${up.toFixed(1)} + ${down.toFixed(1)} | ${rss.toFixed(0)} MiB (${ratio(peer, 'e2e', 'peakRssMb').toFixed(2)}) |`,
    );
  }
  console.log(
    '\nIn brackets: the ratio to edge-gateway with its default durability, taken within each round. Each trial runs the',
  );
  console.log(
    'device side in a process of its own (plain node; edge-gateway from dist/) against a server in this process.\n',
  );
}

async function main(): Promise<void> {
  console.log(`edge-gateway bench, node ${process.version}, ${cpus().length} × ${cpus()[0]?.model ?? 'cpu'}\n`);
  if (ONLY.has('throughput')) await throughput();
  if (ONLY.has('wire')) wire();
  if (ONLY.has('footprint')) await footprint();
  if (ONLY.has('backlog')) await backlog();
  if (ONLY.has('eventloop')) await eventLoop();
  if (ONLY.has('records')) await recordsSection(Number(args.get('records') ?? 5000), (name) => freshPath() + name);
  if (ONLY.has('retention')) await retentionSection((name) => `${freshPath()}-${name}`, N, ROUNDS);
  if (ONLY.has('processing')) await processing();
  if (ONLY.has('peers')) await peers();
  if (ONLY.has('disk')) await diskSection(Number(args.get('disk') ?? 200_000), (name) => freshPath() + name);
  if (ONLY.has('encryption')) await encryptionSection(N, ROUNDS, CALLERS, (name) => freshPath() + name);
}

main()
  .catch((error: unknown) => {
    console.error(error);
    process.exitCode = 1;
  })
  .finally(() => rmSync(dir, { recursive: true, force: true }));
