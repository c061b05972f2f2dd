import { randomUUID } from 'node:crypto';
import { existsSync, mkdirSync, statfsSync, statSync } from 'node:fs';
import { dirname } from 'node:path';
import BetterSqlite3, { type Database, type Statement } from 'better-sqlite3-multiple-ciphers';
import { ConfigError, EncryptionKeyError, StorageError } from '../errors.js';
import { DatabaseLock } from './database-lock.js';
import {
  type EncryptionKey,
  isPlaintextDatabase,
  keyConnection,
  keyErrorOf,
  keyProblems,
  opensWith,
  reencryptFile,
  removeRekeyLeftovers,
} from './encryption.js';
import { IngestLedger, ledgerKeyCap } from './ingest-ledger.js';
import { LocalTables } from './local-tables.js';
import { MIGRATIONS, migrate, verifySchema } from './migrations.js';
import {
  CorruptDatabaseError,
  corruptionReason,
  fileSize,
  type QuarantineReport,
  quarantineFiles,
} from './quarantine.js';
import type { RecordStorage } from './record-storage.js';
import { type RetentionStorage, tablePruneStep } from './retention.js';
import { SqliteRecordStorage } from './sqlite-records.js';
import { SqliteRetention } from './sqlite-retention.js';
import type {
  AggregateInsert,
  DeadLetter,
  DeadLetterInsert,
  HistoryRow,
  IngestKeyEntry,
  IngestKeyWrite,
  IntakeResult,
  IntakeWork,
  OutboxInsert,
  OutboxKind,
  OutboxRow,
  SealedBatch,
  SealInput,
  SeriesRange,
  Storage,
  StorageCapacity,
  StoredAlert,
  StoredAlertQuery,
  UnsealedRead,
} from './storage.js';

/** Options of {@link SqliteStorage}. */
export interface SqliteStorageOptions {
  /** Path of the database file, or `:memory:` (tests only: nothing survives). */
  path: string;
  /**
   * `full` fsyncs the WAL at every commit, so a power cut loses nothing acknowledged; `normal` may lose the
   * last commits on power loss (not on a process crash).
   * @default 'full'
   */
  synchronous?: 'full' | 'normal';
  /**
   * How long a statement waits for a lock held by another connection (a reader checkpointing, a backup, the
   * `sqlite3` shell), in ms. Another gateway never holds it: `open()` refuses a database another gateway has open
   * (see {@link SqliteStorage.open}). @default 5000
   */
  busyTimeoutMs?: number;
  /**
   * The most bytes the database file may take, at least 1 MiB (enforced with `PRAGMA max_page_count`). Once new
   * readings fill it, `append()` throws `StorageError` with `sqliteCode` `SQLITE_FULL` and stores nothing of that
   * write; acknowledged batches free pages that later appends reuse, so intake resumes by itself as the cloud
   * drains the queue. The last 1/32 of the budget (at least 16 pages) is kept for the sync loop (sealing,
   * acknowledging, dead letters), so a full database can always send and acknowledge its way out. The WAL comes
   * on top, up to about 4 MiB between checkpoints. A limit below the file's current size keeps it at that size.
   * The ingest endpoint's idempotency keys keep to a tenth of it, counted at 1 KiB a key.
   * @default undefined (no limit but the disk)
   */
  maxSizeBytes?: number | undefined;
  /**
   * `open()` runs `PRAGMA quick_check` on an existing file up to this size, and on a larger one only after an
   * unclean shutdown (a WAL file left behind). It costs about 110 ms per million queued readings (83 MB) with
   * the file in the page cache, more from a cold disk. 0 checks only after an unclean shutdown.
   * @default 268435456 (256 MiB)
   */
  quickCheckMaxBytes?: number;
  /**
   * Encrypts the whole database file, its WAL and its journals (SQLCipher 4 format; see {@link EncryptionKey}).
   * A plaintext database found at `path` is encrypted in place by `open()`, crash-safely. Not for `:memory:`.
   * @default undefined (plaintext)
   */
  encryptionKey?: EncryptionKey | undefined;
  /**
   * Keys the database may still be under after a key rotation that did not finish (a crash, a restart before the
   * host saved the new key): `open()` tries them when `encryptionKey` does not fit, and re-encrypts the file with
   * `encryptionKey`. @default []
   */
  previousEncryptionKeys?: readonly EncryptionKey[] | undefined;
}

/** What `open()` did to the file's encryption, from {@link SqliteStorage.reencrypted}. */
export type Reencryption = 'from-plaintext' | 'from-previous-key';

/** Smallest `maxSizeBytes`: below it the schema and the sync loop's reserve leave no room for readings. */
export const MIN_MAX_SIZE_BYTES = 1024 * 1024;
/** SQLite's largest page count: the cap of a database without a size budget. */
const NO_PAGE_LIMIT = 4294967294;
/** A replica id as `randomUUID()` makes it. */
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;
/** Attempts of one append to free room under the size budget (drop-oldest, downsample-oldest) before it fails. */
const MAX_FREE_ATTEMPTS = 16;
/** Idempotency keys the first attempt to free room for an append looks at; twice as many at each further attempt. */
const LEDGER_FREE_ROWS = 256;

const KIND_CODES: Record<OutboxKind, number> = { reading: 0, processed: 1, alert: 2, aggregate: 3 };
const KINDS: readonly OutboxKind[] = ['reading', 'processed', 'alert', 'aggregate'];
/** Batches of the bulk lane (readings, processed data, aggregates) and of the alert lane (outbox kind 2). */
const BULK_LANE = 0;
const ALERT_LANE = 1;

interface RawRow {
  seq: number;
  kind: number;
  sensor_id: string;
  ts: number;
  value: number | null;
  unit: string | null;
  tags: string | null;
  payload: string | null;
}

interface RawBatch {
  batch_no: number;
  first_seq: number;
  last_seq: number;
  count: number;
  body: Buffer;
  content_type: string;
  content_encoding: string | null;
  hash: string;
  attempts: number;
  lane: number;
}

const toRow = (raw: RawRow): OutboxRow => ({
  seq: raw.seq,
  kind: KINDS[raw.kind] ?? 'reading',
  sensorId: raw.sensor_id,
  ts: raw.ts,
  value: raw.value,
  unit: raw.unit,
  tags: raw.tags,
  payload: raw.payload,
});

const RAW_COLUMNS = 'seq, kind, sensor_id, ts, value, unit, tags, payload';
type RawColumns = [number, number, string, number, number | null, string | null, string | null, string | null];

const fromColumns = (raw: RawColumns): OutboxRow => ({
  seq: raw[0],
  kind: KINDS[raw[1]] ?? 'reading',
  sensorId: raw[2],
  ts: raw[3],
  value: raw[4],
  unit: raw[5],
  tags: raw[6],
  payload: raw[7],
});

const toBatch = (raw: RawBatch): SealedBatch => ({
  batchNo: raw.batch_no,
  firstSeq: raw.first_seq,
  lastSeq: raw.last_seq,
  count: raw.count,
  body: raw.body,
  contentType: raw.content_type,
  contentEncoding: raw.content_encoding,
  hash: raw.hash,
  attempts: raw.attempts,
});

/**
 * Rows per INSERT statement in append(): one call into SQLite per 32 rows rather than per row takes about a fifth off
 * the cost of an insert (docs/benchmarks.md, "Ingest"); the rest of a group goes in one row at a time.
 */
const ROWS_PER_INSERT = 32;

// Prepared once at open: preparing a statement costs more than running the insert itself.
function prepareStatements(db: Database) {
  return {
    insert: db.prepare(
      'INSERT INTO outbox (seq, kind, sensor_id, ts, value, unit, tags, payload) VALUES (?, ?, ?, ?, ?, ?, ?, ?)',
    ),
    insertMany: db.prepare(
      `INSERT INTO outbox (seq, kind, sensor_id, ts, value, unit, tags, payload) VALUES ${Array(ROWS_PER_INSERT).fill('(?, ?, ?, ?, ?, ?, ?, ?)').join(', ')}`,
    ),
    insertDead: db.prepare(
      `INSERT INTO dead_letters (seq, kind, sensor_id, ts, value, unit, tags, payload, reason, source, created_at)
       VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
    ),
    oldestBatch: db.prepare('SELECT * FROM batches ORDER BY batch_no LIMIT 1'),
    batch: db.prepare('SELECT * FROM batches WHERE batch_no = ?'),
    // Each lane seals its own rows in seq order; alerts are few, and the bulk lane's scan steps over them. Rows as
    // arrays (in RAW_COLUMNS order), not objects: half the cost of a batch's read, which the event loop pays.
    unsealed: db
      .prepare(
        `SELECT ${RAW_COLUMNS} FROM outbox WHERE seq > coalesce((SELECT max(last_seq) FROM batches WHERE lane = ${BULK_LANE}), 0)
         AND kind <> 2 ORDER BY seq LIMIT ?`,
      )
      .raw(true),
    unsealedAlerts: db
      .prepare(
        `SELECT ${RAW_COLUMNS} FROM outbox WHERE kind = 2
         AND seq > coalesce((SELECT max(last_seq) FROM batches WHERE lane = ${ALERT_LANE}), 0) ORDER BY seq LIMIT ?`,
      )
      .raw(true),
    // Where a lane's unsealed part starts, and how many of its rows a range holds: what sealRead() checks.
    firstUnsealed: db
      .prepare(
        `SELECT min(seq) FROM outbox WHERE seq > coalesce((SELECT max(last_seq) FROM batches WHERE lane = ${BULK_LANE}), 0)
         AND kind <> 2`,
      )
      .pluck(),
    firstUnsealedAlert: db
      .prepare(
        `SELECT min(seq) FROM outbox WHERE kind = 2
         AND seq > coalesce((SELECT max(last_seq) FROM batches WHERE lane = ${ALERT_LANE}), 0)`,
      )
      .pluck(),
    countRange: db.prepare('SELECT count(*) FROM outbox WHERE seq BETWEEN ? AND ? AND (kind = 2) = ?').pluck(),
    insertBatch: db.prepare(
      `INSERT INTO batches (batch_no, first_seq, last_seq, count, body, content_type, content_encoding, hash, created_at, lane)
       VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
    ),
    attempt: db.prepare('UPDATE batches SET attempts = attempts + 1 WHERE batch_no = ?'),
    // A lane's batch covers a seq range in which the other lane's rows may sit: the kind test leaves those alone.
    deleteRange: db.prepare('DELETE FROM outbox WHERE seq BETWEEN ? AND ? AND (kind = 2) = ?'),
    deleteBatch: db.prepare('DELETE FROM batches WHERE batch_no = ?'),
    rowsInRange: db.prepare('SELECT * FROM outbox WHERE seq BETWEEN ? AND ? AND (kind = 2) = ?'),
    deleteRow: db.prepare('DELETE FROM outbox WHERE seq = ?'),
    getMeta: db.prepare('SELECT value FROM meta WHERE key = ?').pluck(),
    setMeta: db.prepare(
      'INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value',
    ),
    deadLetters: db.prepare('SELECT * FROM dead_letters ORDER BY id DESC LIMIT ?'),
    deadLetterCount: db.prepare('SELECT count(*) FROM dead_letters').pluck(),
    tables: new LocalTables(db),
    ledger: new IngestLedger(db),
    // One wrapper for every transaction: db.transaction() makes several functions each time it is called.
    transaction: db.transaction((work: () => unknown) => work()),
  };
}

type Statements = ReturnType<typeof prepareStatements>;

/** Which part of a size budget a write may use: intake stops short of the reserve kept for the sync loop. */
type Room = 'intake' | 'upkeep';

/** A size budget in pages, and the statements that switch the connection's cap between its two parts. */
interface Budget {
  pageSize: number;
  intakePages: number;
  maxPages: number;
  room: Room | undefined;
  cap: Record<Room, Statement>;
}

const isFull = (error: unknown) => (error as { code?: unknown } | null)?.code === 'SQLITE_FULL';
const sqliteCodeOf = (error: unknown): string | undefined => {
  const code = (error as { code?: unknown } | null)?.code;
  return typeof code === 'string' && code.startsWith('SQLITE_') ? code : undefined;
};

const DEFAULT_QUICK_CHECK_MAX_BYTES = 256 * 1024 * 1024;
/** Free disk space below which a SQLITE_FULL is put down to the disk rather than to the size budget. */
const DISK_NEARLY_FULL_BYTES = 8 * 1024 * 1024;
/**
 * SQLite's page cache, KiB. better-sqlite3 builds SQLite with 16 MiB per connection; the queue is read at its head and
 * written at its tail, so a small cache holds what is used again (the b-tree's upper pages and the two ends) and the
 * rest would only be resident memory (docs/benchmarks.md, "Footprint"). SQLite's own default.
 */
const PAGE_CACHE_KIB = 2000;
/** Lines of `quick_check` output kept in a quarantine reason. */
const REASON_LINES = 3;

/**
 * The default {@link Storage}: one SQLite file in WAL mode, written through prepared statements made once at
 * open. Every method is one transaction.
 */
export class SqliteStorage implements Storage {
  readonly #options: Required<
    Omit<SqliteStorageOptions, 'maxSizeBytes' | 'encryptionKey' | 'previousEncryptionKeys'>
  > & { maxSizeBytes: number | undefined };
  #key: EncryptionKey | undefined;
  #previousKeys: readonly EncryptionKey[];
  #reencrypted: Reencryption | undefined;
  #db: Database | undefined;
  #replicaId = '';
  #nextSeq = 1;
  #pending = 0;
  #statements: Statements | undefined;
  #budget: Budget | undefined;
  #quarantined: QuarantineReport | undefined;
  #records: SqliteRecordStorage | undefined;
  #retention: SqliteRetention | undefined;
  #lock: DatabaseLock | undefined;
  #maxSizeBytes: number | undefined;
  #busyTimeoutMs: number;
  /** The parameters of one multi-row INSERT, reused from group to group. */
  readonly #insertArgs: unknown[] = new Array(8 * ROWS_PER_INSERT).fill(null);
  /** Changes retention committed to the queue (rows dropped or downsampled): what sealRead() compares. */
  #retentionChanges = 0;
  /** The value of #retentionChanges when each read of a two-phase seal was made. */
  readonly #readsRetention = new WeakMap<UnsealedRead, number>();
  /** The time and count bound of the last write of idempotency keys: what freeing room for an append prunes by. */
  #ledgerBounds: { now: number; maxEntries: number } | undefined;

  constructor(options: SqliteStorageOptions) {
    const {
      maxSizeBytes,
      quickCheckMaxBytes,
      busyTimeoutMs,
      encryptionKey,
      previousEncryptionKeys = [],
      ...rest
    } = options;
    checkMaxSize(maxSizeBytes);
    checkBusyTimeout(busyTimeoutMs);
    if (quickCheckMaxBytes !== undefined && !(quickCheckMaxBytes >= 0)) {
      throw new ConfigError([
        `Expected the "quickCheckMaxBytes" option to be a number of bytes, 0 or more, got ${String(quickCheckMaxBytes)}`,
      ]);
    }
    this.#options = {
      synchronous: 'full',
      ...rest,
      busyTimeoutMs: busyTimeoutMs ?? 5000,
      quickCheckMaxBytes: quickCheckMaxBytes ?? DEFAULT_QUICK_CHECK_MAX_BYTES,
      maxSizeBytes,
    };
    this.#key = undefined;
    this.#previousKeys = [];
    this.useEncryptionKeys(encryptionKey, previousEncryptionKeys);
    this.#maxSizeBytes = maxSizeBytes;
    this.#busyTimeoutMs = this.#options.busyTimeoutMs;
  }

  /** Whether the database is encrypted (an `encryptionKey` was given, or set by {@link SqliteStorage.rekey}). */
  get encrypted(): boolean {
    return this.#key !== undefined;
  }

  /**
   * What the last `open()` did to the file's encryption: `from-plaintext` when it encrypted a plaintext database,
   * `from-previous-key` when it finished a key rotation; undefined when it changed nothing.
   */
  get reencrypted(): Reencryption | undefined {
    return this.#reencrypted;
  }

  get path(): string {
    return this.#options.path;
  }

  get replicaId(): string {
    return this.#replicaId;
  }

  get quarantined(): QuarantineReport | undefined {
    return this.#quarantined;
  }

  /**
   * Opens the database, creating or migrating it. A file SQLite finds damaged (not a database, a malformed page,
   * a failed `quick_check`) is renamed to `<path>.corrupt-<timestamp>` with its `-wal` and `-shm`, never deleted,
   * and a new database (with a new `replicaId`) takes its place; {@link SqliteStorage.quarantined} says where it
   * went and why. A file that is merely unusable (a newer schema, read-only, locked, a folder in the way) is left
   * alone, and `open()` throws `StorageError`.
   *
   * With an `encryptionKey`, a file the key does not decrypt is refused with `EncryptionKeyError` and left as it
   * is, never set aside; so is an encrypted file opened without a key. A plaintext database is first opened as
   * any (checked, migrated, set aside when damaged), then encrypted in place.
   *
   * One storage at a time may have a database open: `open()` takes a lock, `<path>.lock`, held until `close()` (or
   * the end of the process, however it ends), and throws `StorageError` with `inUseBy` (the other process's pid,
   * host and start time) and `sqliteCode` `SQLITE_BUSY` when another storage holds it, in this process or another.
   *
   * A new file is made with `auto_vacuum=INCREMENTAL`, so that cleanup can give free pages back to the file system.
   */
  open(): void {
    if (this.#db) return;
    const { path } = this.#options;
    try {
      if (path !== ':memory:') {
        mkdirSync(dirname(path), { recursive: true });
        // Held across a re-encryption (rekey() closes and reopens the database): taken once, let go by close().
        this.#lock ??= DatabaseLock.acquire(path);
        removeRekeyLeftovers(path);
      }
      this.#reencrypted = this.#key === undefined ? undefined : this.#bringUnderKey(this.#key);
      this.#openWith(this.#key);
    } catch (error) {
      this.#lock?.release();
      this.#lock = undefined;
      if (error instanceof StorageError || error instanceof EncryptionKeyError) throw error;
      throw new StorageError(`Cannot open the local database at ${path}: ${(error as Error).message}`, {
        cause: error,
        sqliteCode: sqliteCodeOf(error),
      });
    }
  }

  #openWith(key: EncryptionKey | undefined): void {
    const { path } = this.#options;
    const damaged = this.#connect(undefined, key);
    if (damaged) {
      const at = new Date();
      const moved = this.#setAside(damaged.db, damaged.reason, at);
      const again = this.#connect({ path: moved, reason: damaged.reason, at }, key);
      if (again) {
        again.db.close();
        throw new StorageError(`The new local database at ${path} is damaged too: ${again.reason}`);
      }
    }
  }

  // Brings a file that `key` does not open yet under it, crash-safely (see reencryptFile): a plaintext database,
  // opened first as any other (checked, migrated, set aside when damaged), or one still under a previous key after a
  // rotation that did not finish. A file no key opens is left to #connect, which says so.
  #bringUnderKey(key: EncryptionKey): Reencryption | undefined {
    const { path } = this.#options;
    const busyTimeoutMs = this.#busyTimeoutMs;
    if (isPlaintextDatabase(path)) {
      this.#openWith(undefined);
      this.#closeDatabase();
      reencryptFile(path, undefined, key, busyTimeoutMs);
      return 'from-plaintext';
    }
    if (this.#previousKeys.length === 0 || fileSize(path) === 0 || opensWith(path, key, busyTimeoutMs)) {
      return undefined;
    }
    const previous = this.#previousKeys.find((candidate) => opensWith(path, candidate, busyTimeoutMs));
    if (previous === undefined) return undefined;
    reencryptFile(path, previous, key, busyTimeoutMs);
    return 'from-previous-key';
  }

  /**
   * Sets the keys the next `open()` uses, as the `encryptionKey` and `previousEncryptionKeys` options do (undefined:
   * plaintext). Only while closed: an open database changes keys with {@link SqliteStorage.rekey}.
   */
  useEncryptionKeys(
    encryptionKey: EncryptionKey | undefined,
    previousEncryptionKeys: readonly EncryptionKey[] = [],
  ): void {
    if (this.#db) throw new StorageError('The encryption keys of an open database change with rekey()');
    const problems = keyProblems(this.#options.path, encryptionKey, previousEncryptionKeys);
    if (problems.length > 0) throw new ConfigError(problems);
    this.#key = encryptionKey;
    this.#previousKeys = previousEncryptionKeys;
  }

  /**
   * Re-encrypts the open database under `key` (encrypts it, when it had no key) and reopens it. Crash-safe: a copy
   * is re-keyed next to the file, checked, synced and renamed over it, so that at every moment the file on disk is
   * the whole database under its old key or under the new one (see docs/security-at-rest.md). It blocks for the
   * time of reading and writing the file about three times (about 0.7 s for 300,000 queued readings, 21 MB, on
   * the reference machine) and needs free room of about twice the file's size. Throws `StorageError` when it cannot:
   * then the database is open again, unchanged, under its old key.
   */
  rekey(key: EncryptionKey): void {
    const { path } = this.#options;
    const busyTimeoutMs = this.#busyTimeoutMs;
    const problems = keyProblems(path, key, [], 'key');
    if (problems.length > 0) throw new ConfigError(problems);
    this.#database; // open, or throw
    const from = this.#key;
    this.#closeDatabase(); // the lock stays held: no other gateway opens the file between the two keys
    try {
      reencryptFile(path, from, key, busyTimeoutMs);
    } catch (error) {
      this.open();
      throw error;
    }
    this.#key = key;
    this.#previousKeys = [];
    this.open();
  }

  // Renames the damaged files while `db` still holds them open, then closes it. The order matters: closing first
  // lets SQLite delete the -wal and -shm files (it does so even for a file it found not to be a database), and the
  // WAL may hold the only copy of recent commits. Closed after the rename, SQLite checkpoints the WAL into the
  // renamed main file through its open handles and finds nothing to delete under the old names. Windows will not
  // rename open files: there, close first and rename what is left.
  #setAside(db: Database, reason: string, at: Date): string {
    const { path } = this.#options;
    try {
      let moved: string;
      try {
        moved = quarantineFiles(path, at);
      } catch {
        db.close();
        moved = quarantineFiles(path, at);
      }
      return moved;
    } catch (error) {
      throw new StorageError(
        `The local database at ${path} is damaged (${reason}) and could not be set aside: ${(error as Error).message}`,
        { cause: error },
      );
    } finally {
      if (db.open) db.close();
    }
  }

  // Opens, checks, migrates and reads the database. Returns the connection, still open, with the reason when the
  // file is damaged (for #setAside); on any other failure closes it and throws. `quarantine` is the damaged file
  // just set aside, remembered in the new database's meta so that it is reported across restarts.
  #connect(
    quarantine: QuarantineReport | undefined,
    key: EncryptionKey | undefined,
  ): { db: Database; reason: string } | undefined {
    const { path, synchronous } = this.#options;
    const onDisk = path !== ':memory:';
    const existingBytes = onDisk ? fileSize(path) : 0;
    const walLeft = onDisk && fileSize(`${path}-wal`) > 0;
    const db = new BetterSqlite3(path, { timeout: this.#busyTimeoutMs });
    try {
      // The key first: every other pragma reads the file.
      if (key !== undefined) keyConnection(db, key);
      // Only before the first table exists, and before journal_mode (which writes the header): see #makeBudget.
      if (existingBytes === 0) db.pragma('auto_vacuum = INCREMENTAL');
      try {
        db.pragma('journal_mode = WAL'); // the first read of the header: "file is not a database" surfaces here
      } catch (error) {
        // A wrong key (or none, for an encrypted file) reads as "not a database" too: refused, never set aside.
        const tried = key === undefined ? 0 : 1 + this.#previousKeys.length;
        throw (onDisk && existingBytes > 0 && keyErrorOf(path, error, key !== undefined, tried)) || error;
      }
      db.pragma(`synchronous = ${synchronous.toUpperCase()}`);
      db.pragma(`cache_size = -${PAGE_CACHE_KIB}`);
      if (existingBytes > 0) this.#check(db, existingBytes, walLeft);
      migrate(db);
      if (existingBytes > 0) verifySchema(db);
      const statements = prepareStatements(db);
      const replicaId = this.#ensureReplicaId(db);
      // A read-only file (permissions, a read-only mount, a header SQLite will only read) opens fine and then fails
      // every write: find out now, with one small write, rather than accept readings it cannot keep.
      db.prepare("UPDATE meta SET value = value WHERE key = 'replica_id'").run();
      const report = quarantine ?? this.#rememberedQuarantine(db, statements);
      if (quarantine) {
        statements.setMeta.run(
          'quarantine',
          JSON.stringify({ path: quarantine.path, reason: quarantine.reason, at: quarantine.at.toISOString() }),
        );
      }
      const budget = this.#makeBudget(db);
      this.#db = db;
      this.#statements = statements;
      this.#budget = budget;
      this.#replicaId = replicaId;
      this.#nextSeq = this.#findNextSeq(db);
      this.#pending = (db.prepare('SELECT count(*) AS n FROM outbox').get() as { n: number }).n;
      this.#quarantined = report;
      this.#records = new SqliteRecordStorage(db, (what, work, room) => this.#write(what, work, room));
      this.#retention = this.#makeRetention(db);
      return undefined;
    } catch (error) {
      this.#db = undefined;
      this.#statements = undefined;
      this.#budget = undefined;
      this.#retention = undefined;
      const reason = onDisk ? corruptionReason(error) : undefined;
      if (reason !== undefined) return { db, reason };
      db.close();
      throw error;
    }
  }

  // Cost, measured on a 1M-reading outbox (83 MB) on the reference machine: `quick_check` takes ~110 ms with the
  // file in the page cache and ~1.3 s from a cold cache, while the `count(*)` that open() always ran takes ~25 ms
  // warm and ~190 ms cold and leaves the pages cached, after which `quick_check` adds ~110 ms. So: count first (it
  // walks the whole outbox b-tree, which catches a broken page there at once), then `quick_check` (every page,
  // freelist, record formats) on any file up to `quickCheckMaxBytes` (256 MiB, ~3M readings, ~0.35 s warm), and on a
  // larger one only after an unclean shutdown, where damage is likeliest. A gateway starts rarely and a bad file
  // found at start costs far less than one found mid-run; past 256 MiB the seconds spent would grow with the file.
  #check(db: Database, bytes: number, walLeft: boolean): void {
    const version = db.pragma('user_version', { simple: true }) as number;
    if (version >= 1 && version <= MIGRATIONS.length) db.prepare('SELECT count(*) FROM outbox').get();
    if (bytes > this.#options.quickCheckMaxBytes && !walLeft) return;
    const problems = db.pragma(`quick_check(${REASON_LINES})`, { simple: false }) as { quick_check: string }[];
    const lines = problems.map((row) => row.quick_check);
    if (lines.length === 1 && lines[0] === 'ok') return;
    throw new CorruptDatabaseError(`quick_check failed: ${lines.join('; ').replace(/\s+/g, ' ')}`);
  }

  // A quarantine made by an earlier start stays reported while its file is where it was put; then it is forgotten.
  #rememberedQuarantine(db: Database, statements: Statements): QuarantineReport | undefined {
    const json = statements.getMeta.get('quarantine') as string | undefined;
    if (json === undefined) return undefined;
    try {
      const saved = JSON.parse(json) as { path: string; reason: string; at: string };
      if (existsSync(saved.path)) return { path: saved.path, reason: saved.reason, at: new Date(saved.at) };
    } catch {
      // An unreadable note is not worth failing a start over.
    }
    db.prepare("DELETE FROM meta WHERE key = 'quarantine'").run();
    return undefined;
  }

  // The budget counts pages, free ones included, since the file keeps its size. Rows an acknowledgement deletes
  // leave their pages on the freelist, and later appends reuse them before asking for new ones, so room comes back
  // within the budget at no cost. auto_vacuum=FULL would shrink the file at every commit, moving pages (more writes
  // on each acknowledgement, and a move needs room of its own), for a file that grows back; new files are made with
  // auto_vacuum=INCREMENTAL instead, which vacuums nothing by itself: retention gives free pages back, a bounded
  // step at a time, only once the queue has drained (see SqliteRetention.compact).
  // A delete rarely needs a new page (a b-tree rebalance can), and sealing a batch needs room for its body: hence a
  // reserve only the sync loop's writes may use, and sealNext() sealing fewer rows when even that is short.
  #makeBudget(db: Database): Budget | undefined {
    const maxSizeBytes = this.#maxSizeBytes;
    if (maxSizeBytes === undefined) return undefined;
    const pageSize = db.pragma('page_size', { simple: true }) as number;
    const maxPages = Math.floor(maxSizeBytes / pageSize);
    const intakePages = maxPages - Math.max(16, Math.ceil(maxPages / 32));
    return {
      pageSize,
      intakePages,
      maxPages,
      room: undefined,
      cap: {
        intake: db.prepare(`PRAGMA max_page_count = ${intakePages}`),
        upkeep: db.prepare(`PRAGMA max_page_count = ${maxPages}`),
      },
    };
  }

  close(): void {
    try {
      this.#closeDatabase();
    } finally {
      this.#lock?.release();
      this.#lock = undefined;
    }
  }

  // Closes the connection and keeps the lock: a re-encryption reopens the file, and no other process may take it
  // meanwhile.
  #closeDatabase(): void {
    if (!this.#db) return;
    try {
      this.#db.close();
    } finally {
      this.#db = undefined;
      this.#statements = undefined;
      this.#budget = undefined;
      this.#records = undefined;
      this.#retention = undefined;
    }
  }

  /**
   * Retention: prune steps for local history, the intake policy (`drop-oldest`, `downsample-oldest`), and the
   * bounded cleanup steps the gateway runs. Valid after `open()`.
   */
  get retention(): RetentionStorage {
    if (!this.#retention) throw new StorageError('The local database is not open');
    return this.#retention;
  }

  // Dead letters (readings and record edits the cloud refused) are the history every database has; other features
  // register theirs (alerts, aggregates, raw history for local queries).
  #makeRetention(db: Database): SqliteRetention {
    const retention = new SqliteRetention(db, {
      write: (what, work, room) => this.#write(what, work, room),
      pendingCount: () => this.#pending,
      removed: (rows) => {
        this.#pending -= rows;
      },
      queueChanged: () => {
        this.#retentionChanges++;
      },
      capacity: () => this.capacity(),
      busyTimeoutMs: () => this.#busyTimeoutMs,
      afterVacuum: () => {
        if (this.#budget) this.#budget.room = undefined;
      },
      pruneIngestKeys: (now, limit) => this.#s.ledger.prune(limit, now, this.#ledgerCap),
    });
    retention.register(tablePruneStep('dead_letters', 'created_at'));
    retention.register(tablePruneStep('record_dead_letters', 'created_at'));
    // Local history of the processors (all epoch ms): alerts by when they were stored, aggregates by their window.
    retention.register(tablePruneStep('alerts', 'created_at'));
    retention.register(tablePruneStep('aggregates', 'window_start'));
    retention.register(tablePruneStep('history', 'ts'));
    return retention;
  }

  /** Changes how long a statement waits for a lock held by another connection, in ms. */
  setBusyTimeout(ms: number): void {
    checkBusyTimeout(ms);
    this.#busyTimeoutMs = ms;
    this.#db?.pragma(`busy_timeout = ${ms}`);
  }

  /**
   * Changes the size budget (`maxSizeBytes`), or removes it (undefined). A budget below the file's current size
   * takes effect as pages are freed and given back (cleanup does both under `drop-oldest` and
   * `downsample-oldest`); until then the file keeps its size and new readings reuse only its free pages.
   */
  setMaxSizeBytes(maxSizeBytes: number | undefined): void {
    checkMaxSize(maxSizeBytes);
    this.#maxSizeBytes = maxSizeBytes;
    const db = this.#db;
    if (!db) return;
    this.#budget = this.#makeBudget(db);
    if (!this.#budget) db.pragma(`max_page_count = ${NO_PAGE_LIMIT}`);
  }

  /** Shared records and their outbox, in the same database. Valid after `open()`. */
  get records(): RecordStorage {
    if (!this.#records) throw new StorageError('The local database is not open');
    return this.#records;
  }

  #ensureReplicaId(db: Database): string {
    const get = db.prepare('SELECT value FROM meta WHERE key = ?').pluck();
    let id = get.get('replica_id') as unknown;
    if (id === undefined) {
      id = randomUUID();
      db.prepare('INSERT INTO meta (key, value) VALUES (?, ?)').run('replica_id', id);
      db.prepare('INSERT INTO meta (key, value) VALUES (?, ?)').run('next_batch_no', '1');
    }
    // SQLite checks pages, not the bytes in a row: a scribble inside these values passes every check it has, and a
    // changed replica id or batch number would send under another identity. Their shape is checked instead.
    if (typeof id !== 'string' || !UUID.test(id)) {
      throw new CorruptDatabaseError(`the replica id ${JSON.stringify(id)} in meta is not a UUID`);
    }
    for (const key of ['next_batch_no', 'acked_through']) {
      const value = get.get(key) as unknown;
      if (value !== undefined && !(typeof value === 'string' && /^\d{1,15}$/.test(value))) {
        throw new CorruptDatabaseError(`${key} ${JSON.stringify(value)} in meta is not a whole number`);
      }
    }
    return id;
  }

  // A sequence number is never reused, even when the outbox is empty: acknowledged and dead-lettered seqs are
  // remembered through `acked_through` and the dead letters.
  #findNextSeq(db: Database): number {
    const row = db
      .prepare(
        `SELECT max(
           coalesce((SELECT max(seq) FROM outbox), 0),
           coalesce((SELECT max(seq) FROM dead_letters), 0),
           coalesce((SELECT CAST(value AS INTEGER) FROM meta WHERE key = 'acked_through'), 0)
         ) AS top`,
      )
      .get() as { top: number };
    return row.top + 1;
  }

  get #s() {
    if (!this.#statements) throw new StorageError('The local database is not open');
    return this.#statements;
  }

  get #database(): Database {
    if (!this.#db) throw new StorageError('The local database is not open');
    return this.#db;
  }

  // One transaction. `room` says how much of a size budget it may use: intake leaves the sync loop's reserve alone.
  #write<T>(what: string, work: () => T, room: Room = 'upkeep'): T {
    const budget = this.#budget;
    if (budget && budget.room !== room) {
      // SQLite never sets the cap below the current page count, so switching down is always safe.
      budget.cap[room].get();
      budget.room = room;
    }
    try {
      return this.#s.transaction.immediate(work) as T;
    } catch (error) {
      if (error instanceof StorageError) throw error;
      const sqliteCode = sqliteCodeOf(error);
      if (isFull(error)) {
        throw new StorageError(`The local database is full (${this.#fullness(room)}): the ${what} was not stored`, {
          cause: error,
          sqliteCode,
        });
      }
      throw new StorageError(`Local database write failed (${what}): ${(error as Error).message}`, {
        cause: error,
        sqliteCode,
      });
    }
  }

  // A read, its failure a StorageError as a write's is (the ingest endpoint answers it as a storage failure).
  #read<T>(what: string, work: () => T): T {
    try {
      return work();
    } catch (error) {
      if (error instanceof StorageError) throw error;
      throw new StorageError(`Local database read failed (${what}): ${(error as Error).message}`, {
        cause: error,
        sqliteCode: sqliteCodeOf(error),
      });
    }
  }

  // Whether a SQLITE_FULL came from the size budget or from the disk. The page count cannot tell (the failed
  // transaction was rolled back, and it may have needed many pages at once); the room left on the disk can.
  #fullness(room: Room): string {
    const budget = this.#budget;
    const { path } = this.#options;
    if (!budget) return 'the disk has no room left';
    if (path !== ':memory:') {
      try {
        const disk = statfsSync(dirname(path));
        if (disk.bavail * disk.bsize < DISK_NEARLY_FULL_BYTES) return 'the disk has no room left';
      } catch {
        // No statfs here: the budget is the likelier cause.
      }
    }
    const limit = budget.maxPages * budget.pageSize;
    return `it reached its size limit of ${limit} bytes${room === 'intake' ? ', less the part kept for syncing' : ''}`;
  }

  #insertDead(dead: DeadLetterInsert, now: number): void {
    this.#s.insertDead.run(
      dead.seq,
      KIND_CODES[dead.kind],
      dead.sensorId,
      dead.ts,
      dead.value,
      dead.unit,
      dead.tags,
      dead.payload,
      dead.reason,
      dead.source,
      now,
    );
  }

  /**
   * Appends in one transaction. Under a `drop-oldest` or `downsample-oldest` retention policy it first makes room,
   * in the same transaction, for rows that would pass `maxRows` (or throws `QueueFullError` when rows sealed into
   * batches leave too little), and when the size budget refuses the write it frees room in a transaction of its own
   * and tries again. `ingestKeys` go into the same transaction, in the `ingest_ledger` table.
   */
  append(
    rows: readonly OutboxInsert[],
    deadLetters: readonly DeadLetterInsert[] = [],
    ingestKeys?: IngestKeyWrite,
  ): number {
    const first = this.#nextSeq;
    if (ingestKeys) this.#noteLedgerBounds(ingestKeys);
    this.#admit(rows.length, () => {
      this.#insertRows(rows, first);
      if (deadLetters.length > 0) {
        const now = Date.now();
        for (const dead of deadLetters) this.#insertDead(dead, now);
      }
      if (ingestKeys) this.#s.ledger.write(ingestKeys, this.#ledgerCap);
      return rows.length;
    });
    return first;
  }

  // Inserts `rows` at seqs from `first`, 32 to a statement (one statement per row costs about a fifth more), the
  // rest one by one. Inside the caller's transaction.
  #insertRows(rows: readonly OutboxInsert[], first: number): void {
    const { insert, insertMany } = this.#s;
    const args = this.#insertArgs;
    try {
      let i = 0;
      for (; i + ROWS_PER_INSERT <= rows.length; i += ROWS_PER_INSERT) {
        for (let j = 0; j < ROWS_PER_INSERT; j++) {
          const row = rows[i + j] as OutboxInsert;
          const at = 8 * j;
          args[at] = first + i + j;
          args[at + 1] = KIND_CODES[row.kind];
          args[at + 2] = row.sensorId;
          args[at + 3] = row.ts;
          args[at + 4] = row.value;
          args[at + 5] = row.unit;
          args[at + 6] = row.tags;
          args[at + 7] = row.payload;
        }
        insertMany.run(args);
      }
      for (; i < rows.length; i++) {
        const row = rows[i] as OutboxInsert;
        insert.run(first + i, KIND_CODES[row.kind], row.sensorId, row.ts, row.value, row.unit, row.tags, row.payload);
      }
    } finally {
      args.fill(null); // lets the group's strings go now rather than at the next insert
    }
  }

  intake(work: IntakeWork): IntakeResult {
    const first = this.#nextSeq;
    let seq = first;
    const { insert, tables } = this.#s;
    const queue = (row: OutboxInsert) => {
      insert.run(seq++, KIND_CODES[row.kind], row.sensorId, row.ts, row.value, row.unit, row.tags, row.payload);
    };
    // An alert may be counted into a stored one rather than queued: room is planned for every alert, so that at
    // worst a few more old rows go than were needed.
    let raised: StoredAlert[] = [];
    if (work.ingestKeys) this.#noteLedgerBounds(work.ingestKeys);
    this.#admit(work.rows.length + work.alerts.length, () => {
      this.#insertRows(work.rows, first);
      seq = first + work.rows.length;
      const now = Date.now();
      for (const dead of work.deadLetters) this.#insertDead(dead, now);
      raised = tables.storeAlerts(work.alerts, work.dedupWindowMs, work.maxAlerts, queue);
      tables.storeAggregates(work.aggregates, work.maxAggregates);
      tables.storeHistory(work.rows, work.maxHistory);
      tables.writeState(work.state);
      if (work.ingestKeys) this.#s.ledger.write(work.ingestKeys, this.#ledgerCap);
      return seq - first;
    });
    return { firstSeq: first, raised };
  }

  // The intake transaction of append() and intake(): `work` queues rows from `#nextSeq` on (and whatever else it
  // stores) and returns how many it queued, at most `incoming`. Under a `drop-oldest` or `downsample-oldest` policy
  // room is made first, in the same transaction, for rows that would pass `maxRows` (or `QueueFullError` is thrown
  // when rows sealed into batches leave too little); when the size budget refuses the write, room is freed in a
  // transaction of its own and `work` runs again: idempotency keys expired or past the ledger's bound first, so that
  // no reading goes to make room for them, then readings by the policy. Counts move only after the commit: a failed
  // one assigns nothing.
  #admit(incoming: number, work: () => number): void {
    const retention = this.#retention;
    let ledgerPruned = false;
    for (let attempt = 0; ; attempt++) {
      const room = retention?.planRoom(incoming) ?? 0;
      let queued: number;
      try {
        queued = this.#write(
          'append',
          () => {
            retention?.makeRoom(room);
            return work();
          },
          'intake',
        );
      } catch (error) {
        retention?.discardStaged();
        if (!retention || attempt >= MAX_FREE_ATTEMPTS || (error as StorageError).sqliteCode !== 'SQLITE_FULL') {
          throw error;
        }
        if (!ledgerPruned) {
          if (this.#freeLedger(attempt)) continue;
          ledgerPruned = true; // nothing more to prune: readings next, by the policy
        }
        let freed = false;
        try {
          freed = retention.freeForIntake(attempt, incoming);
        } catch {
          // Freeing needs room too (a full disk): the refusal of the write is what to report.
        }
        if (!freed) throw error;
        continue;
      }
      this.#nextSeq += queued;
      this.#pending += queued;
      retention?.commitStaged();
      return;
    }
  }

  /** Most idempotency keys the ledger keeps under the size budget: a tenth of it (see {@link ledgerKeyCap}). */
  get #ledgerCap(): number {
    return ledgerKeyCap(this.#maxSizeBytes);
  }

  #noteLedgerBounds(write: IngestKeyWrite): void {
    this.#ledgerBounds = { now: write.now, maxEntries: write.maxEntries };
  }

  // An append the size budget refused: removes idempotency keys expired or past the ledger's bound (by the last
  // write of keys, whose time is the ledger's own), among the oldest, in a transaction of its own (deletes only, in
  // the sync loop's reserve if need be). Says whether any went, so that the append is worth trying again.
  #freeLedger(attempt: number): boolean {
    const now = this.#ledgerBounds?.now ?? Number.NEGATIVE_INFINITY;
    const bound = Math.min(this.#ledgerBounds?.maxEntries ?? Number.POSITIVE_INFINITY, this.#ledgerCap);
    if (now === Number.NEGATIVE_INFINITY && bound === Number.POSITIVE_INFINITY) return false;
    const limit = LEDGER_FREE_ROWS * 2 ** Math.min(attempt, 8);
    try {
      return this.#write('prune idempotency keys', () => this.#s.ledger.prune(limit, now, bound)) > 0;
    } catch {
      return false; // no room even to delete (a full disk): the refusal of the append is what to report
    }
  }

  alerts(query: StoredAlertQuery): StoredAlert[] {
    return this.#s.tables.alerts(this.#database, query);
  }

  /** The key's entry unless it expired by `now`; throws `StorageError` when the database fails. */
  lookupIngestKey(idempotencyKey: string, now: number): IngestKeyEntry | undefined {
    return this.#read('idempotency key lookup', () => this.#s.ledger.lookup(idempotencyKey, now));
  }

  processorState(processor: string): Map<string, string> {
    return this.#s.tables.processorState(processor);
  }

  aggregates(range: SeriesRange): AggregateInsert[] {
    return this.#s.tables.aggregates(range);
  }

  history(range: SeriesRange): HistoryRow[] {
    return this.#s.tables.history(range);
  }

  pendingCount(): number {
    return this.#pending;
  }

  oldestBatch(): SealedBatch | undefined {
    const raw = this.#s.oldestBatch.get() as RawBatch | undefined;
    return raw && toBatch(raw);
  }

  sealNext(limit: number, encode: (batchNo: number, rows: readonly OutboxRow[]) => SealInput): SealedBatch | undefined {
    // A database at its size limit may lack room for a big batch's body: seal fewer rows rather than none, so the
    // queue keeps draining (the sync loop's reserve always holds a small batch).
    for (let take = limit; ; take = Math.ceil(take / 2)) {
      try {
        return this.#seal(take, encode);
      } catch (error) {
        if (take <= 1 || !isFull((error as Error).cause)) throw error;
      }
    }
  }

  #seal(limit: number, encode: (batchNo: number, rows: readonly OutboxRow[]) => SealInput): SealedBatch | undefined {
    return this.#write('seal', () => {
      const { rows, lane } = this.#unsealedRows(limit);
      if (rows.length === 0) return undefined;
      const batchNo = this.#nextBatchNo();
      return this.#insertBatch(batchNo, encode(batchNo, rows), lane);
    });
  }

  // The rows the next batch takes: alerts first, since they jump a backlog of telemetry, however long.
  #unsealedRows(limit: number): { rows: OutboxRow[]; lane: number } {
    const alerts = this.#s.unsealedAlerts.all(limit) as RawColumns[];
    if (alerts.length > 0) return { rows: alerts.map(fromColumns), lane: ALERT_LANE };
    return { rows: (this.#s.unsealed.all(limit) as RawColumns[]).map(fromColumns), lane: BULK_LANE };
  }

  #nextBatchNo(): number {
    return Number(this.#s.getMeta.get('next_batch_no') ?? '1');
  }

  // Inside a seal's transaction.
  #insertBatch(batchNo: number, input: SealInput, lane: number): SealedBatch {
    this.#s.setMeta.run('next_batch_no', String(batchNo + 1));
    this.#s.insertBatch.run(
      batchNo,
      input.firstSeq,
      input.lastSeq,
      input.count,
      input.body,
      input.contentType,
      input.contentEncoding,
      input.hash,
      Date.now(),
      lane,
    );
    return { ...input, batchNo, attempts: 0 };
  }

  /**
   * Phase one of a two-phase seal, in one read transaction so that the rows and the batch number are of the same
   * moment. The lane is the one {@link SqliteStorage.sealNext} would take: queued alerts first.
   */
  readUnsealed(limit: number): UnsealedRead | undefined {
    return this.#s.transaction.deferred(() => {
      const { rows } = this.#unsealedRows(limit);
      if (rows.length === 0) return undefined;
      const read = { batchNo: this.#nextBatchNo(), rows };
      this.#readsRetention.set(read, this.#retentionChanges);
      return read;
    }) as UnsealedRead | undefined;
  }

  // Sequence numbers are never reused by a new reading, so the same first and last seq with the same count, at the
  // head of the lane's unsealed rows, under the same next batch number, are the same rows, unless retention
  // replaced or dropped some in between (downsample-oldest keeps a replaced reading's seq for its aggregate): any
  // change retention committed to the queue since the read refuses it too.
  sealRead(read: UnsealedRead, input: SealInput): SealedBatch | undefined {
    const first = read.rows[0];
    const last = read.rows[read.rows.length - 1];
    if (
      !first ||
      !last ||
      input.firstSeq !== first.seq ||
      input.lastSeq !== last.seq ||
      input.count !== read.rows.length
    ) {
      throw new RangeError('sealRead() was given the encoding of other rows than the ones read');
    }
    const changes = this.#readsRetention.get(read);
    if (changes === undefined) throw new RangeError('sealRead() was given a read this storage did not make');
    if (changes !== this.#retentionChanges) return undefined;
    const alert = first.kind === 'alert';
    return this.#write('seal', () => {
      if (this.#nextBatchNo() !== read.batchNo) return undefined;
      const head = alert ? this.#s.firstUnsealedAlert.get() : this.#s.firstUnsealed.get();
      if (head !== first.seq) return undefined;
      if (this.#s.countRange.get(first.seq, last.seq, alert ? 1 : 0) !== read.rows.length) return undefined;
      return this.#insertBatch(read.batchNo, input, alert ? ALERT_LANE : BULK_LANE);
    });
  }

  recordAttempt(batchNo: number): void {
    this.#write('record attempt', () => this.#s.attempt.run(batchNo));
  }

  acknowledge(batchNo: number): number {
    const removed = this.#write('acknowledge', () => {
      const batch = this.#s.batch.get(batchNo) as RawBatch | undefined;
      if (!batch) return 0;
      const { changes } = this.#s.deleteRange.run(batch.first_seq, batch.last_seq, batch.lane === ALERT_LANE ? 1 : 0);
      this.#s.deleteBatch.run(batchNo);
      const acked = Number(this.#s.getMeta.get('acked_through') ?? '0');
      if (batch.last_seq > acked) this.#s.setMeta.run('acked_through', String(batch.last_seq));
      return changes;
    });
    this.#pending -= removed;
    return removed;
  }

  unseal(batchNo: number, deadLetters: ReadonlyMap<number, string>, source: string): number {
    const moved = this.#write('unseal', () => {
      const batch = this.#s.batch.get(batchNo) as RawBatch | undefined;
      if (!batch) return 0;
      let count = 0;
      if (deadLetters.size > 0) {
        const now = Date.now();
        const lane = batch.lane === ALERT_LANE ? 1 : 0;
        for (const raw of this.#s.rowsInRange.all(batch.first_seq, batch.last_seq, lane) as RawRow[]) {
          const reason = deadLetters.get(raw.seq);
          if (reason === undefined) continue;
          this.#insertDead({ ...toRow(raw), reason, source }, now);
          this.#s.deleteRow.run(raw.seq);
          count++;
        }
      }
      this.#s.deleteBatch.run(batchNo);
      return count;
    });
    this.#pending -= moved;
    return moved;
  }

  deadLetters(limit = 100): DeadLetter[] {
    return (
      this.#s.deadLetters.all(limit) as (RawRow & { id: number; reason: string; source: string; created_at: number })[]
    ).map((raw) => ({ ...toRow(raw), id: raw.id, reason: raw.reason, source: raw.source, createdAt: raw.created_at }));
  }

  deadLetterCount(): number {
    return this.#s.deadLetterCount.get() as number;
  }

  sizeBytes(): number {
    const { path } = this.#options;
    if (path === ':memory:') {
      const db = this.#database;
      return (
        (db.pragma('page_count', { simple: true }) as number) * (db.pragma('page_size', { simple: true }) as number)
      );
    }
    let total = 0;
    for (const file of [path, `${path}-wal`]) {
      try {
        total += statSync(file).size;
      } catch {
        // The WAL does not exist between checkpoints on some platforms.
      }
    }
    return total;
  }

  capacity(): StorageCapacity | undefined {
    const budget = this.#budget;
    if (!budget) return undefined;
    const db = this.#database;
    const pages =
      (db.pragma('page_count', { simple: true }) as number) - (db.pragma('freelist_count', { simple: true }) as number);
    return { usedBytes: pages * budget.pageSize, limitBytes: budget.intakePages * budget.pageSize };
  }

  getMeta(key: string): string | undefined {
    return this.#s.getMeta.get(key) as string | undefined;
  }

  setMeta(key: string, value: string): void {
    this.#write('set meta', () => this.#s.setMeta.run(key, value));
  }
}

function checkMaxSize(maxSizeBytes: number | undefined): void {
  if (maxSizeBytes !== undefined && !(Number.isSafeInteger(maxSizeBytes) && maxSizeBytes >= MIN_MAX_SIZE_BYTES)) {
    throw new ConfigError([
      `Expected the "maxSizeBytes" option to be an integer of at least ${MIN_MAX_SIZE_BYTES} (1 MiB), got ${String(maxSizeBytes)}`,
    ]);
  }
}

function checkBusyTimeout(ms: number | undefined): void {
  if (ms !== undefined && !(Number.isSafeInteger(ms) && ms >= 0)) {
    throw new ConfigError([`Expected the "busyTimeoutMs" option to be an integer of ms, 0 or more, got ${String(ms)}`]);
  }
}
