import { type ChildProcess, spawn } from 'node:child_process';
import { copyFileSync, existsSync, mkdtempSync, rmSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import BetterSqlite3 from 'better-sqlite3-multiple-ciphers';
import { afterEach, describe, expect, it } from 'vitest';
import { CloudServer, type CloudStore, type StoredPoint } from '../../src/cloud/index.js';
import { mulberry32 } from '../chaos/lib/chaos-config.js';
import { HookedCloudStore } from '../chaos/lib/crash-cloud-store.js';

const ROOT = fileURLToPath(new URL('../..', import.meta.url));
const FIXTURE = fileURLToPath(new URL('../fixtures/crash-gateway.ts', import.meta.url));
const API_KEY = 'crash-key';
const DEVICE = 'crash-device';
/** Counters of run r start at r * RUN_SPAN + 1, so that no two runs can send the same counter. */
const RUN_SPAN = 1_000_000;
const SEED = 0x5eed_c0de;

/** A child gateway, with what it printed so far. */
interface Child {
  process: ChildProcess;
  /** Counters whose sendData() resolved, as the child printed them. */
  acked: number[];
  /** Complete lines it printed. */
  lines: string[];
  stderr: string;
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  /**
   * When set, the child is SIGKILLed as soon as this many acknowledgements have arrived: the moment an
   * acknowledgement that ran ahead of its commit would be lost.
   */
  killAtAck?: number;
}

const children: Child[] = [];
const servers: CloudServer[] = [];
const dirs: string[] = [];

afterEach(async () => {
  for (const child of children.splice(0)) {
    if (child.process.exitCode === null && child.process.signalCode === null) child.process.kill('SIGKILL');
    await child.exited;
  }
  await Promise.all(servers.splice(0).map((server) => server.close()));
  for (const dir of dirs.splice(0)) rmSync(dir, { recursive: true, force: true });
});

function tempDir(): string {
  const dir = mkdtempSync(join(tmpdir(), 'edge-gateway-crash-'));
  dirs.push(dir);
  return dir;
}

/** A loopback port nothing listens on (until the test starts the cloud there). */
async function freePort(): Promise<number> {
  const probe = createServer();
  await new Promise<void>((resolve) => probe.listen(0, '127.0.0.1', resolve));
  const { port } = probe.address() as { port: number };
  await new Promise<void>((resolve) => probe.close(() => resolve()));
  return port;
}

function spawnGateway(args: string[]): Child {
  // stdin stays open: the child exits when it closes, so it cannot outlive this process.
  const proc = spawn(process.execPath, ['--import', 'tsx', FIXTURE, ...args], {
    cwd: ROOT,
    stdio: ['pipe', 'pipe', 'pipe'],
  });
  const child: Child = {
    process: proc,
    acked: [],
    lines: [],
    stderr: '',
    exited: new Promise((resolve) => proc.once('close', (code, signal) => resolve({ code, signal }))),
  };
  let partial = '';
  proc.stdout?.setEncoding('utf8').on('data', (text: string) => {
    const parts = (partial + text).split('\n');
    // A line cut short by SIGKILL has no newline: it is not counted.
    partial = parts.pop() ?? '';
    for (const line of parts) {
      child.lines.push(line);
      const ack = /^ack (\d+)$/.exec(line);
      if (ack) child.acked.push(Number(ack[1]));
    }
    if (child.killAtAck !== undefined && child.acked.length >= child.killAtAck) proc.kill('SIGKILL');
  });
  proc.stderr?.setEncoding('utf8').on('data', (text: string) => {
    child.stderr += text;
  });
  children.push(child);
  return child;
}

async function waitFor(what: string, child: Child, condition: () => boolean | Promise<boolean>, timeoutMs = 15_000) {
  const deadline = Date.now() + timeoutMs;
  while (!(await condition())) {
    if (child.process.exitCode !== null || child.process.signalCode !== null) {
      const how = child.process.signalCode ?? child.process.exitCode;
      throw new Error(`the gateway exited (${how}) before ${what}; stderr: ${child.stderr}`);
    }
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}; stderr: ${child.stderr}`);
    await sleep(10);
  }
}

/** How the child ended, within `timeoutMs`. */
async function exitOf(child: Child, timeoutMs = 15_000) {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`the gateway did not exit; stderr: ${child.stderr}`)), timeoutMs);
  });
  try {
    return await Promise.race([child.exited, timeout]);
  } finally {
    clearTimeout(timer);
  }
}

/** Waits for the child to end, and checks that it was SIGKILLed, not ended by an error of its own. */
async function expectKilled(child: Child): Promise<void> {
  expect(await exitOf(child), child.stderr).toEqual({ code: null, signal: 'SIGKILL' });
  expectNoErrors(child);
}

/** The fixture reports the gateway's `error` events and failed sendData() calls on stderr. */
function expectNoErrors(child: Child): void {
  expect(child.stderr).not.toMatch(/^(error|sendData failed) /m);
}

async function kill(child: Child): Promise<void> {
  child.process.kill('SIGKILL');
  await expectKilled(child);
}

async function drain(db: string, url: string): Promise<Child> {
  const child = spawnGateway(['drain', db, url, API_KEY]);
  const { code } = await exitOf(child);
  expectNoErrors(child);
  expect(child.lines).toContain('pending 0');
  expect(code).toBe(0);
  return child;
}

function replicaOf(child: Child): string {
  const line = child.lines.find((l) => l.startsWith('started '));
  if (!line) throw new Error(`the gateway did not start: ${child.stderr}`);
  return line.slice('started '.length);
}

/** Checks a copy of the database as the kill left it (main file and WAL), so the next start recovers the original. */
function checkIntegrity(db: string): BetterSqlite3.Database {
  const copy = join(tempDir(), 'copy.db');
  copyFileSync(db, copy);
  if (existsSync(`${db}-wal`)) copyFileSync(`${db}-wal`, `${copy}-wal`);
  const conn = new BetterSqlite3(copy);
  expect(conn.pragma('integrity_check', { simple: true })).toBe('ok');
  return conn;
}

/** Counters in the outbox of a copy of the database as the kill left it, after an integrity check. */
function localCounters(db: string): Set<number> {
  const conn = checkIntegrity(db);
  try {
    const tags = conn.prepare('SELECT tags FROM outbox').pluck().all() as string[];
    return new Set(tags.map((t) => Number((JSON.parse(t) as { n: string }).n)));
  } finally {
    conn.close();
  }
}

async function cloudPoints(server: CloudServer): Promise<StoredPoint[]> {
  const all: StoredPoint[] = [];
  let cursor: string | undefined;
  do {
    const page = await server.store.query({ deviceId: DEVICE, limit: 10_000, cursor });
    all.push(...page.points);
    cursor = page.nextCursor ?? undefined;
  } while (cursor);
  return all;
}

/**
 * The cloud holds every acknowledged counter exactly once with its content, no (replicaId, seq) twice, and, per
 * run, an unbroken range of counters from the run's first: a reading committed but not reported may be there, but
 * nothing after a lost one.
 */
function expectExactlyOnce(points: StoredPoint[], acked: readonly number[], replicaId: string, runs: number[]) {
  const byCounter = new Map<number, StoredPoint[]>();
  for (const point of points) {
    const n = Number(point.tags?.n);
    byCounter.set(n, [...(byCounter.get(n) ?? []), point]);
  }
  const missing = acked.filter((n) => !byCounter.has(n));
  expect(missing, 'acknowledged readings missing from the cloud').toEqual([]);
  const repeated = [...byCounter].filter(([, copies]) => copies.length > 1).map(([n]) => n);
  expect(repeated, 'readings stored more than once').toEqual([]);

  const keys = new Set(points.map((p) => `${p.replicaId}:${p.seq}`));
  expect(keys.size).toBe(points.length);
  expect(new Set(points.map((p) => p.replicaId))).toEqual(new Set([replicaId]));
  for (const point of points) {
    expect(point.sensorId).toBe('s');
    expect(point.value).toBe(Number(point.tags?.n));
  }

  for (const first of runs) {
    const counters = [...byCounter.keys()].filter((n) => n >= first && n < first + RUN_SPAN).sort((a, b) => a - b);
    expect(counters, `counters of the run from ${first}`).toEqual(counters.map((_, i) => first + i));
  }
}

async function startCloud(): Promise<{ server: CloudServer; store: HookedCloudStore; db: string }> {
  const store = new HookedCloudStore(':memory:');
  const server = await CloudServer.listen({ port: 0, host: '127.0.0.1', store, apiKeys: [API_KEY] });
  servers.push(server);
  return { server, store, db: join(tempDir(), 'gateway.db') };
}

/** Starts an ingesting gateway and waits until it has 300 readings acknowledged and has synced a batch. */
async function ingestUntilSyncing(db: string, server: CloudServer, store: CloudStore, first: number): Promise<Child> {
  const before = (await store.stats(DEVICE)).batches;
  const child = spawnGateway(['ingest', db, server.url, API_KEY, String(first)]);
  await waitFor('300 acknowledged readings and a synced batch', child, async () => {
    return child.acked.length >= 300 && (await store.stats(DEVICE)).batches > before;
  });
  return child;
}

describe('crash recovery', () => {
  it('loses no accepted reading when killed mid-ingest with the cloud down, and syncs each once', async () => {
    const dir = tempDir();
    const db = join(dir, 'gateway.db');
    const port = await freePort();
    const url = `http://127.0.0.1:${port}/api/v1`;

    const child = spawnGateway(['ingest', db, url, API_KEY, '1']);
    child.killAtAck = 500;
    await expectKilled(child);
    const acked = child.acked;
    expect(acked.length).toBeGreaterThanOrEqual(500);

    const stored = localCounters(db);
    expect(acked.filter((n) => !stored.has(n))).toEqual([]);

    const server = await CloudServer.listen({ port, host: '127.0.0.1', dbPath: ':memory:', apiKeys: [API_KEY] });
    servers.push(server);
    const drained = await drain(db, url);

    expect(replicaOf(drained)).toBe(replicaOf(child));
    const points = await cloudPoints(server);
    expect(points.length).toBe(stored.size);
    expectExactlyOnce(points, acked, replicaOf(child), [1]);
  });

  it('keeps every reading acknowledged right before a SIGKILL', async () => {
    const db = join(tempDir(), 'gateway.db');
    const url = `http://127.0.0.1:${await freePort()}/api/v1`;

    // The child kills itself right after the 510th acknowledgement, in the middle of a round of 25. Writes to a
    // pipe are synchronous on Linux, so every line it wrote before the kill reaches us.
    const child = spawnGateway(['ingest', db, url, API_KEY, '1', '510']);
    await expectKilled(child);

    expect(child.acked).toHaveLength(510);
    const stored = localCounters(db);
    expect(child.acked.filter((n) => !stored.has(n))).toEqual([]);
  });

  it(`loses and repeats no reading across kills at seeded random moments mid-sync (seed ${SEED})`, async () => {
    const random = mulberry32(SEED);
    const { server, db, store } = await startCloud();
    const acked: number[] = [];
    const runs: number[] = [];
    const replicas = new Set<string>();

    for (let run = 0; run < 4; run++) {
      runs.push(run * RUN_SPAN + 1);
      const child = await ingestUntilSyncing(db, server, store, runs[run] as number);
      await sleep(Math.floor(random() * 250));
      await kill(child);
      acked.push(...child.acked);
      replicas.add(replicaOf(child));
      checkIntegrity(db).close();
    }
    await drain(db, server.url);

    expect(replicas.size).toBe(1);
    expectExactlyOnce(await cloudPoints(server), acked, [...replicas][0] as string, runs);
  });

  it(`stores once a batch the cloud stored just before the gateway was killed (seed ${SEED})`, async () => {
    const random = mulberry32(SEED + 1);
    const { server, db, store } = await startCloud();
    const acked: number[] = [];
    const runs: number[] = [];
    const replicas = new Set<string>();

    for (let run = 0; run < 3; run++) {
      runs.push(run * RUN_SPAN + 1);
      const child = await ingestUntilSyncing(db, server, store, runs[run] as number);
      // Killed inside the window that idempotency exists for: stored and committed by the cloud, not yet answered.
      store.afterStored(1 + Math.floor(random() * 5), () => child.process.kill('SIGKILL'));
      await expectKilled(child);
      acked.push(...child.acked);
      replicas.add(replicaOf(child));
      checkIntegrity(db).close();
    }
    await drain(db, server.url);

    expect(replicas.size).toBe(1);
    expectExactlyOnce(await cloudPoints(server), acked, [...replicas][0] as string, runs);
    // Each batch the kills left unanswered came back byte for byte and was answered from the ledger.
    expect((await server.store.stats(DEVICE)).duplicateBatches).toBeGreaterThanOrEqual(3);
  });
});
