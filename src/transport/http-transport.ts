import ky, { type KyInstance } from 'ky';
import { batchAckSchema, errorBodySchema } from '../model/wire.js';
import { parseRetryAfter } from './retry-after.js';
import type { OutgoingBatch, PingResult, SendResult, Transport } from './transport.js';

/** Options of {@link HttpTransport}. */
export interface HttpTransportOptions {
  /** Base URL of the cloud API, e.g. `https://cloud.example.com/api/v1`. */
  baseUrl: string;
  /** Sent as `Authorization: Bearer <apiKey>`. */
  apiKey?: string | undefined;
  /** Time allowed for one request, from connecting to the last byte of the answer, in ms. @default 30000 */
  timeoutMs?: number;
}

const describeError = (error: unknown): { code: 'timeout' | 'network'; message: string } => {
  const err = error as Error & { cause?: { code?: string; message?: string } };
  if (err.name === 'TimeoutError') return { code: 'timeout', message: 'request timed out' };
  const cause = err.cause?.code ?? err.cause?.message;
  return { code: 'network', message: cause ? `${err.message} (${cause})` : err.message };
};

/**
 * The default {@link Transport}: HTTP(S) with ky. ky's own retry is off: the gateway owns retries, because they
 * must survive restarts.
 */
export class HttpTransport implements Transport {
  readonly #http: KyInstance;
  readonly #timeoutMs: number;

  constructor(options: HttpTransportOptions) {
    const prefixUrl = options.baseUrl.endsWith('/') ? options.baseUrl : `${options.baseUrl}/`;
    this.#timeoutMs = options.timeoutMs ?? 30_000;
    this.#http = ky.create({
      prefixUrl,
      // ky's timeout stops at the response head; #bounded() also covers reading the body.
      timeout: false,
      retry: 0,
      throwHttpErrors: false,
      headers: options.apiKey ? { authorization: `Bearer ${options.apiKey}` } : {},
    });
  }

  /**
   * Runs one exchange, from connecting to the last byte of the answer, with a signal that aborts when the timeout
   * passes (a `TimeoutError`) or when `signal` does; the exchange's promise settles then at the latest. A plain
   * timer, held until the exchange ends: an `AbortSignal.timeout()` inside `AbortSignal.any()` can be
   * garbage-collected before it fires (nodejs/node#57736), and the exchange then waits forever.
   */
  async #bounded<T>(signal: AbortSignal | undefined, exchange: (signal: AbortSignal) => Promise<T>): Promise<T> {
    const controller = new AbortController();
    let stop: (reason: unknown) => void = () => undefined;
    const stopped = new Promise<never>((_, reject) => {
      stop = reject;
    });
    stopped.catch(() => undefined);
    const abort = (reason: unknown) => {
      controller.abort(reason);
      stop(reason);
    };
    const timer = setTimeout(() => abort(new DOMException('request timed out', 'TimeoutError')), this.#timeoutMs);
    const onAbort = () => abort(signal?.reason);
    if (signal?.aborted) onAbort();
    else signal?.addEventListener('abort', onAbort, { once: true });
    const work = exchange(controller.signal);
    work.catch(() => undefined);
    try {
      return await Promise.race([work, stopped]);
    } finally {
      clearTimeout(timer);
      signal?.removeEventListener('abort', onAbort);
    }
  }

  async sendBatch(batch: OutgoingBatch, signal?: AbortSignal): Promise<SendResult> {
    const headers: Record<string, string> = {
      'content-type': batch.contentType,
      'idempotency-key': batch.idempotencyKey,
    };
    if (batch.contentEncoding) headers['content-encoding'] = batch.contentEncoding;
    let response: Response;
    let text: string;
    try {
      [response, text] = await this.#bounded(signal, async (bounded) => {
        const answer = await this.#http.post('telemetry/batches', { body: batch.body, headers, signal: bounded });
        return [answer, await readText(answer, bounded)] as const;
      });
    } catch (error) {
      if (signal?.aborted) throw error;
      return { status: 'retryable', ...describeError(error) };
    }
    return interpret(response, text);
  }

  async ping(signal?: AbortSignal): Promise<PingResult> {
    try {
      const [response, body] = await this.#bounded(signal, async (bounded) => {
        const answer = await this.#http.get('health', { signal: bounded });
        // A body cut short or not JSON is still an answer; one that stalls past the timeout is not.
        const text = await readText(answer, bounded).catch((error: unknown) => {
          if (bounded.aborted) throw error;
          return '';
        });
        return [answer, (parseJson(text) ?? {}) as { serverTime?: unknown }] as const;
      });
      if (response.status >= 500) return { reachable: false, message: `HTTP ${response.status}` };
      return typeof body.serverTime === 'string'
        ? { reachable: true, serverTime: body.serverTime }
        : { reachable: true };
    } catch (error) {
      if (signal?.aborted) throw error;
      return { reachable: false, message: describeError(error).message };
    }
  }

  async close(): Promise<void> {
    // fetch keeps no per-instance connection pool to release; nothing to do.
  }
}

/**
 * The body of `response` as text. Read with a reader of our own, cancelled when `signal` aborts: through ky, an abort
 * does not always reach a body being read once the request's signals were garbage-collected, and a body that
 * stalls after its head would hold the exchange (and its connection) until the socket gave up.
 */
async function readText(response: Response, signal: AbortSignal): Promise<string> {
  if (!response.body) return '';
  const reader = response.body.getReader();
  const cancel = () => {
    reader.cancel(signal.reason).catch(() => undefined);
  };
  if (signal.aborted) cancel();
  else signal.addEventListener('abort', cancel, { once: true });
  try {
    const chunks: Uint8Array[] = [];
    for (;;) {
      const { done, value } = await reader.read();
      if (done) break;
      chunks.push(value);
    }
    signal.throwIfAborted();
    return new TextDecoder().decode(Buffer.concat(chunks));
  } finally {
    signal.removeEventListener('abort', cancel);
  }
}

function parseJson(text: string): unknown {
  try {
    return JSON.parse(text);
  } catch {
    return undefined;
  }
}

/** Maps an HTTP answer to a {@link SendResult}. @internal */
export function interpret(response: Response, text: string): SendResult {
  const { status } = response;
  const json = parseJson(text);
  if (status === 200 || status === 201) {
    const ack = batchAckSchema.safeParse(json);
    if (ack.success) {
      return {
        status: 'acknowledged',
        ack: ack.data,
        replayed: response.headers.get('idempotent-replayed') === 'true',
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
  if (status === 400 || status === 413 || status === 422) {
    const rejected = error.success ? error.data.rejected : undefined;
    return rejected
      ? { status: 'rejected', httpStatus: status, message, rejected }
      : { status: 'rejected', httpStatus: status, message };
  }
  const retryAfterMs = parseRetryAfter(response.headers.get('retry-after'));
  return {
    status: 'retryable',
    code: status === 429 ? 'throttled' : 'server',
    httpStatus: status,
    message,
    ...(retryAfterMs === undefined ? {} : { retryAfterMs }),
  };
}
