import { createServer, type IncomingHttpHeaders, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { gunzipSync, inflateRawSync } from 'node:zlib';
import { COMPACT_BATCH_CONTENT_TYPE, decodeCompactRaw } from '../../src/model/compact-codec.js';
import { defer } from './cleanup.js';

export { freePort } from './free-port.js';

/** A request as a {@link TestServer} received it. */
export interface RecordedRequest {
  method: string;
  /** Path and query, as sent. */
  url: string;
  headers: IncomingHttpHeaders;
  body: Buffer;
  /** `Date.now()` when the request arrived. */
  at: number;
}

/** Answers one request; `index` counts requests from 0. What it returns (or resolves to) is not used. */
export type TestHandler = (request: RecordedRequest, response: ServerResponse, index: number) => unknown;

export interface TestServer {
  /** `http://127.0.0.1:{port}/api/v1`, to pass as `cloudUrl`. */
  url: string;
  port: number;
  /** Every request received, in order. */
  requests: RecordedRequest[];
  close(): Promise<void>;
}

/** The `/api/v1` prefix of the reference server, kept on test servers so that their URLs look alike. */
export const API_PREFIX = '/api/v1';

/**
 * A tiny `node:http` server on 127.0.0.1 port 0 for answers the reference server never gives (5xx, 429, garbage,
 * a hang). Records every request; closed after the current test.
 */
export async function startTestServer(handler: TestHandler): Promise<TestServer> {
  const requests: RecordedRequest[] = [];
  const server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    const at = Date.now();
    req.on('data', (chunk: Buffer) => chunks.push(chunk));
    req.on('end', () => {
      const request: RecordedRequest = {
        method: req.method ?? 'GET',
        url: req.url ?? '/',
        headers: req.headers,
        body: Buffer.concat(chunks),
        at,
      };
      const index = requests.push(request) - 1;
      Promise.resolve(handler(request, res, index)).catch((error: unknown) => {
        if (!res.headersSent) res.writeHead(599).end(String(error));
        else res.destroy();
      });
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as AddressInfo).port;
  let closing: Promise<void> | undefined;
  const close = () => {
    closing ??= new Promise<void>((resolve) => {
      server.close(() => resolve());
      server.closeAllConnections();
    });
    return closing;
  };
  defer(close);
  return { url: `http://127.0.0.1:${port}${API_PREFIX}`, port, requests, close };
}

/** Sends a JSON answer. */
export function sendJson(
  response: ServerResponse,
  status: number,
  body: unknown,
  headers: Record<string, string> = {},
) {
  const json = JSON.stringify(body);
  response.writeHead(status, {
    'content-type': 'application/json',
    'content-length': Buffer.byteLength(json),
    ...headers,
  });
  response.end(json);
}

const FORWARDED_REQUEST_HEADERS = ['authorization', 'content-type', 'content-encoding', 'idempotency-key'];
const FORWARDED_RESPONSE_HEADERS = ['content-type', 'idempotent-replayed', 'retry-after', 'www-authenticate'];

/** Forwards a recorded request to the cloud at `cloudUrl` (its `/api/v1` base), relays the answer and returns it. */
export async function forward(
  request: RecordedRequest,
  response: ServerResponse,
  cloudUrl: string,
): Promise<{ status: number; body: Buffer }> {
  const path = request.url.startsWith(API_PREFIX) ? request.url.slice(API_PREFIX.length) : request.url;
  const headers: Record<string, string> = {};
  for (const name of FORWARDED_REQUEST_HEADERS) {
    const value = request.headers[name];
    if (typeof value === 'string') headers[name] = value;
  }
  const upstream = await fetch(`${cloudUrl}${path}`, {
    method: request.method,
    headers,
    ...(request.method === 'GET' || request.method === 'HEAD' ? {} : { body: request.body }),
  });
  const body = Buffer.from(await upstream.arrayBuffer());
  const out: Record<string, string> = { 'content-length': String(body.length) };
  for (const name of FORWARDED_RESPONSE_HEADERS) {
    const value = upstream.headers.get(name);
    if (value !== null) out[name] = value;
  }
  response.writeHead(upstream.status, out);
  response.end(body);
  return { status: upstream.status, body };
}

/** The batches a test server received, in order. */
export const batchRequests = (server: TestServer): RecordedRequest[] =>
  server.requests.filter((request) => request.method === 'POST' && request.url.endsWith('/telemetry/batches'));

/** The JSON body of a recorded batch request, inflated when it was gzip'd. */
export function decodeBatch(request: RecordedRequest): {
  batchNo: number;
  points: { seq: number; sensorId: string; value?: number; data?: unknown }[];
} {
  if (request.headers['content-type'] === COMPACT_BATCH_CONTENT_TYPE)
    return decodeCompactRaw(inflateRawSync(request.body));
  const raw = request.headers['content-encoding'] === 'gzip' ? gunzipSync(request.body) : request.body;
  return JSON.parse(raw.toString('utf8'));
}
