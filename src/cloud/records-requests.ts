import * as z from 'zod';
import {
  cloudEditSchema,
  MID_MAX_LENGTH,
  parseHlc,
  pullRequesterSchema,
  pushRequestSchema,
  RECORD_LIMITS,
  type RecordMutation,
  recordCollectionSchema,
  recordKeySchema,
  recordMutationSchema,
} from '../model/records-wire.js';
import type { HybridClock } from '../sync/hlc.js';
import { parseJsonBody } from './batch-requests.js';
import type { RecordEdit, RecordStamp } from './cloud-store.js';
import { HttpError } from './http-error.js';

/**
 * Reading the requests of the records routes: the push envelope and its mutations one by one, the pull query,
 * record paths and cloud-side edits. A request the server cannot read at all throws {@link HttpError}; a single
 * mutation that is readable but invalid is returned with the reason, to be answered `rejected`.
 */

/** The push envelope; its mutations are checked one by one, so that an invalid one is refused alone. */
const pushEnvelopeSchema = z.strictObject({
  ...pushRequestSchema.shape,
  mutations: z.array(z.unknown()).min(1).max(RECORD_LIMITS.mutationsPerPush),
});

const midSchema = recordMutationSchema.shape.mid;

/** One mutation of a push: valid, or refused with a reason. Either way it has a `mid` to store its outcome under. */
export type PushItem =
  | { kind: 'valid'; mid: string; mutation: RecordMutation }
  | { kind: 'invalid'; mid: string; reason: string };

export interface ParsedPush {
  deviceId: string;
  replicaId: string;
  /** In request order. */
  items: PushItem[];
}

/** `path: message; path: message`, one line, each problem named by its field. */
function describeIssues(error: z.core.$ZodError): string {
  return error.issues
    .map((issue) => (issue.path.length > 0 ? `${issue.path.join('.')}: ${issue.message}` : issue.message))
    .join('; ');
}

/** Why a value cannot be stored, or `undefined`. */
function valueProblem(value: unknown): string | undefined {
  const bytes = Buffer.byteLength(JSON.stringify(value));
  return bytes > RECORD_LIMITS.valueBytes
    ? `value: ${bytes} bytes as JSON; at most ${RECORD_LIMITS.valueBytes} are accepted`
    : undefined;
}

function checkMutation(mid: string, raw: unknown): PushItem {
  const parsed = recordMutationSchema.safeParse(raw);
  if (!parsed.success) return { kind: 'invalid', mid, reason: describeIssues(parsed.error) };
  const mutation = parsed.data;
  let reason: string | undefined;
  if (mutation.op === 'put') {
    reason = mutation.value === undefined ? 'value: a put needs a value' : valueProblem(mutation.value);
  } else if (mutation.value !== undefined && mutation.value !== null) {
    reason = 'value: a delete carries no value';
  }
  return reason === undefined ? { kind: 'valid', mid, mutation } : { kind: 'invalid', mid, reason };
}

/**
 * Reads a push body. Throws a 400 when the envelope is unreadable, nests deeper than `maxDepth`, or a mutation has
 * no readable `mid` (nothing of the push is processed then); otherwise returns every mutation, valid or with the
 * reason it is not.
 */
export function parsePush(body: Buffer, maxDepth: number): ParsedPush {
  const envelope = pushEnvelopeSchema.safeParse(parseJsonBody(body, maxDepth));
  if (!envelope.success) throw new HttpError(400, 'bad_push', describeIssues(envelope.error));
  const items = envelope.data.mutations.map((raw, index): PushItem => {
    const mid = midSchema.safeParse(
      typeof raw === 'object' && raw !== null ? (raw as { mid?: unknown }).mid : undefined,
    );
    if (!mid.success) {
      throw new HttpError(
        400,
        'bad_push',
        `mutations.${index}: no readable mid (a string of 1 to ${MID_MAX_LENGTH} characters)`,
      );
    }
    return checkMutation(mid.data, raw);
  });
  return { deviceId: envelope.data.deviceId, replicaId: envelope.data.replicaId, items };
}

/** The query of `GET /records/pull`. */
export const pullQuerySchema = z
  .object({
    /** The `cursor` of the previous page; 0 (the default) starts from the first change. */
    cursor: z
      .string()
      .regex(/^\d{1,15}$/, 'a non-negative integer')
      .transform(Number)
      .default(0),
    limit: z.coerce.number().int().min(1).max(RECORD_LIMITS.changesPerPull).default(RECORD_LIMITS.changesPerPull),
    /** Who pulls, both or neither: its own changes it already holds are left out (see `PullRequester`). */
    deviceId: z.optional(pullRequesterSchema.shape.deviceId),
    replicaId: z.optional(pullRequesterSchema.shape.replicaId),
  })
  .refine((query) => (query.deviceId === undefined) === (query.replicaId === undefined), {
    message: 'give deviceId and replicaId together, or neither',
    path: ['replicaId'],
  });

/** The collection and key of a record path's two segments (`/records/{collection}/{key}`, URL-encoded). */
export function parseRecordPath(collectionSegment: string, keySegment: string): { collection: string; key: string } {
  let collection: string;
  let key: string;
  try {
    collection = decodeURIComponent(collectionSegment);
    key = decodeURIComponent(keySegment);
  } catch {
    throw new HttpError(400, 'bad_request', 'the record path is not validly percent-encoded');
  }
  const problems = [
    ...(recordCollectionSchema.safeParse(collection).error?.issues.map((i) => `collection: ${i.message}`) ?? []),
    ...(recordKeySchema.safeParse(key).error?.issues.map((i) => `key: ${i.message}`) ?? []),
  ];
  if (problems.length > 0) throw new HttpError(400, 'bad_request', problems.join('; '));
  return { collection, key };
}

/** Reads the body of `PUT /records/{collection}/{key}`: `{ value }` or `{ deleted: true }`; throws a 400 if not. */
export function parseEdit(body: Buffer, maxDepth: number): RecordEdit {
  const parsed = cloudEditSchema.safeParse(parseJsonBody(body, maxDepth));
  if (!parsed.success) throw new HttpError(400, 'bad_record', describeIssues(parsed.error));
  const { value, deleted } = parsed.data;
  if (deleted === true) {
    if (value !== undefined) throw new HttpError(400, 'bad_record', 'give either value or deleted: true, not both');
    return { op: 'delete' };
  }
  if (value === undefined) throw new HttpError(400, 'bad_record', 'the body needs value, or deleted: true');
  const problem = valueProblem(value);
  if (problem) throw new HttpError(400, 'bad_record', problem);
  return { op: 'put', value };
}

/**
 * The stamp a pushed mutation is stored with. A stamp more than `maxSkewMs` ahead of the server's physical time
 * is replaced by the server's own, so that a fast clock cannot win last-write-wins; any other stamp is kept, and
 * the server's clock follows it. `skewMs`: how far the stamp was ahead (negative when behind).
 */
export function stampMutation(
  clock: HybridClock,
  hlc: string,
  maxSkewMs: number,
): { stamp: RecordStamp; skewMs: number } {
  const skewMs = parseHlc(hlc).ms - clock.physical();
  if (skewMs <= maxSkewMs && clock.receive(hlc)) return { stamp: { hlc, restamped: false }, skewMs };
  return { stamp: { hlc: clock.tick(), restamped: true }, skewMs };
}
