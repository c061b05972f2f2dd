import { ConfigError } from '../errors.js';
import type { HealthJson } from '../ops/health-json.js';
import * as z from '../zod.js';
import type { CliIo } from './cli.js';
import { DEFAULT_HTTP_PORT, envSchema } from './env-config.js';

/** Seconds `edge-gateway status` waits for an answer. */
const TIMEOUT_MS = 5000;

/** Where a gateway configured by `env` serves: its HTTP_HOST (loopback for a wildcard) and HTTP_PORT. */
export function localUrl(env: Record<string, string>): string {
  const result = z.pick(envSchema, { HTTP_HOST: true, HTTP_PORT: true }).safeParse(env);
  if (!result.success) {
    throw new ConfigError(
      result.error.issues.map((issue) => `Expected ${String(issue.path[0])} to be valid: ${issue.message}`),
    );
  }
  const parsed = result.data;
  const host = parsed.HTTP_HOST ?? '127.0.0.1';
  const reachable = host === '0.0.0.0' ? '127.0.0.1' : host === '::' ? '::1' : host;
  return `http://${reachable.includes(':') ? `[${reachable}]` : reachable}:${parsed.HTTP_PORT ?? DEFAULT_HTTP_PORT}`;
}

function duration(seconds: number): string {
  const d = Math.floor(seconds / 86_400);
  const h = Math.floor((seconds % 86_400) / 3600);
  const m = Math.floor((seconds % 3600) / 60);
  const s = Math.floor(seconds % 60);
  if (d > 0) return `${d} d ${h} h ${m} min`;
  if (h > 0) return `${h} h ${m} min`;
  if (m > 0) return `${m} min ${s} s`;
  return `${s} s`;
}

/** A gateway's health as a table for people, from its `GET /health` answer. */
export function healthTable(url: string, health: HealthJson, now: number = Date.now()): string {
  const lastSync =
    health.last_sync === null
      ? 'never'
      : `${health.last_sync} (${duration(Math.max(0, (now - Date.parse(health.last_sync)) / 1000))} ago)`;
  const rows: [string, string][] = [
    ['Status', health.status],
    ['Device', health.device_id],
    ['Online', health.is_online ? 'yes' : 'no'],
    ['Pending sync', `${health.pending_sync_count} reading(s)`],
    ['Last sync', lastSync],
    ['Uptime', duration(health.uptime_seconds)],
    ['Local storage', `${health.local_storage_mb} MB`],
    ['CPU', `${health.cpu_percent}% of one core`],
    ['Memory', `${health.memory_mb} MB`],
  ];
  const lines = [`edge-gateway at ${url}: ${health.status.toUpperCase()}`, ''];
  for (const [name, value] of rows) lines.push(`  ${name.padEnd(15)} ${value}`);
  if (health.reasons.length > 0) {
    lines.push('', 'Reasons:');
    for (const reason of health.reasons) lines.push(`  - ${reason}`);
  }
  return lines.join('\n');
}

/**
 * `edge-gateway status`: asks a running gateway for its health (`GET /health`) and prints it as a table, or as
 * the JSON with `--json`. Exit code 0 when healthy or degraded, 1 when unhealthy or not answering.
 */
export async function runStatus(url: string, json: boolean, io: CliIo): Promise<number> {
  let response: Response;
  try {
    response = await fetch(`${url}/health`, { signal: AbortSignal.timeout(TIMEOUT_MS) });
  } catch (error) {
    const cause = (error as { cause?: { code?: string } }).cause?.code ?? (error as Error).message;
    io.err(`No gateway answers at ${url}/health (${cause}). Is edge-gateway start running, with this HTTP_PORT?`);
    return 1;
  }
  let health: HealthJson;
  try {
    health = (await response.json()) as HealthJson;
    if (typeof health.status !== 'string') throw new Error('no status');
  } catch {
    io.err(`${url}/health answered ${response.status} with something other than a gateway's health`);
    return 1;
  }
  io.out(json ? JSON.stringify(health, null, 2) : healthTable(url, health));
  return health.status === 'unhealthy' ? 1 : 0;
}
