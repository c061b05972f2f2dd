import * as z from '../zod.js';
import { DATA_POINT_LIMITS } from './data-point.js';
import { BATCH_VERSION } from './wire-version.js';

/**
 * The sync protocol's messages, shared by the gateway and the reference cloud server. docs/protocol.md describes
 * them in prose; these schemas are what the server enforces.
 */

export { BATCH_VERSION, JSON_BATCH_CONTENT_TYPE } from './wire-version.js';

const tagsSchema = z
  .record(
    z.string().check(z.minLength(1), z.maxLength(DATA_POINT_LIMITS.tagKeyLength)),
    z.string().check(z.maxLength(DATA_POINT_LIMITS.tagValueLength)),
  )
  .check(
    z.refine((tags) => Object.keys(tags).length <= DATA_POINT_LIMITS.tagCount, {
      message: `at most ${DATA_POINT_LIMITS.tagCount} tags`,
    }),
  );

/** The latest time a JavaScript Date can hold, in epoch ms: a later `ts` could be stored but never read back. */
const MAX_TIMESTAMP_MS = 8.64e15;

/** One reading (or processed record) on the wire. `ts` is epoch milliseconds, within the range of a Date. */
export const wirePointSchema = z.strictObject({
  seq: z.int().check(z.positive()),
  sensorId: z.string().check(z.minLength(1), z.maxLength(DATA_POINT_LIMITS.sensorIdLength)),
  ts: z.int().check(z.nonnegative(), z.lte(MAX_TIMESTAMP_MS)),
  value: z.optional(z.number()),
  unit: z.optional(z.string().check(z.maxLength(DATA_POINT_LIMITS.unitLength))),
  tags: z.optional(tagsSchema),
  /** Present on processed data: what a processor returned, as JSON. */
  data: z.optional(z.unknown()),
});
export type WirePoint = z.infer<typeof wirePointSchema>;

/** The envelope of `POST /telemetry/batches`; points are checked one by one so that a bad one can be named. */
export const batchEnvelopeSchema = z.object({
  v: z.literal(BATCH_VERSION),
  deviceId: z.string().check(z.minLength(1), z.maxLength(256)),
  replicaId: z.string().check(z.minLength(1), z.maxLength(64)),
  batchNo: z.int().check(z.positive()),
  firstSeq: z.int().check(z.positive()),
  lastSeq: z.int().check(z.positive()),
  points: z.array(z.unknown()).check(z.maxLength(100_000)),
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
  ackThroughBatchNo: z.int(),
  accepted: z.int().check(z.nonnegative()),
  duplicates: z.int().check(z.nonnegative()),
  serverTime: z.string(),
});

export const errorBodySchema = z.object({
  error: z.string(),
  message: z.optional(z.string()),
  rejected: z.optional(z.array(z.object({ seq: z.int(), reason: z.string() }))),
  serverTime: z.optional(z.string()),
});
