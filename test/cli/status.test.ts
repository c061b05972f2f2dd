import { describe, expect, it } from 'vitest';
import { type CliIo, runCli } from '../../src/cli/cli.js';
import { healthTable, localUrl } from '../../src/cli/status.js';
import { defer } from '../helpers/cleanup.js';
import { createGateway, readings } from '../helpers/gateway.js';
import { freePort } from '../helpers/http.js';

function captureIo() {
  const lines: string[] = [];
  const errors: string[] = [];
  const io: CliIo = { out: (l) => lines.push(l), err: (l) => errors.push(l), untilSignal: () => new Promise(() => {}) };
  return { io, lines, errors };
}

describe('edge-gateway status', () => {
  it('prints a running gateway health as a table, and exits 0 when it is degraded', async () => {
    const gateway = createGateway({ maxOfflineQueueSize: 10 });
    await gateway.start();
    await gateway.sendBatch(readings(9));
    const server = await gateway.serveHttp({ port: 0 });
    defer(() => server.close());
    const { io, lines } = captureIo();
    expect(await runCli(['status', '--url', server.url], io)).toBe(0);
    const table = lines.join('\n');
    expect(table).toContain(`edge-gateway at ${server.url}: DEGRADED`);
    expect(table).toMatch(new RegExp(`Device\\s+${gateway.options.deviceId}`));
    expect(table).toMatch(/Pending sync\s+9 reading\(s\)/);
    expect(table).toMatch(/Last sync\s+never/);
    expect(table).toMatch(/Reasons:\n {2}- the offline queue is 90% full/);
  });

  it('prints the JSON with --json, and exits 1 when the gateway is unhealthy', async () => {
    const gateway = createGateway();
    await gateway.start();
    const server = await gateway.serveHttp({ port: 0 });
    defer(() => server.close());
    await gateway.stop();
    const { io, lines } = captureIo();
    expect(await runCli(['status', '--url', server.url, '--json'], io)).toBe(1);
    expect(JSON.parse(lines.join('\n'))).toMatchObject({ status: 'unhealthy', device_id: gateway.options.deviceId });
  });

  it('exits 1 with a message when nothing answers', async () => {
    const { io, errors } = captureIo();
    const url = `http://127.0.0.1:${await freePort()}`;
    expect(await runCli(['status', '--url', url], io)).toBe(1);
    expect(errors.join('\n')).toContain(`No gateway answers at ${url}/health (ECONNREFUSED)`);
  });

  it('finds the gateway from HTTP_HOST and HTTP_PORT, loopback for a wildcard host', () => {
    expect(localUrl({})).toBe('http://127.0.0.1:8000');
    expect(localUrl({ HTTP_HOST: '0.0.0.0', HTTP_PORT: '9100' })).toBe('http://127.0.0.1:9100');
    expect(localUrl({ HTTP_HOST: '::' })).toBe('http://[::1]:8000');
    expect(() => localUrl({ HTTP_PORT: 'eighty' })).toThrow(/HTTP_PORT/);
  });

  it('says how long ago the last sync was, and the uptime in words', () => {
    const now = Date.parse('2026-11-27T10:35:00Z');
    const table = healthTable(
      'http://127.0.0.1:8000',
      {
        status: 'healthy',
        device_id: 'edge-gateway-001',
        is_online: true,
        pending_sync_count: 42,
        last_sync: '2026-11-27T10:30:00.000Z',
        uptime_seconds: 90_061,
        local_storage_mb: 125.5,
        cpu_percent: 15.2,
        memory_mb: 89.1,
        reasons: [],
      },
      now,
    );
    expect(table).toMatch(/Last sync\s+2026-11-27T10:30:00.000Z \(5 min 0 s ago\)/);
    expect(table).toMatch(/Uptime\s+1 d 1 h 1 min/);
    expect(table).toMatch(/Online\s+yes/);
    expect(table).not.toContain('Reasons');
  });
});
