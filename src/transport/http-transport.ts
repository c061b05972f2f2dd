import { Agent as HttpAgent, request as httpRequest, type IncomingHttpHeaders, type IncomingMessage } from 'node:http';
import { createRequire } from 'node:module';
import type { PeerCertificate } from 'node:tls';
import { gzipSync } from 'node:zlib';
import { CertificatePinError, ConfigError, isCertificatePinError } from '../errors.js';
import {
  type PullRequester,
  type PullResponse,
  type PushRequest,
  type PushResponse,
  pullResponseSchema,
  pushResponseSchema,
} from '../model/records-wire.js';
import { batchAckSchema, errorBodySchema } from '../model/wire.js';
import type * as z from '../zod.js';
import { checkPins } from './certificate-pins.js';
import { type CloudTlsOptions, cloudTlsProblems } from './cloud-tls.js';
import { parseRetryAfter } from './retry-after.js';
import type { ExchangeResult, OutgoingBatch, PingResult, RetryableCode, SendResult, Transport } from './transport.js';

/** Options of {@link HttpTransport}. The TLS ones are those of {@link CloudTlsOptions}. */
export interface HttpTransportOptions extends CloudTlsOptions {
  /**
   * Base URL of the cloud API, e.g. `https://cloud.example.com/api/v1`. `http://` only to a loopback host, or with
   * `allowInsecure`.
   */
  baseUrl: string | readonly string[];
  /** Sent as `Authorization: Bearer <apiKey>`. */
  apiKey?: string | undefined;
  /** Time allowed for one request, from connecting to the last byte of the answer, in ms. @default 30000 */
  timeoutMs?: number;
}

// node:https and node:tls are loaded for an https cloud only: about 1 MiB of memory a plain-http gateway (a cloud
// on the local network) would keep for nothing.
const load = createRequire(import.meta.url);

/** Largest answer body read: a pull page of big records is the largest answer the protocol has. */
const MAX_ANSWER_BYTES = 64 * 1024 * 1024;
/** A records push body above this size is gzip'd. */
const GZIP_ABOVE_BYTES = 1024;

/** An HTTP answer, read to its end. */
interface Answer {
  status: number;
  headers: IncomingHttpHeaders;
  text: string;
}

class ExchangeError extends Error {
  constructor(
    readonly code: Exclude<RetryableCode, 'server' | 'throttled'>,
    message: string,
  ) {
    super(message);
  }
}

/** OpenSSL's certificate verification failures, by the `code` Node gives them (plus its own host name check). */
const CERTIFICATE_ERRORS = new Set([
  'UNABLE_TO_GET_ISSUER_CERT',
  'UNABLE_TO_GET_CRL',
  'UNABLE_TO_DECRYPT_CERT_SIGNATURE',
  'UNABLE_TO_DECRYPT_CRL_SIGNATURE',
  'UNABLE_TO_DECODE_ISSUER_PUBLIC_KEY',
  'CERT_SIGNATURE_FAILURE',
  'CRL_SIGNATURE_FAILURE',
  'CERT_NOT_YET_VALID',
  'CERT_HAS_EXPIRED',
  'CRL_NOT_YET_VALID',
  'CRL_HAS_EXPIRED',
  'ERROR_IN_CERT_NOT_BEFORE_FIELD',
  'ERROR_IN_CERT_NOT_AFTER_FIELD',
  'ERROR_IN_CRL_LAST_UPDATE_FIELD',
  'ERROR_IN_CRL_NEXT_UPDATE_FIELD',
  'DEPTH_ZERO_SELF_SIGNED_CERT',
  'SELF_SIGNED_CERT_IN_CHAIN',
  'UNABLE_TO_GET_ISSUER_CERT_LOCALLY',
  'UNABLE_TO_VERIFY_LEAF_SIGNATURE',
  'CERT_CHAIN_TOO_LONG',
  'CERT_REVOKED',
  'INVALID_CA',
  'PATH_LENGTH_EXCEEDED',
  'INVALID_PURPOSE',
  'CERT_UNTRUSTED',
  'CERT_REJECTED',
  'HOSTNAME_MISMATCH',
  'ERR_TLS_CERT_ALTNAME_INVALID',
]);

/** OpenSSL's reason (`wrong version number`), without the error queue's codes and source paths. */
function opensslReason(error: NodeJS.ErrnoException & { reason?: unknown }): string {
  if (typeof error.reason === 'string') return error.reason;
  return /SSL routines:[^:]*:([^:]+)/.exec(error.message)?.[1] ?? error.message.trim();
}

/**
 * A failed request as the gateway reports it: a pin mismatch, a certificate or handshake refusal (both `tls`-like
 * codes: they do not fix themselves by retrying soon), or a network failure.
 */
function exchangeError(error: NodeJS.ErrnoException): ExchangeError {
  if (isCertificatePinError(error)) return new ExchangeError('pin-mismatch', error.message);
  const code = error.code ?? '';
  if (CERTIFICATE_ERRORS.has(code)) {
    return new ExchangeError('tls', `the cloud's TLS certificate is not trusted: ${error.message} (${code})`);
  }
  // EPROTO: what Node gives an OpenSSL failure met while writing, e.g. a plain-HTTP server behind an https:// URL.
  if (code.startsWith('ERR_SSL_') || code === 'EPROTO') {
    return new ExchangeError('tls', `the TLS handshake with the cloud failed: ${opensslReason(error)} (${code})`);
  }
  return new ExchangeError('network', code ? `${error.message} (${code})` : error.message);
}

/**
 * The default {@link Transport}: HTTP(S) on `node:http`, one keep-alive connection, no retries of its own (the
 * gateway owns retries, because they must survive restarts).
 *
 * TLS: certificate validation is always on (`rejectUnauthorized` is set, so `NODE_TLS_REJECT_UNAUTHORIZED=0`
 * cannot turn it off). Pins are checked in `checkServerIdentity`, which Node runs on each full handshake after the
 * chain and host name checks and before the socket is handed to the request: a refused connection never carries a
 * request byte, and its session is not kept for resumption. A resumed session is one this transport's agent
 * cached from a connection that passed the same checks (Node does not run them again on it; the server proves it
 * holds that session's secret). Its constructor throws {@link ConfigError} for options it cannot honour.
 *
 * Why not fetch (or ky over it): measured here, fetch's first real exchange costs ~17 MiB more resident memory
 * than node:http's (it compiles its parser to WebAssembly), and under garbage collection an abort did not always
 * reach a response body that stalled after its head. With node:http one timer destroys the request: a whole
 * exchange, from connecting to the last byte of the answer, ends by the timeout whatever the peer does.
 */
export class HttpTransport implements Transport {
  readonly #bases: readonly URL[];
  /** Index in `#bases` of the node requests go to. */
  #node = 0;
  readonly #headers: Record<string, string>;
  readonly #timeoutMs: number;
  readonly #agent: HttpAgent;
  readonly #request: typeof httpRequest;

  constructor(options: HttpTransportOptions) {
    const problems = cloudTlsProblems('baseUrl', options.baseUrl, options);
    if (problems.length > 0) throw new ConfigError(problems);
    const urls = typeof options.baseUrl === 'string' ? [options.baseUrl] : options.baseUrl;
    this.#bases = urls.map((url) => new URL(url.endsWith('/') ? url : `${url}/`));
    if (new Set(this.#bases.map((url) => url.protocol)).size !== 1) {
      throw new ConfigError([
        `Expected the "baseUrl" option to be one or more URLs of one scheme (got ${JSON.stringify(urls)})`,
      ]);
    }
    this.#headers = options.apiKey ? { authorization: `Bearer ${options.apiKey}` } : {};
    this.#timeoutMs = options.timeoutMs ?? 30_000;
    const https = this.#bases[0]?.protocol === 'https:';
    // One batch is in flight at a time: one socket, kept alive between batches.
    // An idle socket is dropped after 4 s, before a server's usual 5 s keep-alive closes it under a request.
    const agentOptions = { keepAlive: true, maxSockets: 2, maxFreeSockets: 1, timeout: 4000 };
    if (https) {
      const { Agent: HttpsAgent, request: httpsRequest } = load('node:https') as typeof import('node:https');
      this.#agent = new HttpsAgent({ ...agentOptions, ...tlsAgentOptions(options) });
      this.#request = httpsRequest as typeof httpRequest;
    } else {
      this.#agent = new HttpAgent(agentOptions);
      this.#request = httpRequest;
    }
  }

  /** The base URL requests go to now: with several nodes, the one that has not failed since it was chosen. */
  get baseUrl(): string {
    return String(this.#bases[this.#node]);
  }

  /**
   * After a failure that another node may not have (network, timeout, TLS, 5xx; not 429) of a request sent to `node`,
   * the next attempt goes to the next node; once, when requests in flight together fail together.
   */
  #failedOver<T extends { status: string; code?: RetryableCode }>(result: T, node: number): T {
    if (result.status === 'retryable' && result.code !== 'throttled') this.#nextNode(node);
    return result;
  }

  #nextNode(node: number): void {
    if (this.#node === node) this.#node = (node + 1) % this.#bases.length;
  }

  /** One exchange, ended by the timeout or by `signal` at the latest, whatever the peer does. */
  #exchange(
    method: 'GET' | 'POST',
    path: string,
    headers: Record<string, string>,
    body: Uint8Array | undefined,
    signal?: AbortSignal,
  ): Promise<Answer> {
    return new Promise<Answer>((resolve, reject) => {
      if (signal?.aborted) {
        reject(signal.reason);
        return;
      }
      const url = new URL(path, this.#bases[this.#node]);
      const request = this.#request(url, {
        method,
        agent: this.#agent,
        headers: { ...this.#headers, ...headers, ...(body ? { 'content-length': String(body.byteLength) } : {}) },
      });
      let settled = false;
      const finish = (error: unknown, answer?: Answer) => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        signal?.removeEventListener('abort', onAbort);
        if (error === undefined && answer) resolve(answer);
        else {
          request.destroy();
          reject(error);
        }
      };
      const timer = setTimeout(() => finish(new ExchangeError('timeout', 'request timed out')), this.#timeoutMs);
      const onAbort = () => finish(signal?.reason ?? new Error('aborted'));
      signal?.addEventListener('abort', onAbort, { once: true });
      request.on('error', (error: NodeJS.ErrnoException) => finish(exchangeError(error)));
      request.on('response', (response: IncomingMessage) => {
        const chunks: Buffer[] = [];
        let size = 0;
        response.on('data', (chunk: Buffer) => {
          size += chunk.length;
          if (size > MAX_ANSWER_BYTES)
            finish(new ExchangeError('network', `the answer exceeds ${MAX_ANSWER_BYTES} bytes`));
          else chunks.push(chunk);
        });
        response.on('error', (error) => finish(new ExchangeError('network', error.message)));
        response.on('aborted', () => finish(new ExchangeError('network', 'the answer was cut short')));
        response.on('end', () => {
          if (!response.complete) {
            finish(new ExchangeError('network', 'the answer was cut short'));
            return;
          }
          finish(undefined, {
            status: response.statusCode ?? 0,
            headers: response.headers,
            text: Buffer.concat(chunks).toString('utf8'),
          });
        });
      });
      request.end(body);
    });
  }

  async sendBatch(batch: OutgoingBatch, signal?: AbortSignal): Promise<SendResult> {
    const headers: Record<string, string> = {
      'content-type': batch.contentType,
      'idempotency-key': batch.idempotencyKey,
    };
    if (batch.contentEncoding) headers['content-encoding'] = batch.contentEncoding;
    const node = this.#node;
    try {
      return this.#failedOver(
        interpret(await this.#exchange('POST', 'telemetry/batches', headers, batch.body, signal)),
        node,
      );
    } catch (error) {
      if (signal?.aborted) throw error;
      return this.#failedOver(retryable(error), node);
    }
  }

  async pushRecords(request: PushRequest, signal?: AbortSignal): Promise<ExchangeResult<PushResponse>> {
    const json = new TextEncoder().encode(JSON.stringify(request));
    const gzip = json.byteLength > GZIP_ABOVE_BYTES;
    const headers: Record<string, string> = { 'content-type': 'application/json' };
    if (gzip) headers['content-encoding'] = 'gzip';
    const body = gzip ? gzipSync(json) : json;
    const node = this.#node;
    return this.#failedOver(
      await this.#jsonExchange('POST', 'records/push', headers, body, pushResponseSchema, signal),
      node,
    );
  }

  async pullRecords(
    cursor: number,
    limit: number,
    signal?: AbortSignal,
    requester?: PullRequester,
  ): Promise<ExchangeResult<PullResponse>> {
    const query = new URLSearchParams({ cursor: String(cursor), limit: String(limit) });
    if (requester) {
      query.set('deviceId', requester.deviceId);
      query.set('replicaId', requester.replicaId);
    }
    const path = `records/pull?${query}`;
    const node = this.#node;
    return this.#failedOver(await this.#jsonExchange('GET', path, {}, undefined, pullResponseSchema, signal), node);
  }

  async #jsonExchange<T>(
    method: 'GET' | 'POST',
    path: string,
    headers: Record<string, string>,
    body: Uint8Array | undefined,
    schema: z.ZodMiniType<T>,
    signal?: AbortSignal,
  ): Promise<ExchangeResult<T>> {
    let answer: Answer;
    try {
      answer = await this.#exchange(method, path, headers, body, signal);
    } catch (error) {
      if (signal?.aborted) throw error;
      const code = error instanceof ExchangeError ? error.code : 'network';
      return { status: 'retryable', code, message: (error as Error).message ?? String(error) };
    }
    const { status, text } = answer;
    const json = parseJson(text);
    if (status === 200) {
      const parsed = schema.safeParse(json);
      if (parsed.success) return { status: 'ok', body: parsed.data };
      return {
        status: 'retryable',
        code: 'server',
        httpStatus: status,
        message: `the cloud answered ${path.split('?')[0]} with a body that does not follow the protocol`,
      };
    }
    const error = errorBodySchema.safeParse(json);
    const message = error.success ? `${error.data.error}: ${error.data.message ?? ''}`.trim() : `HTTP ${status}`;
    if (status === 401 || status === 403) return { status: 'unauthorized', httpStatus: status, message };
    if (status === 429 || status >= 500 || status < 400) {
      const retryAfterMs = parseRetryAfter(header(answer.headers, 'retry-after'));
      return {
        status: 'retryable',
        code: status === 429 ? 'throttled' : 'server',
        httpStatus: status,
        message,
        ...(retryAfterMs === undefined ? {} : { retryAfterMs }),
      };
    }
    return { status: 'refused', httpStatus: status, message };
  }

  async ping(signal?: AbortSignal): Promise<PingResult> {
    const node = this.#node;
    try {
      const answer = await this.#exchange('GET', 'health', {}, undefined, signal);
      if (answer.status >= 500) {
        this.#nextNode(node);
        return { reachable: false, message: `HTTP ${answer.status}` };
      }
      // A body that is not JSON is still an answer.
      const body = (parseJson(answer.text) ?? {}) as { serverTime?: unknown };
      return typeof body.serverTime === 'string'
        ? { reachable: true, serverTime: body.serverTime }
        : { reachable: true };
    } catch (error) {
      if (signal?.aborted) throw error;
      this.#nextNode(node);
      return error instanceof ExchangeError
        ? { reachable: false, message: error.message, code: error.code }
        : { reachable: false, message: (error as Error).message };
    }
  }

  async close(): Promise<void> {
    this.#agent.destroy();
  }
}

/** The TLS part of the agent's options: validation always on, the CA, the client certificate and the pins. */
function tlsAgentOptions(options: CloudTlsOptions) {
  const pins = options.pinnedCertificates ? new Set(options.pinnedCertificates) : undefined;
  const { checkServerIdentity } = load('node:tls') as typeof import('node:tls');
  return {
    rejectUnauthorized: true,
    ...(options.ca === undefined ? {} : { ca: options.ca as string | Buffer | (string | Buffer)[] }),
    ...(options.cert === undefined ? {} : { cert: options.cert }),
    ...(options.key === undefined ? {} : { key: options.key }),
    // Node's own host name check first; the pins only once it passed. Node calls this from a socket callback:
    // a throw would escape to the host's process, so one becomes the refusal of the connection.
    checkServerIdentity: (host: string, certificate: PeerCertificate): Error | undefined => {
      try {
        return checkServerIdentity(host, certificate) ?? (pins ? checkPins(host, certificate, pins) : undefined);
      } catch (error) {
        return new CertificatePinError(host, [], { cause: error });
      }
    },
  };
}

function retryable(error: unknown): SendResult {
  if (error instanceof ExchangeError) return { status: 'retryable', code: error.code, message: error.message };
  return { status: 'retryable', code: 'network', message: (error as Error).message ?? String(error) };
}

function parseJson(text: string): unknown {
  try {
    return JSON.parse(text);
  } catch {
    return undefined;
  }
}

const header = (headers: IncomingHttpHeaders, name: string): string | undefined => {
  const value = headers[name];
  return Array.isArray(value) ? value[0] : value;
};

/** Maps an HTTP answer to a {@link SendResult}. @internal */
export function interpret(answer: Answer): SendResult {
  const { status, text } = answer;
  const json = parseJson(text);
  if (status === 200 || status === 201) {
    const ack = batchAckSchema.safeParse(json);
    if (ack.success) {
      return {
        status: 'acknowledged',
        ack: ack.data,
        replayed: header(answer.headers, 'idempotent-replayed') === 'true',
      };
    }
    return {
      status: 'retryable',
      code: 'server',
      httpStatus: status,
      message: 'the cloud answered with a body that is not an acknowledgement',
    };
  }
  const error = errorBodySchema.safeParse(json);
  const message = error.success ? `${error.data.error}: ${error.data.message ?? ''}`.trim() : `HTTP ${status}`;
  if (status === 401 || status === 403) return { status: 'unauthorized', httpStatus: status, message };
  if (status === 409) return { status: 'conflict', message };
  if (status === 415) return { status: 'unsupported', httpStatus: status, message };
  // A refusal of the batch's content: 413 from anyone (halving helps), 400/422 only in the protocol's own error
  // format. A proxy's or firewall's 400 page says nothing about the readings: dead-lettering on it would empty the
  // queue into the dead letters, so it is retried like a server failure.
  if (status === 413 || ((status === 400 || status === 422) && error.success)) {
    const rejected = error.success ? error.data.rejected : undefined;
    return rejected
      ? { status: 'rejected', httpStatus: status, message, rejected }
      : { status: 'rejected', httpStatus: status, message };
  }
  const retryAfterMs = parseRetryAfter(header(answer.headers, 'retry-after'));
  return {
    status: 'retryable',
    code: status === 429 ? 'throttled' : 'server',
    httpStatus: status,
    message,
    ...(retryAfterMs === undefined ? {} : { retryAfterMs }),
  };
}
