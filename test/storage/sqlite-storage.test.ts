import { existsSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import BetterSqlite3 from 'better-sqlite3';
import { gunzipSync, strFromU8 } from 'fflate';
import { describe, expect, it, vi } from 'vitest';
import { isStorageError, SqliteStorage, type StorageError } from '../../src/index.js';
import { MIGRATIONS } from '../../src/storage/migrations.js';
import type { OutboxInsert, OutboxRow } from '../../src/storage/storage.js';
import { encodeBatch } from '../../src/sync/batch-codec.js';
import { defer } from '../helpers/cleanup.js';
import { readDb } from '../helpers/gateway.js';
import { tempDbPath, tempDir } from '../helpers/temp-dir.js';

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

    it('refuses a file that is not a database with a StorageError', () => {
      const path = tempDbPath();
      writeFileSync(path, 'this is not a SQLite database, not even close to one; it is plain text.'.repeat(20));
      expect(() => new SqliteStorage({ path }).open()).toThrow(
        expect.objectContaining({ name: 'StorageError', code: 'STORAGE_FAILED' }),
      );
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
