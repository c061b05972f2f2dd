import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { CloudServer } from '../cloud/cloud-server.js';
import type { StoredPoint } from '../cloud/cloud-store.js';
import { EdgeGateway } from '../gateway/edge-gateway.js';
import { type CliIo, processIo } from './cli.js';

const SENSORS = ['temp-01', 'temp-02', 'pressure-01', 'flow-01'];
const API_KEY = 'demo-key';

/** The demo's timeline. */
export interface DemoTimeline {
  /** Readings per second per sensor. @default 50 */
  rateHz: number;
  /** How long the cloud is up before the outage. @default 4000 */
  onlineMs: number;
  /** How long the cloud is away. @default 5000 */
  outageMs: number;
  /** How long readings keep coming after the cloud is back. @default 3000 */
  afterMs: number;
}

const DEFAULT_TIMELINE: DemoTimeline = { rateHz: 50, onlineMs: 4000, outageMs: 5000, afterMs: 3000 };

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

function bar(value: number, max: number, width = 24): string {
  const filled = max === 0 ? 0 : Math.min(width, Math.round((value / max) * width));
  return `${'█'.repeat(filled)}${'░'.repeat(width - filled)}`;
}

async function fetchAll(url: string, deviceId: string): Promise<StoredPoint[]> {
  const points: StoredPoint[] = [];
  let cursor = '';
  for (;;) {
    const response = await fetch(
      `${url}/telemetry?deviceId=${deviceId}&limit=10000${cursor ? `&cursor=${cursor}` : ''}`,
      {
        headers: { authorization: `Bearer ${API_KEY}` },
      },
    );
    const page = (await response.json()) as { points: StoredPoint[]; nextCursor: string | null };
    points.push(...page.points);
    if (!page.nextCursor) return points;
    cursor = page.nextCursor;
  }
}

/**
 * The demo: a cloud server and a gateway on this machine, four simulated sensors, the cloud taken away for a few
 * seconds and brought back, and a verification computed from the cloud's own data.
 */
export async function runDemo(io: CliIo, timeline: Partial<DemoTimeline> = {}): Promise<number> {
  const { rateHz: RATE_HZ, ...PHASES } = { ...DEFAULT_TIMELINE, ...timeline };
  const dir = mkdtempSync(join(tmpdir(), 'edge-gateway-demo-'));
  const cloudDb = join(dir, 'cloud.db');
  let cloud: CloudServer | undefined = await CloudServer.listen({ port: 0, dbPath: cloudDb, apiKeys: [API_KEY] });
  const port = cloud.port;
  const url = cloud.url;
  const deviceId = 'demo-device-001';
  const gateway = new EdgeGateway({
    deviceId,
    cloudUrl: url,
    apiKey: API_KEY,
    localDb: join(dir, 'edge_gateway.db'),
    syncStrategy: 'adaptive',
    syncInterval: 1,
    batchSize: 100,
    initialBackoff: 0.25,
    maxBackoff: 1,
    connectionTimeout: 2,
  });
  let events = 0;
  gateway.on('offline', () => events++);
  gateway.on('online', () => events++);
  await gateway.start();

  io.out(`edge-gateway demo: cloud at ${url}, gateway database in ${dir}`);
  io.out(
    `${SENSORS.length} sensors at ${RATE_HZ} readings/s each; the cloud goes away after ${PHASES.onlineMs / 1000} s for ${PHASES.outageMs / 1000} s.\n`,
  );

  // Each reading gets its own timestamp on its sensor's grid, so the cloud's copy can be matched one to one.
  const start = Date.now();
  const sent = new Set<string>();
  let peakQueue = 0;
  let sending = true;
  let failures = 0;
  const producer = (async () => {
    for (let tick = 0; sending; tick++) {
      const due = start + (tick * 1000) / RATE_HZ;
      const wait = due - Date.now();
      if (wait > 0) await sleep(wait);
      await Promise.all(
        SENSORS.map(async (sensorId, i) => {
          const value = Math.round((20 + i * 10 + Math.sin(tick / 25 + i) * 5 + Math.random()) * 100) / 100;
          try {
            await gateway.sendData({
              sensorId,
              value,
              unit: i < 2 ? 'celsius' : 'bar',
              timestamp: due,
              tags: { site: 'demo' },
            });
            sent.add(`${sensorId}@${Math.trunc(due)}`);
          } catch {
            failures++;
          }
        }),
      );
    }
  })();

  const tty = io === processIo && process.stdout.isTTY === true;
  let cloudState = 'UP  ';
  const show = () => {
    const status = gateway.getStatus();
    peakQueue = Math.max(peakQueue, status.pendingSyncCount);
    const elapsed = ((Date.now() - start) / 1000).toFixed(1).padStart(5);
    const line = `[${elapsed}s] cloud ${cloudState} | sent ${String(sent.size).padStart(5)} | queued ${String(status.pendingSyncCount).padStart(5)} ${bar(status.pendingSyncCount, Math.max(peakQueue, 1))} | ${status.isOnline ? 'online ' : 'offline'}`;
    if (tty) process.stdout.write(`\r${line}`);
    else io.out(line);
  };
  const ticker = setInterval(show, tty ? 200 : 1000);

  await sleep(PHASES.onlineMs);
  await cloud.close();
  cloud = undefined;
  cloudState = 'DOWN';
  if (tty) process.stdout.write('\n');
  io.out('--- the cloud is gone: readings keep being accepted and queue up on the device ---');
  await sleep(PHASES.outageMs);
  cloud = await CloudServer.listen({ port, dbPath: cloudDb, apiKeys: [API_KEY] });
  cloudState = 'UP  ';
  if (tty) process.stdout.write('\n');
  io.out('--- the cloud is back: the queue drains ---');
  await sleep(PHASES.afterMs);
  sending = false;
  await producer;
  const deadline = Date.now() + 20_000;
  while (gateway.getStatus().pendingSyncCount > 0 && Date.now() < deadline) {
    await gateway.forceSync();
    await sleep(100);
  }
  show();
  clearInterval(ticker);
  if (tty) process.stdout.write('\n');
  await gateway.stop();

  // The verdict comes from the cloud's own data, fetched over its API.
  const stored = await fetchAll(url, deviceId);
  const seen = new Map<string, number>();
  for (const point of stored) {
    const key = `${point.sensorId}@${Date.parse(point.timestamp)}`;
    seen.set(key, (seen.get(key) ?? 0) + 1);
  }
  let lost = 0;
  for (const key of sent) if (!seen.has(key)) lost++;
  const duplicates = [...seen.values()].reduce((sum, n) => sum + (n - 1), 0);
  const stats = (await (
    await fetch(`${url}/telemetry/stats?deviceId=${deviceId}`, { headers: { authorization: `Bearer ${API_KEY}` } })
  ).json()) as { batches: number; duplicateBatches: number };
  await cloud.close();
  rmSync(dir, { recursive: true, force: true });

  io.out(
    `\nQueue peaked at ${peakQueue} readings during the outage; ${stats.batches} batches stored, ${stats.duplicateBatches} replays answered from the ledger, ${events} online/offline transitions.`,
  );
  io.out(
    `sent ${sent.size}, stored in cloud ${stored.length}, lost ${lost}, duplicates ${duplicates}${failures ? `, refused on intake ${failures}` : ''}`,
  );
  const ok = lost === 0 && duplicates === 0 && stored.length === sent.size && failures === 0;
  io.out(ok ? 'OK: every accepted reading is in the cloud exactly once.' : 'FAILED: see the counts above.');
  return ok ? 0 : 1;
}
