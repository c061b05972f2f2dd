import { createDecipheriv, createHmac, pbkdf2Sync, randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { basename, dirname, join } from 'node:path';
import BetterSqlite3 from 'better-sqlite3-multiple-ciphers';
import { describe, expect, it } from 'vitest';
import { type EncryptionKeyError, isEncryptionKeyError, isStorageError, SqliteStorage } from '../../src/index.js';
import { keyConnection, looksEncrypted } from '../../src/storage/encryption.js';
import type { OutboxInsert } from '../../src/storage/storage.js';
import { encodeBatch } from '../../src/sync/batch-codec.js';
import { defer } from '../helpers/cleanup.js';
import { tempDbPath, tempDir } from '../helpers/temp-dir.js';

/** Text that appears nowhere in a database unless a reading put it there. */
const CANARY = 'CANARY-7f3a9c';
/** A value whose 8 bytes (SQLite stores a REAL big-endian) are as distinctive as the text. */
const CANARY_VALUE = 1234567.890625;
const canaryValueBytes = () => {
  const bytes = Buffer.alloc(8);
  bytes.writeDoubleBE(CANARY_VALUE);
  return bytes;
};

const reading = (n: number): OutboxInsert => ({
  kind: 'reading',
  sensorId: `${CANARY}-sensor-${n}`,
  ts: Date.UTC(2024, 0, 1) + n,
  value: CANARY_VALUE,
  unit: `${CANARY}-unit`,
  tags: JSON.stringify({ site: `${CANARY}-site` }),
  payload: null,
});
const readings = (n: number, from = 0) => Array.from({ length: n }, (_, i) => reading(from + i));

// Raw keys open at once; a passphrase costs ~0.3 s of key stretching per open, so most tests use raw keys.
const rawKey = () => `x'${randomBytes(32).toString('hex')}'`;

function openStorage(path: string, options: Partial<ConstructorParameters<typeof SqliteStorage>[0]> = {}) {
  const storage = new SqliteStorage({ path, busyTimeoutMs: 200, ...options });
  storage.open();
  defer(() => storage.close());
  return storage;
}

/** Makes a database at `path` holding `n` queued readings and one shared record, closed again; its replicaId. */
function makeDatabase(path: string, encryptionKey: string | undefined, n = 300): string {
  const storage = new SqliteStorage({ path, encryptionKey });
  storage.open();
  storage.append(readings(n));
  storage.records.write({
    collection: 'setpoints',
    key: `${CANARY}-record`,
    value: JSON.stringify({ note: `${CANARY}-value` }),
    hlc: '0000000000001:00000:replica',
    origin: 'replica',
  });
  const id = storage.replicaId;
  storage.close();
  return id;
}

/** The files of the database at `path` (main, WAL, shared memory, journal) that hold the canary, as bytes. */
function filesHoldingCanary(path: string): string[] {
  const found: string[] = [];
  for (const suffix of ['', '-wal', '-shm', '-journal']) {
    const file = `${path}${suffix}`;
    if (!existsSync(file)) continue;
    const bytes = readFileSync(file);
    if (bytes.includes(CANARY) || bytes.includes(canaryValueBytes())) found.push(basename(file));
  }
  return found;
}

const setAside = (path: string) => readdirSync(dirname(path)).filter((name) => name.includes('.corrupt-'));

/** The database's files next to it, by name: all but its lock file, which each open attempt writes its pid into. */
const databaseFiles = (path: string) => readdirSync(dirname(path)).filter((name) => !name.endsWith('.lock'));

/** The bytes of every database file next to the database, by name. */
const snapshot = (path: string) =>
  new Map(databaseFiles(path).map((name) => [name, readFileSync(join(dirname(path), name))]));

/** Whether `key` (undefined: none) opens the database at `path`, read through a raw connection. */
function opensWith(path: string, key: string | undefined): boolean {
  const db = new BetterSqlite3(path, { fileMustExist: true });
  try {
    if (key !== undefined) keyConnection(db, key);
    db.prepare('SELECT count(*) FROM outbox').get();
    return true;
  } catch {
    return false;
  } finally {
    db.close();
  }
}

/** Whether `key` decrypts the first page of the database at `path` (its schema), whatever the other pages hold. */
function schemaReadsWith(path: string, key: string): boolean {
  const db = new BetterSqlite3(path, { fileMustExist: true });
  try {
    keyConnection(db, key);
    db.prepare('SELECT count(*) FROM sqlite_schema').get();
    return true;
  } catch {
    return false;
  } finally {
    db.close();
  }
}

const outboxSeqs = (storage: SqliteStorage) =>
  storage.sealNext(100_000, (batchNo, rows) =>
    encodeBatch({ deviceId: 'd', replicaId: storage.replicaId }, batchNo, rows, false),
  );

describe('SqliteStorage', () => {
  describe('with an encryptionKey', () => {
    it('keeps no reading or record in clear in the database, its WAL or its -shm, while open and once closed', () => {
      const path = tempDbPath();
      const storage = openStorage(path, { encryptionKey: rawKey() });
      storage.append(readings(500));
      storage.records.write({
        collection: 'setpoints',
        key: `${CANARY}-record`,
        value: JSON.stringify({ note: `${CANARY}-value` }),
        hlc: '0000000000001:00000:replica',
        origin: 'replica',
      });
      expect(readFileSync(`${path}-wal`).length).toBeGreaterThan(0); // the readings are in the WAL now
      expect(filesHoldingCanary(path)).toEqual([]);
      storage.close();
      expect(filesHoldingCanary(path)).toEqual([]);
      expect(looksEncrypted(path)).toBe(true);
    });

    it('finds the same readings in clear without a key (the scan sees what is there)', () => {
      const path = tempDbPath();
      const storage = openStorage(path);
      storage.append(readings(500));
      expect(filesHoldingCanary(path)).toEqual(['edge.db-wal']);
      storage.close();
      expect(filesHoldingCanary(path)).toEqual(['edge.db']);
    });

    it('keeps everything it held across a restart with the same key', () => {
      const path = tempDbPath();
      const key = rawKey();
      const id = makeDatabase(path, key, 300);
      const storage = openStorage(path, { encryptionKey: key });
      expect(storage.replicaId).toBe(id);
      expect(storage.pendingCount()).toBe(300);
      expect(storage.encrypted).toBe(true);
      expect(storage.reencrypted).toBeUndefined();
      expect(storage.records.get('setpoints', `${CANARY}-record`)?.value).toContain(`${CANARY}-value`);
    });

    it('takes a passphrase as well as a raw key, and 32 bytes as a raw key', () => {
      const dir = tempDir();
      const bytes = randomBytes(32);
      for (const [name, key] of [
        ['passphrase.db', 'correct horse battery staple'],
        ['bytes.db', bytes],
      ] as const) {
        const path = join(dir, name);
        const storage = new SqliteStorage({ path, encryptionKey: key });
        storage.open();
        storage.append(readings(10));
        storage.close();
        expect(filesHoldingCanary(path)).toEqual([]);
        expect(openStorage(path, { encryptionKey: key }).pendingCount()).toBe(10);
      }
      // The same raw key, as bytes or in SQLCipher's notation.
      expect(opensWith(join(dir, 'bytes.db'), `x'${bytes.toString('hex').toUpperCase()}'`)).toBe(true);
    });

    it('writes SQLCipher 4 files: page 1 decrypts with node:crypto as the SQLCipher 4 format says', () => {
      const path = tempDbPath();
      const passphrase = 'a passphrase for the format test';
      makeDatabase(path, passphrase, 10);
      const file = readFileSync(path);
      const page = file.subarray(0, 4096);
      // SQLCipher 4 defaults: salt = the first 16 bytes; key = PBKDF2-HMAC-SHA512(passphrase, salt, 256000, 32);
      // each page ends in 80 reserved bytes: a 16-byte IV, then an HMAC-SHA512 of (ciphertext ‖ IV ‖ page number,
      // little-endian) under a key made with 2 PBKDF2 iterations over the salt XOR 0x3a.
      const salt = page.subarray(0, 16);
      const key = pbkdf2Sync(passphrase, salt, 256_000, 32, 'sha512');
      const hmacSalt = Buffer.from(salt.map((b) => b ^ 0x3a));
      const hmacKey = pbkdf2Sync(key, hmacSalt, 2, 32, 'sha512');
      const ciphertext = page.subarray(16, 4096 - 80);
      const iv = page.subarray(4096 - 80, 4096 - 64);
      const mac = createHmac('sha512', hmacKey)
        .update(ciphertext)
        .update(iv)
        .update(Buffer.from([1, 0, 0, 0]))
        .digest();
      expect(mac.equals(page.subarray(4096 - 64))).toBe(true);
      const decipher = createDecipheriv('aes-256-cbc', key, iv).setAutoPadding(false);
      const plain = Buffer.concat([decipher.update(ciphertext), decipher.final()]);
      // What follows the magic string in a plaintext header: page size 4096 (big-endian), write and read version 2
      // (WAL), 80 reserved bytes per page.
      expect([...plain.subarray(0, 5)]).toEqual([0x10, 0x00, 2, 2, 80]);
    });

    describe('opened with a wrong key', () => {
      it('refuses with EncryptionKeyError and leaves every file byte for byte as it was, set aside as nothing', () => {
        const path = tempDbPath();
        makeDatabase(path, rawKey());
        const before = snapshot(path);
        let error: unknown;
        try {
          new SqliteStorage({ path, encryptionKey: rawKey() }).open();
        } catch (caught) {
          error = caught;
        }
        expect(isEncryptionKeyError(error)).toBe(true);
        expect(isStorageError(error)).toBe(false);
        expect(error).toMatchObject({
          name: 'EncryptionKeyError',
          code: 'ENCRYPTION_KEY_INVALID',
          reason: 'wrong-key',
        });
        expect((error as EncryptionKeyError).message).toMatch(/cannot be decrypted.*left untouched/);
        expect(snapshot(path)).toEqual(before);
        expect(setAside(path)).toEqual([]);
      });

      it('leaves the database and the WAL of an unclean shutdown untouched, for the right key to recover', () => {
        const dir = tempDir();
        const live = join(dir, 'live.db');
        const key = rawKey();
        makeDatabase(live, key, 50);
        // An unclean shutdown: a copy of the files taken while a connection still had commits in the WAL.
        const holder = new BetterSqlite3(live);
        keyConnection(holder, key);
        holder.prepare("INSERT INTO meta (key, value) VALUES ('in-the-wal', '1')").run();
        const crashed = join(dir, 'crashed.db');
        writeFileSync(crashed, readFileSync(live));
        writeFileSync(`${crashed}-wal`, readFileSync(`${live}-wal`));
        holder.close();
        const main = readFileSync(crashed);
        const wal = readFileSync(`${crashed}-wal`);

        expect(() => new SqliteStorage({ path: crashed, encryptionKey: rawKey() }).open()).toThrow(
          expect.objectContaining({ name: 'EncryptionKeyError' }),
        );
        expect(readFileSync(crashed).equals(main)).toBe(true);
        expect(readFileSync(`${crashed}-wal`).equals(wal)).toBe(true);
        expect(openStorage(crashed, { encryptionKey: key }).getMeta('in-the-wal')).toBe('1');
      });

      it('refuses a passphrase that is not the one, naming the previous keys it tried too', () => {
        const path = tempDbPath();
        makeDatabase(path, 'the right passphrase', 5);
        expect(() =>
          new SqliteStorage({
            path,
            encryptionKey: 'a wrong passphrase',
            previousEncryptionKeys: ['another wrong one'],
          }).open(),
        ).toThrow(/nor with any of the 1 previous key/);
        expect(openStorage(path, { encryptionKey: 'the right passphrase' }).pendingCount()).toBe(5);
      });
    });

    it('refuses an encrypted file opened without a key (reason key-missing), untouched, never set aside', () => {
      const path = tempDbPath();
      makeDatabase(path, rawKey());
      const before = snapshot(path);
      expect(() => new SqliteStorage({ path }).open()).toThrow(
        expect.objectContaining({ name: 'EncryptionKeyError', reason: 'key-missing' }),
      );
      expect(snapshot(path)).toEqual(before);
    });

    it('still sets aside a file that is no database at all, key or not', () => {
      const path = tempDbPath();
      writeFileSync(path, 'sensor,value\ntemp-01,23.5\n'.repeat(200));
      const storage = openStorage(path, { encryptionKey: rawKey() });
      expect(storage.quarantined?.reason).toMatch(/not a database/);
      storage.append(readings(3));
      storage.close();
      expect(filesHoldingCanary(path)).toEqual([]); // the new database is encrypted
    });

    it('sets aside an encrypted database whose inner page is damaged: the key is right, the file is not', () => {
      const path = tempDbPath();
      const key = rawKey();
      makeDatabase(path, key, 2000);
      const bytes = readFileSync(path);
      bytes[4096 * 3 + 200] = (bytes[4096 * 3 + 200] as number) ^ 0x55; // fails its page's HMAC
      writeFileSync(path, bytes);
      const storage = openStorage(path, { encryptionKey: key });
      expect(storage.quarantined?.reason).toMatch(/malformed|quick_check failed/);
      // Set aside, still under its key: its first page decrypts (its outbox may hold the damaged page).
      expect(schemaReadsWith(storage.quarantined?.path as string, key)).toBe(true);
    });

    it('refuses ":memory:" and keys of the wrong form, without showing them', () => {
      expect(() => new SqliteStorage({ path: ':memory:', encryptionKey: rawKey() })).toThrow(/in-memory/);
      expect(() => new SqliteStorage({ path: 'x.db', encryptionKey: "x'abcd'" })).toThrow(/64 \(or 96\) hex digits/);
      expect(() => new SqliteStorage({ path: 'x.db', encryptionKey: new Uint8Array(16) })).toThrow(/32 bytes/);
      expect(() => new SqliteStorage({ path: 'x.db', encryptionKey: '' })).toThrow(/empty/);
      try {
        new SqliteStorage({ path: 'x.db', encryptionKey: "x'secret-not-hex'" });
      } catch (error) {
        expect((error as Error).message).not.toContain('secret-not-hex');
      }
    });
  });

  describe('.open() of a plaintext database with an encryptionKey', () => {
    it('encrypts it in place, keeping every reading, record, batch and its replicaId', () => {
      const path = tempDbPath();
      const id = makeDatabase(path, undefined, 400);
      const plain = new SqliteStorage({ path });
      plain.open();
      const sealed = outboxSeqs(plain);
      plain.append(readings(100, 400));
      plain.close();
      expect(filesHoldingCanary(path)).toEqual(['edge.db']);

      const key = rawKey();
      const storage = openStorage(path, { encryptionKey: key });
      expect(storage.reencrypted).toBe('from-plaintext');
      expect(storage.replicaId).toBe(id);
      expect(storage.pendingCount()).toBe(500);
      expect(Buffer.from(storage.oldestBatch()?.body ?? []).equals(Buffer.from(sealed?.body ?? [0]))).toBe(true);
      expect(storage.records.get('setpoints', `${CANARY}-record`)?.value).toContain(`${CANARY}-value`);
      storage.close();
      expect(filesHoldingCanary(path)).toEqual([]);
      expect(opensWith(path, undefined)).toBe(false);
      expect(opensWith(path, key)).toBe(true);
      expect(databaseFiles(path)).toEqual(['edge.db']);
    });

    it('opens it as any other first: damaged, it is set aside in clear and the new database is encrypted', () => {
      const path = tempDbPath();
      makeDatabase(path, undefined, 50);
      const bytes = readFileSync(path);
      bytes[47] = (bytes[47] as number) ^ 0xa5; // an unknown schema format
      writeFileSync(path, bytes);
      const storage = openStorage(path, { encryptionKey: rawKey() });
      expect(storage.quarantined?.reason).toMatch(/unsupported file format/);
      expect(storage.reencrypted).toBe('from-plaintext');
      storage.append(readings(5));
      storage.close();
      expect(filesHoldingCanary(path)).toEqual([]);
    });
  });

  describe('.open() with previousEncryptionKeys', () => {
    it('re-encrypts a file still under a previous key with encryptionKey', () => {
      const path = tempDbPath();
      const [oldKey, newKey] = [rawKey(), rawKey()];
      const id = makeDatabase(path, oldKey, 100);
      const storage = openStorage(path, { encryptionKey: newKey, previousEncryptionKeys: [rawKey(), oldKey] });
      expect(storage.reencrypted).toBe('from-previous-key');
      expect(storage.replicaId).toBe(id);
      expect(storage.pendingCount()).toBe(100);
      storage.close();
      expect(opensWith(path, oldKey)).toBe(false);
      expect(opensWith(path, newKey)).toBe(true);
    });

    it('changes nothing when encryptionKey already opens the file', () => {
      const path = tempDbPath();
      const key = rawKey();
      makeDatabase(path, key, 10);
      const before = readFileSync(path);
      const storage = openStorage(path, { encryptionKey: key, previousEncryptionKeys: [rawKey()] });
      expect(storage.reencrypted).toBeUndefined();
      storage.close();
      expect(readFileSync(path).equals(before)).toBe(true);
    });
  });

  describe('.rekey()', () => {
    it('re-encrypts the open database under the new key, losing and duplicating nothing', () => {
      const path = tempDbPath();
      const [oldKey, newKey] = [rawKey(), rawKey()];
      const id = makeDatabase(path, oldKey, 300);
      const storage = openStorage(path, { encryptionKey: oldKey });
      const sealed = outboxSeqs(storage);
      storage.append(readings(50, 300));
      storage.rekey(newKey);
      expect(storage.replicaId).toBe(id);
      expect(storage.pendingCount()).toBe(350);
      expect(Buffer.from(storage.oldestBatch()?.body ?? []).equals(Buffer.from(sealed?.body ?? [0]))).toBe(true);
      expect(storage.append(readings(1, 350))).toBe(351); // the sequence goes on
      storage.close();
      expect(opensWith(path, oldKey)).toBe(false);
      expect(opensWith(path, newKey)).toBe(true);
      expect(filesHoldingCanary(path)).toEqual([]);
      expect(databaseFiles(path)).toEqual(['edge.db']);
    });

    it('encrypts a plaintext database, open, in place', () => {
      const path = tempDbPath();
      makeDatabase(path, undefined, 100);
      const storage = openStorage(path);
      expect(storage.encrypted).toBe(false);
      const key = rawKey();
      storage.rekey(key);
      expect(storage.encrypted).toBe(true);
      expect(storage.pendingCount()).toBe(100);
      storage.close();
      expect(filesHoldingCanary(path)).toEqual([]);
      expect(opensWith(path, key)).toBe(true);
    });

    it('refuses while another connection holds the database open, leaving it open and unchanged', () => {
      const path = tempDbPath();
      const oldKey = rawKey();
      makeDatabase(path, oldKey, 20);
      const storage = openStorage(path, { encryptionKey: oldKey });
      const other = new BetterSqlite3(path);
      keyConnection(other, oldKey);
      other.prepare('SELECT count(*) FROM outbox').get();
      let error: unknown;
      try {
        storage.rekey(rawKey());
      } catch (caught) {
        error = caught;
      }
      other.close();
      expect(isStorageError(error)).toBe(true);
      expect((error as Error).message).toMatch(
        /another connection holds the database open.*unchanged, under its old key/,
      );
      expect(storage.pendingCount()).toBe(20);
      expect(storage.append(readings(1, 20))).toBe(21);
      storage.close();
      expect(opensWith(path, oldKey)).toBe(true);
      expect(databaseFiles(path)).toEqual(['edge.db']);
    });
  });

  it('removes the copy an interrupted re-encryption left, and nothing else', () => {
    const path = tempDbPath();
    const key = rawKey();
    makeDatabase(path, key, 10);
    writeFileSync(`${path}.rekey`, 'half a copy');
    writeFileSync(`${path}.rekey-journal`, 'its journal');
    mkdirSync(join(dirname(path), 'keep'));
    const storage = openStorage(path, { encryptionKey: key });
    expect(storage.pendingCount()).toBe(10);
    expect(databaseFiles(path).sort()).toEqual(['edge.db', 'edge.db-shm', 'edge.db-wal', 'keep']);
  });

  describe('with the database lock and retention', () => {
    const autoVacuum = (path: string, key: string) => {
      const db = new BetterSqlite3(path, { fileMustExist: true });
      try {
        keyConnection(db, key);
        return db.pragma('auto_vacuum', { simple: true });
      } finally {
        db.close();
      }
    };
    const INCREMENTAL = 2;

    it('makes a new encrypted database with auto_vacuum=INCREMENTAL, the key applied before it', () => {
      const path = tempDbPath();
      const key = rawKey();
      makeDatabase(path, key, 10);
      expect(autoVacuum(path, key)).toBe(INCREMENTAL);
      expect(looksEncrypted(path)).toBe(true);
    });

    it('keeps auto_vacuum=INCREMENTAL when it encrypts a plaintext database in place, and when it re-keys', () => {
      const path = tempDbPath();
      makeDatabase(path, undefined, 10);
      const key = rawKey();
      const storage = openStorage(path, { encryptionKey: key });
      expect(storage.reencrypted).toBe('from-plaintext');
      const next = rawKey();
      storage.rekey(next);
      storage.close();
      expect(autoVacuum(path, next)).toBe(INCREMENTAL);
    });

    it('holds the lock across rekey(): another storage is refused after it, naming this process', () => {
      const path = tempDbPath();
      const storage = openStorage(path, { encryptionKey: rawKey() });
      storage.append(readings(20));
      storage.rekey(rawKey());
      expect(() => new SqliteStorage({ path, encryptionKey: rawKey() }).open()).toThrow(
        expect.objectContaining({ sqliteCode: 'SQLITE_BUSY', inUseBy: expect.objectContaining({ pid: process.pid }) }),
      );
      expect(storage.pendingCount()).toBe(20);
      expect(storage.retention.protectedCount()).toBeGreaterThanOrEqual(0); // the reopened database's retention
    });

    it('holds the lock when rekey() fails and reopens under the old key', () => {
      const path = tempDbPath();
      const key = rawKey();
      const storage = openStorage(path, { encryptionKey: key });
      storage.append(readings(5));
      const other = new BetterSqlite3(path); // another connection: rekey() refuses to run under it
      keyConnection(other, key);
      other.prepare('SELECT count(*) FROM outbox').get();
      try {
        expect(() => storage.rekey(rawKey())).toThrow(/another connection holds the database open/);
      } finally {
        other.close();
      }
      expect(() => new SqliteStorage({ path, encryptionKey: key }).open()).toThrow(
        expect.objectContaining({ sqliteCode: 'SQLITE_BUSY' }),
      );
      expect(storage.pendingCount()).toBe(5);
    });
  });
});
