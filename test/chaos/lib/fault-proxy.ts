import { connect, createServer, type Server, type Socket } from 'node:net';
import { mulberry32 } from './chaos-config.js';

/**
 * A fault-injecting TCP proxy on 127.0.0.1, between a gateway and the reference cloud server. It parses just
 * enough HTTP/1.1 (request and response heads, Content-Length and chunked bodies, keep-alive: several requests per
 * connection, one at a time) to cut a connection at a chosen point of a chosen request, or to answer a request
 * itself without forwarding it.
 *
 * The fault in force is switched at run time with {@link FaultProxy.set}; whether a given request is hit is drawn
 * from a seeded PRNG, so that a schedule can be replayed from its seed.
 */

/** The faults the proxy injects. */
export const FAULT_KINDS = [
  /** Every chunk, both ways, waits `latencyMs` plus up to `jitterMs`; order is kept. */
  'latency',
  /** The request head and half its body reach the server, then both connections are reset. */
  'reset-request',
  /** The server answers; the head and part of the body reach the client, then the connection is reset (RST). */
  'reset-response',
  /** The request is swallowed and never answered, nor is anything after it on that connection. */
  'blackhole',
  /** The server answers; the head reaches the client, the body never does, and the connection stays open. */
  'stall-response',
  /** The server answers; the head and half the body reach the client, then the connection ends cleanly (FIN). */
  'truncate',
  /** The server answers (it has committed); the answer is dropped and the client's connection destroyed. */
  'lose-response',
  /** The proxy answers 500 itself; the server never sees the request. */
  'http-500',
  /** The proxy answers 503 itself. */
  'http-503',
  /** The proxy answers 429 with `Retry-After: 1` itself. */
  'http-429',
] as const;

export type FaultKind = (typeof FAULT_KINDS)[number];

/** Which requests a fault may hit. */
export type FaultTarget = 'all' | 'batches' | 'health';

/** The fault in force. */
export interface FaultSetting {
  kind: FaultKind | 'none';
  /** Share of matching requests hit, 0 to 1. @default 1 */
  rate?: number;
  /** Hit at most this many requests, then forward cleanly. @default unlimited */
  limit?: number;
  /** @default 'all' */
  only?: FaultTarget;
  /** For `latency`: the base delay of each chunk, in ms. @default 100 */
  latencyMs?: number;
  /** For `latency`: a random extra delay of up to this many ms per chunk. @default 50 */
  jitterMs?: number;
}

/** A request as the proxy saw it, with the fault it was given (null: forwarded cleanly). */
export interface ProxiedRequest {
  /** `Date.now()` when its head arrived. */
  at: number;
  connection: number;
  method: string;
  path: string;
  idempotencyKey: string | undefined;
  fault: FaultKind | null;
}

export interface FaultProxyOptions {
  /** Where to forward. */
  target: { host: string; port: number };
  /** Seed of the proxy's own PRNG (which requests are hit, jitter, cut points). */
  seed: number;
  /** Most requests kept in {@link FaultProxy.requests}; older ones are dropped. @default 100000 */
  maxRecorded?: number;
}

const HTTP_FAULTS = {
  'http-500': { status: 500, reason: 'Internal Server Error', error: 'internal', headers: '' },
  'http-503': { status: 503, reason: 'Service Unavailable', error: 'unavailable', headers: '' },
  'http-429': { status: 429, reason: 'Too Many Requests', error: 'throttled', headers: 'retry-after: 1\r\n' },
} as const;

const isHttpFault = (kind: FaultKind | null): kind is keyof typeof HTTP_FAULTS =>
  kind === 'http-500' || kind === 'http-503' || kind === 'http-429';

const MAX_HEAD_BYTES = 64 * 1024;
/** How long a reset waits behind the bytes passed on before it (see `reset-response`). */
const RESET_GRACE_MS = 20;
const EMPTY = Buffer.alloc(0);
const CRLF = Buffer.from('\r\n');
const HEAD_END = Buffer.from('\r\n\r\n');

/** What a head says, as far as the proxy needs it. */
export interface MessageHead {
  /** Requests only. */
  method: string;
  path: string;
  /** Responses only. */
  status: number;
  headers: Map<string, string>;
  /** Bytes of body, or how the body is delimited. */
  body: number | 'chunked' | 'until-close';
}

/** A piece of an HTTP message stream, with the raw bytes it came from. */
export type Segment =
  | { kind: 'head'; head: MessageHead; raw: Buffer }
  | { kind: 'body'; raw: Buffer }
  | { kind: 'end' };

/** Thrown on bytes that are not HTTP/1.1 as the proxy understands it. */
export class HttpParseError extends Error {
  override name = 'HttpParseError';
}

function parseHead(raw: Buffer, type: 'request' | 'response', requestMethod: string | undefined): MessageHead {
  const lines = raw
    .subarray(0, raw.length - 4)
    .toString('latin1')
    .split('\r\n');
  const start = lines[0] ?? '';
  const headers = new Map<string, string>();
  for (const line of lines.slice(1)) {
    const colon = line.indexOf(':');
    if (colon <= 0) throw new HttpParseError(`bad header line ${JSON.stringify(line)}`);
    const name = line.slice(0, colon).trim().toLowerCase();
    const value = line.slice(colon + 1).trim();
    headers.set(name, headers.has(name) ? `${headers.get(name)}, ${value}` : value);
  }
  let method = '';
  let path = '';
  let status = 0;
  if (type === 'request') {
    const match = /^([A-Z]+) (\S+) HTTP\/1\.[01]$/.exec(start);
    if (!match) throw new HttpParseError(`bad request line ${JSON.stringify(start)}`);
    method = match[1] as string;
    path = match[2] as string;
  } else {
    const match = /^HTTP\/1\.[01] (\d{3})(?: .*)?$/.exec(start);
    if (!match) throw new HttpParseError(`bad status line ${JSON.stringify(start)}`);
    status = Number(match[1]);
  }
  let body: MessageHead['body'];
  const encoding = headers.get('transfer-encoding')?.toLowerCase();
  const length = headers.get('content-length');
  if (type === 'response' && (status < 200 || status === 204 || status === 304 || requestMethod === 'HEAD')) {
    body = 0;
  } else if (encoding?.split(',').some((e) => e.trim() === 'chunked')) body = 'chunked';
  else if (length !== undefined) {
    if (!/^\d+$/.test(length)) throw new HttpParseError(`bad content-length ${JSON.stringify(length)}`);
    body = Number(length);
  } else body = type === 'request' ? 0 : 'until-close';
  return { method, path, status, headers, body };
}

/**
 * Splits a byte stream into HTTP/1.1 messages: each one a head, its body's bytes as they come, and an end. The raw
 * bytes of the segments are the input, in order, so that forwarding them all is forwarding the stream unchanged.
 */
export class MessageParser {
  #buffer: Buffer = Buffer.alloc(0);
  #state: 'head' | 'fixed' | 'chunk-size' | 'chunk-data' | 'chunk-crlf' | 'trailers' | 'until-close' = 'head';
  #remaining = 0;

  /** `methodOf()` tells a response parser the method of the request it answers (a HEAD answer has no body). */
  constructor(
    readonly type: 'request' | 'response',
    readonly methodOf: () => string | undefined = () => undefined,
  ) {}

  push(chunk: Buffer): Segment[] {
    this.#buffer = this.#buffer.length === 0 ? chunk : Buffer.concat([this.#buffer, chunk]);
    const out: Segment[] = [];
    const take = (n: number) => {
      const raw = this.#buffer.subarray(0, n);
      this.#buffer = this.#buffer.subarray(n);
      return raw;
    };
    for (;;) {
      const buffer = this.#buffer;
      if (this.#state === 'head') {
        const end = buffer.indexOf(HEAD_END);
        if (end < 0) {
          if (buffer.length > MAX_HEAD_BYTES) throw new HttpParseError('head too large');
          break;
        }
        const raw = take(end + 4);
        const head = parseHead(raw, this.type, this.methodOf());
        out.push({ kind: 'head', head, raw });
        if (head.body === 0) out.push({ kind: 'end' });
        else if (head.body === 'chunked') this.#state = 'chunk-size';
        else if (head.body === 'until-close') this.#state = 'until-close';
        else {
          this.#state = 'fixed';
          this.#remaining = head.body;
        }
      } else if (this.#state === 'fixed' || this.#state === 'chunk-data') {
        if (buffer.length === 0) break;
        const raw = take(Math.min(this.#remaining, buffer.length));
        this.#remaining -= raw.length;
        out.push({ kind: 'body', raw });
        if (this.#remaining === 0) {
          if (this.#state === 'fixed') {
            out.push({ kind: 'end' });
            this.#state = 'head';
          } else this.#state = 'chunk-crlf';
        }
      } else if (this.#state === 'chunk-crlf') {
        if (buffer.length < 2) break;
        out.push({ kind: 'body', raw: take(2) });
        this.#state = 'chunk-size';
      } else if (this.#state === 'chunk-size' || this.#state === 'trailers') {
        const end = buffer.indexOf(CRLF);
        if (end < 0) {
          if (buffer.length > MAX_HEAD_BYTES) throw new HttpParseError('chunk line too long');
          break;
        }
        const raw = take(end + 2);
        out.push({ kind: 'body', raw });
        const line = raw.subarray(0, end).toString('latin1');
        if (this.#state === 'trailers') {
          if (line === '') {
            out.push({ kind: 'end' });
            this.#state = 'head';
          }
        } else {
          const size = Number.parseInt(line.split(';')[0]?.trim() ?? '', 16);
          if (!Number.isFinite(size) || size < 0) throw new HttpParseError(`bad chunk size ${JSON.stringify(line)}`);
          if (size === 0) this.#state = 'trailers';
          else {
            this.#state = 'chunk-data';
            this.#remaining = size;
          }
        }
      } else {
        // until-close
        if (buffer.length > 0) out.push({ kind: 'body', raw: take(buffer.length) });
        break;
      }
    }
    return out;
  }

  /** The stream ended: ends a body delimited by the close. */
  end(): Segment[] {
    if (this.#state !== 'until-close') return [];
    this.#state = 'head';
    return [{ kind: 'end' }];
  }

  /** True between messages. */
  get idle(): boolean {
    return this.#state === 'head' && this.#buffer.length === 0;
  }
}

/** Runs actions in order, each not before its time: the chunks of one direction of a connection. */
class Lane {
  #queue: { at: number; run: () => void }[] = [];
  #timer: NodeJS.Timeout | undefined;
  #lastAt = 0;

  push(delayMs: number, run: () => void): void {
    const now = Date.now();
    const at = Math.max(now + delayMs, this.#lastAt);
    this.#lastAt = at;
    if (this.#queue.length === 0 && at <= now) {
      run();
      return;
    }
    this.#queue.push({ at, run });
    this.#arm();
  }

  #arm(): void {
    const first = this.#queue[0];
    if (this.#timer || !first) return;
    this.#timer = setTimeout(
      () => {
        this.#timer = undefined;
        const now = Date.now();
        while (this.#queue.length > 0 && (this.#queue[0] as { at: number }).at <= now) {
          (this.#queue.shift() as { run: () => void }).run();
        }
        this.#arm();
      },
      Math.max(0, first.at - Date.now()),
    );
  }

  clear(): void {
    if (this.#timer) clearTimeout(this.#timer);
    this.#timer = undefined;
    this.#queue = [];
  }
}

/** A request forwarded upstream and waiting for its answer. */
interface InFlight {
  fault: FaultKind | null;
  method: string;
  /** For cutting faults: the share of the answer's body let through (0.1 to 0.9), then its byte offset. */
  share: number;
  cutAt: number;
  sent: number;
}

/** One client connection and, once a request is forwarded, its own connection to the server. */
class ProxyConnection {
  readonly #proxy: FaultProxy;
  readonly #client: Socket;
  readonly #id: number;
  #upstream: Socket | undefined;
  readonly #toUpstream = new Lane();
  readonly #toClient = new Lane();
  readonly #requests = new MessageParser('request');
  #responses: MessageParser;
  readonly #inFlight: InFlight[] = [];
  /** The request being received from the client; `cutAt` is where a reset-request cuts it. */
  #current: { fault: FaultKind | null; cutAt: number; sent: number } | undefined;
  /** Blackholed or cut: nothing more from the client is looked at. */
  #deaf = false;
  #closed = false;
  readonly #timers = new Set<NodeJS.Timeout>();

  constructor(proxy: FaultProxy, client: Socket, id: number) {
    this.#proxy = proxy;
    this.#client = client;
    this.#id = id;
    this.#responses = this.#newResponseParser();
    client.on('data', (chunk: Buffer) => this.#guard(() => this.#fromClient(chunk)));
    client.on('error', () => undefined); // 'close' follows
    client.on('close', () => this.destroy());
  }

  #newResponseParser(): MessageParser {
    return new MessageParser('response', () => this.#inFlight[0]?.method);
  }

  #guard(work: () => void): void {
    try {
      work();
    } catch {
      this.destroy(); // bytes the proxy cannot follow: cut the connection rather than guess
    }
  }

  /** Runs `action` after `ms`, unless the connection is closed meanwhile. */
  #later(ms: number, action: () => void): void {
    const timer = setTimeout(() => {
      this.#timers.delete(timer);
      if (!this.#closed) action();
    }, ms);
    this.#timers.add(timer);
  }

  /** Closes both sides at once. */
  destroy(): void {
    if (this.#closed) return;
    this.#closed = true;
    for (const timer of this.#timers) clearTimeout(timer);
    this.#timers.clear();
    this.#toClient.clear();
    this.#toUpstream.clear();
    this.#client.destroy();
    this.#dropUpstream();
    this.#proxy.forget(this.#id);
  }

  /** Resets the client's connection (RST) and closes the server's. */
  #reset(): void {
    if (this.#closed) return;
    this.#client.resetAndDestroy();
    this.destroy();
  }

  /** Closes the connection to the server without passing the close on to the client. */
  #dropUpstream(): void {
    const upstream = this.#upstream;
    this.#upstream = undefined;
    upstream?.destroy();
  }

  #sendUpstream(raw: Buffer): void {
    const upstream = this.#ensureUpstream();
    this.#toUpstream.push(this.#proxy.chunkDelay(), () => {
      if (!upstream.destroyed) upstream.write(raw);
    });
  }

  #sendClient(raw: Buffer): void {
    this.#toClient.push(this.#proxy.chunkDelay(), () => {
      if (!this.#client.destroyed) this.#client.write(raw);
    });
  }

  /** Runs `action` on the client side once what was sent to the client before it has gone out. */
  #thenClient(action: () => void): void {
    this.#toClient.push(this.#proxy.chunkDelay(), action);
  }

  #ensureUpstream(): Socket {
    if (this.#upstream && !this.#upstream.destroyed) return this.#upstream;
    const { host, port } = this.#proxy.target;
    const upstream = connect(port, host);
    upstream.setNoDelay(true);
    this.#upstream = upstream;
    this.#responses = this.#newResponseParser();
    upstream.on('data', (chunk: Buffer) => {
      if (this.#upstream === upstream) this.#guard(() => this.#fromUpstream(chunk));
    });
    upstream.on('error', () => undefined); // 'close' follows
    upstream.on('close', () => {
      if (this.#upstream !== upstream || this.#closed) return;
      this.#upstream = undefined;
      this.#guard(() => {
        for (const segment of this.#responses.end()) this.#onResponse(segment);
      });
      // The server closed with an answer owed or half sent: the client's connection goes too, after what was
      // already passed on. An idle keep-alive connection the server closed is simply reopened for the next request.
      if (this.#inFlight.length > 0 || !this.#responses.idle) this.#thenClient(() => this.destroy());
    });
    return upstream;
  }

  #fromClient(chunk: Buffer): void {
    if (this.#deaf) return;
    for (const segment of this.#requests.push(chunk)) {
      if (this.#closed || this.#deaf) return;
      this.#onRequest(segment);
    }
  }

  #onRequest(segment: Segment): void {
    if (segment.kind === 'head') {
      const { head } = segment;
      const fault = this.#proxy.decide(this.#id, head);
      const bodyLength = typeof head.body === 'number' ? head.body : 0;
      this.#current = { fault, cutAt: segment.raw.length + Math.floor(bodyLength / 2), sent: 0 };
      if (fault === 'blackhole') {
        this.#deaf = true;
        return;
      }
      if (isHttpFault(fault)) return; // answered once the whole request is in
      this.#inFlight.push({ fault, method: head.method, share: this.#proxy.cutPoint(), cutAt: 0, sent: 0 });
    }
    const current = this.#current;
    if (!current) return;
    if (segment.kind === 'end') {
      this.#current = undefined;
      if (isHttpFault(current.fault)) this.#answer(current.fault);
      else if (current.fault === 'reset-request') this.#cutRequest(); // no body: cut right after the head
      return;
    }
    if (isHttpFault(current.fault)) return;
    if (current.fault === 'reset-request' && segment.kind === 'body') {
      const room = current.cutAt - current.sent;
      if (segment.raw.length > room) {
        // The cut falls in this piece of the body: pass on what comes before it, then reset both sides.
        this.#sendUpstream(segment.raw.subarray(0, room));
        this.#cutRequest();
        return;
      }
    }
    this.#sendUpstream(segment.raw);
    current.sent += segment.raw.length;
  }

  #cutRequest(): void {
    this.#deaf = true;
    this.#toUpstream.push(this.#proxy.chunkDelay(), () => {
      // The server gets what was passed on and then the end of the stream: a request cut short mid-body.
      const upstream = this.#upstream;
      this.#upstream = undefined;
      if (upstream) this.#proxy.retire(upstream);
      this.#reset();
    });
  }

  #answer(kind: keyof typeof HTTP_FAULTS): void {
    const fault = HTTP_FAULTS[kind];
    const body = JSON.stringify({ error: fault.error, message: `injected by the fault proxy (${kind})` });
    this.#sendClient(
      Buffer.from(
        `HTTP/1.1 ${fault.status} ${fault.reason}\r\ncontent-type: application/json\r\n` +
          `content-length: ${Buffer.byteLength(body)}\r\n${fault.headers}connection: keep-alive\r\n\r\n${body}`,
      ),
    );
  }

  #fromUpstream(chunk: Buffer): void {
    for (const segment of this.#responses.push(chunk)) {
      if (this.#closed) return;
      this.#onResponse(segment);
    }
  }

  #onResponse(segment: Segment): void {
    const request = this.#inFlight[0];
    if (!request) return; // an answer nobody is waiting for any more
    if (segment.kind === 'end') {
      this.#inFlight.shift();
      // The server has answered, so it has committed: drop the answer, and the client's connection with it.
      if (request.fault === 'lose-response') this.#thenClient(() => this.destroy());
      return;
    }
    switch (request.fault) {
      case 'lose-response':
        return;
      case 'stall-response':
        if (segment.kind === 'head') this.#sendClient(segment.raw); // the body never follows
        return;
      case 'truncate':
      case 'reset-response': {
        if (segment.kind === 'head') {
          const body = typeof segment.head.body === 'number' ? segment.head.body : 0;
          request.cutAt = segment.raw.length + Math.floor(body * request.share);
        }
        const room = request.cutAt - request.sent;
        if (segment.raw.length < room) {
          this.#sendClient(segment.raw);
          request.sent += segment.raw.length;
          return;
        }
        // The cut falls in this piece: pass on what comes before it, then end (FIN) or reset (RST) the client.
        if (room > 0) this.#sendClient(segment.raw.subarray(0, room));
        this.#inFlight.shift();
        this.#deaf = true;
        this.#dropUpstream();
        if (request.fault === 'truncate') this.#thenClient(() => this.#client.end(() => this.destroy()));
        // A reset right behind the data can reach the client's kernel first and read as a plain end of stream:
        // give the bytes passed on a moment to be read, so that the client sees them, then the reset.
        else this.#thenClient(() => this.#client.write(EMPTY, () => this.#later(RESET_GRACE_MS, () => this.#reset())));
        return;
      }
      default:
        this.#sendClient(segment.raw);
    }
  }
}

/** A fault-injecting TCP proxy; see the module comment. */
export class FaultProxy {
  readonly target: { host: string; port: number };
  readonly #server: Server;
  readonly #random: () => number;
  readonly #connections = new Map<number, ProxyConnection>();
  readonly #retired = new Set<Socket>();
  readonly #maxRecorded: number;
  #setting: Required<FaultSetting> = FaultProxy.#resolve({ kind: 'none' });
  #hits = 0;
  #nextId = 0;
  #port = 0;
  #closing: Promise<void> | undefined;
  /** Faults injected, by kind. A `latency` fault counts each request that went through while it was on. */
  readonly counts: Record<FaultKind, number> = Object.fromEntries(FAULT_KINDS.map((k) => [k, 0])) as Record<
    FaultKind,
    number
  >;
  /** Every request seen (the latest `maxRecorded`), in order of arrival. */
  readonly requests: ProxiedRequest[] = [];
  /** Requests seen in all. */
  requestCount = 0;
  /** Connections accepted in all. */
  connectionCount = 0;

  private constructor(options: FaultProxyOptions) {
    this.target = options.target;
    this.#random = mulberry32(options.seed);
    this.#maxRecorded = options.maxRecorded ?? 100_000;
    this.#server = createServer((client) => {
      client.setNoDelay(true);
      this.connectionCount++;
      const id = this.#nextId++;
      this.#connections.set(id, new ProxyConnection(this, client, id));
    });
  }

  /** Starts a proxy on 127.0.0.1, on a free port. */
  static async start(options: FaultProxyOptions): Promise<FaultProxy> {
    const proxy = new FaultProxy(options);
    await new Promise<void>((resolve, reject) => {
      proxy.#server.once('error', reject);
      proxy.#server.listen(0, '127.0.0.1', () => {
        proxy.#server.off('error', reject);
        resolve();
      });
    });
    proxy.#port = (proxy.#server.address() as { port: number }).port;
    return proxy;
  }

  static #resolve(setting: FaultSetting): Required<FaultSetting> {
    return {
      rate: 1,
      limit: Number.POSITIVE_INFINITY,
      only: 'all',
      latencyMs: 100,
      jitterMs: 50,
      ...setting,
    };
  }

  get port(): number {
    return this.#port;
  }

  /** The proxied base URL for `path`, e.g. `http://127.0.0.1:41234/api/v1`. */
  url(path = '/api/v1'): string {
    return `http://127.0.0.1:${this.#port}${path}`;
  }

  /** The fault in force. */
  get setting(): Readonly<Required<FaultSetting>> {
    return this.#setting;
  }

  /** Whether the client connection `id` (see {@link ProxiedRequest.connection}) is still open. */
  isOpen(id: number): boolean {
    return this.#connections.has(id);
  }

  /** Faults injected in all. */
  get faults(): number {
    return Object.values(this.counts).reduce((sum, n) => sum + n, 0);
  }

  /** Switches the fault for requests that arrive from now on (chunks already delayed keep their delay). */
  set(setting: FaultSetting): void {
    this.#setting = FaultProxy.#resolve(setting);
    this.#hits = 0;
  }

  /** No more faults: forwards everything cleanly. Connections already blackholed stay so until the client closes them. */
  heal(): void {
    this.set({ kind: 'none' });
  }

  /** Stops listening and destroys every connection. Safe to call twice. */
  close(): Promise<void> {
    this.#closing ??= new Promise<void>((resolve) => {
      this.#server.close(() => resolve());
      for (const connection of [...this.#connections.values()]) connection.destroy();
      for (const socket of [...this.#retired]) socket.destroy();
    });
    return this.#closing;
  }

  /** @internal The fault for a request whose head just arrived, counted and recorded. */
  decide(connection: number, head: MessageHead): FaultKind | null {
    const s = this.#setting;
    let fault: FaultKind | null = null;
    if (s.kind === 'latency') fault = 'latency';
    else if (s.kind !== 'none' && this.#matches(s.only, head) && this.#hits < s.limit && this.#random() < s.rate) {
      fault = s.kind;
      this.#hits++;
    }
    if (fault) this.counts[fault]++;
    this.requestCount++;
    this.requests.push({
      at: Date.now(),
      connection,
      method: head.method,
      path: head.path,
      idempotencyKey: head.headers.get('idempotency-key'),
      fault,
    });
    if (this.requests.length > this.#maxRecorded) this.requests.splice(0, this.requests.length - this.#maxRecorded);
    return fault;
  }

  #matches(only: FaultTarget, head: MessageHead): boolean {
    if (only === 'all') return true;
    const path = head.path.split('?')[0] ?? '';
    if (only === 'batches') return head.method === 'POST' && path.endsWith('/telemetry/batches');
    return path.endsWith('/health');
  }

  /** @internal The delay of a chunk, per the latency in force. */
  chunkDelay(): number {
    const s = this.#setting;
    if (s.kind !== 'latency') return 0;
    return s.latencyMs + Math.round(this.#random() * s.jitterMs);
  }

  /** @internal Where in an answer's body a cutting fault cuts, as a share: 0.1 to 0.9. */
  cutPoint(): number {
    return 0.1 + 0.8 * this.#random();
  }

  /** @internal Ends a connection to the server gracefully (what was written still arrives), then destroys it. */
  retire(upstream: Socket): void {
    this.#retired.add(upstream);
    const done = () => {
      this.#retired.delete(upstream);
      upstream.destroy();
    };
    upstream.once('close', done);
    upstream.setTimeout(2000, done);
    upstream.resume();
    upstream.end();
  }

  /** @internal */
  forget(id: number): void {
    this.#connections.delete(id);
  }
}
