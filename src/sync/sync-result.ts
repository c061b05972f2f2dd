/** What one sync cycle did. Counts are readings, not batches. */
export interface SyncResult {
  /** Readings sent (a retried batch counts each time it is sent). */
  sent: number;
  /** Readings the cloud acknowledged; they are gone from the local queue. */
  acknowledged: number;
  /** Of those, readings the cloud already had (a replay after a lost answer). */
  duplicates: number;
  /** Readings in sends that failed and will be retried. */
  failed: number;
  /** Readings moved to the dead letters because the cloud refused them. */
  deadLettered: number;
  /** Readings still waiting when the cycle ended. */
  remaining: number;
  durationMs: number;
}

/** Codes of `sync-error` events. */
export type SyncErrorCode =
  | 'NETWORK'
  | 'TIMEOUT'
  | 'SERVER_ERROR'
  | 'THROTTLED'
  | 'AUTH_REFUSED'
  | 'REJECTED'
  | 'BATCH_KEY_CONFLICT';

/** Payload of the `sync-error` event. */
export interface SyncErrorEvent {
  code: SyncErrorCode;
  message: string;
  httpStatus?: number;
  batchNo?: number;
  /** When the gateway will try again, in ms from now. */
  retryInMs?: number;
}
