import { statSync } from 'node:fs';
import BetterSqlite3 from 'better-sqlite3-multiple-ciphers';
import { describe, expect, it } from 'vitest';
import {
  type CleanupStrategy,
  type DownsampledAggregate,
  type HistoryPruned,
  isQueueFullError,
  isStorageError,
  type OutboxRemoval,
  SqliteStorage,
  type StorageError,
  tablePruneStep,
} from '../../src/index.js';
import { migrate } from '../../src/storage/migrations.js';
import type {
  AggregateInsert,
  DeadLetterInsert,
  IntakeWork,
  OutboxInsert,
  OutboxKind,
  OutboxRow,
} from '../../src/storage/storage.js';
import { encodeBatch } from '../../src/sync/batch-codec.js';
import { mulberry32 } from '../chaos/lib/chaos-config.js';
import { defer } from '../helpers/cleanup.js';
import { readDb } from '../helpers/gateway.js';
import { tempDbPath } from '../helpers/temp-dir.js';

const MIB = 1024 * 1024;
const T0 = Date.UTC(2026, 0, 1);
const MINUTE = 60_000;

const reading = (value: number, ts: number, sensorId = 's1', tags: string | null = '{"site":"A"}'): OutboxInsert => ({
  kind: 'reading',
  sensorId,
  ts,
  value,
  unit: 'C',
  tags,
  payload: null,
});

/** `n` readings of `sensorId`, one every `stepMs` from `start`, values `from`, `from + 1`, ... */
const series = (n: number, { sensorId = 's1', start = T0, stepMs = 1000, from = 0 } = {}) =>
  Array.from({ length: n }, (_, i) => reading(from + i, start + i * stepMs, sensorId));

const dead = (n: number): DeadLetterInsert[] =>
  Array.from({ length: n }, (_, i) => ({ ...reading(i, T0), seq: null, reason: 'bad', source: 'test' }));

/** An open storage with a retention policy, and what it reported. */
function open(
  options: {
    strategy?: CleanupStrategy;
    maxRows?: number;
    windowMs?: number;
    maxSizeBytes?: number;
    path?: string;
  } = {},
) {
  const path = options.path ?? tempDbPath();
  const storage = new SqliteStorage({ path, maxSizeBytes: options.maxSizeBytes });
  storage.open();
  defer(() => storage.close());
  const removals: OutboxRemoval[] = [];
  const pruned: HistoryPruned[] = [];
  storage.retention.setListener({ removed: (r) => removals.push(r), pruned: (p) => pruned.push(p) });
  storage.retention.setPolicy({
    strategy: options.strategy ?? 'drop-oldest',
    maxRows: options.maxRows ?? 1_000_000,
    windowMs: options.windowMs ?? MINUTE,
  });
  return { path, storage, removals, pruned };
}

const seal = (storage: SqliteStorage, limit: number) =>
  storage.sealNext(limit, (batchNo, rows) =>
    encodeBatch({ deviceId: 'd', replicaId: storage.replicaId }, batchNo, rows, false),
  );

const outbox = (path: string) =>
  readDb(path, (db) =>
    db
      .prepare('SELECT seq, kind, sensor_id AS sensorId, ts, value, unit, tags, payload FROM outbox ORDER BY seq')
      .all(),
  ) as (Omit<OutboxRow, 'kind'> & { kind: number })[];

const seqsOf = (path: string) => outbox(path).map((row) => row.seq);

/** What the gateway's intake stores when processors run: `rows`, one alert per `alerts` timestamp, and more. */
const intakeWork = (
  rows: OutboxInsert[],
  {
    alerts = [],
    aggregates = [],
    maxHistory = 0,
  }: { alerts?: number[]; aggregates?: AggregateInsert[]; maxHistory?: number } = {},
): IntakeWork => ({
  rows,
  deadLetters: [],
  alerts: alerts.map((ts, i) => ({
    source: 'test',
    sensorId: 's1',
    severity: 'critical',
    message: `alert ${i}`,
    ts,
    payload: JSON.stringify({ alert: { severity: 'critical', message: `alert ${i}`, source: 'test' } }),
  })),
  dedupWindowMs: 0,
  maxAlerts: 100,
  aggregates,
  maxAggregates: 100,
  maxHistory,
  state: [],
});

const KIND_ALERT = 2;

const range = (from: number, to: number) => Array.from({ length: to - from + 1 }, (_, i) => from + i);

/** The aggregate of readings, computed the plain way: sums in arrival order, first and last by timestamp. */
function expectedAggregate(rows: readonly OutboxInsert[], windowMs: number) {
  const values = rows.map((r) => r.value as number);
  const sum = values.reduce((a, v) => a + v, 0);
  const mean = sum / values.length;
  const byTs = rows.map((r, i) => ({ r, i })).sort((a, b) => a.r.ts - b.r.ts || a.i - b.i);
  const first = byTs[0]?.r as OutboxInsert;
  const last = byTs[byTs.length - 1]?.r as OutboxInsert;
  return {
    aggregate: {
      source: 'downsample',
      window: windowMs / 1000,
      count: values.length,
      min: Math.min(...values),
      max: Math.max(...values),
      sum,
      mean,
      stddev: Math.sqrt(values.reduce((a, v) => a + (v - mean) ** 2, 0) / (values.length - 1)),
      first: first.value,
      last: last.value,
      firstTs: first.ts,
      lastTs: last.ts,
    },
  };
}

describe('SqliteStorage retention', () => {
  it('makes a new database with auto_vacuum=INCREMENTAL and keeps WAL', () => {
    const { path } = open();
    expect(readDb(path, (db) => db.pragma('auto_vacuum', { simple: true }))).toBe(2);
    expect(readDb(path, (db) => db.pragma('journal_mode', { simple: true }))).toBe('wal');
  });

  describe('drop-oldest at maxRows', () => {
    it('removes exactly the overflow, oldest first, in the append, and reports it once committed', () => {
      const { path, storage, removals } = open({ maxRows: 10 });
      storage.append(series(10));
      expect(removals).toEqual([]);
      storage.append(series(3, { from: 10 }));
      expect(removals).toEqual([
        { reason: 'drop-oldest', budget: 'maxRecords', count: 3, aggregates: 0, firstSeq: 1, lastSeq: 3 },
      ]);
      expect(storage.pendingCount()).toBe(10);
      expect(seqsOf(path)).toEqual(range(4, 13));
    });

    it('never removes rows sealed into a batch, and refuses what only they would make room for', () => {
      const { path, storage, removals } = open({ maxRows: 10 });
      storage.append(series(10));
      expect(seal(storage, 4)).toMatchObject({ firstSeq: 1, lastSeq: 4 });
      storage.append(series(3, { from: 10 }));
      expect(removals).toEqual([expect.objectContaining({ count: 3, firstSeq: 5, lastSeq: 7 })]);
      expect(seqsOf(path)).toEqual([1, 2, 3, 4, ...range(8, 13)]);

      let refusal: unknown;
      try {
        storage.append(series(7, { from: 13 }));
      } catch (error) {
        refusal = error;
      }
      expect(isQueueFullError(refusal)).toBe(true);
      expect(removals).toHaveLength(1);
      expect(seqsOf(path)).toEqual([1, 2, 3, 4, ...range(8, 13)]);
      // Exactly the rows not sealed can go: six more fit.
      storage.append(series(6, { from: 13 }));
      expect(seqsOf(path)).toEqual([1, 2, 3, 4, ...range(14, 19)]);
      expect(storage.pendingCount()).toBe(10);
    });

    it('removes and reports nothing when the append fails', () => {
      const { path, storage, removals } = open({ maxRows: 5 });
      storage.append(series(5));
      const bad = { ...reading(1, T0), kind: 'unknown' as OutboxKind };
      expect(() => storage.append([reading(9, T0), bad])).toThrow(expect.objectContaining({ name: 'StorageError' }));
      expect(removals).toEqual([]);
      expect(seqsOf(path)).toEqual(range(1, 5));
      expect(storage.pendingCount()).toBe(5);
    });

    it('leaves the queue alone under reject-new', () => {
      const { path, storage, removals } = open({ strategy: 'reject-new', maxRows: 5 });
      storage.append(series(8));
      expect(removals).toEqual([]);
      expect(seqsOf(path)).toEqual(range(1, 8));
    });
  });

  describe('queued alerts', () => {
    it('keeps a queued alert when drop-oldest makes room, and refuses what only it would make room for', () => {
      const { path, storage, removals } = open({ maxRows: 10 });
      storage.intake(intakeWork(series(5), { alerts: [T0] }));
      storage.append(series(4, { from: 5 }));
      expect(outbox(path).find((row) => row.kind === KIND_ALERT)?.seq).toBe(6);
      storage.append(series(7, { from: 9 }));
      expect(removals).toEqual([
        { reason: 'drop-oldest', budget: 'maxRecords', count: 7, aggregates: 0, firstSeq: 1, lastSeq: 8 },
      ]);
      expect(seqsOf(path)).toEqual([6, ...range(9, 17)]);
      expect(storage.pendingCount()).toBe(10);

      // Nine readings can go, not the alert: ten new ones do not fit.
      expect(() => storage.append(series(10, { from: 16 }))).toThrow(
        expect.objectContaining({ name: 'QueueFullError' }),
      );
      storage.append(series(9, { from: 16 }));
      expect(seqsOf(path)).toEqual([6, ...range(18, 26)]);
    });

    it("protects the bulk rows up to the bulk lane's highest sealed seq, not up to an alert batch sealed ahead of them", () => {
      const { path, storage, removals } = open({ maxRows: 6 });
      storage.intake(intakeWork(series(5)));
      storage.intake(intakeWork([], { alerts: [T0] }));
      // The alert lane seals first: a batch of seq 6 alone, while readings 1-5 are not sealed.
      expect(seal(storage, 100)).toMatchObject({ firstSeq: 6, lastSeq: 6 });
      storage.append(series(3, { from: 5 }));
      expect(removals).toEqual([expect.objectContaining({ reason: 'drop-oldest', count: 3, firstSeq: 1, lastSeq: 3 })]);
      expect(seqsOf(path)).toEqual([4, 5, 6, 7, 8, 9]);
    });

    it('keeps queued alerts older than maxDays under drop-oldest', () => {
      const { path, storage, removals } = open();
      storage.intake(intakeWork(series(10, { stepMs: MINUTE }), { alerts: [T0] }));
      for (let from: number | undefined = 0; from !== undefined; ) {
        from = storage.retention.expire(T0 + 60 * MINUTE, from, 4);
      }
      expect(removals.reduce((n, r) => n + r.count, 0)).toBe(10);
      expect(outbox(path).map((row) => [row.seq, row.kind])).toEqual([[11, KIND_ALERT]]);
      expect(storage.pendingCount()).toBe(1);
    });

    it("lets the processors' local history (alerts, aggregates, raw history) be pruned past maxDays, not the queued alert", () => {
      const { path, storage, pruned } = open();
      const aggregate: AggregateInsert = {
        source: 'aggregation',
        sensorId: 's1',
        tags: null,
        unit: 'C',
        windowStart: T0,
        windowMs: MINUTE,
        count: 2,
        min: 0,
        max: 1,
        sum: 1,
        mean: 0.5,
        m2: 0.5,
        first: 0,
        firstTs: T0,
        last: 1,
        lastTs: T0 + 1000,
      };
      storage.intake(intakeWork(series(2), { alerts: [T0], aggregates: [aggregate], maxHistory: 100 }));
      // Alerts go by when they were stored (now), aggregates by window start, raw history by reading time (T0).
      expect(storage.retention.pruneHistory(T0 + MINUTE, 100)).toBe(3);
      expect(pruned).toEqual([
        { step: 'aggregates', count: 1, budget: 'maxDays' },
        { step: 'history', count: 2, budget: 'maxDays' },
      ]);
      expect(storage.retention.pruneHistory(Date.now() + MINUTE, 100)).toBe(1);
      expect(pruned[2]).toEqual({ step: 'alerts', count: 1, budget: 'maxDays' });
      expect(outbox(path).filter((row) => row.kind === KIND_ALERT)).toHaveLength(1);
    });
  });

  describe('downsample-oldest at maxRows', () => {
    it('replaces the oldest raw readings by one aggregate per sensor, unit and window, exact against a plain computation', () => {
      const random = mulberry32(0xd0d0);
      const windowMs = MINUTE;
      // Two sensors interleaved, irregular timestamps, noisy values: 400 readings over about 13 minutes.
      const rows: OutboxInsert[] = [];
      let ts = T0 + 17_000;
      for (let i = 0; i < 400; i++) {
        ts += Math.floor(random() * 3000);
        rows.push(reading(Math.round(random() * 1e6) / 1000 - 500, ts, i % 3 === 0 ? 's2' : 's1'));
      }
      const { path, storage, removals } = open({ strategy: 'downsample-oldest', maxRows: 400, windowMs });
      storage.append(rows);
      storage.append([reading(1, ts + 1000)]);

      // The oldest group of two or more readings went: the first window of s1 (the first reading is s2's).
      expect(removals).toHaveLength(1);
      const removal = removals[0] as OutboxRemoval;
      expect(removal).toMatchObject({ reason: 'downsampled', budget: 'maxRecords', aggregates: 1 });
      const stored = outbox(path);
      expect(stored).toHaveLength(401 - removal.count + 1);
      expect(storage.pendingCount()).toBe(stored.length);

      const aggregates = stored.filter((row) => row.kind === 3);
      expect(aggregates).toHaveLength(1);
      const aggregate = aggregates[0] as (typeof stored)[number];
      const window = Math.floor(aggregate.ts / windowMs) * windowMs;
      expect(aggregate.ts).toBe(window);
      const members = rows.filter(
        (row) => row.sensorId === aggregate.sensorId && Math.floor(row.ts / windowMs) * windowMs === window,
      );
      expect(members.length).toBe(removal.count);
      expect(JSON.parse(aggregate.payload as string)).toEqual(expectedAggregate(members, windowMs));
      expect(aggregate).toMatchObject({ value: null, unit: 'C', tags: '{"site":"A"}', seq: removal.firstSeq });
      // Every raw reading of that window is gone, every other one is still there.
      const raw = stored.filter((row) => row.kind === 0).map((row) => row.value);
      expect(raw.length).toBe(401 - members.length);
      for (const member of members) expect(raw).not.toContain(member.value);
    });

    it('downsamples as many groups as the overflow needs, in queue order, and keeps the tags all readings share', () => {
      const windowMs = MINUTE;
      const tagged = (value: number, ts: number, sensorId: string, line: string) =>
        reading(value, ts, sensorId, JSON.stringify({ site: 'A', line }));
      // s1 and s2 every 10 s for 5 minutes: 30 readings each, 6 per window; the `line` tag changes every reading.
      const rows: OutboxInsert[] = [];
      for (let i = 0; i < 30; i++) {
        rows.push(tagged(i, T0 + i * 10_000, 's1', String(i)));
        rows.push(tagged(100 + i, T0 + i * 10_000, 's2', String(i)));
      }
      const { path, storage, removals } = open({ strategy: 'downsample-oldest', maxRows: 60, windowMs });
      storage.append(rows);
      storage.append(series(8, { sensorId: 's3', start: T0 + 600_000 }));
      // 8 over: the first window of s1 (6 readings -> 1) and of s2 (6 -> 1) remove 10.
      expect(removals).toEqual([
        expect.objectContaining({ reason: 'downsampled', count: 12, aggregates: 2, firstSeq: 1, lastSeq: 12 }),
      ]);
      const stored = outbox(path);
      expect(stored).toHaveLength(68 - 10);
      const aggregates = stored.filter((row) => row.kind === 3);
      expect(aggregates.map((a) => [a.seq, a.sensorId, a.ts, a.tags])).toEqual([
        [1, 's1', T0, '{"site":"A"}'],
        [2, 's2', T0, '{"site":"A"}'],
      ]);
      const s1 = rows.filter((row) => row.sensorId === 's1').slice(0, 6);
      expect(JSON.parse(aggregates[0]?.payload as string)).toEqual(expectedAggregate(s1, windowMs));
    });

    it('drops the oldest rows when nothing is left to downsample', () => {
      // One reading per sensor and window: no group of two to replace.
      const rows = Array.from({ length: 10 }, (_, i) => reading(i, T0 + i * MINUTE, `s${i}`));
      const { path, storage, removals } = open({ strategy: 'downsample-oldest', maxRows: 10 });
      storage.append(rows);
      storage.append([reading(99, T0 + 11 * MINUTE, 'x')]);
      expect(removals).toEqual([
        { reason: 'drop-oldest', budget: 'maxRecords', count: 1, aggregates: 0, firstSeq: 1, lastSeq: 1 },
      ]);
      expect(seqsOf(path)).toEqual(range(2, 11));
    });
  });

  describe('.retention.expire()', () => {
    /** A storage holding 100 readings a minute apart, the first 40 before `cutoff`. */
    function aged(strategy: CleanupStrategy) {
      const opened = open({ strategy, windowMs: 10 * MINUTE });
      opened.storage.append(series(100, { stepMs: MINUTE }));
      return { ...opened, cutoff: T0 + 40 * MINUTE };
    }

    /** Runs expire() over the whole queue, `limit` seqs at a time; returns how many calls it took. */
    function expireAll(storage: SqliteStorage, cutoff: number, limit: number): number {
      let calls = 0;
      for (let from: number | undefined = 0; from !== undefined; calls++) {
        from = storage.retention.expire(cutoff, from, limit);
      }
      return calls;
    }

    it('drops queued readings older than the cutoff under drop-oldest, a range of seqs at a time, sealed ones kept', () => {
      const { path, storage, removals, cutoff } = aged('drop-oldest');
      seal(storage, 5);
      expect(expireAll(storage, cutoff, 30)).toBe(4);
      expect(removals).toEqual([
        { reason: 'retention', budget: 'maxDays', count: 30, aggregates: 0, firstSeq: 6, lastSeq: 35 },
        { reason: 'retention', budget: 'maxDays', count: 5, aggregates: 0, firstSeq: 36, lastSeq: 40 },
      ]);
      expect(seqsOf(path)).toEqual([1, 2, 3, 4, 5, ...range(41, 100)]);
      expect(storage.pendingCount()).toBe(65);
    });

    it('downsamples queued raw readings older than the cutoff under downsample-oldest', () => {
      const { path, storage, removals, cutoff } = aged('downsample-oldest');
      expireAll(storage, cutoff, 25);
      // Ten-minute windows: readings 0-9, 10-19, 20-29 and 30-39 become four aggregates, whole although the
      // ranges of 25 seqs cut them.
      expect(removals.reduce((n, r) => n + r.count, 0)).toBe(40);
      expect(removals.reduce((n, r) => n + r.aggregates, 0)).toBe(4);
      const stored = outbox(path);
      expect(stored.filter((row) => row.kind === 3).map((row) => row.seq)).toEqual([1, 11, 21, 31]);
      expect(stored.filter((row) => row.kind === 0).map((row) => row.seq)).toEqual(range(41, 100));
      const windows = stored.filter((row) => row.kind === 3).map((row) => JSON.parse(row.payload as string));
      expect(windows.map((w: DownsampledAggregate) => [w.aggregate.count, w.aggregate.min, w.aggregate.max])).toEqual([
        [10, 0, 9],
        [10, 10, 19],
        [10, 20, 29],
        [10, 30, 39],
      ]);
      expect(storage.pendingCount()).toBe(64);
    });

    it('leaves queued readings alone under reject-new', () => {
      const { path, storage, removals, cutoff } = aged('reject-new');
      expect(storage.retention.expire(cutoff, 0, 1000)).toBeUndefined();
      expect(removals).toEqual([]);
      expect(seqsOf(path)).toHaveLength(100);
    });
  });

  describe('prune steps', () => {
    it('prunes dead letters older than the cutoff, a chunk at a time, and reports each chunk', () => {
      const { path, storage, pruned } = open();
      storage.append([], dead(12));
      const cutoff = Date.now() + 1;
      expect(storage.retention.pruneHistory(cutoff, 5)).toBe(5);
      expect(storage.retention.pruneHistory(cutoff, 5)).toBe(5);
      expect(storage.retention.pruneHistory(cutoff, 5)).toBe(2);
      expect(storage.retention.pruneHistory(cutoff, 5)).toBe(0);
      expect(pruned).toEqual([
        { step: 'dead_letters', count: 5, budget: 'maxDays' },
        { step: 'dead_letters', count: 5, budget: 'maxDays' },
        { step: 'dead_letters', count: 2, budget: 'maxDays' },
      ]);
      expect(readDb(path, (db) => db.prepare('SELECT count(*) FROM dead_letters').pluck().get())).toBe(0);
    });

    it('keeps dead letters younger than the cutoff', () => {
      const { storage, pruned } = open();
      storage.append([], dead(3));
      expect(storage.retention.pruneHistory(Date.now() - 60_000, 100)).toBe(0);
      expect(pruned).toEqual([]);
      expect(storage.deadLetterCount()).toBe(3);
    });

    it('runs steps registered by other features, in order, and forgets a removed one', () => {
      const { path, storage, pruned } = open();
      const db = new BetterSqlite3(path);
      db.exec('CREATE TABLE IF NOT EXISTS samples (id INTEGER PRIMARY KEY, at_s INTEGER NOT NULL)');
      const insert = db.prepare('INSERT INTO samples (at_s) VALUES (?)');
      for (const at of [100, 200, 300, 400]) insert.run(at);
      db.close();
      const builtIn = ['dead_letters', 'record_dead_letters', 'alerts', 'aggregates', 'history'];
      expect(storage.retention.steps).toEqual(builtIn);
      const remove = storage.retention.register(tablePruneStep('samples', 'at_s', { unit: 's' }));
      expect(storage.retention.steps).toEqual([...builtIn, 'samples']);
      expect(storage.retention.pruneHistory(250_000, 100)).toBe(2);
      expect(pruned).toEqual([{ step: 'samples', count: 2, budget: 'maxDays' }]);
      expect(() => storage.retention.register(tablePruneStep('samples', 'at_s'))).toThrow(/registered already/);
      remove();
      expect(storage.retention.pruneHistory(Number.MAX_SAFE_INTEGER, 100)).toBe(0);
      expect(readDb(path, (d) => d.prepare('SELECT at_s FROM samples').pluck().all())).toEqual([300, 400]);
    });

    it('refuses a table or column name that is not a plain identifier', () => {
      expect(() => tablePruneStep('samples; DROP TABLE outbox', 'at')).toThrow(RangeError);
    });
  });

  describe('under a size budget', () => {
    /** Appends batches of `chunk` readings until `total`; returns every refusal. */
    function feed(storage: SqliteStorage, total: number, chunk = 500): unknown[] {
      const refusals: unknown[] = [];
      for (let n = 0; n < total; n += chunk) {
        try {
          storage.append(series(chunk, { from: n, start: T0 + n * 1000 }));
        } catch (error) {
          refusals.push(error);
        }
      }
      return refusals;
    }

    it('drops the oldest readings to make room under drop-oldest, stays within the budget, and counts every one', () => {
      const { path, storage, removals } = open({ maxSizeBytes: MIB });
      expect(feed(storage, 40_000)).toEqual([]);
      const removed = removals.reduce((n, r) => n + r.count, 0);
      expect(removed).toBeGreaterThan(0);
      expect(removals.every((r) => r.reason === 'drop-oldest' && r.budget === 'maxBytes')).toBe(true);
      expect(storage.pendingCount()).toBe(40_000 - removed);
      expect(outbox(path)).toHaveLength(40_000 - removed);
      // What is left is the newest, in one piece.
      expect(seqsOf(path)).toEqual(range(removed + 1, 40_000));
      expect(readDb(path, (db) => db.pragma('page_count', { simple: true }) as number) * 4096).toBeLessThanOrEqual(MIB);
      expect(readDb(path, (db) => db.pragma('integrity_check', { simple: true }))).toBe('ok');
    });

    it('prunes local history before dropping queued readings', () => {
      const { storage } = open({ maxSizeBytes: MIB });
      const order: string[] = [];
      storage.retention.setListener({
        removed: (r) => order.push(`${r.reason}:${r.budget}`),
        pruned: (p) => order.push(`${p.step}:${p.budget}:${p.count}`),
      });
      storage.append([], dead(2000));
      expect(feed(storage, 40_000)).toEqual([]);
      const firstDrop = order.findIndex((item) => item.startsWith('drop-oldest'));
      expect(firstDrop).toBeGreaterThan(0);
      const before = order.slice(0, firstDrop);
      expect(before.every((item) => item.startsWith('dead_letters:maxBytes:'))).toBe(true);
      expect(before.reduce((n, item) => n + Number(item.split(':')[2]), 0)).toBe(2000);
      expect(order.slice(firstDrop).every((item) => item === 'drop-oldest:maxBytes')).toBe(true);
      expect(storage.deadLetterCount()).toBe(0);
    });

    it('still refuses new readings with SQLITE_FULL under reject-new', () => {
      const { storage, removals } = open({ strategy: 'reject-new', maxSizeBytes: MIB });
      const refusals = feed(storage, 40_000);
      expect(refusals.length).toBeGreaterThan(0);
      expect(refusals.every((e) => isStorageError(e) && (e as StorageError).sqliteCode === 'SQLITE_FULL')).toBe(true);
      expect(removals).toEqual([]);
    });

    it('downsamples before dropping under downsample-oldest', () => {
      const { path, storage, removals } = open({ strategy: 'downsample-oldest', maxSizeBytes: MIB });
      expect(feed(storage, 40_000)).toEqual([]);
      expect(removals.length).toBeGreaterThan(0);
      expect(removals[0]).toMatchObject({ reason: 'downsampled', budget: 'maxBytes' });
      const left = removals.reduce((n, r) => n + r.count - r.aggregates, 0);
      expect(storage.pendingCount()).toBe(40_000 - left);
      expect(outbox(path)).toHaveLength(40_000 - left);
    });

    it('brings the file back within a lowered budget, and lets later intake use only its room', () => {
      const { path, storage, removals } = open({ maxSizeBytes: 4 * MIB });
      feed(storage, 40_000);
      expect(removals).toEqual([]);
      storage.setMaxSizeBytes(MIB);
      expect(storage.retention.overBudgetBytes()).toBeGreaterThan(0);
      while (storage.retention.overBudgetBytes() > 0) expect(storage.retention.freeSpace(5000)).toBeGreaterThan(0);
      while (storage.retention.compact(1024, 2048).freedPages > 0);
      expect(readDb(path, (db) => db.pragma('page_count', { simple: true }) as number) * 4096).toBeLessThanOrEqual(MIB);
      expect(feed(storage, 5000)).toEqual([]);
      expect(readDb(path, (db) => db.pragma('page_count', { simple: true }) as number) * 4096).toBeLessThanOrEqual(MIB);
    });
  });

  describe('.retention.compact()', () => {
    const fileBytes = (path: string) => {
      let total = statSync(path).size;
      try {
        total += statSync(`${path}-wal`).size;
      } catch {
        // no WAL
      }
      return total;
    };

    /** Queues `n` readings and acknowledges them all, a batch of 1000 at a time: a drained backlog. */
    function drain(storage: SqliteStorage, n: number): void {
      feedAll(storage, n);
      for (let batch = seal(storage, 1000); batch; batch = seal(storage, 1000)) storage.acknowledge(batch.batchNo);
    }

    const feedAll = (storage: SqliteStorage, n: number) => {
      for (let i = 0; i < n; i += 1000) storage.append(series(1000, { from: i }));
    };

    it('gives the pages of a drained backlog back to the file system, a bounded step at a time', () => {
      const { path, storage } = open();
      drain(storage, 100_000);
      const before = storage.retention.space();
      const bytesBefore = fileBytes(path);
      expect(before.freePages).toBeGreaterThan(0.9 * before.pageCount);
      const steps: number[] = [];
      for (;;) {
        const step = storage.retention.compact(1024, 2048);
        if (step.freedPages === 0) break;
        expect(step.freedPages).toBeLessThanOrEqual(1024);
        steps.push(step.freedPages);
      }
      expect(steps.reduce((a, b) => a + b, 0)).toBe(before.freePages);
      const after = storage.retention.space();
      expect(after.freePages).toBe(0);
      // Pointer-map pages that only mapped free pages go too.
      expect(after.pageCount).toBeLessThanOrEqual(before.pageCount - before.freePages);
      // Measured on the file system: the database and its WAL, after the checkpoint of the last step.
      expect(fileBytes(path)).toBeLessThan(bytesBefore / 10);
      expect(statSync(path).size).toBe(after.pageCount * after.pageSize);
    });

    it('converts a file made with auto_vacuum off by one VACUUM, once its data is small', () => {
      const path = tempDbPath();
      const old = new BetterSqlite3(path);
      old.pragma('journal_mode = WAL');
      migrate(old);
      old.close();
      const { storage } = open({ path });
      expect(storage.retention.space().autoVacuum).toBe('none');
      feedAll(storage, 50_000);
      // Too much data to rewrite in one go: left alone.
      const full = storage.retention.space();
      expect(storage.retention.compact(1024, 100)).toEqual({
        freedPages: 0,
        freePages: full.freePages,
        converted: false,
      });
      for (let batch = seal(storage, 1000); batch; batch = seal(storage, 1000)) storage.acknowledge(batch.batchNo);
      const drained = storage.retention.space();
      const step = storage.retention.compact(1024, 100);
      expect(step.converted).toBe(true);
      const converted = storage.retention.space();
      expect(converted).toMatchObject({ autoVacuum: 'incremental', freePages: 0 });
      // The data's pages, and one pointer-map page that incremental vacuum needs.
      expect(converted.pageCount).toBeLessThanOrEqual(drained.pageCount - drained.freePages + 1);
      expect(step.freedPages).toBe(drained.pageCount - converted.pageCount);
      expect(statSync(path).size).toBeLessThan((drained.pageCount * drained.pageSize) / 10);
      // And it keeps working.
      storage.append(series(10));
      expect(storage.pendingCount()).toBe(10);
    });
  });

  describe('.setBusyTimeout()', () => {
    it('sets how long a write waits for another connection holding the write lock', () => {
      const { path, storage } = open();
      const other = new BetterSqlite3(path);
      defer(() => other.close());
      other.exec('BEGIN IMMEDIATE');
      storage.setBusyTimeout(0);
      expect(() => storage.append(series(1))).toThrow(expect.objectContaining({ sqliteCode: 'SQLITE_BUSY' }));
      storage.setBusyTimeout(300);
      const started = performance.now();
      expect(() => storage.append(series(1))).toThrow(expect.objectContaining({ sqliteCode: 'SQLITE_BUSY' }));
      // A lower bound, not a speed: it waited out the timeout before giving up.
      expect(performance.now() - started).toBeGreaterThanOrEqual(250);
      other.exec('COMMIT');
      storage.append(series(1));
      expect(storage.pendingCount()).toBe(1);
      expect(() => storage.setBusyTimeout(-1)).toThrow(/busyTimeoutMs/);
    });
  });
});
