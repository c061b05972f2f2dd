/**
 * One backlog trial in a process of its own: fills a gateway's queue to `backlog` readings (local only), then
 * measures, with that backlog in place, the cost per reading of ingesting 100k more (sendBatch of 1000) and of
 * draining 100k (sealing, encoding, acknowledging through an in-memory transport: the gateway's side of a sync),
 * resident memory, and the time start() takes on the full database. Prints one JSON line.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { EdgeGateway } from '../src/index.js';
import { MemoryTransport } from '../src/testing/index.js';

const backlog = Number(process.argv[2] ?? 10_000);
const SAMPLE = 100_000;
const dir = mkdtempSync(join(tmpdir(), 'edge-gateway-backlog-'));
const localDb = join(dir, 'edge.db');
const batch = (from: number) =>
  Array.from({ length: 1000 }, (_, j) => ({
    sensorId: `sensor-${(from + j) % 10}`,
    value: 20 + ((from + j) % 1000) / 100,
    unit: 'celsius',
    timestamp: 1_795_000_000_000 + from + j,
  }));

// A transport that acknowledges without decoding: the drain figure is the gateway's own work.
class AckTransport extends MemoryTransport {
  override async sendBatch(b: Parameters<MemoryTransport['sendBatch']>[0]) {
    return {
      status: 'acknowledged' as const,
      replayed: false,
      ack: { ackThroughBatchNo: b.batchNo, accepted: b.count, duplicates: 0, serverTime: new Date().toISOString() },
    };
  }
}

const local = { deviceId: 'backlog', localDb, batchSize: 1000, maxOfflineQueueSize: backlog + 10 * SAMPLE };
let gateway = new EdgeGateway(local);
await gateway.start();
for (let i = 0; i < backlog; i += 1000) await gateway.sendBatch(batch(i));
await gateway.stop();

// Start-up on the full database, then ingest with the backlog in place.
let t = performance.now();
gateway = new EdgeGateway(local);
await gateway.start();
const startMs = performance.now() - t;
t = performance.now();
for (let i = 0; i < SAMPLE; i += 1000) await gateway.sendBatch(batch(backlog + i));
const ingestUs = ((performance.now() - t) * 1000) / SAMPLE;
await gateway.stop();

// Drain: the first sync cycle after start (up to 1000 batches of 1000) through an acknowledging transport.
gateway = new EdgeGateway({
  ...local,
  transport: new AckTransport(),
  syncStrategy: 'fixed-interval',
  syncInterval: 86_400,
});
// The library's timers are unref'd; hold the process while the first cycle runs.
const hold = setInterval(() => {}, 1000);
const firstCycle = new Promise<{ acknowledged: number; durationMs: number }>((resolve) =>
  gateway.once('sync', resolve),
);
await gateway.start();
const cycle = await firstCycle;
clearInterval(hold);
const drainUs = (cycle.durationMs * 1000) / cycle.acknowledged;
const rssMb = process.memoryUsage.rss() / 1048576;
await gateway.stop();
rmSync(dir, { recursive: true, force: true });
process.stdout.write(
  `${JSON.stringify({ backlog, startMs, ingestUs, drainUs, drained: cycle.acknowledged, rssMb })}\n`,
);
