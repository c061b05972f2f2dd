/**
 * The `Storage` contract: every byte the gateway keeps at rest. It is synchronous on purpose: a SQLite
 * transaction cannot span an `await`, and the hot path must not yield between validation and commit.
 */

import type { QuarantineReport } from './quarantine.js';
import type { RecordStorage } from './record-storage.js';
import type { RetentionStorage } from './retention.js';

export type { QuarantineReport } from './quarantine.js';

/**
 * Kinds of rows in the outbox. `alert` rows travel in a lane of their own, sealed ahead of the rest; `aggregate`
 * rows are the windows a windowed aggregation closed. On the wire the last three are processed data.
 */
export type OutboxKind = 'reading' | 'processed' | 'alert' | 'aggregate';

/** A row to append to the outbox. `seq` is assigned by the storage. */
export interface OutboxInsert {
  kind: OutboxKind;
  sensorId: string;
  ts: number;
  value: number | null;
  unit: string | null;
  /** JSON text of a flat string map, or null. */
  tags: string | null;
  /** JSON text of processed data (kind `processed`), or null. */
  payload: string | null;
}

/** A row of the outbox, with its sequence number. */
export interface OutboxRow extends OutboxInsert {
  seq: number;
}

/** A row refused for good, kept aside with the reason rather than dropped. */
export interface DeadLetterInsert extends OutboxInsert {
  /** The reading's sequence number, when it had one. */
  seq: number | null;
  /** Why it was refused, in words. */
  reason: string;
  /** Who refused it: `cloud` or the name of a processor. */
  source: string;
}

/** A dead letter as stored. */
export interface DeadLetter extends DeadLetterInsert {
  id: number;
  /** When it was set aside, epoch ms. */
  createdAt: number;
}

/** A batch's encoded form, as the codec makes it for sealing. */
export interface SealInput {
  firstSeq: number;
  lastSeq: number;
  /** Rows in the batch (the range may have gaps where rows went to the dead letters). */
  count: number;
  body: Uint8Array;
  contentType: string;
  /** `gzip`, or null for an uncompressed body. */
  contentEncoding: string | null;
  /** sha-256 of the uncompressed body, hex. */
  hash: string;
  /**
   * Bytes of the body before compression, as the codec made it; for metrics. Not kept at rest: a batch read back
   * from storage (a resend after a restart) has none.
   */
  rawBytes?: number;
}

/** A sealed batch: its bytes never change until the cloud acknowledges it, so every retry is byte-identical. */
export interface SealedBatch extends SealInput {
  batchNo: number;
  /** How many times it was sent without an acknowledgement. */
  attempts: number;
}

/**
 * Rows read for a batch and not sealed yet: phase one of a two-phase seal ({@link Storage.readUnsealed}). Nothing
 * was written; until {@link Storage.sealRead} seals them, the rows stay in the queue as they were.
 */
export interface UnsealedRead {
  /** The batch number the rows would be sealed under (batch bodies carry it). */
  batchNo: number;
  /** The oldest unsealed rows, in sequence order; at least one. */
  rows: readonly OutboxRow[];
}

/** An alert to store with an intake; see {@link Storage.intake}. */
export interface AlertInsert {
  source: string;
  sensorId: string;
  severity: 'info' | 'warning' | 'critical';
  message: string;
  /** Epoch ms. */
  ts: number;
  /** The outbox row that carries it to the cloud, stored only when the alert is new (not a counted repeat). */
  payload: string;
}

/** An alert as stored. */
export interface StoredAlert extends Omit<AlertInsert, 'payload'> {
  id: number;
  /** Raises counted into it, itself included. */
  count: number;
  /** Epoch ms of the latest repeat counted into it. */
  lastTs: number;
}

/** A window a windowed aggregation closed, kept for local queries. */
export interface AggregateInsert {
  source: string;
  sensorId: string;
  tags: string | null;
  unit: string | null;
  /** Epoch ms of the window's start, and its length. */
  windowStart: number;
  windowMs: number;
  count: number;
  min: number;
  max: number;
  sum: number;
  mean: number;
  /** Sum of squared deviations from the mean (Welford), so that windows can be merged. */
  m2: number;
  first: number;
  firstTs: number;
  last: number;
  lastTs: number;
}

/** One key of a processor's durable state; `value` null deletes it. */
export interface StateWrite {
  processor: string;
  key: string;
  value: string | null;
}

/**
 * An `Idempotency-Key` of the local ingest endpoint (`POST /api/v1/data`) with the answer its request got; written
 * in the transaction that stored the request's readings (see {@link Storage.lookupIngestKey}).
 */
export interface IngestKeyEntry {
  /** The header's value, as the client sent it. */
  idempotencyKey: string;
  /** sha-256 of the request body, hex. */
  hash: string;
  /** The answer: readings in the request, and readings stored. */
  accepted: number;
  stored: number;
  /** Epoch ms from which the key is forgotten, and may be used again, by the clock of {@link IngestKeyWrite.now}. */
  expiresAt: number;
}

/** Idempotency keys to write with an intake, and the bounds of the keys kept. */
export interface IngestKeyWrite {
  entries: readonly IngestKeyEntry[];
  /**
   * Epoch ms of the write, by the gateway's steady clock (a wall-clock step while it runs does not move it): keys
   * expired by then are removed, oldest first, a few per write.
   */
  now: number;
  /** Most keys kept: past it the oldest go, expired or not. A storage with a size budget may keep fewer. */
  maxEntries: number;
}

/** Everything one group commit stores, in one transaction. */
export interface IntakeWork {
  rows: readonly OutboxInsert[];
  deadLetters: readonly DeadLetterInsert[];
  /** Alerts, de-duplicated against those stored: a repeat within `dedupWindowMs` is counted into the first. */
  alerts: readonly AlertInsert[];
  dedupWindowMs: number;
  /** Most alerts kept; the oldest go first. */
  maxAlerts: number;
  aggregates: readonly AggregateInsert[];
  /** Most aggregates kept for local queries; the oldest go first. */
  maxAggregates: number;
  /** Most raw readings kept for local queries (a copy of the `reading` rows); 0 keeps none. */
  maxHistory: number;
  state: readonly StateWrite[];
  /** Idempotency keys of the ingest endpoint whose readings this intake stores; see {@link Storage.append}. */
  ingestKeys?: IngestKeyWrite | undefined;
}

/** What {@link Storage.intake} did. */
export interface IntakeResult {
  /** The seq of the first row stored. */
  firstSeq: number;
  /** Alerts stored as new, in the order given (repeats counted into an earlier alert are not here). */
  raised: StoredAlert[];
}

/** A raw reading kept for local queries. */
export interface HistoryRow {
  sensorId: string;
  ts: number;
  value: number;
  unit: string | null;
  tags: string | null;
}

/** What {@link Storage.alerts} selects; times in epoch ms. */
export interface StoredAlertQuery {
  since?: number;
  until?: number;
  severities?: readonly string[];
  sensorId?: string;
  source?: string;
  limit: number;
}

/** A time range of one sensor, epoch ms, `to` excluded. */
export interface SeriesRange {
  sensorId: string;
  from: number;
  to: number;
  limit: number;
}

/** Space a store with a size limit uses, from {@link Storage.capacity}. */
export interface StorageCapacity {
  /** Bytes holding data now (free pages, which later writes reuse, are not counted). */
  usedBytes: number;
  /** The most new readings may take; past it, appends fail with a `StorageError` (`SQLITE_FULL`). */
  limitBytes: number;
}

/** Where the gateway keeps everything. {@link SqliteStorage} is the default. */
export interface Storage {
  /**
   * Opens the store, creating or migrating it. A file it finds damaged is set aside and replaced by a new one
   * (see {@link Storage.quarantined}); one it cannot use for another reason makes it throw `StorageError`.
   * Called by `EdgeGateway.start()`.
   */
  open(): void;
  /** Closes the store. Safe to call twice. */
  close(): void;
  /** A UUID made with the store; sequence numbers are scoped to it. Valid after `open()`. */
  readonly replicaId: string;
  /**
   * Appends rows and dead letters in one transaction; returns the first assigned seq. `ingestKeys` are the ingest
   * endpoint's idempotency keys for these rows: a storage that has {@link Storage.lookupIngestKey} writes them in the
   * same transaction (replacing an expired entry of the same key), so that a key is stored exactly when its rows are.
   */
  append(rows: readonly OutboxInsert[], deadLetters?: readonly DeadLetterInsert[], ingestKeys?: IngestKeyWrite): number;
  /** Rows accepted and not yet acknowledged by the cloud (dead letters excluded). */
  pendingCount(): number;
  /** The oldest sealed, unacknowledged batch. */
  oldestBatch(): SealedBatch | undefined;
  /**
   * Seals up to `limit` of the oldest rows not yet in a batch under the next batch number, durably, in one
   * transaction; `encode` turns them into the batch's bytes. Returns undefined when there is nothing to seal.
   */
  sealNext(limit: number, encode: (batchNo: number, rows: readonly OutboxRow[]) => SealInput): SealedBatch | undefined;
  /**
   * Phase one of a two-phase seal: the oldest unsealed rows, up to `limit`, and the batch number they would be
   * sealed under, read without writing anything. It lets the gateway encode a batch outside any transaction (in a
   * worker thread) and then seal it with {@link Storage.sealRead}. Optional: a store without it is sealed with
   * `sealNext()` only. Returns undefined when nothing is waiting.
   */
  readUnsealed?(limit: number): UnsealedRead | undefined;
  /**
   * Phase two: seals `read` with `input`, its encoding, in one transaction, provided the queue still starts with
   * exactly those rows under that batch number; otherwise writes nothing and returns undefined (read again). A
   * crash or an abandoned encoding between the phases leaves the rows unsealed, to be read and encoded again.
   */
  sealRead?(read: UnsealedRead, input: SealInput): SealedBatch | undefined;
  /** Counts a failed send of a batch. */
  recordAttempt(batchNo: number): void;
  /** Removes an acknowledged batch and its rows in one transaction; returns how many rows it removed. */
  acknowledge(batchNo: number): number;
  /**
   * Unseals a batch the cloud refused, moving the given rows to the dead letters in the same transaction; the
   * other rows go back to the queue, to be sealed again under a new batch number.
   */
  unseal(batchNo: number, deadLetters: ReadonlyMap<number, string>, source: string): number;
  /** The most recent dead letters, newest first. */
  deadLetters(limit?: number): DeadLetter[];
  /** Number of dead letters kept. */
  deadLetterCount(): number;
  /** Bytes the store occupies on disk (database and WAL). */
  sizeBytes(): number;
  /** Space used against the store's size limit; undefined (or absent) when it has none. */
  capacity?(): StorageCapacity | undefined;
  /**
   * Set when `open()` found the file damaged, set it aside and started a new one; reported for as long as the
   * set-aside file is where it was put, across restarts. Absent for stores that never quarantine.
   */
  readonly quarantined?: QuarantineReport | undefined;
  /** Shared records and their outbox; absent for stores without them (records are then unavailable). */
  readonly records?: RecordStorage;
  /**
   * Retention: prune steps for local history, the intake policy and bounded cleanup steps. Absent for stores
   * without it: then only the `reject-new` strategy is available and `maxDays` prunes nothing.
   */
  readonly retention?: RetentionStorage;
  /** Changes how long a statement waits for another connection's lock, ms (the gateway's `dbTimeout`). */
  setBusyTimeout?(ms: number): void;
  /** Changes the size budget in bytes, or removes it (the gateway's `maxDatabaseSize`, `retention.maxBytes`). */
  setMaxSizeBytes?(maxSizeBytes: number | undefined): void;
  /**
   * Stores rows, dead letters, alerts, aggregates and processor state in one transaction (what `append` does,
   * and more), so that an alert or a processor's state is durable exactly when the reading that caused it is.
   * Optional: without it, the gateway refuses processors. Applies the retention policy as `append` does.
   */
  intake?(work: IntakeWork): IntakeResult;
  /** Stored alerts, newest first. */
  alerts?(query: StoredAlertQuery): StoredAlert[];
  /** The durable state of one processor, key by key. */
  processorState?(processor: string): Map<string, string>;
  /** Aggregates of one sensor whose window starts in the range, oldest first; all window lengths. */
  aggregates?(range: SeriesRange): AggregateInsert[];
  /** Raw readings of one sensor kept for local queries, oldest first. */
  history?(range: SeriesRange): HistoryRow[];
  /**
   * The idempotency key of the ingest endpoint `idempotencyKey`, unless it expired by `now` (epoch ms), as written
   * by {@link Storage.append} or {@link Storage.intake}. Optional: without it, the ingest endpoint refuses requests
   * that carry an `Idempotency-Key` (501) rather than store their readings without the key.
   */
  lookupIngestKey?(idempotencyKey: string, now: number): IngestKeyEntry | undefined;
  /** A small string value kept with the store. */
  getMeta(key: string): string | undefined;
  setMeta(key: string, value: string): void;
}
