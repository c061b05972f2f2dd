/**
 * The `RecordStorage` contract: shared records at rest on the edge, with the outbox of local edits waiting for
 * the cloud. Synchronous, like {@link Storage}: every method is one transaction.
 */

/** A record as this replica holds it. `value` is JSON text, or null for a tombstone. */
export interface StoredRecord {
  collection: string;
  key: string;
  value: string | null;
  deleted: boolean;
  /** The cloud version this state is at, or was made on (for a local edit not yet acknowledged). */
  version: number;
  hlc: string;
  /** The replica id that wrote this state, or `cloud`. */
  origin: string;
}

/**
 * A local edit waiting for the cloud. `pending` edits of one key coalesce (the latest wins, keeping its id);
 * a `sent` one is frozen, resent as it is, with the same id and base version, until its outcome is applied.
 */
export interface StoredMutation {
  id: number;
  collection: string;
  key: string;
  op: 'put' | 'delete';
  value: string | null;
  hlc: string;
  state: 'pending' | 'sent';
  /** Set when sent: the cloud version the edit is pushed against. */
  baseVersion: number | null;
}

/** A mutation the cloud refused as invalid: set aside with the reason, never resent. */
export interface RecordDeadLetter {
  id: number;
  mid: string;
  collection: string;
  key: string;
  op: 'put' | 'delete';
  value: string | null;
  baseVersion: number | null;
  hlc: string;
  reason: string;
  createdAt: number;
}

/** A record's state from the cloud: what a pull or a conflict brings. */
export interface IncomingRecord {
  collection: string;
  key: string;
  /** JSON text, or null for a tombstone. */
  value: string | null;
  deleted: boolean;
  version: number;
  hlc: string;
  origin: string;
}

/** What became of one pushed mutation, to record locally. */
export type MutationOutcome =
  /**
   * The cloud applied it at `version` with `hlc` (its restamp, when it made one): the mutation goes; the record moves
   * to that version, and takes the stamp unless a newer local edit replaced its state since.
   */
  | { kind: 'applied'; id: number; version: number; hlc: string }
  /** The cloud refused it as invalid: it moves to the record dead letters with `reason`. */
  | { kind: 'rejected'; id: number; mid: string; reason: string }
  /** A conflict resolved for the cloud's side: the record takes `cloud`'s state; every local edit of the key goes. */
  | { kind: 'take-cloud'; id: number; cloud: IncomingRecord; seenHlc: string }
  /**
   * A conflict resolved for the edge's side or a merge: the record takes `resolved` at the cloud's version, and one
   * new pending mutation carries it, replacing the key's local edits.
   */
  | {
      kind: 'repush';
      id: number;
      cloudVersion: number;
      resolved: { value: string | null; hlc: string; origin: string };
      seenHlc: string;
    };

/** Where the gateway keeps shared records. {@link SqliteStorage.records} is the default. */
export interface RecordStorage {
  get(collection: string, key: string): StoredRecord | undefined;
  /** Every record of a collection, tombstones included, ordered by key. */
  list(collection: string): StoredRecord[];
  /**
   * A local edit: the record's new state and its mutation (coalesced with a pending one of the same key), in one
   * transaction, with the clock's last stamp saved beside it.
   */
  write(edit: { collection: string; key: string; value: string | null; hlc: string; origin: string }): StoredRecord;
  /**
   * The mutations to push now, at most `limit`: every sent one (resent as it was), then pending ones of keys with
   * none in flight, marked sent with the record's current version as their base in the same transaction.
   */
  takeOutgoing(limit: number): StoredMutation[];
  /** Mutations not yet acknowledged or set aside. */
  mutationCount(): number;
  /**
   * Applies the outcomes of one push in one transaction (one commit, however many mutations). Returns, for each
   * outcome in order, whether it was applied: a conflict resolution is applied only if the record is still at
   * `seenHlc` (what the resolver was shown); when a newer local edit arrived meanwhile it changes nothing, and the
   * next push resolves again with that edit.
   */
  settle(outcomes: readonly MutationOutcome[]): boolean[];
  /**
   * Applies a pulled page and saves the cursor in one transaction. A change is skipped when the record has a local
   * edit not yet settled (the push resolves it) or is already at that version or later. Returns what was applied.
   */
  applyPulled(changes: readonly IncomingRecord[], cursor: number): IncomingRecord[];
  /** The saved pull cursor; 0 before the first pull. */
  pullCursor(): number;
  /** The most recent record dead letters, newest first. */
  deadLetters(limit?: number): RecordDeadLetter[];
}
