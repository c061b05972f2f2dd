import { type ChildProcess, spawn } from 'node:child_process';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import BetterSqlite3 from 'better-sqlite3-multiple-ciphers';
import { describe, expect, it } from 'vitest';
import { type Alert, type DataPoint, DataProcessor } from '../../src/index.js';
import { startCloudServer } from '../../src/testing/index.js';
import { defer } from '../helpers/cleanup.js';
import { createGateway, readDb } from '../helpers/gateway.js';
import { tempDbPath, tempDir } from '../helpers/temp-dir.js';

const ROOT = fileURLToPath(new URL('../..', import.meta.url));
const FIXTURE = fileURLToPath(new URL('../fixtures/alert-gateway.ts', import.meta.url));
const T0 = Date.UTC(2025, 5, 1);

/** Raises the alert the reading's tags describe: `{ alert: message, severity? }`. */
class TagAlerts extends DataProcessor {
  async process(point: DataPoint) {
    const { alert, severity = 'warning' } = point.tags;
    if (alert) await this.triggerAlert({ severity: severity as 'warning', message: alert });
    return point;
  }
}

const reading = (seconds: number, alert?: string, sensorId = 'boiler-2', severity?: string) => ({
  sensorId,
  value: seconds,
  timestamp: T0 + seconds * 1000,
  tags: alert === undefined ? undefined : { alert, ...(severity ? { severity } : {}) },
});

describe('EdgeGateway alerts', () => {
  it('counts a repeat within alertDedupWindow into the first alert instead of raising it again', async () => {
    const path = tempDbPath();
    const gateway = createGateway({ localDb: path, processor: new TagAlerts(), alertDedupWindow: 60 });
    const events: Alert[] = [];
    gateway.on('alert', (alert) => events.push(alert));
    await gateway.start();
    for (const seconds of [0, 10, 30, 59]) await gateway.sendData(reading(seconds, 'flapping'));
    await gateway.sendData(reading(20, 'another message'));
    await gateway.sendData(reading(61, 'flapping'));

    expect(events.map((a) => [a.message, a.timestamp.getTime() - T0])).toEqual([
      ['flapping', 0],
      ['another message', 20_000],
      ['flapping', 61_000],
    ]);
    const stored = gateway.alerts({ sensorId: 'boiler-2' });
    expect(stored.map((a) => [a.message, a.count, a.lastTimestamp.getTime() - T0])).toEqual([
      ['flapping', 1, 61_000],
      ['another message', 1, 20_000],
      ['flapping', 4, 59_000],
    ]);
    const queued = readDb(path, (db) => db.prepare('SELECT count(*) FROM outbox WHERE kind = 2').pluck().get());
    expect(queued).toBe(3);
  });

  it('raises every repeat when alertDedupWindow is 0', async () => {
    const gateway = createGateway({ processor: new TagAlerts(), alertDedupWindow: 0 });
    await gateway.start();
    await gateway.sendBatch([reading(0, 'x'), reading(1, 'x'), reading(2, 'x')]);
    expect(gateway.alerts().map((a) => a.count)).toEqual([1, 1, 1]);
  });

  it('selects alerts by time, severity (and worse), sensor and source, newest first, up to a limit', async () => {
    const gateway = createGateway({ processor: new TagAlerts() });
    await gateway.start();
    await gateway.sendBatch([
      reading(0, 'a', 'p-1', 'info'),
      reading(100, 'b', 'p-1', 'warning'),
      reading(200, 'c', 'p-2', 'critical'),
      reading(300, 'd', 'p-1', 'critical'),
    ]);
    const messages = (alerts: Alert[]) => alerts.map((a) => a.message);
    expect(messages(gateway.alerts())).toEqual(['d', 'c', 'b', 'a']);
    expect(messages(gateway.alerts({ severity: 'warning' }))).toEqual(['d', 'c', 'b']);
    expect(messages(gateway.alerts({ severity: 'critical', sensorId: 'p-1' }))).toEqual(['d']);
    expect(messages(gateway.alerts({ since: T0 + 100_000, until: new Date(T0 + 300_000) }))).toEqual(['c', 'b']);
    expect(messages(gateway.alerts({ limit: 1 }))).toEqual(['d']);
    expect(messages(gateway.alerts({ source: 'nobody' }))).toEqual([]);
    expect(() => gateway.alerts({ limit: 0 })).toThrow(/limit/);
  });

  it('keeps no more than maxStoredAlerts, dropping the oldest', async () => {
    const gateway = createGateway({ processor: new TagAlerts(), maxStoredAlerts: 3 });
    await gateway.start();
    await gateway.sendBatch([1, 2, 3, 4, 5].map((s) => reading(s, `m${s}`)));
    expect(gateway.alerts().map((a) => a.message)).toEqual(['m5', 'm4', 'm3']);
  });

  it('sends an alert ahead of the telemetry queued before it', async () => {
    const cloud = await startCloudServer();
    defer(() => cloud.close());
    const gateway = createGateway({
      cloudUrl: cloud.url,
      apiKey: cloud.apiKey,
      processor: new TagAlerts(),
      syncStrategy: 'fixed-interval',
      syncInterval: 3600,
      batchSize: 50,
    });
    await gateway.start();
    await gateway.forceSync(); // the first cycle runs at start; let it end, so that the test decides the next one
    await gateway.sendBatch(Array.from({ length: 300 }, (_, i) => reading(i)));
    await gateway.sendData(reading(400, 'pressure high', 'boiler-2', 'critical'));
    const result = await gateway.forceSync();
    expect(result).toMatchObject({ acknowledged: 302, remaining: 0 });
    const points = await cloud.points(gateway.options.deviceId);
    expect(points).toHaveLength(302);
    // The first batch the cloud stored holds the alert alone.
    expect(points[0]).toMatchObject({
      sensorId: 'boiler-2',
      timestamp: new Date(T0 + 400_000).toISOString(),
      data: { alert: { severity: 'critical', message: 'pressure high', source: 'TagAlerts' } },
    });
    expect(points.slice(1).map((p) => p.value)).toEqual([...Array.from({ length: 300 }, (_, i) => i), 400]);
  });

  it('loses no alert or window count of an acknowledged reading, and keeps none without it, across a SIGKILL', async () => {
    const db = join(tempDir(), 'alerts.db');
    const child: ChildProcess = spawn(process.execPath, ['--import', 'tsx', FIXTURE, db, '437'], {
      cwd: ROOT,
      stdio: ['pipe', 'pipe', 'pipe'],
    });
    defer(() => child.stdin?.end());
    let out = '';
    let err = '';
    child.stdout?.setEncoding('utf8').on('data', (text: string) => {
      out += text;
    });
    child.stderr?.setEncoding('utf8').on('data', (text: string) => {
      err += text;
    });
    const signal = await new Promise((resolve) => child.once('close', (_code, sig) => resolve(sig)));
    expect(signal, err).toBe('SIGKILL');
    const acked = [...out.matchAll(/^ack (\d+)$/gm)].map((m) => Number(m[1]));
    expect(acked).toHaveLength(437);

    const conn = new BetterSqlite3(db);
    try {
      expect(conn.pragma('integrity_check', { simple: true })).toBe('ok');
      const alerts = new Set(
        (conn.prepare('SELECT message FROM alerts').pluck().all() as string[]).map((m) => Number(m.split(' ')[1])),
      );
      const readings = new Set(conn.prepare('SELECT value FROM outbox WHERE kind = 0').pluck().all() as number[]);
      const queuedAlerts = conn.prepare('SELECT count(*) FROM outbox WHERE kind = 2').pluck().get();
      expect(acked.filter((n) => !alerts.has(n))).toEqual([]);
      expect([...alerts].filter((n) => !readings.has(n))).toEqual([]);
      expect([...readings].filter((n) => !alerts.has(n))).toEqual([]);
      expect(queuedAlerts).toBe(alerts.size);
      // The aggregation's windows, closed and open, count each stored reading once: no gap, no double count.
      const closed = conn.prepare('SELECT coalesce(sum(count), 0) FROM aggregates').pluck().get() as number;
      const open = (conn.prepare('SELECT value FROM processor_state').pluck().all() as string[])
        .flatMap((json) => (JSON.parse(json) as { open: [number, { count: number }][] }).open)
        .reduce((total, [, stats]) => total + stats.count, 0);
      expect(closed).toBeGreaterThan(0);
      expect(closed + open).toBe(readings.size);
    } finally {
      conn.close();
    }
  });
});
