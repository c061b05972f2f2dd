import { statSync } from 'node:fs';
import BetterSqlite3 from 'better-sqlite3-multiple-ciphers';
import { describe, expect, it } from 'vitest';
import {
  type ConfigError,
  type DataPointInput,
  type DroppedEvent,
  EdgeGateway,
  isConfigError,
  isQueueFullError,
  isStorageError,
  type PrunedEvent,
  type StorageError,
  ThresholdAlerts,
} from '../../src/index.js';
import { SqliteStorage } from '../../src/storage/sqlite-storage.js';
import { encodeBatch } from '../../src/sync/batch-codec.js';
import { startCloudServer, type ThrowawayCloud } from '../../src/testing/index.js';
import { mulberry32 } from '../chaos/lib/chaos-config.js';
import { startCloudGate } from '../chaos/lib/cloud-gate.js';
import { defer } from '../helpers/cleanup.js';
import { createGateway, outboxCount, readDb } from '../helpers/gateway.js';
import { batchRequests, sendJson, startTestServer } from '../helpers/http.js';
import { tempDbPath } from '../helpers/temp-dir.js';
import { waitFor } from '../helpers/wait-for.js';

const MIB = 1024 * 1024;
const DAY = 86_400_000;
const T0 = Date.UTC(2026, 0, 1);

/** The ConfigError `build` throws; fails the test when it throws nothing. */
function configError(build: () => unknown): ConfigError {
  try {
    build();
  } catch (error) {
    expect(isConfigError(error), String(error)).toBe(true);
    return error as ConfigError;
  }
  throw new Error('expected a ConfigError');
}

/** Readings of one sensor with values `from`, `from + 1`, ..., `stepMs` apart from `start`. */
const readingsOf = (n: number, { sensorId = 's1', from = 0, start = T0, stepMs = 1000 } = {}): DataPointInput[] =>
  Array.from({ length: n }, (_, i) => ({
    sensorId,
    value: from + i,
    unit: 'C',
    tags: { site: 'A' },
    timestamp: start + i * stepMs,
  }));

/** Collects a gateway's dropped and pruned events. */
function watch(gateway: EdgeGateway) {
  const dropped: DroppedEvent[] = [];
  const pruned: PrunedEvent[] = [];
  gateway.on('dropped', (event) => dropped.push(event));
  gateway.on('pruned', (event) => pruned.push(event));
  const total = (reason: DroppedEvent['reason']) =>
    dropped.filter((e) => e.reason === reason).reduce((n, e) => n + e.count, 0);
  return { dropped, pruned, total };
}

/** Values of the readings in the outbox of the database at `path`, in queue order (kind 0 only). */
const queuedValues = (path: string) =>
  readDb(path, (db) => db.prepare('SELECT value FROM outbox WHERE kind = 0 ORDER BY seq').pluck().all()) as number[];

async function startCloud(): Promise<ThrowawayCloud> {
  const cloud = await startCloudServer();
  defer(() => cloud.close());
  return cloud;
}

/** Points the gateway at `cloud` and waits until the queue is empty. */
async function drainTo(gateway: EdgeGateway, cloud: ThrowawayCloud): Promise<void> {
  gateway.configure({ cloudUrl: cloud.url, apiKey: cloud.apiKey });
  await waitFor(() => gateway.getStatus().pendingSyncCount === 0, 20_000, 'the queue drains to the cloud');
}

const range = (from: number, to: number) => Array.from({ length: to - from + 1 }, (_, i) => from + i);

describe('EdgeGateway retention', () => {
  describe('options', () => {
    it('applies the documented defaults', () => {
      const gateway = new EdgeGateway({ deviceId: 'd' });
      expect(gateway.retention).toEqual({
        maxDays: undefined,
        maxRecords: 1_000_000,
        maxBytes: undefined,
        cleanupStrategy: 'reject-new',
        cleanupInterval: 3600,
        downsampleWindow: 300,
      });
      expect(gateway.options.dbTimeout).toBe(5);
    });

    it('throws ConfigError naming a bad retention option and its value', () => {
      const days = configError(() => new EdgeGateway({ deviceId: 'd', retention: { maxDays: -1 } }));
      expect(days.issues).toEqual([expect.stringMatching(/"retention\.maxDays" option.*\(got -1\)/)]);
      const strategy = configError(
        () => new EdgeGateway({ deviceId: 'd', retention: { cleanupStrategy: 'sometimes' as never } }),
      );
      expect(strategy.issues[0]).toMatch(/"retention\.cleanupStrategy".*"sometimes"/);
      const misspelled = configError(() => new EdgeGateway({ deviceId: 'd', retention: { maxday: 3 } as never }));
      expect(misspelled.issues).toEqual(['Misspelled option "retention.maxday"; did you mean "retention.maxDays"?']);
      expect(configError(() => new EdgeGateway({ deviceId: 'd', dbTimeout: -1 })).issues[0]).toMatch(/"dbTimeout"/);
    });

    it('refuses two values for one setting under its two names', () => {
      const error = configError(
        () => new EdgeGateway({ deviceId: 'd', maxOfflineQueueSize: 10, retention: { maxRecords: 20 } }),
      );
      expect(error.issues).toEqual([
        'The "retention.maxRecords" option (20) and the "maxOfflineQueueSize" option (10) are the same setting: give one',
      ]);
      expect(
        new EdgeGateway({ deviceId: 'd', maxOfflineQueueSize: 10, retention: { maxRecords: 10 } }).retention,
      ).toMatchObject({ maxRecords: 10 });
    });

    it('maps maxRecords and maxBytes onto maxOfflineQueueSize and maxDatabaseSize, and merges the rest', () => {
      const gateway = createGateway({ retention: { maxDays: 7 } });
      gateway.configureRetention({ maxRecords: 50, maxBytes: 2 * MIB, cleanupStrategy: 'oldest-first' });
      expect(gateway.options).toMatchObject({ maxOfflineQueueSize: 50, maxDatabaseSize: 2 * MIB });
      expect(gateway.retention).toMatchObject({
        maxDays: 7,
        maxRecords: 50,
        maxBytes: 2 * MIB,
        cleanupStrategy: 'drop-oldest',
      });
      // A later change under the other name wins, and leaves the rest as it was.
      gateway.configure({ maxOfflineQueueSize: 70 });
      gateway.configure({ retention: { cleanupInterval: 60 } });
      expect(gateway.retention).toMatchObject({ maxDays: 7, maxRecords: 70, cleanupStrategy: 'drop-oldest' });
      expect(gateway.retention.cleanupInterval).toBe(60);
    });

    it('keeps the retention in force when configureRetention() is given a bad value, naming it', () => {
      const gateway = createGateway({ retention: { maxDays: 3 } });
      const error = configError(() => gateway.configureRetention({ cleanupInterval: 0 }));
      expect(error.issues[0]).toMatch(/"retention\.cleanupInterval"/);
      expect(configError(() => gateway.configureRetention({ maxRecords: -5 })).issues).toEqual([
        expect.stringMatching(/^Expected the "retention\.maxRecords" option to be valid: .*\(got -5\)$/),
      ]);
      expect(configError(() => gateway.configureRetention({ maxBytes: 1000 })).issues[0]).toMatch(
        /"retention\.maxBytes".*\(got 1000\)/,
      );
      expect(gateway.retention).toMatchObject({ maxDays: 3, cleanupInterval: 3600, maxRecords: 1_000_000 });
    });

    it('refuses drop-oldest for a storage that cannot remove rows', () => {
      const storage = { open() {}, append: () => 1, sealNext: () => undefined } as never;
      const error = configError(
        () => new EdgeGateway({ deviceId: 'd', storage, retention: { cleanupStrategy: 'drop-oldest' } }),
      );
      expect(error.issues[0]).toMatch(/"retention\.cleanupStrategy".*needs a storage with retention/);
    });
  });

  describe('reject-new (the default)', () => {
    it('refuses past maxRecords and counts the refusals in status', async () => {
      const gateway = createGateway({ maxOfflineQueueSize: 10 });
      await gateway.start();
      const { total } = watch(gateway);
      expect(await gateway.sendBatch(readingsOf(10))).toBe(10);
      await expect(gateway.sendBatch(readingsOf(3, { from: 10 }))).rejects.toSatisfy(isQueueFullError);
      await expect(gateway.sendData(readingsOf(1, { from: 13 })[0] as DataPointInput)).rejects.toSatisfy(
        isQueueFullError,
      );
      expect(total('queue-full')).toBe(4);
      expect(gateway.getStatus().dropped).toEqual({
        'queue-full': 4,
        'rejected-by-cloud': 0,
        'processor-failed': 0,
        'drop-oldest': 0,
        retention: 0,
        downsampled: 0,
      });
      expect(gateway.getStatus().pendingSyncCount).toBe(10);
    });
  });

  describe('drop-oldest', () => {
    it('drops exactly the oldest overflow at maxRecords, and the cloud gets exactly the rest', async () => {
      const path = tempDbPath();
      const gateway = createGateway({
        localDb: path,
        maxOfflineQueueSize: 100,
        retention: { cleanupStrategy: 'drop-oldest' },
      });
      await gateway.start();
      const { dropped, total } = watch(gateway);
      expect(await gateway.sendBatch(readingsOf(100))).toBe(100);
      expect(dropped).toEqual([]);

      // Five sendData() calls in one tick (one commit) and a batch of 20: 25 over.
      const singles = readingsOf(5, { from: 100, start: T0 + 100_000 });
      expect(await Promise.all(singles.map((point) => gateway.sendData(point)))).toEqual([
        true,
        true,
        true,
        true,
        true,
      ]);
      expect(await gateway.sendBatch(readingsOf(20, { from: 105, start: T0 + 105_000 }))).toBe(20);
      expect(dropped).toEqual([
        {
          reason: 'drop-oldest',
          budget: 'maxRecords',
          count: 5,
          aggregates: 0,
          firstSeq: 1,
          lastSeq: 5,
          message: 'dropped the 5 oldest queued reading(s) (seq 1-5) to stay within maxRecords 100',
        },
        expect.objectContaining({ reason: 'drop-oldest', count: 20, firstSeq: 6, lastSeq: 25 }),
      ]);
      expect(gateway.getStatus()).toMatchObject({
        pendingSyncCount: 100,
        dropped: expect.objectContaining({ 'drop-oldest': 25, 'queue-full': 0 }),
      });
      expect(queuedValues(path)).toEqual(range(25, 124));

      // More than the queue can ever hold is refused whole, as under reject-new.
      await expect(gateway.sendBatch(readingsOf(101, { from: 1000 }))).rejects.toSatisfy(isQueueFullError);
      expect(total('queue-full')).toBe(101);
      expect(queuedValues(path)).toEqual(range(25, 124));

      const cloud = await startCloud();
      await drainTo(gateway, cloud);
      const points = await cloud.points(gateway.options.deviceId);
      expect(points.map((p) => p.value).sort((a, b) => (a ?? 0) - (b ?? 0))).toEqual(range(25, 124));
      // Accepted = delivered + dropped, to the reading.
      expect(points.length + total('drop-oldest')).toBe(125);
    });

    it('never drops readings sealed into a batch in flight', async () => {
      // A cloud that answers 503: the first batch stays sealed, resent byte for byte.
      const failing = await startTestServer((_request, response) => sendJson(response, 503, { error: 'unavailable' }));
      const path = tempDbPath();
      const gateway = createGateway({
        localDb: path,
        cloudUrl: failing.url,
        apiKey: 'k',
        batchSize: 10,
        syncStrategy: 'on-change',
        maxOfflineQueueSize: 50,
        retention: { cleanupStrategy: 'drop-oldest' },
      });
      await gateway.start();
      const { dropped, total } = watch(gateway);
      await gateway.sendBatch(readingsOf(50));
      await waitFor(() => batchRequests(failing).length > 0, 5000, 'the first batch is sent');

      await gateway.sendBatch(readingsOf(20, { from: 50, start: T0 + 50_000 }));
      expect(dropped).toEqual([
        expect.objectContaining({ reason: 'drop-oldest', count: 20, firstSeq: 11, lastSeq: 30 }),
      ]);
      expect(queuedValues(path)).toEqual([...range(0, 9), ...range(30, 69)]);
      // 10 sealed + 41 > 50: even dropping all 40 unsealed would not make room.
      await expect(gateway.sendBatch(readingsOf(41, { from: 70 }))).rejects.toSatisfy(isQueueFullError);
      expect(await gateway.sendBatch(readingsOf(40, { from: 70, start: T0 + 70_000 }))).toBe(40);
      expect(queuedValues(path)).toEqual([...range(0, 9), ...range(70, 109)]);

      const cloud = await startCloud();
      await drainTo(gateway, cloud);
      const values = (await cloud.points(gateway.options.deviceId)).map((p) => p.value as number);
      expect(values.sort((a, b) => a - b)).toEqual([...range(0, 9), ...range(70, 109)]);
      expect(values.length + total('drop-oldest') + total('queue-full')).toBe(50 + 20 + 41 + 40);
    });

    it('counts the readings a processor chain holds when rows sealed meanwhile leave no room at the commit', async () => {
      // The storage is ours, so that a batch can be sealed between sendBatch()'s room check and its commit, as the
      // sync loop may: the readings, all held by the built-in for the commit, are refused there, and counted.
      const storage = new SqliteStorage({ path: tempDbPath() });
      const gateway = new EdgeGateway({
        deviceId: 'held-at-commit',
        storage,
        maxOfflineQueueSize: 50,
        retention: { cleanupStrategy: 'drop-oldest' },
        processors: [new ThresholdAlerts({ rules: [{ sensors: ['s1'], above: 1e9, severity: 'info' }] })],
      });
      defer(() => gateway.stop());
      await gateway.start();
      const { dropped } = watch(gateway);
      expect(await gateway.sendBatch(readingsOf(50))).toBe(50);

      const late = gateway.sendBatch(readingsOf(10, { from: 50, start: T0 + 50_000 }));
      const sealed = storage.sealNext(50, (batchNo, rows) =>
        encodeBatch({ deviceId: 'held-at-commit', replicaId: storage.replicaId }, batchNo, rows, { level: 6 }),
      );
      expect(sealed?.count).toBe(50);
      await expect(late).rejects.toSatisfy(isQueueFullError);
      expect(dropped).toEqual([expect.objectContaining({ reason: 'queue-full', count: 10 })]);
      expect(gateway.getStatus().dropped).toMatchObject({ 'queue-full': 10 });
      expect(gateway.getStatus().pendingSyncCount).toBe(50);
    });

    it('stays within maxDatabaseSize by dropping the oldest, never refusing, every drop counted', async () => {
      const path = tempDbPath();
      const gateway = createGateway({
        localDb: path,
        maxDatabaseSize: MIB,
        retention: { cleanupStrategy: 'drop-oldest' },
      });
      await gateway.start();
      const { dropped, total } = watch(gateway);
      let accepted = 0;
      for (let i = 0; i < 40; i++) accepted += await gateway.sendBatch(readingsOf(1000, { from: i * 1000 }));
      expect(accepted).toBe(40_000);
      expect(dropped.length).toBeGreaterThan(0);
      expect(dropped.every((e) => e.reason === 'drop-oldest' && e.budget === 'maxBytes')).toBe(true);
      expect(gateway.getStatus().pendingSyncCount + total('drop-oldest')).toBe(40_000);
      expect(outboxCount(path)).toBe(gateway.getStatus().pendingSyncCount);
      expect(gateway.healthCheck().status).not.toBe('unhealthy');
      expect(readDb(path, (db) => db.pragma('page_count', { simple: true }) as number) * 4096).toBeLessThanOrEqual(MIB);
    });

    it('makes room at a full queue when processors run (the intake path), and never drops a queued alert', async () => {
      const path = tempDbPath();
      const gateway = createGateway({
        localDb: path,
        maxOfflineQueueSize: 100,
        retention: { cleanupStrategy: 'drop-oldest' },
        processors: [
          new ThresholdAlerts({ rules: [{ sensors: ['s1'], above: 1000, severity: 'critical', notifyClear: false }] }),
        ],
      });
      await gateway.start();
      const { dropped, total } = watch(gateway);
      const alerts: unknown[] = [];
      gateway.on('alert', (alert) => alerts.push(alert));
      expect(await gateway.sendBatch(readingsOf(100))).toBe(100);

      // 19 readings and one past the threshold: 20 readings and the alert's own row, 21 over.
      const hot = { sensorId: 's1', value: 5000, unit: 'C', tags: { site: 'A' }, timestamp: T0 + 119_000 };
      expect(await gateway.sendBatch([...readingsOf(19, { from: 100, start: T0 + 100_000 }), hot])).toBe(20);
      expect(alerts).toHaveLength(1);
      expect(dropped).toEqual([
        expect.objectContaining({ reason: 'drop-oldest', count: 21, firstSeq: 1, lastSeq: 21 }),
      ]);
      expect(gateway.getStatus().pendingSyncCount).toBe(100);
      expect(queuedValues(path)).toEqual([...range(21, 118), 5000]);

      // Then past the alert's seq (121): readings on either side of it go, the alert stays queued.
      expect(await gateway.sendBatch(readingsOf(90, { from: 200, start: T0 + 200_000 }))).toBe(90);
      expect(await gateway.sendBatch(readingsOf(20, { from: 300, start: T0 + 300_000 }))).toBe(20);
      expect(dropped.at(-1)).toMatchObject({ reason: 'drop-oldest', count: 20, firstSeq: 112, lastSeq: 132 });
      expect(total('drop-oldest')).toBe(131);
      expect(gateway.getStatus().pendingSyncCount).toBe(100);
      expect(readDb(path, (db) => db.prepare('SELECT seq FROM outbox WHERE kind = 2').pluck().all())).toEqual([121]);
      expect(queuedValues(path)).toEqual([...range(211, 289), ...range(300, 319)]);
      // 99 readings can go, not the alert: 100 new ones are refused whole.
      await expect(gateway.sendBatch(readingsOf(100, { from: 400 }))).rejects.toSatisfy(isQueueFullError);

      const cloud = await startCloud();
      await drainTo(gateway, cloud);
      const points = await cloud.points(gateway.options.deviceId);
      expect(points.filter((p) => p.data !== undefined)).toEqual([
        expect.objectContaining({ data: { alert: expect.objectContaining({ severity: 'critical' }) } }),
      ]);
      // Accepted = delivered + dropped, to the reading.
      expect(points.filter((p) => p.value !== undefined).length + total('drop-oldest')).toBe(230);
    });

    it('brings the queue down to a lowered maxRecords at the next cleanup', async () => {
      const path = tempDbPath();
      const gateway = createGateway({ localDb: path, retention: { cleanupStrategy: 'drop-oldest' } });
      await gateway.start();
      const { total } = watch(gateway);
      await gateway.sendBatch(readingsOf(1000));
      gateway.configureRetention({ maxRecords: 300 });
      const report = await gateway.runCleanup();
      expect(report.removed['drop-oldest']).toBe(700);
      expect(total('drop-oldest')).toBe(700);
      expect(queuedValues(path)).toEqual(range(700, 999));
    });
  });

  describe('downsample-oldest', () => {
    it('replaces the oldest windows by aggregates the cloud receives, exact against the readings sent', async () => {
      const random = mulberry32(0xa66);
      const window = 60;
      // Two sensors, a reading each every 5 s: 12 per sensor and window, values with three decimals.
      const sent: DataPointInput[] = [];
      for (let i = 0; i < 315; i++) {
        for (const sensorId of ['s1', 's2']) {
          sent.push({
            sensorId,
            value: Math.round(random() * 100_000) / 1000,
            unit: 'C',
            tags: { site: 'A', n: String(i) },
            timestamp: T0 + i * 5000,
          });
        }
      }
      const path = tempDbPath();
      const gateway = createGateway({
        localDb: path,
        maxOfflineQueueSize: 600,
        retention: { cleanupStrategy: 'downsample-oldest', downsampleWindow: window },
      });
      await gateway.start();
      const { dropped } = watch(gateway);
      expect(await gateway.sendBatch(sent.slice(0, 600))).toBe(600);
      expect(await gateway.sendBatch(sent.slice(600))).toBe(30);
      // 30 over: s1's first window, s2's first, s1's second (12 readings -> 1 each) remove 33.
      expect(dropped).toEqual([
        expect.objectContaining({ reason: 'downsampled', budget: 'maxRecords', count: 36, aggregates: 3 }),
      ]);
      expect(dropped[0]?.message).toMatch(/replaced 36 queued raw reading\(s\) .* by 3 aggregate\(s\) of 60 s windows/);
      expect(gateway.getStatus()).toMatchObject({
        pendingSyncCount: 630 - 33,
        dropped: expect.objectContaining({ downsampled: 36 }),
        retention: expect.objectContaining({ aggregates: 3, cleanupStrategy: 'downsample-oldest' }),
      });

      const cloud = await startCloud();
      await drainTo(gateway, cloud);
      const points = await cloud.points(gateway.options.deviceId);
      const aggregates = points.filter((p) => p.data !== undefined);
      expect(points.length).toBe(630 - 33);
      expect(aggregates).toHaveLength(3);
      const windowOf = (p: DataPointInput) => Math.floor(Number(p.timestamp) / (window * 1000)) * window * 1000;
      for (const point of aggregates) {
        const start = Date.parse(point.timestamp);
        const members = sent.filter((p) => p.sensorId === point.sensorId && windowOf(p) === start);
        expect(members).toHaveLength(12);
        const values = members.map((p) => p.value);
        const sum = values.reduce((a, v) => a + v, 0);
        const mean = sum / values.length;
        expect(point).toMatchObject({ unit: 'C', tags: { site: 'A' } });
        expect(point.value).toBeUndefined();
        expect(point.data).toEqual({
          aggregate: {
            source: 'downsample',
            window,
            count: 12,
            min: Math.min(...values),
            max: Math.max(...values),
            sum,
            mean,
            stddev: Math.sqrt(values.reduce((a, v) => a + (v - mean) ** 2, 0) / 11),
            first: values[0],
            last: values[11],
            firstTs: Number(members[0]?.timestamp),
            lastTs: Number(members[11]?.timestamp),
          },
        });
      }
      expect(aggregates.map((p) => [p.sensorId, Date.parse(p.timestamp) - T0])).toEqual([
        ['s1', 0],
        ['s2', 0],
        ['s1', 60_000],
      ]);
      // Every raw reading is in the cloud unless an aggregate holds it.
      const raw = points.filter((p) => p.data === undefined);
      expect(raw.length + aggregates.length * 12).toBe(630);
    });
  });

  describe('maxDays', () => {
    /** A processor that refuses negative values: they go to the dead letters, with the time of refusal. */
    const refuseNegative = {
      process(point: { value: number }) {
        if (point.value < 0) throw new Error('negative');
        return point;
      },
    };

    it('drops queued readings older than maxDays under drop-oldest, and prunes dead letters past it', async () => {
      const now = Date.now();
      let clock = now;
      const path = tempDbPath();
      const gateway = createGateway({
        localDb: path,
        clock: () => clock,
        processor: refuseNegative,
        retention: { maxDays: 7, cleanupStrategy: 'drop-oldest' },
      });
      await gateway.start();
      await gateway.runCleanup();
      const { dropped, pruned, total } = watch(gateway);
      await gateway.sendBatch(readingsOf(30, { start: now - 10 * DAY }));
      await gateway.sendBatch(readingsOf(20, { from: 30, start: now - 3 * DAY }));
      await gateway.sendBatch(readingsOf(4, { from: -4 }));
      expect(gateway.getStatus().deadLetterCount).toBe(4);

      const first = await gateway.runCleanup();
      expect(first.removed).toEqual({ retention: 30, 'drop-oldest': 0, downsampled: 0 });
      expect(first.pruned).toEqual({});
      const expired = dropped.filter((e) => e.reason !== 'processor-failed');
      expect(expired).toEqual([
        expect.objectContaining({ reason: 'retention', budget: 'maxDays', count: 30, firstSeq: 1, lastSeq: 30 }),
      ]);
      expect(expired[0]?.message).toBe('dropped 30 queued reading(s) (seq 1-30) older than maxDays 7');
      expect(queuedValues(path)).toEqual(range(30, 49));
      expect(gateway.getStatus().deadLetterCount).toBe(4);

      // Eight days on: the dead letters and the readings of three days ago are past it too.
      clock = now + 8 * DAY;
      const second = await gateway.runCleanup();
      expect(second).toMatchObject({ pruned: { dead_letters: 4 }, removed: { retention: 20 } });
      expect(pruned).toEqual([{ step: 'dead_letters', count: 4, budget: 'maxDays' }]);
      expect(gateway.getStatus()).toMatchObject({
        deadLetterCount: 0,
        pendingSyncCount: 0,
        retention: expect.objectContaining({ pruned: { dead_letters: 4 } }),
      });
      expect(total('retention')).toBe(50);
      expect(gateway.getStatus().retention.lastCleanupAt?.getTime()).toBe(clock);
    });

    it('keeps queued readings under reject-new and prunes only local history', async () => {
      const now = Date.now();
      let clock = now;
      const path = tempDbPath();
      const gateway = createGateway({
        localDb: path,
        clock: () => clock,
        processor: refuseNegative,
        retention: { maxDays: 1 },
      });
      await gateway.start();
      await gateway.runCleanup();
      const { dropped, pruned } = watch(gateway);
      await gateway.sendBatch(readingsOf(10, { start: now - 30 * DAY }));
      await gateway.sendBatch(readingsOf(2, { from: -2 }));
      clock = now + 2 * DAY;
      await gateway.runCleanup();
      expect(dropped.map((e) => e.reason)).toEqual(['processor-failed']);
      expect(pruned).toEqual([{ step: 'dead_letters', count: 2, budget: 'maxDays' }]);
      expect(queuedValues(path)).toEqual(range(0, 9));
    });

    it('downsamples queued raw readings older than maxDays under downsample-oldest', async () => {
      const now = Date.now();
      const old = Math.floor((now - 10 * DAY) / 3_600_000) * 3_600_000;
      const path = tempDbPath();
      const gateway = createGateway({
        localDb: path,
        retention: { maxDays: 7, cleanupStrategy: 'downsample-oldest', downsampleWindow: 600 },
      });
      await gateway.start();
      await gateway.runCleanup();
      const { total } = watch(gateway);
      await gateway.sendBatch(readingsOf(60, { start: old, stepMs: 60_000 }));
      await gateway.sendBatch(readingsOf(10, { from: 60, start: now - DAY }));
      const report = await gateway.runCleanup();
      // An hour of readings a minute apart, in 10-minute windows: six aggregates of ten.
      expect(report.removed.downsampled).toBe(60);
      expect(report.aggregates).toBe(6);
      expect(total('downsampled')).toBe(60);
      expect(queuedValues(path)).toEqual(range(60, 69));
      expect(gateway.getStatus().pendingSyncCount).toBe(16);
    });
  });

  it('cleans up by itself every cleanupInterval, and soon after configureRetention()', async () => {
    const now = Date.now();
    const gateway = createGateway({ retention: { maxDays: 1, cleanupStrategy: 'drop-oldest', cleanupInterval: 0.2 } });
    await gateway.start();
    const { total } = watch(gateway);
    await gateway.sendBatch(readingsOf(5, { start: now - 2 * DAY }));
    await waitFor(() => total('retention') === 5, 5000, 'a scheduled pass drops the old readings');
    const passes = gateway.getStatus().retention.cleanups;
    await waitFor(() => gateway.getStatus().retention.cleanups >= passes + 2, 5000, 'more passes follow');

    // Older than half a day, younger than one: kept until maxDays comes down.
    await gateway.sendBatch(readingsOf(3, { start: now - 0.75 * DAY }));
    gateway.configureRetention({ cleanupInterval: 3600, maxDays: 0.5 });
    await waitFor(() => total('retention') === 8, 5000, 'the pass after configureRetention() applies the new maxDays');
  });

  it('cleans up while ingest continues: no accepted reading is lost, and the counts add up', async () => {
    const now = Date.now();
    const path = tempDbPath();
    const gateway = createGateway({
      localDb: path,
      retention: { maxDays: 1, cleanupStrategy: 'drop-oldest', cleanupInterval: 3600 },
    });
    await gateway.start();
    await gateway.runCleanup();
    const { total } = watch(gateway);
    const fresh: number[] = [];
    let old = 0;
    let cleaning = 0;
    let committedWhileCleaning = 0;
    const cleanups: Promise<unknown>[] = [];
    for (let round = 0; round < 120; round++) {
      // Half of each batch is two days old, half is new, interleaved.
      const batch: DataPointInput[] = [];
      for (let i = 0; i < 200; i++) {
        const value = round * 200 + i;
        const isOld = i % 2 === 0;
        batch.push({ sensorId: 's', value, timestamp: isOld ? now - 2 * DAY + value : now + value });
      }
      const wasCleaning = cleaning > 0;
      await gateway.sendBatch(batch);
      if (wasCleaning && cleaning > 0) committedWhileCleaning++;
      for (const point of batch) {
        if (Number(point.timestamp) < now - DAY) old++;
        else fresh.push(point.value);
      }
      if (round % 15 === 0) {
        cleaning++;
        cleanups.push(gateway.runCleanup().finally(() => cleaning--));
      }
    }
    await Promise.all(cleanups);
    await gateway.runCleanup();
    // Cleanup and intake took turns: commits landed while a pass was in progress.
    expect(committedWhileCleaning).toBeGreaterThan(0);
    expect(queuedValues(path)).toEqual(fresh);
    expect(total('retention')).toBe(old);
    expect(gateway.getStatus().pendingSyncCount + total('retention')).toBe(120 * 200);
  });

  it('gives disk space back once the queue has drained', async () => {
    const cloud = await startCloud();
    const gate = await startCloudGate(cloud.url, false);
    const path = tempDbPath();
    const gateway = createGateway({ localDb: path, cloudUrl: gate.url, apiKey: cloud.apiKey, batchSize: 1000 });
    await gateway.start();
    for (let i = 0; i < 60; i++) await gateway.sendBatch(readingsOf(1000, { from: i * 1000 }));
    const size = () => statSync(path).size + (statSync(`${path}-wal`, { throwIfNoEntry: false })?.size ?? 0);
    const full = size();
    expect(full).toBeGreaterThan(3 * MIB);

    gate.open = true;
    await waitFor(() => gateway.getStatus().pendingSyncCount === 0, 30_000, 'the backlog drains');
    // After the drain, by itself (no cleanup called): the pages go back to the file system.
    await waitFor(() => gateway.getStatus().retention.reclaimedBytes > 0, 10_000, 'space is given back');
    await gateway.stop();
    expect(size()).toBeLessThan(full / 10);
    expect(readDb(path, (db) => db.pragma('freelist_count', { simple: true }))).toBe(0);
    expect((await cloud.points(gateway.options.deviceId)).length).toBe(60_000);
  });

  it('applies configure({ dbTimeout }) at run time', async () => {
    const path = tempDbPath();
    const gateway = createGateway({ localDb: path, dbTimeout: 0 });
    await gateway.start();
    const other = new BetterSqlite3(path);
    defer(() => other.close());
    other.exec('BEGIN IMMEDIATE');
    const refused = await gateway.sendData({ sensorId: 's', value: 1 }).catch((error: unknown) => error);
    expect(isStorageError(refused) && (refused as StorageError).sqliteCode).toBe('SQLITE_BUSY');
    gateway.configure({ dbTimeout: 0.3 });
    const started = performance.now();
    await expect(gateway.sendData({ sensorId: 's', value: 2 })).rejects.toMatchObject({ sqliteCode: 'SQLITE_BUSY' });
    // A lower bound, not a speed: it waited out the new timeout.
    expect(performance.now() - started).toBeGreaterThanOrEqual(250);
    other.exec('COMMIT');
    expect(await gateway.sendData({ sensorId: 's', value: 3 })).toBe(true);
  });
});
