/**
 * The fleet: many gateways (in a few processes) over several reference server nodes (each a process) that share one
 * Redis, all on 127.0.0.1. One node is SIGKILLed in the middle and started again on its port; the gateways edit the
 * same record keys all along. At the end it checks, through the store, that every reading a gateway accepted is
 * stored exactly once and that every replica of every shared record agrees with the cloud, and measures readings
 * stored per second, ingest-to-cloud latency and each node's CPU.
 *
 * Used by `npm run fleet` (bench/fleet.ts, the long form) and by test/fleet/fleet.test.ts (a short form). Bounded:
 * every phase has a deadline, and every child exits when this process ends.
 */
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import { RedisCloudStore, type StoredPoint } from '../../../src/cloud/index.js';
import { TestChild } from '../../chaos/lib/child-process.js';
import { freePort } from '../../helpers/free-port.js';
import { type RedisServer, startRedisServer } from '../../helpers/redis-server.js';
import type { DrainedGateway, FleetGatewaysConfig, GatewaySnapshot } from './fleet-gateways.js';

const NODE_SCRIPT = fileURLToPath(new URL('./fleet-node.ts', import.meta.url));
const GATEWAYS_SCRIPT = fileURLToPath(new URL('./fleet-gateways.ts', import.meta.url));
const API_KEY = 'fleet-key';
/** Linux's clock ticks per second, the unit of /proc/<pid>/stat's CPU times (getconf CLK_TCK). */
const CLOCK_TICKS = 100;

export interface FleetOptions {
  gateways: number;
  nodes: number;
  /** Seconds of intake. */
  durationS: number;
  /** Gateway processes. @default ceil(gateways / 50), at most 4 */
  processes?: number;
  /** Readings a second, per gateway. @default 50 */
  rate?: number;
  /** Shared record keys every gateway edits. @default 10 */
  keys?: number;
  /** Mean ms between two edits of one gateway. @default 2000 */
  editEveryMs?: number;
  /** When the node is killed, in seconds from the start of intake. @default durationS / 2 */
  killAtS?: number;
  /** How long it stays dead, in seconds. @default 2 */
  downtimeS?: number;
  /** The gateways' sync interval, in seconds. @default 1 */
  syncInterval?: number;
  /** Redis's AOF fsync policy (`no`: no AOF). @default 'everysec' */
  appendfsync?: 'no' | 'everysec' | 'always';
  /** Progress lines. @default none */
  log?: (line: string) => void;
}

export interface FleetReport {
  gateways: number;
  nodes: number;
  processes: number;
  durationS: number;
  appendfsync: string;
  /** Readings the gateways accepted (and so must be in the cloud, once each). */
  accepted: number;
  /** Readings the store holds. */
  stored: number;
  /** Devices with a reading missing or stored twice, with what is wrong; empty when exactly once holds. */
  deliveryProblems: string[];
  /** Gateways that still had something pending when drained. */
  undrained: string[];
  /** Batches answered from the ledger: retries of batches the cloud had stored (e.g. on another node). */
  replayedBatches: number;
  /** Stored readings per second of intake. */
  storedPerSecond: number;
  /** Seconds from the end of intake until every gateway's queue was empty. */
  drainS: number;
  /** From `sendBatch()` at the gateway to the store's receipt, in ms. */
  latencyMs: { p50: number; p99: number; max: number };
  /** The latency's p99 by 5 s of intake time (by when the reading was taken), to tell the kill from the rest. */
  latencyP99By5s: number[];
  /** The machine's 1-minute load average at the start and at the end (these machines are shared). */
  loadAverage: [number, number];
  records: { keys: number; edits: number; conflicts: number; disagreements: string[] };
  /** CPU of each node over the run, in % of one core (the killed node: both of its lives). */
  nodeCpuPercent: number[];
  redisCpuPercent: number;
  /** CPU of all gateway processes together, in % of one core. */
  gatewaysCpuPercent: number;
  kill: { node: number; atS: number; downS: number };
}

/** CPU seconds a process has used so far, from /proc. */
function cpuSeconds(pid: number | undefined): number {
  if (pid === undefined) return 0;
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return (Number(fields[11]) + Number(fields[12])) / CLOCK_TICKS;
  } catch {
    return 0;
  }
}

/** A child's lines, kept until read. */
class Lines {
  readonly all: string[] = [];
  push = (line: string) => {
    this.all.push(line);
  };
  /** The first line starting with `prefix `, without the prefix. */
  find(prefix: string): string | undefined {
    const line = this.all.find((l) => l.startsWith(`${prefix} `));
    return line?.slice(prefix.length + 1);
  }
}

interface NodeProcess {
  child: TestChild;
  lines: Lines;
  cpuBefore: number;
}

async function startNode(redisUrl: string, port: number): Promise<NodeProcess> {
  for (let attempt = 1; ; attempt++) {
    const lines = new Lines();
    const child = new TestChild(NODE_SCRIPT, [redisUrl, String(port), API_KEY], lines.push);
    try {
      await child.waitUntil('the node listened', () => lines.find('listening') !== undefined, 60_000);
      return { child, lines, cpuBefore: cpuSeconds(child.process.pid) };
    } catch (error) {
      await child.kill();
      if (attempt === 5 || !/EADDRINUSE/.test(child.stderr)) throw error;
      await sleep(200 * attempt);
    }
  }
}

const percentile = (sorted: readonly number[], p: number) =>
  sorted.length === 0 ? 0 : (sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))] as number);

/** Runs the fleet and checks it; resolves with the figures and every problem found. */
export async function runFleet(options: FleetOptions): Promise<FleetReport> {
  const log = options.log ?? (() => undefined);
  const processes = options.processes ?? Math.min(4, Math.ceil(options.gateways / 50));
  const keys = Array.from({ length: options.keys ?? 10 }, (_, i) => `shared-${i}`);
  const killAtS = options.killAtS ?? options.durationS / 2;
  const downtimeS = options.downtimeS ?? 2;
  const killed = Math.min(1, options.nodes - 1);
  const appendfsync = options.appendfsync ?? 'everysec';
  const dir = mkdtempSync(join(tmpdir(), 'edge-gateway-fleet-'));
  const children: TestChild[] = [];
  let redis: RedisServer | undefined;
  let store: RedisCloudStore | undefined;
  try {
    redis = await startRedisServer({
      args: appendfsync === 'no' ? [] : ['--appendonly', 'yes', '--appendfsync', appendfsync],
    });
    const redisUrl = redis.url;
    store = await RedisCloudStore.connect({ url: redisUrl });
    const ports = await Promise.all(Array.from({ length: options.nodes }, () => freePort()));
    const nodes = await Promise.all(ports.map((port) => startNode(redisUrl, port)));
    children.push(...nodes.map((n) => n.child));
    const urls = nodes.map((n) => n.lines.find('listening') as string);
    log(`${options.nodes} nodes listening over ${redisUrl} (appendfsync ${appendfsync}): ${urls.join(' ')}`);

    const workers: { child: TestChild; lines: Lines }[] = [];
    const perProcess = Math.ceil(options.gateways / processes);
    for (let p = 0; p < processes; p++) {
      const first = p * perProcess;
      const count = Math.min(perProcess, options.gateways - first);
      if (count <= 0) break;
      const config: FleetGatewaysConfig = {
        first,
        count,
        urls,
        apiKey: API_KEY,
        dir,
        rate: options.rate ?? 50,
        editEveryMs: options.editEveryMs ?? 2000,
        keys,
        syncInterval: options.syncInterval ?? 1,
        drainTimeoutMs: 120_000,
      };
      const lines = new Lines();
      const child = new TestChild(GATEWAYS_SCRIPT, [JSON.stringify(config)], lines.push);
      children.push(child);
      workers.push({ child, lines });
    }
    await Promise.all(
      workers.map((w) => w.child.waitUntil('the gateways started', () => w.lines.all.includes('ready'), 120_000)),
    );
    const gatewaysCpuBefore = workers.reduce((sum, w) => sum + cpuSeconds(w.child.process.pid), 0);
    const redisCpuBefore = cpuSeconds(redis.pid);
    const started = Date.now();
    const loadBefore = loadavg()[0] ?? 0;
    log(`${options.gateways} gateways in ${workers.length} processes: intake for ${options.durationS} s`);

    // Intake, with one node killed and started again in the middle.
    let nodeCpu = nodes.map(() => 0);
    let killedAt = 0;
    let restartedAt = 0;
    const progress = setInterval(() => {
      const accepted = workers.reduce((sum, w) => {
        const last = w.lines.all.findLast((l) => l.startsWith('progress '));
        return sum + Number(last?.slice('progress '.length) ?? 0);
      }, 0);
      log(`  ${Math.round((Date.now() - started) / 1000)} s: ${accepted} readings accepted`);
    }, 5000);
    await sleep(killAtS * 1000);
    const victim = nodes[killed] as NodeProcess;
    nodeCpu[killed] = cpuSeconds(victim.child.process.pid) - victim.cpuBefore;
    killedAt = Date.now();
    await victim.child.kill();
    log(`  node ${killed} SIGKILLed at ${((killedAt - started) / 1000).toFixed(1)} s`);
    await sleep(downtimeS * 1000);
    const reborn = await startNode(redisUrl, ports[killed] as number);
    children.push(reborn.child);
    nodes[killed] = reborn;
    restartedAt = Date.now();
    log(`  node ${killed} listening again after ${((restartedAt - killedAt) / 1000).toFixed(1)} s`);
    await sleep(Math.max(0, started + options.durationS * 1000 - Date.now()));
    clearInterval(progress);
    const intakeS = (Date.now() - started) / 1000;

    // Drain: no more intake nor edits; every gateway syncs until nothing is pending.
    for (const w of workers) w.child.send('stop');
    await Promise.all(
      workers.map((w) =>
        w.child.waitUntil('the gateways drained', () => w.lines.find('drained') !== undefined, 180_000),
      ),
    );
    const drainS = (Date.now() - started) / 1000 - intakeS;
    nodeCpu = nodeCpu.map((before, i) => before + cpuSeconds(nodes[i]?.child.process.pid) - (nodes[i]?.cpuBefore ?? 0));
    const wallS = (Date.now() - started) / 1000;
    const gatewaysCpu = workers.reduce((sum, w) => sum + cpuSeconds(w.child.process.pid), 0) - gatewaysCpuBefore;
    const redisCpu = cpuSeconds(redis.pid) - redisCpuBefore;
    const drained = workers.flatMap((w) => JSON.parse(w.lines.find('drained') as string) as DrainedGateway[]);
    log(`drained in ${drainS.toFixed(1)} s; checking`);

    // Settle: everyone pulls what the others wrote last, then tells what it holds.
    for (const w of workers) w.child.send('settle');
    await Promise.all(
      workers.map((w) =>
        w.child.waitUntil('the gateways settled', () => w.lines.find('snapshot') !== undefined, 120_000),
      ),
    );
    const snapshots = workers.flatMap((w) => JSON.parse(w.lines.find('snapshot') as string) as GatewaySnapshot[]);

    // Exactly once, through the store.
    const deliveryProblems: string[] = [];
    const latencies: number[] = [];
    const windows: number[][] = [];
    let stored = 0;
    for (const gateway of drained) {
      const points: StoredPoint[] = [];
      let cursor: string | undefined;
      do {
        const page = await store.query({ deviceId: gateway.deviceId, limit: 10_000, cursor });
        points.push(...page.points);
        cursor = page.nextCursor ?? undefined;
      } while (cursor);
      stored += points.length;
      const seen = new Set<number>();
      let duplicates = 0;
      for (const p of points) {
        if (seen.has(p.seq)) duplicates++;
        seen.add(p.seq);
        const taken = Date.parse(p.timestamp);
        const latency = Date.parse(p.receivedAt) - taken;
        latencies.push(latency);
        const window = Math.max(0, Math.floor((taken - started) / 5000));
        windows[window] ??= [];
        windows[window].push(latency);
      }
      let missing = 0;
      for (let seq = 1; seq <= gateway.accepted; seq++) if (!seen.has(seq)) missing++;
      const extra = [...seen].filter((seq) => seq > gateway.accepted).length;
      if (duplicates + missing + extra > 0) {
        deliveryProblems.push(`${gateway.deviceId}: ${missing} missing, ${duplicates} stored twice, ${extra} unknown`);
      }
    }
    latencies.sort((a, b) => a - b);

    // Every replica of every shared record agrees with the cloud.
    const disagreements: string[] = [];
    for (const key of keys) {
      const cloud = await store.getRecord('setpoints', key);
      const expected =
        cloud && !cloud.deleted ? JSON.stringify({ value: cloud.value, version: cloud.version }) : 'null';
      for (const snapshot of snapshots) {
        const held = JSON.stringify(snapshot.records[key] ?? null);
        if (held !== expected) disagreements.push(`${snapshot.deviceId} ${key}: holds ${held}, the cloud ${expected}`);
      }
    }

    const accepted = drained.reduce((sum, g) => sum + g.accepted, 0);
    const { duplicateBatches } = await store.stats();
    return {
      gateways: options.gateways,
      nodes: options.nodes,
      processes: workers.length,
      durationS: options.durationS,
      appendfsync,
      accepted,
      stored,
      deliveryProblems,
      undrained: drained.filter((g) => g.pending + g.pendingRecords > 0).map((g) => g.deviceId),
      replayedBatches: duplicateBatches,
      storedPerSecond: stored / intakeS,
      drainS,
      latencyMs: { p50: percentile(latencies, 50), p99: percentile(latencies, 99), max: latencies.at(-1) ?? 0 },
      latencyP99By5s: Array.from(windows, (w = []) =>
        percentile(
          w.sort((a, b) => a - b),
          99,
        ),
      ),
      loadAverage: [loadBefore, loadavg()[0] ?? 0],
      records: {
        keys: keys.length,
        edits: drained.reduce((sum, g) => sum + g.edits, 0),
        conflicts: drained.reduce((sum, g) => sum + g.conflicts, 0),
        disagreements,
      },
      nodeCpuPercent: nodeCpu.map((seconds) => (100 * seconds) / wallS),
      redisCpuPercent: (100 * redisCpu) / wallS,
      gatewaysCpuPercent: (100 * gatewaysCpu) / wallS,
      kill: { node: killed, atS: (killedAt - started) / 1000, downS: (restartedAt - killedAt) / 1000 },
    };
  } finally {
    await store?.close();
    for (const child of children) child.process.stdin?.end();
    await Promise.all(children.map((child) => child.exit(30_000).catch(() => child.kill())));
    await redis?.stop();
    rmSync(dir, { recursive: true, force: true });
  }
}

/** The report as the lines docs/benchmarks.md shows. */
export function formatFleet(r: FleetReport): string {
  const n = (x: number) => Math.round(x).toLocaleString('en-US');
  return [
    `gateways ${r.gateways} in ${r.processes} processes; ${r.nodes} nodes over one Redis (appendfsync ${r.appendfsync}); intake ${r.durationS} s`,
    `node ${r.kill.node} SIGKILLed at ${r.kill.atS.toFixed(1)} s, listening again ${r.kill.downS.toFixed(1)} s later`,
    `readings accepted ${n(r.accepted)}, stored ${n(r.stored)}: exactly once ${r.deliveryProblems.length === 0 ? 'yes' : `NO (${r.deliveryProblems.length} devices)`}; ${n(r.replayedBatches)} batches answered as replays`,
    `stored ${n(r.storedPerSecond)} readings/s; queues empty ${r.drainS.toFixed(1)} s after intake stopped`,
    `ingest-to-cloud latency p50 ${n(r.latencyMs.p50)} ms, p99 ${n(r.latencyMs.p99)} ms, max ${n(r.latencyMs.max)} ms`,
    `records: ${r.records.keys} shared keys, ${n(r.records.edits)} edits, ${n(r.records.conflicts)} conflicts resolved; replicas agree with the cloud: ${r.records.disagreements.length === 0 ? 'all' : `NO (${r.records.disagreements.length})`}`,
    `latency p99 by 5 s of intake, ms: ${r.latencyP99By5s.map(n).join(' ')}`,
    `machine load average (1 min): ${r.loadAverage[0].toFixed(1)} at the start, ${r.loadAverage[1].toFixed(1)} at the end`,
    `CPU, % of one core: ${r.nodeCpuPercent.map((c, i) => `node ${i} ${c.toFixed(1)}`).join(', ')}; redis ${r.redisCpuPercent.toFixed(1)}; gateway processes ${r.gatewaysCpuPercent.toFixed(1)}`,
  ].join('\n');
}
