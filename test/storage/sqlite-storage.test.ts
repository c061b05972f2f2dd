import { spawn } from 'node:child_process';
import { existsSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { basename, dirname, join } from 'node:path';
import BetterSqlite3 from 'better-sqlite3-multiple-ciphers';
import { gunzipSync, strFromU8 } from 'fflate';
import { describe, expect, it, vi } from 'vitest';
import { isConfigError, isStorageError, SqliteStorage, type StorageError } from '../../src/index.js';
import { ledgerKeyCap } from '../../src/storage/ingest-ledger.js';
import { MIGRATIONS } from '../../src/storage/migrations.js';
import { MIN_MAX_SIZE_BYTES } from '../../src/storage/sqlite-storage.js';
import type { IngestKeyEntry, OutboxInsert, OutboxRow, UnsealedRead } from '../../src/storage/storage.js';
import { encodeBatch } from '../../src/sync/batch-codec.js';
import { defer } from '../helpers/cleanup.js';
import { readDb } from '../helpers/gateway.js';
import { tempDbPath, tempDir } from '../helpers/temp-dir.js';
import { waitFor } from '../helpers/wait-for.js';

const row = (value: number, sensorId = 'temp-01'): OutboxInsert => ({
  kind: 'reading',
  sensorId,
  ts: Date.UTC(2024, 0, 1) + value,
  value,
  unit: 'celsius',
  tags: '{"location":"A"}',
  payload: null,
});

const rows = (n: number, from = 0) => Array.from({ length: n }, (_, i) => row(from + i));

/** An open storage on `path`, closed after the test. */
function openStorage(path: string, options: { synchronous?: 'full' | 'normal' } = {}): SqliteStorage {
  const storage = new SqliteStorage({ path, ...options });
  storage.open();
  defer(() => storage.close());
  return storage;
}

const seal = (storage: SqliteStorage, limit: number, compression: false | { level: 6 } = { level: 6 }) =>
  storage.sealNext(limit, (batchNo, batchRows) =>
    encodeBatch({ deviceId: 'd', replicaId: storage.replicaId }, batchNo, batchRows, compression),
  );

const seqsOf = (body: Uint8Array, gzip = true) =>
  (JSON.parse(strFromU8(gzip ? gunzipSync(body) : body)) as { points: OutboxRow[] }).points.map((p) => p.seq);

/** Makes a database at `path` holding `n` pending readings, closed again; returns its replicaId. */
function makeDatabase(path: string, n = 200): string {
  const storage = new SqliteStorage({ path });
  storage.open();
  storage.append(rows(n));
  const id = storage.replicaId;
  storage.close();
  return id;
}

/** Flips the bits of one byte of a file. */
function scribble(path: string, offset: number): void {
  const bytes = readFileSync(path);
  bytes[offset] = (bytes[offset] as number) ^ 0xa5;
  writeFileSync(path, bytes);
}

/** Names of the files set aside next to `path`, oldest first. */
const setAside = (path: string) =>
  readdirSync(dirname(path))
    .filter((name) => name.startsWith(`${basename(path)}.corrupt-`))
    .sort();

const PAGE = 4096;
// Page 5 is the dead_letters table's root: damage there is invisible to the count(*) of the outbox that open()
// always runs, and found only by quick_check.
const DEAD_LETTERS_ROOT = 4 * PAGE;

/** Appends `rows(chunk)` until the storage refuses; returns the StorageError and how many rows went in. */
function fill(storage: SqliteStorage, chunk = 500): { error: StorageError; stored: number } {
  let stored = 0;
  for (let i = 0; i < 10_000; i++) {
    try {
      storage.append(rows(chunk, stored));
      stored += chunk;
    } catch (error) {
      return { error: error as StorageError, stored };
    }
  }
  throw new Error('the storage never filled up');
}

const pagesOf = (path: string) => readDb(path, (db) => db.pragma('page_count', { simple: true }) as number);

const T0 = Date.UTC(2026, 0, 1);

/** A key of the longest length the ingest endpoint takes (255 characters), unique to `i`, not in order. */
const longKey = (i: number): IngestKeyEntry => ({
  idempotencyKey: `${((i * 2_654_435_761) % 4_294_967_296).toString(16).padStart(8, '0')}-${i}-`.padEnd(255, 'k'),
  hash: 'cd'.repeat(32),
  accepted: 1,
  stored: 1,
  expiresAt: 0,
});

const ledgerCount = (path: string) =>
  readDb(path, (db) => db.prepare('SELECT count(*) FROM ingest_ledger').pluck().get() as number);

/** An idempotency key of the ingest endpoint, expiring a minute after T0. */
const entry = (idempotencyKey: string, accepted = 1): IngestKeyEntry => ({
  idempotencyKey,
  hash: 'ab'.repeat(32),
  accepted,
  stored: accepted,
  expiresAt: T0 + 60_000,
});

describe('SqliteStorage', () => {
  describe('.open()', () => {
    it('creates the database file and its missing parent folders', () => {
      const path = join(tempDir(), 'a', 'b', 'c', 'edge.db');
      openStorage(path);
      expect(existsSync(path)).toBe(true);
    });

    it('puts the database in WAL journal mode', () => {
      const path = tempDbPath();
      openStorage(path);
      expect(readDb(path, (db) => db.pragma('journal_mode', { simple: true }))).toBe('wal');
    });

    it('sets synchronous=FULL on its connection by default', () => {
      const pragma = vi.spyOn(BetterSqlite3.prototype, 'pragma');
      defer(() => pragma.mockRestore());
      openStorage(tempDbPath());
      const connection = pragma.mock.contexts[0] as BetterSqlite3.Database;
      pragma.mockRestore();
      expect(connection.open).toBe(true);
      expect(connection.pragma('synchronous', { simple: true })).toBe(2); // FULL
    });

    it('sets synchronous=NORMAL on its connection when asked', () => {
      const pragma = vi.spyOn(BetterSqlite3.prototype, 'pragma');
      defer(() => pragma.mockRestore());
      openStorage(tempDbPath(), { synchronous: 'normal' });
      const connection = pragma.mock.contexts[0] as BetterSqlite3.Database;
      pragma.mockRestore();
      expect(connection.pragma('synchronous', { simple: true })).toBe(1); // NORMAL
    });

    it('migrates a database of schema version 3, keeping its queue, and adds the ingest ledger', () => {
      const path = tempDbPath();
      const old = new BetterSqlite3(path);
      old.pragma('journal_mode = WAL');
      for (const [version, sql] of MIGRATIONS.slice(0, 3).entries()) {
        old.exec(sql);
        old.pragma(`user_version = ${version + 1}`);
      }
      old.prepare("INSERT INTO outbox (seq, kind, sensor_id, ts, value) VALUES (1, 0, 'temp-01', 0, 1.5)").run();
      old.close();
      const storage = openStorage(path);
      expect(storage.pendingCount()).toBe(1);
      storage.append([row(2)], [], { entries: [entry('after-migration')], now: T0, maxEntries: 10 });
      expect(storage.lookupIngestKey('after-migration', T0)).toEqual(entry('after-migration'));
      expect(readDb(path, (db) => db.pragma('user_version', { simple: true }))).toBe(4);
    });

    it('sets user_version to the latest migration', () => {
      const path = tempDbPath();
      openStorage(path);
      expect(readDb(path, (db) => db.pragma('user_version', { simple: true }))).toBe(MIGRATIONS.length);
    });

    it('refuses a database with a newer schema version with a StorageError', () => {
      const path = tempDbPath();
      const db = new BetterSqlite3(path);
      db.pragma(`user_version = ${MIGRATIONS.length + 1}`);
      db.close();
      const storage = new SqliteStorage({ path });
      let error: unknown;
      try {
        storage.open();
      } catch (caught) {
        error = caught;
      }
      expect(isStorageError(error)).toBe(true);
      expect((error as StorageError).message).toMatch(/newer than this edge-gateway knows/);
      // The file is left as it was, for a newer version to open.
      expect(readDb(path, (d) => d.pragma('user_version', { simple: true }))).toBe(MIGRATIONS.length + 1);
    });

    it('leaves a file alone when its folder cannot be made, and throws a StorageError', () => {
      const file = join(tempDir(), 'a-file');
      writeFileSync(file, 'not a folder');
      expect(() => new SqliteStorage({ path: join(file, 'edge.db') }).open()).toThrow(
        expect.objectContaining({ name: 'StorageError', code: 'STORAGE_FAILED' }),
      );
      expect(readFileSync(file, 'utf8')).toBe('not a folder');
    });

    it('keeps the same replicaId across reopen', () => {
      const path = tempDbPath();
      const first = new SqliteStorage({ path });
      first.open();
      const id = first.replicaId;
      first.close();
      const second = openStorage(path);
      expect(id).toMatch(/^[0-9a-f-]{36}$/);
      expect(second.replicaId).toBe(id);
    });

    it('makes a different replicaId for a new file', () => {
      const a = openStorage(tempDbPath());
      const b = openStorage(tempDbPath());
      expect(a.replicaId).not.toBe(b.replicaId);
    });

    it('counts the rows left pending by a previous run', () => {
      const path = tempDbPath();
      const first = new SqliteStorage({ path });
      first.open();
      first.append(rows(7));
      first.close();
      expect(openStorage(path).pendingCount()).toBe(7);
    });
  });

  describe('.append()', () => {
    it('assigns consecutive sequence numbers and returns the first', () => {
      const storage = openStorage(tempDbPath());
      expect(storage.append(rows(3))).toBe(1);
      expect(storage.append(rows(2))).toBe(4);
      expect(storage.pendingCount()).toBe(5);
    });

    it('is visible to another connection once it returns', () => {
      const path = tempDbPath();
      const storage = openStorage(path);
      storage.append(rows(4));
      expect(readDb(path, (db) => db.prepare('SELECT seq, value FROM outbox ORDER BY seq').all())).toEqual([
        { seq: 1, value: 0 },
        { seq: 2, value: 1 },
        { seq: 3, value: 2 },
        { seq: 4, value: 3 },
      ]);
    });

    it('stores nothing and assigns no sequence numbers when the transaction fails', () => {
      const path = tempDbPath();
      const storage = openStorage(path);
      const bad = { ...row(1), kind: 'unknown-kind' } as unknown as OutboxInsert;
      expect(() => storage.append([row(0), bad])).toThrow(expect.objectContaining({ name: 'StorageError' }));
      expect(storage.pendingCount()).toBe(0);
      expect(readDb(path, (db) => db.prepare('SELECT count(*) FROM outbox').pluck().get())).toBe(0);
      expect(storage.append([row(2)])).toBe(1);
    });

    it('writes dead letters in the same transaction as the rows', () => {
      const storage = openStorage(tempDbPath());
      storage.append([row(1)], [{ ...row(2), seq: null, reason: 'processor threw', source: 'MyProcessor' }]);
      expect(storage.pendingCount()).toBe(1);
      expect(storage.deadLetters()).toEqual([
        expect.objectContaining({ value: 2, reason: 'processor threw', source: 'MyProcessor', seq: null }),
      ]);
    });
  });

  describe('.append() with ingest keys / .lookupIngestKey()', () => {
    it('writes the keys in the transaction of the rows, found until they expire', () => {
      const path = tempDbPath();
      const storage = openStorage(path);
      storage.append(rows(2), [], { entries: [entry('k1', 2)], now: T0, maxEntries: 10 });
      expect(storage.lookupIngestKey('k1', T0 + 59_999)).toEqual(entry('k1', 2));
      expect(storage.lookupIngestKey('k1', T0 + 60_000)).toBeUndefined();
      expect(storage.lookupIngestKey('k2', T0)).toBeUndefined();
    });

    it('stores neither rows nor keys when the transaction fails', () => {
      const path = tempDbPath();
      const storage = openStorage(path);
      const bad = { ...row(1), kind: 'unknown-kind' } as unknown as OutboxInsert;
      expect(() => storage.append([row(0), bad], [], { entries: [entry('k1')], now: T0, maxEntries: 10 })).toThrow(
        expect.objectContaining({ name: 'StorageError' }),
      );
      expect(storage.lookupIngestKey('k1', T0)).toBeUndefined();
      expect(readDb(path, (db) => db.prepare('SELECT count(*) FROM ingest_ledger').pluck().get())).toBe(0);
    });

    it('writes the keys of intake() in its transaction too', () => {
      const storage = openStorage(tempDbPath());
      storage.intake({
        rows: [row(1)],
        deadLetters: [],
        alerts: [],
        dedupWindowMs: 0,
        maxAlerts: 10,
        aggregates: [],
        maxAggregates: 10,
        maxHistory: 0,
        state: [],
        ingestKeys: { entries: [entry('via-intake')], now: T0, maxEntries: 10 },
      });
      expect(storage.lookupIngestKey('via-intake', T0)).toEqual(entry('via-intake'));
    });

    it('replaces an expired key used again, which then counts among the newest for the bound', () => {
      const storage = openStorage(tempDbPath());
      const at = T0 + 100_000;
      const fresh = (idempotencyKey: string) => ({ ...entry(idempotencyKey), expiresAt: at + 60_000 });
      storage.append([row(1)], [], { entries: [entry('again'), entry('other')], now: T0, maxEntries: 2 });
      storage.append([row(2)], [], { entries: [fresh('again')], now: at, maxEntries: 2 });
      storage.append([row(3)], [], { entries: [fresh('third')], now: at, maxEntries: 2 });
      expect(storage.lookupIngestKey('again', at)).toEqual(fresh('again'));
      expect(storage.lookupIngestKey('third', at)).toEqual(fresh('third'));
      storage.append([row(4)], [], { entries: [fresh('fourth')], now: at, maxEntries: 2 });
      expect(storage.lookupIngestKey('again', at)).toBeUndefined();
      expect(storage.lookupIngestKey('fourth', at)).toBeDefined();
    });

    it('keeps taking keys at a full size budget, the queue drained when full, the ledger within its share', () => {
      const path = tempDbPath();
      const storage = new SqliteStorage({ path, synchronous: 'normal', maxSizeBytes: MIN_MAX_SIZE_BYTES });
      storage.open();
      defer(() => storage.close());
      const drain = () => {
        for (let batch = seal(storage, 500); batch; batch = seal(storage, 500)) storage.acknowledge(batch.batchNo);
      };
      let drains = 0;
      // The longest keys allowed, a day's window (none expires here), a few readings a request so that the queue
      // fills several times.
      for (let i = 0; i < 5000; i++) {
        const now = T0 + i * 1000;
        const write = { entries: [{ ...longKey(i), expiresAt: now + 86_400_000 }], now, maxEntries: 100_000 };
        try {
          storage.append(rows(10, 10 * i), [], write);
        } catch (error) {
          expect((error as StorageError).sqliteCode).toBe('SQLITE_FULL');
          drain();
          drains++;
          storage.append(rows(10, 10 * i), [], write);
        }
      }
      expect(drains).toBeGreaterThan(1);
      expect(ledgerCount(path)).toBe(ledgerKeyCap(MIN_MAX_SIZE_BYTES));
      expect(ledgerKeyCap(MIN_MAX_SIZE_BYTES)).toBe(102);
      expect(storage.lookupIngestKey(longKey(4999).idempotencyKey, T0 + 4999 * 1000)).toBeDefined();
    });

    it('never drops queued readings under drop-oldest to make room for keys beyond the ledger cap', () => {
      // The same readings, with and without keys: the keys take at most their share of the budget.
      const queued = (keyed: boolean) => {
        const path = tempDbPath();
        const storage = new SqliteStorage({ path, synchronous: 'normal', maxSizeBytes: MIN_MAX_SIZE_BYTES });
        storage.open();
        defer(() => storage.close());
        storage.retention.setPolicy({ strategy: 'drop-oldest', maxRows: 1_000_000, windowMs: 60_000 });
        for (let i = 0; i < 3000; i++) {
          const now = T0 + i * 1000;
          const write = { entries: [{ ...longKey(i), expiresAt: now + 86_400_000 }], now, maxEntries: 100_000 };
          storage.append(rows(5, 5 * i), [], keyed ? write : undefined);
        }
        return { pending: storage.pendingCount(), keys: ledgerCount(path) };
      };
      const plain = queued(false);
      const keyed = queued(true);
      expect(keyed.keys).toBe(ledgerKeyCap(MIN_MAX_SIZE_BYTES));
      expect(keyed.pending).toBeGreaterThan(0.85 * plain.pending);
    });

    it('removes expired keys before any queued reading when an append needs room', () => {
      const path = tempDbPath();
      const storage = new SqliteStorage({ path, synchronous: 'normal' });
      storage.open();
      defer(() => storage.close());
      // Readings queued, and a ledger grown without a budget, its keys expired a minute after T0; then a budget
      // below the file's size, and drop-oldest.
      storage.append(rows(2000));
      for (let i = 0; i < 2000; i++) {
        storage.append([], [], { entries: [{ ...longKey(i), expiresAt: T0 + 60_000 }], now: T0, maxEntries: 100_000 });
      }
      storage.setMaxSizeBytes(MIN_MAX_SIZE_BYTES);
      storage.retention.setPolicy({ strategy: 'drop-oldest', maxRows: 1_000_000, windowMs: 60_000 });
      const later = T0 + 120_000;
      const write = { entries: [{ ...longKey(5000), expiresAt: later + 60_000 }], now: later, maxEntries: 100_000 };
      storage.append(rows(3000, 2000), [], write);
      expect(storage.pendingCount()).toBe(5000);
      expect(storage.lookupIngestKey(longKey(5000).idempotencyKey, later)).toBeDefined();
      expect(ledgerCount(path)).toBeLessThan(2000);
      // Cleanup removes the rest: every key but the new one expired.
      while ((storage.retention.pruneIngestKeys?.(later, 500) ?? 0) === 500);
      expect(ledgerCount(path)).toBe(1);
      expect(storage.lookupIngestKey(longKey(5000).idempotencyKey, later)).toBeDefined();
    });

    it('prunes expired keys in retention cleanup, with no keyed traffic', () => {
      const path = tempDbPath();
      const storage = openStorage(path);
      for (let i = 0; i < 30; i++) {
        const expiresAt = T0 + (i < 20 ? 60_000 : 600_000);
        storage.append([], [], { entries: [{ ...entry(`k-${i}`), expiresAt }], now: T0, maxEntries: 100 });
      }
      const prune = storage.retention.pruneIngestKeys;
      expect(prune).toBeDefined();
      expect(storage.retention.pruneIngestKeys?.(T0 + 60_000, 8)).toBe(8);
      expect(storage.retention.pruneIngestKeys?.(T0 + 60_000, 100)).toBe(12);
      expect(storage.retention.pruneIngestKeys?.(T0 + 60_000, 100)).toBe(0);
      expect(ledgerCount(path)).toBe(10);
      expect(storage.lookupIngestKey('k-25', T0 + 60_000)).toBeDefined();
    });

    it('prunes keys past the ledger bound of a lowered size budget in retention cleanup, the newest kept', () => {
      const path = tempDbPath();
      const storage = openStorage(path);
      for (let i = 0; i < 300; i++) {
        storage.append([], [], { entries: [{ ...longKey(i), expiresAt: T0 + 60_000 }], now: T0, maxEntries: 1000 });
      }
      storage.setMaxSizeBytes(MIN_MAX_SIZE_BYTES);
      while ((storage.retention.pruneIngestKeys?.(T0, 50) ?? 0) === 50);
      expect(ledgerCount(path)).toBe(ledgerKeyCap(MIN_MAX_SIZE_BYTES));
      expect(storage.lookupIngestKey(longKey(299).idempotencyKey, T0)).toBeDefined();
      expect(storage.lookupIngestKey(longKey(300 - 103).idempotencyKey, T0)).toBeUndefined();
    });

    it('throws StorageError, with its SQLite code, when the lookup fails', () => {
      const path = tempDbPath();
      const storage = openStorage(path);
      storage.append([row(1)], [], { entries: [entry('k1')], now: T0, maxEntries: 10 });
      const db = new BetterSqlite3(path);
      db.exec('DROP TABLE ingest_ledger');
      db.close();
      let thrown: unknown;
      try {
        storage.lookupIngestKey('k1', T0);
      } catch (error) {
        thrown = error;
      }
      expect(isStorageError(thrown)).toBe(true);
      expect(thrown).toMatchObject({ sqliteCode: 'SQLITE_ERROR', message: expect.stringMatching(/idempotency key/) });
    });
  });

  describe('.sealNext()', () => {
    it('seals the oldest rows up to the limit under batch number 1, then 2', () => {
      const storage = openStorage(tempDbPath());
      storage.append(rows(5));
      const first = seal(storage, 3);
      expect(first).toMatchObject({ batchNo: 1, firstSeq: 1, lastSeq: 3, count: 3, attempts: 0 });
      expect(seqsOf(first?.body as Uint8Array)).toEqual([1, 2, 3]);
      storage.acknowledge(1);
      expect(seal(storage, 3)).toMatchObject({ batchNo: 2, firstSeq: 4, lastSeq: 5, count: 2 });
    });

    it('returns undefined when nothing is waiting', () => {
      expect(seal(openStorage(tempDbPath()), 10)).toBeUndefined();
    });

    it('leaves the batch, byte for byte, for oldestBatch() after a reopen', () => {
      const path = tempDbPath();
      const first = new SqliteStorage({ path });
      first.open();
      first.append(rows(10));
      const sealed = seal(first, 10);
      first.close();

      const reopened = openStorage(path);
      const again = reopened.oldestBatch();
      expect(again).toBeDefined();
      expect(again?.batchNo).toBe(sealed?.batchNo);
      expect(again?.hash).toBe(sealed?.hash);
      expect(again?.contentEncoding).toBe('gzip');
      expect(Buffer.from(again?.body as Uint8Array).equals(Buffer.from(sealed?.body as Uint8Array))).toBe(true);
    });
  });

  describe('.readUnsealed() / .sealRead()', () => {
    const header = (storage: SqliteStorage) => ({ deviceId: 'd', replicaId: storage.replicaId });
    const encodeRead = (storage: SqliteStorage, read: UnsealedRead) =>
      encodeBatch(header(storage), read.batchNo, read.rows, { level: 6 }, 'json');
    const batchCount = (path: string) =>
      readDb(path, (db) => db.prepare('SELECT count(*) FROM batches').pluck().get() as number);

    it('reads the oldest unsealed rows and the batch number they would take, and writes nothing', () => {
      const path = tempDbPath();
      const storage = openStorage(path);
      storage.append(rows(5));
      seal(storage, 2);
      const read = storage.readUnsealed(10);
      expect(read?.batchNo).toBe(2);
      expect(read?.rows.map((r) => r.seq)).toEqual([3, 4, 5]);
      expect(read?.rows[0]).toEqual({ seq: 3, ...row(2) });
      expect(storage.readUnsealed(10)).toEqual(read);
      expect(batchCount(path)).toBe(1);
      expect(storage.readUnsealed(2)?.rows.map((r) => r.seq)).toEqual([3, 4]);
    });

    it('returns undefined when every row is sealed', () => {
      const storage = openStorage(tempDbPath());
      expect(storage.readUnsealed(10)).toBeUndefined();
      storage.append(rows(2));
      seal(storage, 10);
      expect(storage.readUnsealed(10)).toBeUndefined();
    });

    it('seals what was read under the number read, byte for byte what sealNext() seals on a twin database', () => {
      const path = tempDbPath();
      const storage = openStorage(path);
      storage.append(rows(5));
      const read = storage.readUnsealed(4) as UnsealedRead;
      const sealed = storage.sealRead(read, encodeRead(storage, read));
      expect(sealed).toMatchObject({ batchNo: 1, firstSeq: 1, lastSeq: 4, count: 4, attempts: 0 });
      // rawBytes is a figure of the sealing, not stored with the batch.
      expect(storage.oldestBatch()).toEqual({
        ...sealed,
        rawBytes: undefined,
        body: Buffer.from(sealed?.body as Uint8Array),
      });
      expect(storage.readUnsealed(10)).toMatchObject({ batchNo: 2, rows: [{ seq: 5 }] });

      const twin = openStorage(tempDbPath());
      twin.append(rows(5));
      // The twin has its own replicaId, which the JSON body carries: encode both with the first one's header.
      const twinSealed = twin.sealNext(4, (batchNo, batchRows) =>
        encodeBatch(header(storage), batchNo, batchRows, { level: 6 }, 'json'),
      );
      expect(Buffer.from(twinSealed?.body as Uint8Array).equals(Buffer.from(sealed?.body as Uint8Array))).toBe(true);
    });

    it('seals nothing and returns undefined when the rows were sealed in between', () => {
      const path = tempDbPath();
      const storage = openStorage(path);
      storage.append(rows(5));
      const read = storage.readUnsealed(5) as UnsealedRead;
      seal(storage, 5);
      expect(storage.sealRead(read, encodeRead(storage, read))).toBeUndefined();
      expect(batchCount(path)).toBe(1);
      expect(storage.oldestBatch()?.batchNo).toBe(1);
    });

    it('seals nothing when a row read was deleted in between', () => {
      const path = tempDbPath();
      const storage = openStorage(path);
      storage.append(rows(5));
      const read = storage.readUnsealed(5) as UnsealedRead;
      const other = new BetterSqlite3(path);
      other.prepare('DELETE FROM outbox WHERE seq = 3').run();
      other.close();
      expect(storage.sealRead(read, encodeRead(storage, read))).toBeUndefined();
      expect(batchCount(path)).toBe(0);
    });

    it('seals nothing when rows went back to the queue ahead of those read, the batch number unchanged', () => {
      const path = tempDbPath();
      const storage = openStorage(path);
      storage.append(rows(5));
      seal(storage, 2);
      const read = storage.readUnsealed(5) as UnsealedRead;
      storage.unseal(1, new Map(), 'cloud'); // rows 1 and 2 are unsealed again; batch 2 is still the next number
      expect(storage.sealRead(read, encodeRead(storage, read))).toBeUndefined();
      expect(batchCount(path)).toBe(0);
      expect(storage.readUnsealed(5)?.rows.map((r) => r.seq)).toEqual([1, 2, 3, 4, 5]);
    });

    it('seals nothing when drop-oldest dropped rows read in between, and reads what is left next', () => {
      const path = tempDbPath();
      const storage = openStorage(path);
      storage.retention.setPolicy({ strategy: 'drop-oldest', maxRows: 5, windowMs: 60_000 });
      storage.append(rows(5));
      const read = storage.readUnsealed(5) as UnsealedRead;
      storage.append(rows(2, 5)); // the queue is full: rows 1 and 2 make room
      expect(storage.sealRead(read, encodeRead(storage, read))).toBeUndefined();
      expect(batchCount(path)).toBe(0);
      expect(storage.readUnsealed(10)?.rows.map((r) => r.seq)).toEqual([3, 4, 5, 6, 7]);
    });

    it('seals nothing when retention changed the queue in between, however many rows it left', () => {
      const path = tempDbPath();
      const storage = openStorage(path);
      storage.retention.setPolicy({ strategy: 'drop-oldest', maxRows: 5, windowMs: 60_000 });
      storage.append(rows(4));
      seal(storage, 2);
      storage.acknowledge(1);
      storage.append(rows(3, 4)); // rows 3 to 7
      const read = storage.readUnsealed(2) as UnsealedRead;
      expect(read.rows.map((r) => r.seq)).toEqual([3, 4]);
      storage.append(rows(1, 7)); // drops row 3 only
      expect(storage.sealRead(read, encodeRead(storage, read))).toBeUndefined();
      const again = storage.readUnsealed(2) as UnsealedRead;
      expect(again.rows.map((r) => r.seq)).toEqual([4, 5]);
      expect(storage.sealRead(again, encodeRead(storage, again))).toMatchObject({ firstSeq: 4, lastSeq: 5 });
    });

    it('reads queued alerts first and seals them in the alert lane, each lane checked on its own', () => {
      const path = tempDbPath();
      const storage = openStorage(path);
      const alert = (value: number): OutboxInsert => ({ ...row(value), kind: 'alert', payload: '{}' });
      storage.append([...rows(3), alert(3)]);
      const alerts = storage.readUnsealed(10) as UnsealedRead;
      expect(alerts.rows.map((r) => [r.seq, r.kind])).toEqual([[4, 'alert']]);
      expect(storage.sealRead(alerts, encodeRead(storage, alerts))).toMatchObject({ batchNo: 1, firstSeq: 4 });

      const bulk = storage.readUnsealed(10) as UnsealedRead;
      expect(bulk.rows.map((r) => r.seq)).toEqual([1, 2, 3]);
      storage.append([alert(4)]); // a new alert in between leaves the bulk lane's read as it was
      expect(storage.sealRead(bulk, encodeRead(storage, bulk))).toMatchObject({ batchNo: 2, firstSeq: 1, lastSeq: 3 });
      const lanes = readDb(path, (db) =>
        db.prepare('SELECT batch_no, lane FROM batches ORDER BY batch_no').raw().all(),
      );
      expect(lanes).toEqual([
        [1, 1],
        [2, 0],
      ]);
      expect(storage.readUnsealed(10)?.rows.map((r) => [r.seq, r.kind])).toEqual([[5, 'alert']]);
      expect(storage.acknowledge(2)).toBe(3); // the bulk batch's range holds alert 4, which its lane leaves alone
      expect(storage.acknowledge(1)).toBe(1);
    });

    it('throws a RangeError, sealing nothing, when given the encoding of other rows', () => {
      const path = tempDbPath();
      const storage = openStorage(path);
      storage.append(rows(5));
      const read = storage.readUnsealed(3) as UnsealedRead;
      const other = encodeBatch(header(storage), read.batchNo, read.rows.slice(1), { level: 6 }, 'json');
      expect(() => storage.sealRead(read, other)).toThrow(RangeError);
      expect(batchCount(path)).toBe(0);
    });

    it('leaves the rows unsealed when the process is killed between the phases; they seal again under that number', async () => {
      const path = tempDbPath();
      const child = spawn(
        process.execPath,
        ['--import', 'tsx', join(import.meta.dirname, '../fixtures/crash-between-seal-phases.ts'), path, '10', '5'],
        { stdio: ['ignore', 'pipe', 'inherit'] },
      );
      defer(() => child.kill('SIGKILL'));
      let out = '';
      child.stdout.on('data', (chunk) => {
        out += chunk;
      });
      await waitFor(() => out.includes('\n'), 20_000, 'the fixture reads');
      expect(out.trim()).toBe('read 1 1 5');
      const exited = new Promise((resolve) => child.on('exit', resolve));
      child.kill('SIGKILL');
      await exited;

      const storage = openStorage(path);
      expect(storage.pendingCount()).toBe(10);
      expect(storage.oldestBatch()).toBeUndefined();
      expect(seal(storage, 5)).toMatchObject({ batchNo: 1, firstSeq: 1, lastSeq: 5, count: 5 });
    });
  });

  describe('.recordAttempt()', () => {
    it('counts failed sends of a batch durably', () => {
      const path = tempDbPath();
      const first = new SqliteStorage({ path });
      first.open();
      first.append(rows(1));
      seal(first, 1);
      first.recordAttempt(1);
      first.recordAttempt(1);
      first.close();
      expect(openStorage(path).oldestBatch()?.attempts).toBe(2);
    });
  });

  describe('.acknowledge()', () => {
    it('removes the batch and its rows and returns how many rows it removed', () => {
      const path = tempDbPath();
      const storage = openStorage(path);
      storage.append(rows(6));
      seal(storage, 4);
      expect(storage.acknowledge(1)).toBe(4);
      expect(storage.pendingCount()).toBe(2);
      expect(storage.oldestBatch()).toBeUndefined();
      expect(readDb(path, (db) => db.prepare('SELECT seq FROM outbox ORDER BY seq').pluck().all())).toEqual([5, 6]);
    });

    it('does nothing for a batch number it does not hold', () => {
      const storage = openStorage(tempDbPath());
      storage.append(rows(2));
      expect(storage.acknowledge(99)).toBe(0);
      expect(storage.pendingCount()).toBe(2);
    });

    it('never reuses a sequence number once every row is acknowledged and the store reopened', () => {
      const path = tempDbPath();
      const first = new SqliteStorage({ path });
      first.open();
      first.append(rows(3));
      seal(first, 10);
      first.acknowledge(1);
      expect(first.pendingCount()).toBe(0);
      first.close();

      const reopened = openStorage(path);
      expect(reopened.append([row(9)])).toBe(4);
    });

    it('never reuses a batch number once every batch is acknowledged and the store reopened', () => {
      const path = tempDbPath();
      const first = new SqliteStorage({ path });
      first.open();
      first.append(rows(2));
      seal(first, 1);
      first.acknowledge(1);
      seal(first, 1);
      first.acknowledge(2);
      first.close();

      const reopened = openStorage(path);
      reopened.append([row(9)]);
      expect(seal(reopened, 10)?.batchNo).toBe(3);
    });
  });

  describe('.unseal()', () => {
    it('moves the named rows to the dead letters with the reason', () => {
      const storage = openStorage(tempDbPath());
      storage.append(rows(5));
      seal(storage, 5);
      const moved = storage.unseal(1, new Map([[3, 'value out of range']]), 'cloud');
      expect(moved).toBe(1);
      expect(storage.pendingCount()).toBe(4);
      expect(storage.deadLetterCount()).toBe(1);
      expect(storage.deadLetters()).toEqual([
        expect.objectContaining({ seq: 3, value: 2, reason: 'value out of range', source: 'cloud' }),
      ]);
    });

    it('leaves the other rows to be sealed again under a new batch number', () => {
      const storage = openStorage(tempDbPath());
      storage.append(rows(5));
      seal(storage, 5);
      storage.unseal(1, new Map([[3, 'bad']]), 'cloud');
      expect(storage.oldestBatch()).toBeUndefined();
      const resealed = seal(storage, 10);
      expect(resealed?.batchNo).toBe(2);
      expect(resealed?.count).toBe(4);
      expect(seqsOf(resealed?.body as Uint8Array)).toEqual([1, 2, 4, 5]);
    });

    it('with no named rows, returns every row to the queue', () => {
      const storage = openStorage(tempDbPath());
      storage.append(rows(4));
      seal(storage, 4);
      expect(storage.unseal(1, new Map(), 'cloud')).toBe(0);
      expect(storage.pendingCount()).toBe(4);
      expect(seal(storage, 2)).toMatchObject({ batchNo: 2, firstSeq: 1, lastSeq: 2 });
    });

    it('keeps dead-lettered sequence numbers from being reused after a reopen', () => {
      const path = tempDbPath();
      const first = new SqliteStorage({ path });
      first.open();
      first.append(rows(2));
      seal(first, 2);
      first.unseal(1, new Map([[2, 'bad']]), 'cloud');
      first.close();
      expect(openStorage(path).append([row(7)])).toBe(3);
    });
  });

  describe('.getMeta() / .setMeta()', () => {
    it('keeps a value across reopen', () => {
      const path = tempDbPath();
      const first = new SqliteStorage({ path });
      first.open();
      first.setMeta('pull_cursor', '42');
      first.close();
      expect(openStorage(path).getMeta('pull_cursor')).toBe('42');
    });
  });

  describe('.sizeBytes()', () => {
    it('grows as rows are appended', () => {
      const storage = openStorage(tempDbPath());
      const before = storage.sizeBytes();
      storage.append(rows(2000));
      expect(storage.sizeBytes()).toBeGreaterThan(before);
    });
  });

  describe('.open() on a damaged file', () => {
    it('sets a file that is not a database aside, untouched, and starts a new database in its place', () => {
      const path = tempDbPath();
      const text = 'this is not a SQLite database, not even close to one; it is plain text.'.repeat(20);
      writeFileSync(path, text);
      const storage = openStorage(path);
      const report = storage.quarantined;
      expect(report).toEqual({
        path: expect.any(String),
        reason: expect.stringMatching(/not a database/),
        at: expect.any(Date),
      });
      expect(readFileSync(report?.path as string, 'utf8')).toBe(text);
      expect(storage.replicaId).toMatch(/^[0-9a-f-]{36}$/);
      expect(storage.append(rows(3))).toBe(1);
      expect(readDb(path, (db) => db.prepare('SELECT count(*) FROM outbox').pluck().get())).toBe(3);
    });

    it('sets aside a file whose replica id or batch number a scribble changed where SQLite cannot see it', () => {
      // SQLite checks pages, not the bytes inside a row: such a file passes quick_check. A byte of the replica id
      // changed so (as the long chaos run once did) would send under another identity.
      for (const [key, value] of [
        ['replica_id', '54d82cfdH6d20-44b9-82c3-f9b4d3acfc80'],
        ['next_batch_no', '1\u00007'],
        ['acked_through', '-3'],
      ] as const) {
        const path = tempDbPath();
        const first = openStorage(path);
        first.append(rows(3));
        const replicaId = first.replicaId;
        first.close();
        const db = new BetterSqlite3(path);
        db.prepare('INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)').run(key, value);
        expect(db.pragma('quick_check', { simple: true })).toBe('ok');
        db.close();

        const storage = openStorage(path);
        expect(storage.quarantined?.reason, key).toContain(key === 'replica_id' ? 'replica id' : key);
        expect(storage.replicaId, key).not.toBe(replicaId);
        expect(storage.replicaId, key).toMatch(/^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/);
      }
    });

    it('names the set-aside file <path>.corrupt-<ISO 8601 basic timestamp>', () => {
      const path = tempDbPath();
      writeFileSync(path, 'garbage'.repeat(100));
      const before = Date.now();
      const report = openStorage(path).quarantined;
      expect(setAside(path)).toEqual([basename(report?.path as string)]);
      expect(basename(report?.path as string)).toMatch(/^edge\.db\.corrupt-\d{8}T\d{6}\.\d{3}Z$/);
      expect(report?.at.getTime()).toBeGreaterThanOrEqual(before);
    });

    it('moves the -wal and -shm files along with the main file, the WAL byte for byte', () => {
      const path = tempDbPath();
      writeFileSync(path, 'garbage'.repeat(100));
      writeFileSync(`${path}-wal`, 'wal bytes');
      writeFileSync(`${path}-shm`, 'shm bytes');
      const moved = openStorage(path).quarantined?.path as string;
      expect(readFileSync(`${moved}-wal`, 'utf8')).toBe('wal bytes');
      // The -shm is only an index of the WAL, which SQLite rebuilds when it opens the file: moved, not kept as is.
      expect(existsSync(`${moved}-shm`)).toBe(true);
    });

    it('sets aside a database whose pages fail quick_check, keeping what it held readable', () => {
      const path = tempDbPath();
      const oldId = makeDatabase(path, 300);
      scribble(path, DEAD_LETTERS_ROOT + 1); // a bogus free-block pointer
      const storage = openStorage(path);
      expect(storage.quarantined?.reason).toMatch(/quick_check failed: .*page 5/);
      expect(storage.replicaId).not.toBe(oldId);
      expect(storage.pendingCount()).toBe(0);
      // Damaged, not lost: the readings are still in the set-aside file for whoever wants to recover them.
      expect(
        readDb(storage.quarantined?.path as string, (db) => db.prepare('SELECT count(*) FROM outbox').pluck().get()),
      ).toBe(300);
    });

    it('sets aside a database whose header holds an impossible schema version', () => {
      const path = tempDbPath();
      makeDatabase(path);
      const db = new BetterSqlite3(path);
      db.pragma('user_version = -7');
      db.close();
      expect(openStorage(path).quarantined?.reason).toMatch(/impossible schema version \(-7\)/);
    });

    it('sets aside a database whose header holds an unknown schema format', () => {
      const path = tempDbPath();
      makeDatabase(path);
      scribble(path, 47); // the low byte of the schema format number, 1 to 4
      expect(openStorage(path).quarantined?.reason).toMatch(/unsupported file format/);
    });

    it('sets aside a database whose schema text was damaged, which quick_check cannot see', () => {
      const path = tempDbPath();
      makeDatabase(path);
      const bytes = readFileSync(path);
      // Every copy: a migration that altered the table (ALTER TABLE) leaves the old text in a free page too.
      for (
        let at = bytes.indexOf('batch_no INTEGER PRIMARY KEY');
        at >= 0;
        at = bytes.indexOf('batch_no INTEGER PRIMARY KEY', at + 1)
      ) {
        bytes.write('batch_nx', at); // still valid SQL, but no longer the table the statements use
      }
      writeFileSync(path, bytes);
      expect(readDb(path, (db) => db.pragma('quick_check', { simple: true }))).toBe('ok');
      expect(openStorage(path).quarantined?.reason).toMatch(
        /schema of the table batches is not the one its migration made/,
      );
    });

    it('leaves alone an index an operator added', () => {
      const path = tempDbPath();
      const id = makeDatabase(path);
      const db = new BetterSqlite3(path);
      db.exec('CREATE INDEX outbox_by_sensor ON outbox (sensor_id)');
      db.close();
      const storage = openStorage(path);
      expect(storage.quarantined).toBeUndefined();
      expect(storage.replicaId).toBe(id);
    });

    it('reports a quarantine after a restart while the set-aside file is there, and forgets it once it is gone', () => {
      const path = tempDbPath();
      writeFileSync(path, 'garbage'.repeat(100));
      const first = new SqliteStorage({ path });
      first.open();
      const report = first.quarantined;
      first.close();

      const second = new SqliteStorage({ path });
      second.open();
      expect(second.quarantined).toEqual(report);
      second.close();

      rmSync(report?.path as string);
      expect(openStorage(path).quarantined).toBeUndefined();
    });

    it('refuses, and leaves in place, a database it may only read', () => {
      const path = tempDbPath();
      makeDatabase(path);
      const bytes = readFileSync(path);
      bytes[18] = 3; // a write version this SQLite does not know: it will read the file but not write it
      writeFileSync(path, bytes);
      expect(() => new SqliteStorage({ path }).open()).toThrow(
        expect.objectContaining({ name: 'StorageError', sqliteCode: 'SQLITE_READONLY' }),
      );
      expect(setAside(path)).toEqual([]);
      expect(readFileSync(path).equals(bytes)).toBe(true);
    });

    it('leaves a database with a newer schema version where it is', () => {
      const path = tempDbPath();
      const db = new BetterSqlite3(path);
      db.pragma(`user_version = ${MIGRATIONS.length + 1}`);
      db.close();
      expect(() => new SqliteStorage({ path }).open()).toThrow(/newer than this edge-gateway knows/);
      expect(setAside(path)).toEqual([]);
    });

    it('with quickCheckMaxBytes 0, skips quick_check after a clean shutdown but runs it after an unclean one', () => {
      const clean = tempDbPath();
      makeDatabase(clean);
      scribble(clean, DEAD_LETTERS_ROOT + 1);
      const unchecked = new SqliteStorage({ path: clean, quickCheckMaxBytes: 0 });
      unchecked.open();
      defer(() => unchecked.close());
      expect(unchecked.quarantined).toBeUndefined();

      // An unclean shutdown: a copy of the files taken while a connection still had the database open.
      const dir = tempDir();
      const live = join(dir, 'live.db');
      makeDatabase(live);
      const holder = new BetterSqlite3(live);
      holder.prepare("INSERT INTO meta (key, value) VALUES ('touched', '1')").run();
      const crashed = join(dir, 'crashed.db');
      writeFileSync(crashed, readFileSync(live));
      writeFileSync(`${crashed}-wal`, readFileSync(`${live}-wal`));
      holder.close();
      scribble(crashed, DEAD_LETTERS_ROOT + 1);
      const checked = new SqliteStorage({ path: crashed, quickCheckMaxBytes: 0 });
      checked.open();
      defer(() => checked.close());
      expect(checked.quarantined?.reason).toMatch(/quick_check failed/);
    });

    it('never sets aside a healthy database, however often it is reopened', () => {
      const path = tempDbPath();
      const id = makeDatabase(path, 10);
      for (let i = 0; i < 25; i++) {
        const storage = new SqliteStorage({ path });
        storage.open();
        expect(storage.quarantined).toBeUndefined();
        expect(storage.replicaId).toBe(id);
        storage.append(rows(50, i * 50));
        const batch = seal(storage, 40);
        if (i % 2 === 0 && batch) storage.acknowledge(batch.batchNo);
        storage.close();
      }
      expect(setAside(path)).toEqual([]);
      expect(readDb(path, (db) => db.pragma('integrity_check', { simple: true }))).toBe('ok');
    });
  });

  describe('maxSizeBytes', () => {
    const MAX = 1024 * 1024;

    it('refuses a limit below 1 MiB with a ConfigError naming the option', () => {
      let error: unknown;
      try {
        new SqliteStorage({ path: tempDbPath(), maxSizeBytes: 64 * 1024 });
      } catch (caught) {
        error = caught;
      }
      expect(isConfigError(error)).toBe(true);
      expect(String(error)).toMatch(/"maxSizeBytes" option to be an integer of at least 1048576/);
    });

    it('fails the append that would pass the limit with a StorageError saying so, and stores nothing of it', () => {
      const path = tempDbPath();
      const storage = new SqliteStorage({ path, maxSizeBytes: MAX });
      storage.open();
      defer(() => storage.close());
      const { error, stored } = fill(storage);
      expect(stored).toBeGreaterThan(1000);
      expect(isStorageError(error)).toBe(true);
      expect(error).toMatchObject({
        sqliteCode: 'SQLITE_FULL',
        message: expect.stringMatching(/database is full .*size limit of 1048576 bytes/),
      });
      expect(storage.pendingCount()).toBe(stored);
      expect(readDb(path, (db) => db.prepare('SELECT count(*) FROM outbox').pluck().get())).toBe(stored);
      expect(pagesOf(path) * PAGE).toBeLessThanOrEqual(MAX);
    });

    it('seals and acknowledges at the limit, and appends again into the room acknowledged batches freed', () => {
      const path = tempDbPath();
      const storage = new SqliteStorage({ path, maxSizeBytes: MAX });
      storage.open();
      defer(() => storage.close());
      const { stored } = fill(storage, 100);
      const batch = seal(storage, 500, false);
      expect(batch?.count).toBe(500);
      expect(storage.acknowledge(batch?.batchNo as number)).toBe(500);
      expect(storage.append(rows(200, stored))).toBe(stored + 1);
      expect(storage.pendingCount()).toBe(stored - 500 + 200);
      expect(pagesOf(path) * PAGE).toBeLessThanOrEqual(MAX);
      expect(readDb(path, (db) => db.pragma('integrity_check', { simple: true }))).toBe('ok');
    });

    it('seals fewer rows when a whole batch would not fit in the room kept for syncing', () => {
      const storage = new SqliteStorage({ path: tempDbPath(), maxSizeBytes: MAX });
      storage.open();
      defer(() => storage.close());
      const { stored } = fill(storage, 100);
      // 2 KB of body per row: 1000 rows would take 2 MB, far past the limit.
      const batch = storage.sealNext(1000, (_, batchRows) => ({
        firstSeq: batchRows[0]?.seq as number,
        lastSeq: batchRows.at(-1)?.seq as number,
        count: batchRows.length,
        body: new Uint8Array(batchRows.length * 2048).fill(7),
        contentType: 'application/octet-stream',
        contentEncoding: null,
        hash: 'h',
      }));
      expect(batch?.count).toBeGreaterThan(0);
      expect(batch?.count).toBeLessThan(1000);
      expect(batch?.firstSeq).toBe(1);
      expect(storage.acknowledge(batch?.batchNo as number)).toBe(batch?.count);
      expect(storage.pendingCount()).toBe(stored - (batch?.count as number));
    });

    it('reports the space used against the limit through capacity()', () => {
      expect(openStorage(tempDbPath()).capacity()).toBeUndefined();
      const storage = new SqliteStorage({ path: tempDbPath(), maxSizeBytes: MAX });
      storage.open();
      defer(() => storage.close());
      const empty = storage.capacity();
      expect(empty?.limitBytes).toBeLessThan(MAX);
      expect(empty?.limitBytes).toBeGreaterThan(0.9 * MAX);
      fill(storage);
      const full = storage.capacity();
      expect(full?.usedBytes).toBeGreaterThan(0.95 * (full?.limitBytes as number));
      expect(full?.usedBytes).toBeLessThanOrEqual(full?.limitBytes as number);
    });
  });

  describe('.close()', () => {
    it('is safe to call twice', () => {
      const storage = new SqliteStorage({ path: tempDbPath() });
      storage.open();
      storage.close();
      expect(() => storage.close()).not.toThrow();
    });

    it('makes later writes fail with a StorageError', () => {
      const storage = new SqliteStorage({ path: tempDbPath() });
      storage.open();
      storage.close();
      expect(() => storage.append([row(1)])).toThrow(expect.objectContaining({ name: 'StorageError' }));
    });
  });
});
