// Monitoring: status, health and events, as an operator's dashboard would read them.
import { EdgeGateway } from 'edge-gateway';

const gateway = new EdgeGateway({
  deviceId: 'device-001',
  cloudUrl: process.env.CLOUD_API_URL,
  apiKey: process.env.CLOUD_API_KEY,
  localDb: process.env.LOCAL_DB_PATH,
  syncStrategy: 'on-change',
  metrics: true, // Prometheus metrics from start(): gateway.metrics(), or GET /metrics of gateway.serveHttp()
});
gateway.on('sync', (result) => console.log(`synced ${result.acknowledged} reading(s) in ${result.durationMs} ms`));
gateway.on('sync-error', (error) => console.log(`sync failed (${error.code}): ${error.message}`));

await gateway.start();
await gateway.sendBatch([
  { sensorId: 'flow-01', value: 3.2, unit: 'm3/h' },
  { sensorId: 'flow-01', value: 3.4, unit: 'm3/h', timestamp: new Date() },
  { sensorId: 'flow-01', value: 3.3, unit: 'm3/h', timestamp: '2026-11-27T10:30:00Z' },
]);
const result = await gateway.forceSync();
console.log(`forceSync: acknowledged ${result.acknowledged}, remaining ${result.remaining}`);

const status = gateway.getStatus();
console.log(`Online: ${status.isOnline}`);
console.log(`Queue Size: ${status.pendingSyncCount}`);
console.log(`Last Sync: ${status.lastSyncTime?.toISOString() ?? 'never'}`);
console.log(`Failed Syncs: ${status.failedSyncCount}`);

const health = gateway.healthCheck();
console.log(`Status: ${health.status} ${health.reasons.join('; ')}`);
console.log(`Uptime: ${health.uptimeSeconds}s`);

// The same, as a monitoring system scrapes it.
const metrics = await gateway.metrics();
for (const line of metrics.split('\n')) {
  if (/^edge_gateway_(data_points_total|sync_success_total|queue_size) /.test(line)) console.log(line);
}

await gateway.stop();
