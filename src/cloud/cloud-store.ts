import type {
  CloudRecord,
  MutationResult,
  PullRequester,
  RecordChange,
  RecordMutation,
} from '../model/records-wire.js';
import type { BatchAck, WirePoint } from '../model/wire.js';
import type { RateDecision } from './rate-limiter.js';

/** One mutation of a push as the store decides it: valid with its stamp, or refused with a reason. */
export type PushDecision =
  | { kind: 'valid'; mutation: RecordMutation; stamp: RecordStamp }
  | { kind: 'invalid'; mid: string; reason: string };

/** A batch ready to store: validated, with the hash of its uncompressed body. */
export interface IncomingBatch {
  idempotencyKey: string;
  hash: string;
  deviceId: string;
  replicaId: string;
  batchNo: number;
  points: readonly WirePoint[];
}

/** What the store did with a batch. */
export type IngestOutcome =
  | { kind: 'stored'; ack: Omit<BatchAck, 'serverTime'> }
  | { kind: 'replayed'; ack: Omit<BatchAck, 'serverTime'> }
  | { kind: 'conflict' };

/** A reading as the cloud returns it. */
export interface StoredPoint {
  deviceId: string;
  replicaId: string;
  seq: number;
  sensorId: string;
  timestamp: string;
  value?: number;
  unit?: string;
  tags?: Record<string, string>;
  data?: unknown;
  receivedAt: string;
}

export interface TelemetryQuery {
  deviceId?: string | undefined;
  sensorId?: string | undefined;
  /** Epoch ms, inclusive. */
  from?: number | undefined;
  /** Epoch ms, exclusive. */
  to?: number | undefined;
  limit: number;
  /** Opaque; from the previous page's `nextCursor`. */
  cursor?: string | undefined;
}

export interface TelemetryStats {
  /** Readings stored. */
  points: number;
  /** Batches stored. */
  batches: number;
  /** Replays of stored batches that were answered from the ledger instead of stored again. */
  duplicateBatches: number;
}

/** Who pushed a mutation: the envelope of its push. */
export interface MutationContext {
  deviceId: string;
  replicaId: string;
}

/**
 * The stamp a mutation is stored with: its own `hlc`, or the server's when the server restamped it because the
 * writer's clock ran too far ahead (`restamped: true`, reported back in the `applied` result).
 */
export interface RecordStamp {
  hlc: string;
  restamped: boolean;
}

/** A cloud-side edit (`PUT /records/{collection}/{key}`): a new value, or a tombstone. */
export type RecordEdit = { op: 'put'; value: unknown } | { op: 'delete' };

/** One page of changes, oldest first. */
export interface ChangePage {
  /** Up to `limit` changes: those the page looked at, without those left out for the requester. */
  changes: RecordChange[];
  /**
   * The `seq` of the last change the page consumed, returned or left out (on a page of `limit` changes, the last
   * returned), or the cursor asked for when it consumed none.
   */
  cursor: number;
  /** Whether changes past `cursor` remain. */
  hasMore: boolean;
}

/**
 * Changes a pull page looks at, at most, to find its changes for a requester (see {@link CloudStore.pullChanges}):
 * the default of the stores' `pullScanRows` option. A change left out costs the store a few short fields and sends
 * nothing, so a page may look well past `limit`: 2,000 pass over the own edits of four full pushes (500 mutations
 * each) in one request, at about the store time of a page returning 1,000 changes, the most `limit` allows
 * (docs/benchmarks.md). A fixed number, not a multiple of `limit`, so that no request's `limit` raises it.
 */
export const DEFAULT_PULL_SCAN_ROWS = 2000;

/** The problem with a `pullScanRows` option, if any: it must be a positive integer. */
export function pullScanRowsProblem(value: unknown): string | undefined {
  if (value === undefined || (Number.isSafeInteger(value) && (value as number) > 0)) return undefined;
  return `Expected the "pullScanRows" option to be a positive integer (got ${String(value)})`;
}

/**
 * What a conflict answers as `current` when the record never existed in the cloud (the edge pushed against a
 * version the cloud does not have): version 0, a tombstone, stamped before every real stamp, of no origin.
 */
export function neverExistedRecord(collection: string, key: string): CloudRecord {
  return { collection, key, value: null, deleted: true, version: 0, hlc: '000000000000000-000000', origin: '' };
}

/** A device whose clock was found too far ahead of the server's: the latest finding per device. */
export interface ClockSkewFlag {
  deviceId: string;
  replicaId: string;
  /** How far the device's stamp was ahead of the server's physical time, in ms. */
  skewMs: number;
  /** When the server found it, ISO-8601 in the server's time. */
  at: string;
}

export interface RecordStats {
  /** Records that exist (tombstones not counted). */
  records: number;
  /** Deleted records kept as tombstones. */
  tombstones: number;
  /** The last change sequence number given; 0 before the first change. */
  changeSeq: number;
  /** The latest clock-skew finding of each device ever flagged, most recent first. */
  flaggedDevices: ClockSkewFlag[];
}

/**
 * Where the reference cloud server keeps what it receives. Async, so that networked stores fit. Every
 * implementation stores a batch and its ledger entry atomically, and a mutation's effect and its outcome
 * atomically: a replay can never store a reading twice nor apply a mutation twice. Change sequence numbers are
 * one counter for the whole store, strictly increasing, never reused, and a change is visible to a pull only
 * once every change with a smaller number is.
 */
export interface CloudStore {
  /** The stored ledger entry of a key, if any: to answer a replay before validating the body again. */
  lookup(idempotencyKey: string): Promise<{ hash: string; ack: Omit<BatchAck, 'serverTime'> } | undefined>;
  /** Stores a batch and its ledger entry in one transaction, or answers from the ledger. */
  ingest(batch: IncomingBatch): Promise<IngestOutcome>;
  /** Counts a replay answered from the ledger. */
  noteReplay(idempotencyKey: string): Promise<void>;
  query(query: TelemetryQuery): Promise<{ points: StoredPoint[]; nextCursor: string | null }>;
  stats(deviceId?: string): Promise<TelemetryStats>;

  /**
   * Decides the mutations of one push, in order, each atomically with storing its outcome under its `mid`: a `mid`
   * seen before gets its stored outcome, exactly; an `invalid` item is stored as `rejected` with its reason; else a
   * `baseVersion` equal to the record's current version (0 for a record that never existed) is applied at the next
   * version with `stamp.hlc`, origin `context.replicaId` and the next change sequence number, and, unless
   * `stamp.restamped`, marked as known to `context` at that version (see {@link pullChanges}); else the answer is
   * `conflict` with the current record. The SQLite store commits a push in one transaction (one fsync); a store may
   * commit item by item, as long as each item and its outcome go together.
   */
  pushMutations(context: MutationContext, items: readonly PushDecision[]): Promise<MutationResult[]>;
  /**
   * Records changed after `cursor`, in change order, each once, in its latest state: up to `limit` changes. With
   * `requester`, it leaves out each change whose record is still in the state a mutation of that device and replica
   * wrote unrestamped, at the version its `applied` answer gave: the requester holds it already. Any later write, by
   * anyone, clears that mark. A change left out does not count toward `limit`, but toward the page's scan bound: the
   * page looks at no more than the store's bound of changes (`pullScanRows` on the stores of this package; never
   * fewer than `limit`), returned and left out together, so that its work stays bounded however many the requester
   * holds. The page consumes what it looked at,
   * up to its last returned change once it holds `limit` (changes left out after that one are not consumed), and
   * its cursor is the `seq` of the last change consumed. Without `requester` nothing is left out: a page is the
   * first `limit` changes. A store that ignores `requester` is correct, only wasteful.
   */
  pullChanges(cursor: number, limit: number, requester?: PullRequester): Promise<ChangePage>;
  /** A record (a tombstone included), or `undefined` when it never existed. */
  getRecord(collection: string, key: string): Promise<CloudRecord | undefined>;
  /** Applies a cloud-side edit unconditionally: next version, origin `cloud`, the next change sequence number. */
  editRecord(collection: string, key: string, edit: RecordEdit, hlc: string): Promise<CloudRecord>;
  /** Keeps `flag` as the latest clock-skew finding of its device. */
  flagClockSkew(flag: ClockSkewFlag): Promise<void>;
  recordStats(): Promise<RecordStats>;
  /**
   * The greatest stamp ever stored, or `undefined`: the server starts its clock from it, so that its stamps never
   * go backwards across restarts even when the machine's clock does.
   */
  latestHlc(): Promise<string | undefined>;

  /**
   * Takes one token from the rate bucket of the key `id` (up to `limit.burst` tokens, refilled at
   * `limit.requestsPerSecond` by the time elapsed since the bucket's last take, never by a step of `nowMs`
   * backwards), or says how long until one is there: the answers of the in-process `RateLimiter`. Optional: a store
   * that has it keeps one bucket per key for every server node over it; without it each server keeps its buckets in
   * memory, which is right for a store only one node uses (SQLite). A store that has it has {@link forgetTokens} too.
   */
  takeToken?(id: string, limit: { requestsPerSecond: number; burst: number }, nowMs: number): Promise<RateDecision>;
  /** Drops the rate buckets of the keys `ids` (revoked keys): one added again starts with a full bucket. */
  forgetTokens?(ids: readonly string[]): Promise<void>;

  close(): Promise<void>;
}
