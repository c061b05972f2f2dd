import { closeSync, copyFileSync, fsyncSync, openSync, readSync, renameSync, rmSync, statfsSync } from 'node:fs';
import { dirname } from 'node:path';
import BetterSqlite3, { type Database } from 'better-sqlite3-multiple-ciphers';
import { EncryptionKeyError, StorageError } from '../errors.js';
import { fileSize } from './quarantine.js';

/**
 * A key for the local database, as SQLCipher takes it. A string is a passphrase, stretched into the key with
 * PBKDF2-HMAC-SHA512 and 256,000 iterations at every open (about 0.3 s on the reference machine, several on a
 * small ARM board), unless it is in SQLCipher's raw-key notation, `x'<64 hex digits>'`: then it is the 256-bit key
 * itself, used at once. A `Uint8Array` of 32 bytes is a raw key too. A raw key made by a random source (see
 * docs/security-at-rest.md) is the better choice for a device: full strength, and no stretching cost at start.
 *
 * @example
 * ```ts
 * // openssl rand -hex 32  →  x'9f3c…(64 hex digits)…'
 * new EdgeGateway({ deviceId: 'd', encryptionKey: `x'${process.env.DB_KEY_HEX}'` });
 * new EdgeGateway({ deviceId: 'd', encryptionKey: crypto.randomBytes(32) }); // a raw key, kept by the host
 * ```
 */
export type EncryptionKey = string | Uint8Array;

/**
 * The cipher, in SQLite3 Multiple Ciphers' terms: SQLCipher 4's format (AES-256-CBC, an HMAC-SHA512 on every page,
 * PBKDF2-HMAC-SHA512 with 256,000 iterations, 4 KiB pages), so that the `sqlcipher` tools open the file too.
 */
const CIPHER = 'sqlcipher';
const CIPHER_LEGACY = 4;
/** SQLCipher's raw-key notation: a 256-bit key, or a key and its 128-bit salt. */
const RAW_KEY = /^x'([0-9a-f]{64}|[0-9a-f]{96})'$/i;
const RAW_KEY_BYTES = 32;
/** The first 16 bytes of every plaintext SQLite database. */
const PLAINTEXT_MAGIC = Buffer.from('SQLite format 3\0', 'latin1');
/** Where a re-encrypted copy is made, next to the database, before it is renamed over it. */
const REKEY_SUFFIX = '.rekey';
/** The copy, plus its rollback journal while it is re-keyed (every page), plus some slack. */
const ROOM_FACTOR = 2.1;

/** Why `key` cannot be an encryption key, in words that never show it; undefined when it can. @internal */
export function encryptionKeyProblem(option: string, key: unknown): string | undefined {
  if (typeof key === 'string') {
    if (key.length === 0) return `Expected the "${option}" option to be a passphrase or a raw key, got an empty string`;
    if (/^x'/i.test(key) && !RAW_KEY.test(key)) {
      return `Expected the "${option}" option, in the raw-key notation x'…', to hold exactly 64 (or 96) hex digits (value not shown)`;
    }
    return undefined;
  }
  if (key instanceof Uint8Array) {
    if (key.length === RAW_KEY_BYTES) return undefined;
    return `Expected the "${option}" option, as bytes, to be a raw key of ${RAW_KEY_BYTES} bytes, got ${key.length} byte(s)`;
  }
  return `Expected the "${option}" option to be a passphrase, a raw key x'<64 hex digits>' or ${RAW_KEY_BYTES} bytes, got ${key === null ? 'null' : typeof key}`;
}

/**
 * Every problem with a database's keys, in words that never show them: each key's form, and a key for an
 * in-memory database (which SQLite3 Multiple Ciphers does not encrypt). @internal
 */
export function keyProblems(
  path: string,
  key: unknown,
  previousKeys: readonly unknown[] = [],
  keyName = 'encryptionKey',
): string[] {
  const problems = [
    ...(key === undefined ? [] : [encryptionKeyProblem(keyName, key)]),
    ...previousKeys.map((previous, i) => encryptionKeyProblem(`previousEncryptionKeys.${i}`, previous)),
  ].filter((problem) => problem !== undefined);
  if (key !== undefined && path === ':memory:') {
    problems.push('An in-memory database (":memory:") cannot be encrypted: give a file path');
  }
  return problems;
}

/** The bytes SQLite3 Multiple Ciphers takes for `key`: raw bytes in the x'…' notation, a passphrase as UTF-8. */
function keyBytes(key: EncryptionKey): Buffer {
  return typeof key === 'string' ? Buffer.from(key, 'utf8') : Buffer.from(`x'${Buffer.from(key).toString('hex')}'`);
}

/** Whether two keys are the same key, in whatever form each was given. @internal */
export function sameKey(a: EncryptionKey | undefined, b: EncryptionKey | undefined): boolean {
  if (a === undefined || b === undefined) return a === b;
  const canonical = (key: EncryptionKey) => {
    const text = keyBytes(key).toString('utf8');
    return RAW_KEY.test(text) ? text.toLowerCase() : text;
  };
  return canonical(a) === canonical(b);
}

const useCipher = (db: Database) => {
  db.pragma(`cipher = '${CIPHER}'`);
  db.pragma(`legacy = ${CIPHER_LEGACY}`);
};

/**
 * Keys a connection, before its first read: from then on every page it reads is decrypted and checked, and every
 * page it writes, to the database or its WAL, is encrypted. Temporary files (sorts, temporary tables) are kept in
 * memory, as SQLite3 Multiple Ciphers would write them in clear. @internal
 */
export function keyConnection(db: Database, key: EncryptionKey): void {
  useCipher(db);
  const bytes = keyBytes(key);
  try {
    db.key(bytes);
  } finally {
    bytes.fill(0);
  }
  db.pragma('temp_store = MEMORY');
}

function readHead(path: string, length: number): Buffer {
  let fd: number | undefined;
  try {
    fd = openSync(path, 'r');
    const head = Buffer.alloc(length);
    return head.subarray(0, readSync(fd, head, 0, length, 0));
  } catch {
    return Buffer.alloc(0);
  } finally {
    if (fd !== undefined) closeSync(fd);
  }
}

/** Whether the file at `path` starts as every plaintext SQLite database does. @internal */
export const isPlaintextDatabase = (path: string): boolean => readHead(path, 16).equals(PLAINTEXT_MAGIC);

// An encrypted first page is indistinguishable from random bytes; a plaintext one, even damaged, is anything but
// (a header of small numbers and zeros, then schema text). A chi-square test of the byte counts against the uniform
// distribution tells them apart: random bytes score about 255 ± 23, a SQLite page or text tens of thousands.
const CHI_SQUARE_LIMIT = 400;
const MIN_SAMPLE = 1024;

/** Whether the file at `path` looks encrypted: its first page indistinguishable from random bytes. @internal */
export function looksEncrypted(path: string): boolean {
  const head = readHead(path, 4096);
  if (head.length < MIN_SAMPLE) return false;
  const counts = new Array<number>(256).fill(0);
  for (const byte of head) counts[byte] = (counts[byte] as number) + 1;
  const expected = head.length / 256;
  let chi = 0;
  for (const count of counts) chi += (count - expected) ** 2 / expected;
  return chi < CHI_SQUARE_LIMIT;
}

/**
 * What a failure of a connection's first read means when it is a key problem rather than damage: SQLite answers
 * "file is not a database" both to a wrong key and to a damaged header, and only the first may never lead to the
 * file being set aside. A file that looks encrypted is taken to be under another key. @internal
 */
export function keyErrorOf(
  path: string,
  error: unknown,
  keyGiven: boolean,
  triedKeys: number,
): EncryptionKeyError | undefined {
  if ((error as { code?: unknown } | null)?.code !== 'SQLITE_NOTADB' || !looksEncrypted(path)) return undefined;
  return new EncryptionKeyError(path, keyGiven ? 'wrong-key' : 'key-missing', { cause: error, triedKeys });
}

/**
 * Whether `key` decrypts the database at `path` (its first page, checked by its HMAC). Reads only: a wrong key
 * changes nothing on disk. @internal
 */
export function opensWith(path: string, key: EncryptionKey, busyTimeoutMs: number): boolean {
  const db = new BetterSqlite3(path, { fileMustExist: true, timeout: busyTimeoutMs });
  try {
    keyConnection(db, key);
    db.prepare('SELECT count(*) FROM sqlite_schema').get();
    return true;
  } catch (error) {
    const code = (error as { code?: unknown }).code;
    if (code === 'SQLITE_NOTADB') return false;
    // The first page decrypted and passed its check: the key is right, and the damage is for open() to handle.
    if (typeof code === 'string' && code.startsWith('SQLITE_CORRUPT')) return true;
    throw error;
  } finally {
    db.close();
  }
}

/** Removes what a re-encryption that did not finish left next to the database: never the database itself. @internal */
export function removeRekeyLeftovers(path: string): void {
  for (const suffix of ['', '-journal', '-wal', '-shm']) rmSync(`${path}${REKEY_SUFFIX}${suffix}`, { force: true });
}

function fsyncFile(path: string): void {
  const fd = openSync(path, 'r+');
  try {
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
}

// Makes a rename durable. Some platforms (Windows) cannot open a folder to sync it; there the rename is as durable
// as the file system makes it.
function fsyncDirectory(path: string): void {
  let fd: number | undefined;
  try {
    fd = openSync(path, 'r');
    fsyncSync(fd);
  } catch {
    // not supported here
  } finally {
    if (fd !== undefined) closeSync(fd);
  }
}

function checkRoom(path: string): void {
  const needed = Math.ceil(fileSize(path) * ROOM_FACTOR);
  let free: number;
  try {
    const disk = statfsSync(dirname(path));
    free = disk.bavail * disk.bsize;
  } catch {
    return; // no statfs here: the copy itself will say if the disk fills
  }
  if (free < needed) {
    throw new StorageError(
      `Re-encrypting the local database needs about ${needed} bytes free next to it (a copy, and the copy's journal), and the disk has ${free}`,
      { sqliteCode: 'SQLITE_FULL' },
    );
  }
}

/**
 * Re-writes the database at `path`, readable with `from` (undefined: a plaintext database), so that only `to`
 * opens it, and so that a crash at any moment leaves either the old file, whole and under `from`, or the new one,
 * whole and under `to`, never a mix: the WAL is checkpointed into the main file; the main file is copied (under an
 * exclusive lock, so that no other connection reads or writes meanwhile) to `<path>.rekey`; the copy is re-keyed
 * (SQLite3 Multiple Ciphers' rekey, under a rollback journal of its own), checked page by page under `to`
 * (`quick_check`: every page's HMAC), synced to disk, and renamed over `path` (atomic), and the folder is synced.
 * The database itself is only read until that rename, so a crash before it leaves it as it was, and a copy the next
 * open removes. No other connection may hold the database open. Needs free room of about twice the file.
 * Throws `StorageError` with the database unchanged. @internal
 */
export function reencryptFile(
  path: string,
  from: EncryptionKey | undefined,
  to: EncryptionKey,
  busyTimeoutMs: number,
): void {
  const temp = `${path}${REKEY_SUFFIX}`;
  removeRekeyLeftovers(path);
  try {
    const source = new BetterSqlite3(path, { fileMustExist: true, timeout: busyTimeoutMs });
    try {
      if (from !== undefined) keyConnection(source, from);
      // Held until this connection closes, after the copy: no other connection may read or write meanwhile, nor be
      // open at all (it could go on writing to the file the rename is about to replace).
      source.pragma('locking_mode = EXCLUSIVE');
      try {
        source.exec('BEGIN EXCLUSIVE');
      } catch (error) {
        throw new Error('another connection holds the database open', { cause: error });
      }
      source.exec('COMMIT');
      // Everything into the main file: the copy of the main file is then the whole database.
      source.pragma('wal_checkpoint(TRUNCATE)');
      if (fileSize(`${path}-wal`) > 0) throw new Error('its WAL could not be checkpointed');
      checkRoom(path);
      copyFileSync(path, temp);
    } finally {
      source.close();
    }
    const copy = new BetterSqlite3(temp, { fileMustExist: true, timeout: busyTimeoutMs });
    try {
      // A plaintext copy keeps its temporary files on disk: the vacuum that changes its page layout can be as big
      // as the database, and the database they come from is in clear anyway.
      if (from === undefined) useCipher(copy);
      else keyConnection(copy, from);
      copy.pragma('journal_mode = DELETE'); // SQLite3 Multiple Ciphers re-keys only outside WAL mode
      const bytes = keyBytes(to);
      try {
        copy.rekey(bytes);
      } finally {
        bytes.fill(0);
      }
      copy.pragma('journal_mode = WAL');
    } finally {
      copy.close();
    }
    const check = new BetterSqlite3(temp, { fileMustExist: true, timeout: busyTimeoutMs });
    try {
      keyConnection(check, to);
      const result = check.pragma('quick_check(1)', { simple: true });
      if (result !== 'ok') throw new Error(`the re-encrypted copy fails its check: ${String(result)}`);
    } finally {
      check.close();
    }
    fsyncFile(temp);
    renameSync(temp, path);
  } catch (error) {
    removeRekeyLeftovers(path);
    if (error instanceof StorageError) throw error;
    const sqliteCode = (error as { code?: unknown }).code;
    throw new StorageError(
      `Could not re-encrypt the local database at ${path}: ${(error as Error).message}. It is unchanged, under its old key.`,
      {
        cause: error,
        sqliteCode: typeof sqliteCode === 'string' && sqliteCode.startsWith('SQLITE_') ? sqliteCode : undefined,
      },
    );
  }
  fsyncDirectory(dirname(path));
}
