import { mkdtempSync, rmSync } from 'node:fs';
import { Agent, request as httpRequest } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { CloudServer } from '../cloud/cloud-server.js';
import { ConfigError } from '../errors.js';
import { EdgeGateway } from '../gateway/edge-gateway.js';
import type { CliIo } from './cli.js';

/** What `edge-gateway load-test` is asked to do. */
export interface LoadTestOptions {
  /** Seconds of load. */
  duration: number;
  /** Readings per second, spread evenly. */
  rate: number;
  /** Base URL of a running gateway (its HTTP server); undefined: an in-process gateway and cloud. */
  url: string | undefined;
  /** Readings per request (an array when more than 1). @default 1 */
  batch: number;
  /** Requests in flight at most; when all are taken, sending falls behind the rate. @default 32 */
  concurrency: number;
  /** The gateway's INGEST_TOKEN, if it requires one. */
  token: string | undefined;
}

/** What a load test measured. */
export interface LoadTestSummary {
  target: string;
  seconds: number;
  rate: number;
  batch: number;
  /** Readings sent. */
  sent: number;
  requests: number;
  /** Readings the gateway answered 200 for: durable on its disk. */
  acknowledged: number;
  /** Readings answered with an error status (429, 4xx, 5xx): not stored, and the sender was told. */
  refused: number;
  /** Readings refused, by HTTP status. */
  refusedByStatus: Record<string, number>;
  /**
   * Readings whose fate is unknown or bad: requests that got no answer (a reset, a timeout), plus, in-process,
   * acknowledged readings missing from the cloud once the queue drained.
   */
  lost: number;
  /** Readings the cloud acknowledged during the run (from the gateway's metrics); null when unknown. */
  synced: number | null;
  /** Readings still queued on the gateway at the end; null when unknown. */
  queued: number | null;
  /** In-process only: readings found in the cloud after draining. */
  inCloud: number | null;
  latencyMs: { p50: number; p99: number; max: number };
  /** The gateway process's CPU over the run, as a share of one core (in-process: this whole process). */
  cpuPercent: number | null;
  rssMb: number | null;
  peakRssMb: number | null;
}

/** Request timeout of the load test's client. */
const REQUEST_TIMEOUT_MS = 10_000;
/** How long an in-process run waits for its queue to drain to the cloud before it counts what is missing. */
const DRAIN_TIMEOUT_MS = 30_000;
const LOOPBACK = /^(localhost|127\.\d{1,3}\.\d{1,3}\.\d{1,3}|\[::1\])$/i;

/**
 * Latencies in logarithmic buckets 2% wide: memory stays bounded however long the run, and percentiles are
 * within 2%.
 */
export class LatencyHistogram {
  static readonly #base = 0.001; // ms
  static readonly #growth = Math.log(1.02);
  readonly #buckets = new Map<number, number>();
  #count = 0;
  #max = 0;

  record(ms: number): void {
    const index =
      ms <= LatencyHistogram.#base ? 0 : Math.ceil(Math.log(ms / LatencyHistogram.#base) / LatencyHistogram.#growth);
    this.#buckets.set(index, (this.#buckets.get(index) ?? 0) + 1);
    this.#count++;
    this.#max = Math.max(this.#max, ms);
  }

  get count(): number {
    return this.#count;
  }

  get max(): number {
    return this.#max;
  }

  /** The latency at quantile `q` (0..1): the upper edge of its bucket, capped at the largest seen; 0 when empty. */
  quantile(q: number): number {
    if (this.#count === 0) return 0;
    const rank = Math.max(1, Math.ceil(q * this.#count));
    let seen = 0;
    for (const index of [...this.#buckets.keys()].sort((a, b) => a - b)) {
      seen += this.#buckets.get(index) as number;
      if (seen >= rank) return Math.min(this.#max, LatencyHistogram.#base * Math.exp(index * LatencyHistogram.#growth));
    }
    return this.#max;
  }
}

/** Refuses a target that is not on this machine: the load test is for the gateway next to it. */
export function checkLoopback(url: string): void {
  let host: string;
  try {
    host = new URL(url).hostname;
  } catch {
    throw new ConfigError([`Expected --url to be a URL like http://127.0.0.1:8000, got ${JSON.stringify(url)}`]);
  }
  if (!LOOPBACK.test(host)) {
    throw new ConfigError([`load-test drives a gateway on this machine only (a loopback address), not ${host}`]);
  }
}

/** The value of an unlabelled sample in a Prometheus text exposition. */
export function sampleValue(exposition: string, name: string): number | undefined {
  const match = new RegExp(`^${name}(?:\\{[^}]*\\})? (\\S+)$`, 'm').exec(exposition);
  return match ? Number(match[1]) : undefined;
}

interface Probe {
  acknowledged?: number | undefined;
  queued?: number | undefined;
  cpuSeconds?: number | undefined;
  rssBytes?: number | undefined;
}

async function probe(url: string): Promise<Probe> {
  try {
    const response = await fetch(`${url}/metrics`, { signal: AbortSignal.timeout(REQUEST_TIMEOUT_MS) });
    if (!response.ok) return {};
    const text = await response.text();
    return {
      acknowledged: sampleValue(text, 'edge_gateway_readings_acknowledged_total'),
      queued: sampleValue(text, 'edge_gateway_queue_size'),
      cpuSeconds: sampleValue(text, 'process_cpu_seconds_total'),
      rssBytes: sampleValue(text, 'process_resident_memory_bytes'),
    };
  } catch {
    return {};
  }
}

interface Outcome {
  status: number | undefined;
  ms: number;
}

function post(agent: Agent, url: string, body: string, token: string | undefined): Promise<Outcome> {
  const started = performance.now();
  return new Promise((resolve) => {
    const headers: Record<string, string | number> = {
      'content-type': 'application/json',
      'content-length': Buffer.byteLength(body),
    };
    if (token) headers.authorization = `Bearer ${token}`;
    const request = httpRequest(`${url}/api/v1/data`, { method: 'POST', agent, headers }, (response) => {
      response.resume();
      response.on('end', () => resolve({ status: response.statusCode, ms: performance.now() - started }));
      response.on('error', () => resolve({ status: undefined, ms: performance.now() - started }));
    });
    request.setTimeout(REQUEST_TIMEOUT_MS, () => request.destroy(new Error('timeout')));
    request.on('error', () => resolve({ status: undefined, ms: performance.now() - started }));
    request.end(body);
  });
}

function makeReadings(from: number, count: number, now: number): string {
  const items = [];
  for (let i = from; i < from + count; i++) {
    items.push({
      sensorId: `load-${i % 10}`,
      value: Math.round((20 + Math.sin(i / 50) * 5) * 100) / 100,
      unit: 'celsius',
      timestamp: now,
      tags: { source: 'load-test' },
    });
  }
  return JSON.stringify(count === 1 ? items[0] : items);
}

/** Sends `rate` readings a second for `duration` seconds to `url`, and counts the answers. */
async function drive(url: string, options: LoadTestOptions, onTick: () => void) {
  const agent = new Agent({ keepAlive: true, maxSockets: options.concurrency });
  const latency = new LatencyHistogram();
  const refusedByStatus: Record<string, number> = {};
  let sent = 0;
  let requests = 0;
  let acknowledged = 0;
  let refused = 0;
  let unanswered = 0;
  let inFlight = 0;
  const pending = new Set<Promise<void>>();
  const started = performance.now();
  const endAt = started + options.duration * 1000;
  const total = Math.round(options.duration * options.rate);
  let lastTick = started;
  while (sent < total) {
    const now = performance.now();
    if (now >= endAt + REQUEST_TIMEOUT_MS) break; // fell too far behind to finish: stop, and say so in the rate
    if (now - lastTick >= 1000) {
      lastTick = now;
      onTick();
    }
    const due = Math.min(total, Math.floor(((now - started) / 1000) * options.rate));
    // Whole batches as they fall due; the remainder once the last reading is due.
    while (sent < due && (due - sent >= options.batch || due === total) && inFlight < options.concurrency) {
      const count = Math.min(options.batch, due - sent);
      const body = makeReadings(sent, count, Date.now());
      sent += count;
      requests++;
      inFlight++;
      const done: Promise<void> = post(agent, url, body, options.token).then(({ status, ms }) => {
        inFlight--;
        pending.delete(done);
        if (status === undefined) {
          unanswered += count;
          return;
        }
        latency.record(ms);
        if (status === 200) acknowledged += count;
        else {
          refused += count;
          refusedByStatus[status] = (refusedByStatus[status] ?? 0) + count;
        }
      });
      pending.add(done);
    }
    if (inFlight >= options.concurrency) await Promise.race(pending);
    else await new Promise((resolve) => setTimeout(resolve, 5));
  }
  await Promise.all(pending);
  agent.destroy();
  return {
    seconds: (performance.now() - started) / 1000,
    sent,
    requests,
    acknowledged,
    refused,
    refusedByStatus,
    unanswered,
    latency,
  };
}

const mib = (bytes: number) => Math.round((bytes / 1048576) * 10) / 10;

/** What a run measured the same way against a running gateway and in-process: its part of the summary. */
function driven(result: Awaited<ReturnType<typeof drive>>, options: LoadTestOptions) {
  return {
    seconds: result.seconds,
    rate: options.rate,
    batch: options.batch,
    sent: result.sent,
    requests: result.requests,
    acknowledged: result.acknowledged,
    refused: result.refused,
    refusedByStatus: result.refusedByStatus,
    latencyMs: { p50: result.latency.quantile(0.5), p99: result.latency.quantile(0.99), max: result.latency.max },
  };
}

/** A load test against a running gateway: its POST /api/v1/data, and its /metrics before and after. */
async function againstRunning(options: LoadTestOptions & { url: string }): Promise<LoadTestSummary> {
  const url = options.url.replace(/\/+$/, '');
  const before = await probe(url);
  let peakRss = before.rssBytes ?? 0;
  const samples: Promise<void>[] = [];
  const result = await drive(url, options, () => {
    samples.push(
      probe(url).then((p) => {
        peakRss = Math.max(peakRss, p.rssBytes ?? 0);
      }),
    );
  });
  await Promise.all(samples);
  const after = await probe(url);
  const known = (a: number | undefined, b: number | undefined) => a !== undefined && b !== undefined;
  const cpu =
    known(before.cpuSeconds, after.cpuSeconds) && result.seconds > 0
      ? Math.round((1000 * ((after.cpuSeconds as number) - (before.cpuSeconds as number))) / result.seconds) / 10
      : null;
  return {
    target: url,
    ...driven(result, options),
    lost: result.unanswered,
    synced: known(before.acknowledged, after.acknowledged)
      ? (after.acknowledged as number) - (before.acknowledged as number)
      : null,
    queued: after.queued ?? null,
    inCloud: null,
    cpuPercent: cpu,
    rssMb: after.rssBytes === undefined ? null : mib(after.rssBytes),
    peakRssMb: peakRss > 0 ? mib(Math.max(peakRss, after.rssBytes ?? 0)) : null,
  };
}

/**
 * A load test of an in-process gateway, syncing to an in-process reference cloud, both on loopback in a temporary
 * folder removed afterwards; driven over the same HTTP ingest. At the end the queue is drained and the cloud's
 * copy counted: an acknowledged reading missing there is lost.
 */
async function inProcess(options: LoadTestOptions): Promise<LoadTestSummary> {
  const dir = mkdtempSync(join(tmpdir(), 'edge-gateway-load-'));
  const apiKey = 'load-test';
  const deviceId = 'load-test';
  const cloud = await CloudServer.listen({
    port: 0,
    host: '127.0.0.1',
    dbPath: join(dir, 'cloud.db'),
    apiKeys: [apiKey],
  });
  const gateway = new EdgeGateway({
    deviceId,
    cloudUrl: cloud.url,
    apiKey,
    localDb: join(dir, 'edge_gateway.db'),
    metrics: true,
    syncInterval: 1,
    batchSize: 1000,
    maxBackoff: 2,
  });
  try {
    await gateway.start();
    const server = await gateway.serveHttp({ port: 0, rateLimit: 0, maxBodyBytes: 64 * 1024 * 1024 });
    const cpuBefore = process.cpuUsage();
    let peakRss = process.memoryUsage.rss();
    const result = await drive(server.url, options, () => {
      peakRss = Math.max(peakRss, process.memoryUsage.rss());
    });
    const cpu = process.cpuUsage(cpuBefore);
    const rss = process.memoryUsage.rss();
    const synced = sampleValue(await gateway.metrics(), 'edge_gateway_readings_acknowledged_total') ?? 0;
    const queued = gateway.getStatus().pendingSyncCount;
    await server.close();
    const drainBy = performance.now() + DRAIN_TIMEOUT_MS;
    while (gateway.getStatus().pendingSyncCount > 0 && performance.now() < drainBy) {
      const cycle = await gateway.forceSync();
      if (cycle.acknowledged === 0) await new Promise((resolve) => setTimeout(resolve, 100));
    }
    const inCloud = (await cloud.store.stats(deviceId)).points;
    return {
      target: 'in-process',
      ...driven(result, options),
      lost: result.unanswered + Math.max(0, result.acknowledged - inCloud),
      synced,
      queued,
      inCloud,
      // µs of CPU over µs of wall time, as a percentage with one decimal.
      cpuPercent: Math.round((1000 * (cpu.user + cpu.system)) / (result.seconds * 1e6)) / 10,
      rssMb: mib(rss),
      peakRssMb: mib(Math.max(peakRss, rss)),
    };
  } finally {
    await gateway.stop();
    await cloud.close();
    rmSync(dir, { recursive: true, force: true });
  }
}

/** Runs a load test as `options` say: against a running gateway when `url` is given, else in-process. */
export function runLoadTest(options: LoadTestOptions): Promise<LoadTestSummary> {
  if (options.url === undefined) return inProcess(options);
  checkLoopback(options.url);
  return againstRunning({ ...options, url: options.url });
}

const ms = (value: number) => `${value.toFixed(2)} ms`;

/** The summary for people. */
export function formatSummary(s: LoadTestSummary): string {
  const refused = Object.entries(s.refusedByStatus)
    .map(([status, count]) => `${count} with ${status}`)
    .join(', ');
  const lines = [
    `load test against ${s.target}: ${s.seconds.toFixed(1)} s at ${s.rate} readings/s, ${s.batch} reading(s) per request`,
    `  sent          ${s.sent} readings in ${s.requests} requests (${(s.sent / Math.max(s.seconds, 1e-9)).toFixed(1)}/s)`,
    `  acknowledged  ${s.acknowledged} (durable on the gateway)`,
    `  refused       ${s.refused}${refused ? ` (${refused})` : ''}`,
    `  lost          ${s.lost}`,
  ];
  if (s.synced !== null) {
    lines.push(
      `  synced        ${s.synced} acknowledged by the cloud during the run${s.queued === null ? '' : `; ${s.queued} queued at the end`}`,
    );
  }
  if (s.inCloud !== null) lines.push(`  in the cloud  ${s.inCloud} after draining`);
  lines.push(`  latency       p50 ${ms(s.latencyMs.p50)}, p99 ${ms(s.latencyMs.p99)}, max ${ms(s.latencyMs.max)}`);
  const who = s.target === 'in-process' ? 'this process (load, gateway and cloud)' : 'gateway';
  const cpu = s.cpuPercent === null ? 'CPU unknown' : `CPU ${s.cpuPercent}% of one core`;
  const rss =
    s.rssMb === null ? 'RSS unknown' : `RSS ${s.rssMb} MiB${s.peakRssMb === null ? '' : ` (peak ${s.peakRssMb} MiB)`}`;
  lines.push(`  ${who.padEnd(13)} ${cpu}, ${rss}`);
  return lines.join('\n');
}

/** `edge-gateway load-test`: prints the summary; exit code 1 when any reading was lost. */
export async function loadTestCommand(options: LoadTestOptions, json: boolean, io: CliIo): Promise<number> {
  const summary = await runLoadTest(options);
  io.out(json ? JSON.stringify(summary) : formatSummary(summary));
  return summary.lost === 0 ? 0 : 1;
}
