import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { EdgeGateway, HealthStatus } from '../../src/index.js';
import { defer } from '../helpers/cleanup.js';
import { createGateway } from '../helpers/gateway.js';
import { CHAOS_SEED, mulberry32, pick } from './lib/chaos-config.js';
import { type CloudGate, startCloudGate } from './lib/cloud-gate.js';
import { type CloudProcess, startCloudProcess } from './lib/cloud-process.js';
import { ReadingLedger, readingsOf } from './lib/reading-ledger.js';
import { ScenarioTally } from './lib/scenario-tally.js';
import { type ShiftedWallClock, shiftWallClock } from './lib/wall-clock.js';

/**
 * Clock: the wall clock steps forwards and backwards (hours, days) while the gateway takes readings and syncs.
 * Scheduling, backoff, stall detection and uptime run on the monotonic clock, so none of them may move; what people
 * read (timestamps, lastSyncTime, nextSyncAt) follows the wall clock; clockSkewMs says how far it is from the
 * cloud's. The cloud runs in a process of its own, so that its clock stays put while the test's jumps.
 * (Windowed aggregation, the other clock user the issue names, does not exist yet.)
 */

const HOUR = 3_600_000;
const DAY = 24 * HOUR;
/** Monotonic ms of readings and jumps in the chaos run. */
const LOAD_MS = pick(4000, 60_000);
/** Monotonic ms of the idle stretch, with jumps, after it. */
const IDLE_MS = pick(1500, 10_000);
const DRAIN_TIMEOUT_MS = pick(20_000, 60_000);

const tally = new ScenarioTally('clock');
afterAll(() => tally.record());

let cloud: CloudProcess;
beforeAll(async () => {
  cloud = await startCloudProcess();
});
afterAll(() => cloud?.close());

/** The wall clock shifted for the current test, put back after it. */
function wallClock(): ShiftedWallClock {
  const clock = shiftWallClock();
  defer(() => clock.restore());
  return clock;
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/** helpers/wait-for keeps its deadline on the wall clock, which these tests move: this one is monotonic. */
async function until<T>(predicate: () => T | Promise<T>, timeoutMs: number, what: string): Promise<NonNullable<T>> {
  const deadline = performance.now() + timeoutMs;
  for (;;) {
    const value = await predicate();
    if (value) return value as NonNullable<T>;
    if (performance.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms: ${what}`);
    await sleep(10);
  }
}

/** A gateway syncing to the cloud process through a gate the test can count requests on. */
async function setup(options: Parameters<typeof createGateway>[0] = {}): Promise<{
  gateway: EdgeGateway;
  gate: CloudGate;
  deviceId: string;
}> {
  const gate = await startCloudGate(cloud.url);
  const gateway = createGateway({ cloudUrl: gate.url, apiKey: cloud.apiKey, ...options });
  await gateway.start();
  return { gateway, gate, deviceId: gateway.options.deviceId };
}

/** What a sane status looks like whatever the wall clock did: found problems, one line each. */
function insane(gateway: EdgeGateway, health: HealthStatus, longestWaitMs: number): string[] {
  const problems: string[] = [];
  const stall = health.reasons.find((reason) => /nothing acknowledged/.test(reason));
  if (stall) problems.push(`false stall: ${stall}`);
  if (health.uptimeSeconds > 3600) problems.push(`uptime ${health.uptimeSeconds} s`);
  const next = gateway.getStatus().nextSyncAt;
  if (next) {
    const inMs = next.getTime() - Date.now();
    if (inMs < -1000 || inMs > longestWaitMs + 1000) problems.push(`nextSyncAt ${inMs} ms from now`);
  }
  return problems;
}

describe('clock', () => {
  it(`keeps readings flowing exactly once while the wall clock jumps ±hours and ±days (seed ${CHAOS_SEED})`, async () => {
    const random = mulberry32(CHAOS_SEED ^ 0xc10c);
    const clock = wallClock();
    const { gateway, gate, deviceId } = await setup({ batchSize: 50 });
    const longestWaitMs = 1000 * Math.max(gateway.options.syncInterval, gateway.options.maxBackoff);
    const ledger = new ReadingLedger();
    const problems: string[] = [];
    let jumps = 0;
    let value = 0;
    const jump = () => {
      const size = random() < 0.5 ? HOUR * (1 + random() * 23) : DAY * (1 + random() * 6);
      clock.jump(Math.round(random() < 0.5 ? size : -size));
      jumps++;
    };

    // Load: readings in small batches, a jump every 50-300 ms, health and status checked all along.
    const loadEnd = performance.now() + LOAD_MS;
    let nextJump = performance.now();
    while (performance.now() < loadEnd) {
      if (performance.now() >= nextJump) {
        jump();
        nextJump = performance.now() + 50 + random() * 250;
      }
      const batch = readingsOf('clock', value, 1 + Math.floor(random() * 40));
      value += batch.length;
      await gateway.sendBatch(batch);
      ledger.accept(batch);
      problems.push(...insane(gateway, gateway.healthCheck(), longestWaitMs));
      await sleep(Math.floor(random() * 20));
    }
    const healed = performance.now();
    await until(() => gateway.getStatus().pendingSyncCount === 0, DRAIN_TIMEOUT_MS, 'the queue drains');
    tally.recovered(performance.now() - healed);

    // Idle, still jumping: the loop keeps probing (it did not stall) at its interval (it does not spin).
    const pingsBefore = gate.pings;
    const idleEnd = performance.now() + IDLE_MS;
    while (performance.now() < idleEnd) {
      jump();
      problems.push(...insane(gateway, gateway.healthCheck(), longestWaitMs));
      await sleep(50 + random() * 100);
    }
    const pings = gate.pings - pingsBefore;
    const expectedPings = IDLE_MS / (1000 * gateway.options.syncInterval);
    expect(pings).toBeGreaterThan(0);
    expect(pings).toBeLessThan(10 * expectedPings);
    expect(problems).toEqual([]);

    // The skew against the cloud's serverTime is the wall clock's offset, give or take a round trip.
    await gateway.forceSync();
    const skew = gateway.getStatus().clockSkewMs as number;
    expect(Math.abs(skew + clock.offsetMs)).toBeLessThan(2000);

    tally.trial(jumps);
    const result = ledger.compare(await cloud.points(deviceId));
    tally.delivery(result);
    expect(result.problems).toEqual([]);
    expect(result).toMatchObject({ lost: 0, duplicated: 0, delivered: ledger.size });
  });

  it('syncs a full batch at once after the wall clock jumps forwards, not an interval later', async () => {
    const clock = wallClock();
    const { gateway } = await setup({ syncInterval: 30, batchSize: 20 });
    await until(() => gateway.getStatus().isOnline, 5000, 'the first cycle reaches the cloud');
    await until(() => gateway.getStatus().nextSyncAt, 5000, 'the next cycle is scheduled');
    clock.jump(DAY);
    await gateway.sendBatch(readingsOf('forward', 0, 25));
    // A batchful of intake asks for a sync now; the next scheduled one is 30 s away.
    await until(() => gateway.getStatus().pendingSyncCount === 0, 10_000, 'the batch goes out at once');
    tally.trial(1);
  });

  it('reports no stall, and no day of uptime, after the wall clock jumps a day forwards', async () => {
    const clock = wallClock();
    const { gateway } = await setup({ syncInterval: 30, batchSize: 100 });
    await until(() => gateway.getStatus().isOnline, 5000, 'the first cycle reaches the cloud');
    await gateway.sendBatch(readingsOf('stall', 0, 5)); // fewer than a batch: they wait for the next cycle
    clock.jump(DAY);
    const health = gateway.healthCheck();
    expect(health.pendingSyncCount).toBe(5);
    expect(health).toMatchObject({ status: 'healthy', reasons: [] });
    expect(health.uptimeSeconds).toBeLessThan(60);
    tally.trial(1);
  });

  it('gives nextSyncAt on the wall clock as it is now, after it jumped a day backwards', async () => {
    const clock = wallClock();
    const { gateway } = await setup({ syncInterval: 30 });
    await until(() => gateway.getStatus().nextSyncAt, 5000, 'the next cycle is scheduled');
    clock.jump(-DAY);
    const inMs = (gateway.getStatus().nextSyncAt as Date).getTime() - Date.now();
    expect(inMs).toBeGreaterThanOrEqual(0);
    expect(inMs).toBeLessThanOrEqual(30_000);
    tally.trial(1);
  });

  it('measures clockSkewMs against the cloud serverTime after each jump', async () => {
    const clock = wallClock();
    const { gateway } = await setup();
    for (const offset of [2 * HOUR, -3 * DAY]) {
      clock.jump(offset);
      await gateway.forceSync();
      const skew = gateway.getStatus().clockSkewMs as number;
      expect(Math.abs(skew + clock.offsetMs)).toBeLessThan(2000);
    }
    tally.trial(2);
  });
});
