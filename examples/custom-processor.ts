// The seed's Custom Processing example: a processor that raises alerts and turns readings into processed data.
import { type DataPoint, DataProcessor, EdgeGateway } from 'edge-gateway';

class CustomProcessor extends DataProcessor {
  async process(point: DataPoint) {
    if (point.value > 100) {
      // Stored in the same transaction as the reading, and sent ahead of the telemetry queued before it.
      await this.triggerAlert({ severity: 'warning', message: `High value detected: ${point.value}` });
    }
    return { original: point.value, normalized: point.value / 100, timestamp: point.timestamp };
  }
}

const gateway = new EdgeGateway({
  deviceId: 'device-001',
  processor: new CustomProcessor(),
  cloudUrl: process.env.CLOUD_API_URL,
  apiKey: process.env.CLOUD_API_KEY,
  localDb: process.env.LOCAL_DB_PATH,
});
gateway.on('alert', (alert) => console.log(`alert (${alert.severity}) from ${alert.sensorId}: ${alert.message}`));

await gateway.start();
await gateway.sendData({ sensorId: 'pressure-07', value: 42 });
await gateway.sendData({ sensorId: 'pressure-07', value: 180 });
// Alerts stay queryable locally, online or not.
console.log(`alerts stored: ${gateway.alerts({ severity: 'warning' }).length}`);
await gateway.stop();
