import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { type CloudStore, type PushDecision, RedisCloudStore, SqliteCloudStore } from '../../src/cloud/index.js';
import { isConfigError } from '../../src/errors.js';
import { formatHlc, type PullRequester, type RecordChange } from '../../src/model/records-wire.js';
import { CLOUD_STORE_KINDS, type CloudStoreKind, redisAvailable, useCloudStore } from '../helpers/cloud-stores.js';

/**
 * `CloudStore.pullChanges()` on each store, against a model of the writes: a page returns up to `limit` changes,
 * those left out for the requester not counted; it looks at `max(limit, pullScanRows)` changes at most; its cursor
 * is the last change it consumed, which is its last returned change once it holds `limit`. Run counts are bounded so
 * that the file stays within seconds; set FUZZ_RUNS to go further, and replay a failure with the seed fast-check
 * prints.
 */
const RUNS = Number(process.env.FUZZ_RUNS ?? 100);

const C = 'setpoints';
const REQUESTER: PullRequester = { deviceId: 'device-1', replicaId: 'replica-1' };
/** Keys written: few enough that records are written over, and their changes move past others. */
const KEYS = 50;

/**
 * Who writes: the requester (`own`, left out while the record stays so), the requester restamped, its replica under
 * another device id, another replica of its device, or the cloud: all but `own` come to it.
 */
type Writer = 'own' | 'own-restamped' | 'other-device' | 'other-replica' | 'cloud';

/** `count` writes in a row by one writer, on keys `key`, `key + 1`... (modulo {@link KEYS}). */
interface Run {
  writer: Writer;
  op: 'put' | 'delete';
  key: number;
  count: number;
}

const run: fc.Arbitrary<Run> = fc.record({
  writer: fc.oneof(
    { weight: 6, arbitrary: fc.constant('own' as const) },
    { weight: 1, arbitrary: fc.constant('own-restamped' as const) },
    { weight: 1, arbitrary: fc.constant('other-device' as const) },
    { weight: 1, arbitrary: fc.constant('other-replica' as const) },
    { weight: 3, arbitrary: fc.constant('cloud' as const) },
  ),
  op: fc.oneof(
    { weight: 4, arbitrary: fc.constant('put' as const) },
    { weight: 1, arbitrary: fc.constant('delete' as const) },
  ),
  key: fc.integer({ min: 0, max: KEYS - 1 }),
  // Mostly short runs, for fine interleavings; some long, to pass the scan bound and the script's slices of 64.
  count: fc.oneof(
    { weight: 2, arbitrary: fc.integer({ min: 1, max: 3 }) },
    { weight: 1, arbitrary: fc.integer({ min: 4, max: 80 }) },
  ),
});

/** A `pullScanRows`: mostly around the limits, sometimes past the Redis script's slice of 64 ids. */
const scanRows = fc.oneof(
  { weight: 1, arbitrary: fc.integer({ min: 1, max: 12 }) },
  { weight: 1, arbitrary: fc.integer({ min: 13, max: 150 }) },
);

/** A record as the model holds it after the writes: its last change, and whether the requester holds it. */
interface ModelRow {
  key: string;
  seq: number;
  version: number;
  deleted: boolean;
  value: unknown;
  held: boolean;
}

/** Applies `runs` to `store`, in order, each write on the record's current version; returns the rows by seq. */
async function applyRuns(store: CloudStore, runs: readonly Run[]): Promise<ModelRow[]> {
  const rows = new Map<string, ModelRow>();
  let seq = 0;
  for (const r of runs) {
    const deleted = r.op === 'delete';
    const items: PushDecision[] = [];
    for (let j = 0; j < r.count; j++) {
      const n = seq + 1;
      const key = `k${(r.key + j) % KEYS}`;
      const hlc = formatHlc({ ms: 1_000_000 + n, counter: 0 });
      const version = (rows.get(key)?.version ?? 0) + 1;
      const value = deleted ? null : n;
      if (r.writer === 'cloud') {
        await store.editRecord(C, key, deleted ? { op: 'delete' } : { op: 'put', value }, hlc);
      } else {
        const mutation = { mid: `m${n}`, collection: C, key, op: r.op, baseVersion: version - 1, hlc };
        items.push({
          kind: 'valid',
          mutation: deleted ? mutation : { ...mutation, value },
          stamp: { hlc, restamped: r.writer === 'own-restamped' },
        });
      }
      rows.set(key, { key, seq: ++seq, version, deleted, value, held: r.writer === 'own' });
    }
    if (items.length > 0) {
      const context = {
        deviceId: r.writer === 'other-device' ? 'device-2' : REQUESTER.deviceId,
        replicaId: r.writer === 'other-replica' ? 'replica-2' : REQUESTER.replicaId,
      };
      const results = await store.pushMutations(context, items);
      expect(results.map((result) => result.status)).toEqual(items.map(() => 'applied'));
    }
  }
  return [...rows.values()].sort((a, b) => a.seq - b.seq);
}

interface Paged {
  page: { changes: RecordChange[]; cursor: number; hasMore: boolean };
  from: number;
}

/** Every page from cursor 0 on, until `hasMore` is false. */
async function pageThrough(store: CloudStore, limit: number, requester?: PullRequester): Promise<Paged[]> {
  const pages: Paged[] = [];
  let from = 0;
  for (let hasMore = true; hasMore; ) {
    const page = await store.pullChanges(from, limit, requester);
    pages.push({ page, from });
    if (pages.length > 1000) throw new Error('pull does not end');
    from = page.cursor;
    hasMore = page.hasMore;
  }
  return pages;
}

const asChange = (row: ModelRow) => ({
  collection: C,
  key: row.key,
  value: row.value,
  deleted: row.deleted,
  version: row.version,
  seq: row.seq,
});

for (const kind of CLOUD_STORE_KINDS) {
  describe.skipIf(kind === 'redis' && !redisAvailable())(`CloudStore.pullChanges() on the ${kind} store`, () =>
    suite(kind),
  );
}

function suite(kind: CloudStoreKind): void {
  const stores = useCloudStore(kind);
  // Redis answers each push and page over a socket: a quarter of the runs keeps it within seconds.
  const numRuns = kind === 'redis' ? Math.ceil(RUNS / 4) : RUNS;

  /** Runs `check` on a fresh store with `pullScanRows`, closing it after. */
  async function withStore(pullScanRows: number, check: (store: CloudStore) => Promise<void>): Promise<void> {
    await stores.redis?.flush();
    const store = await stores.open({ pullScanRows });
    try {
      await check(store);
    } finally {
      await store.close();
    }
  }

  it('returns exactly the changes the requester does not hold, in seq order, over pages that each stop where the rule says', async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.array(run, { maxLength: 16 }),
        fc.integer({ min: 1, max: 8 }),
        scanRows,
        async (runs, limit, pullScanRows) => {
          await withStore(pullScanRows, async (store) => {
            const rows = await applyRuns(store, runs);
            const scan = Math.max(limit, pullScanRows);

            const pages = await pageThrough(store, limit, REQUESTER);

            expect(pages.flatMap((p) => p.page.changes)).toMatchObject(rows.filter((r) => !r.held).map(asChange));
            for (const { page, from } of pages) {
              const consumed = rows.filter((r) => r.seq > from && r.seq <= page.cursor);
              const remain = rows.some((r) => r.seq > page.cursor);
              // Exactly the changes it consumed that the requester does not hold: none skipped, none twice.
              expect(page.changes.map((c) => c.seq)).toEqual(consumed.filter((r) => !r.held).map((r) => r.seq));
              expect(page.changes.length).toBeLessThanOrEqual(limit);
              expect(consumed.length).toBeLessThanOrEqual(scan);
              expect(page.hasMore).toBe(remain);
              // A full page ends at its last returned change: what it left out after that is not consumed.
              if (page.changes.length === limit) expect(page.cursor).toBe(page.changes.at(-1)?.seq);
              // It stops early only when full or when it looked at all it may.
              if (remain) expect(page.changes.length === limit || consumed.length === scan).toBe(true);
              if (page.hasMore) expect(page.cursor).toBeGreaterThan(from);
            }
          });
        },
      ),
      { numRuns },
    );
  });

  it('returns every change in pages of limit to a pull that names no requester, whatever pullScanRows', async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.array(run, { maxLength: 8 }),
        fc.integer({ min: 1, max: 8 }),
        scanRows,
        async (runs, limit, pullScanRows) => {
          await withStore(pullScanRows, async (store) => {
            const rows = await applyRuns(store, runs);

            const pages = await pageThrough(store, limit);

            expect(pages.flatMap((p) => p.page.changes)).toMatchObject(rows.map(asChange));
            const sizes = pages.map((p) => p.page.changes.length);
            const expected = Array.from({ length: Math.max(1, Math.ceil(rows.length / limit)) }, (_, i) =>
              Math.min(limit, rows.length - i * limit),
            );
            expect(sizes).toEqual(expected);
          });
        },
      ),
      { numRuns: Math.ceil(numRuns / 2) },
    );
  });
}

describe('the pullScanRows option', () => {
  for (const bad of [0, -1, 1.5, Number.NaN, '10']) {
    it(`makes SqliteCloudStore refuse ${String(bad)} with a ConfigError naming the option`, () => {
      let error: unknown;
      try {
        new SqliteCloudStore(':memory:', { pullScanRows: bad as number });
      } catch (e) {
        error = e;
      }

      expect(isConfigError(error)).toBe(true);
      expect((error as Error).message).toMatch(/"pullScanRows" option to be a positive integer/);
    });
  }

  it('makes RedisCloudStore.connect() refuse 0 with a ConfigError naming the option, before it connects', async () => {
    const error = await RedisCloudStore.connect({ url: 'redis://127.0.0.1:1', pullScanRows: 0 }).catch(
      (e: unknown) => e,
    );

    expect(isConfigError(error)).toBe(true);
    expect((error as Error).message).toMatch(/"pullScanRows" option to be a positive integer \(got 0\)/);
  });
});
