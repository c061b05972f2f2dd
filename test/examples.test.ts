import { spawn } from 'node:child_process';
import { mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startCloudServer, type ThrowawayCloud } from '../src/testing/index.js';

const root = join(import.meta.dirname, '..');

/** Runs an example as a user would (tsx resolves `edge-gateway` to src/ through tsconfig paths). */
function runExample(name: string, env: Record<string, string>): Promise<{ code: number | null; output: string }> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, ['--import', 'tsx', join('examples', name)], {
      cwd: root,
      env: { ...process.env, ...env },
    });
    let output = '';
    child.stdout.on('data', (chunk) => {
      output += chunk;
    });
    child.stderr.on('data', (chunk) => {
      output += chunk;
    });
    const timer = setTimeout(() => child.kill('SIGKILL'), 20_000);
    child.on('exit', (code) => {
      clearTimeout(timer);
      resolve({ code, output });
    });
  });
}

describe('examples/', () => {
  let cloud: ThrowawayCloud;
  let dir: string;
  beforeAll(async () => {
    cloud = await startCloudServer();
    dir = mkdtempSync(join(tmpdir(), 'edge-gateway-examples-'));
  });
  afterAll(async () => {
    await cloud.close();
    rmSync(dir, { recursive: true, force: true });
  });

  it('has an example for each test below', () => {
    expect(readdirSync(join(root, 'examples')).sort()).toEqual([
      'aggregation.ts',
      'basic-usage.ts',
      'conflict-resolution.ts',
      'custom-processor.ts',
      'monitoring.ts',
      'retention.ts',
    ]);
  });

  const env = (name: string) => ({
    CLOUD_API_URL: cloud.url,
    CLOUD_API_KEY: cloud.apiKey,
    LOCAL_DB_PATH: join(dir, `${name}.db`),
  });

  it('basic-usage delivers its reading to the cloud by the time stop() resolves', async () => {
    const before = (await cloud.points('device-001')).length;
    const { code, output } = await runExample('basic-usage.ts', env('basic'));
    expect(output).toContain('queue size: 1');
    expect(code).toBe(0);
    const points = await cloud.points('device-001');
    expect(points.length - before).toBe(1);
    expect(points.at(-1)).toMatchObject({
      sensorId: 'temp-01',
      value: 23.5,
      unit: 'celsius',
      tags: { location: 'warehouse-A' },
    });
  });

  it('custom-processor raises an alert, stores it, and forwards it with the processed data', async () => {
    const before = (await cloud.points('device-001')).length;
    const { code, output } = await runExample('custom-processor.ts', env('custom'));
    expect(code).toBe(0);
    expect(output).toContain('alert (warning) from pressure-07: High value detected: 180');
    expect(output).toContain('alerts stored: 1');
    const points = (await cloud.points('device-001')).slice(before);
    expect(points.map((p) => p.data)).toEqual(
      expect.arrayContaining([
        expect.objectContaining({ original: 42, normalized: 0.42 }),
        expect.objectContaining({ original: 180, normalized: 1.8 }),
        { alert: { severity: 'warning', message: 'High value detected: 180', source: 'CustomProcessor' } },
      ]),
    );
    expect(points).toHaveLength(3);
  });

  it('aggregation syncs one-minute aggregates, the deadbanded thermometer and the alerts', async () => {
    const { code, output } = await runExample('aggregation.ts', env('aggregation'));
    expect(code).toBe(0);
    expect(output).toContain('alert critical: pressure above 180');
    expect(output).toContain('readings in: 1200, kept: 606');
    expect(output).toContain('aggregates: 10 one-minute windows; one ten-minute window of 600 readings');
    const points = await cloud.points('press-line-4');
    const aggregates = points.filter((p) => (p.data as { aggregate?: unknown } | undefined)?.aggregate);
    expect(aggregates).toHaveLength(10);
    expect(aggregates.every((p) => p.sensorId === 'pressure')).toBe(true);
    expect(points.filter((p) => p.sensorId === 'oil-temp')).toHaveLength(6);
    expect(points.filter((p) => p.sensorId === 'pressure' && p.value !== undefined)).toHaveLength(0);
    const alerts = points.filter((p) => (p.data as { alert?: unknown } | undefined)?.alert);
    expect(alerts.map((p) => (p.data as { alert: { severity: string } }).alert.severity)).toEqual(['critical', 'info']);
  });

  it('conflict-resolution settles one offline conflict per strategy as each promises', async () => {
    const { code, output } = await runExample('conflict-resolution.ts', env('conflicts'));
    expect(output).toContain('last-write-wins: boiler-1 settles at {"target":74} (version 3)');
    expect(output).toContain('cloud-wins: boiler-2 settles at {"target":68} (version 2)');
    expect(output).toContain('edge-wins: boiler-3 settles at {"target":74} (version 3)');
    expect(output).toContain('custom: boiler-4 settles at {"target":74,"mergedFrom":[74,68]} (version 3)');
    expect(output).toContain('conflict on setpoints/boiler-2: cloud-wins chose cloud');
    expect(code).toBe(0);
  });

  it('retention downsamples the oldest minutes past maxRecords, and the cloud gets the aggregates', async () => {
    const { code, output } = await runExample('retention.ts', env('retention'));
    expect(output).toContain('queued: 964');
    expect(output).toContain('downsampled: 240 readings into 4 aggregates');
    expect(output).toContain('acknowledged: 964');
    expect(code).toBe(0);
    const points = await cloud.points('device-retention');
    const aggregates = points.filter((p) => p.data !== undefined);
    expect(points).toHaveLength(964);
    expect(aggregates.map((p) => (p.data as { aggregate: { count: number } }).aggregate.count)).toEqual([
      60, 60, 60, 60,
    ]);
  });

  it('monitoring prints status and health after a forced sync', async () => {
    const { code, output } = await runExample('monitoring.ts', env('monitoring'));
    expect(code).toBe(0);
    expect(output).toContain('forceSync: acknowledged 3, remaining 0');
    expect(output).toContain('Online: true');
    expect(output).toContain('Status: healthy');
    expect(output).toContain('edge_gateway_data_points_total 3');
    expect(output).toContain('edge_gateway_queue_size 0');
  });
});
