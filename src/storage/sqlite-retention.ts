import type { Database } from 'better-sqlite3-multiple-ciphers';
import { QueueFullError, StorageError } from '../errors.js';
import { type DownsampleGroup, downsampleGroups } from './downsample.js';
import type {
  CompactionStep,
  HistoryPruned,
  IntakePolicy,
  OutboxRemoval,
  PruneStep,
  RetentionBudget,
  RetentionListener,
  RetentionStorage,
  SpaceUse,
} from './retention.js';
import type { WriteTransaction } from './sqlite-records.js';
import type { OutboxRow, StorageCapacity } from './storage.js';

/** What {@link SqliteRetention} needs of the storage that owns the connection. @internal */
export interface RetentionHost {
  write: WriteTransaction;
  pendingCount(): number;
  /** Rows left the queue (committed). */
  removed(rows: number): void;
  /** Rows of the queue were removed or replaced (committed), however many it left: a read of it is stale. */
  queueChanged(): void;
  capacity(): StorageCapacity | undefined;
  busyTimeoutMs(): number;
  /** A VACUUM ran: the connection's size cap must be set again. */
  afterVacuum(): void;
  /**
   * Inside a transaction: removes idempotency keys expired by `now` or past the ledger's bound, among the oldest
   * `limit`; returns how many went.
   */
  pruneIngestKeys(now: number, limit: number): number;
}

/** A raw reading as the downsampling queries read it (arrays: a third cheaper than objects). */
type RawReading = [seq: number, sensorId: string, ts: number, value: number, unit: string | null, tags: string | null];

interface RangeStats {
  n: number;
  lo: number | null;
  hi: number | null;
}

// Outbox kind codes (see SqliteStorage): only raw readings are downsampled, into aggregates (the kind of the
// windowed aggregation's rows); queued alerts (their own lane) are never removed: an alert is not bulk telemetry.
const KIND_READING = 0;
const KIND_ALERT = 2;
const KIND_AGGREGATE = 3;
/** Most rows one downsampling read takes at a time. */
const SCAN_CHUNK = 5000;
/** Fewest rows one downsampling read takes: enough for several windows of several sensors. */
const MIN_SCAN = 1000;
/** An upper bound of timestamps, for the queries whose `ts < ?` is not wanted. */
const NO_CUTOFF = Number.MAX_SAFE_INTEGER;
/** Most raw rows one intake commit examines for downsampling before it drops instead. */
const INTAKE_SCAN_LIMIT = 4 * SCAN_CHUNK;
/** Largest number of rows one attempt to free room for an intake removes. */
const MAX_FREE_ROWS = 1 << 20;
const AUTO_VACUUM = ['none', 'full', 'incremental'] as const;

const toReading = ([seq, sensorId, ts, value, unit, tags]: RawReading): OutboxRow => ({
  seq,
  kind: 'reading',
  sensorId,
  ts,
  value,
  unit,
  tags,
  payload: null,
});

// The rows no policy may touch: those of sealed batches, and alerts. Each lane of batches seals its own rows in seq
// order, and an alert batch may be sealed ahead of older bulk rows: the bulk rows sealed are every one up to the
// bulk lane's highest sealed seq (as SqliteStorage's sealing decides), and alert rows are left out by kind.
function prepare(db: Database) {
  return {
    sealedThrough: db.prepare('SELECT coalesce(max(last_seq), 0) FROM batches WHERE lane = 0').pluck(),
    sealedCount: db.prepare('SELECT coalesce(sum(count), 0) FROM batches').pluck(),
    // Alerts queued and not in a sealed batch (the partial index of the alert lane holds only queued alerts).
    unsealedAlerts: db
      .prepare(
        `SELECT count(*) FROM outbox WHERE kind = ${KIND_ALERT}
         AND seq > coalesce((SELECT max(last_seq) FROM batches WHERE lane = 1), 0)`,
      )
      .pluck(),
    maxSeq: db.prepare('SELECT max(seq) FROM outbox').pluck(),
    nthAfter: db
      .prepare(`SELECT seq FROM outbox WHERE seq > ? AND kind <> ${KIND_ALERT} ORDER BY seq LIMIT 1 OFFSET ?`)
      .pluck(),
    rangeStats: db.prepare(
      `SELECT count(*) AS n, min(seq) AS lo, max(seq) AS hi FROM outbox WHERE seq > ? AND seq <= ? AND kind <> ${KIND_ALERT}`,
    ),
    deleteRange: db.prepare(`DELETE FROM outbox WHERE seq > ? AND seq <= ? AND kind <> ${KIND_ALERT}`),
    oldestRaw: db
      .prepare(
        `SELECT seq, sensor_id, ts, value, unit, tags FROM outbox WHERE seq > ? AND kind = ${KIND_READING}
         ORDER BY seq LIMIT ?`,
      )
      .raw(),
    rawBefore: db
      .prepare(
        `SELECT seq, sensor_id, ts, value, unit, tags FROM outbox
         WHERE seq > ? AND seq <= ? AND kind = ${KIND_READING} AND ts < ? ORDER BY seq`,
      )
      .raw(),
    // Readings replaced by aggregates go by runs: a range delete costs about what deleting one row does.
    deleteRun: db.prepare(`DELETE FROM outbox WHERE seq BETWEEN ? AND ? AND kind = ${KIND_READING} AND ts < ?`),
    expiredStats: db.prepare(
      `SELECT count(*) AS n, min(seq) AS lo, max(seq) AS hi FROM outbox
       WHERE seq > ? AND seq <= ? AND ts < ? AND kind <> ${KIND_ALERT}`,
    ),
    deleteExpired: db.prepare(`DELETE FROM outbox WHERE seq > ? AND seq <= ? AND ts < ? AND kind <> ${KIND_ALERT}`),
    insert: db.prepare(
      'INSERT INTO outbox (seq, kind, sensor_id, ts, value, unit, tags, payload) VALUES (?, ?, ?, ?, ?, ?, ?, ?)',
    ),
  };
}

/**
 * {@link RetentionStorage} on the gateway's SQLite database; made by `SqliteStorage` at open. What it removes inside
 * a transaction is staged, and reported (to the storage's pending count and to the listener) only once that
 * transaction commits. @internal
 */
export class SqliteRetention implements RetentionStorage {
  readonly #db: Database;
  readonly #host: RetentionHost;
  readonly #s: ReturnType<typeof prepare>;
  readonly #steps: PruneStep[] = [];
  #policy: IntakePolicy | undefined;
  #listener: RetentionListener | undefined;
  #staged: (OutboxRemoval | HistoryPruned)[] = [];

  constructor(db: Database, host: RetentionHost) {
    this.#db = db;
    this.#host = host;
    this.#s = prepare(db);
  }

  register(step: PruneStep): () => void {
    if (this.#steps.some((s) => s.name === step.name)) {
      throw new RangeError(`A prune step named "${step.name}" is registered already`);
    }
    this.#steps.push(step);
    return () => {
      const at = this.#steps.indexOf(step);
      if (at >= 0) this.#steps.splice(at, 1);
    };
  }

  get steps(): readonly string[] {
    return this.#steps.map((step) => step.name);
  }

  setPolicy(policy: IntakePolicy): void {
    this.#policy = { ...policy };
  }

  setListener(listener: RetentionListener | undefined): void {
    this.#listener = listener;
  }

  get #strategy() {
    return this.#policy?.strategy ?? 'reject-new';
  }

  protectedCount(): number {
    return (this.#s.sealedCount.get() as number) + (this.#s.unsealedAlerts.get() as number);
  }

  // ---- intake: called by SqliteStorage.append and SqliteStorage.intake ----

  /**
   * Rows to remove so that `incoming` more fit under `maxRows`; throws `QueueFullError` when even every row not yet
   * sealed (alerts excepted) would not make room. Read before the intake's transaction (nothing can run in between: all of it is
   * synchronous), so that a refusal is a `QueueFullError`, not a failed transaction.
   */
  planRoom(incoming: number): number {
    const policy = this.#policy;
    if (!policy || policy.strategy === 'reject-new') return 0;
    const pending = this.#host.pendingCount();
    const overflow = pending + incoming - policy.maxRows;
    if (overflow <= 0) return 0;
    if (overflow > pending - this.protectedCount()) throw new QueueFullError(policy.maxRows, incoming);
    return overflow;
  }

  /** Inside the intake's transaction: removes `rows` queued rows by the policy (staged until the commit). */
  makeRoom(rows: number): void {
    if (rows > 0) this.#remove(rows, 'maxRecords', INTAKE_SCAN_LIMIT);
  }

  /**
   * The intake's transaction failed with SQLITE_FULL: frees room by the policy in a transaction of its own (more at
   * each attempt) and says whether anything went, so that the intake is worth trying again.
   */
  freeForIntake(attempt: number, incoming: number): boolean {
    if (this.#strategy === 'reject-new') return false;
    const limit = Math.min(MAX_FREE_ROWS, Math.max(incoming, 64) * 2 ** Math.min(attempt, 14));
    return this.freeSpace(limit) > 0;
  }

  /** Reports what the committed transaction removed. */
  commitStaged(): void {
    const staged = this.#staged;
    this.#staged = [];
    let rows = 0;
    for (const item of staged) if ('reason' in item) rows += item.count - item.aggregates;
    if (rows > 0) this.#host.removed(rows);
    if (staged.some((item) => 'reason' in item)) this.#host.queueChanged();
    const listener = this.#listener;
    if (!listener) return;
    for (const item of staged) {
      if ('reason' in item) listener.removed(item);
      else listener.pruned(item);
    }
  }

  /** Forgets what a failed transaction would have removed. */
  discardStaged(): void {
    this.#staged = [];
  }

  // ---- cleanup: called by the gateway's retention manager, a chunk at a time ----

  pruneHistory(before: number | undefined, limit: number): number {
    return this.#transaction('prune history', () => this.#pruneSteps(before, limit, 'maxDays'));
  }

  pruneIngestKeys(now: number, limit: number): number {
    return this.#transaction('prune idempotency keys', () => this.#host.pruneIngestKeys(now, limit));
  }

  lastSeq(): number {
    return (this.#s.maxSeq.get() as number | null) ?? 0;
  }

  expire(before: number, fromSeq: number, limit: number, untilSeq = Number.POSITIVE_INFINITY): number | undefined {
    const strategy = this.#strategy;
    if (strategy === 'reject-new') return undefined;
    const start = Math.max(fromSeq, this.#s.sealedThrough.get() as number);
    const top = Math.min(this.lastSeq(), untilSeq);
    if (start >= top) return undefined;
    const end = start + limit;
    this.#transaction('expire', () => {
      if (strategy === 'drop-oldest') {
        const stats = this.#s.expiredStats.get(start, end, before) as RangeStats;
        if (stats.n === 0) return;
        this.#s.deleteExpired.run(start, end, before);
        this.#stage('retention', 'maxDays', stats.n, 0, stats.lo as number, stats.hi as number);
        return;
      }
      // Read a range further, so that a window cut by the range's end is aggregated whole.
      const rows = (this.#s.rawBefore.all(start, end + limit, before) as RawReading[]).map(toReading);
      const { groups } = downsampleGroups(rows, this.#windowMs);
      this.#replace(rows, groups, Number.POSITIVE_INFINITY, 'maxDays', before, end);
    });
    return end >= top ? undefined : end;
  }

  trim(limit: number): number {
    const policy = this.#policy;
    if (!policy || policy.strategy === 'reject-new') return 0;
    const excess = Math.min(limit, this.#host.pendingCount() - policy.maxRows);
    if (excess <= 0) return 0;
    return this.#transaction('trim', () => this.#remove(excess, 'maxRecords', INTAKE_SCAN_LIMIT));
  }

  overBudgetBytes(): number {
    const capacity = this.#host.capacity();
    return capacity ? Math.max(0, capacity.usedBytes - capacity.limitBytes) : 0;
  }

  freeSpace(limit: number): number {
    if (this.#strategy === 'reject-new') return 0;
    return this.#transaction('free space', () => {
      const pruned = this.#pruneSteps(undefined, limit, 'maxBytes');
      if (pruned > 0) return pruned;
      return this.#remove(limit, 'maxBytes', limit, true);
    });
  }

  space(): SpaceUse {
    const db = this.#db;
    return {
      pageSize: db.pragma('page_size', { simple: true }) as number,
      pageCount: db.pragma('page_count', { simple: true }) as number,
      freePages: db.pragma('freelist_count', { simple: true }) as number,
      autoVacuum: AUTO_VACUUM[db.pragma('auto_vacuum', { simple: true }) as number] ?? 'none',
    };
  }

  compact(maxPages: number, maxLivePages: number): CompactionStep {
    const before = this.space();
    if (before.freePages === 0) return { freedPages: 0, freePages: 0, converted: false };
    const db = this.#db;
    if (before.autoVacuum === 'incremental') {
      this.#host.write(
        'compact',
        () => db.pragma(`incremental_vacuum(${Math.max(1, Math.floor(maxPages))})`),
        'upkeep',
      );
      const freePages = db.pragma('freelist_count', { simple: true }) as number;
      // The file shrinks at the checkpoint that copies the vacuumed pages back: at the end, not at every step.
      if (freePages === 0) this.#checkpoint();
      return { freedPages: before.freePages - freePages, freePages, converted: false };
    }
    if (before.autoVacuum !== 'none' || before.pageCount - before.freePages > maxLivePages) {
      return { freedPages: 0, freePages: before.freePages, converted: false };
    }
    try {
      db.pragma('auto_vacuum = INCREMENTAL');
      db.exec('VACUUM');
    } catch (error) {
      throw new StorageError(`Local database write failed (vacuum): ${(error as Error).message}`, {
        cause: error,
        sqliteCode: (error as { code?: string }).code,
      });
    } finally {
      this.#host.afterVacuum();
    }
    this.#checkpoint();
    const after = this.space();
    return { freedPages: before.pageCount - after.pageCount, freePages: after.freePages, converted: true };
  }

  // A TRUNCATE checkpoint copies the WAL into the file (truncating the file to the database's size) and empties the
  // WAL. It waits for readers when it has a busy timeout; this one has none: with a reader in the way it does what
  // it can now, and the next one finishes the job.
  #checkpoint(): void {
    const db = this.#db;
    db.pragma('busy_timeout = 0');
    try {
      db.pragma('wal_checkpoint(TRUNCATE)');
    } finally {
      db.pragma(`busy_timeout = ${this.#host.busyTimeoutMs()}`);
    }
  }

  // ---- inside transactions ----

  #transaction<T>(what: string, work: () => T): T {
    let result: T;
    try {
      result = this.#host.write(what, work, 'upkeep');
    } catch (error) {
      this.discardStaged();
      throw error;
    }
    this.commitStaged();
    return result;
  }

  // At most `limit` rows in all, the steps in order: a transaction stays as short with ten steps as with one.
  #pruneSteps(before: number | undefined, limit: number, budget: HistoryPruned['budget']): number {
    let total = 0;
    for (const step of this.#steps) {
      if (total >= limit) break;
      const count = step.prune(this.#db, { before, limit: limit - total });
      if (count > 0) this.#staged.push({ step: step.name, count, budget });
      total += count;
    }
    return total;
  }

  // Removes about `rows` queued rows by the policy; returns how many left the queue. Downsampling reads at most
  // `scanLimit` raw rows; with `anyReduction`, any reduction will do (a size budget), else it goes on until `rows`
  // are gone; what downsampling could not remove is dropped.
  #remove(rows: number, budget: RetentionBudget, scanLimit: number, anyReduction = false): number {
    let removed = 0;
    if (this.#strategy === 'downsample-oldest') {
      removed = this.#downsampleOldest(anyReduction ? Number.POSITIVE_INFINITY : rows, scanLimit, budget);
      if (anyReduction && removed > 0) return removed;
    }
    if (removed < rows) removed += this.#dropOldest(rows - removed, budget);
    return removed;
  }

  #dropOldest(rows: number, budget: RetentionBudget): number {
    const sealed = this.#s.sealedThrough.get() as number;
    const last =
      (this.#s.nthAfter.get(sealed, rows - 1) as number | undefined) ?? (this.#s.maxSeq.get() as number | null);
    if (last === null || last <= sealed) return 0;
    const stats = this.#s.rangeStats.get(sealed, last) as RangeStats;
    if (stats.n === 0) return 0;
    this.#s.deleteRange.run(sealed, last);
    this.#stage('drop-oldest', budget, stats.n, 0, stats.lo as number, stats.hi as number);
    return stats.n;
  }

  get #windowMs(): number {
    return this.#policy?.windowMs ?? 300_000;
  }

  // Downsamples the oldest raw readings until `need` rows are gone, reading at most `scanLimit`. Each read takes
  // about twice what is needed, and only windows known to be complete (their sensor has a later reading in the
  // read) are aggregated; the next read starts at the first window left open, so that it is aggregated whole.
  #downsampleOldest(need: number, scanLimit: number, budget: RetentionBudget): number {
    let from = this.#s.sealedThrough.get() as number;
    let reduced = 0;
    for (let scanned = 0; reduced < need && scanned < scanLimit; ) {
      const wanted = Number.isFinite(need) ? Math.max(MIN_SCAN, 2 * (need - reduced)) : SCAN_CHUNK;
      const size = Math.min(SCAN_CHUNK, scanLimit - scanned, wanted);
      const rows = (this.#s.oldestRaw.all(from, size) as RawReading[]).map(toReading);
      if (rows.length === 0) break;
      scanned += rows.length;
      const whole = rows.length < size; // the rest of the queue: every window in it is as complete as it gets
      let { groups, openFrom } = downsampleGroups(rows, this.#windowMs, !whole);
      // A window wider than the read (a fast sensor, a long window): aggregate what is there, to make progress.
      if (groups.length === 0 && !whole) ({ groups, openFrom } = downsampleGroups(rows, this.#windowMs));
      reduced += this.#replace(rows, groups, need - reduced, budget, NO_CUTOFF);
      if (whole) break;
      const last = (rows[rows.length - 1] as OutboxRow).seq;
      from = openFrom !== undefined && openFrom - 1 > from ? openFrom - 1 : last;
    }
    return reduced;
  }

  // Replaces `groups` of `rows` (every raw reading with ts < `before` in their seq span, in seq order) whose first
  // seq is at most `untilSeq` by their aggregates, in the order of their first seq, until `need` rows are gone;
  // returns how many left the queue (readings replaced less aggregates made).
  #replace(
    rows: readonly OutboxRow[],
    groups: readonly DownsampleGroup[],
    need: number,
    budget: RetentionBudget,
    before: number,
    untilSeq = Number.POSITIVE_INFINITY,
  ): number {
    const chosen: DownsampleGroup[] = [];
    const replaced = new Set<number>();
    let reduced = 0;
    for (const group of groups) {
      if (reduced >= need || (group.seqs[0] as number) > untilSeq) break;
      chosen.push(group);
      for (const seq of group.seqs) replaced.add(seq);
      reduced += group.seqs.length - 1;
    }
    if (chosen.length === 0) return 0;
    let runFrom: number | undefined;
    let runTo = 0;
    let runLength = 0;
    const flush = () => {
      if (runFrom === undefined) return;
      const { changes } = this.#s.deleteRun.run(runFrom, runTo, before);
      // Guards the run logic: a range holding a reading not in `rows` would delete it. Rolls the transaction back.
      if (changes !== runLength) throw new Error(`downsampling deleted ${changes} rows of a run of ${runLength}`);
      runFrom = undefined;
      runLength = 0;
    };
    for (const row of rows) {
      if (replaced.has(row.seq)) {
        runFrom ??= row.seq;
        runTo = row.seq;
        runLength++;
      } else flush();
    }
    flush();
    let lo = Number.POSITIVE_INFINITY;
    let hi = Number.NEGATIVE_INFINITY;
    for (const { row, seqs } of chosen) {
      this.#s.insert.run(row.seq, KIND_AGGREGATE, row.sensorId, row.ts, row.value, row.unit, row.tags, row.payload);
      lo = Math.min(lo, seqs[0] as number);
      hi = Math.max(hi, seqs[seqs.length - 1] as number);
    }
    this.#stage('downsampled', budget, replaced.size, chosen.length, lo, hi);
    return reduced;
  }

  #stage(
    reason: OutboxRemoval['reason'],
    budget: RetentionBudget,
    count: number,
    aggregates: number,
    firstSeq: number,
    lastSeq: number,
  ): void {
    this.#staged.push({ reason, budget, count, aggregates, firstSeq, lastSeq });
  }
}
