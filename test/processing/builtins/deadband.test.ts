import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { Deadband, type DeadbandOptions, EdgeGateway, isConfigError } from '../../../src/index.js';
import { defer } from '../../helpers/cleanup.js';
import { FAST, readDb } from '../../helpers/gateway.js';
import { tempDbPath } from '../../helpers/temp-dir.js';

const T0 = 1_750_000_000_000;

async function gatewayWith(path: string, deadband: Deadband): Promise<EdgeGateway> {
  const gateway = new EdgeGateway({ deviceId: 'd', localDb: path, ...FAST, processors: [deadband] });
  defer(() => gateway.stop());
  await gateway.start();
  return gateway;
}

const forwarded = (path: string) =>
  readDb(path, (db) => db.prepare('SELECT sensor_id, ts, value FROM outbox ORDER BY seq').raw().all()) as [
    string,
    number,
    number,
  ][];

/** The rule, the plain way: per sensor, forward on a move out of the band or a due heartbeat. */
function reference(readings: readonly { sensorId: string; ts: number; value: number }[], o: DeadbandOptions) {
  const last = new Map<string, { value: number; ts: number }>();
  const out: [string, number, number][] = [];
  for (const r of readings) {
    const l = last.get(r.sensorId);
    const change = l === undefined ? Number.POSITIVE_INFINITY : Math.abs(r.value - l.value);
    const moved =
      l === undefined ||
      (o.absolute !== undefined && change > o.absolute) ||
      (o.percent !== undefined && change > (o.percent / 100) * Math.abs(l.value));
    const heartbeat = l !== undefined && (o.heartbeat ?? 300) > 0 && r.ts - l.ts >= (o.heartbeat ?? 300) * 1000;
    if (!moved && !heartbeat) continue;
    last.set(r.sensorId, { value: r.value, ts: Math.max(l?.ts ?? r.ts, r.ts) });
    out.push([r.sensorId, r.ts, r.value]);
  }
  return out;
}

describe('Deadband', () => {
  it('forwards moves beyond the absolute band and counts what it suppressed', async () => {
    const path = tempDbPath();
    const deadband = new Deadband({ absolute: 0.5, heartbeat: 0 });
    const gateway = await gatewayWith(path, deadband);
    const values = [10, 10.2, 10.5, 10.6, 10.9, 11.2, 11.2, 9];
    const kept = [];
    for (const [i, value] of values.entries()) {
      kept.push(await gateway.sendData({ sensorId: 't', value, timestamp: T0 + i * 1000 }));
    }
    expect(kept).toEqual([true, false, false, true, false, true, false, true]);
    expect(forwarded(path).map(([, , v]) => v)).toEqual([10, 10.6, 11.2, 9]);
    expect(deadband.stats).toMatchObject({ forwarded: 4, suppressed: 4, heartbeats: 0 });
  });

  it('forwards moves beyond a percentage of the last forwarded value', async () => {
    const path = tempDbPath();
    const gateway = await gatewayWith(path, new Deadband({ percent: 10 }));
    await gateway.sendBatch(
      [100, 109, 111, 121, 123, 134, 136].map((value, i) => ({ sensorId: 't', value, timestamp: T0 + i })),
    );
    expect(forwarded(path).map(([, , v]) => v)).toEqual([100, 111, 123, 136]);
  });

  it('sends a heartbeat for a steady sensor, so that silence stands out', async () => {
    const path = tempDbPath();
    const deadband = new Deadband({ absolute: 1, heartbeat: 300 });
    const gateway = await gatewayWith(path, deadband);
    await gateway.sendBatch(
      Array.from({ length: 16 }, (_, i) => ({ sensorId: 't', value: 5, timestamp: T0 + i * 60_000 })),
    );
    expect(forwarded(path).map(([, ts]) => (ts - T0) / 60_000)).toEqual([0, 5, 10, 15]);
    expect(deadband.stats).toMatchObject({ forwarded: 4, suppressed: 12, heartbeats: 3 });
  });

  it('keeps one band per sensor and tag set', async () => {
    const path = tempDbPath();
    const gateway = await gatewayWith(path, new Deadband({ absolute: 1, groupBy: ['line'] }));
    await gateway.sendBatch([
      { sensorId: 't', value: 1, tags: { line: 'a', shift: 'x' }, timestamp: T0 },
      { sensorId: 't', value: 1, tags: { line: 'b' }, timestamp: T0 + 1 },
      { sensorId: 't', value: 1.5, tags: { line: 'a', shift: 'y' }, timestamp: T0 + 2 },
      { sensorId: 'u', value: 1.5, timestamp: T0 + 3 },
    ]);
    expect(forwarded(path).map(([s, , v]) => `${s}=${v}`)).toEqual(['t=1', 't=1', 'u=1.5']);
  });

  it('matches the plain rule on random streams, across a restart', async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.array(
          fc.record({
            sensorId: fc.constantFrom('a', 'b'),
            step: fc.integer({ min: 0, max: 120_000 }),
            value: fc.integer({ min: -50, max: 50 }).map((v) => v / 4),
          }),
          { minLength: 1, maxLength: 80 },
        ),
        fc.record({
          absolute: fc.option(fc.constantFrom(0, 0.5, 2), { nil: undefined }),
          percent: fc.option(fc.constantFrom(5, 20), { nil: undefined }),
          heartbeat: fc.constantFrom(0, 60, 300),
        }),
        fc.nat(),
        async (items, band, restartSeed) => {
          const options: DeadbandOptions =
            band.absolute === undefined && band.percent === undefined ? { ...band, absolute: 1 } : band;
          let ts = T0;
          const readings = items.map(({ sensorId, step, value }) => {
            ts += step;
            return { sensorId, value, ts };
          });
          const path = tempDbPath();
          const restartAt = restartSeed % readings.length;
          for (const part of [readings.slice(0, restartAt), readings.slice(restartAt)]) {
            const gateway = new EdgeGateway({
              deviceId: 'd',
              localDb: path,
              ...FAST,
              processors: [new Deadband(options)],
            });
            await gateway.start();
            for (const r of part) await gateway.sendData({ sensorId: r.sensorId, value: r.value, timestamp: r.ts });
            await gateway.stop();
          }
          expect(forwarded(path)).toEqual(reference(readings, options));
        },
      ),
      { numRuns: 30 },
    );
  }, 60_000);

  it('needs a band', () => {
    expect(() => new Deadband({ heartbeat: 10 })).toThrow(/absolute.*percent/);
    expect(
      isConfigError(
        (() => {
          try {
            new Deadband({ absolute: -1 });
          } catch (e) {
            return e;
          }
        })(),
      ),
    ).toBe(true);
  });
});
