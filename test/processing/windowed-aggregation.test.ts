import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import {
  type AggregatePayload,
  EdgeGateway,
  type EdgeGatewayOptions,
  isConfigError,
  WindowedAggregation,
} from '../../src/index.js';
import { startCloudServer } from '../../src/testing/index.js';
import { defer } from '../helpers/cleanup.js';
import { FAST, readDb } from '../helpers/gateway.js';
import { tempDbPath } from '../helpers/temp-dir.js';

const BASE = 1_750_000_000_000;

interface Reading {
  sensorId: string;
  value: number;
  ts: number;
  tags?: Record<string, string>;
}

interface Expected {
  sensorId: string;
  tags: string | null;
  windowStart: number;
  count: number;
  min: number;
  max: number;
  sum: number;
  mean: number;
  stddev: number | null;
  first: number;
  last: number;
}

/** The series' tags under `groupBy: ['line']`. */
const canonicalTags = (tags: Record<string, string> | undefined) =>
  tags?.line === undefined ? null : JSON.stringify({ line: tags.line });

/**
 * The rule, computed the plain way: per series, a reading is late when its window ended `grace` or more before
 * the latest time seen before it; every other reading counts in its window. Stats by direct formulas, two-pass
 * standard deviation.
 */
function reference(readings: readonly Reading[], windowMs: number, graceMs: number) {
  const horizon = new Map<string, number>();
  const windows = new Map<string, { sensorId: string; tags: string | null; start: number; members: Reading[] }>();
  const late: Reading[] = [];
  for (const r of readings) {
    const tags = canonicalTags(r.tags);
    const series = `${r.sensorId}|${tags}`;
    const start = Math.floor(r.ts / windowMs) * windowMs;
    const h = horizon.get(series);
    if (h !== undefined && start < Math.floor((h - graceMs) / windowMs) * windowMs) {
      late.push(r);
      continue;
    }
    horizon.set(series, Math.max(h ?? r.ts, r.ts));
    const key = `${series}|${start}`;
    const w = windows.get(key) ?? { sensorId: r.sensorId, tags, start, members: [] };
    w.members.push(r);
    windows.set(key, w);
  }
  const expected: Expected[] = [...windows.values()].map(({ sensorId, tags, start, members }) => {
    const values = members.map((m) => m.value);
    let sum = 0;
    for (const v of values) sum += v;
    const mean = sum / values.length;
    const ss = values.reduce((acc, v) => acc + (v - mean) ** 2, 0);
    const minTs = Math.min(...members.map((m) => m.ts));
    const maxTs = Math.max(...members.map((m) => m.ts));
    return {
      sensorId,
      tags,
      windowStart: start,
      count: values.length,
      min: Math.min(...values),
      max: Math.max(...values),
      sum,
      mean,
      stddev: values.length < 2 ? null : Math.sqrt(ss / (values.length - 1)),
      first: (members.find((m) => m.ts === minTs) as Reading).value,
      last: (members.findLast((m) => m.ts === maxTs) as Reading).value,
    };
  });
  return { expected, late };
}

const close = (actual: number | null, wanted: number | null, scale: number) => {
  if (wanted === null || actual === null) return actual === wanted;
  return Math.abs(actual - wanted) <= 1e-9 * Math.max(1, scale);
};

interface StoredAggregate extends Omit<Expected, 'stddev'> {
  m2: number;
}

const storedAggregates = (path: string) =>
  readDb(
    path,
    (db) =>
      db
        .prepare(
          `SELECT sensor_id AS sensorId, tags, window_start AS windowStart, count, min, max, sum, mean, m2, first, last
           FROM aggregates ORDER BY id`,
        )
        .all() as StoredAggregate[],
  );

const sortKey = (a: { sensorId: string; tags: string | null; windowStart: number }) =>
  `${a.sensorId}|${a.tags}|${String(a.windowStart).padStart(16, '0')}`;

/** Readings in arrival order: mostly forward in time, some out of order, some far behind. */
const streamArb = fc
  .array(
    fc.record({
      sensor: fc.constantFrom('a', 'b'),
      line: fc.constantFrom(undefined, '1', '2'),
      step: fc.integer({ min: 0, max: 4000 }),
      back: fc.oneof(
        { weight: 6, arbitrary: fc.constant(0) },
        { weight: 3, arbitrary: fc.integer({ min: 0, max: 8000 }) },
        { weight: 1, arbitrary: fc.integer({ min: 0, max: 60_000 }) },
      ),
      value: fc.oneof(
        fc.integer({ min: -1000, max: 1000 }),
        fc.double({ min: -1e6, max: 1e6, noNaN: true, noDefaultInfinity: true }),
      ),
    }),
    { minLength: 1, maxLength: 120 },
  )
  .map((items) => {
    let clock = BASE;
    return items.map(({ sensor, line, step, back, value }) => {
      clock += step;
      // + 0 turns -0 into 0: SQLite and JSON keep no sign on zero.
      const reading: Reading = { sensorId: sensor, value: value + 0, ts: clock - back };
      if (line !== undefined) reading.tags = { line, unused: 'x' };
      return reading;
    });
  });

describe('WindowedAggregation', () => {
  it('matches a reference computation on random streams, late and out-of-order readings, and a restart mid-window', async () => {
    await fc.assert(
      fc.asyncProperty(
        streamArb,
        fc.constantFrom(1, 5, 10),
        fc.constantFrom(0, 2, 5),
        fc.nat(),
        fc.array(fc.integer({ min: 1, max: 25 }), { minLength: 1, maxLength: 10 }),
        async (readings, windowSeconds, graceSeconds, restartSeed, chunkSizes) => {
          const path = tempDbPath();
          let now = 0; // the clock closes nothing until the end
          const options = (): EdgeGatewayOptions => ({
            deviceId: 'agg',
            localDb: path,
            ...FAST,
            processors: [
              new WindowedAggregation({
                window: windowSeconds,
                grace: graceSeconds,
                forwardRaw: false,
                groupBy: ['line'],
                clock: () => now,
              }),
            ],
          });
          const restartAt = restartSeed % (readings.length + 1);
          let gateway = new EdgeGateway(options());
          await gateway.start();
          let sent = 0;
          let chunk = 0;
          let restarted = false;
          while (sent < readings.length) {
            if (!restarted && restartAt > 0 && sent >= restartAt) {
              restarted = true;
              // A restart: a new gateway resumes the open windows from the database.
              await gateway.stop();
              gateway = new EdgeGateway(options());
              await gateway.start();
            }
            const size = chunkSizes[chunk++ % chunkSizes.length] as number;
            const part = readings.slice(sent, sent + size);
            await gateway.sendBatch(part.map((r) => ({ ...r, timestamp: r.ts })));
            sent += part.length;
          }
          now = Number.MAX_SAFE_INTEGER / 2;
          await gateway.flushProcessors();
          await gateway.stop();

          const { expected, late } = reference(readings, windowSeconds * 1000, graceSeconds * 1000);
          const actual = storedAggregates(path).sort((x, y) => sortKey(x).localeCompare(sortKey(y)));
          const wanted = expected.sort((x, y) => sortKey(x).localeCompare(sortKey(y)));
          expect(actual.map(sortKey)).toEqual(wanted.map(sortKey));
          actual.forEach((a, i) => {
            const e = wanted[i] as Expected;
            expect({ count: a.count, min: a.min, max: a.max, sum: a.sum, first: a.first, last: a.last }).toEqual({
              count: e.count,
              min: e.min,
              max: e.max,
              sum: e.sum,
              first: e.first,
              last: e.last,
            });
            const scale = Math.max(Math.abs(e.min), Math.abs(e.max));
            expect(close(a.mean, e.mean, scale), `mean ${a.mean} vs ${e.mean}`).toBe(true);
            const stddev = a.count < 2 ? null : Math.sqrt(a.m2 / (a.count - 1));
            expect(close(stddev, e.stddev, scale), `stddev ${stddev} vs ${e.stddev}`).toBe(true);
          });
          // Late readings are forwarded raw, never lost; with forwardRaw false they are the only raw rows.
          const raw = readDb(path, (db) =>
            db.prepare('SELECT value FROM outbox WHERE kind = 0 ORDER BY seq').pluck().all(),
          );
          expect(raw).toEqual(late.map((r) => r.value));
          const queued = readDb(path, (db) => db.prepare('SELECT count(*) FROM outbox WHERE kind = 3').pluck().get());
          expect(queued).toBe(expected.length);
        },
      ),
      { numRuns: 40 },
    );
  }, 120_000);

  it('closes the window of a silent sensor by the clock, and forwards raw readings by default', async () => {
    const path = tempDbPath();
    let now = BASE;
    const aggregation = new WindowedAggregation({ window: 60, grace: 5, clock: () => now });
    const gateway = new EdgeGateway({ deviceId: 'd', localDb: path, ...FAST, processors: [aggregation] });
    defer(() => gateway.stop());
    await gateway.start();
    const start = Math.floor(BASE / 60_000) * 60_000;
    await gateway.sendBatch([1, 2, 3, 4].map((v) => ({ sensorId: 't', value: v, timestamp: start + v * 1000 })));
    now = start + 64_000; // past the end, within grace
    await gateway.flushProcessors();
    expect(storedAggregates(path)).toEqual([]);
    now = start + 65_000;
    await gateway.flushProcessors();
    expect(storedAggregates(path)).toEqual([
      expect.objectContaining({ sensorId: 't', windowStart: start, count: 4, sum: 10, first: 1, last: 4 }),
    ]);
    expect(aggregation.stats).toMatchObject({ aggregated: 4, windows: 1, late: 0 });
    // A reading for the closed window is late: forwarded raw, counted, not aggregated again.
    expect(await gateway.sendData({ sensorId: 't', value: 9, timestamp: start + 30_000 })).toBe(true);
    expect(aggregation.stats).toMatchObject({ late: 1 });
    const kinds = readDb(path, (db) => db.prepare('SELECT kind FROM outbox ORDER BY seq').pluck().all());
    expect(kinds).toEqual([0, 0, 0, 0, 3, 0]);
  });

  it('closes the windows the clock says are over when the gateway stops, and resumes the others at the next start', async () => {
    const path = tempDbPath();
    const start = Math.floor(BASE / 60_000) * 60_000;
    const options = (): EdgeGatewayOptions => ({
      deviceId: 'd',
      localDb: path,
      ...FAST,
      processors: [new WindowedAggregation({ window: 60, grace: 30, clock: () => start + 90_000 })],
    });
    const first = new EdgeGateway(options());
    await first.start();
    await first.sendBatch([
      { sensorId: 't', value: 1, timestamp: start + 10_000 },
      { sensorId: 't', value: 2, timestamp: start + 70_000 },
    ]);
    await first.stop();
    expect(storedAggregates(path).map((a) => [a.windowStart - start, a.count])).toEqual([[0, 1]]);
    const second = new EdgeGateway(options());
    defer(() => second.stop());
    await second.start();
    await second.sendData({ sensorId: 't', value: 3, timestamp: start + 151_000 });
    expect(storedAggregates(path).map((a) => [a.windowStart - start, a.count, a.sum])).toEqual([
      [0, 1, 1],
      [60_000, 1, 2],
    ]);
  });

  it('syncs aggregates as processed data stamped with the window start', async () => {
    const cloud = await startCloudServer();
    defer(() => cloud.close());
    const gateway = new EdgeGateway({
      deviceId: 'agg-sync',
      localDb: tempDbPath(),
      ...FAST,
      cloudUrl: cloud.url,
      apiKey: cloud.apiKey,
      processors: [new WindowedAggregation({ window: 10, grace: 0, forwardRaw: false, closeOnClock: false })],
    });
    defer(() => gateway.stop());
    await gateway.start();
    await gateway.sendBatch([
      { sensorId: 'p', value: 2, unit: 'bar', timestamp: BASE, tags: { site: 'x' } },
      { sensorId: 'p', value: 4, unit: 'bar', timestamp: BASE + 1000, tags: { site: 'x' } },
      { sensorId: 'p', value: 6, unit: 'bar', timestamp: BASE + 20_000, tags: { site: 'x' } },
    ]);
    await gateway.forceSync();
    const points = await cloud.points('agg-sync');
    const windowStart = Math.floor(BASE / 10_000) * 10_000;
    expect(points).toEqual([
      expect.objectContaining({
        sensorId: 'p',
        unit: 'bar',
        tags: { site: 'x' },
        timestamp: new Date(windowStart).toISOString(),
        data: {
          aggregate: {
            source: 'aggregation',
            window: 10,
            count: 2,
            min: 2,
            max: 4,
            sum: 6,
            mean: 3,
            stddev: Math.SQRT2,
            first: 2,
            last: 4,
            firstTs: BASE,
            lastTs: BASE + 1000,
          },
        } satisfies AggregatePayload,
      }),
    ]);
  });

  it('passes everything through untouched with localAnalytics off', async () => {
    const path = tempDbPath();
    const gateway = new EdgeGateway({
      deviceId: 'd',
      localDb: path,
      ...FAST,
      localAnalytics: false,
      processors: [new WindowedAggregation({ window: 1, grace: 0, forwardRaw: false })],
    });
    defer(() => gateway.stop());
    await gateway.start();
    await gateway.sendBatch([0, 5000, 10_000].map((dt, i) => ({ sensorId: 't', value: i, timestamp: BASE + dt })));
    const kinds = readDb(path, (db) => db.prepare('SELECT kind FROM outbox ORDER BY seq').pluck().all());
    expect(kinds).toEqual([0, 0, 0]);
    // Turned on at run time, the built-in takes over.
    gateway.configure({ localAnalytics: true });
    await gateway.sendBatch([20_000, 30_000].map((dt) => ({ sensorId: 't', value: 1, timestamp: BASE + dt })));
    expect(readDb(path, (db) => db.prepare('SELECT kind FROM outbox ORDER BY seq').pluck().all())).toEqual([
      0, 0, 0, 3,
    ]);
  });

  it('refuses options out of range with a ConfigError naming them', () => {
    const refused = (options: object) => {
      try {
        new WindowedAggregation(options);
        return 'accepted';
      } catch (error) {
        return isConfigError(error) ? error.issues.join('; ') : 'another error';
      }
    };
    expect(refused({ window: 0 })).toMatch(/"window" option of WindowedAggregation/);
    expect(refused({ windw: 5 })).toMatch(/Misspelled WindowedAggregation option\(s\): windw/);
    expect(refused({ groupBy: 'some' })).toMatch(/groupBy/);
  });
});
