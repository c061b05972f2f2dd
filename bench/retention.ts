/**
 * The retention section of `npm run bench`: what the budgets cost.
 * - intake at a full queue (`drop-oldest`, `downsample-oldest` make room in each commit) against intake with room,
 *   same gateway settings, same run;
 * - cleanup cost per row of each step (a chunk of at most 5000 rows per transaction), and the longest step, which
 *   is how long intake can wait for cleanup;
 * - giving space back: incremental vacuum per MiB, and the one-off VACUUM that converts an old file;
 * - what `auto_vacuum=INCREMENTAL` costs plain inserts and drains, against `auto_vacuum=NONE`.
 */
import { statSync } from 'node:fs';
import BetterSqlite3 from 'better-sqlite3-multiple-ciphers';
import { COMPACT_STEP_PAGES, CONVERT_MAX_LIVE_PAGES } from '../src/gateway/retention-manager.js';
import { type CleanupStrategy, EdgeGateway, SqliteStorage } from '../src/index.js';
import { MIGRATIONS, migrate } from '../src/storage/migrations.js';
import type { DeadLetterInsert, OutboxInsert } from '../src/storage/storage.js';
import { encodeBatch } from '../src/sync/batch-codec.js';

const CHUNK = 5000;
const MIB = 1024 * 1024;
const fmt = (n: number) => Math.round(n).toLocaleString('en-US');
const median = (values: number[]) => [...values].sort((a, b) => a - b)[values.length >> 1] as number;

const row = (i: number, ts: number): OutboxInsert => ({
  kind: 'reading',
  sensorId: `sensor-${i % 10}`,
  ts,
  value: 20 + (i % 1000) / 100,
  unit: 'celsius',
  tags: '{"location":"warehouse-A"}',
  payload: null,
});

const point = (i: number) => ({
  sensorId: `sensor-${i % 10}`,
  value: 20 + (i % 1000) / 100,
  unit: 'celsius',
  tags: { location: 'warehouse-A' },
  timestamp: 1_780_000_000_000 + i * 100,
});

/** Readings/s of `sendBatch()` of 1000 for `n` readings, after filling the queue to `queued`. */
async function intakeRate(path: string, strategy: CleanupStrategy, limit: number, queued: number, n: number) {
  const gateway = new EdgeGateway({
    deviceId: 'bench-retention',
    localDb: path,
    maxOfflineQueueSize: limit,
    retention: { cleanupStrategy: strategy, downsampleWindow: 60 },
  });
  await gateway.start();
  await gateway.runCleanup();
  for (let i = 0; i < queued; i += 1000) await gateway.sendBatch(Array.from({ length: 1000 }, (_, k) => point(i + k)));
  const t0 = performance.now();
  for (let i = queued; i < queued + n; i += 1000) {
    await gateway.sendBatch(Array.from({ length: 1000 }, (_, k) => point(i + k)));
  }
  const rate = n / ((performance.now() - t0) / 1000);
  const { dropped } = gateway.getStatus();
  await gateway.stop();
  return { rate, dropped: dropped['drop-oldest'] + dropped.downsampled };
}

/** An open storage holding `n` readings `stepMs` apart, all older than `T0 + n * stepMs`. */
function filled(path: string, n: number, stepMs: number, strategy: CleanupStrategy): SqliteStorage {
  const storage = new SqliteStorage({ path, synchronous: 'normal' });
  storage.open();
  storage.retention.setPolicy({ strategy, maxRows: 10 * n, windowMs: 300_000 });
  for (let i = 0; i < n; i += 1000) {
    storage.append(Array.from({ length: 1000 }, (_, k) => row(i + k, 1_780_000_000_000 + (i + k) * stepMs)));
  }
  return storage;
}

/** Runs `step` until it says it is done; returns µs per row and the longest step in ms. */
function timeSteps(rows: number, step: () => boolean): { usPerRow: number; maxStepMs: number; steps: number } {
  let maxStepMs = 0;
  let steps = 0;
  const t0 = performance.now();
  for (;;) {
    const s0 = performance.now();
    const more = step();
    maxStepMs = Math.max(maxStepMs, performance.now() - s0);
    steps++;
    if (!more) break;
  }
  return { usPerRow: ((performance.now() - t0) * 1000) / rows, maxStepMs, steps };
}

function cleanupCosts(path: (name: string) => string, n: number) {
  const results: [string, ReturnType<typeof timeSteps>][] = [];
  const expireAll = (storage: SqliteStorage) => {
    let from: number | undefined = 0;
    return () => {
      from = storage.retention.expire(Number.MAX_SAFE_INTEGER, from as number, CHUNK);
      return from !== undefined;
    };
  };

  let storage = filled(path('expire-drop'), n, 1000, 'drop-oldest');
  results.push(['`maxDays`, drop-oldest: delete queued readings past it', timeSteps(n, expireAll(storage))]);
  storage.close();

  // Ten sensors, one reading each every 10 s: 30 per sensor and 5-minute window.
  storage = filled(path('expire-downsample'), n, 1000, 'downsample-oldest');
  results.push([
    '`maxDays`, downsample-oldest: replace queued raw readings by aggregates',
    timeSteps(n, expireAll(storage)),
  ]);
  storage.close();

  storage = filled(path('trim'), n, 1000, 'drop-oldest');
  storage.retention.setPolicy({ strategy: 'drop-oldest', maxRows: 0, windowMs: 300_000 });
  results.push([
    '`maxRecords` lowered, drop-oldest: trim the queue',
    timeSteps(n, () => storage.retention.trim(CHUNK) > 0),
  ]);
  storage.close();

  storage = new SqliteStorage({ path: path('prune'), synchronous: 'normal' });
  storage.open();
  for (let i = 0; i < n; i += 1000) {
    const dead: DeadLetterInsert[] = Array.from({ length: 1000 }, (_, k) => ({
      ...row(i + k, 0),
      seq: null,
      reason: 'refused',
      source: 'cloud',
    }));
    storage.append([], dead);
  }
  results.push([
    '`maxDays`: prune dead letters past it',
    timeSteps(n, () => storage.retention.pruneHistory(Number.MAX_SAFE_INTEGER, CHUNK) > 0),
  ]);
  storage.close();
  return results;
}

function compaction(path: (name: string) => string, n: number) {
  const file = path('compact');
  const storage = filled(file, n, 1000, 'reject-new');
  for (;;) {
    const batch = storage.sealNext(1000, (batchNo, rows) =>
      encodeBatch({ deviceId: 'd', replicaId: storage.replicaId }, batchNo, rows, false),
    );
    if (!batch) break;
    storage.acknowledge(batch.batchNo);
  }
  const before = statSync(file).size + statSync(`${file}-wal`).size;
  const { freePages, pageSize } = storage.retention.space();
  const steps = timeSteps(
    freePages,
    () => storage.retention.compact(COMPACT_STEP_PAGES, CONVERT_MAX_LIVE_PAGES).freePages > 0,
  );
  const after = statSync(file).size + statSync(`${file}-wal`).size;
  storage.close();

  // An old file (auto_vacuum off) with the most data a conversion takes on, the rest free: one VACUUM converts it.
  const old = path('convert');
  const db = new BetterSqlite3(old);
  db.pragma('journal_mode = WAL');
  migrate(db);
  db.close();
  const legacy = new SqliteStorage({ path: old, synchronous: 'normal' });
  legacy.open();
  for (let i = 0; i < 4 * n; i += 1000) legacy.append(Array.from({ length: 1000 }, (_, k) => row(i + k, i + k)));
  const filledSpace = legacy.retention.space();
  const rowsPerPage = (4 * n) / (filledSpace.pageCount - filledSpace.freePages);
  const keep = Math.floor(0.95 * CONVERT_MAX_LIVE_PAGES * rowsPerPage);
  const raw = new BetterSqlite3(old);
  raw.prepare('DELETE FROM outbox WHERE seq <= ?').run(4 * n - keep);
  raw.close();
  const live = legacy.retention.space();
  const t0 = performance.now();
  const converted = legacy.retention.compact(COMPACT_STEP_PAGES, CONVERT_MAX_LIVE_PAGES);
  const vacuumMs = performance.now() - t0;
  legacy.close();
  return {
    incremental: { ...steps, msPerMib: (steps.usPerRow * 1000 * MIB) / pageSize / 1e6, before, after },
    vacuum: { ms: vacuumMs, liveMib: ((live.pageCount - live.freePages) * live.pageSize) / MIB, converted },
  };
}

/** Raw inserts (1000-row transactions, synchronous=FULL) and a drain, with auto_vacuum off or incremental. */
function insertAndDrain(path: string, incremental: boolean, n: number) {
  const db = new BetterSqlite3(path);
  if (incremental) db.pragma('auto_vacuum = INCREMENTAL');
  db.pragma('journal_mode = WAL');
  db.pragma('synchronous = FULL');
  db.exec(MIGRATIONS[0] as string);
  const insert = db.prepare(
    'INSERT INTO outbox (seq, kind, sensor_id, ts, value, unit, tags, payload) VALUES (?, ?, ?, ?, ?, ?, ?, ?)',
  );
  const write = db.transaction((from: number) => {
    for (let i = from; i < from + 1000; i++) {
      const r = row(i, i);
      insert.run(i + 1, 0, r.sensorId, r.ts, r.value, r.unit, r.tags, null);
    }
  });
  const t0 = performance.now();
  for (let i = 0; i < n; i += 1000) write(i);
  const insertRate = n / ((performance.now() - t0) / 1000);
  const drain = db.prepare('DELETE FROM outbox WHERE seq BETWEEN ? AND ?');
  const t1 = performance.now();
  for (let i = 0; i < n; i += 500) drain.run(i + 1, i + 500);
  const drainRate = n / ((performance.now() - t1) / 1000);
  db.close();
  return { insertRate, drainRate };
}

export async function retentionSection(path: (name: string) => string, n = 200_000, rounds = 3): Promise<void> {
  console.log('## Retention: what the budgets cost\n');
  console.log(`Intake of ${fmt(n / 2)} more readings (\`sendBatch()\` of 1000) into a queue of ${fmt(n)}:\n`);
  console.log('| queue | readings/s | ratio to intake with room | readings dropped or downsampled |');
  console.log('|---|---:|---:|---:|');
  const room = await intakeRate(path('room'), 'reject-new', 10 * n, n, n / 2);
  const drop = await intakeRate(path('drop'), 'drop-oldest', n, n, n / 2);
  const down = await intakeRate(path('down'), 'downsample-oldest', n, n, n / 2);
  console.log(`| room left (reject-new) | ${fmt(room.rate)} | 1.00 | 0 |`);
  console.log(
    `| full, drop-oldest | ${fmt(drop.rate)} | ${(drop.rate / room.rate).toFixed(2)} | ${fmt(drop.dropped)} |`,
  );
  console.log(
    `| full, downsample-oldest (1-minute windows) | ${fmt(down.rate)} | ${(down.rate / room.rate).toFixed(2)} | ${fmt(down.dropped)} |`,
  );

  console.log(
    `\nCleanup steps over ${fmt(n)} rows, at most ${fmt(CHUNK)} rows per transaction (synchronous=NORMAL):\n`,
  );
  console.log('| step | µs/row | longest step | steps |');
  console.log('|---|---:|---:|---:|');
  for (const [name, r] of cleanupCosts(path, n)) {
    console.log(`| ${name} | ${r.usPerRow.toFixed(2)} | ${r.maxStepMs.toFixed(1)} ms | ${r.steps} |`);
  }

  const { incremental, vacuum } = compaction(path, n);
  console.log('\nGiving space back after a drain of the same queue:\n');
  console.log('| what | cost | longest step | file before | file after |');
  console.log('|---|---:|---:|---:|---:|');
  console.log(
    `| incremental vacuum, ${COMPACT_STEP_PAGES} pages a step | ${incremental.msPerMib.toFixed(2)} ms/MiB | ${incremental.maxStepMs.toFixed(1)} ms | ${(incremental.before / MIB).toFixed(1)} MiB | ${(incremental.after / MIB).toFixed(2)} MiB |`,
  );
  console.log(
    `| one-off VACUUM converting an old file (${vacuum.liveMib.toFixed(1)} MiB of data) | ${vacuum.ms.toFixed(0)} ms | ${vacuum.ms.toFixed(0)} ms | | |`,
  );

  const none: { insertRate: number; drainRate: number }[] = [];
  const incr: { insertRate: number; drainRate: number }[] = [];
  for (let r = 0; r < rounds; r++) {
    none.push(insertAndDrain(path(`none-${r}`), false, n));
    incr.push(insertAndDrain(path(`incr-${r}`), true, n));
  }
  const ins = (rs: typeof none) => median(rs.map((r) => r.insertRate));
  const drn = (rs: typeof none) => median(rs.map((r) => r.drainRate));
  console.log(`\n\`auto_vacuum\`, raw better-sqlite3, ${fmt(n)} rows, medians of ${rounds}:\n`);
  console.log('| auto_vacuum | insert rows/s (1000-row transactions, FULL) | drain rows/s (500-row range deletes) |');
  console.log('|---|---:|---:|');
  console.log(`| NONE | ${fmt(ins(none))} | ${fmt(drn(none))} |`);
  console.log(
    `| INCREMENTAL | ${fmt(ins(incr))} (${(ins(incr) / ins(none)).toFixed(2)}) | ${fmt(drn(incr))} (${(drn(incr) / drn(none)).toFixed(2)}) |`,
  );
  console.log('');
}
