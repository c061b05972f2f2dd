import { describe, expect, it } from 'vitest';
import { EdgeGateway, type EdgeGatewayOptions, ThresholdAlerts, type ThresholdRule } from '../../../src/index.js';
import { defer } from '../../helpers/cleanup.js';
import { FAST } from '../../helpers/gateway.js';
import { tempDbPath } from '../../helpers/temp-dir.js';

const T0 = 1_750_000_000_000;

async function start(path: string, rules: ThresholdRule[], extra: Partial<EdgeGatewayOptions> = {}) {
  const gateway = new EdgeGateway({
    deviceId: 'd',
    localDb: path,
    ...FAST,
    alertDedupWindow: 0,
    processors: [new ThresholdAlerts({ rules })],
    ...extra,
  });
  defer(() => gateway.stop());
  await gateway.start();
  return gateway;
}

/** Sends `[seconds, value]` readings of sensor `boiler`, one at a time. */
async function feed(gateway: EdgeGateway, readings: [number, number][], sensorId = 'boiler') {
  for (const [seconds, value] of readings) await gateway.sendData({ sensorId, value, timestamp: T0 + seconds * 1000 });
}

const raised = (gateway: EdgeGateway) =>
  gateway
    .alerts()
    .reverse()
    .map((a) => `${(a.timestamp.getTime() - T0) / 1000}s ${a.severity}: ${a.message}`);

describe('ThresholdAlerts', () => {
  it('raises after the hold time, ignores wobbles inside the hysteresis, clears past it', async () => {
    const gateway = await start(tempDbPath(), [{ above: 100, hysteresis: 5, hold: 10, severity: 'critical' }]);
    await feed(gateway, [
      [0, 99],
      [1, 101], // pending
      [5, 102],
      [11, 103], // held 10 s: raised
      [13, 98], // inside the hysteresis: still active
      [15, 120],
      [20, 94], // back below 95: cleared
      [21, 101], // pending again
      [25, 99], // back under before the hold: nothing
      [26, 101],
      [36, 101], // held again: raised
    ]);
    expect(raised(gateway)).toEqual([
      '11s critical: boiler above 100',
      '20s info: boiler above 100: back below 95',
      '36s critical: boiler above 100',
    ]);
  });

  it('watches below, keeps one state per sensor, and can stay quiet on clearing', async () => {
    const gateway = await start(tempDbPath(), [
      { below: 10, hysteresis: 1, notifyClear: false, message: '{sensorId} low (under {threshold})' },
    ]);
    await feed(gateway, [
      [0, 9],
      [1, 8],
    ]);
    await feed(gateway, [[2, 12]], 'tank-2');
    await feed(gateway, [[3, 5]], 'tank-2');
    await feed(gateway, [
      [4, 10.5], // inside the hysteresis
      [5, 11.5], // cleared, quietly
      [6, 9],
    ]);
    expect(raised(gateway)).toEqual([
      '0s warning: boiler low (under 10)',
      '3s warning: tank-2 low (under 10)',
      '6s warning: boiler low (under 10)',
    ]);
  });

  it('remembers an active alert across a restart: no repeat, and the clear still comes', async () => {
    const path = tempDbPath();
    const rules = [{ above: 50 }];
    const first = await start(path, rules);
    await feed(first, [
      [0, 60],
      [1, 70],
    ]);
    await first.stop();
    const second = await start(path, rules);
    await feed(second, [
      [2, 80],
      [3, 40],
    ]);
    expect(raised(second)).toEqual(['0s warning: boiler above 50', '3s info: boiler above 50: back below 50']);
  });

  it('passes every reading on', async () => {
    const gateway = await start(tempDbPath(), [{ above: 0 }]);
    expect(await gateway.sendBatch([1, 2, 3].map((value) => ({ sensorId: 's', value })))).toBe(3);
    expect(gateway.getStatus().pendingSyncCount).toBe(4); // three readings and one alert
  });

  it('refuses a rule without a threshold', () => {
    expect(() => new ThresholdAlerts({ rules: [{ hold: 5 }] })).toThrow(/rule 0 .*above.*below/);
    expect(() => new ThresholdAlerts({ rules: [] })).toThrow(/rules/);
  });
});
