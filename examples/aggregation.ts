// Local analytics: one-minute aggregates instead of raw readings, report by exception for a slow sensor, and a
// threshold alert with hysteresis; then the local history a display would read while offline.
import { Deadband, EdgeGateway, ThresholdAlerts, WindowedAggregation } from 'edge-gateway';

const gateway = new EdgeGateway({
  deviceId: 'press-line-4',
  cloudUrl: process.env.CLOUD_API_URL,
  apiKey: process.env.CLOUD_API_KEY,
  localDb: process.env.LOCAL_DB_PATH,
  processors: [
    // Built-ins run in this order, inside the commit that stores each reading.
    new Deadband({ sensors: ['oil-temp'], absolute: 0.5, heartbeat: 300 }),
    new ThresholdAlerts({
      rules: [{ sensors: ['pressure'], above: 180, hysteresis: 10, hold: 5, severity: 'critical' }],
    }),
    new WindowedAggregation({ sensors: ['pressure'], window: 60, grace: 5, forwardRaw: false }),
  ],
});
gateway.on('alert', (a) => console.log(`alert ${a.severity}: ${a.message}`));

await gateway.start();
// Ten minutes of a pressure sensor at 1 Hz (with a surge in minute 6) and an oil thermometer drifting slowly.
// Ten minutes that ended a while ago, aligned to ten minutes as windows are.
const start = Math.floor(Date.now() / 600_000) * 600_000 - 20 * 60_000;
const readings = [];
for (let s = 0; s < 600; s++) {
  const surge = s >= 360 && s < 400 ? 50 : 0;
  readings.push({
    sensorId: 'pressure',
    value: 150 + 10 * Math.sin(s / 30) + surge,
    unit: 'bar',
    timestamp: start + s * 1000,
  });
  readings.push({ sensorId: 'oil-temp', value: 60 + s / 200, unit: 'C', timestamp: start + s * 1000 });
}
const kept = await gateway.sendBatch(readings);
console.log(`readings in: ${readings.length}, kept: ${kept}`);
// The last window closes once the clock passes its end (plus grace); the gateway checks every second.
await gateway.flushProcessors();

const { points } = gateway.query({ sensorId: 'pressure', from: start, to: start + 600_000 });
for (const p of points.slice(0, 3)) {
  console.log(`${p.timestamp.toISOString()} count ${p.count} mean ${p.mean.toFixed(2)} max ${p.max.toFixed(2)}`);
}
const tenMinutes = gateway.query({ sensorId: 'pressure', from: start, to: start + 600_000, resolution: 600 });
console.log(
  `aggregates: ${points.length} one-minute windows; one ten-minute window of ${tenMinutes.points[0]?.count} readings`,
);
await gateway.stop();
