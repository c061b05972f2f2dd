/**
 * The `Storage` contract: every byte the gateway keeps at rest. It is synchronous on purpose: a SQLite
 * transaction cannot span an `await`, and the hot path must not yield between validation and commit.
 */

import type { QuarantineReport } from './quarantine.js';
import type { RecordStorage } from './record-storage.js';
import type { RetentionStorage } from './retention.js';

export type { QuarantineReport } from './quarantine.js';

/** Kinds of rows in the outbox. */
export type OutboxKind = 'reading' | 'processed';

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
}

/** A sealed batch: its bytes never change until the cloud acknowledges it, so every retry is byte-identical. */
export interface SealedBatch extends SealInput {
  batchNo: number;
  /** How many times it was sent without an acknowledgement. */
  attempts: number;
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
  /** Appends rows and dead letters in one transaction; returns the first assigned seq. */
  append(rows: readonly OutboxInsert[], deadLetters?: readonly DeadLetterInsert[]): number;
  /** Rows accepted and not yet acknowledged by the cloud (dead letters excluded). */
  pendingCount(): number;
  /** The oldest sealed, unacknowledged batch. */
  oldestBatch(): SealedBatch | undefined;
  /**
   * Seals up to `limit` of the oldest rows not yet in a batch under the next batch number, durably, in one
   * transaction; `encode` turns them into the batch's bytes. Returns undefined when there is nothing to seal.
   */
  sealNext(limit: number, encode: (batchNo: number, rows: readonly OutboxRow[]) => SealInput): SealedBatch | undefined;
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
  /** A small string value kept with the store. */
  getMeta(key: string): string | undefined;
  setMeta(key: string, value: string): void;
}
