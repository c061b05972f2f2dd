/**
 * The retention contract of the storage: what cleanup may remove, and how the storage reports what it removed.
 * The policy (when, how much) lives in the gateway's RetentionManager; the SQL lives in SqliteRetention.
 */

import type { Database, Statement } from 'better-sqlite3-multiple-ciphers';

/**
 * What happens to readings not yet sent when a budget (`maxRecords`, `maxBytes`, `maxDays`) is reached:
 * - `reject-new`: nothing queued is ever removed; new readings are refused (`QueueFullError` at `maxRecords`,
 *   `StorageError` `SQLITE_FULL` at `maxBytes`), and `maxDays` applies to local history only;
 * - `drop-oldest`: the oldest queued rows not yet sealed into a batch are deleted to make room (queued alerts are
 *   never removed: they are not bulk telemetry);
 * - `downsample-oldest`: the oldest raw readings are first replaced by per-sensor window aggregates, and only when
 *   nothing is left to downsample are the oldest rows dropped.
 */
export type CleanupStrategy = 'reject-new' | 'drop-oldest' | 'downsample-oldest';

/** Which budget made the storage remove rows. */
export type RetentionBudget = 'maxRecords' | 'maxBytes' | 'maxDays';

/** Queued rows removed before the cloud had them, reported after the commit that removed them. */
export interface OutboxRemoval {
  /**
   * `retention`: older than `maxDays` (drop-oldest); `drop-oldest`: made room under `maxRecords` or `maxBytes`;
   * `downsampled`: raw readings replaced by aggregates.
   */
  reason: 'retention' | 'drop-oldest' | 'downsampled';
  budget: RetentionBudget;
  /** Rows removed from the queue; for `downsampled`, the raw readings replaced. */
  count: number;
  /** For `downsampled`, the aggregate rows queued in their place; 0 otherwise. */
  aggregates: number;
  /** Smallest and largest seq removed. */
  firstSeq: number;
  lastSeq: number;
}

/** Rows of local history a prune step removed. */
export interface HistoryPruned {
  /** The step's name, e.g. `dead_letters`. */
  step: string;
  count: number;
  /** `maxDays`: older than the retention; `maxBytes`: the oldest, to make room for readings. */
  budget: 'maxDays' | 'maxBytes';
}

/** Bounds of one prune: at most `limit` rows, and only rows older than `before` (epoch ms) when it is given. */
export interface PruneLimits {
  before: number | undefined;
  limit: number;
}

/**
 * One kind of local history that retention may prune: data that is settled (sent, refused for good, kept for local
 * queries), never the queue. Steps run in the order they were registered, each inside a write transaction of
 * its own, a chunk at a time.
 *
 * @example
 * ```ts
 * storage.retention.register(tablePruneStep('alerts', 'created_at'));
 * ```
 */
export interface PruneStep {
  /** Names the data in events and counters, e.g. `dead_letters`. */
  readonly name: string;
  /**
   * Deletes up to `limit` of the oldest rows (only those older than `before` when it is given) and returns how
   * many it deleted; runs inside a write transaction. Returning fewer than `limit` means nothing more is due now.
   */
  prune(db: Database, limits: PruneLimits): number;
}

/** Identifiers of tables and columns: letters, digits and underscores. */
const IDENTIFIER = /^[A-Za-z_][A-Za-z0-9_]*$/;

/**
 * The common prune step: a rowid table with a time column (epoch ms, or seconds with `unit: 's'`), pruned oldest
 * rowid first. Rows are expected to be inserted in about time order; an index on the column keeps the scan short
 * on a large table. The step is named after the table unless told.
 */
export function tablePruneStep(
  table: string,
  column: string,
  options: { name?: string; unit?: 'ms' | 's' } = {},
): PruneStep {
  if (!IDENTIFIER.test(table) || !IDENTIFIER.test(column)) {
    throw new RangeError(`tablePruneStep: "${table}"."${column}" is not a plain table and column name`);
  }
  const scale = options.unit === 's' ? 1000 : 1;
  const statements = new WeakMap<Database, { before: Statement; any: Statement }>();
  return {
    name: options.name ?? table,
    prune(db, { before, limit }) {
      let prepared = statements.get(db);
      if (!prepared) {
        prepared = {
          before: db.prepare(
            `DELETE FROM ${table} WHERE rowid IN (SELECT rowid FROM ${table} WHERE ${column} < ? ORDER BY rowid LIMIT ?)`,
          ),
          any: db.prepare(`DELETE FROM ${table} WHERE rowid IN (SELECT rowid FROM ${table} ORDER BY rowid LIMIT ?)`),
        };
        statements.set(db, prepared);
      }
      return before === undefined
        ? prepared.any.run(limit).changes
        : prepared.before.run(Math.floor(before / scale), limit).changes;
    },
  };
}

/** The intake side of a retention policy: how many rows the queue may hold, and what makes room. */
export interface IntakePolicy {
  strategy: CleanupStrategy;
  /** Most rows queued (`maxRecords`). */
  maxRows: number;
  /** Window of `downsample-oldest`, ms. */
  windowMs: number;
}

/** Where the storage reports what retention removed. */
export interface RetentionListener {
  removed(removal: OutboxRemoval): void;
  pruned(pruned: HistoryPruned): void;
}

/** One step of compaction (giving free pages back to the file system). */
export interface CompactionStep {
  /** Pages given back by this step. */
  freedPages: number;
  /** Free pages left. */
  freePages: number;
  /** True when the file was converted to `auto_vacuum=INCREMENTAL` by a `VACUUM` in this step. */
  converted: boolean;
}

/** How the database file uses its pages. */
export interface SpaceUse {
  pageSize: number;
  pageCount: number;
  /** Pages on the freelist: part of the file, reused by later writes, given back by compaction. */
  freePages: number;
  autoVacuum: 'none' | 'full' | 'incremental';
}

/**
 * What a storage offers retention. Every method is synchronous and does a bounded amount of work (about `limit`
 * rows) in one transaction, so that the caller can yield between calls and ingest never waits long.
 */
export interface RetentionStorage {
  /** Adds a prune step; returns its remover. A step's name must be unique. */
  register(step: PruneStep): () => void;
  /** Names of the prune steps, in order. */
  readonly steps: readonly string[];
  /** The policy `append()` applies when new rows would pass `maxRows` or the size budget. */
  setPolicy(policy: IntakePolicy): void;
  setListener(listener: RetentionListener | undefined): void;
  /** Queued rows no policy may remove: those sealed into batches not yet acknowledged, and alerts. */
  protectedCount(): number;
  /** Prunes up to `limit` rows in all, step by step (older than `before` when given); returns the rows removed. */
  pruneHistory(before: number | undefined, limit: number): number;
  /**
   * Removes idempotency keys of the ingest endpoint that expired by `now` (the time their expiries were written in),
   * and any past the ledger's bound, among the oldest `limit`; returns how many went (fewer than `limit`: nothing
   * more is due now). Optional: a storage without an ingest ledger has none.
   */
  pruneIngestKeys?(now: number, limit: number): number;
  /** The highest seq queued (0 when the queue is empty). */
  lastSeq(): number;
  /**
   * Applies the policy to queued rows older than `before` (by reading timestamp) among up to `limit` seqs from
   * `fromSeq` (exclusive; sealed rows are always skipped) up to `untilSeq`: `drop-oldest` deletes them,
   * `downsample-oldest` downsamples the raw ones, `reject-new` leaves them. Returns the seq to continue from, or
   * undefined at the end.
   */
  expire(before: number, fromSeq: number, limit: number, untilSeq?: number): number | undefined;
  /** Removes up to `limit` of the rows past `maxRows`, by the policy; returns the rows removed from the queue. */
  trim(limit: number): number;
  /** Bytes in use above the size budget's intake part (0 without a budget, or within it). */
  overBudgetBytes(): number;
  /**
   * Frees room under the size budget by the policy, about `limit` rows: the oldest local history first, then
   * queued rows. Returns the rows removed (0 when nothing more can go).
   */
  freeSpace(limit: number): number;
  space(): SpaceUse;
  /**
   * Gives up to `maxPages` free pages back to the file system (`PRAGMA incremental_vacuum`). A file made before
   * `auto_vacuum=INCREMENTAL` was the default is converted by one `VACUUM` instead, and only while it holds at most
   * `maxLivePages` pages of data (the `VACUUM` rewrites them all).
   */
  compact(maxPages: number, maxLivePages: number): CompactionStep;
}
