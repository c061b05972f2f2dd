import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { ConfigError } from '../errors.js';
import type { HealthStatus } from '../gateway/status.js';
import * as z from '../zod.js';
import { toHealthJson } from './health-json.js';
import { type Answer, digest, type IngestTarget, ingest } from './ingest.js';
import { TokenBucket } from './token-bucket.js';

/** Options of `EdgeGateway.serveHttp()`. */
export interface HttpServerOptions {
  /** TCP port; 0 picks a free one (read it from `url` or `port`). @default 8000 */
  port?: number;
  /**
   * Interface to listen on. The default keeps the server, its ingest endpoint included, on this machine; `0.0.0.0`
   * opens it to the network (then set `ingestToken`). @default '127.0.0.1'
   */
  host?: string;
  /** Largest request body `POST /api/v1/data` reads, in bytes; a larger one is answered 413. @default 1048576 */
  maxBodyBytes?: number;
  /**
   * Readings per second `POST /api/v1/data` takes, as a token bucket: a request costs one token per reading and is
   * answered 429 with `Retry-After` when the bucket is short. 0 turns the limit off. @default 5000
   */
  rateLimit?: number;
  /** Readings the bucket holds: the largest burst, and the largest array one request may carry. @default 2 × rateLimit */
  burst?: number;
  /**
   * When set, `POST /api/v1/data` requires `Authorization: Bearer <ingestToken>` (401 otherwise). `/health` and
   * `/metrics` stay open. @default none
   */
  ingestToken?: string | undefined;
  /** Seconds `close()` waits for requests in flight (an ingest waits for its commit) before cutting them. @default 5 */
  closeTimeout?: number;
  /**
   * Seconds an `Idempotency-Key` of `POST /api/v1/data` is remembered from the commit of its readings: a retry
   * within the window is answered the first answer again and stores nothing; after it, the key is forgotten and may
   * be used again. A day covers a client that retries after a night offline or a restart of either side, and costs
   * little: an entry is about 180 bytes with a UUID key, and `maxIdempotencyKeys` bounds them. At least 1 s (a window
   * rounded to 0 ms would remember nothing), at most 30 days.
   * @default 86400
   */
  idempotencyWindow?: number;
  /**
   * Most idempotency keys kept in the local database. Past it the oldest are forgotten before their window ends
   * (a retry of one of those stores its readings again): raise it when clients send more keys than this in a
   * window. About 18 MB at the default with UUID keys, in the local database. With `maxDatabaseSize` set, the keys
   * also keep to a tenth of it, at 1 KiB a key (the longest key and its index, rounded up): the lower bound of the
   * two holds, so that keys never crowd out readings (102 keys at 1 MiB, 10240 at 100 MiB). @default 100000
   */
  maxIdempotencyKeys?: number;
}

/** A running HTTP server of the gateway, from `EdgeGateway.serveHttp()`. */
export interface GatewayHttpServer {
  /** `http://{host}:{port}`, e.g. `http://127.0.0.1:8000`. */
  readonly url: string;
  readonly host: string;
  /** The port listened on (the one chosen when `port` was 0). */
  readonly port: number;
  /**
   * Stops taking connections, lets requests in flight finish (each ingest is answered once durable or refused)
   * within `closeTimeout`, then closes every connection. Safe to call twice.
   */
  close(): Promise<void>;
}

/** What the server needs of the gateway. @internal */
export interface ServedGateway extends IngestTarget {
  healthCheck(): HealthStatus;
  metrics(): Promise<string>;
}

const PROMETHEUS_CONTENT_TYPE = 'text/plain; version=0.0.4; charset=utf-8';
const INGEST_PATH = '/api/v1/data';
const ROUTES: Record<string, string> = { '/health': 'GET, HEAD', '/metrics': 'GET, HEAD', [INGEST_PATH]: 'POST' };

const optionsSchema = z.strictObject({
  port: z._default(z.int().check(z.gte(0), z.lte(65_535)), 8000),
  host: z._default(z.string().check(z.minLength(1)), '127.0.0.1'),
  maxBodyBytes: z._default(z.int().check(z.gte(1024), z.lte(256 * 1024 * 1024)), 1024 * 1024),
  rateLimit: z._default(z.number().check(z.nonnegative(), z.lte(1e9)), 5000),
  burst: z.optional(z.int().check(z.positive(), z.lte(1e9))),
  ingestToken: z.optional(z.string().check(z.minLength(1))),
  closeTimeout: z._default(z.number().check(z.nonnegative(), z.lte(3600)), 5),
  idempotencyWindow: z._default(z.number().check(z.gte(1), z.lte(30 * 86_400)), 86_400),
  maxIdempotencyKeys: z._default(z.int().check(z.gte(1), z.lte(10_000_000)), 100_000),
});

function resolve(options: HttpServerOptions) {
  const parsed = optionsSchema.safeParse(options);
  if (parsed.success) return parsed.data;
  throw new ConfigError(
    parsed.error.issues.map((issue) =>
      issue.code === 'unrecognized_keys'
        ? `Misspelled serveHttp() option(s) ${issue.keys.map((k) => `"${k}"`).join(', ')}`
        : `Expected the "${issue.path.join('.')}" option of serveHttp() to be valid: ${issue.message}`,
    ),
    { cause: parsed.error },
  );
}

function send(response: ServerResponse, answer: Answer, head: boolean): void {
  const json = JSON.stringify(answer.body);
  response.writeHead(answer.status, {
    'content-type': 'application/json',
    'content-length': Buffer.byteLength(json),
    'cache-control': 'no-store',
    ...answer.headers,
  });
  response.end(head ? undefined : json);
}

const hostForUrl = (host: string) => (host.includes(':') ? `[${host}]` : host);

/**
 * Serves a gateway's `/health`, `/metrics` and `POST /api/v1/data` on `node:http`. Called by
 * `EdgeGateway.serveHttp()`; resolves once listening, rejects with `ConfigError` when the port cannot be had.
 * @internal
 */
export async function serveGateway(
  gateway: ServedGateway,
  options: HttpServerOptions = {},
): Promise<GatewayHttpServer> {
  const settings = resolve(options);
  const limits = {
    maxBodyBytes: settings.maxBodyBytes,
    bucket:
      settings.rateLimit > 0
        ? new TokenBucket(settings.rateLimit, settings.burst ?? Math.max(1, Math.ceil(2 * settings.rateLimit)))
        : undefined,
    tokenDigest: settings.ingestToken === undefined ? undefined : digest(settings.ingestToken),
    idempotency: { windowMs: Math.round(settings.idempotencyWindow * 1000), maxKeys: settings.maxIdempotencyKeys },
  };
  let closing: Promise<void> | undefined;

  const handle = async (request: IncomingMessage, response: ServerResponse): Promise<void> => {
    // Once closing, a keep-alive connection is not kept: each answer ends its connection.
    if (closing) response.setHeader('connection', 'close');
    const path = (request.url ?? '/').split('?')[0] ?? '/';
    const method = request.method ?? 'GET';
    const head = method === 'HEAD';
    const allowed = ROUTES[path];
    if (allowed === undefined) {
      send(response, { status: 404, body: { error: 'not_found', message: `no route for ${method} ${path}` } }, head);
      return;
    }
    if (!allowed.split(', ').includes(method)) {
      send(
        response,
        {
          status: 405,
          body: { error: 'method_not_allowed', message: `${path} takes ${allowed}` },
          headers: { allow: allowed },
        },
        head,
      );
      return;
    }
    if (path === '/health') {
      const health = gateway.healthCheck();
      send(response, { status: health.status === 'unhealthy' ? 503 : 200, body: { ...toHealthJson(health) } }, head);
    } else if (path === '/metrics') {
      const text = await gateway.metrics();
      response.writeHead(200, {
        'content-type': PROMETHEUS_CONTENT_TYPE,
        'content-length': Buffer.byteLength(text),
        'cache-control': 'no-store',
      });
      response.end(head ? undefined : text);
    } else {
      const answer = await ingest(request, gateway, limits);
      // A refused body may still be arriving: drain it, so that the answer reaches the client.
      if (!request.readableEnded) request.resume();
      send(response, answer, false);
    }
  };

  const server = createServer((request, response) => {
    handle(request, response).catch((error: unknown) => {
      if (!request.readableEnded) request.resume();
      if (response.headersSent) {
        response.destroy(error as Error);
        return;
      }
      send(response, { status: 500, body: { error: 'internal', message: 'the gateway failed to answer' } }, false);
    });
  });
  // A slow or stalled client cannot hold a connection for long.
  server.headersTimeout = 10_000;
  server.requestTimeout = 30_000;
  server.keepAliveTimeout = 5_000;

  await new Promise<void>((resolveListen, reject) => {
    const failed = (error: NodeJS.ErrnoException) => {
      reject(
        new ConfigError(
          [
            `Cannot serve HTTP on ${settings.host}:${settings.port}: ${error.code ?? error.message}${error.code === 'EADDRINUSE' ? ' (the port is in use)' : ''}`,
          ],
          { cause: error },
        ),
      );
    };
    server.once('error', failed);
    server.listen(settings.port, settings.host, () => {
      server.off('error', failed);
      resolveListen();
    });
  });
  const { port } = server.address() as AddressInfo;

  return {
    url: `http://${hostForUrl(settings.host)}:${port}`,
    host: settings.host,
    port,
    close() {
      closing ??= new Promise<void>((done) => {
        const cut = setTimeout(() => server.closeAllConnections(), settings.closeTimeout * 1000);
        cut.unref();
        server.close(() => {
          clearTimeout(cut);
          done();
        });
        server.closeIdleConnections();
      });
      return closing;
    },
  };
}
