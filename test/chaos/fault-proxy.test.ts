import { once } from 'node:events';
import { createServer, type IncomingMessage } from 'node:http';
import { type AddressInfo, connect } from 'node:net';
import { describe, expect, it } from 'vitest';
import { defer } from '../helpers/cleanup.js';
import { waitFor } from '../helpers/wait-for.js';
import { CHAOS_SEED } from './lib/chaos-config.js';
import { FaultProxy, type FaultSetting, MessageParser, type Segment } from './lib/fault-proxy.js';

/** What the upstream server saw of one request. */
interface Seen {
  method: string;
  url: string;
  body: string;
  /** False when the connection went away before the whole body arrived. */
  complete: boolean;
}

/** An upstream that echoes request bodies with a body of `answerBytes` bytes, and records what it saw. */
async function startUpstream(answerBytes = 2000) {
  const seen: Seen[] = [];
  const server = createServer((request: IncomingMessage, response) => {
    const chunks: Buffer[] = [];
    const entry: Seen = { method: request.method ?? '', url: request.url ?? '', body: '', complete: false };
    seen.push(entry);
    request.on('data', (chunk: Buffer) => chunks.push(chunk));
    request.on('error', () => undefined);
    request.on('end', () => {
      entry.complete = true;
      entry.body = Buffer.concat(chunks).toString();
      const body = JSON.stringify({ echo: entry.body, pad: 'x'.repeat(answerBytes) });
      response.writeHead(200, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) });
      response.end(body);
    });
  });
  server.keepAliveTimeout = 5000;
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  defer(
    () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  );
  return { port: (server.address() as AddressInfo).port, seen };
}

async function startProxy(setting: FaultSetting = { kind: 'none' }, answerBytes?: number) {
  const upstream = await startUpstream(answerBytes);
  const proxy = await FaultProxy.start({ target: { host: '127.0.0.1', port: upstream.port }, seed: CHAOS_SEED });
  defer(() => proxy.close());
  proxy.set(setting);
  return { proxy, upstream };
}

const post = (proxy: FaultProxy, body: string, signal?: AbortSignal) =>
  fetch(proxy.url('/api/v1/telemetry/batches'), { method: 'POST', body, signal: signal ?? null });

/** The outcome of a request through the proxy: the status and body, or the error on the way. */
async function attempt(request: Promise<Response>): Promise<{ status?: number; body?: string; error?: string }> {
  let response: Response;
  try {
    response = await request;
  } catch (error) {
    return { error: explain(error) };
  }
  try {
    return { status: response.status, body: await response.text() };
  } catch (error) {
    return { status: response.status, error: explain(error) };
  }
}

function explain(error: unknown): string {
  const err = error as Error & { cause?: { code?: string; message?: string } };
  return `${err.name}: ${err.message} (${err.cause?.code ?? err.cause?.message ?? ''})`;
}

/** How a raw exchange ended: a whole answer, or the connection closing (FIN) or being reset (RST) first. */
interface RawOutcome {
  status?: number;
  body: string;
  ended: 'answer' | 'fin' | 'reset' | 'timeout';
}

/** A raw HTTP/1.1 connection to the proxy: sends one request at a time on the same socket and reads the answer. */
async function rawConnection(proxy: FaultProxy) {
  const socket = connect(proxy.port, '127.0.0.1');
  defer(() => socket.destroy());
  await once(socket, 'connect');
  let fin = false;
  let reset = false;
  socket.on('end', () => {
    fin = true;
  });
  socket.on('error', (error: NodeJS.ErrnoException) => {
    if (error.code === 'ECONNRESET') reset = true;
  });
  return {
    exchange(path: string, body: string, timeoutMs = 2000): Promise<RawOutcome> {
      const parser = new MessageParser('response', () => 'POST');
      const outcome: RawOutcome = { body: '', ended: 'timeout' };
      return new Promise((resolve) => {
        const finish = (ended: RawOutcome['ended']) => {
          outcome.ended = ended;
          socket.off('data', onData);
          socket.off('close', onClose);
          clearTimeout(timer);
          resolve(outcome);
        };
        const onData = (chunk: Buffer) => {
          for (const segment of parser.push(chunk)) {
            if (segment.kind === 'head') outcome.status = segment.head.status;
            else if (segment.kind === 'body') outcome.body += segment.raw.toString();
            else finish('answer');
          }
        };
        const onClose = () => finish(reset ? 'reset' : fin ? 'fin' : 'reset');
        const timer = setTimeout(() => finish('timeout'), timeoutMs);
        socket.on('data', onData);
        socket.on('close', onClose);
        socket.write(`POST ${path} HTTP/1.1\r\nhost: x\r\ncontent-length: ${Buffer.byteLength(body)}\r\n\r\n${body}`);
      });
    },
  };
}

describe('FaultProxy', () => {
  describe('MessageParser', () => {
    const messages = [
      'POST /a HTTP/1.1\r\ncontent-length: 5\r\n\r\nhello',
      'GET /b HTTP/1.1\r\nhost: x\r\n\r\n',
      'POST /c HTTP/1.1\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\n2;x=1\r\nde\r\n0\r\nt: 1\r\n\r\n',
    ];

    it('splits pipelined requests into heads, bodies and ends that add up to the bytes it was given', () => {
      for (const piece of [1, 7, 1000]) {
        const parser = new MessageParser('request');
        const input = Buffer.from(messages.join(''));
        const segments: Segment[] = [];
        for (let i = 0; i < input.length; i += piece) segments.push(...parser.push(input.subarray(i, i + piece)));
        const raw = Buffer.concat(segments.flatMap((s) => (s.kind === 'end' ? [] : [s.raw])));
        expect(raw.equals(input)).toBe(true);
        expect(segments.filter((s) => s.kind === 'head').map((s) => s.kind === 'head' && s.head.path)).toEqual([
          '/a',
          '/b',
          '/c',
        ]);
        expect(segments.filter((s) => s.kind === 'end')).toHaveLength(3);
        expect(parser.idle).toBe(true);
      }
    });

    it('ends an answer without a length when the connection closes, and a HEAD answer after its head', () => {
      const parser = new MessageParser('response', () => 'GET');
      expect(parser.push(Buffer.from('HTTP/1.1 200 OK\r\n\r\nabc')).map((s) => s.kind)).toEqual(['head', 'body']);
      expect(parser.end()).toEqual([{ kind: 'end' }]);
      const head = new MessageParser('response', () => 'HEAD');
      const kinds = head.push(Buffer.from('HTTP/1.1 200 OK\r\ncontent-length: 9\r\n\r\n')).map((s) => s.kind);
      expect(kinds).toEqual(['head', 'end']);
    });

    it('refuses bytes that are not HTTP', () => {
      expect(() => new MessageParser('request').push(Buffer.from('hello world\r\n\r\n'))).toThrow(/request line/);
    });
  });

  describe('clean', () => {
    it('forwards several requests over one kept-alive connection unchanged', async () => {
      const { proxy, upstream } = await startProxy();
      const connection = await rawConnection(proxy);
      for (const body of ['one', 'two', 'three']) {
        const outcome = await connection.exchange('/api/v1/telemetry/batches', body);
        expect(outcome).toMatchObject({ status: 200, ended: 'answer' });
        expect(JSON.parse(outcome.body).echo).toBe(body);
      }
      expect(upstream.seen.map((s) => s.body)).toEqual(['one', 'two', 'three']);
      expect(proxy.connectionCount).toBe(1);
      expect(proxy.requestCount).toBe(3);
      expect(proxy.faults).toBe(0);
    });

    it('forwards what fetch sends, answers included', async () => {
      const { proxy } = await startProxy();
      const result = await attempt(post(proxy, 'fetched'));
      expect(result.status).toBe(200);
      expect(JSON.parse(result.body as string).echo).toBe('fetched');
    });
  });

  describe('latency', () => {
    it('delays chunks both ways and keeps the bytes in order', async () => {
      const { proxy } = await startProxy({ kind: 'latency', latencyMs: 100, jitterMs: 50 }, 200_000);
      const started = Date.now();
      const result = await attempt(post(proxy, 'slow'));
      // At least one delayed chunk each way; the 200 kB answer arrives whole and in order.
      expect(Date.now() - started).toBeGreaterThanOrEqual(200);
      expect(JSON.parse(result.body as string)).toEqual({ echo: 'slow', pad: 'x'.repeat(200_000) });
      expect(proxy.counts.latency).toBe(1);
    });
  });

  describe('reset-request', () => {
    it('resets the connection mid-body: the server never gets the whole request', async () => {
      const { proxy, upstream } = await startProxy({ kind: 'reset-request' });
      const result = await attempt(post(proxy, 'b'.repeat(10_000)));
      expect(result.status).toBeUndefined();
      expect(result.error).toMatch(/fetch failed/);
      await waitFor(() => upstream.seen.length === 1, 2000, 'the request head upstream');
      await new Promise((resolve) => setTimeout(resolve, 100));
      expect(upstream.seen[0]?.complete).toBe(false);
      expect(proxy.counts['reset-request']).toBe(1);
    });
  });

  describe.each([
    ['reset-response', 'reset'],
    ['truncate', 'fin'],
  ] as const)('%s', (kind, ended) => {
    it('lets the server answer, then passes on the head and part of the body and cuts the connection', async () => {
      const { proxy, upstream } = await startProxy({ kind });
      const outcome = await (await rawConnection(proxy)).exchange('/api/v1/telemetry/batches', 'committed');
      expect(outcome.status).toBe(200);
      expect(outcome.ended).toBe(ended);
      expect(outcome.body.length).toBeGreaterThan(0);
      expect(outcome.body.length).toBeLessThan(2000);
      expect(upstream.seen).toMatchObject([{ body: 'committed', complete: true }]);
      expect(proxy.counts[kind]).toBe(1);
    });

    it('breaks the body fetch is reading', async () => {
      const { proxy } = await startProxy({ kind });
      const result = await attempt(post(proxy, 'committed'));
      expect(result).toMatchObject({ status: 200, error: expect.stringMatching(/terminated/) });
    });
  });

  describe('lose-response', () => {
    it('lets the server answer, drops the answer and closes the connection', async () => {
      const { proxy, upstream } = await startProxy({ kind: 'lose-response' });
      const result = await attempt(post(proxy, 'committed'));
      expect(result.status).toBeUndefined();
      expect(result.error).toMatch(/fetch failed/);
      expect(upstream.seen).toMatchObject([{ body: 'committed', complete: true }]);
      expect(proxy.counts['lose-response']).toBe(1);
    });
  });

  describe('stall-response', () => {
    it('passes the head of the answer on, and never its body', async () => {
      const { proxy, upstream } = await startProxy({ kind: 'stall-response' });
      const controller = new AbortController();
      const response = await post(proxy, 'committed', controller.signal);
      expect(response.status).toBe(200);
      const body = response.text();
      body.catch(() => undefined);
      const outcome = await Promise.race([body, new Promise((resolve) => setTimeout(resolve, 300, 'stalled'))]);
      expect(outcome).toBe('stalled');
      controller.abort();
      await expect(body).rejects.toThrow();
      expect(upstream.seen).toMatchObject([{ body: 'committed', complete: true }]);
    });
  });

  describe('blackhole', () => {
    it('accepts the request and never answers nor forwards it', async () => {
      const { proxy, upstream } = await startProxy({ kind: 'blackhole' });
      const result = await attempt(post(proxy, 'lost', AbortSignal.timeout(300)));
      expect(result.error).toMatch(/TimeoutError/);
      expect(upstream.seen).toEqual([]);
      expect(proxy.counts.blackhole).toBe(1);
    });

    it('is cut off by close()', async () => {
      const { proxy } = await startProxy({ kind: 'blackhole' });
      const pending = attempt(post(proxy, 'lost'));
      await waitFor(() => proxy.requestCount === 1, 2000, 'the request at the proxy');
      await proxy.close();
      expect((await pending).error).toMatch(/fetch failed/);
    });
  });

  describe.each([
    ['http-500', 500, null],
    ['http-503', 503, null],
    ['http-429', 429, '1'],
  ] as const)('%s', (kind, status, retryAfter) => {
    it('answers itself without forwarding', async () => {
      const { proxy, upstream } = await startProxy({ kind, limit: 1 });
      const response = await post(proxy, 'refused');
      expect(response.status).toBe(status);
      expect(response.headers.get('retry-after')).toBe(retryAfter);
      expect(await response.json()).toMatchObject({ error: expect.any(String) });
      expect(upstream.seen).toEqual([]);
      expect(proxy.counts[kind]).toBe(1);
    });

    it('keeps the connection for the next request', async () => {
      const { proxy, upstream } = await startProxy({ kind, limit: 1 });
      const connection = await rawConnection(proxy);
      expect(await connection.exchange('/api/v1/telemetry/batches', 'refused')).toMatchObject({
        status,
        ended: 'answer',
      });
      expect(await connection.exchange('/api/v1/telemetry/batches', 'taken')).toMatchObject({
        status: 200,
        ended: 'answer',
      });
      expect(upstream.seen.map((s) => s.body)).toEqual(['taken']);
      expect(proxy.connectionCount).toBe(1);
    });
  });

  describe('.set()', () => {
    it('hits only the requests it targets, at most `limit` of them, and records every request', async () => {
      const { proxy } = await startProxy({ kind: 'http-503', only: 'batches', limit: 2 });
      const statuses: (number | undefined)[] = [];
      for (let i = 0; i < 3; i++) {
        statuses.push((await attempt(fetch(proxy.url('/api/v1/health')))).status);
        statuses.push((await attempt(post(proxy, `batch ${i}`))).status);
      }
      expect(statuses).toEqual([200, 503, 200, 503, 200, 200]);
      expect(proxy.counts['http-503']).toBe(2);
      expect(proxy.requests.map((r) => r.fault)).toEqual([null, 'http-503', null, 'http-503', null, null]);
    });

    it('draws which requests are hit from its seed', async () => {
      const hits = async () => {
        const { proxy } = await startProxy({ kind: 'http-500', rate: 0.5 });
        for (let i = 0; i < 30; i++) await attempt(post(proxy, String(i)));
        return proxy.requests.map((r) => r.fault !== null);
      };
      const first = await hits();
      expect(first.filter(Boolean).length).toBeGreaterThan(5);
      expect(first.filter(Boolean).length).toBeLessThan(25);
      expect(await hits()).toEqual(first);
    });

    it('forwards cleanly again after heal()', async () => {
      const { proxy, upstream } = await startProxy({ kind: 'lose-response' });
      expect((await attempt(post(proxy, 'lost'))).error).toBeDefined();
      proxy.heal();
      expect((await attempt(post(proxy, 'kept'))).status).toBe(200);
      expect(upstream.seen.map((s) => s.body)).toEqual(['lost', 'kept']);
      expect(proxy.faults).toBe(1);
    });
  });
});
