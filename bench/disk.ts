/**
 * The disk section of `npm run bench`: bytes a queued reading takes in the local database (what sizing an outage
 * needs: disk = rate × bytes per reading × outage), for three shapes of reading, measured on the file after
 * `stop()` (WAL checkpointed), net of the empty database.
 */
import { statSync } from 'node:fs';
import { type DataPointInput, EdgeGateway } from '../src/index.js';

const SHAPES = {
  'bare (sensorId, value)': (i: number) => ({ sensorId: `sensor-${i % 10}`, value: 20 + (i % 1000) / 100 }),
  "the seed's (unit, one tag)": (i: number) => ({
    sensorId: `temp-${String(i % 10).padStart(2, '0')}`,
    value: 20 + (i % 1000) / 100,
    unit: 'celsius',
    tags: { location: 'warehouse-A' },
  }),
  'four tags': (i: number) => ({
    sensorId: `line-3/press-${i % 10}/pressure`,
    value: Math.random() * 200,
    unit: 'bar',
    tags: { site: 'plant-north', line: 'line-3', shift: 'B', firmware: '4.2.1' },
  }),
} as const;

async function bytesPerReading(path: string, make: (i: number) => DataPointInput, n: number): Promise<number> {
  const empty = new EdgeGateway({ deviceId: 'bench-disk', localDb: path, maxOfflineQueueSize: 10 * n });
  await empty.start();
  await empty.stop();
  const before = statSync(path).size;
  const gateway = new EdgeGateway({ deviceId: 'bench-disk', localDb: path, maxOfflineQueueSize: 10 * n });
  await gateway.start();
  const start = 1_780_000_000_000;
  for (let i = 0; i < n; i += 1000) {
    await gateway.sendBatch(
      Array.from({ length: 1000 }, (_, j) => ({ ...make(i + j), timestamp: start + (i + j) * 1000 })),
    );
  }
  await gateway.stop();
  return (statSync(path).size - before) / n;
}

export async function diskSection(n: number, path: (name: string) => string): Promise<void> {
  console.log(`## Disk: bytes per queued reading, ${n.toLocaleString('en-US')} readings\n`);
  console.log('| reading | bytes per reading on disk | per day at 10 / 100 / 1000 readings/s |');
  console.log('|---|---:|---|');
  for (const [index, [name, make]] of Object.entries(SHAPES).entries()) {
    const bytes = await bytesPerReading(path(`disk-${index}`), make, n);
    const perDay = [10, 100, 1000].map((rate) => `${((bytes * rate * 86_400) / 1e9).toFixed(2)} GB`).join(' / ');
    console.log(`| ${name} | ${bytes.toFixed(1)} | ${perDay} |`);
  }
  console.log('');
}
