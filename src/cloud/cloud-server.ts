import { createHash } from 'node:crypto';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { createServer as createHttpsServer } from 'node:https';
import type { AddressInfo } from 'node:net';
import * as z from 'zod';
import { ConfigError } from '../errors.js';
import { type Logger, silentLogger } from '../logger.js';
import { COMPACT_BATCH_CONTENT_TYPE } from '../model/compact-codec.js';
import { parseTimestamp } from '../model/data-point.js';
import type { CloudRecord } from '../model/records-wire.js';
import { JSON_BATCH_CONTENT_TYPE, type RejectedPoint, type WirePoint, wirePointSchema } from '../model/wire.js';
import { HybridClock, hlcTime } from '../sync/hlc.js';
import { type ApiKey, ApiKeyring, type Caller, type RateLimit, rateLimitSchema } from './api-keys.js';
import { type DecodedBatch, decodeCompactBatch, decodeJsonBatch } from './batch-requests.js';
import type {
  CloudStore,
  MutationContext,
  PushDecision,
  StoredPoint,
  TelemetryQuery,
  TelemetryStats,
} from './cloud-store.js';
import { HttpError } from './http-error.js';
import { jsonValueTooDeep } from './json-depth.js';
import { defaultBurst, RateLimiter } from './rate-limiter.js';
import { BodyError, discardBody, readBody } from './read-body.js';
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
  /**
   * Keys accepted as `Authorization: Bearer <key>`: a plain string is valid for every device; an
   * {@link ApiKeyEntry} can be bound to devices, given by its hash, named and rate-limited on its own. Several
   * keys may be valid at once (rotation with overlap); {@link CloudServer.setApiKeys} changes them at run time.
   * An empty list lets every request in (loopback tests only).
   *
   * @example
   * ```ts
   * apiKeys: [{ key: keyOfDeviceA, devices: ['dev-a'] }, operatorKey]
   * ```
   */
  apiKeys: readonly ApiKey[];
  /**
   * Each key's request budget (a token bucket per key); a request over it is answered 429 with `Retry-After` in
   * seconds. An entry's own `rateLimit` replaces it. `GET /health` is never limited. @default no limit
   */
  rateLimit?: RateLimit;
  /** Largest request body on the wire, in bytes. @default 16 MiB */
  maxBodyBytes?: number;
  /** Largest body once inflated, in bytes. @default 64 MiB */
  maxInflatedBytes?: number;
  /** Deepest nesting of arrays and objects a JSON body may have; deeper bodies are answered 400. @default 64 */
  maxJsonDepth?: number;
  /** Time a client has to send a request's headers, in ms; then 408 and the connection closes. @default 10000 */
  headersTimeoutMs?: number;
  /** Time a client has to send a whole request, in ms; at least `headersTimeoutMs`. @default 60000 */
  requestTimeoutMs?: number;
  /** Longest pause between two pieces of a request body, in ms; then 408 and the connection closes. @default 10000 */
  bodyIdleTimeoutMs?: number;
  /**
   * Where the server says what it refused and why: one `debug` line per request, `info` for refused keys and
   * rate limits, `warn` for a key acting beyond its devices, `error` for a failure of its own. Keys never appear,
   * only their names. @default silent
   */
  logger?: Logger;
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
  /**
   * The server's wall clock, in epoch ms: stamps, `serverTime`, the skew rule and the rate limits read it.
   * @default Date.now
   */
  now?: () => number;
  /**
   * Listen with TLS (HTTPS) instead of plain HTTP: the server's `key` and `cert` (PEM; `cert` may be followed by
   * its intermediates, which are then sent to clients). With `requestCert`, a client must present a certificate
   * that chains to `ca` (mutual TLS), or the handshake is refused. @default undefined (plain HTTP)
   */
  tls?: CloudServerTls | undefined;
}

/** The TLS settings of {@link CloudServerOptions.tls}. */
export interface CloudServerTls {
  key: string | Buffer;
  cert: string | Buffer;
  /** The CAs that client certificates must chain to, with `requestCert`. */
  ca?: string | Buffer | readonly (string | Buffer)[] | undefined;
  /** Ask every client for a certificate, and refuse the handshake without one that chains to `ca`. @default false */
  requestCert?: boolean | undefined;
}

const API_PREFIX = '/api/v1';

/** A record as a conflict resolver sees it: with `timestamp`, the physical time of its stamp, in ISO-8601. */
const asResolverSees = (record: CloudRecord) => ({ ...record, timestamp: hlcTime(record.hlc).toISOString() });
const DEFAULTS = {
  port: 0,
  host: '127.0.0.1',
  dbPath: ':memory:',
  maxBodyBytes: 16 * 1024 * 1024,
  maxInflatedBytes: 64 * 1024 * 1024,
  maxJsonDepth: 64,
  headersTimeoutMs: 10_000,
  requestTimeoutMs: 60_000,
  bodyIdleTimeoutMs: 10_000,
  maxClockSkewMs: 60_000,
} as const;

/** The caller of a server without keys: every request is let in, under one budget. */
const OPEN_CALLER: Caller = { name: 'open', id: 'open', devices: undefined, rateLimit: undefined };

/** Text from a request, cut short, for messages and logs. */
const clip = (text: string, max = 200) => (text.length > max ? `${text.slice(0, max)}…` : text);

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

/** A cursor of one device's pages (the store's), or of several devices' (`m{device index}.{store cursor}`). */
const CURSOR = /^(?:\d{1,20}|m\d{1,6}\.\d{0,20})$/;

const telemetryQuerySchema = z.object({
  deviceId: z.string().min(1).max(256).optional(),
  sensorId: z.string().min(1).max(256).optional(),
  from: timestampParam,
  to: timestampParam,
  limit: z.coerce.number().int().min(1).max(10_000).default(1000),
  cursor: z.string().regex(CURSOR, 'a cursor from a previous page').optional(),
});

const statsQuerySchema = z.object({ deviceId: z.string().min(1).max(256).optional() });

/** The store the options choose: SQLite by default, Redis with `redisUrl`. */
async function openStore(options: CloudServerOptions): Promise<CloudStore> {
  const { redisUrl } = options;
  if (redisUrl === undefined) return new SqliteCloudStore(options.dbPath ?? DEFAULTS.dbPath);
  if (!/^rediss?:\/\//.test(redisUrl)) {
    throw new ConfigError([
      `Expected the "redisUrl" option to be a redis:// or rediss:// URL (got ${JSON.stringify(redisUrl)})`,
    ]);
  }
  return RedisCloudStore.connect({ url: redisUrl });
}

/** Checks the numeric options; throws {@link ConfigError} naming each bad one. */
function checkOptions(options: CloudServerOptions): void {
  const problems: string[] = [];
  const positive = (name: keyof CloudServerOptions, integer: boolean) => {
    const value = options[name];
    if (value === undefined) return;
    if (typeof value !== 'number' || !(value > 0) || !Number.isFinite(value) || (integer && !Number.isInteger(value))) {
      problems.push(
        `Expected the "${name}" option to be a positive ${integer ? 'integer' : 'number'} (got ${String(value)})`,
      );
    }
  };
  for (const name of [
    'maxBodyBytes',
    'maxInflatedBytes',
    'maxJsonDepth',
    'headersTimeoutMs',
    'requestTimeoutMs',
    'bodyIdleTimeoutMs',
  ] as const) {
    positive(name, true);
  }
  const skew = options.maxClockSkewMs;
  if (skew !== undefined && !(Number.isFinite(skew) && skew >= 0)) {
    problems.push(
      `Expected the "maxClockSkewMs" option to be a non-negative number of milliseconds (got ${String(skew)})`,
    );
  }
  const headers = options.headersTimeoutMs ?? DEFAULTS.headersTimeoutMs;
  const whole = options.requestTimeoutMs ?? DEFAULTS.requestTimeoutMs;
  if (headers > whole) {
    problems.push(`Expected the "headersTimeoutMs" option (${headers}) to be at most "requestTimeoutMs" (${whole})`);
  }
  if (options.rateLimit !== undefined) {
    const parsed = rateLimitSchema.safeParse(options.rateLimit);
    if (!parsed.success) {
      problems.push(
        ...parsed.error.issues.map(
          (i) => `Expected the "rateLimit.${i.path.join('.')}" option to be valid: ${i.message}`,
        ),
      );
    }
  }
  if (problems.length > 0) throw new ConfigError(problems);
}

/**
 * The reference cloud sync server (`edge-gateway/cloud`): takes batches from gateways idempotently, stores them
 * with their acknowledgement in one transaction, and answers queries. Plain `node:http`, no framework.
 *
 * Access: every route but `GET /health` needs an API key. A key bound to devices may write, read, push records and
 * name a records puller only for those devices (403 otherwise), sees only their readings, and may not make
 * cloud-side record edits;
 * shared records are fleet-wide, readable by every key (see docs/security.md).
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
  readonly #options: Required<
    Omit<CloudServerOptions, 'store' | 'validatePoint' | 'rateLimit' | 'logger' | 'tls' | 'redisUrl'>
  > &
    Pick<CloudServerOptions, 'validatePoint' | 'rateLimit' | 'tls'>;
  readonly #logger: Logger;
  #keyring: ApiKeyring;
  readonly #limiter: RateLimiter;
  /** Stamps cloud-side edits and restamps pushed ones; follows every stamp it accepts. */
  readonly #clock: HybridClock;
  #port = 0;
  #closing: Promise<void> | undefined;

  private constructor(
    options: CloudServerOptions,
    keyring: ApiKeyring,
    store: CloudStore,
    lastHlc: string | undefined,
  ) {
    const { store: _store, logger, ...rest } = options;
    this.#options = { ...DEFAULTS, ...rest, now: options.now ?? Date.now };
    this.#logger = logger ?? silentLogger;
    this.#store = store;
    this.#keyring = keyring;
    this.#limiter = new RateLimiter(this.#options.now);
    this.#clock = new HybridClock({
      now: this.#options.now,
      last: lastHlc,
      maxDriftMs: this.#options.maxClockSkewMs,
    });
    const { headersTimeoutMs, requestTimeoutMs } = this.#options;
    const limits = {
      headersTimeout: headersTimeoutMs,
      requestTimeout: requestTimeoutMs,
      // Node looks for overdue requests this often; its default (30 s) would let a slow client stay far longer.
      connectionsCheckingInterval: Math.max(50, Math.min(1000, Math.floor(headersTimeoutMs / 4))),
    };
    const handler = (request: IncomingMessage, response: ServerResponse) => {
      this.#handle(request, response).catch((error: unknown) => this.#failed(request, response, error));
    };
    const tls = options.tls;
    this.#server = tls
      ? createHttpsServer(
          {
            ...limits,
            key: tls.key,
            cert: tls.cert,
            ...(tls.ca === undefined ? {} : { ca: tls.ca as string | Buffer | (string | Buffer)[] }),
            requestCert: tls.requestCert ?? false,
            rejectUnauthorized: tls.requestCert ?? false,
          },
          handler,
        )
      : createServer(limits, handler);
    this.#server.keepAliveTimeout = 5000;
  }

  /** Starts a server; resolves once it listens. Throws {@link ConfigError} on a bad option or key. */
  static async listen(options: CloudServerOptions): Promise<CloudServer> {
    checkOptions(options);
    const keyring = ApiKeyring.from(options.apiKeys);
    const stores = (['dbPath', 'redisUrl', 'store'] as const).filter((name) => options[name] !== undefined);
    if (stores.length > 1) {
      throw new ConfigError([`Give one of the "dbPath", "redisUrl" and "store" options (got ${stores.join(', ')})`]);
    }
    const store = options.store ?? (await openStore(options));
    try {
      // The clock starts from the greatest stamp stored, so that its stamps never go backwards across restarts.
      const server = new CloudServer(options, keyring, store, await store.latestHlc());
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

  /** The API base URL, e.g. `http://127.0.0.1:41234/api/v1` (`https://` with the `tls` option). */
  get url(): string {
    const host = this.#options.host.includes(':') ? `[${this.#options.host}]` : this.#options.host;
    return `${this.#options.tls ? 'https' : 'http'}://${host}:${this.port}${API_PREFIX}`;
  }

  /** The store, for queries in tests and tools. */
  get store(): CloudStore {
    return this.#store;
  }

  /**
   * Replaces the accepted keys at run time, for every request from the next one on: add the new key first, move
   * the gateways to it (`gateway.setApiKey()`), then remove the old one (revocation). A key kept keeps its rate
   * budget. Throws {@link ConfigError}, changing nothing, when an entry is invalid.
   */
  setApiKeys(apiKeys: readonly ApiKey[]): void {
    const keyring = ApiKeyring.from(apiKeys);
    const revoked = [...this.#keyring.ids].filter((id) => !keyring.ids.has(id));
    this.#keyring = keyring;
    this.#limiter.retain(keyring.ids);
    if (revoked.length > 0 && this.#store.forgetTokens) {
      // Sent before any later request's takeToken on the store's connection, so answered in that order; a failure
      // costs nothing but an early full bucket for a key added again (the bucket expires by itself).
      this.#store.forgetTokens(revoked).catch((error: unknown) => {
        this.#logger.warn({ err: error }, 'could not drop the rate buckets of revoked keys');
      });
    }
    this.#logger.info({ keys: apiKeys.length }, 'API keys replaced');
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

  /** The last resort: a failure of the server's own (a store error, a bug). Logged in full, answered without it. */
  #failed(request: IncomingMessage, response: ServerResponse, error: unknown): void {
    this.#logger.error({ err: error, method: request.method }, 'request failed');
    if (response.headersSent) {
      response.destroy();
      return;
    }
    discardBody(request, this.#options.maxBodyBytes);
    this.#send(response, 500, { error: 'internal', message: 'the server failed to handle the request' });
  }

  #authorize(request: IncomingMessage): Caller {
    if (this.#keyring.open) return OPEN_CALLER;
    const header = request.headers.authorization ?? '';
    const match = /^Bearer +(\S+) *$/i.exec(header);
    const caller = match?.[1] ? this.#keyring.authenticate(match[1]) : undefined;
    if (caller) return caller;
    throw new HttpError(401, 'unauthorized', 'a valid API key is required', {}, { 'www-authenticate': 'Bearer' });
  }

  /** Over the store's buckets when it keeps them (shared by every node over it), else over this process's. */
  async #throttle(caller: Caller): Promise<void> {
    const limit = caller.rateLimit === undefined ? this.#options.rateLimit : caller.rateLimit;
    if (!limit) return;
    const decision = this.#store.takeToken
      ? await this.#store.takeToken(
          caller.id,
          { requestsPerSecond: limit.requestsPerSecond, burst: defaultBurst(limit) },
          this.#options.now(),
        )
      : this.#limiter.take(caller.id, limit);
    if (decision.allowed) return;
    throw new HttpError(
      429,
      'rate_limited',
      `this API key is over its limit of ${limit.requestsPerSecond} request(s) per second; retry after ${decision.retryAfterSeconds} s`,
      {},
      { 'retry-after': String(decision.retryAfterSeconds) },
    );
  }

  /** Throws 403 unless `caller` may act for `deviceId`. */
  #mayActFor(caller: Caller, deviceId: string): void {
    if (caller.devices === undefined || caller.devices.has(deviceId)) return;
    throw new HttpError(
      403,
      'forbidden',
      `the API key "${caller.name}" may not act for device ${JSON.stringify(clip(deviceId, 256))}`,
    );
  }

  async #handle(request: IncomingMessage, response: ServerResponse): Promise<void> {
    const started = performance.now();
    let caller: Caller | undefined;
    let path = '';
    let retryAfter: string | undefined;
    try {
      let url: URL;
      try {
        url = new URL(request.url ?? '/', 'http://localhost');
      } catch {
        throw new HttpError(400, 'bad_request', 'the request target is not a valid URL path');
      }
      path = url.pathname.startsWith(API_PREFIX) ? url.pathname.slice(API_PREFIX.length) : url.pathname;
      if (request.method === 'GET' && path === '/health') {
        this.#send(response, 200, { status: 'ok' });
        return;
      }
      caller = this.#authorize(request);
      await this.#throttle(caller);
      await this.#route(request, response, url, path, caller);
    } catch (error) {
      if (error instanceof BodyError) {
        // The body was read in part: the connection cannot carry another request.
        this.#send(response, error.status, { error: error.error, message: error.message }, { connection: 'close' });
      } else if (error instanceof HttpError) {
        retryAfter = error.headers['retry-after'];
        const declared = Number(request.headers['content-length']);
        const tooLong = Number.isFinite(declared) && declared > this.#options.maxBodyBytes;
        discardBody(request, this.#options.maxBodyBytes);
        this.#send(
          response,
          error.status,
          { error: error.error, message: error.message, ...error.extra },
          { ...error.headers, ...(tooLong ? { connection: 'close' } : {}) },
        );
      } else this.#failed(request, response, error);
    } finally {
      this.#logRequest(request, response.statusCode, clip(path), caller, performance.now() - started, retryAfter);
    }
  }

  #logRequest(
    request: IncomingMessage,
    status: number,
    path: string,
    caller: Caller | undefined,
    ms: number,
    retryAfter: string | undefined,
  ): void {
    const entry = { method: request.method, path, status, key: caller?.name, ms: Math.round(ms) };
    if (status === 401) {
      this.#logger.info({ ...entry, remote: request.socket.remoteAddress }, 'refused: no valid API key');
    } else if (status === 403) this.#logger.warn(entry, 'refused: the key may not act for this device');
    else if (status === 429)
      this.#logger.info({ ...entry, retryAfterSeconds: Number(retryAfter) }, 'refused: rate limit');
    else this.#logger.debug(entry, 'request');
  }

  async #route(
    request: IncomingMessage,
    response: ServerResponse,
    url: URL,
    path: string,
    caller: Caller,
  ): Promise<void> {
    if (request.method === 'POST' && path === '/telemetry/batches') {
      await this.#ingest(request, response, caller);
    } else if (request.method === 'GET' && path === '/telemetry') {
      this.#send(response, 200, await this.#query(this.#params(telemetryQuerySchema, url), caller));
    } else if (request.method === 'GET' && path === '/telemetry/stats') {
      this.#send(response, 200, await this.#stats(this.#params(statsQuerySchema, url).deviceId, caller));
    } else if (path.startsWith('/records/')) {
      await this.#records(request, response, url, path.slice('/records/'.length).split('/'), caller);
    } else {
      throw new HttpError(404, 'not_found', `no route for ${clip(request.method ?? '')} ${clip(url.pathname)}`);
    }
  }

  /** The devices a query may see: `undefined` for all, else a list (never empty). */
  #visibleDevices(caller: Caller, deviceId: string | undefined): string[] | undefined {
    if (deviceId !== undefined) {
      this.#mayActFor(caller, deviceId);
      return [deviceId];
    }
    return caller.devices === undefined ? undefined : [...caller.devices].sort();
  }

  /**
   * `GET /telemetry`. A key bound to several devices that names none pages through each of its devices in turn,
   * under a cursor of its own (`m{device index}.{store cursor}`), so that any store's cursors work unchanged.
   */
  async #query(query: TelemetryQuery, caller: Caller): Promise<{ points: StoredPoint[]; nextCursor: string | null }> {
    const devices = this.#visibleDevices(caller, query.deviceId);
    const composite = query.cursor?.startsWith('m') === true;
    if (devices === undefined || devices.length === 1) {
      if (composite) throw new HttpError(400, 'bad_request', 'cursor: not a cursor of this query');
      return this.#store.query(devices === undefined ? query : { ...query, deviceId: devices[0] });
    }
    if (query.cursor !== undefined && !composite)
      throw new HttpError(400, 'bad_request', 'cursor: not a cursor of this query');
    const [indexText = '0', innerText = ''] = composite ? (query.cursor as string).slice(1).split('.') : [];
    let index = Number(indexText);
    let inner: string | undefined = innerText === '' ? undefined : innerText;
    const points: StoredPoint[] = [];
    while (index < devices.length && points.length < query.limit) {
      const page = await this.#store.query({
        ...query,
        deviceId: devices[index],
        cursor: inner,
        limit: query.limit - points.length,
      });
      points.push(...page.points);
      if (page.nextCursor !== null) {
        inner = page.nextCursor;
        break;
      }
      index++;
      inner = undefined;
    }
    const allowed = new Set(devices);
    return {
      // Whatever a store returns, a bound key sees only its own devices' readings.
      points: points.filter((point) => allowed.has(point.deviceId)),
      nextCursor: index < devices.length ? `m${index}.${inner ?? ''}` : null,
    };
  }

  /** `GET /telemetry/stats`: of one device, of all, or summed over a bound key's devices. */
  async #stats(deviceId: string | undefined, caller: Caller): Promise<TelemetryStats> {
    const devices = this.#visibleDevices(caller, deviceId);
    if (devices === undefined) return this.#store.stats();
    const total: TelemetryStats = { points: 0, batches: 0, duplicateBatches: 0 };
    for (const device of devices) {
      const one = await this.#store.stats(device);
      total.points += one.points;
      total.batches += one.batches;
      total.duplicateBatches += one.duplicateBatches;
    }
    return total;
  }

  /** The records routes; `segments` is the path after `/records/`, split on `/` and still URL-encoded. */
  async #records(
    request: IncomingMessage,
    response: ServerResponse,
    url: URL,
    segments: string[],
    caller: Caller,
  ): Promise<void> {
    const [first = '', second] = segments;
    if (segments.length === 1 && request.method === 'POST' && first === 'push') {
      await this.#push(request, response, caller);
    } else if (segments.length === 1 && request.method === 'GET' && first === 'pull') {
      const { cursor, limit, deviceId, replicaId } = this.#params(pullQuerySchema, url);
      // Naming a device is acting for it, as a push does: a bound key may name only its own.
      if (deviceId !== undefined) this.#mayActFor(caller, deviceId);
      const requester = deviceId !== undefined && replicaId !== undefined ? { deviceId, replicaId } : undefined;
      this.#send(response, 200, await this.#store.pullChanges(cursor, limit, requester));
    } else if (segments.length === 1 && request.method === 'GET' && first === 'stats') {
      const stats = await this.#store.recordStats();
      const devices = caller.devices;
      // Flags name devices and replicas: a bound key sees its own only.
      const flaggedDevices = devices
        ? stats.flaggedDevices.filter((f) => devices.has(f.deviceId))
        : stats.flaggedDevices;
      this.#send(response, 200, { ...stats, flaggedDevices });
    } else if (segments.length === 2 && second !== undefined && request.method === 'GET') {
      const { collection, key } = parseRecordPath(first, second);
      const record = await this.#store.getRecord(collection, key);
      if (!record) throw new HttpError(404, 'not_found', `no record ${collection}/${clip(key)}`);
      this.#send(response, 200, asResolverSees(record));
    } else if (segments.length === 2 && second !== undefined && request.method === 'PUT') {
      if (caller.devices !== undefined) {
        throw new HttpError(
          403,
          'forbidden',
          `the API key "${caller.name}" is bound to devices; cloud-side record edits need a key valid for every device`,
        );
      }
      const { collection, key } = parseRecordPath(first, second);
      const edit = parseEdit(await this.#readJson(request), this.#options.maxJsonDepth);
      // Other nodes may share the store: follow the greatest stamp stored by any, so that this edit orders after it.
      const latest = await this.#store.latestHlc();
      if (latest !== undefined && latest > this.#clock.last) this.#clock.receive(latest);
      const record = await this.#store.editRecord(collection, key, edit, this.#clock.tick());
      this.#send(response, 200, asResolverSees(record));
    } else {
      throw new HttpError(404, 'not_found', `no route for ${clip(request.method ?? '')} ${clip(url.pathname)}`);
    }
  }

  /** Every mutation decided in request order, each with its outcome; an invalid one is answered `rejected` alone. */
  async #push(request: IncomingMessage, response: ServerResponse, caller: Caller): Promise<void> {
    const push = parsePush(await this.#readJson(request), this.#options.maxJsonDepth);
    this.#mayActFor(caller, push.deviceId);
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

  #bodyLimits() {
    const { maxBodyBytes, maxInflatedBytes, bodyIdleTimeoutMs } = this.#options;
    return { maxBytes: maxBodyBytes, maxInflatedBytes, idleTimeoutMs: bodyIdleTimeoutMs };
  }

  /** A JSON body (gzip'd or not), within the body bounds. A content type other than JSON is refused. */
  async #readJson(request: IncomingMessage): Promise<Buffer> {
    const type = (request.headers['content-type'] ?? '').split(';')[0]?.trim().toLowerCase();
    if (type && type !== 'application/json') {
      throw new HttpError(
        415,
        'unsupported_media_type',
        `content-type ${clip(type, 64)} is not supported; use application/json`,
      );
    }
    return readBody(request, this.#bodyLimits());
  }

  #params<T extends z.ZodType>(schema: T, url: URL): z.output<T> {
    const parsed = schema.safeParse(Object.fromEntries(url.searchParams));
    if (!parsed.success) throw new HttpError(400, 'bad_request', z.prettifyError(parsed.error));
    return parsed.data;
  }

  #decode(type: string, body: Buffer): DecodedBatch {
    return type === COMPACT_BATCH_CONTENT_TYPE
      ? decodeCompactBatch(body, this.#options.maxInflatedBytes)
      : decodeJsonBatch(body, this.#options.maxJsonDepth);
  }

  async #ingest(request: IncomingMessage, response: ServerResponse, caller: Caller): Promise<void> {
    const type = (request.headers['content-type'] ?? '').split(';')[0]?.trim() ?? '';
    if (type !== JSON_BATCH_CONTENT_TYPE && type !== COMPACT_BATCH_CONTENT_TYPE) {
      throw new HttpError(
        415,
        'unsupported_media_type',
        `content-type ${clip(type, 64) || '(none)'} is not supported; use ${JSON_BATCH_CONTENT_TYPE} or ${COMPACT_BATCH_CONTENT_TYPE}`,
      );
    }
    const key = request.headers['idempotency-key'];
    if (typeof key !== 'string' || key.length === 0 || key.length > 200) {
      throw new HttpError(400, 'bad_request', 'the Idempotency-Key header is required');
    }
    const body = await readBody(request, this.#bodyLimits());
    const hash = createHash('sha256').update(body).digest('hex');

    // A key bound to devices is checked against the body's device before anything else, the ledger included: it
    // learns nothing of another device's batches, not even whether a key was used.
    let batch: DecodedBatch | undefined;
    if (caller.devices !== undefined) {
      batch = this.#decode(type, body);
      this.#mayActFor(caller, batch.deviceId);
    }

    // A replay is answered from the ledger before the points are checked: its readings are stored already.
    const known = await this.#store.lookup(key);
    if (known) {
      if (known.hash !== hash)
        throw new HttpError(409, 'idempotency_key_reused', `the key ${key} was used for another body`);
      await this.#store.noteReplay(key);
      this.#send(response, 200, known.ack, { 'idempotent-replayed': 'true' });
      return;
    }

    batch ??= this.#decode(type, body);
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
      if (jsonValueTooDeep(parsed.data.data, this.#options.maxJsonDepth)) {
        rejected.push({ seq, reason: `data: nests deeper than ${this.#options.maxJsonDepth} levels` });
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
