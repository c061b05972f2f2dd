import { hostname } from 'node:os';
import BetterSqlite3, { type Database } from 'better-sqlite3-multiple-ciphers';
import { type DatabaseHolder, StorageError } from '../errors.js';

/** Path of the lock file of the database at `path`. */
export const lockPathOf = (path: string): string => `${path}.lock`;

/** How long writing the holder row may wait for readers of the lock file. */
const COMMIT_WAIT_MS = 2000;

const isBusy = (error: unknown) => {
  const code = (error as { code?: unknown } | null)?.code;
  return code === 'SQLITE_BUSY' || code === 'SQLITE_LOCKED';
};

/**
 * One process's claim on a database file, so that a second gateway on the same file fails at `start()` with a
 * clear error instead of "database is locked" at random later.
 *
 * The claim is a write lock (SQLite's RESERVED lock, taken by `BEGIN IMMEDIATE` and never committed) held on a
 * small SQLite file next to the database, `<path>.lock`, for as long as the storage is open. Another connection,
 * in this process or another, can still read the file, and so the holder's pid, host and start time, which the
 * holder wrote there just before taking the lock; it cannot take the lock. The operating system drops the lock
 * when the holder's process ends, however it ends (`kill -9` included), so a lock is never stale and a pid that
 * was reused does not matter. The main database is left alone: readers (the `sqlite3` shell, a backup) work as
 * before. The lock file is never deleted: removing it while another process opens it would let two hold it.
 * @internal
 */
export class DatabaseLock {
  readonly #db: Database;

  private constructor(db: Database) {
    this.#db = db;
  }

  /**
   * Takes the lock of the database at `path`, at once or not at all. Throws `StorageError` with `inUseBy` (and
   * `sqliteCode` `SQLITE_BUSY`) when another connection holds it, or a plain `StorageError` when the lock file
   * cannot be made.
   */
  static acquire(path: string): DatabaseLock {
    const lockPath = lockPathOf(path);
    let db: Database | undefined;
    try {
      db = new BetterSqlite3(lockPath, { timeout: 0 });
      db.exec(
        'CREATE TABLE IF NOT EXISTS holder (id INTEGER PRIMARY KEY CHECK (id = 1), pid INTEGER NOT NULL, hostname TEXT NOT NULL, since TEXT NOT NULL)',
      );
      db.exec('BEGIN IMMEDIATE');
      db.prepare(
        `INSERT INTO holder (id, pid, hostname, since) VALUES (1, ?, ?, ?)
         ON CONFLICT (id) DO UPDATE SET pid = excluded.pid, hostname = excluded.hostname, since = excluded.since`,
      ).run(process.pid, hostname(), new Date().toISOString());
      // The commit waits out readers of the holder row (another gateway failing to start reads it): a moment.
      db.exec(`PRAGMA busy_timeout = ${COMMIT_WAIT_MS}`);
      db.exec('COMMIT');
      db.exec('PRAGMA busy_timeout = 0');
      // The lock is let go between the commit and this: whoever takes it then wins, and this claim fails below.
      db.exec('BEGIN IMMEDIATE');
      return new DatabaseLock(db);
    } catch (error) {
      const holder = db && isBusy(error) ? readHolder(db) : undefined;
      if (db?.open) db.close();
      if (isBusy(error)) throw inUse(path, holder, error);
      throw new StorageError(
        `Cannot take the lock file ${lockPath} of the local database: ${(error as Error).message}`,
        {
          cause: error,
          sqliteCode: (error as { code?: string }).code,
        },
      );
    }
  }

  /** Lets the lock go. Safe to call twice. */
  release(): void {
    if (!this.#db.open) return;
    try {
      if (this.#db.inTransaction) this.#db.exec('ROLLBACK');
    } finally {
      this.#db.close();
    }
  }
}

function readHolder(db: Database): DatabaseHolder | undefined {
  try {
    if (db.inTransaction) db.exec('ROLLBACK');
    const row = db.prepare('SELECT pid, hostname, since FROM holder WHERE id = 1').get() as DatabaseHolder | undefined;
    return row && { pid: row.pid, hostname: row.hostname, since: row.since };
  } catch {
    // Two processes creating the lock file at the same moment: the holder is not written yet.
    return undefined;
  }
}

function inUse(path: string, holder: DatabaseHolder | undefined, cause: unknown): StorageError {
  const who =
    holder === undefined
      ? 'another process'
      : holder.pid === process.pid && holder.hostname === hostname()
        ? `another gateway in this process (pid ${holder.pid}, since ${holder.since})`
        : `another process (pid ${holder.pid} on ${holder.hostname}, since ${holder.since})`;
  return new StorageError(
    `The local database at ${path} is already in use by ${who}: stop that gateway first, or give this one another localDb`,
    { cause, sqliteCode: 'SQLITE_BUSY', inUseBy: holder },
  );
}
