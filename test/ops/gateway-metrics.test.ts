import { register } from 'prom-client';
import { describe, expect, it } from 'vitest';
import { type DataPoint, DataProcessor, isQueueFullError, type SyncErrorEvent } from '../../src/index.js';
import { labelValue } from '../../src/ops/gateway-metrics.js';
import { defer } from '../helpers/cleanup.js';
import { createGateway, readings } from '../helpers/gateway.js';
import { batchRequests, forward, freePort, sendJson, startTestServer } from '../helpers/http.js';
import { parsePrometheus } from '../helpers/prometheus.js';
import { startRecordsCloud } from '../helpers/records.js';

/** Passes readings through; raises a critical alert above 100; fails on negative values (a dead letter). */
class Checker extends DataProcessor {
  async process(point: DataPoint) {
    if (point.value < 0) throw new Error('negative reading');
    if (point.value > 100) await this.triggerAlert({ severity: 'critical', message: `too high: ${point.value}` });
    return point;
  }
}

describe('EdgeGateway metrics', () => {
  it('exposes each named series with the values of known work, parsed back from GET /metrics', async () => {
    const cloud = await startRecordsCloud();
    // Every request the gateway makes passes here: answered 503 while `down`, else forwarded to the cloud.
    let down = true;
    const proxy = await startTestServer((request, response) =>
      down ? sendJson(response, 503, { error: 'unavailable', message: 'down' }) : forward(request, response, cloud.url),
    );
    const gateway = createGateway({
      metrics: true,
      processor: new Checker(),
      cloudUrl: proxy.url,
      apiKey: cloud.apiKey,
      syncStrategy: 'fixed-interval',
      syncInterval: 3600,
      batchSize: 4,
    });
    const errors: SyncErrorEvent[] = [];
    gateway.on('sync-error', (event) => errors.push(event));
    await gateway.start();
    gateway.setConflictResolutionStrategy('cloud-wins');

    expect(await gateway.sendBatch(readings(10))).toBe(10);
    expect(await gateway.sendData({ sensorId: 'temp-01', value: 150 })).toBe(true); // an alert
    expect(await gateway.sendData({ sensorId: 'temp-01', value: -1 })).toBe(false); // a dead letter
    gateway.configure({ maxOfflineQueueSize: 12 });
    const refused = await gateway.sendBatch(readings(5, 'temp-02')).catch((error: unknown) => error);
    expect(isQueueFullError(refused)).toBe(true);
    gateway.configure({ maxOfflineQueueSize: 1_000_000 });

    await gateway.forceSync(); // answered 503
    expect(errors.length).toBeGreaterThan(0);
    const server = await gateway.serveHttp({ port: 0 });
    defer(() => server.close());
    const offline = parsePrometheus(await (await fetch(`${server.url}/metrics`)).text());
    expect(offline.value('edge_gateway_queue_size')).toBe(12); // 11 readings and the alert, which travels as a row of its own
    expect(offline.value('edge_gateway_online')).toBe(0);

    down = false;
    await gateway.records.put('setpoints', 'boiler-1', { target: 70 });
    await gateway.forceSync();
    await cloud.put('setpoints', 'boiler-1', { target: 60 });
    await gateway.records.put('setpoints', 'boiler-1', { target: 75 });
    await gateway.forceSync(); // the edit meets the cloud's: a conflict, which the cloud wins

    const response = await fetch(`${server.url}/metrics`);
    expect(response.status).toBe(200);
    expect(response.headers.get('content-type')).toMatch(/^text\/plain; version=0\.0\.4/);
    const text = await response.text();
    const m = parsePrometheus(text);
    const stats = await cloud.server.store.stats(gateway.options.deviceId);

    // The seed's five.
    expect(m.types.get('edge_gateway_data_points_total')).toBe('counter');
    expect(m.value('edge_gateway_data_points_total')).toBe(11);
    expect(m.value('edge_gateway_sync_success_total')).toBe(stats.batches);
    expect(stats.batches).toBe(4); // the alert alone (its lane goes first), then 11 readings in batches of 4
    expect(m.value('edge_gateway_sync_failures_total', { code: 'SERVER_ERROR' })).toBe(
      errors.filter((e) => e.code === 'SERVER_ERROR').length,
    );
    expect(m.value('edge_gateway_queue_size')).toBe(0);
    expect(m.types.get('edge_gateway_processing_duration_seconds')).toBe('histogram');
    expect(m.value('edge_gateway_processing_duration_seconds_count')).toBe(3); // the refused call is not durable
    expect(m.value('edge_gateway_processing_duration_seconds_bucket', { le: '+Inf' })).toBe(3);
    expect(m.value('edge_gateway_processing_duration_seconds_sum')).toBeGreaterThan(0);

    // And the others.
    expect(m.value('edge_gateway_readings_acknowledged_total')).toBe(12); // 11 readings and the alert's row
    expect(m.value('edge_gateway_dropped_readings_total', { reason: 'processor-failed' })).toBe(1);
    expect(m.value('edge_gateway_dropped_readings_total', { reason: 'queue-full' })).toBe(5);
    expect(m.value('edge_gateway_dead_letters')).toBe(1);
    expect(m.value('edge_gateway_alerts_total', { severity: 'critical' })).toBe(1);
    expect(m.value('edge_gateway_record_conflicts_total', { winner: 'cloud', strategy: 'cloud-wins' })).toBe(1);
    expect(m.value('edge_gateway_records_pending')).toBe(0);
    const bytesSent = batchRequests(proxy).reduce((sum, request) => sum + request.body.length, 0);
    expect(bytesSent).toBeGreaterThan(0);
    expect(m.value('edge_gateway_sync_bytes_sent_total')).toBe(bytesSent);
    const raw = m.value('edge_gateway_batch_uncompressed_bytes_total');
    const compressed = m.value('edge_gateway_batch_compressed_bytes_total');
    expect(raw).toBeGreaterThan(0);
    expect(m.value('edge_gateway_compression_ratio')).toBeCloseTo(raw / compressed, 10);
    expect(m.value('edge_gateway_sync_latency_seconds_count', { outcome: 'acknowledged' })).toBe(4); // the four batches
    expect(m.value('edge_gateway_sync_latency_seconds_count', { outcome: 'retryable' })).toBeGreaterThan(0);
    expect(m.value('edge_gateway_online')).toBe(1);
    expect(m.value('edge_gateway_offline_duration_seconds')).toBe(0);
    expect(m.value('edge_gateway_auth_refused')).toBe(0);
    expect(Math.abs(m.value('edge_gateway_clock_skew_seconds'))).toBeLessThan(60);
    expect(m.value('edge_gateway_storage_bytes')).toBeGreaterThan(4096);
    expect(m.value('edge_gateway_last_sync_timestamp_seconds')).toBeCloseTo(
      (gateway.getStatus().lastSyncTime?.getTime() ?? 0) / 1000,
      3,
    );
    expect(m.value('edge_gateway_info', { device_id: gateway.options.deviceId })).toBe(1);

    expect(text).not.toContain(cloud.apiKey);
  });

  it('counts the outage while the cloud is unreachable', async () => {
    const gateway = createGateway({ cloudUrl: `http://127.0.0.1:${await freePort()}/api/v1`, apiKey: 'k' });
    await gateway.start();
    const before = parsePrometheus(await gateway.metrics());
    expect(before.value('edge_gateway_offline_duration_seconds')).toBe(0);
    await gateway.sendData({ sensorId: 's', value: 1 });
    await gateway.forceSync();
    await new Promise((resolve) => setTimeout(resolve, 50));
    const after = parsePrometheus(await gateway.metrics());
    expect(after.value('edge_gateway_online')).toBe(0);
    expect(after.value('edge_gateway_offline_duration_seconds')).toBeGreaterThan(0);
  });

  it('keeps each gateway on a registry of its own, never the global one', async () => {
    const a = createGateway({ metrics: true });
    const b = createGateway({ metrics: true });
    await a.start();
    await b.start();
    await a.sendBatch(readings(3));
    expect(parsePrometheus(await a.metrics()).value('edge_gateway_data_points_total')).toBe(3);
    expect(parsePrometheus(await b.metrics()).value('edge_gateway_data_points_total')).toBe(0);
    expect(await register.metrics()).not.toContain('edge_gateway_');
    expect(await a.metricsRegistry()).not.toBe(register);
  });

  it('counts readings removed by retention under their reasons', async () => {
    const gateway = createGateway({
      metrics: true,
      maxOfflineQueueSize: 10,
      retention: { cleanupStrategy: 'drop-oldest', maxDays: 1 },
    });
    await gateway.start();
    // Timestamps a minute apart, the first two a week old: past maxDays.
    const old = Date.now() - 7 * 86_400_000;
    await gateway.sendBatch([old, old + 60_000].map((timestamp, i) => ({ sensorId: 's', value: i, timestamp })));
    await gateway.runCleanup();
    const now = Date.now();
    await gateway.sendBatch(readings(10, 's', now));
    await gateway.sendBatch(readings(3, 's', now + 10_000));
    gateway.configureRetention({ cleanupStrategy: 'downsample-oldest', downsampleWindow: 3600 });
    await gateway.sendBatch(readings(4, 's', now + 13_000));
    const m = parsePrometheus(await gateway.metrics());
    expect(m.value('edge_gateway_dropped_readings_total', { reason: 'retention' })).toBe(2);
    expect(m.value('edge_gateway_dropped_readings_total', { reason: 'drop-oldest' })).toBe(3);
    expect(m.value('edge_gateway_dropped_readings_total', { reason: 'downsampled' })).toBeGreaterThan(0);
  });

  it('counts from the first call to metrics() when the metrics option is off', async () => {
    const gateway = createGateway();
    await gateway.start();
    await gateway.sendData({ sensorId: 's', value: 1 });
    expect(parsePrometheus(await gateway.metrics()).value('edge_gateway_data_points_total')).toBe(0);
    await gateway.sendData({ sensorId: 's', value: 2 });
    const m = parsePrometheus(await gateway.metrics());
    expect(m.value('edge_gateway_data_points_total')).toBe(1);
    expect(m.value('edge_gateway_queue_size')).toBe(2); // gauges read the state, whenever counting began
  });
});

describe('labelValue()', () => {
  it('passes enum-like words and turns anything else into "other"', () => {
    expect(labelValue('rejected-by-cloud')).toBe('rejected-by-cloud');
    expect(labelValue('AUTH_REFUSED')).toBe('AUTH_REFUSED');
    for (const reason of ['drop-oldest', 'retention', 'downsampled']) expect(labelValue(reason)).toBe(reason);
    expect(labelValue('Bearer s3cr3t key')).toBe('other');
    expect(labelValue('x'.repeat(65))).toBe('other');
    expect(labelValue(undefined)).toBe('other');
  });
});
