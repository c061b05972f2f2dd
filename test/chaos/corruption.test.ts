import { existsSync, readFileSync, statSync, truncateSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import type { StoredPoint } from '../../src/cloud/index.js';
import type { EdgeGateway } from '../../src/index.js';
import { startCloudServer } from '../../src/testing/index.js';
import { defer } from '../helpers/cleanup.js';
import { createGateway, readDb } from '../helpers/gateway.js';
import { tempDir } from '../helpers/temp-dir.js';
import { waitFor } from '../helpers/wait-for.js';
import { CHAOS_SEED, mulberry32, pick } from './lib/chaos-config.js';
import { type CloudGate, startCloudGate } from './lib/cloud-gate.js';
import { type LedgerReading, ReadingLedger, readingsOf } from './lib/reading-ledger.js';
import { ScenarioTally } from './lib/scenario-tally.js';

/**
 * Corruption: the database file is truncated or scribbled on while the gateway is down. The next start must set it
 * aside (renamed, reported in status, health, the log and an 'error' event) and carry on with a new database that
 * takes and syncs readings; nothing may crash. A healthy file must never be set aside.
 *
 * SQLite keeps no page checksums, so some damage cannot be seen: a flipped byte in a stored value, in free space
 * or in a header field nobody reads. The oracle says so: every start either sets the file aside, or finds it sound
 * (`integrity_check` ok) and then delivers what it held, unchanged, except after random scribbles, where values
 * may have changed undetectably and are counted by sequence number instead of by content.
 */

/** Damage trials; the kinds take turns, so the short form has two of each. */
const DAMAGE_TRIALS = pick(12, 90);
/** Restarts of a healthy database, each checked for a false quarantine. */
const HEALTHY_RESTARTS = pick(25, 200);
const DRAIN_TIMEOUT_MS = pick(20_000, 60_000);
const PAGE = 4096;

type DamageKind = 'not-a-database' | 'magic' | 'truncate' | 'header' | 'page-type' | 'random';
const KINDS: readonly DamageKind[] = ['not-a-database', 'magic', 'truncate', 'header', 'page-type', 'random'];
/** Damage SQLite always sees; the rest may land where nothing is checked (free space, unread header fields). */
const ALWAYS_SEEN = new Set<DamageKind>(['not-a-database', 'magic']);
// Header fields where garbage means something else than damage, each covered in test/storage: the file format
// versions at 18-19 (a higher one makes the file read-only, which is refused) and the schema version at 60-63 (a
// higher one is a newer edge-gateway's database, refused and left alone; a negative one is set aside).
const MEANINGFUL_HEADER_BYTES = new Set([18, 19, 60, 61, 62, 63]);

const tally = new ScenarioTally('corruption');
afterAll(() => tally.record());
const outcomes = new Map<string, number>();
const note = (outcome: string) => outcomes.set(outcome, (outcomes.get(outcome) ?? 0) + 1);
/** Readings accepted before the damage, still queued in a file that was set aside: not salvaged, so not counted. */
let stranded = 0;
afterAll(() => {
  console.log(
    `corruption outcomes: ${JSON.stringify(Object.fromEntries(outcomes))}; ${stranded} queued reading(s) left in set-aside files`,
  );
});

/** Damages the file at `path` as `kind` says, at seeded places; returns a description for failure messages. */
function damage(path: string, kind: DamageKind, random: () => number): string {
  const size = statSync(path).size;
  const between = (from: number, to: number) => from + Math.floor(random() * (to - from));
  const scribble = (offsets: number[]) => {
    const bytes = readFileSync(path);
    for (const offset of offsets) bytes[offset] = (bytes[offset] as number) ^ (1 + between(0, 255));
    writeFileSync(path, bytes);
    return offsets;
  };
  switch (kind) {
    case 'not-a-database':
      writeFileSync(path, 'sensor,value\ntemp-01,23.5\n'.repeat(200));
      return 'replaced with text';
    case 'magic':
      return `magic string scribbled at ${scribble([between(0, 16)])}`;
    case 'truncate': {
      // At least one whole page goes; cutting a few bytes off the last page can lose nothing but zeros.
      const at = between(1, size - PAGE);
      truncateSync(path, at);
      return `truncated from ${size} to ${at} bytes`;
    }
    case 'header': {
      const offsets: number[] = [];
      while (offsets.length < between(1, 5)) {
        const offset = between(0, 100);
        if (!MEANINGFUL_HEADER_BYTES.has(offset)) offsets.push(offset);
      }
      return `header scribbled at ${scribble(offsets)}`;
    }
    case 'page-type': {
      const page = between(0, size / PAGE);
      return `page ${page + 1} type byte scribbled at ${scribble([page === 0 ? 100 : page * PAGE])}`;
    }
    case 'random': {
      const offsets: number[] = [];
      const count = between(1, 17);
      while (offsets.length < count) {
        const offset = between(0, size);
        if (!MEANINGFUL_HEADER_BYTES.has(offset)) offsets.push(offset);
      }
      return `scribbled at ${scribble(offsets)}`;
    }
  }
}

/** Sends `readings` in batches of 500, noting what was accepted. */
async function send(gateway: EdgeGateway, readings: readonly LedgerReading[], ledger: ReadingLedger) {
  for (let i = 0; i < readings.length; i += 500) {
    const batch = readings.slice(i, i + 500);
    await gateway.sendBatch(batch);
    ledger.accept(batch);
  }
}

const drained = (gateway: EdgeGateway, what: string) =>
  waitFor(() => gateway.getStatus().pendingSyncCount === 0, DRAIN_TIMEOUT_MS, what);

const sameContent = (point: StoredPoint, reading: LedgerReading) =>
  point.sensorId === reading.sensorId &&
  point.value === reading.value &&
  point.unit === reading.unit &&
  point.timestamp === reading.timestamp.toISOString();

describe('corruption', () => {
  it(`sets aside a database damaged ${DAMAGE_TRIALS} ways while the gateway was down, and carries on (seed ${CHAOS_SEED})`, async () => {
    const random = mulberry32(CHAOS_SEED ^ 0xc022);
    const cloud = await startCloudServer();
    defer(() => cloud.close());
    const gate: CloudGate = await startCloudGate(cloud.url);

    for (let trial = 0; trial < DAMAGE_TRIALS; trial++) {
      const kind = KINDS[trial % KINDS.length] as DamageKind;
      const path = join(tempDir(), 'edge.db');
      const deviceId = `corruption-${CHAOS_SEED}-${trial}`;
      const options = { deviceId, localDb: path, cloudUrl: gate.url, apiKey: cloud.apiKey, batchSize: 500 };
      const ledger = new ReadingLedger();

      // Before the damage: readings delivered, then readings queued while the cloud was out of reach.
      gate.open = true;
      const before = createGateway(options);
      await before.start();
      const oldReplica = before.getStatus().replicaId;
      const delivered = readingsOf(`t${trial}-delivered`, 0, 200 + Math.floor(random() * 1800));
      await send(before, delivered, ledger);
      await drained(before, 'the readings before the damage are delivered');
      gate.open = false;
      const queued = readingsOf(`t${trial}-queued`, 0, 100 + Math.floor(random() * 900));
      await send(before, queued, ledger);
      await before.stop();

      const what = damage(path, kind, random);
      const damaged = readFileSync(path);
      tally.trial(1);

      // The next start: it must not throw, whatever it finds.
      gate.open = true;
      const logged: string[] = [];
      const noop = () => undefined;
      const logger = { debug: noop, info: noop, warn: noop, error: (_: object, message = '') => logged.push(message) };
      const after = createGateway({ ...options, logger });
      const errors: Error[] = [];
      after.on('error', (error) => errors.push(error));
      await expect(after.start(), what).resolves.toBeUndefined();
      const healed = performance.now();
      const report = after.getStatus().quarantined;
      let countQueuedBySeq = false;
      if (report) {
        note(`${kind}: set aside`);
        expect(report.path.startsWith(`${path}.corrupt-`), what).toBe(true);
        expect(report.reason.length, what).toBeGreaterThan(0);
        // Renamed, never deleted nor rewritten.
        expect(readFileSync(report.path).equals(damaged), what).toBe(true);
        expect(after.getStatus().replicaId).not.toBe(oldReplica);
        const health = after.healthCheck();
        expect(health.status, what).toBe('degraded');
        expect(health.reasons.join(' '), what).toContain(report.path);
        expect(errors.map((e) => e.message).join(' '), what).toContain(report.path);
        expect(logged.join(' '), what).toContain(report.path);
        // Queued in the damaged file: kept there for whoever recovers it, not salvaged (see the report).
        ledger.excuse(queued);
        stranded += queued.length;
      } else {
        expect(ALWAYS_SEEN.has(kind), `${what} went unnoticed`).toBe(false);
        note(`${kind}: found sound`);
        expect(
          readDb(path, (db) => db.pragma('integrity_check', { simple: true })),
          what,
        ).toBe('ok');
        expect(after.getStatus().replicaId).toBe(oldReplica);
        countQueuedBySeq = kind === 'random';
      }

      // Carrying on: new readings are taken and synced.
      const fresh = readingsOf(`t${trial}-after`, 0, 300);
      await send(after, fresh, ledger);
      await drained(after, `the readings after the damage are delivered (${what})`);
      tally.recovered(performance.now() - healed);
      await after.stop();

      let points = await cloud.points(deviceId);
      if (countQueuedBySeq) {
        // A random scribble SQLite could not see may have changed stored values: the queued readings must arrive
        // once each by sequence number; changed content is counted, not failed on, as no check can see it.
        const first = delivered.length + 1;
        const last = delivered.length + queued.length;
        const fromQueue = points.filter((p) => p.replicaId === oldReplica && p.seq >= first && p.seq <= last);
        expect(new Set(fromQueue.map((p) => p.seq)).size, what).toBe(queued.length);
        expect(fromQueue.length, what).toBe(queued.length);
        const changed = fromQueue.filter((p) => !sameContent(p, queued[p.seq - first] as LedgerReading)).length;
        if (changed > 0) note(`random: ${changed} value(s) changed undetectably`);
        ledger.excuse(queued);
        points = points.filter((p) => !fromQueue.includes(p));
      }
      const result = ledger.compare(points);
      tally.delivery(result);
      expect(result.problems, what).toEqual([]);
    }
  });

  it(`never sets aside a healthy database across ${HEALTHY_RESTARTS} restarts (seed ${CHAOS_SEED})`, async () => {
    const random = mulberry32(CHAOS_SEED ^ 0x0c0c);
    const cloud = await startCloudServer();
    defer(() => cloud.close());
    const gate = await startCloudGate(cloud.url);
    const path = join(tempDir(), 'edge.db');
    const options = { deviceId: `healthy-${CHAOS_SEED}`, localDb: path, cloudUrl: gate.url, apiKey: cloud.apiKey };
    const ledger = new ReadingLedger();
    let replicaId: string | undefined;
    let value = 0;

    for (let restart = 0; restart < HEALTHY_RESTARTS; restart++) {
      gate.open = random() < 0.7;
      const gateway = createGateway({ ...options, batchSize: 50 + Math.floor(random() * 450) });
      await gateway.start();
      const status = gateway.getStatus();
      expect(status.quarantined, `restart ${restart}`).toBeNull();
      replicaId ??= status.replicaId;
      expect(status.replicaId).toBe(replicaId);
      const batch = readingsOf('healthy', value, 1 + Math.floor(random() * 600));
      value += batch.length;
      await send(gateway, batch, ledger);
      // Stopped at once or after a moment: with batches in flight, sealed and unsent, or nothing pending.
      if (random() < 0.5) await new Promise((resolve) => setTimeout(resolve, Math.floor(random() * 50)));
      await gateway.stop();
      tally.trial(0);
    }
    expect(readDb(path, (db) => db.pragma('integrity_check', { simple: true }))).toBe('ok');

    gate.open = true;
    const last = createGateway(options);
    await last.start();
    expect(last.getStatus().quarantined).toBeNull();
    await drained(last, 'everything queued across the restarts is delivered');
    await last.stop();
    expect(existsSync(`${path}-wal`)).toBe(false);
    const result = ledger.compare(await cloud.points(options.deviceId));
    tally.delivery(result);
    expect(result.problems).toEqual([]);
  });
});
