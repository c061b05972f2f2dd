/**
 * A share of the fleet's gateways in one process: `node --import tsx fleet-gateways.ts <config JSON>`.
 *
 * Each gateway takes `rate` readings a second (in ticks of 100 ms, stamped with the time of intake) and, every
 * `editEveryMs` or so, writes one of the fleet's shared record keys, which every other gateway writes too: conflicts
 * resolved last-write-wins. Its `cloudUrl` lists every node, starting at a different one per gateway, so that load
 * spreads and fails over.
 *
 * Lines on stdout: `ready`, `progress <accepted>` each second, `drained <json>`, `snapshot <json>`. Commands on stdin,
 * one a line: `stop` (stop intake and edits, sync until nothing is pending, then print `drained`), `settle` (pull
 * every change, then print `snapshot`: what each gateway holds for each shared key). It stops its gateways and exits
 * when stdin closes.
 */
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { EdgeGateway } from '../../../src/index.js';

export interface FleetGatewaysConfig {
  /** Gateway numbers `first` .. `first + count - 1`: deviceIds `fleet-gw-{n}`. */
  first: number;
  count: number;
  /** Base URLs of the server nodes. */
  urls: string[];
  apiKey: string;
  /** Folder for the gateways' databases. */
  dir: string;
  /** Readings a second, per gateway. */
  rate: number;
  /** Mean time between two edits of a shared record by one gateway, in ms. */
  editEveryMs: number;
  /** The shared record keys, in collection `setpoints`. */
  keys: string[];
  /** The gateways' `syncInterval`, in seconds. */
  syncInterval: number;
  /** Longest time `stop` syncs for before it reports what is still pending, in ms. */
  drainTimeoutMs: number;
}

/** What one gateway reports when drained. */
export interface DrainedGateway {
  deviceId: string;
  /** Readings its `sendBatch()` accepted: seq 1 .. accepted. */
  accepted: number;
  /** Readings and record edits still waiting for the cloud (0 and 0 when drained). */
  pending: number;
  pendingRecords: number;
  /** Conflicts on shared records it resolved. */
  conflicts: number;
  /** Record edits it made. */
  edits: number;
  /** Intake calls that failed. */
  intakeErrors: number;
}

/** What one gateway holds for each shared key: null for none or a tombstone. */
export interface GatewaySnapshot {
  deviceId: string;
  records: Record<string, { value: unknown; version: number } | null>;
}

const config = JSON.parse(process.argv[2] ?? '{}') as FleetGatewaysConfig;

interface Member {
  gateway: EdgeGateway;
  deviceId: string;
  accepted: number;
  conflicts: number;
  edits: number;
  intakeErrors: number;
  /** Readings owed by the rate and not taken yet (fractional rates accumulate). */
  owed: number;
  nextEditAt: number;
}

const members: Member[] = [];
for (let i = 0; i < config.count; i++) {
  const n = config.first + i;
  const urls = config.urls.map((_, j) => config.urls[(n + j) % config.urls.length] as string);
  const deviceId = `fleet-gw-${n}`;
  const gateway = new EdgeGateway({
    deviceId,
    localDb: join(config.dir, `${deviceId}.db`),
    cloudUrl: urls,
    apiKey: config.apiKey,
    syncStrategy: 'fixed-interval',
    syncInterval: config.syncInterval,
    batchSize: 1000,
    // The fleet measures the cloud side: the gateways' fsyncs would only compete with it for the two cores.
    durability: 'normal',
    initialBackoff: 0.1,
    maxBackoff: 1,
    connectionTimeout: 5,
    stopTimeout: 2,
  });
  const member: Member = {
    gateway,
    deviceId,
    accepted: 0,
    conflicts: 0,
    edits: 0,
    intakeErrors: 0,
    owed: 0,
    nextEditAt: Date.now() + Math.random() * config.editEveryMs,
  };
  gateway.on('conflict', () => {
    member.conflicts++;
  });
  gateway.on('error', () => undefined);
  members.push(member);
}
await Promise.all(members.map((m) => m.gateway.start()));

let running = true;
const inFlight = new Set<Promise<unknown>>();
const track = (promise: Promise<unknown>) => {
  inFlight.add(promise);
  void promise.finally(() => inFlight.delete(promise));
};

let lastTick = Date.now();
const tick = setInterval(() => {
  if (!running) return;
  const now = Date.now();
  // By the clock, not by the tick: a late tick (a busy event loop) takes what the rate owes since the last one.
  const owed = (config.rate * (now - lastTick)) / 1000;
  lastTick = now;
  for (const m of members) {
    m.owed += owed;
    const n = Math.floor(m.owed);
    m.owed -= n;
    if (n > 0) {
      const readings = Array.from({ length: n }, (_, j) => ({
        sensorId: `sensor-${j % 4}`,
        value: m.accepted + j,
        timestamp: now,
      }));
      track(
        m.gateway.sendBatch(readings).then(
          () => {
            m.accepted += n;
          },
          () => {
            m.intakeErrors++;
          },
        ),
      );
    }
    if (now >= m.nextEditAt) {
      m.nextEditAt = now + config.editEveryMs * (0.5 + Math.random());
      const key = config.keys[Math.floor(Math.random() * config.keys.length)] as string;
      m.edits++;
      track(m.gateway.records.put('setpoints', key, { by: m.deviceId, edit: m.edits }).catch(() => undefined));
    }
  }
}, 100);

const progress = setInterval(() => {
  process.stdout.write(`progress ${members.reduce((sum, m) => sum + m.accepted, 0)}\n`);
}, 1000);

const idle = (m: Member) => m.gateway.getStatus().pendingSyncCount === 0 && m.gateway.records.pendingCount() === 0;

async function drain(): Promise<void> {
  running = false;
  clearInterval(tick);
  await Promise.all([...inFlight]);
  const deadline = Date.now() + config.drainTimeoutMs;
  await Promise.all(
    members.map(async (m) => {
      while (!idle(m) && Date.now() < deadline) {
        await m.gateway.forceSync().catch(() => undefined);
        if (!idle(m)) await sleep(50);
      }
    }),
  );
  const report: DrainedGateway[] = members.map((m) => ({
    deviceId: m.deviceId,
    accepted: m.accepted,
    pending: m.gateway.getStatus().pendingSyncCount,
    pendingRecords: m.gateway.records.pendingCount(),
    conflicts: m.conflicts,
    edits: m.edits,
    intakeErrors: m.intakeErrors,
  }));
  process.stdout.write(`drained ${JSON.stringify(report)}\n`);
}

async function settle(): Promise<void> {
  for (let round = 0; round < 2; round++) {
    await Promise.all(members.map((m) => m.gateway.forceSync().catch(() => undefined)));
  }
  const report: GatewaySnapshot[] = members.map((m) => ({
    deviceId: m.deviceId,
    records: Object.fromEntries(
      config.keys.map((key) => {
        const record = m.gateway.records.get('setpoints', key);
        return [key, record && !record.deleted ? { value: record.value, version: record.version } : null];
      }),
    ),
  }));
  process.stdout.write(`snapshot ${JSON.stringify(report)}\n`);
}

let partial = '';
process.stdin.setEncoding('utf8').on('data', (text: string) => {
  const lines = (partial + text).split('\n');
  partial = lines.pop() ?? '';
  for (const line of lines) {
    if (line === 'stop') void drain();
    else if (line === 'settle') void settle();
  }
});
process.stdin.on('end', () => {
  running = false;
  clearInterval(tick);
  clearInterval(progress);
  void Promise.all(members.map((m) => m.gateway.stop())).finally(() => process.exit(0));
});
process.stdout.write('ready\n');
