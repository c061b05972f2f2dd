import { createHash, timingSafeEqual } from 'node:crypto';
import type { IncomingMessage } from 'node:http';
import {
  isGatewayStoppedError,
  isNotStartedError,
  isQueueFullError,
  isStorageError,
  isValidationError,
} from '../errors.js';
import type { DataPointInput } from '../model/data-point.js';
import type { TokenBucket } from './token-bucket.js';

/** What the ingest endpoint stores readings into: the gateway. */
export interface IngestTarget {
  sendData(point: DataPointInput): Promise<boolean>;
  sendBatch(points: readonly DataPointInput[]): Promise<number>;
}

/** The bounds of the ingest endpoint, resolved. @internal */
export interface IngestLimits {
  maxBodyBytes: number;
  /** Readings per second; undefined when there is no rate limit. */
  bucket: TokenBucket | undefined;
  /** sha-256 of the bearer token the endpoint requires; undefined when it requires none. */
  tokenDigest: Buffer | undefined;
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
 * listed), 401 (token), 413 (body or batch too large), 415 (not JSON), 429 (rate limit, with Retry-After), 503
 * (queue full, not running), 507 (database full). @internal
 */
export async function ingest(request: IncomingMessage, target: IngestTarget, limits: IngestLimits): Promise<Answer> {
  let input: unknown;
  try {
    checkToken(request, limits.tokenDigest);
    checkHeaders(request, limits.maxBodyBytes);
    input = parse(await readBody(request, limits.maxBodyBytes));
    const readings = Array.isArray(input) ? input.length : 1;
    if (readings === 0) throw new Refusal(400, 'empty_batch', 'expected at least one reading');
    takeTokens(limits.bucket, readings);
  } catch (error) {
    if (error instanceof Refusal) return refused(error);
    throw error;
  }
  try {
    if (Array.isArray(input)) {
      const stored = await target.sendBatch(input as DataPointInput[]);
      return { status: 200, body: { accepted: input.length, stored } };
    }
    const stored = await target.sendData(input as DataPointInput);
    return { status: 200, body: { accepted: 1, stored: stored ? 1 : 0 } };
  } catch (error) {
    return fromGateway(error);
  }
}
