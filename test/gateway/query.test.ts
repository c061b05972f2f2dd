import { describe, expect, it } from 'vitest';
import { EdgeGateway, type EdgeGatewayOptions, isConfigError, WindowedAggregation } from '../../src/index.js';
import { startCloudServer } from '../../src/testing/index.js';
import { defer } from '../helpers/cleanup.js';
import { FAST } from '../helpers/gateway.js';
import { tempDbPath } from '../helpers/temp-dir.js';

const HOUR = 3_600_000;
const T0 = Math.floor(1_750_000_000_000 / HOUR) * HOUR;

async function start(options: Partial<EdgeGatewayOptions>): Promise<EdgeGateway> {
  const gateway = new EdgeGateway({ deviceId: `q-${Math.random()}`, localDb: tempDbPath(), ...FAST, ...options });
  defer(() => gateway.stop());
  await gateway.start();
  return gateway;
}

/** One reading a minute for `minutes` minutes; value = minute index, tags alternate between two lines. */
const minutes = (count: number, sensorId = 'temp') =>
  Array.from({ length: count }, (_, i) => ({
    sensorId,
    value: i,
    unit: 'C',
    tags: { line: i % 2 === 0 ? 'even' : 'odd' },
    timestamp: T0 + i * 60_000,
  }));

describe('EdgeGateway.query()', () => {
  it('returns raw readings kept by localHistory, within the range, also once the cloud acknowledged them', async () => {
    const cloud = await startCloudServer();
    defer(() => cloud.close());
    const gateway = await start({ cloudUrl: cloud.url, apiKey: cloud.apiKey, localHistory: { readings: 1000 } });
    await gateway.sendBatch(minutes(30));
    await gateway.sendBatch(minutes(5, 'other'));
    await gateway.forceSync();
    expect(gateway.getStatus().pendingSyncCount).toBe(0);
    const result = gateway.query({ sensorId: 'temp', from: T0 + 10 * 60_000, to: new Date(T0 + 20 * 60_000) });
    expect(result).toMatchObject({ sensorId: 'temp', resolution: 'raw', source: 'history' });
    expect(result.points.map((p) => p.mean)).toEqual([10, 11, 12, 13, 14, 15, 16, 17, 18, 19]);
    expect(result.points[0]).toEqual({
      timestamp: new Date(T0 + 10 * 60_000),
      tags: { line: 'even' },
      unit: 'C',
      count: 1,
      min: 10,
      max: 10,
      sum: 10,
      mean: 10,
      stddev: null,
      first: 10,
      last: 10,
    });
    const odd = gateway.query({ sensorId: 'temp', from: T0, to: T0 + HOUR, tags: { line: 'odd' }, limit: 3 });
    expect(odd.points.map((p) => p.first)).toEqual([1, 3, 5]);
  });

  it('keeps no more raw readings than localHistory.readings, dropping the oldest', async () => {
    const gateway = await start({ localHistory: { readings: 10 } });
    await gateway.sendBatch(minutes(25));
    expect(gateway.query({ sensorId: 'temp', from: T0, to: T0 + HOUR }).points.map((p) => p.first)).toEqual([
      15, 16, 17, 18, 19, 20, 21, 22, 23, 24,
    ]);
  });

  it('rolls raw readings up into windows of the resolution asked for', async () => {
    const gateway = await start({ localHistory: { readings: 1000 } });
    await gateway.sendBatch(minutes(30));
    const result = gateway.query({
      sensorId: 'temp',
      from: T0,
      to: T0 + HOUR,
      resolution: 600,
      tags: { line: 'even' },
    });
    expect(result).toMatchObject({ resolution: 600, source: 'history' });
    expect(result.points.map((p) => [p.count, p.min, p.max, p.sum, p.first, p.last])).toEqual([
      [5, 0, 8, 20, 0, 8],
      [5, 10, 18, 70, 10, 18],
      [5, 20, 28, 120, 20, 28],
    ]);
    expect(result.points[0]?.stddev).toBeCloseTo(Math.sqrt(10), 12);
  });

  it('reads stored aggregates, as stored or rolled up to a multiple of their window', async () => {
    const gateway = await start({
      processors: [new WindowedAggregation({ window: 300, grace: 0, groupBy: 'none', closeOnClock: false })],
    });
    await gateway.sendBatch(minutes(61));
    const stored = gateway.query({ sensorId: 'temp', from: T0, to: T0 + HOUR });
    expect(stored).toMatchObject({ resolution: 300, source: 'aggregates' });
    expect(stored.points).toHaveLength(12);
    expect(stored.points[1]).toMatchObject({ count: 5, min: 5, max: 9, sum: 35, mean: 7, first: 5, last: 9 });

    const hourly = gateway.query({ sensorId: 'temp', from: T0, to: T0 + HOUR, resolution: 1800 });
    expect(hourly).toMatchObject({ resolution: 1800, source: 'aggregates' });
    expect(hourly.points.map((p) => [p.count, p.min, p.max, p.sum, p.first, p.last])).toEqual([
      [30, 0, 29, 435, 0, 29],
      [30, 30, 59, 1335, 30, 59],
    ]);
    // Merged windows give the standard deviation of the whole: that of 0..29.
    expect(hourly.points[0]?.stddev).toBeCloseTo(Math.sqrt((30 * 31) / 12), 9);
    expect(hourly.points[0]?.mean).toBeCloseTo(14.5, 12);
  });

  it('finds nothing for a sensor it never saw, and refuses a bad query', async () => {
    const gateway = await start({});
    expect(gateway.query({ sensorId: 'nobody' }).points).toEqual([]);
    const refusal = (q: Parameters<EdgeGateway['query']>[0]) => {
      try {
        gateway.query(q);
        return 'accepted';
      } catch (error) {
        return isConfigError(error) ? error.message : 'another error';
      }
    };
    expect(refusal({ sensorId: '' })).toMatch(/sensorId/);
    expect(refusal({ sensorId: 's', resolution: -5 })).toMatch(/resolution/);
    expect(refusal({ sensorId: 's', from: 'yesterday' })).toMatch(/"from"/);
    expect(refusal({ sensorId: 's', limit: 0 })).toMatch(/limit/);
  });
});
