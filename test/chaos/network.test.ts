import v8 from 'node:v8';
import { runInNewContext } from 'node:vm';
import { describe, expect, it } from 'vitest';
import type { StoredPoint } from '../../src/cloud/index.js';
import type { EdgeGateway, HealthStatus, SyncErrorCode, SyncErrorEvent, SyncResult } from '../../src/index.js';
import { startCloudServer, type ThrowawayCloud } from '../../src/testing/index.js';
import { defer } from '../helpers/cleanup.js';
import { comparable, createGateway, readings } from '../helpers/gateway.js';
import { waitFor } from '../helpers/wait-for.js';
import { CHAOS_SEED, mulberry32, pick } from './lib/chaos-config.js';
import { FAULT_KINDS, type FaultKind, FaultProxy, type FaultSetting, type ProxiedRequest } from './lib/fault-proxy.js';
import { recordChaos } from './lib/summary.js';

/** Short timings: a request may take 1 s, a retry waits at most 0.5 s. */
const TIMINGS = {
  connectionTimeout: 1,
  initialBackoff: 0.02,
  maxBackoff: 0.5,
  batchSize: 20,
  compression: true,
  syncInterval: 0.2,
  stopTimeout: 1,
} as const;

/** The longest a fault phase of the soak waits, past its planned length, to hit its first request. */
const PHASE_EXTENSION_MS = 3000;

/** The Retry-After the proxy's 429 carries, in ms. */
const RETRY_AFTER_MS = 1000;

/** The sync-error code each fault must produce when it hits a batch. */
const EXPECTED_CODE: Record<Exclude<FaultKind, 'latency'>, SyncErrorCode> = {
  'reset-request': 'NETWORK',
  'reset-response': 'NETWORK',
  truncate: 'NETWORK',
  'lose-response': 'NETWORK',
  blackhole: 'TIMEOUT',
  'stall-response': 'TIMEOUT',
  'http-500': 'SERVER_ERROR',
  'http-503': 'SERVER_ERROR',
  'http-429': 'THROTTLED',
};

interface Timed<T> {
  at: number;
  event: T;
}

/** A reference cloud, a fault proxy in front of it and a gateway syncing through the proxy; all closed afterwards. */
async function setup(options: Parameters<typeof createGateway>[0] = {}) {
  const cloud = await startCloudServer();
  defer(() => cloud.close());
  const proxy = await FaultProxy.start({
    target: { host: '127.0.0.1', port: cloud.server.port },
    seed: CHAOS_SEED,
    maxRecorded: 1_000_000,
  });
  defer(() => proxy.close());
  const gateway = createGateway({ cloudUrl: proxy.url(), apiKey: cloud.apiKey, ...TIMINGS, ...options });
  const deviceId = gateway.options.deviceId;
  const errors: Timed<SyncErrorEvent>[] = [];
  const offline: Timed<string>[] = [];
  const syncs: SyncResult[] = [];
  gateway.on('sync-error', (event) => errors.push({ at: Date.now(), event }));
  gateway.on('offline', ({ reason }) => offline.push({ at: Date.now(), event: reason }));
  gateway.on('sync', (result) => syncs.push(result));
  const stats = () => cloud.server.store.stats(deviceId);
  return { cloud, proxy, gateway, deviceId, errors, offline, syncs, stats };
}

const batchRequests = (proxy: FaultProxy): ProxiedRequest[] =>
  proxy.requests.filter((r) => r.method === 'POST' && r.path.endsWith('/telemetry/batches'));

const drained = (gateway: EdgeGateway, timeoutMs = 10_000) =>
  waitFor(() => gateway.getStatus().pendingSyncCount === 0, timeoutMs, 'an empty local queue');

/** Every reading sent is in the cloud once, with the same content, in order. */
async function expectDeliveredOnce(cloud: ThrowawayCloud, deviceId: string, sent: ReturnType<typeof readings>) {
  const points = await cloud.points(deviceId);
  expect(points.map(comparable)).toEqual(sent.map(comparable));
  expect(new Set(points.map((p) => p.seq)).size).toBe(points.length);
}

/** A request the gateway gave up on had its connection closed: none is left hanging (and holding a socket). */
async function expectFaultedConnectionsClosed(proxy: FaultProxy, kinds: readonly FaultKind[] = FAULT_KINDS) {
  const given = proxy.requests.filter((r) => r.fault && kinds.includes(r.fault));
  const faulted = [...new Set(given.map((r) => r.connection))];
  expect(faulted.length).toBeGreaterThan(0);
  await waitFor(
    () => faulted.every((id) => !proxy.isOpen(id)),
    2000,
    `the gateway closed the connections of the requests it gave up on (${faulted.filter((id) => proxy.isOpen(id))} open)`,
  );
}

// ---------------------------------------------------------------------------------------------------------------
// The soak: readings keep coming while a seeded schedule switches faults; then heal, drain and compare.

interface Phase {
  setting: FaultSetting;
  ms: number;
}

/** An endless seeded schedule: every fault kind (and a clean spell) once per shuffled round, with seeded settings. */
function* faultSchedule(random: () => number): Generator<Phase> {
  const kinds: (FaultKind | 'none')[] = [...FAULT_KINDS, 'none'];
  const between = (lo: number, hi: number) => Math.round(lo + random() * (hi - lo));
  for (;;) {
    const order = [...kinds];
    for (let i = order.length - 1; i > 0; i--) {
      const j = Math.floor(random() * (i + 1));
      [order[i], order[j]] = [order[j] as FaultKind, order[i] as FaultKind];
    }
    for (const kind of order) {
      const rate = ([0.25, 0.5, 1] as const)[Math.floor(random() * 3)] as number;
      if (kind === 'blackhole') yield { setting: { kind, rate: 1 }, ms: pick(3000, between(3000, 8000)) };
      else if (kind === 'latency') {
        yield {
          setting: { kind, latencyMs: between(20, 250), jitterMs: between(0, 150) },
          ms: pick(between(500, 1200), between(1000, 6000)),
        };
      } else yield { setting: { kind, rate }, ms: pick(between(500, 1200), between(1000, 6000)) };
    }
  }
}

interface Reading {
  sensorId: string;
  value: number;
  unit: string;
  tags: { id: string; round: string };
  timestamp: Date;
}

interface Sample {
  at: number;
  phase: number;
  isOnline: boolean;
  health: HealthStatus['status'];
  reasons: string[];
}

describe('EdgeGateway', () => {
  describe('behind a faulty network', () => {
    describe('with latency and jitter below its timeout', () => {
      it('delivers every reading once, without a failed attempt', async () => {
        // The timeout has room for a loaded machine: each chunk waits up to 120 ms, each way.
        const { cloud, proxy, gateway, deviceId, errors } = await setup({ connectionTimeout: 5 });
        proxy.set({ kind: 'latency', latencyMs: 80, jitterMs: 40 });
        await gateway.start();
        const sent = readings(100);
        await gateway.sendBatch(sent);
        await drained(gateway);

        expect(errors).toEqual([]);
        expect(proxy.counts.latency).toBeGreaterThanOrEqual(5);
        await expectDeliveredOnce(cloud, deviceId, sent);
      });
    });

    describe('with connections reset mid-request-body', () => {
      it('resends, and the cloud, which never got a whole request, stores each reading once', async () => {
        const { cloud, proxy, gateway, deviceId, errors, stats } = await setup();
        proxy.set({ kind: 'reset-request', only: 'batches', limit: 3 });
        await gateway.start();
        const sent = readings(100);
        await gateway.sendBatch(sent);
        await drained(gateway);

        expect(proxy.counts['reset-request']).toBe(3);
        expect(errors.slice(0, 3).map((e) => e.event.code)).toEqual(['NETWORK', 'NETWORK', 'NETWORK']);
        expect(await stats()).toEqual({ points: 100, batches: 5, duplicateBatches: 0 });
        await expectDeliveredOnce(cloud, deviceId, sent);
      });
    });

    describe.each([
      ['reset-response', 'connection reset mid-response'],
      ['truncate', 'a truncated response'],
      ['lose-response', 'the response lost after the cloud committed'],
    ] as const)('with %s (%s)', (kind, _description) => {
      it('resends the same batch under the same key, and the cloud answers the replay from its ledger', async () => {
        const { cloud, proxy, gateway, deviceId, errors, syncs, stats } = await setup();
        proxy.set({ kind, only: 'batches', limit: 3 });
        await gateway.start();
        const sent = readings(100);
        await gateway.sendBatch(sent);
        await drained(gateway);

        expect(proxy.counts[kind]).toBe(3);
        expect(errors.slice(0, 3).map((e) => e.event.code)).toEqual(['NETWORK', 'NETWORK', 'NETWORK']);
        // Each cut answer came after a commit (or a replay): each one costs exactly one replay, never a duplicate.
        expect(await stats()).toEqual({ points: 100, batches: 5, duplicateBatches: 3 });
        const requests = batchRequests(proxy);
        for (const [i, request] of requests.entries()) {
          if (request.fault) expect(requests[i + 1]?.idempotencyKey).toBe(request.idempotencyKey);
        }
        expect(syncs.reduce((sum, r) => sum + r.duplicates, 0)).toBeGreaterThan(0);
        expect(syncs.reduce((sum, r) => sum + r.acknowledged, 0)).toBe(100);
        await expectDeliveredOnce(cloud, deviceId, sent);
      });
    });

    describe('with a blackhole that never answers', () => {
      it('times out after connectionTimeout, reports the cloud unreachable, and delivers once after heal', async () => {
        const { cloud, proxy, gateway, deviceId, errors, offline, stats } = await setup();
        await gateway.start();
        await waitFor(() => gateway.getStatus().isOnline, 5000, 'the first contact');
        proxy.set({ kind: 'blackhole' });
        const sent = readings(60);
        await gateway.sendBatch(sent);
        await waitFor(() => errors.length > 0, 5000, 'a failed attempt');

        const first = batchRequests(proxy)[0] as ProxiedRequest;
        expect(first.fault).toBe('blackhole');
        expect(errors[0]?.event).toMatchObject({ code: 'TIMEOUT', batchNo: expect.any(Number) });
        // The gateway gave up on the request no sooner than its timeout.
        expect((errors[0]?.at as number) - first.at).toBeGreaterThanOrEqual(TIMINGS.connectionTimeout * 1000 - 50);
        expect(offline).toHaveLength(1);
        expect(gateway.getStatus()).toMatchObject({
          isOnline: false,
          pendingSyncCount: 60,
          lastError: expect.objectContaining({ code: 'TIMEOUT' }),
        });
        expect(gateway.healthCheck()).toMatchObject({
          status: 'degraded',
          reasons: [expect.stringMatching(/unreachable/)],
        });

        proxy.heal();
        await drained(gateway);
        expect(await stats()).toEqual({ points: 60, batches: 3, duplicateBatches: 0 });
        await expectDeliveredOnce(cloud, deviceId, sent);
        expect(gateway.healthCheck()).toMatchObject({ status: 'healthy', isOnline: true, reasons: [] });
      });
    });

    describe.each([
      ['blackhole', 'a blackhole'],
      ['stall-response', 'answers that stall after their head'],
    ] as const)('with %s (%s), while garbage collection runs', (kind, _description) => {
      it('still times out every request, and delivers once', async () => {
        // A timeout or an abort that only weak references keep alive dies with a collection: run them all along.
        v8.setFlagsFromString('--expose-gc');
        const gc = runInNewContext('gc') as () => void;
        const collector = setInterval(() => gc(), 20);
        defer(() => clearInterval(collector));
        const { cloud, proxy, gateway, deviceId, errors } = await setup();
        proxy.set({ kind, only: 'batches', limit: 3 });
        await gateway.start();
        const sent = readings(40);
        await gateway.sendBatch(sent);
        await drained(gateway, 3 * (TIMINGS.connectionTimeout + TIMINGS.maxBackoff) * 1000 + 5000);

        clearInterval(collector);
        expect(errors.map((e) => e.event.code)).toEqual(['TIMEOUT', 'TIMEOUT', 'TIMEOUT']);
        await expectDeliveredOnce(cloud, deviceId, sent);
        await expectFaultedConnectionsClosed(proxy);
      });
    });

    describe('with an answer whose body stalls after its head', () => {
      it('gives up on the batch after connectionTimeout and delivers it once', async () => {
        const { cloud, proxy, gateway, deviceId, errors, stats } = await setup();
        proxy.set({ kind: 'stall-response', only: 'batches', limit: 1 });
        await gateway.start();
        const sent = readings(40);
        await gateway.sendBatch(sent);
        // Bounded by the timeout (plus a retry), not by how long the socket might stay open.
        await drained(gateway, 3 * TIMINGS.connectionTimeout * 1000 + 5000);

        expect(errors.map((e) => e.event.code)).toEqual(['TIMEOUT']);
        expect(await stats()).toEqual({ points: 40, batches: 2, duplicateBatches: 1 });
        await expectDeliveredOnce(cloud, deviceId, sent);
        await expectFaultedConnectionsClosed(proxy);
      });

      it('gives up on a liveness probe after connectionTimeout and goes on syncing', async () => {
        const { cloud, proxy, gateway, deviceId, offline } = await setup();
        proxy.set({ kind: 'stall-response', only: 'health', limit: 1 });
        await gateway.start();
        await waitFor(() => proxy.counts['stall-response'] === 1, 5000, 'the stalled probe');
        const sent = readings(40);
        await gateway.sendBatch(sent);
        await drained(gateway, 3 * TIMINGS.connectionTimeout * 1000 + 5000);

        expect(offline.map((o) => o.event)).toEqual([expect.stringMatching(/timed out/)]);
        await expectDeliveredOnce(cloud, deviceId, sent);
        await expectFaultedConnectionsClosed(proxy);
      });
    });

    describe.each([500, 503] as const)('with the cloud answering %i', (status) => {
      it('reports SERVER_ERROR and the cloud unreachable, retries, and the cloud stores each reading once', async () => {
        const { cloud, proxy, gateway, deviceId, errors, offline, stats } = await setup();
        proxy.set({ kind: `http-${status}`, only: 'batches', limit: 3 });
        await gateway.start();
        const sent = readings(100);
        await gateway.sendBatch(sent);
        await drained(gateway);

        expect(errors.map((e) => [e.event.code, e.event.httpStatus])).toEqual(Array(3).fill(['SERVER_ERROR', status]));
        expect(offline.length).toBeGreaterThanOrEqual(1);
        expect(await stats()).toEqual({ points: 100, batches: 5, duplicateBatches: 0 });
        await expectDeliveredOnce(cloud, deviceId, sent);
        expect(gateway.getStatus().isOnline).toBe(true);
      });
    });

    describe('with the cloud answering 429 with Retry-After: 1', () => {
      it('reports THROTTLED, sends again no sooner than the Retry-After, and stays online', async () => {
        const { cloud, proxy, gateway, deviceId, errors, offline, stats } = await setup();
        await gateway.start();
        await waitFor(() => gateway.getStatus().isOnline, 5000, 'the first contact');
        proxy.set({ kind: 'http-429', only: 'batches', limit: 1 });
        const sent = readings(60);
        await gateway.sendBatch(sent);
        await drained(gateway);

        const [throttled, next] = batchRequests(proxy);
        expect(throttled?.fault).toBe('http-429');
        expect(next?.idempotencyKey).toBe(throttled?.idempotencyKey);
        expect((next?.at as number) - (throttled?.at as number)).toBeGreaterThanOrEqual(RETRY_AFTER_MS - 50);
        expect(errors.map((e) => e.event)).toEqual([
          expect.objectContaining({ code: 'THROTTLED', httpStatus: 429, retryInMs: expect.any(Number) }),
        ]);
        expect(errors[0]?.event.retryInMs).toBeGreaterThanOrEqual(RETRY_AFTER_MS);
        expect(offline).toEqual([]);
        expect(await stats()).toEqual({ points: 60, batches: 3, duplicateBatches: 0 });
        await expectDeliveredOnce(cloud, deviceId, sent);
      });
    });
  });

  describe('through a seeded schedule of network faults', () => {
    const rounds = pick(2, 10);
    const roundMs = pick(8000, 60_000);
    const writers = 4;

    it('delivers every acknowledged reading exactly once, reports the faults honestly, and recovers after heal', {
      timeout: pick(120_000, 1_800_000),
    }, async () => {
      const { cloud, proxy, gateway, deviceId, errors, syncs } = await setup();
      await gateway.start();
      const random = mulberry32(CHAOS_SEED);
      const schedule = faultSchedule(mulberry32(CHAOS_SEED ^ 0x9e3779b9));

      const acknowledged = new Map<string, Reading>();
      const refusals: unknown[] = [];
      const phases: (Phase & { start: number; end: number })[] = [];
      const samples: Sample[] = [];
      const recoveries: number[] = [];
      let next = 0;

      const sampler = setInterval(() => {
        const health = gateway.healthCheck();
        samples.push({
          at: Date.now(),
          phase: phases.length - 1,
          isOnline: health.isOnline,
          health: health.status,
          reasons: health.reasons,
        });
      }, 50);
      defer(() => clearInterval(sampler));

      for (let round = 0; round < rounds; round++) {
        let writing = true;
        const write = async (writer: number) => {
          while (writing) {
            const burst = Array.from({ length: 1 + Math.floor(random() * 4) }, (): Reading => {
              const n = next++;
              return {
                sensorId: `sensor-${writer}`,
                value: Math.round(random() * 1e6) / 1e3,
                unit: 'celsius',
                tags: { id: String(n), round: String(round) },
                timestamp: new Date(Date.UTC(2024, 0, 1) + n * 10),
              };
            });
            // Concurrent calls in one tick: committed together, each promise settled after the commit.
            const outcomes = await Promise.allSettled(burst.map((reading) => gateway.sendData(reading)));
            outcomes.forEach((outcome, i) => {
              const reading = burst[i] as (typeof burst)[number];
              if (outcome.status === 'fulfilled' && outcome.value) acknowledged.set(reading.tags.id, reading);
              else refusals.push(outcome.status === 'rejected' ? outcome.reason : 'dropped');
            });
            await new Promise((resolve) => setTimeout(resolve, 10 + random() * 30));
          }
        };
        const writersDone = Array.from({ length: writers }, (_, w) => write(w));

        const roundEnd = Date.now() + roundMs;
        while (Date.now() < roundEnd) {
          const phase = schedule.next().value as Phase;
          const start = Date.now();
          const { kind } = phase.setting;
          const injected = () => (kind === 'none' ? 0 : proxy.counts[kind]);
          const before = injected();
          proxy.set(phase.setting);
          phases.push({ ...phase, start, end: Number.POSITIVE_INFINITY });
          await new Promise((resolve) => setTimeout(resolve, phase.ms));
          // A fault phase lasts until it has hit something (a gateway still waiting out a timeout or a backoff
          // sends nothing for a while), within a bound: so that every kind is exercised, even in the short form.
          const extended = Date.now() + PHASE_EXTENSION_MS;
          while (kind !== 'none' && injected() === before && Date.now() < extended) {
            await new Promise((resolve) => setTimeout(resolve, 20));
          }
          (phases.at(-1) as { end: number }).end = Date.now();
        }

        writing = false;
        await Promise.all(writersDone);
        const backlog = gateway.getStatus().pendingSyncCount;
        proxy.heal();
        phases.push({ setting: { kind: 'none' }, ms: 0, start: Date.now(), end: Number.POSITIVE_INFINITY });
        const healedAt = Date.now();
        // From heal to an empty queue: a request still blackholed times out, a backoff or Retry-After ends, then
        // the backlog drains. Generous: this bounds behaviour (no stuck batch, no runaway backoff), not speed.
        const boundMs =
          2 * (TIMINGS.maxBackoff * 1000 + TIMINGS.connectionTimeout * 1000 + RETRY_AFTER_MS) +
          Math.ceil(backlog / TIMINGS.batchSize) * 100 +
          5000;
        await waitFor(
          () => gateway.getStatus().pendingSyncCount === 0,
          boundMs,
          `the queue drained within ${boundMs} ms of heal (backlog ${backlog})`,
        ).catch((error: Error) => {
          // What a replay of this seed needs to start from.
          const recent = proxy.requests.slice(-8).map((r) => ({ ...r, at: r.at - healedAt }));
          const lastPhases = phases.slice(-4).map((p) => ({ ...p.setting, start: p.start - healedAt }));
          const status = { ...gateway.getStatus(), now: Date.now() - healedAt };
          throw new Error(
            `${error.message}\nstatus: ${JSON.stringify(status)}\nlast phases: ${JSON.stringify(lastPhases)}\n` +
              `last requests: ${JSON.stringify(recent)}\nlast errors: ${JSON.stringify(errors.slice(-3).map((e) => ({ ...e, at: e.at - healedAt })))}`,
          );
        });
        recoveries.push(Date.now() - healedAt);
        await waitFor(() => gateway.healthCheck().status === 'healthy', 5000, 'healthy after heal');
        (phases.at(-1) as { end: number }).end = Date.now();
      }
      clearInterval(sampler);
      // Peak memory of this process (gateway, cloud, proxy and harness) during the soak, before the comparison
      // below loads every stored reading.
      const peakRssMb = process.resourceUsage().maxRSS / 1024;

      // Compare with the cloud's own data.
      const points = await cloud.points(deviceId);
      const byId = new Map<string, StoredPoint[]>();
      for (const point of points) {
        const id = point.tags?.id ?? '?';
        byId.set(id, [...(byId.get(id) ?? []), point]);
      }
      const lost = [...acknowledged.keys()].filter((id) => !byId.has(id));
      const duplicated = [...byId.values()].reduce((sum, copies) => sum + copies.length - 1, 0);
      const unexpected = [...byId.keys()].filter((id) => !acknowledged.has(id));
      const altered = [...acknowledged].filter(([id, reading]) => {
        const stored = byId.get(id)?.[0];
        return stored && JSON.stringify(comparable(stored)) !== JSON.stringify(comparable(reading));
      });
      const delivered = [...acknowledged.keys()].filter((id) => byId.has(id)).length;

      recordChaos({
        scenario: 'network faults',
        trials: rounds,
        kills: 0,
        faults: proxy.faults,
        acknowledged: acknowledged.size,
        delivered,
        lost: lost.length,
        duplicated,
        maxRecoveryMs: Math.max(...recoveries),
        peakRssMb,
      });

      // Exactly once, same content, nothing lost, nothing made up.
      expect(refusals).toEqual([]);
      expect(acknowledged.size).toBeGreaterThan(0);
      expect(lost).toEqual([]);
      expect(duplicated).toBe(0);
      expect(unexpected).toEqual([]);
      expect(altered).toEqual([]);
      expect(new Set(points.map((p) => p.seq)).size).toBe(points.length);
      expect(points).toHaveLength(acknowledged.size);
      expect(gateway.getDeadLetters()).toEqual([]);

      // Every kind of fault was injected.
      const hitBatches = new Set(batchRequests(proxy).flatMap((r) => (r.fault ? [r.fault] : [])));
      for (const kind of FAULT_KINDS) expect(proxy.counts[kind], kind).toBeGreaterThan(0);

      // The events told the truth: each fault that hit a batch was reported with its code, and nothing else was.
      const codes = new Set(errors.map((e) => e.event.code));
      for (const kind of hitBatches) {
        if (kind !== 'latency')
          expect(codes, `${kind} reported as ${EXPECTED_CODE[kind]}`).toContain(EXPECTED_CODE[kind]);
      }
      const allowed = new Set<SyncErrorCode>(['NETWORK', 'TIMEOUT', 'SERVER_ERROR', 'THROTTLED']);
      expect([...codes].filter((code) => !allowed.has(code))).toEqual([]);
      for (const { event } of errors) {
        if (event.code === 'THROTTLED') expect(event.retryInMs).toBeGreaterThanOrEqual(RETRY_AFTER_MS);
      }
      expect(gateway.getStatus().failedSyncCount).toBe(errors.length);
      expect(syncs.reduce((sum, r) => sum + r.acknowledged, 0)).toBe(acknowledged.size);

      // While a blackhole swallowed everything, status and health said the cloud was unreachable.
      const blackholes = phases
        .map((phase, index) => ({ ...phase, index }))
        .filter((p) => p.setting.kind === 'blackhole' && p.end - p.start >= 3000);
      for (const phase of blackholes) {
        const during = samples.filter((s) => s.phase === phase.index);
        expect(
          during.some((s) => !s.isOnline && s.health === 'degraded' && s.reasons.some((r) => /unreachable/.test(r))),
          `blackhole phase ${phase.index} reported`,
        ).toBe(true);
      }
      expect(gateway.healthCheck()).toMatchObject({ status: 'healthy', isOnline: true, pendingSyncCount: 0 });
      // The requests it gave up on (never answered, or answered with a body that never came) left no socket open.
      await expectFaultedConnectionsClosed(proxy, ['blackhole', 'stall-response']);
    });
  });
});
