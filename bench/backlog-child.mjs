/**
 * One backlog trial. `fill` fills the queue of the database at `localDb` to `backlog` readings (local only), in a
 * process of its own. `measure`, in a fresh process, with that backlog in place: the cost per reading of ingesting
 * 100k more (sendBatch of 1000) and of draining 100k (sealing, encoding, acknowledging through an in-memory
 * transport: the gateway's side of a sync), resident memory after the drain and at its peak, and the time start()
 * takes on the full database. Prints one JSON line.
 */
import { join } from 'node:path';
import { peakRssMb } from './peak-rss.mjs';

// Plain JavaScript on the built package, as users run it: no TypeScript loader weighs on the memory figures.
const { EdgeGateway } = await import(join(import.meta.dirname, '..', 'dist', 'index.js'));
const { MemoryTransport } = await import(join(import.meta.dirname, '..', 'dist', 'testing.js'));

const [backlogArg = '10000', phase = 'measure', localDb = ''] = process.argv.slice(2);
const backlog = Number(backlogArg);
const SAMPLE = 100_000;
const batch = (from) =>
  Array.from({ length: 1000 }, (_, j) => ({
    sensorId: `sensor-${(from + j) % 10}`,
    value: 20 + ((from + j) % 1000) / 100,
    unit: 'celsius',
    timestamp: 1_795_000_000_000 + from + j,
  }));

// A transport that acknowledges without decoding (the drain figure is the gateway's own work), `DRAINED` batches,
// then answers "unavailable": every backlog size drains the same amount, so that memory is compared on equal work.
const DRAINED = 100;
class AckTransport extends MemoryTransport {
  acked = 0;
  firstSendAt = 0;
  #done;
  done = new Promise((resolve) => {
    this.#done = resolve;
  });
  async sendBatch(b) {
    this.firstSendAt ||= performance.now();
    if (this.acked >= DRAINED) return { status: 'retryable', code: 'server', message: 'the benchmark drained enough' };
    if (++this.acked === DRAINED) setImmediate(() => this.#done(performance.now()));
    return {
      status: 'acknowledged',
      replayed: false,
      ack: { ackThroughBatchNo: b.batchNo, accepted: b.count, duplicates: 0, serverTime: new Date().toISOString() },
    };
  }
}

const local = { deviceId: 'backlog', localDb, batchSize: 1000, maxOfflineQueueSize: backlog + 10 * SAMPLE };

if (phase === 'fill') {
  // The backlog is made in a process of its own: what filling it allocated is not counted against the measure.
  const gateway = new EdgeGateway(local);
  await gateway.start();
  for (let i = 0; i < backlog; i += 1000) await gateway.sendBatch(batch(i));
  await gateway.stop();
  process.stdout.write(`${JSON.stringify({ filled: backlog })}\n`);
} else {
  // Start-up on the full database, then ingest with the backlog in place.
  let t = performance.now();
  let gateway = new EdgeGateway(local);
  await gateway.start();
  const startMs = performance.now() - t;
  t = performance.now();
  for (let i = 0; i < SAMPLE; i += 1000) await gateway.sendBatch(batch(backlog + i));
  const ingestUs = ((performance.now() - t) * 1000) / SAMPLE;
  await gateway.stop();

  // Drain: the first 100 batches of 1000 after start, through an acknowledging transport.
  const transport = new AckTransport();
  gateway = new EdgeGateway({ ...local, transport, syncStrategy: 'fixed-interval', syncInterval: 86_400 });
  // The library's timers are unref'd; hold the process while the drain runs.
  const hold = setInterval(() => {}, 1000);
  await gateway.start();
  const drainedAt = await transport.done;
  clearInterval(hold);
  // From the first batch sent (start-up, measured above, left out) to the last acknowledged.
  const drainUs = ((drainedAt - transport.firstSendAt) * 1000) / (DRAINED * 1000);
  const rssMb = process.memoryUsage.rss() / 1048576;
  await gateway.stop();
  const peakMb = peakRssMb();
  process.stdout.write(
    `${JSON.stringify({ backlog, startMs, ingestUs, drainUs, drained: transport.acked * 1000, rssMb, peakRssMb: peakMb })}\n`,
  );
}
