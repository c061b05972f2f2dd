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
  /** Bytes of batch bodies put on the wire, every attempt counted (as sent: compressed when compression is on). */
  bytesSent: number;
  /** Shared records in this cycle, when the records part ran. */
  records?: RecordsSummary;
}

/** What the records part of a sync cycle did. */
export interface RecordsSummary {
  /** Mutations pushed (a resent one counts each time). */
  pushed: number;
  /** Of those, applied by the cloud. */
  applied: number;
  /** Conflicts met (each resolved, or left pending when the resolver failed). */
  conflicts: number;
  /** Mutations the cloud refused as invalid, moved to the record dead letters. */
  rejected: number;
  /** Changes pulled from the cloud and applied locally. */
  pulled: number;
}

/** Codes of `sync-error` events. */
export type SyncErrorCode =
  | 'NETWORK'
  | 'TIMEOUT'
  | 'SERVER_ERROR'
  | 'THROTTLED'
  | 'AUTH_REFUSED'
  | 'REJECTED'
  | 'BATCH_KEY_CONFLICT'
  /** A custom conflict resolver threw or timed out; the edit stays pending and is resolved again later. */
  | 'CONFLICT_UNRESOLVED'
  /** The cloud refused a records request as such (a 4xx other than auth or throttling). */
  | 'RECORDS_REFUSED'
  /**
   * The cloud's TLS certificate was not trusted (expired, for another host, from an unknown CA) or the handshake
   * was refused (e.g. a client certificate it does not take). Nothing was sent; retried at the longest interval.
   */
  | 'TLS_ERROR'
  /** The cloud's certificate chain holds none of the `pinnedCertificates`. Nothing was sent; retried at the longest interval. */
  | 'PIN_MISMATCH';

/** Payload of the `sync-error` event. */
export interface SyncErrorEvent {
  code: SyncErrorCode;
  message: string;
  httpStatus?: number;
  batchNo?: number;
  /** When the gateway will try again, in ms from now. */
  retryInMs?: number;
}
