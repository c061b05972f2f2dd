import type { Alert } from '../processing/processor.js';
import type { QuarantineReport } from '../storage/quarantine.js';
import type { CleanupStrategy, HistoryPruned, RetentionBudget } from '../storage/retention.js';
import type { SyncRecord } from '../sync/conflict-resolver.js';
import type { ConflictEvent } from '../sync/records-sync.js';
import type { SyncErrorEvent, SyncResult } from '../sync/sync-result.js';

/** A snapshot of the gateway, from {@link EdgeGateway.getStatus}. */
export interface GatewayStatus {
  deviceId: string;
  /** UUID of the local database; sequence numbers are scoped to it. Empty before `start()`. */
  replicaId: string;
  /** `true` when the last attempt to reach the cloud got an answer (any answer but a 5xx). */
  isOnline: boolean;
  /** Readings accepted and not yet acknowledged by the cloud. */
  pendingSyncCount: number;
  /** When the cloud last acknowledged a batch. */
  lastSyncTime: Date | null;
  /** Failed attempts to send since start. */
  failedSyncCount: number;
  /** Readings the cloud refused for good, kept in the dead-letter table. */
  deadLetterCount: number;
  /** Local edits of shared records not yet settled with the cloud. */
  pendingRecordCount: number;
  /** The last sync failure, if any. */
  lastError: (SyncErrorEvent & { at: Date }) | null;
  /** The cloud refused the API key on the last attempt. */
  authRefused: boolean;
  /**
   * The last attempt found no trusted connection to the cloud: `PIN_MISMATCH` (its certificate chain holds no
   * pinned key) or `TLS_ERROR` (certificate expired, for another host, from an unknown CA; handshake refused).
   * Nothing was sent. Cleared when the cloud answers over a trusted connection, or by `configure()`.
   */
  tlsFailure: { code: 'TLS_ERROR' | 'PIN_MISMATCH'; message: string } | null;
  /** Server time minus local time at the last answer, in ms; null before one. Record writes are stamped corrected by it. */
  clockSkewMs: number | null;
  /** When the next sync cycle is due, if one is scheduled. */
  nextSyncAt: Date | null;
  syncStrategy: string;
  running: boolean;
  /**
   * The damaged database file `start()` set aside (renamed, never deleted) before starting a new one: where it is,
   * why, and when. Reported while that file stays where it was put; move or delete it to clear. Null otherwise.
   */
  quarantined: QuarantineReport | null;
  /**
   * Readings that will not reach the cloud as they were given, since start, by reason: every `dropped` event
   * counted. Zero for reasons that did not happen.
   */
  dropped: DropCounts;
  /** What retention did since start. */
  retention: RetentionStatus;
}

/** Readings counted by the reason of their `dropped` events. */
export type DropCounts = Record<DroppedEvent['reason'], number>;

/** Retention since start, from {@link GatewayStatus.retention}. */
export interface RetentionStatus {
  cleanupStrategy: CleanupStrategy;
  /** Rows of local history pruned (past `maxDays`, or to make room under `maxBytes`), by prune step. */
  pruned: Record<string, number>;
  /** Aggregate rows queued in place of downsampled readings. */
  aggregates: number;
  /** Bytes of free pages given back to the file system. */
  reclaimedBytes: number;
  /** Cleanup passes run. */
  cleanups: number;
  /** When the last cleanup pass ended; null before one. */
  lastCleanupAt: Date | null;
}

/** Health, from {@link EdgeGateway.healthCheck}. */
export interface HealthStatus {
  /** `healthy`, `degraded` (working, with a problem to look at) or `unhealthy` (not doing its job). */
  status: 'healthy' | 'degraded' | 'unhealthy';
  deviceId: string;
  isOnline: boolean;
  pendingSyncCount: number;
  lastSync: Date | null;
  uptimeSeconds: number;
  localStorageMb: number;
  /** CPU used by this process since the previous health check, as a percentage of one core. */
  cpuPercent: number;
  /** Resident memory of this process. */
  memoryMb: number;
  /** Why the status is not `healthy`, one sentence each. */
  reasons: string[];
}

/**
 * What a `dropped` event reports: readings that will not reach the cloud as they were given, and why.
 * - `queue-full`: refused at intake (`QueueFullError`); never stored;
 * - `rejected-by-cloud`, `processor-failed`: kept in the dead letters;
 * - `drop-oldest`: queued readings deleted to make room under `maxRecords` or `maxBytes`;
 * - `retention`: queued readings older than `maxDays` deleted (`drop-oldest` strategy);
 * - `downsampled`: queued raw readings replaced by `aggregates` aggregate rows (`downsample-oldest` strategy).
 */
export interface DroppedEvent {
  reason: 'queue-full' | 'rejected-by-cloud' | 'processor-failed' | 'drop-oldest' | 'retention' | 'downsampled';
  /** Readings concerned (for `downsampled`, the raw readings replaced). */
  count: number;
  message: string;
  /** The budget that made retention remove them (`drop-oldest`, `retention`, `downsampled` only). */
  budget?: RetentionBudget;
  /** Aggregate rows queued in their place (`downsampled` only). */
  aggregates?: number;
  /** Smallest and largest seq removed (`drop-oldest`, `retention`, `downsampled` only). */
  firstSeq?: number;
  lastSeq?: number;
}

/** What a `pruned` event reports: rows of local history (never the queue) that retention deleted. */
export type PrunedEvent = HistoryPruned;

/** The events of {@link EdgeGateway}. */
export interface GatewayEvents {
  /** The cloud answered after being unreachable. */
  online: () => void;
  /** The cloud could not be reached. */
  offline: (info: { reason: string }) => void;
  /** A sync cycle acknowledged readings. */
  sync: (result: SyncResult) => void;
  /** An attempt to sync failed; the gateway will retry unless told otherwise. */
  'sync-error': (event: SyncErrorEvent) => void;
  /**
   * Readings will not reach the cloud as they were given: refused on intake, refused by the cloud, failed in a
   * processor, or removed from the queue by the retention strategy.
   */
  dropped: (event: DroppedEvent) => void;
  /** Retention deleted local history (dead letters, ...), past `maxDays` or to make room under `maxBytes`. */
  pruned: (event: PrunedEvent) => void;
  /** A conflict on a shared record was resolved: both sides, the strategy, and what won. */
  conflict: (event: ConflictEvent) => void;
  /** A change from the cloud replaced a shared record's local state (a pull, or a conflict the cloud won). */
  'record-change': (record: SyncRecord) => void;
  /** An alert was stored (raised by a processor; a repeat counted into an earlier alert is not emitted). */
  alert: (alert: Alert) => void;
  /** A background failure; the gateway carries on. */
  error: (error: Error) => void;
}
