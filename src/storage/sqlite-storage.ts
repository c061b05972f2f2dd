import { randomUUID } from 'node:crypto';
import { mkdirSync, statSync } from 'node:fs';
import { dirname } from 'node:path';
import BetterSqlite3, { type Database } from 'better-sqlite3';
import { StorageError } from '../errors.js';
import { migrate } from './migrations.js';
import type {
  DeadLetter,
  DeadLetterInsert,
  OutboxInsert,
  OutboxKind,
  OutboxRow,
  SealedBatch,
  SealInput,
  Storage,
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
  /** How long a write waits for a lock held by another connection, in ms. @default 5000 */
  busyTimeoutMs?: number;
}

const KIND_CODES: Record<OutboxKind, number> = { reading: 0, processed: 1 };
const KINDS: readonly OutboxKind[] = ['reading', 'processed'];

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

// Prepared once at open: preparing a statement costs more than running the insert itself.
function prepareStatements(db: Database) {
  return {
    insert: db.prepare(
      'INSERT INTO outbox (seq, kind, sensor_id, ts, value, unit, tags, payload) VALUES (?, ?, ?, ?, ?, ?, ?, ?)',
    ),
    insertDead: db.prepare(
      `INSERT INTO dead_letters (seq, kind, sensor_id, ts, value, unit, tags, payload, reason, source, created_at)
       VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
    ),
    oldestBatch: db.prepare('SELECT * FROM batches ORDER BY batch_no LIMIT 1'),
    batch: db.prepare('SELECT * FROM batches WHERE batch_no = ?'),
    unsealed: db.prepare(
      'SELECT * FROM outbox WHERE seq > coalesce((SELECT max(last_seq) FROM batches), 0) ORDER BY seq LIMIT ?',
    ),
    insertBatch: db.prepare(
      `INSERT INTO batches (batch_no, first_seq, last_seq, count, body, content_type, content_encoding, hash, created_at)
       VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)`,
    ),
    attempt: db.prepare('UPDATE batches SET attempts = attempts + 1 WHERE batch_no = ?'),
    deleteRange: db.prepare('DELETE FROM outbox WHERE seq BETWEEN ? AND ?'),
    deleteBatch: db.prepare('DELETE FROM batches WHERE batch_no = ?'),
    rowsInRange: db.prepare('SELECT * FROM outbox WHERE seq BETWEEN ? AND ?'),
    deleteRow: db.prepare('DELETE FROM outbox WHERE seq = ?'),
    getMeta: db.prepare('SELECT value FROM meta WHERE key = ?').pluck(),
    setMeta: db.prepare(
      'INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value',
    ),
    deadLetters: db.prepare('SELECT * FROM dead_letters ORDER BY id DESC LIMIT ?'),
    deadLetterCount: db.prepare('SELECT count(*) FROM dead_letters').pluck(),
  };
}

type Statements = ReturnType<typeof prepareStatements>;

/**
 * The default {@link Storage}: one SQLite file in WAL mode, written through prepared statements made once at
 * open. Every method is one transaction.
 */
export class SqliteStorage implements Storage {
  readonly #options: Required<SqliteStorageOptions>;
  #db: Database | undefined;
  #replicaId = '';
  #nextSeq = 1;
  #pending = 0;
  #statements: Statements | undefined;

  constructor(options: SqliteStorageOptions) {
    this.#options = { synchronous: 'full', busyTimeoutMs: 5000, ...options };
  }

  get path(): string {
    return this.#options.path;
  }

  get replicaId(): string {
    return this.#replicaId;
  }

  open(): void {
    if (this.#db) return;
    const { path, synchronous, busyTimeoutMs } = this.#options;
    let db: Database | undefined;
    try {
      if (path !== ':memory:') mkdirSync(dirname(path), { recursive: true });
      db = new BetterSqlite3(path, { timeout: busyTimeoutMs });
      db.pragma('journal_mode = WAL');
      db.pragma(`synchronous = ${synchronous.toUpperCase()}`);
      migrate(db);
      this.#db = db;
      this.#statements = prepareStatements(db);
      this.#replicaId = this.#ensureReplicaId(db);
      this.#nextSeq = this.#findNextSeq(db);
      this.#pending = (db.prepare('SELECT count(*) AS n FROM outbox').get() as { n: number }).n;
    } catch (error) {
      db?.close();
      this.#db = undefined;
      throw new StorageError(`Cannot open the local database at ${path}: ${(error as Error).message}`, {
        cause: error,
      });
    }
  }

  close(): void {
    if (!this.#db) return;
    this.#db.close();
    this.#db = undefined;
    this.#statements = undefined;
  }

  #ensureReplicaId(db: Database): string {
    const get = db.prepare('SELECT value FROM meta WHERE key = ?').pluck();
    let id = get.get('replica_id') as string | undefined;
    if (id === undefined) {
      id = randomUUID();
      db.prepare('INSERT INTO meta (key, value) VALUES (?, ?)').run('replica_id', id);
      db.prepare('INSERT INTO meta (key, value) VALUES (?, ?)').run('next_batch_no', '1');
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

  #write<T>(what: string, work: () => T): T {
    try {
      return this.#database.transaction(work).immediate();
    } catch (error) {
      if (error instanceof StorageError) throw error;
      throw new StorageError(`Local database write failed (${what}): ${(error as Error).message}`, { cause: error });
    }
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

  append(rows: readonly OutboxInsert[], deadLetters: readonly DeadLetterInsert[] = []): number {
    const first = this.#nextSeq;
    const { insert } = this.#s;
    this.#write('append', () => {
      let seq = first;
      for (const row of rows) {
        insert.run(seq++, KIND_CODES[row.kind], row.sensorId, row.ts, row.value, row.unit, row.tags, row.payload);
      }
      const now = Date.now();
      for (const dead of deadLetters) this.#insertDead(dead, now);
    });
    // Only after the commit: a failed transaction assigns nothing.
    this.#nextSeq += rows.length;
    this.#pending += rows.length;
    return first;
  }

  pendingCount(): number {
    return this.#pending;
  }

  oldestBatch(): SealedBatch | undefined {
    const raw = this.#s.oldestBatch.get() as RawBatch | undefined;
    return raw && toBatch(raw);
  }

  sealNext(limit: number, encode: (batchNo: number, rows: readonly OutboxRow[]) => SealInput): SealedBatch | undefined {
    return this.#write('seal', () => {
      const rows = (this.#s.unsealed.all(limit) as RawRow[]).map(toRow);
      if (rows.length === 0) return undefined;
      const batchNo = Number(this.#s.getMeta.get('next_batch_no') ?? '1');
      const input = encode(batchNo, rows);
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
      );
      return { ...input, batchNo, attempts: 0 };
    });
  }

  recordAttempt(batchNo: number): void {
    this.#write('record attempt', () => this.#s.attempt.run(batchNo));
  }

  acknowledge(batchNo: number): number {
    const removed = this.#write('acknowledge', () => {
      const batch = this.#s.batch.get(batchNo) as RawBatch | undefined;
      if (!batch) return 0;
      const { changes } = this.#s.deleteRange.run(batch.first_seq, batch.last_seq);
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
        for (const raw of this.#s.rowsInRange.all(batch.first_seq, batch.last_seq) as RawRow[]) {
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

  getMeta(key: string): string | undefined {
    return this.#s.getMeta.get(key) as string | undefined;
  }

  setMeta(key: string, value: string): void {
    this.#write('set meta', () => this.#s.setMeta.run(key, value));
  }
}
