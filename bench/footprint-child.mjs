/**
 * One footprint trial, in a process of its own so that its CPU and memory are its own: a gateway built from dist/
 * (as users run it), fed `rate` readings a second by awaited sendData() calls for `seconds`, syncing to `cloudUrl`
 * with default options. Prints one JSON line: CPU share of one core, peak RSS, readings sent and acknowledged.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { peakRssMb } from './peak-rss.mjs';

const [rate = '10', seconds = '60', cloudUrl = '', apiKey = ''] = process.argv.slice(2);
// Plain JavaScript on the built package, so that no TypeScript loader weighs on the figures.
const { EdgeGateway } = await import(join(import.meta.dirname, '..', 'dist', 'index.js'));

const dir = mkdtempSync(join(tmpdir(), 'edge-gateway-footprint-'));
const gateway = new EdgeGateway({ deviceId: `footprint-${rate}`, cloudUrl, apiKey, localDb: join(dir, 'edge.db') });
await gateway.start();

const perSecond = Number(rate);
const tickMs = 100;
const perTick = perSecond / (1000 / tickMs);
let sent = 0;
let owed = 0;
const cpuStart = process.cpuUsage();
const started = performance.now();
await new Promise((resolve) => {
  const timer = setInterval(() => {
    owed += perTick;
    const now = Date.now();
    for (; owed >= 1; owed--) {
      const i = sent++;
      void gateway.sendData({
        sensorId: `sensor-${i % 10}`,
        value: 20 + Math.sin(i / 50),
        unit: 'celsius',
        tags: { site: 'bench' },
        timestamp: now,
      });
    }
    if (performance.now() - started >= Number(seconds) * 1000) {
      clearInterval(timer);
      resolve();
    }
  }, tickMs);
});
await gateway.forceSync();
const wallUs = (performance.now() - started) * 1000;
const cpu = process.cpuUsage(cpuStart);
const pending = gateway.getStatus().pendingSyncCount;
await gateway.stop();
rmSync(dir, { recursive: true, force: true });
process.stdout.write(
  `${JSON.stringify({
    rate: perSecond,
    cpuShare: (cpu.user + cpu.system) / wallUs,
    peakRssMb: peakRssMb(),
    sent,
    pending,
  })}\n`,
);
