import { createHash, timingSafeEqual } from 'node:crypto';
import type { IncomingMessage } from 'node:http';
import {
  isGatewayStoppedError,
  isNotStartedError,
  isQueueFullError,
  isStorageError,
  isValidationError,
} from '../errors.js';
import type { IngestKeyBounds, IngestKeyClaim, IngestKeyLookup } from '../gateway/ingest-keys.js';
import type { DataPointInput } from '../model/data-point.js';
import type { TokenBucket } from './token-bucket.js';

/** What the ingest endpoint stores readings into: the gateway. */
export interface IngestTarget {
  /** `EdgeGateway.sendData()`, committing `key` (when given) in the reading's transaction. */
  sendData(point: DataPointInput, key?: IngestKeyClaim): Promise<boolean>;
  /** `EdgeGateway.sendBatch()`, committing `key` (when given) in the readings' transaction. */
  sendBatch(points: readonly DataPointInput[], key?: IngestKeyClaim): Promise<number>;
  /**
   * Looks an idempotency key up and holds it for the caller when it is unknown. Throws as `sendData()` rejects
   * when the gateway is not running.
   */
  claimIngestKey(idempotencyKey: string, hash: string, bounds: IngestKeyBounds): IngestKeyLookup;
}

/** Longest `Idempotency-Key` taken, in characters: room for a UUID and a prefix of the client's own. */
const MAX_IDEMPOTENCY_KEY_LENGTH = 255;
/** Printable ASCII: space to `~`. */
const PRINTABLE_ASCII = /^[\x20-\x7e]*$/;

/** The bounds of the ingest endpoint, resolved. @internal */
export interface IngestLimits {
  maxBodyBytes: number;
  /** Readings per second; undefined when there is no rate limit. */
  bucket: TokenBucket | undefined;
  /** sha-256 of the bearer token the endpoint requires; undefined when it requires none. */
  tokenDigest: Buffer | undefined;
  /** How long and how many idempotency keys are kept. */
  idempotency: IngestKeyBounds;
}

/** An HTTP answer: status, JSON body, extra headers. @internal */
export interface Answer {
  status: number;
  body: Record<string, unknown>;
  headers?: Record<string, string>;
}

/** A request refused before anything was stored. */
class Refusal extends Error {
  constructor(
    readonly status: number,
    readonly error: string,
    message: string,
    readonly headers: Record<string, string> = {},
    readonly extra: Record<string, unknown> = {},
  ) {
    super(message);
    this.name = 'Refusal';
  }
}

const refused = (refusal: Refusal): Answer => ({
  status: refusal.status,
  body: { error: refusal.error, message: refusal.message, ...refusal.extra },
  headers: refusal.headers,
});

/** sha-256 of a secret: compared in constant time, and the same length whatever the secret's. */
export const digest = (secret: string): Buffer => createHash('sha256').update(secret).digest();

function checkToken(request: IncomingMessage, expected: Buffer | undefined): void {
  if (!expected) return;
  const match = /^Bearer (.+)$/i.exec(request.headers.authorization ?? '');
  if (match?.[1] && timingSafeEqual(digest(match[1]), expected)) return;
  throw new Refusal(401, 'unauthorized', 'a valid ingest token is required (Authorization: Bearer <token>)', {
    'www-authenticate': 'Bearer',
  });
}

function checkHeaders(request: IncomingMessage, maxBodyBytes: number): void {
  const type = (request.headers['content-type'] ?? '').split(';')[0]?.trim().toLowerCase();
  if (type !== 'application/json') {
    throw new Refusal(415, 'unsupported_media_type', `expected content-type application/json, got ${type || 'none'}`);
  }
  const encoding = (request.headers['content-encoding'] ?? 'identity').trim().toLowerCase();
  if (encoding !== 'identity') {
    throw new Refusal(415, 'unsupported_encoding', `content-encoding ${encoding} is not accepted; send plain JSON`);
  }
  const declared = Number(request.headers['content-length']);
  if (Number.isFinite(declared) && declared > maxBodyBytes) {
    throw new Refusal(413, 'payload_too_large', `the body is ${declared} bytes; at most ${maxBodyBytes} are accepted`, {
      connection: 'close',
    });
  }
}

// Stops reading at the bound: an oversize body costs no more memory than the bound.
async function readBody(request: IncomingMessage, maxBytes: number): Promise<Buffer> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of request as AsyncIterable<Buffer>) {
    size += chunk.length;
    if (size > maxBytes) {
      throw new Refusal(413, 'payload_too_large', `the body exceeds ${maxBytes} bytes`, { connection: 'close' });
    }
    chunks.push(chunk);
  }
  return Buffer.concat(chunks, size);
}

// The key is opaque: the field's value as sent (a draft-style quoted string keeps its quotes), compared byte for byte.
function idempotencyKeyOf(request: IncomingMessage): string | undefined {
  const values = request.headersDistinct['idempotency-key'];
  if (values === undefined) return undefined;
  const invalid = (why: string) => new Refusal(400, 'invalid_idempotency_key', `the Idempotency-Key header ${why}`);
  if (values.length > 1) throw invalid(`was sent ${values.length} times; send it once`);
  const key = values[0] ?? '';
  if (key.length === 0 || key.length > MAX_IDEMPOTENCY_KEY_LENGTH) {
    throw invalid(`must be 1 to ${MAX_IDEMPOTENCY_KEY_LENGTH} characters long, got ${key.length}`);
  }
  if (!PRINTABLE_ASCII.test(key)) throw invalid('must be printable ASCII (space to ~), with no control character');
  return key;
}

// A key seen before is answered here, before the body is parsed or counted against the rate limit: a replay stores
// nothing. A new key is held for this request until it is answered.
function claimKey(target: IngestTarget, key: string, body: Buffer, bounds: IngestKeyBounds): IngestKeyClaim | Answer {
  const hash = createHash('sha256').update(body).digest('hex');
  const found = target.claimIngestKey(key, hash, bounds);
  switch (found.kind) {
    case 'claimed':
      return found.claim;
    case 'replayed':
      return {
        status: 200,
        body: { accepted: found.accepted, stored: found.stored },
        headers: { 'idempotent-replayed': 'true' },
      };
    case 'conflict':
      throw new Refusal(
        422,
        'idempotency_key_reused',
        'this Idempotency-Key was used for a request with another body; send new readings under a new key',
      );
    case 'in-progress':
      throw new Refusal(
        409,
        'idempotency_key_in_use',
        'a request with this Idempotency-Key is still being processed; retry once it is answered',
        { 'retry-after': '1' },
      );
    case 'unsupported':
      throw new Refusal(
        501,
        'idempotency_unsupported',
        "the gateway's storage keeps no idempotency keys; send the request without an Idempotency-Key",
      );
  }
}

function parse(body: Buffer): unknown {
  try {
    return JSON.parse(body.toString('utf8'));
  } catch (error) {
    throw new Refusal(400, 'malformed_json', `the body is not valid JSON: ${(error as Error).message}`);
  }
}

function takeTokens(bucket: TokenBucket | undefined, readings: number): void {
  if (!bucket) return;
  const taken = bucket.take(readings);
  if (taken.ok) return;
  if (!Number.isFinite(taken.retryAfterSeconds)) {
    throw new Refusal(
      413,
      'too_many_readings',
      `${readings} readings in one request; the rate limit lets at most ${bucket.capacity} through at once`,
    );
  }
  throw new Refusal(
    429,
    'rate_limited',
    `more than ${bucket.ratePerSecond} readings/s; retry in ${taken.retryAfterSeconds} s`,
    { 'retry-after': String(taken.retryAfterSeconds) },
  );
}

// What the gateway refused, as HTTP: the caller's fault (4xx) or the gateway's state (5xx). Nothing was stored.
function fromGateway(error: unknown): Answer {
  if (isValidationError(error)) {
    return refused(new Refusal(400, 'invalid_reading', error.message, {}, { issues: error.issues }));
  }
  if (isQueueFullError(error)) {
    return refused(new Refusal(503, 'queue_full', error.message, { 'retry-after': '30' }));
  }
  if (isStorageError(error)) {
    return error.sqliteCode === 'SQLITE_FULL'
      ? refused(new Refusal(507, 'storage_full', error.message, { 'retry-after': '60' }))
      : refused(new Refusal(500, 'storage_failed', error.message));
  }
  if (isGatewayStoppedError(error) || isNotStartedError(error)) {
    return refused(new Refusal(503, 'not_running', 'the gateway is not running', { 'retry-after': '5' }));
  }
  throw error;
}

/**
 * `POST /api/v1/data`: one reading (an object) or many (an array), validated by the gateway and answered only
 * once every one of them is durable (`sendData()` or `sendBatch()` resolved): `200 {accepted, stored}`. A batch is
 * stored whole or not at all. Refusals store nothing: 400 (malformed JSON, an invalid reading: the issues are
 * listed; a malformed Idempotency-Key), 401 (token), 413 (body or batch too large), 415 (not JSON), 429 (rate
 * limit, with Retry-After), 503 (queue full, not running), 507 (database full).
 *
 * With an `Idempotency-Key`, the key is committed in the readings' transaction with the answer, and a retry with the
 * same key and body is answered that answer again, with `Idempotent-Replayed: true`, storing nothing; the same key
 * with another body is refused with 422, and while the first request is in flight with 409. Refusals record no key.
 * @internal
 */
export async function ingest(request: IncomingMessage, target: IngestTarget, limits: IngestLimits): Promise<Answer> {
  let input: unknown;
  let claim: IngestKeyClaim | undefined;
  try {
    checkToken(request, limits.tokenDigest);
    checkHeaders(request, limits.maxBodyBytes);
    const key = idempotencyKeyOf(request);
    const body = await readBody(request, limits.maxBodyBytes);
    if (key !== undefined) {
      const claimed = claimKey(target, key, body, limits.idempotency);
      if ('status' in claimed) return claimed;
      claim = claimed;
    }
    input = parse(body);
    const readings = Array.isArray(input) ? input.length : 1;
    if (readings === 0) throw new Refusal(400, 'empty_batch', 'expected at least one reading');
    takeTokens(limits.bucket, readings);
  } catch (error) {
    claim?.release();
    if (error instanceof Refusal) return refused(error);
    return fromGateway(error);
  }
  try {
    if (Array.isArray(input)) {
      const stored = await target.sendBatch(input as DataPointInput[], claim);
      return { status: 200, body: { accepted: input.length, stored } };
    }
    const stored = await target.sendData(input as DataPointInput, claim);
    return { status: 200, body: { accepted: 1, stored: stored ? 1 : 0 } };
  } catch (error) {
    return fromGateway(error);
  } finally {
    // Committed with the readings, or refused with them: either way the key is no longer in flight.
    claim?.release();
  }
}
