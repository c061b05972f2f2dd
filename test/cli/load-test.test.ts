import { describe, expect, it } from 'vitest';
import { type CliIo, runCli } from '../../src/cli/cli.js';
import { LatencyHistogram, type LoadTestSummary, sampleValue } from '../../src/cli/load-test.js';
import { defer } from '../helpers/cleanup.js';
import { createGateway } from '../helpers/gateway.js';

function captureIo() {
  const lines: string[] = [];
  const errors: string[] = [];
  const io: CliIo = { out: (l) => lines.push(l), err: (l) => errors.push(l), untilSignal: () => new Promise(() => {}) };
  return { io, lines, errors };
}

async function servedGateway(http: { rateLimit?: number; burst?: number } = {}) {
  const gateway = createGateway();
  await gateway.start();
  const server = await gateway.serveHttp({ port: 0, ...http });
  defer(() => server.close());
  return { gateway, server };
}

describe('edge-gateway load-test', () => {
  it('drives a running gateway through POST /api/v1/data, and every acknowledged reading is stored', async () => {
    const { gateway, server } = await servedGateway();
    const { io, lines } = captureIo();
    const args = ['load-test', '--url', server.url, '--duration=1', '--rate=200', '--batch=5', '--json'];
    expect(await runCli(args, io)).toBe(0);
    const summary = JSON.parse(lines.join('')) as LoadTestSummary;
    expect(summary).toMatchObject({
      target: server.url,
      sent: 200,
      requests: 40,
      acknowledged: 200,
      refused: 0,
      lost: 0,
    });
    expect(summary.latencyMs.p50).toBeGreaterThan(0);
    expect(summary.latencyMs.p99).toBeGreaterThanOrEqual(summary.latencyMs.p50);
    expect(summary.rssMb).toBeNull(); // a library gateway serves no process metrics
    expect(gateway.getStatus().pendingSyncCount).toBe(200);
  });

  it('counts readings refused by the rate limit apart from acknowledged and lost ones', async () => {
    const { gateway, server } = await servedGateway({ rateLimit: 20, burst: 20 });
    const { io, lines } = captureIo();
    expect(await runCli(['load-test', '--url', server.url, '--duration=1', '--rate=100', '--json'], io)).toBe(0);
    const summary = JSON.parse(lines.join('')) as LoadTestSummary;
    expect(summary.refused).toBeGreaterThan(0);
    expect(summary.refusedByStatus['429']).toBe(summary.refused);
    expect(summary.acknowledged + summary.refused).toBe(summary.sent);
    expect(summary.lost).toBe(0);
    expect(gateway.getStatus().pendingSyncCount).toBe(summary.acknowledged);
  });

  it('runs an in-process gateway and cloud, and checks the cloud holds every acknowledged reading', async () => {
    const { io, lines } = captureIo();
    expect(await runCli(['load-test', '--duration=1', '--rate=300', '--json'], io)).toBe(0);
    const summary = JSON.parse(lines.join('')) as LoadTestSummary;
    expect(summary).toMatchObject({ target: 'in-process', sent: 300, acknowledged: 300, lost: 0, inCloud: 300 });
    expect(summary.cpuPercent).toBeGreaterThan(0);
    expect(summary.peakRssMb).toBeGreaterThanOrEqual(summary.rssMb ?? Number.POSITIVE_INFINITY);
  });

  it('prints a summary for people without --json', async () => {
    const { server } = await servedGateway();
    const { io, lines } = captureIo();
    expect(await runCli(['load-test', '--url', server.url, '--duration=0.5', '--rate=20'], io)).toBe(0);
    const text = lines.join('\n');
    expect(text).toMatch(/sent\s+10 readings in 10 requests/);
    expect(text).toMatch(/acknowledged\s+10 \(durable on the gateway\)/);
    expect(text).toMatch(/lost\s+0/);
    expect(text).toMatch(/latency\s+p50 [\d.]+ ms, p99 [\d.]+ ms/);
    expect(text).toMatch(/gateway\s+CPU unknown, RSS unknown/);
  });

  it('refuses a target that is not on this machine, and bad flags, with exit code 2', async () => {
    const { io, errors } = captureIo();
    expect(await runCli(['load-test', '--url', 'http://192.0.2.1:8000', '--duration=1'], io)).toBe(2);
    expect(errors.join('\n')).toContain('loopback');
    expect(await runCli(['load-test', '--rate=-5'], io)).toBe(2);
    expect(await runCli(['load-test', '--batch=1.5'], io)).toBe(2);
    expect(errors.join('\n')).toContain('Expected --batch to be a positive integer');
  });
});

describe('LatencyHistogram', () => {
  it('gives percentiles within 2%', () => {
    const histogram = new LatencyHistogram();
    for (let i = 1; i <= 1000; i++) histogram.record(i / 10); // 0.1 .. 100 ms
    expect(histogram.quantile(0.5)).toBeGreaterThanOrEqual(50);
    expect(histogram.quantile(0.5)).toBeLessThanOrEqual(51);
    expect(histogram.quantile(0.99)).toBeGreaterThanOrEqual(99);
    expect(histogram.quantile(0.99)).toBeLessThanOrEqual(100);
    expect(histogram.max).toBe(100);
    expect(new LatencyHistogram().quantile(0.5)).toBe(0);
  });
});

describe('sampleValue()', () => {
  it('reads an unlabelled sample from a Prometheus exposition', () => {
    const text = '# TYPE a counter\na_total 12\nb{x="1"} 3.5\n';
    expect(sampleValue(text, 'a_total')).toBe(12);
    expect(sampleValue(text, 'b')).toBe(3.5);
    expect(sampleValue(text, 'c')).toBeUndefined();
  });
});
