/**
 * Process crashes (issue 3): a gateway under load SIGKILLed at seeded moments and restarted on the same database,
 * again and again; then the cloud server SIGKILLed mid-request and restarted on the same port and database. After
 * every kill the killed side's database passes `PRAGMA integrity_check`; at the end every acknowledged reading is
 * in the cloud exactly once, with its content.
 *
 * The short form runs in `npm test`; CHAOS_LONG=1 runs at least 200 gateway kills. CHAOS_SEED replays a schedule.
 */
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { afterEach, describe, expect, it } from 'vitest';
import { CloudServer, type StoredPoint } from '../../src/cloud/index.js';
import { freePort } from '../helpers/http.js';
import { CHAOS_SEED, mulberry32, pick } from './lib/chaos-config.js';
import { CloudChild, type HoldPhase } from './lib/child-cloud.js';
import { GatewayChild } from './lib/child-gateway.js';
import { killChildren } from './lib/child-process.js';
import { HookedCloudStore, httpPages, storePages } from './lib/crash-cloud-store.js';
import { recordChaos } from './lib/summary.js';
import { CloudCounters, integrityCheck, ledgerReplays, outboxCounters } from './lib/verify-database.js';
import { DeliveryCheck, type DeliveryResult } from './lib/verify-delivery.js';

const API_KEY = 'chaos-crash-key';
/** The crash fixture's deviceId. */
const DEVICE = 'crash-device';
/** Counters of run r start at r * RUN_SPAN + 1, so that no two runs send the same counter. */
const RUN_SPAN = 1_000_000;
/** Gateway kills in a row; the long form makes at least 200. */
const GATEWAY_KILLS = pick(18, 210);
/** Cloud server kills in a row. */
const CLOUD_KILLS = pick(6, 40);
/** Bound of every wait for a child: against a hang, never a measure of speed. */
const CHILD_TIMEOUT_MS = pick(30_000, 120_000);
/** Bound of each scenario. */
const SCENARIO_TIMEOUT_MS = pick(180_000, 1_500_000);

const dirs: string[] = [];
const servers: CloudServer[] = [];

afterEach(async () => {
  await killChildren();
  await Promise.all(servers.splice(0).map((server) => server.close()));
  for (const dir of dirs.splice(0)) rmSync(dir, { recursive: true, force: true });
});

function tempDir(): string {
  const dir = mkdtempSync(join(tmpdir(), 'edge-gateway-chaos-crash-'));
  dirs.push(dir);
  return dir;
}

const MiB = (kb: number) => kb / 1024;

/**
 * Where a gateway is killed, chosen by the seeded PRNG:
 * - `startup`: at a random moment from spawn, often while it loads, opens, checks or migrates its database;
 * - `early`: within 40 ms of start, while it resumes the batch the previous run left unacknowledged;
 * - `timer`: at a random moment of the run, under load;
 * - `stopping`: a random moment after it was asked to stop (stdin `stop`): while it finishes its round, flushes,
 *   stops the sync loop and closes the database; it may also finish and exit 0 first, which is no kill;
 * - `acks`: by itself, right after printing its k-th acknowledgement (mid-round: some of the round's readings are
 *   committed and reported, some committed and not yet reported);
 * - `cloud-commit`: right after the cloud committed its n-th batch from now, before the cloud answered it.
 */
type Trigger =
  | { kind: 'startup'; ms: number }
  | { kind: 'early'; ms: number }
  | { kind: 'timer'; ms: number }
  | { kind: 'stopping'; ms: number; after: number }
  | { kind: 'acks'; acks: number }
  | { kind: 'cloud-commit'; batches: number };

function chooseTrigger(random: () => number): Trigger {
  const roll = random();
  const amount = random();
  if (roll < 0.1) return { kind: 'startup', ms: Math.floor(amount * 700) };
  if (roll < 0.25) return { kind: 'early', ms: Math.floor(amount * 40) };
  if (roll < 0.55) return { kind: 'timer', ms: Math.floor(amount * 800) };
  if (roll < 0.65) return { kind: 'stopping', ms: Math.floor(amount * 400), after: Math.floor(random() * 12) };
  if (roll < 0.8) return { kind: 'acks', acks: 1 + Math.floor(amount * 3000) };
  return { kind: 'cloud-commit', batches: 1 + Math.floor(amount * 4) };
}

async function verify(pages: AsyncIterable<readonly StoredPoint[]>, check: DeliveryCheck): Promise<DeliveryResult> {
  for await (const page of pages) check.add(page);
  return check.result();
}

/** The summary row, recorded before the assertions so that a failing run still shows its figures. */
function record(
  scenario: string,
  trials: number,
  kills: number,
  result: DeliveryResult,
  maxRecoveryMs: number,
  peakRssKb: number,
) {
  recordChaos({
    scenario,
    trials,
    kills,
    faults: kills,
    acknowledged: result.acknowledged,
    delivered: result.delivered,
    lost: result.lost,
    duplicated: result.duplicated,
    maxRecoveryMs,
    peakRssMb: MiB(peakRssKb),
  });
}

/** Nothing lost, nothing twice, every reading with its content; the first problems found make the message. */
function expectExactlyOnce(result: DeliveryResult, acknowledged: number): void {
  const problems = result.problems.join('\n');
  expect({ lost: result.lost, duplicated: result.duplicated }, problems).toEqual({ lost: 0, duplicated: 0 });
  expect(result.problems).toEqual([]);
  expect(result.delivered).toBe(acknowledged);
}

describe('process crashes', () => {
  it(
    `lose no acknowledged reading and store none twice across ${GATEWAY_KILLS} SIGKILLs of a gateway under load (seed ${CHAOS_SEED})`,
    async () => {
      const random = mulberry32(CHAOS_SEED);
      const dir = tempDir();
      const db = join(dir, 'gateway.db');
      const cloudDb = join(dir, 'cloud.db');
      const store = new HookedCloudStore(cloudDb);
      const server = await CloudServer.listen({ port: 0, host: '127.0.0.1', store, apiKeys: [API_KEY] });
      servers.push(server);
      const inCloud = new CloudCounters(cloudDb);

      const acked: number[] = [];
      // Acknowledged readings not yet seen in the cloud: after every kill each must still be in the outbox.
      const unconfirmed = new Set<number>();
      const processedRuns = new Set<number>();
      const replicas = new Set<string>();
      const triggers: Record<Trigger['kind'], number> = {
        startup: 0,
        early: 0,
        timer: 0,
        stopping: 0,
        acks: 0,
        'cloud-commit': 0,
      };
      // A trial is one run of the gateway on the database, ended by a kill (or, rarely, by a clean stop).
      let trials = 0;
      let kills = 0;
      let peakRssKb = 0;
      // Recovery of a restarted gateway: from its call to start() to the moment every reading it found queued then
      // (what the killed run left) has been acknowledged by the cloud, as the child measures it; the process's own
      // boot (node and tsx, ~0.5 s here) is not counted. A run killed before that moment does not count; the final
      // drain does.
      let maxRecoveryMs = 0;
      // The first thing found wrong right after a kill; the loop stops there, and the cloud is compared all the same.
      let failure: string | undefined;
      let lostAtKill = 0;
      let drained = false;

      try {
        for (let run = 0; kills < GATEWAY_KILLS && failure === undefined; run++) {
          const processor = random() < 0.5;
          if (processor) processedRuns.add(run);
          const trigger = chooseTrigger(random);
          triggers[trigger.kind]++;
          const gateway = new GatewayChild({
            mode: 'ingest',
            db,
            cloudUrl: server.url,
            apiKey: API_KEY,
            first: run * RUN_SPAN + 1,
            processor,
            batchSize: 100,
            ...(trigger.kind === 'acks' ? { killAfterAcks: trigger.acks } : {}),
          });
          switch (trigger.kind) {
            case 'startup':
              await sleep(trigger.ms);
              gateway.child.killNow();
              break;
            case 'early':
            case 'timer':
              await gateway.waitUntilStarted(CHILD_TIMEOUT_MS);
              await sleep(trigger.ms);
              gateway.child.killNow();
              break;
            case 'stopping':
              await gateway.waitUntilStarted(CHILD_TIMEOUT_MS);
              await sleep(trigger.ms);
              gateway.child.send('stop');
              await sleep(trigger.after);
              gateway.child.killNow();
              break;
            case 'acks':
              break; // it kills itself
            case 'cloud-commit':
              await gateway.waitUntilStarted(CHILD_TIMEOUT_MS);
              store.afterStored(trigger.batches, () => gateway.child.killNow());
              break;
          }
          const exit = await gateway.child.exit(CHILD_TIMEOUT_MS);
          store.clearHook();
          trials++;
          const stoppedFirst = trigger.kind === 'stopping' && exit.code === 0 && gateway.stopped;
          if (!stoppedFirst) kills++;
          for (const n of gateway.acked) {
            acked.push(n);
            unconfirmed.add(n);
          }
          if (gateway.replicaId) replicas.add(gateway.replicaId);
          peakRssKb = Math.max(peakRssKb, gateway.maxRssKb);
          if (gateway.recoveredMs !== undefined) maxRecoveryMs = Math.max(maxRecoveryMs, gateway.recoveredMs);

          const context = `run ${run} (${JSON.stringify(trigger)}); stderr: ${gateway.child.stderr}`;
          if ((exit.signal !== 'SIGKILL' && !stoppedFirst) || gateway.errors.length > 0) {
            failure = `the gateway ended with ${JSON.stringify(exit)}, not by the kill, or reported errors; ${context}`;
            break;
          }
          // Killed before the first run created it, the database does not exist yet: nothing to check.
          if (replicas.size === 0 && !existsSync(db)) continue;
          const integrity = integrityCheck(db);
          if (integrity !== 'ok') {
            failure = `integrity_check after ${context}: ${integrity}`;
            break;
          }
          // Accepted means durable: every reading acknowledged so far is in the cloud or still in the outbox.
          const delivered = inCloud.refresh();
          for (const n of unconfirmed) if (delivered.has(n)) unconfirmed.delete(n);
          const queued = outboxCounters(db);
          const missing = [...unconfirmed].filter((n) => !queued.has(n));
          if (missing.length > 0) {
            lostAtKill = missing.length;
            failure = `${missing.length} acknowledged reading(s) neither queued nor in the cloud after ${context}: ${missing.slice(0, 20).join(', ')}`;
          }
        }

        if (failure === undefined) {
          const drain = new GatewayChild({ mode: 'drain', db, cloudUrl: server.url, apiKey: API_KEY });
          const exit = await drain.child.exit(CHILD_TIMEOUT_MS);
          if (exit.code !== 0 || drain.pending !== 0 || drain.errors.length > 0) {
            failure = `the drain ended with ${JSON.stringify(exit)} and ${drain.pending} pending; stderr: ${drain.child.stderr}`;
          } else drained = true;
          if (drain.replicaId) replicas.add(drain.replicaId);
          peakRssKb = Math.max(peakRssKb, drain.maxRssKb);
          maxRecoveryMs = Math.max(maxRecoveryMs, drain.recoveredMs ?? 0);
        }
      } finally {
        inCloud.close();
      }

      const result = await verify(
        storePages(store, DEVICE),
        new DeliveryCheck({
          replicaId: [...replicas][0] as string,
          acked,
          processed: (n) => processedRuns.has(Math.floor((n - 1) / RUN_SPAN)),
        }),
      );
      // Cut short by a failure, the gateway was not drained: count what a kill lost, not what is still queued.
      if (!drained) result.lost = lostAtKill;
      record('gateway SIGKILL under load', trials, kills, result, maxRecoveryMs, peakRssKb);

      expect(failure, failure).toBeUndefined();
      expect(replicas.size, 'one database, one replicaId, however often it restarts').toBe(1);
      expectExactlyOnce(result, acked.length);
      // The schedule did what it says: readings were acknowledged, and every batch a kill left stored but
      // unanswered came back byte for byte and was answered from the cloud's ledger.
      expect(acked.length).toBeGreaterThan(GATEWAY_KILLS);
      expect((await store.stats(DEVICE)).duplicateBatches).toBeGreaterThanOrEqual(triggers['cloud-commit']);
    },
    SCENARIO_TIMEOUT_MS,
  );

  it(
    `lose no acknowledged reading and store none twice across ${CLOUD_KILLS} SIGKILLs of the cloud server mid-request (seed ${CHAOS_SEED})`,
    async () => {
      const random = mulberry32(CHAOS_SEED ^ 0xc10d);
      const dir = tempDir();
      const db = join(dir, 'gateway.db');
      const cloudDb = join(dir, 'cloud.db');
      const port = await freePort();
      let cloud = await CloudChild.start(cloudDb, port, API_KEY);
      const url = cloud.url as string;

      const gateway = new GatewayChild({
        mode: 'ingest',
        db,
        cloudUrl: url,
        apiKey: API_KEY,
        processor: true,
        batchSize: 100,
      });
      await gateway.waitUntilStarted(CHILD_TIMEOUT_MS);
      await gateway.catchUp(CHILD_TIMEOUT_MS);

      const held: { phase: HoldPhase; key: string }[] = [];
      // Recovery after a cloud restart: from the moment the restarted server listens (when the test marks the
      // gateway's queue) to the moment every reading queued at the gateway at that moment is acknowledged.
      let maxRecoveryMs = 0;
      for (let kill = 0; kill < CLOUD_KILLS; kill++) {
        // `received`: killed while it holds a batch it has read and not stored (the request is in flight);
        // `stored`: killed while it holds a batch it has committed and not answered; `timer`: at any moment.
        const roll = random();
        const phase = roll < 0.4 ? 'received' : roll < 0.8 ? 'stored' : 'timer';
        const nth = 1 + Math.floor(random() * 4);
        const ms = Math.floor(random() * 300);
        const current = cloud;
        if (phase === 'timer') await sleep(ms);
        else {
          current.hold(phase, nth);
          await current.waitUntilHeld(CHILD_TIMEOUT_MS);
          held.push(...current.held);
        }
        current.child.killNow();
        const exit = await current.child.exit(CHILD_TIMEOUT_MS);
        const context = `cloud kill ${kill + 1} (${phase}); stderr: ${current.child.stderr}`;
        expect(exit, context).toEqual({ code: null, signal: 'SIGKILL' });
        expect(integrityCheck(cloudDb), `integrity_check of the cloud after ${context}`).toBe('ok');

        // Down for a while: the gateway's requests are refused and it backs off.
        await sleep(Math.floor(random() * 300));
        cloud = await CloudChild.start(cloudDb, port, API_KEY);
        maxRecoveryMs = Math.max(maxRecoveryMs, await gateway.catchUp(CHILD_TIMEOUT_MS));
        expect(gateway.errors, context).toEqual([]);
      }

      // Healed: the cloud stays up. The ingest stops, and a drain sends the rest.
      expect(await gateway.stop(CHILD_TIMEOUT_MS), gateway.child.stderr).toEqual({ code: 0, signal: null });
      expect(gateway.stopped).toBe(true);
      const drain = new GatewayChild({ mode: 'drain', db, cloudUrl: url, apiKey: API_KEY });
      expect(await drain.child.exit(CHILD_TIMEOUT_MS), drain.child.stderr).toEqual({ code: 0, signal: null });
      expect(drain.pending).toBe(0);
      expect([...gateway.errors, ...drain.errors]).toEqual([]);
      expect(drain.replicaId).toBe(gateway.replicaId);
      expect(integrityCheck(db)).toBe('ok');

      const result = await verify(
        httpPages(url, API_KEY, DEVICE),
        new DeliveryCheck({ replicaId: gateway.replicaId as string, acked: gateway.acked, processed: () => true }),
      );
      record(
        'cloud server SIGKILL mid-request',
        CLOUD_KILLS, // a trial is one kill and restart of the server
        CLOUD_KILLS,
        result,
        maxRecoveryMs,
        Math.max(gateway.maxRssKb, drain.maxRssKb),
      );

      expectExactlyOnce(result, gateway.acked.length);
      await cloud.child.kill();
      expect(integrityCheck(cloudDb)).toBe('ok');
      // The kills landed where they were meant to: every batch held in flight was stored once it was sent again,
      // and every batch held after its commit was sent again and answered from the ledger.
      const replays = ledgerReplays(
        cloudDb,
        held.map((h) => h.key),
      );
      const unhandled = held.filter((h) => !replays.has(h.key) || (h.phase === 'stored' && replays.get(h.key) === 0));
      expect(held.length).toBeGreaterThan(0);
      expect(unhandled).toEqual([]);
    },
    SCENARIO_TIMEOUT_MS,
  );
});
