// The seed's Basic Usage, in TypeScript. Run it: CLOUD_API_URL=... CLOUD_API_KEY=... npx tsx examples/basic-usage.ts
import { DataPoint, EdgeGateway } from 'edge-gateway';

const gateway = new EdgeGateway({
  deviceId: 'device-001',
  cloudUrl: process.env.CLOUD_API_URL ?? 'https://api.example.com/api/v1',
  apiKey: process.env.CLOUD_API_KEY ?? 'your-api-key',
  localDb: process.env.LOCAL_DB_PATH, // default ./data/edge_gateway.db
});

await gateway.start();

// Send data (works offline too!): it resolves once the reading is on disk.
const data = new DataPoint({ sensorId: 'temp-01', value: 23.5, unit: 'celsius', tags: { location: 'warehouse-A' } });
await gateway.sendData(data);

// The gateway syncs by itself when online; stop() sends what is queued (within stopTimeout) before closing.
const status = gateway.getStatus();
console.log(`Online: ${status.isOnline}, queue size: ${status.pendingSyncCount}`);

await gateway.stop();
