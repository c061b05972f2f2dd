import { type ChildProcess, spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import BetterSqlite3 from 'better-sqlite3-multiple-ciphers';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { SqliteStorage } from '../../src/index.js';
import { keyConnection } from '../../src/storage/encryption.js';
import { tempDir } from '../helpers/temp-dir.js';
import { CHAOS_SEED, mulberry32, pick } from './lib/chaos-config.js';
import { type ChaosRow, recordChaos } from './lib/summary.js';

/**
 * Key rotation under SIGKILL: a child gateway re-keys its encrypted database over and over (ten readings stored
 * between rotations) and is killed at a random moment; half the restarts begin with the key the file is not under,
 * so the start itself finishes a rotation first, and may be killed doing it. After every kill the database must
 * open with exactly one of the two keys, pass `quick_check`, and hold every reading seeded or acknowledged, each
 * exactly once.
 */

const ROOT = fileURLToPath(new URL('../..', import.meta.url));
const FIXTURE = fileURLToPath(new URL('../fixtures/rekey-gateway.ts', import.meta.url));
const KILLS = pick(12, 150);
/** Readings in the database before the first run: enough that a rotation takes a while (~4 MB). */
const SEEDED = 40_000;
/** The longest wait, after the child says it is opening the database, before it is killed. */
const MAX_KILL_DELAY_MS = 1200;
const RUN_SPAN = 1_000_000;
const KEYS = { A: `x'${'a1'.repeat(32)}'`, B: `x'${'b2'.repeat(32)}'` } as const;
type KeyName = keyof typeof KEYS;

/** The chaos summary's row; `acknowledged` counts each reading once (seeded or acknowledged), checked after every kill. */
const row: ChaosRow = {
  scenario: 'key rotation (SIGKILL)',
  trials: 0,
  kills: 0,
  faults: 0,
  acknowledged: 0,
  delivered: 0,
  lost: 0,
  duplicated: 0,
  maxRecoveryMs: 0,
  peakRssMb: 0,
};
const phases = new Map<string, number>();
afterAll(() => {
  recordChaos(row);
  console.log(`key-rotation kills by phase and outcome: ${JSON.stringify(Object.fromEntries(phases))}`);
});

interface Child {
  process: ChildProcess;
  lines: string[];
  /** performance.now() when it said `opening`, and when `started`. */
  at: Map<string, number>;
  stderr: string;
  exited: Promise<unknown>;
}
const children: Child[] = [];
afterEach(async () => {
  for (const child of children.splice(0)) {
    if (child.process.exitCode === null && child.process.signalCode === null) child.process.kill('SIGKILL');
    await child.exited;
  }
});

function spawnChild(db: string, first: number, key: KeyName): Child {
  const other = otherKey(key);
  const proc = spawn(process.execPath, ['--import', 'tsx', FIXTURE, db, String(first)], {
    cwd: ROOT,
    stdio: ['pipe', 'pipe', 'pipe'],
    env: { ...process.env, EDGE_REKEY_KEY: KEYS[key], EDGE_REKEY_OTHER: KEYS[other] },
  });
  const child: Child = {
    process: proc,
    lines: [],
    at: new Map(),
    stderr: '',
    exited: new Promise((resolve) => proc.once('close', resolve)),
  };
  let partial = '';
  proc.stdout?.setEncoding('utf8').on('data', (text: string) => {
    const parts = (partial + text).split('\n');
    partial = parts.pop() ?? ''; // a line cut short by the kill does not count
    child.lines.push(...parts);
    for (const line of parts) if (line === 'opening' || line === 'started') child.at.set(line, performance.now());
  });
  proc.stderr?.setEncoding('utf8').on('data', (text: string) => {
    child.stderr += text;
  });
  children.push(child);
  return child;
}

const otherKey = (name: KeyName): KeyName => (name === 'A' ? 'B' : 'A');

/**
 * Where the child was when it was killed, from the last thing it said, and the key the file was under before the
 * re-encryption it was in (if any): at start, the one it was under; then the one the child started with, flipped by
 * each finished rotation.
 */
function phaseOf(lines: readonly string[], under: KeyName, startWith: KeyName): { phase: string; before: KeyName } {
  const last = [...lines].reverse().find((line) => /^(opening|started|rotating|rotated)/.test(line)) ?? '';
  if (last === 'opening') {
    return { phase: startWith === under ? 'start' : 'start, finishing a rotation', before: under };
  }
  const rotations = lines.filter((line) => line.startsWith('rotated ')).length;
  const before = rotations % 2 === 0 ? startWith : otherKey(startWith);
  return { phase: last.startsWith('rotating') ? 'rotation' : 'between rotations', before };
}

/** Counters of the readings in the outbox, read with `key`; undefined when the key does not open the file. */
function countersUnder(db: string, key: KeyName): { counters: number[]; check: unknown } | undefined {
  const conn = new BetterSqlite3(db, { fileMustExist: true });
  try {
    keyConnection(conn, KEYS[key]);
    const check = conn.pragma('quick_check', { simple: true });
    const tags = conn.prepare('SELECT tags FROM outbox').pluck().all() as string[];
    return { counters: tags.map((t) => Number((JSON.parse(t) as { n: string }).n)), check };
  } catch (error) {
    if ((error as { code?: string }).code === 'SQLITE_NOTADB') return undefined;
    throw error;
  } finally {
    conn.close();
  }
}

describe('Key rotation killed with SIGKILL', () => {
  it(
    `leaves the database under exactly one of the two keys, with every reading, after each of ${KILLS} kills`,
    async () => {
      const random = mulberry32(CHAOS_SEED ^ 0x4e4b);
      const db = join(tempDir(), 'edge.db');
      const seed = new SqliteStorage({ path: db, encryptionKey: KEYS.A });
      seed.open();
      for (let from = 0; from < SEEDED; from += 5000) {
        seed.append(
          Array.from({ length: 5000 }, (_, i) => ({
            kind: 'reading' as const,
            sensorId: 's',
            ts: from + i,
            value: from + i,
            unit: 'u',
            tags: JSON.stringify({ n: String(from + i) }),
            payload: null,
          })),
        );
      }
      seed.close();

      const expected = new Set(Array.from({ length: SEEDED }, (_, i) => i));
      let under: KeyName = 'A';
      for (let run = 1; run <= KILLS; run++) {
        // Half the time the child starts with the other key: its start() must finish that rotation first.
        const startWith: KeyName = random() < 0.5 ? under : otherKey(under);
        const child = spawnChild(db, run * RUN_SPAN, startWith);
        const deadline = Date.now() + 20_000;
        while (!child.lines.includes('opening')) {
          if (child.process.exitCode !== null) throw new Error(`the child exited early: ${child.stderr}`);
          if (Date.now() > deadline) throw new Error(`the child did not start: ${child.stderr}`);
          await sleep(5);
        }
        await sleep(random() * MAX_KILL_DELAY_MS);
        child.process.kill('SIGKILL');
        await child.exited;
        expect(child.stderr, child.stderr).toBe('');
        expect(child.process.signalCode).toBe('SIGKILL');

        for (const line of child.lines) {
          const ack = /^ack (\d+) (\d+)$/.exec(line);
          if (ack) for (let n = Number(ack[1]); n <= Number(ack[2]); n++) expected.add(n);
        }
        const opened = child.at.get('opening') ?? 0;
        const started = child.at.get('started');
        // How long start() took, finishing a rotation or not: the gateway's recovery from the previous kill.
        if (started !== undefined) row.maxRecoveryMs = Math.max(row.maxRecoveryMs, Math.round(started - opened));
        const byKey = { A: countersUnder(db, 'A'), B: countersUnder(db, 'B') };
        const opening = (Object.keys(byKey) as KeyName[]).filter((name) => byKey[name] !== undefined);
        expect(opening, `run ${run}: the keys that open the database`).toHaveLength(1);
        const [now] = opening as [KeyName];
        const { counters, check } = byKey[now] as { counters: number[]; check: unknown };
        expect(check).toBe('ok');
        const found = new Set(counters);
        const lost = [...expected].filter((n) => !found.has(n));
        const duplicated = counters.length - found.size;
        expect(lost, `run ${run}: acknowledged readings missing`).toEqual([]);
        expect(duplicated, `run ${run}: readings stored twice`).toBe(0);

        const { phase, before: was } = phaseOf(child.lines, under, startWith);
        const outcome = `${phase}: ${now === was ? 'old key' : 'new key'}${existsSync(`${db}.rekey`) ? ', copy left' : ''}`;
        phases.set(outcome, (phases.get(outcome) ?? 0) + 1);
        row.trials++;
        row.kills++;
        row.faults++;
        row.acknowledged = expected.size;
        row.delivered = expected.size - lost.length;
        row.lost += lost.length;
        row.duplicated += duplicated;
        row.peakRssMb = Math.max(row.peakRssMb, process.memoryUsage.rss() / (1024 * 1024));
        under = now;
      }
      // Whatever the last kill left, a start with both keys opens it, removes the copy, and holds everything.
      const last = new SqliteStorage({
        path: db,
        encryptionKey: KEYS.A,
        previousEncryptionKeys: [KEYS.B],
      });
      last.open();
      expect(last.pendingCount()).toBeGreaterThanOrEqual(expected.size);
      last.close();
      expect(existsSync(`${db}.rekey`)).toBe(false);
      // The test tests what it says: most kills land in a re-encryption (the child spends most of its time in one).
      const inRotation = [...phases]
        .filter(([outcome]) => outcome.startsWith('rotation'))
        .reduce((n, [, k]) => n + k, 0);
      expect(inRotation).toBeGreaterThanOrEqual(KILLS / 3);
    },
    KILLS * 15_000,
  );
});
