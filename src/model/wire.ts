import { z } from 'zod';
import { DATA_POINT_LIMITS } from './data-point.js';

/**
 * The sync protocol's messages, shared by the gateway and the reference cloud server. docs/protocol.md describes
 * them in prose; these schemas are what the server enforces.
 */

/** Protocol version of the JSON batch body. */
export const BATCH_VERSION = 1;
/** Content type of a JSON batch body. */
export const JSON_BATCH_CONTENT_TYPE = 'application/json';

const tagsSchema = z
  .record(z.string().min(1).max(DATA_POINT_LIMITS.tagKeyLength), z.string().max(DATA_POINT_LIMITS.tagValueLength))
  .refine((tags) => Object.keys(tags).length <= DATA_POINT_LIMITS.tagCount, {
    message: `at most ${DATA_POINT_LIMITS.tagCount} tags`,
  });

/** The latest time a JavaScript Date can hold, in epoch ms: a later `ts` could be stored but never read back. */
const MAX_TIMESTAMP_MS = 8.64e15;

/** One reading (or processed record) on the wire. `ts` is epoch milliseconds, within the range of a Date. */
export const wirePointSchema = z.strictObject({
  seq: z.number().int().positive(),
  sensorId: z.string().min(1).max(DATA_POINT_LIMITS.sensorIdLength),
  ts: z.number().int().nonnegative().max(MAX_TIMESTAMP_MS),
  value: z.number().optional(),
  unit: z.string().max(DATA_POINT_LIMITS.unitLength).optional(),
  tags: tagsSchema.optional(),
  /** Present on processed data: what a processor returned, as JSON. */
  data: z.unknown().optional(),
});
export type WirePoint = z.infer<typeof wirePointSchema>;

/** The envelope of `POST /telemetry/batches`; points are checked one by one so that a bad one can be named. */
export const batchEnvelopeSchema = z.object({
  v: z.literal(BATCH_VERSION),
  deviceId: z.string().min(1).max(256),
  replicaId: z.string().min(1).max(64),
  batchNo: z.number().int().positive(),
  firstSeq: z.number().int().positive(),
  lastSeq: z.number().int().positive(),
  points: z.array(z.unknown()).max(100_000),
});
export type BatchEnvelope = z.infer<typeof batchEnvelopeSchema>;

/** The acknowledgement of a stored batch. A replay gets the same answer. */
export interface BatchAck {
  ackThroughBatchNo: number;
  accepted: number;
  duplicates: number;
  serverTime: string;
}

/** One reading the cloud refused, by sequence number. */
export interface RejectedPoint {
  seq: number;
  reason: string;
}

/** Body of a 4xx answer. `rejected` lists the readings at fault when the server can tell them apart. */
export interface ErrorBody {
  error: string;
  message: string;
  rejected?: RejectedPoint[];
  serverTime?: string;
}

export const batchAckSchema = z.object({
  ackThroughBatchNo: z.number().int(),
  accepted: z.number().int().nonnegative(),
  duplicates: z.number().int().nonnegative(),
  serverTime: z.string(),
});

export const errorBodySchema = z.object({
  error: z.string(),
  message: z.string().optional(),
  rejected: z.array(z.object({ seq: z.number().int(), reason: z.string() })).optional(),
  serverTime: z.string().optional(),
});
