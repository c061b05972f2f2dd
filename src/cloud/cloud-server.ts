import { createHash, timingSafeEqual } from 'node:crypto';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { inflateRawSync } from 'node:zlib';
import { z } from 'zod';
import { ConfigError } from '../errors.js';
import {
  COMPACT_BATCH_CONTENT_TYPE,
  type CompactBatch,
  CompactCodecError,
  decodeCompactRaw,
} from '../model/compact-codec.js';
import { parseTimestamp } from '../model/data-point.js';
import type { CloudRecord } from '../model/records-wire.js';
import {
  batchEnvelopeSchema,
  JSON_BATCH_CONTENT_TYPE,
  type RejectedPoint,
  type WirePoint,
  wirePointSchema,
} from '../model/wire.js';
import { HybridClock, hlcTime } from '../sync/hlc.js';
import type { CloudStore, MutationContext, PushDecision } from './cloud-store.js';
import { HttpError } from './http-error.js';
import { BodyError, readBody } from './read-body.js';
import { parseEdit, parsePush, parseRecordPath, pullQuerySchema, stampMutation } from './records-requests.js';
import { RedisCloudStore } from './redis-cloud-store.js';
import { SqliteCloudStore } from './sqlite-cloud-store.js';

/** Options of {@link CloudServer.listen}. */
export interface CloudServerOptions {
  /** TCP port; 0 picks a free one. @default 0 */
  port?: number;
  /** Interface to bind. @default '127.0.0.1' */
  host?: string;
  /** SQLite file of the default store, or `:memory:`. @default ':memory:' */
  dbPath?: string;
  /**
   * Keeps everything in this Redis (`redis://host:6379/0`) instead of SQLite, so that several server nodes can share
   * one store (docs/scaling.md). For a key prefix or a connect timeout, pass `store: await RedisCloudStore.connect(...)`.
   * Give at most one of `dbPath`, `redisUrl` and `store`.
   */
  redisUrl?: string;
  /** Replaces the SQLite store. */
  store?: CloudStore;
  /** Keys accepted as `Authorization: Bearer <key>`. An empty list lets every request in (loopback tests only). */
  apiKeys: readonly string[];
  /** Largest request body on the wire, in bytes. @default 16 MiB */
  maxBodyBytes?: number;
  /** Largest body once inflated, in bytes. @default 64 MiB */
  maxInflatedBytes?: number;
  /**
   * A server-side acceptance rule for single readings (an allow-list of sensors, a value range): return a reason
   * to refuse the reading. A batch with refused readings is answered 422 naming them, and nothing of it is stored.
   */
  validatePoint?: (point: WirePoint, deviceId: string) => string | undefined;
  /**
   * How far ahead of the server's clock a pushed record's stamp may be, in ms. A stamp further ahead is replaced
   * by the server's own (the result says `restamped: true`) and the device is flagged in `GET /records/stats`, so
   * that a device with a fast clock cannot win every last-write-wins conflict. @default 60000
   */
  maxClockSkewMs?: number;
  /** The server's wall clock, in epoch ms: stamps, `serverTime` and the skew rule read it. @default Date.now */
  now?: () => number;
}

const API_PREFIX = '/api/v1';

/** A record as a conflict resolver sees it: with `timestamp`, the physical time of its stamp, in ISO-8601. */
const asResolverSees = (record: CloudRecord) => ({ ...record, timestamp: hlcTime(record.hlc).toISOString() });
const DEFAULT_MAX_CLOCK_SKEW_MS = 60_000;

const digest = (value: string) => createHash('sha256').update(value).digest();

const timestampParam = z
  .string()
  .transform((value, ctx) => {
    const ms = parseTimestamp(/^\d+$/.test(value) ? Number(value) : value);
    if (typeof ms === 'string') {
      ctx.addIssue({ code: 'custom', message: ms });
      return z.NEVER;
    }
    return ms;
  })
  .optional();

const telemetryQuerySchema = z.object({
  deviceId: z.string().min(1).optional(),
  sensorId: z.string().min(1).optional(),
  from: timestampParam,
  to: timestampParam,
  limit: z.coerce.number().int().min(1).max(10_000).default(1000),
  cursor: z.string().regex(/^\d+$/).optional(),
});

/** The store the options choose: SQLite by default, Redis with `redisUrl`. */
async function openStore(options: CloudServerOptions): Promise<CloudStore> {
  const { redisUrl } = options;
  if (redisUrl === undefined) return new SqliteCloudStore(options.dbPath ?? ':memory:');
  if (!/^rediss?:\/\//.test(redisUrl)) {
    throw new ConfigError([
      `Expected the "redisUrl" option to be a redis:// or rediss:// URL (got ${JSON.stringify(redisUrl)})`,
    ]);
  }
  return RedisCloudStore.connect({ url: redisUrl });
}

function decodeJson(body: Buffer): { deviceId: string; replicaId: string; batchNo: number; points: unknown[] } {
  let json: unknown;
  try {
    json = JSON.parse(body.toString('utf8'));
  } catch (error) {
    throw new HttpError(400, 'malformed_json', `the body is not JSON: ${(error as Error).message}`);
  }
  const envelope = batchEnvelopeSchema.safeParse(json);
  if (!envelope.success) throw new HttpError(400, 'bad_batch', z.prettifyError(envelope.error));
  return envelope.data;
}

/**
 * The reference cloud sync server (`edge-gateway/cloud`): takes batches from gateways idempotently, stores them
 * with their acknowledgement in one transaction, and answers queries. Plain `node:http`, no framework.
 *
 * @example
 * ```ts
 * const server = await CloudServer.listen({ port: 0, apiKeys: ['k'] });
 * console.log(server.url); // http://127.0.0.1:41234/api/v1
 * await server.close();
 * ```
 */
export class CloudServer {
  readonly #server: Server;
  readonly #store: CloudStore;
  readonly #options: Required<Omit<CloudServerOptions, 'store' | 'validatePoint' | 'redisUrl'>> &
    Pick<CloudServerOptions, 'validatePoint'>;
  readonly #keys: Buffer[];
  /** Stamps cloud-side edits and restamps pushed ones; follows every stamp it accepts. */
  readonly #clock: HybridClock;
  #port = 0;
  #closing: Promise<void> | undefined;

  private constructor(options: CloudServerOptions, store: CloudStore, lastHlc: string | undefined) {
    this.#options = {
      port: 0,
      host: '127.0.0.1',
      dbPath: ':memory:',
      maxBodyBytes: 16 * 1024 * 1024,
      maxInflatedBytes: 64 * 1024 * 1024,
      ...options,
      maxClockSkewMs: options.maxClockSkewMs ?? DEFAULT_MAX_CLOCK_SKEW_MS,
      now: options.now ?? Date.now,
    };
    this.#store = store;
    this.#clock = new HybridClock({
      now: this.#options.now,
      last: lastHlc,
      maxDriftMs: this.#options.maxClockSkewMs,
    });
    this.#keys = options.apiKeys.map(digest);
    this.#server = createServer((request, response) => {
      this.#handle(request, response).catch((error: unknown) => {
        if (!response.headersSent) this.#send(response, 500, { error: 'internal', message: (error as Error).message });
        else response.destroy();
      });
    });
    this.#server.keepAliveTimeout = 5000;
  }

  /** Starts a server; resolves once it listens. */
  static async listen(options: CloudServerOptions): Promise<CloudServer> {
    const skew = options.maxClockSkewMs;
    if (skew !== undefined && !(Number.isFinite(skew) && skew >= 0)) {
      throw new ConfigError([
        `Expected the "maxClockSkewMs" option to be a non-negative number of milliseconds (got ${String(skew)})`,
      ]);
    }
    const stores = (['dbPath', 'redisUrl', 'store'] as const).filter((name) => options[name] !== undefined);
    if (stores.length > 1) {
      throw new ConfigError([`Give one of the "dbPath", "redisUrl" and "store" options (got ${stores.join(', ')})`]);
    }
    const store = options.store ?? (await openStore(options));
    // The clock starts from the greatest stamp stored, so that its stamps never go backwards across restarts.
    try {
      const server = new CloudServer(options, store, await store.latestHlc());
      await new Promise<void>((resolve, reject) => {
        server.#server.once('error', reject);
        server.#server.listen(server.#options.port, server.#options.host, () => {
          server.#server.off('error', reject);
          // Kept, so that `port` and `url` still answer after close(), e.g. to listen again on the same port.
          server.#port = (server.#server.address() as AddressInfo).port;
          resolve();
        });
      });
      return server;
    } catch (error) {
      // A store opened here is closed here (a Redis connection would keep the process alive).
      if (!options.store) await store.close();
      throw error;
    }
  }

  /** The port it listens on (or listened on, once closed). */
  get port(): number {
    return this.#port;
  }

  /** The API base URL, e.g. `http://127.0.0.1:41234/api/v1`. */
  get url(): string {
    const host = this.#options.host.includes(':') ? `[${this.#options.host}]` : this.#options.host;
    return `http://${host}:${this.port}${API_PREFIX}`;
  }

  /** The store, for queries in tests and tools. */
  get store(): CloudStore {
    return this.#store;
  }

  /** Stops listening, drops open connections and closes the store. Safe to call twice. */
  close(): Promise<void> {
    this.#closing ??= new Promise<void>((resolve) => {
      this.#server.close(() => resolve());
      this.#server.closeAllConnections();
    }).then(() => this.#store.close());
    return this.#closing;
  }

  #send(response: ServerResponse, status: number, body: object, headers: Record<string, string> = {}): void {
    const json = JSON.stringify({ ...body, serverTime: new Date(this.#options.now()).toISOString() });
    response.writeHead(status, {
      'content-type': 'application/json',
      'content-length': Buffer.byteLength(json),
      ...headers,
    });
    response.end(json);
  }

  #authorize(request: IncomingMessage): void {
    if (this.#keys.length === 0) return;
    const header = request.headers.authorization ?? '';
    const match = /^Bearer (.+)$/i.exec(header);
    if (match?.[1]) {
      const presented = digest(match[1]);
      // Compare digests in constant time, against every key, so that timing tells nothing about any of them.
      let ok = false;
      for (const key of this.#keys) ok = timingSafeEqual(presented, key) || ok;
      if (ok) return;
    }
    throw new HttpError(401, 'unauthorized', 'a valid API key is required', {}, { 'www-authenticate': 'Bearer' });
  }

  async #handle(request: IncomingMessage, response: ServerResponse): Promise<void> {
    const url = new URL(request.url ?? '/', 'http://localhost');
    const path = url.pathname.startsWith(API_PREFIX) ? url.pathname.slice(API_PREFIX.length) : url.pathname;
    try {
      if (request.method === 'GET' && path === '/health') {
        this.#send(response, 200, { status: 'ok' });
        return;
      }
      this.#authorize(request);
      if (request.method === 'POST' && path === '/telemetry/batches') {
        await this.#ingest(request, response);
      } else if (request.method === 'GET' && path === '/telemetry') {
        const query = this.#params(telemetryQuerySchema, url);
        this.#send(response, 200, await this.#store.query(query));
      } else if (request.method === 'GET' && path === '/telemetry/stats') {
        const deviceId = url.searchParams.get('deviceId') ?? undefined;
        this.#send(response, 200, await this.#store.stats(deviceId));
      } else if (path.startsWith('/records/')) {
        await this.#records(request, response, url, path.slice('/records/'.length).split('/'));
      } else {
        throw new HttpError(404, 'not_found', `no route for ${request.method} ${url.pathname}`);
      }
    } catch (error) {
      if (request.readableEnded === false) request.resume();
      if (error instanceof HttpError) {
        this.#send(
          response,
          error.status,
          { error: error.error, message: error.message, ...error.extra },
          error.headers,
        );
      } else if (error instanceof BodyError) {
        this.#send(response, error.status, { error: error.error, message: error.message }, { connection: 'close' });
      } else throw error;
    }
  }

  /** The records routes; `segments` is the path after `/records/`, split on `/` and still URL-encoded. */
  async #records(request: IncomingMessage, response: ServerResponse, url: URL, segments: string[]): Promise<void> {
    const [first = '', second] = segments;
    if (segments.length === 1 && request.method === 'POST' && first === 'push') {
      await this.#push(request, response);
    } else if (segments.length === 1 && request.method === 'GET' && first === 'pull') {
      const { cursor, limit } = this.#params(pullQuerySchema, url);
      this.#send(response, 200, await this.#store.pullChanges(cursor, limit));
    } else if (segments.length === 1 && request.method === 'GET' && first === 'stats') {
      this.#send(response, 200, await this.#store.recordStats());
    } else if (segments.length === 2 && second !== undefined && request.method === 'GET') {
      const { collection, key } = parseRecordPath(first, second);
      const record = await this.#store.getRecord(collection, key);
      if (!record) throw new HttpError(404, 'not_found', `no record ${collection}/${key}`);
      this.#send(response, 200, asResolverSees(record));
    } else if (segments.length === 2 && second !== undefined && request.method === 'PUT') {
      const { collection, key } = parseRecordPath(first, second);
      const edit = parseEdit(await this.#readJson(request));
      // Other nodes may share the store: follow the greatest stamp stored by any, so that this edit orders after it.
      const latest = await this.#store.latestHlc();
      if (latest !== undefined && latest > this.#clock.last) this.#clock.receive(latest);
      const record = await this.#store.editRecord(collection, key, edit, this.#clock.tick());
      this.#send(response, 200, asResolverSees(record));
    } else {
      throw new HttpError(404, 'not_found', `no route for ${request.method} ${url.pathname}`);
    }
  }

  /** Every mutation decided in request order, each with its outcome; an invalid one is answered `rejected` alone. */
  async #push(request: IncomingMessage, response: ServerResponse): Promise<void> {
    const push = parsePush(await this.#readJson(request));
    const context: MutationContext = { deviceId: push.deviceId, replicaId: push.replicaId };
    let worstSkewMs: number | undefined;
    const decisions = push.items.map((item): PushDecision => {
      if (item.kind === 'invalid') return item;
      const { stamp, skewMs } = stampMutation(this.#clock, item.mutation.hlc, this.#options.maxClockSkewMs);
      if (stamp.restamped) worstSkewMs = Math.max(worstSkewMs ?? skewMs, skewMs);
      return { kind: 'valid', mutation: item.mutation, stamp };
    });
    const results = await this.#store.pushMutations(context, decisions);
    if (worstSkewMs !== undefined) {
      const at = new Date(this.#options.now()).toISOString();
      await this.#store.flagClockSkew({ ...context, skewMs: worstSkewMs, at });
    }
    this.#send(response, 200, { results });
  }

  /** A JSON body (gzip'd or not), within the body bounds. A content type other than JSON is refused. */
  async #readJson(request: IncomingMessage): Promise<Buffer> {
    const type = (request.headers['content-type'] ?? '').split(';')[0]?.trim().toLowerCase();
    if (type && type !== 'application/json') {
      throw new HttpError(415, 'unsupported_media_type', `content-type ${type} is not supported; use application/json`);
    }
    return readBody(request, this.#options.maxBodyBytes, this.#options.maxInflatedBytes);
  }

  #params<T extends z.ZodType>(schema: T, url: URL): z.output<T> {
    const parsed = schema.safeParse(Object.fromEntries(url.searchParams));
    if (!parsed.success) throw new HttpError(400, 'bad_request', z.prettifyError(parsed.error));
    return parsed.data;
  }

  #decodeCompact(body: Buffer): CompactBatch {
    let raw: Buffer;
    try {
      raw = inflateRawSync(body, { maxOutputLength: this.#options.maxInflatedBytes });
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code === 'ERR_BUFFER_TOO_LARGE' || error instanceof RangeError) {
        throw new HttpError(413, 'payload_too_large', `the body inflates past ${this.#options.maxInflatedBytes} bytes`);
      }
      throw new HttpError(400, 'bad_encoding', `the compact body does not inflate: ${(error as Error).message}`);
    }
    try {
      return decodeCompactRaw(raw);
    } catch (error) {
      if (error instanceof CompactCodecError) throw new HttpError(400, 'bad_batch', error.message);
      throw error;
    }
  }

  async #ingest(request: IncomingMessage, response: ServerResponse): Promise<void> {
    const type = (request.headers['content-type'] ?? '').split(';')[0]?.trim();
    if (type !== JSON_BATCH_CONTENT_TYPE && type !== COMPACT_BATCH_CONTENT_TYPE) {
      throw new HttpError(
        415,
        'unsupported_media_type',
        `content-type ${type || '(none)'} is not supported; use ${JSON_BATCH_CONTENT_TYPE} or ${COMPACT_BATCH_CONTENT_TYPE}`,
      );
    }
    const key = request.headers['idempotency-key'];
    if (typeof key !== 'string' || key.length === 0 || key.length > 200) {
      throw new HttpError(400, 'bad_request', 'the Idempotency-Key header is required');
    }
    const body = await readBody(request, this.#options.maxBodyBytes, this.#options.maxInflatedBytes);
    const hash = createHash('sha256').update(body).digest('hex');

    // A replay is answered from the ledger before anything else: its readings are stored already.
    const known = await this.#store.lookup(key);
    if (known) {
      if (known.hash !== hash)
        throw new HttpError(409, 'idempotency_key_reused', `the key ${key} was used for another body`);
      await this.#store.noteReplay(key);
      this.#send(response, 200, known.ack, { 'idempotent-replayed': 'true' });
      return;
    }

    const batch = type === COMPACT_BATCH_CONTENT_TYPE ? this.#decodeCompact(body) : decodeJson(body);
    if (key !== `${batch.replicaId}:${batch.batchNo}`) {
      throw new HttpError(400, 'bad_request', 'the Idempotency-Key must be {replicaId}:{batchNo} of the body');
    }

    const points: WirePoint[] = [];
    const rejected: RejectedPoint[] = [];
    for (const [index, raw] of batch.points.entries()) {
      const parsed = wirePointSchema.safeParse(raw);
      const seq = typeof (raw as { seq?: unknown })?.seq === 'number' ? (raw as { seq: number }).seq : -index;
      if (!parsed.success) {
        rejected.push({ seq, reason: z.prettifyError(parsed.error).replaceAll('\n', ' ') });
        continue;
      }
      const refusal = this.#options.validatePoint?.(parsed.data, batch.deviceId);
      if (refusal) rejected.push({ seq, reason: refusal });
      else points.push(parsed.data);
    }
    if (rejected.length > 0) {
      throw new HttpError(
        422,
        'invalid_points',
        `${rejected.length} reading(s) refused; nothing of this batch was stored`,
        {
          rejected,
        },
      );
    }

    const outcome = await this.#store.ingest({
      idempotencyKey: key,
      hash,
      deviceId: batch.deviceId,
      replicaId: batch.replicaId,
      batchNo: batch.batchNo,
      points,
    });
    if (outcome.kind === 'conflict')
      throw new HttpError(409, 'idempotency_key_reused', `the key ${key} was used for another body`);
    this.#send(response, 200, outcome.ack, outcome.kind === 'replayed' ? { 'idempotent-replayed': 'true' } : {});
  }
}
