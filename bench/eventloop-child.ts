/**
 * One event-loop trial in a process of its own: a gateway drains a backlog of `backlog` readings, batch after
 * batch, to a transport that acknowledges after a simulated round trip, while open-loop callers send `rate`
 * readings a second with sendData(). Prints one JSON line: the event loop's delay (p50, p99, max, from
 * perf_hooks.monitorEventLoopDelay), the latency of those sendData() calls measured from when each was due (so
 * that a blocked loop cannot hide its own delay), and the drain rate.
 *
 * Durability is `normal` here (see below): the figures are the CPU's, not the disk's.
 *
 * `mode` is `inline` (workerThreads 0) or `workers` (workerThreads 1, and every batch sent to the thread, compact
 * ones too, whatever the pool's own rule says: this is how the rule was chosen).
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { monitorEventLoopDelay } from 'node:perf_hooks';
import { EdgeGateway } from '../src/index.js';
import { SqliteStorage } from '../src/storage/sqlite-storage.js';
import { EncoderPool } from '../src/sync/encoder-pool.js';
import type { OutgoingBatch, PingResult, SendResult, Transport } from '../src/transport/transport.js';

const [format = 'compact', batchSizeArg = '1000', mode = 'inline', backlogArg = '200000', rateArg = '1000'] =
  process.argv.slice(2);
const batchSize = Number(batchSizeArg);
const backlog = Number(backlogArg);
const rate = Number(rateArg);
/** The simulated round trip to the cloud, ms: a cloud on the local network. */
const ROUND_TRIP_MS = 5;
/** How often the callers wake; the readings due since the last wake are sent then, each timed from when it was due. */
const FEED_EVERY_MS = 5;

if (mode === 'workers') EncoderPool.prototype.offloads = () => true;

// The event loop's own share of sealing, measured where it happens: every synchronous step of a seal (reading the
// rows, encoding inline or handing them to the thread, writing the sealed batch) is timed. Less sensitive to a busy
// machine than the delay percentiles, which also count the time the OS gives other processes.
// Counted per full batch (the backlog's), while `measuring`; the median, since the OS may pause any one of them.
let measuring = false;
const sealMs: number[] = [];
let pendingMs = 0;
function timed<K extends 'sealNext' | 'readUnsealed' | 'sealRead'>(name: K): void {
  const original = SqliteStorage.prototype[name] as (...args: unknown[]) => unknown;
  Object.defineProperty(SqliteStorage.prototype, name, {
    value(this: SqliteStorage, ...args: unknown[]) {
      const t0 = performance.now();
      const result = original.apply(this, args);
      pendingMs += performance.now() - t0;
      if (name === 'readUnsealed') return result;
      if (measuring && (result as { count?: number } | undefined)?.count === batchSize) sealMs.push(pendingMs);
      pendingMs = 0;
      return result;
    },
  });
}
timed('sealNext');
timed('readUnsealed');
timed('sealRead');
const encode = EncoderPool.prototype.encode;
EncoderPool.prototype.encode = function (this: EncoderPool, ...args: Parameters<typeof encode>) {
  const t0 = performance.now();
  try {
    return encode.apply(this, args); // copies the rows to the thread before it returns
  } finally {
    pendingMs += performance.now() - t0;
  }
};

/** Acknowledges every batch after the round trip, without decoding it: the figures are the gateway's own. */
class AckTransport implements Transport {
  async sendBatch(batch: OutgoingBatch): Promise<SendResult> {
    await new Promise((resolve) => setTimeout(resolve, ROUND_TRIP_MS));
    return {
      status: 'acknowledged',
      replayed: false,
      ack: {
        ackThroughBatchNo: batch.batchNo,
        accepted: batch.count,
        duplicates: 0,
        serverTime: new Date().toISOString(),
      },
    };
  }
  async ping(): Promise<PingResult> {
    return { reachable: true, serverTime: new Date().toISOString() };
  }
  async close(): Promise<void> {}
}

const reading = (i: number, ts: number) => ({
  sensorId: `sensor-${i % 10}`,
  value: 20 + Math.round(Math.sin(i / 50) * 100) / 100,
  unit: 'celsius',
  tags: { location: 'warehouse-A' },
  timestamp: ts,
});

const dir = mkdtempSync(join(tmpdir(), 'edge-gateway-eventloop-'));
const gateway = new EdgeGateway({
  deviceId: 'eventloop',
  localDb: join(dir, 'edge.db'),
  transport: new AckTransport(),
  wireFormat: format as 'compact' | 'json',
  batchSize,
  workerThreads: mode === 'workers' ? 1 : 0,
  // Only forceSync() below drains: intake during the fill must not start cycles of its own.
  syncStrategy: 'fixed-interval',
  syncInterval: 86_400,
  maxOfflineQueueSize: 10 * backlog,
  // Commits without an fsync each: on a shared VM an fsync takes 0.2 to 10 ms, and its stalls (the same in every
  // mode) would drown what this trial compares, the encoding's.
  durability: 'normal',
});
await gateway.start();
await gateway.forceSync(); // waits out the cycle start() runs, so that the fill below is not drained as it lands

async function fill(n: number): Promise<void> {
  for (let i = 0; i < n; i += 1000) {
    await gateway.sendBatch(
      Array.from({ length: Math.min(1000, n - i) }, (_, j) => reading(i + j, 1_795_000_000_000 + i + j)),
    );
  }
}

async function drain(n: number): Promise<void> {
  let acknowledged = 0;
  while (acknowledged < n) acknowledged += (await gateway.forceSync()).acknowledged;
}

// Warm-up: the JIT, the page cache and (in workers mode) the thread, before anything is measured.
await fill(Math.min(backlog, 20 * batchSize));
await drain(Math.min(backlog, 20 * batchSize));
await fill(backlog);

const latencies: number[] = [];
let issued = 0;
let stopped = false;
const started = performance.now();
const feeder = setInterval(() => {
  if (stopped) return;
  const due = Math.floor(((performance.now() - started) / 1000) * rate);
  for (; issued < due; issued++) {
    const dueAt = started + (issued * 1000) / rate;
    gateway.sendData(reading(issued, Date.now())).then(
      () => latencies.push(performance.now() - dueAt),
      () => undefined,
    );
  }
}, FEED_EVERY_MS);

// The trial ends when the backlog is through: less than a batch left, which is what the callers keep adding.
measuring = true;
const delay = monitorEventLoopDelay({ resolution: 1 });
delay.enable();
const drainStart = performance.now();
const draining = drain(backlog);
await new Promise<void>((resolve) => {
  const poll = setInterval(() => {
    if (gateway.getStatus().pendingSyncCount >= batchSize) return;
    clearInterval(poll);
    resolve();
  }, 5);
});
const drainSeconds = (performance.now() - drainStart) / 1000;
delay.disable();
measuring = false;
stopped = true;
clearInterval(feeder);
await draining;
await new Promise((resolve) => setTimeout(resolve, 50)); // the last sendData() calls settle

latencies.sort((a, b) => a - b);
const pick = (q: number) => latencies[Math.min(latencies.length - 1, Math.floor(q * latencies.length))] ?? Number.NaN;
await gateway.stop();
rmSync(dir, { recursive: true, force: true });
process.stdout.write(
  `${JSON.stringify({
    format,
    batchSize,
    mode,
    loopP50Ms: delay.percentile(50) / 1e6,
    loopP99Ms: delay.percentile(99) / 1e6,
    loopMaxMs: delay.max / 1e6,
    sendP50Ms: pick(0.5),
    sendP99Ms: pick(0.99),
    sendMaxMs: latencies.at(-1) ?? Number.NaN,
    sends: latencies.length,
    drainPerSecond: backlog / drainSeconds,
    sealMsPerBatch: sealMs.sort((a, b) => a - b)[Math.floor(sealMs.length / 2)] ?? Number.NaN,
    batchesTimed: sealMs.length,
  })}\n`,
);
