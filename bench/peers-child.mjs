/**
 * One trial of the `peers` section, in a process of its own so that its memory is its own: one device-side store
 * (edge-gateway built from dist/, PouchDB on LevelDB, or MQTT.js with a LevelDB outgoing store), one phase, `n`
 * readings. The servers run in the parent (bench/run.ts); this process is the device. Prints one JSON line: the
 * rate, peak RSS, and the bytes this process's TCP client sockets wrote and read.
 *
 *   node bench/peers-child.mjs <peer> <phase> <n> <callers> <batchSize> [url] [apiKey]
 *
 *   peer    edge-full | edge-normal | pouchdb | mqtt
 *   phase   ingest-one  each reading written alone, `callers` concurrent writers, each awaiting its durable ack
 *           ingest-batch  batches of 1000, each awaited (not for mqtt, which has no batch write)
 *           e2e         written while syncing to the server at `url`, until the server acknowledged all `n`
 *
 * Plain JavaScript on the built package, so that no TypeScript loader weighs on any side's memory.
 */
import { subscribe } from 'node:diagnostics_channel';
import { mkdtempSync, rmSync } from 'node:fs';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { peakRssMb } from './peak-rss.mjs';

const [peer = 'edge-full', phase = 'ingest-one', nArg = '50000', callersArg = '1000', batchArg = '100', url, apiKey] =
  process.argv.slice(2);
const N = Number(nArg);
const CALLERS = Number(callersArg);
const BATCH = Number(batchArg);
const require = createRequire(import.meta.url);

// Bounded in time whatever a peer does: a trial takes seconds; one that stalls ends the run rather than hangs it.
setTimeout(() => {
  process.stderr.write(`peers-child: ${peer} ${phase} did not finish in 5 minutes\n`);
  process.exit(2);
}, 300_000).unref();

// Every TCP connection this process opens (node:http, node-fetch and MQTT.js all go through net.connect).
const sockets = [];
subscribe('net.client.socket', ({ socket }) => sockets.push(socket));

// The readings of bench/run.ts, field for field.
const reading = (i) => ({
  sensorId: `sensor-${i % 10}`,
  value: 20 + (i % 1000) / 100,
  unit: 'celsius',
  tags: { location: 'warehouse-A' },
  timestamp: 1_780_000_000_000 + i,
});
const batchOf = (from, size) => Array.from({ length: Math.min(size, N - from) }, (_, j) => reading(from + j));

/** Runs `write(i)` for i in [0, N) from CALLERS concurrent loops, each awaiting its own write. */
async function concurrently(write) {
  let next = 0;
  await Promise.all(
    Array.from({ length: CALLERS }, async () => {
      for (let i = next++; i < N; i = next++) await write(i);
    }),
  );
}

const dir = mkdtempSync(join(tmpdir(), `edge-gateway-peers-${peer}-`));

async function edge() {
  const { EdgeGateway } = await import(join(import.meta.dirname, '..', 'dist', 'index.js'));
  const durability = peer === 'edge-normal' ? 'normal' : 'full';
  const online = phase === 'e2e';
  const gateway = new EdgeGateway({
    deviceId: 'peers-bench',
    localDb: join(dir, 'edge.db'),
    durability,
    maxOfflineQueueSize: 10 * N,
    ...(online ? { cloudUrl: url, apiKey, batchSize: BATCH, syncStrategy: 'on-change' } : {}),
  });
  await gateway.start();
  const t0 = performance.now();
  if (phase === 'ingest-one') await concurrently((i) => gateway.sendData(reading(i)));
  else for (let i = 0; i < N; i += 1000) await gateway.sendBatch(batchOf(i, 1000));
  if (online) while (gateway.getStatus().pendingSyncCount > 0) await gateway.forceSync();
  const seconds = (performance.now() - t0) / 1000;
  await gateway.stop();
  return seconds;
}

async function pouchdb() {
  const PouchDB = require('pouchdb-node');
  const db = new PouchDB(join(dir, 'local'));
  // A deterministic _id per reading, so that a write replayed after a crash is refused as a conflict rather than
  // stored twice: the only deduplication PouchDB offers.
  const doc = (i) => ({ _id: `peers-bench:${String(i).padStart(10, '0')}`, ...reading(i) });
  const docsOf = (from, size) => Array.from({ length: Math.min(size, N - from) }, (_, j) => doc(from + j));
  const t0 = performance.now();
  if (phase === 'ingest-one') await concurrently((i) => db.put(doc(i)));
  else if (phase === 'ingest-batch') for (let i = 0; i < N; i += 1000) await db.bulkDocs(docsOf(i, 1000));
  else {
    const remote = new PouchDB(url);
    let written = 0;
    const replication = db.replicate.to(remote, { live: true, retry: true, batch_size: BATCH });
    const acknowledged = new Promise((resolve, reject) => {
      replication.on('change', (info) => {
        written = info.docs_written;
        if (written >= N) resolve();
      });
      replication.on('error', reject);
    });
    for (let i = 0; i < N; i += 1000) await db.bulkDocs(docsOf(i, 1000));
    await acknowledged;
    replication.cancel();
    await remote.close();
  }
  const seconds = (performance.now() - t0) / 1000;
  await db.close();
  return seconds;
}

async function mqtt() {
  const mqttjs = require('mqtt');
  const levelStore = require('mqtt-level-store');
  const manager = levelStore(join(dir, 'mqtt-store'));
  const topic = 'telemetry/peers-bench';
  const options = { clientId: 'peers-bench', outgoingStore: manager.outgoing, incomingStore: manager.incoming };
  let seconds;
  if (phase === 'ingest-one') {
    // Offline: publish() puts each QoS 1 packet in the outgoing store; cbStorePut is its acknowledgement.
    const client = mqttjs.connect('mqtt://127.0.0.1:1', { ...options, manualConnect: true });
    const t0 = performance.now();
    await concurrently(
      (i) =>
        new Promise((resolve) =>
          client.publish(topic, JSON.stringify(reading(i)), { qos: 1, cbStorePut: () => resolve() }),
        ),
    );
    seconds = (performance.now() - t0) / 1000;
    // end() on a client that never connected throws inside MQTT.js 5; the process exits right after anyway.
  } else {
    // Online: each QoS 1 publish is stored, sent, and settled by the broker's PUBACK.
    const client = await mqttjs.connectAsync(url, options);
    const t0 = performance.now();
    await concurrently((i) => client.publishAsync(topic, JSON.stringify(reading(i)), { qos: 1 }));
    seconds = (performance.now() - t0) / 1000;
    await client.endAsync();
  }
  await new Promise((resolve) => manager.close(resolve));
  return seconds;
}

const runs = { 'edge-full': edge, 'edge-normal': edge, pouchdb, mqtt };
const seconds = await runs[peer]();
const bytesUp = sockets.reduce((sum, s) => sum + s.bytesWritten, 0);
const bytesDown = sockets.reduce((sum, s) => sum + s.bytesRead, 0);
rmSync(dir, { recursive: true, force: true });
process.stdout.write(
  `${JSON.stringify({
    peer,
    phase,
    n: N,
    rate: N / seconds,
    peakRssMb: peakRssMb(),
    bytesUp,
    bytesDown,
  })}\n`,
);
process.exit(0);
