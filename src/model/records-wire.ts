import * as z from '../zod.js';

/**
 * The records half of the sync protocol (DESIGN §4, docs/protocol.md): shared records pushed as mutations and
 * pulled as changes. Shared by the gateway and the reference cloud server; the server enforces these schemas.
 */

/** Limits on a record's names and size, the same on both sides. */
export const RECORD_LIMITS = {
  collectionLength: 128,
  keyLength: 512,
  /** Largest value as JSON, in bytes. */
  valueBytes: 256 * 1024,
  /** Most mutations in one push. */
  mutationsPerPush: 500,
  /** Most changes in one pull page. */
  changesPerPull: 1000,
} as const;

/** `[A-Za-z0-9_.-]`: collections appear in URL paths. */
const collectionSchema = z
  .string()
  .check(
    z.minLength(1),
    z.maxLength(RECORD_LIMITS.collectionLength),
    z.regex(/^[A-Za-z0-9_.-]+$/, 'letters, digits, "_", "." and "-" only'),
  );
const keySchema = z.string().check(z.minLength(1), z.maxLength(RECORD_LIMITS.keyLength));
/** A hybrid logical clock stamp as written by {@link formatHlc}: 15-digit ms, '-', 6-digit counter. */
export const hlcSchema = z
  .string()
  .check(z.regex(/^\d{15}-\d{6}$/, 'a hybrid logical clock stamp (000000000000000-000000)'));

/** Longest mutation id (`mid`); zod/mini schemas do not tell their bounds, so the server's message reads it here. */
export const MID_MAX_LENGTH = 128;

export const recordMutationSchema = z.strictObject({
  /** Unique per mutation: `{replicaId}:{local id}`. The server stores its outcome under it. */
  mid: z.string().check(z.minLength(1), z.maxLength(MID_MAX_LENGTH)),
  collection: collectionSchema,
  key: keySchema,
  op: z.enum(['put', 'delete']),
  /** The new value (put only); any JSON. */
  value: z.optional(z.unknown()),
  /** The cloud version the edit was made on; 0 when the edge has never seen the record. */
  baseVersion: z.int().check(z.nonnegative()),
  hlc: hlcSchema,
});
export type RecordMutation = z.infer<typeof recordMutationSchema>;

export const pushRequestSchema = z.strictObject({
  deviceId: z.string().check(z.minLength(1), z.maxLength(256)),
  replicaId: z.string().check(z.minLength(1), z.maxLength(64)),
  mutations: z.array(recordMutationSchema).check(z.minLength(1), z.maxLength(RECORD_LIMITS.mutationsPerPush)),
});
export type PushRequest = z.infer<typeof pushRequestSchema>;

/**
 * Who pulls: the `deviceId` and `replicaId` of its pushes, sent as query parameters of `GET /records/pull`. With
 * both, the server leaves out the changes whose stored state is exactly what this replica's own accepted mutation
 * wrote, at the version its `applied` answer gave: the puller holds those already. A change the server restamped,
 * and any change written by someone else since, still comes. Without them (older gateways), every change comes.
 */
export const pullRequesterSchema = z.pick(pushRequestSchema, { deviceId: true, replicaId: true });
export type PullRequester = z.infer<typeof pullRequesterSchema>;

/** A record as the cloud holds it (and as a pull returns it). A deleted record is a tombstone: `value` null. */
export const cloudRecordSchema = z.object({
  collection: z.string(),
  key: z.string(),
  value: z.unknown(),
  deleted: z.boolean(),
  /** Counts up by one on every applied change; 0 means the record never existed. */
  version: z.int().check(z.nonnegative()),
  hlc: hlcSchema,
  /** The replica id that wrote it, or `cloud` for an edit through `PUT /records/...`. */
  origin: z.string(),
});
export type CloudRecord = z.infer<typeof cloudRecordSchema>;

/**
 * The outcome of one mutation. `applied`: stored at `version` with `hlc` (the server's restamp when the edge's
 * clock was too far ahead). `conflict`: `baseVersion` was not the current version; `current` is the cloud's
 * record. `rejected`: invalid, never applicable; `reason` says why.
 */
export const mutationResultSchema = z.discriminatedUnion('status', [
  z.object({
    mid: z.string(),
    status: z.literal('applied'),
    version: z.int().check(z.positive()),
    hlc: hlcSchema,
    restamped: z.optional(z.boolean()),
  }),
  z.object({ mid: z.string(), status: z.literal('conflict'), current: cloudRecordSchema }),
  z.object({ mid: z.string(), status: z.literal('rejected'), reason: z.string() }),
]);
export type MutationResult = z.infer<typeof mutationResultSchema>;

export const pushResponseSchema = z.object({
  results: z.array(mutationResultSchema),
  serverTime: z.string(),
});
export type PushResponse = z.infer<typeof pushResponseSchema>;

/** One change of a pull page: the record's state after the change, and the server sequence it got. */
export const recordChangeSchema = z.extend(cloudRecordSchema, { seq: z.int().check(z.positive()) });
export type RecordChange = z.infer<typeof recordChangeSchema>;

export const pullResponseSchema = z.object({
  /**
   * Up to `limit` changes. The changes left out for the puller (see {@link PullRequester}) do not count toward it, but
   * a page looks at a bounded number of changes: one that reached the bound may hold fewer, even none, and go on.
   */
  changes: z.array(recordChangeSchema),
  /**
   * Pass back as `cursor` for the next page: the `seq` of the last change the page consumed, returned or left out
   * (on a page of `limit` changes, the last returned); the request's cursor when it consumed none.
   */
  cursor: z.int().check(z.nonnegative()),
  /** Whether changes past `cursor` remain: ask again, even after a page with no changes. */
  hasMore: z.boolean(),
  serverTime: z.string(),
});
export type PullResponse = z.infer<typeof pullResponseSchema>;

/** Body of `PUT /records/{collection}/{key}`: a cloud-side edit. `deleted: true` makes a tombstone. */
export const cloudEditSchema = z.strictObject({
  value: z.optional(z.unknown()),
  deleted: z.optional(z.boolean()),
});

export { collectionSchema as recordCollectionSchema, keySchema as recordKeySchema };

const HLC_MS_DIGITS = 15;
const HLC_COUNTER_DIGITS = 6;
/** Largest logical counter; past it the clock waits for the physical time to move (never happens in practice). */
export const HLC_MAX_COUNTER = 999_999;

/** A hybrid logical clock reading (Kulkarni et al. 2014): physical ms and a logical counter. */
export interface HlcStamp {
  readonly ms: number;
  readonly counter: number;
}

/** Fixed-width text, so that stamps compare as strings in the same order as in time. */
export function formatHlc(stamp: HlcStamp): string {
  return `${String(stamp.ms).padStart(HLC_MS_DIGITS, '0')}-${String(stamp.counter).padStart(HLC_COUNTER_DIGITS, '0')}`;
}

export function parseHlc(text: string): HlcStamp {
  const match = /^(\d{15})-(\d{6})$/.exec(text);
  if (!match) throw new RangeError(`not a hybrid logical clock stamp: ${JSON.stringify(text)}`);
  return { ms: Number(match[1]), counter: Number(match[2]) };
}
