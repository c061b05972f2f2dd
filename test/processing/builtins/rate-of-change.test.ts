import { describe, expect, it } from 'vitest';
import { EdgeGateway, RateOfChange, WindowedAggregation } from '../../../src/index.js';
import { defer } from '../../helpers/cleanup.js';
import { FAST, readDb } from '../../helpers/gateway.js';
import { tempDbPath } from '../../helpers/temp-dir.js';

const T0 = 1_750_000_000_000;

describe('RateOfChange', () => {
  it('emits the rate between consecutive readings and alerts past maxRate', async () => {
    const path = tempDbPath();
    const rate = new RateOfChange({ per: 'minute', maxRate: 30, emit: true });
    const gateway = new EdgeGateway({ deviceId: 'd', localDb: path, ...FAST, processors: [rate] });
    defer(() => gateway.stop());
    await gateway.start();
    await gateway.sendBatch([
      { sensorId: 'level', value: 100, unit: 'cm', timestamp: T0 },
      { sensorId: 'level', value: 90, unit: 'cm', timestamp: T0 + 60_000 }, // -10/min
      { sensorId: 'level', value: 95, unit: 'cm', timestamp: T0 + 30_000 }, // older than the previous: not compared
      { sensorId: 'level', value: 50, unit: 'cm', timestamp: T0 + 120_000 }, // -40/min: alert
    ]);
    const rows = readDb(path, (db) =>
      db.prepare('SELECT sensor_id, value, unit FROM outbox WHERE kind = 0 ORDER BY seq').raw().all(),
    );
    expect(rows).toEqual([
      ['level', 100, 'cm'],
      ['level', 90, 'cm'],
      ['level:rate', -10, 'cm/min'],
      ['level', 95, 'cm'],
      ['level', 50, 'cm'],
      ['level:rate', -40, 'cm/min'],
    ]);
    expect(gateway.alerts().map((a) => [a.sensorId, a.message])).toEqual([
      ['level', 'level changing faster than 30/min'],
    ]);
    expect(rate.stats).toMatchObject({ rates: 2, alerts: 1 });
  });

  it('hands its derived readings to a later built-in', async () => {
    const path = tempDbPath();
    const gateway = new EdgeGateway({
      deviceId: 'd',
      localDb: path,
      ...FAST,
      processors: [
        new RateOfChange({ emit: true }),
        new WindowedAggregation({ window: 3600, sensors: /:rate$/, forwardRaw: false, closeOnClock: false }),
      ],
    });
    defer(() => gateway.stop());
    await gateway.start();
    await gateway.sendBatch([0, 1, 2].map((i) => ({ sensorId: 'x', value: i * i, timestamp: T0 + i * 1000 })));
    await gateway.stop();
    const state = readDb(path, (db) => db.prepare('SELECT key, value FROM processor_state ORDER BY key').raw().all());
    expect(state).toEqual([
      ['x', expect.stringMatching(/^\[4,/)],
      ['x:rate', expect.stringContaining('"count":2,"min":1,"max":3,"sum":4')],
    ]);
  });
});
