import type { BatchAck, WirePoint } from '../model/wire.js';

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

/**
 * Where the reference cloud server keeps what it receives. Async, so that networked stores fit. Every
 * implementation stores a batch and its ledger entry atomically: a replay can never store a reading twice.
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
  close(): Promise<void>;
}
