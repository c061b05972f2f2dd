import { type ChildProcess, spawn } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { type CliIo, runCli } from '../../src/cli/cli.js';
import { envSchema } from '../../src/cli/env-config.js';
import type { HealthJson } from '../../src/ops/health-json.js';
import { startCloudServer } from '../../src/testing/index.js';
import { defer } from '../helpers/cleanup.js';
import { parsePrometheus } from '../helpers/prometheus.js';
import { tempDir } from '../helpers/temp-dir.js';
import { waitFor } from '../helpers/wait-for.js';

const root = join(import.meta.dirname, '..', '..');

/** The environment without any variable the CLI reads: the test's `.env` file alone configures the daemon. */
function cleanEnv(): NodeJS.ProcessEnv {
  const env = { ...process.env };
  for (const name of Object.keys(envSchema.shape)) delete env[name];
  return env;
}

function captureIo(signal: Promise<string> = new Promise(() => {})) {
  const lines: string[] = [];
  const errors: string[] = [];
  const io: CliIo = { out: (l) => lines.push(l), err: (l) => errors.push(l), untilSignal: () => signal };
  return { io, lines, errors };
}

/** The daemon as a child process, as an operator runs it: `edge-gateway start --env FILE`. */
function spawnDaemon(envFile: string) {
  const child: ChildProcess = spawn(
    process.execPath,
    ['--import', 'tsx', join(root, 'src/cli/main.ts'), 'start', '--env', envFile],
    { cwd: root, env: cleanEnv() },
  );
  defer(() => {
    if (child.exitCode === null) child.kill('SIGKILL');
  });
  const output = { stdout: '', stderr: '' };
  child.stdout?.on('data', (chunk) => {
    output.stdout += chunk;
  });
  child.stderr?.on('data', (chunk) => {
    output.stderr += chunk;
  });
  const exited = new Promise<number | null>((resolve) => child.on('close', (code) => resolve(code)));
  return { child, output, exited };
}

const post = (url: string, body: string, token: string) =>
  fetch(`${url}/api/v1/data`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', authorization: `Bearer ${token}` },
    body,
  });

describe('edge-gateway start, as a child process', () => {
  it('serves from a .env file, forwards what POST /api/v1/data took, and stops cleanly on SIGTERM', async () => {
    const dir = tempDir();
    const apiKey = `sk-edge-${randomUUID()}`;
    const ingestToken = `ingest-${randomUUID()}`;
    const cloud = await startCloudServer({ apiKeys: [apiKey] });
    defer(() => cloud.close());
    const logFile = join(dir, 'logs', 'edge_gateway.log');
    const envFile = join(dir, '.env');
    writeFileSync(
      envFile,
      [
        'DEVICE_ID=daemon-ops',
        `LOCAL_DB_PATH=${join(dir, 'data', 'edge_gateway.db')}`,
        `CLOUD_API_URL=${cloud.url}`,
        `CLOUD_API_KEY=${apiKey}`,
        'SYNC_STRATEGY=on-change',
        'HTTP_PORT=0',
        `INGEST_TOKEN=${ingestToken}`,
        'INGEST_MAX_BODY_BYTES=65536',
        'LOG_LEVEL=debug',
        `LOG_FILE=${logFile}`,
      ].join('\n'),
    );
    const daemon = spawnDaemon(envFile);
    const url = await waitFor(
      () => /; serving (http:\/\/127\.0\.0\.1:\d+);/.exec(daemon.output.stdout)?.[1],
      20_000,
      'the daemon serving',
    );

    // Fed through the local ingest endpoint: 20 readings one by one, then 30 in one array.
    const sent: { sensorId: string; value: number; timestamp: number }[] = [];
    for (let i = 0; i < 50; i++)
      sent.push({ sensorId: `line-${i % 3}`, value: i / 4, timestamp: Date.UTC(2026, 0, 1, 0, 0, i) });
    for (const reading of sent.slice(0, 20)) {
      const response = await post(url, JSON.stringify(reading), ingestToken);
      expect(await response.json()).toEqual({ accepted: 1, stored: 1 });
    }
    const batch = await post(url, JSON.stringify(sent.slice(20)), ingestToken);
    expect(await batch.json()).toEqual({ accepted: 30, stored: 30 });
    // Refusals store nothing.
    expect((await post(url, '[{"sensorId":"x","value":', ingestToken)).status).toBe(400);
    expect((await post(url, JSON.stringify(Array(2000).fill(sent[0])), ingestToken)).status).toBe(413);
    expect((await post(url, JSON.stringify(sent[0]), 'wrong-token')).status).toBe(401);

    const healthText = await (await fetch(`${url}/health`)).text();
    const health = JSON.parse(healthText) as HealthJson;
    expect(health).toMatchObject({ device_id: 'daemon-ops', status: expect.stringMatching(/healthy|degraded/) });
    const metricsText = await (await fetch(`${url}/metrics`)).text();
    const metrics = parsePrometheus(metricsText);
    expect(metrics.value('edge_gateway_data_points_total')).toBe(50);
    expect(metrics.has('process_cpu_seconds_total')).toBe(true); // the daemon adds the process metrics
    expect(metrics.has('process_resident_memory_bytes')).toBe(true);

    const status = captureIo();
    expect(await runCli(['status', '--url', url], status.io)).toBe(0);
    expect(status.lines.join('\n')).toMatch(/Device\s+daemon-ops/);

    daemon.child.kill('SIGTERM');
    expect(await daemon.exited).toBe(0);
    expect(daemon.output.stdout).toContain('edge-gateway stopped');

    // Everything accepted reached the cloud, exactly once.
    const stored = await cloud.points('daemon-ops');
    expect(stored.map((p) => ({ sensorId: p.sensorId, value: p.value, timestamp: Date.parse(p.timestamp) }))).toEqual(
      sent,
    );

    // Logs: JSON lines on stdout and in LOG_FILE; no secret anywhere the daemon writes or serves.
    const log = readFileSync(logFile, 'utf8');
    expect(log).toContain('"msg":"edge gateway stopped"');
    for (const line of log.trim().split('\n')) expect(() => JSON.parse(line)).not.toThrow();
    for (const text of [daemon.output.stdout, daemon.output.stderr, log, metricsText, healthText]) {
      expect(text).not.toContain(apiKey);
      expect(text).not.toContain(ingestToken);
    }
  }, 60_000);

  it('exits 1, naming the variable, when HTTP_PORT is taken', async () => {
    const dir = tempDir();
    const { createServer } = await import('node:net');
    const blocker = createServer();
    await new Promise<void>((resolve) => blocker.listen(0, '127.0.0.1', resolve));
    defer(() => new Promise<void>((resolve) => blocker.close(() => resolve())));
    const port = (blocker.address() as { port: number }).port;
    const envFile = join(dir, '.env');
    writeFileSync(envFile, [`DEVICE_ID=busy`, `LOCAL_DB_PATH=${join(dir, 'edge.db')}`, `HTTP_PORT=${port}`].join('\n'));
    const daemon = spawnDaemon(envFile);
    expect(await daemon.exited).toBe(1);
    expect(daemon.output.stderr).toMatch(
      new RegExp(
        `Cannot serve HTTP on 127\\.0\\.0\\.1:${port}: EADDRINUSE .*; choose another with HTTP_HOST and HTTP_PORT`,
      ),
    );
  }, 30_000);
});

describe('edge-gateway start, when the cloud refuses the API key', () => {
  it('reports unhealthy through status, and never writes the key in its logs', async () => {
    const dir = tempDir();
    const cloud = await startCloudServer({ apiKeys: ['the-right-key'] });
    defer(() => cloud.close());
    const wrongKey = `sk-wrong-${randomUUID()}`;
    const logFile = join(dir, 'gateway.log');
    const saved = { ...process.env };
    defer(() => {
      process.env = saved;
    });
    Object.assign(process.env, {
      DEVICE_ID: 'refused',
      LOCAL_DB_PATH: join(dir, 'edge.db'),
      CLOUD_API_URL: cloud.url,
      CLOUD_API_KEY: wrongKey,
      SYNC_STRATEGY: 'on-change',
      HTTP_PORT: '0',
      LOG_LEVEL: 'debug',
      LOG_FILE: logFile,
    });
    let stop: (signal: string) => void = () => {};
    const daemon = captureIo(new Promise((resolve) => (stop = resolve)));
    const exit = runCli(['start', '--env', join(dir, 'none.env')], daemon.io);
    const url = await waitFor(() => /; serving (\S+);/.exec(daemon.lines.join('\n'))?.[1], 10_000, 'serving');
    const answer = await fetch(`${url}/api/v1/data`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ sensorId: 's', value: 1 }),
    });
    expect(answer.status).toBe(200);
    await waitFor(
      () => existsSync(logFile) && readFileSync(logFile, 'utf8').includes('AUTH_REFUSED'),
      10_000,
      'a refusal',
    );

    const status = captureIo();
    expect(await runCli(['status', '--url', url], status.io)).toBe(1);
    expect(status.lines.join('\n')).toMatch(/UNHEALTHY[\s\S]*the cloud refuses the API key/);
    const metrics = await (await fetch(`${url}/metrics`)).text();
    expect(parsePrometheus(metrics).value('edge_gateway_auth_refused')).toBe(1);

    stop('SIGTERM');
    expect(await exit).toBe(0);
    await waitFor(() => readFileSync(logFile, 'utf8').includes('edge gateway stopped'), 5000, 'the last line');
    const log = readFileSync(logFile, 'utf8');
    expect(log).toContain('AUTH_REFUSED');
    expect(log).not.toContain(wrongKey);
    expect(metrics).not.toContain(wrongKey);
  }, 30_000);
});
