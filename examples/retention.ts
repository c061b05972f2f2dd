// The seed's Data Retention: a budget for an outage, and what happens when it is reached. Here the queue holds at
// most 1000 readings; past that the oldest raw readings become one-minute aggregates instead of being refused.
import { EdgeGateway } from 'edge-gateway';

const gateway = new EdgeGateway({ deviceId: 'device-retention', localDb: process.env.LOCAL_DB_PATH });
gateway.configureRetention({
  maxDays: 7, // local history (dead letters...) older than a week goes at each cleanup
  maxRecords: 1000, // the same setting as maxOfflineQueueSize
  cleanupStrategy: 'downsample-oldest',
  downsampleWindow: 60,
});
gateway.on('dropped', (event) => console.log(`dropped (${event.reason}): ${event.message}`));
await gateway.start();

// Twenty minutes of one reading a second, from an hour ago, while the cloud is out of reach (no cloudUrl yet).
const start = Math.floor((Date.now() - 3_600_000) / 60_000) * 60_000;
for (let second = 0; second < 1200; second += 100) {
  const batch = Array.from({ length: 100 }, (_, i) => ({
    sensorId: 'temp-01',
    value: 20 + ((second + i) % 60) / 10,
    unit: 'celsius',
    timestamp: start + (second + i) * 1000,
  }));
  await gateway.sendBatch(batch);
}
const status = gateway.getStatus();
console.log(`queued: ${status.pendingSyncCount}`);
console.log(`downsampled: ${status.dropped.downsampled} readings into ${status.retention.aggregates} aggregates`);

// The link comes back: everything queued goes up, the aggregates as processed data.
gateway.configure({ cloudUrl: process.env.CLOUD_API_URL, apiKey: process.env.CLOUD_API_KEY });
let acknowledged = 0;
while (gateway.getStatus().pendingSyncCount > 0) acknowledged += (await gateway.forceSync()).acknowledged;
console.log(`acknowledged: ${acknowledged}`);
await gateway.stop();
