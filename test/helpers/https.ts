import { createServer } from 'node:https';
import type { AddressInfo } from 'node:net';
import type { TLSSocket } from 'node:tls';
import { defer } from './cleanup.js';
import { API_PREFIX, type RecordedRequest, type TestHandler } from './http.js';

/** The TLS side of an {@link HttpsTestServer}. */
export interface HttpsTestServerTls {
  key: string;
  cert: string;
  /** CAs of client certificates, with `requestCert`. */
  ca?: string;
  /** Ask for a client certificate and refuse the handshake without a good one. */
  requestCert?: boolean;
  maxVersion?: 'TLSv1.2' | 'TLSv1.3';
}

/** An HTTPS server that counts what reaches it, at each layer. */
export interface HttpsTestServer {
  /** `https://127.0.0.1:{port}/api/v1`. */
  url: string;
  port: number;
  /** Every request received, in order. */
  requests: RecordedRequest[];
  /** TCP connections accepted: a client tried. */
  readonly connections: number;
  /** TLS handshakes the server completed. */
  readonly handshakes: number;
  /** Bytes of application data (the decrypted request stream) received, over all connections. */
  readonly cleartextBytes: number;
  close(): Promise<void>;
}

/**
 * A `node:https` server on 127.0.0.1 port 0 that records every request and counts TCP connections, completed
 * handshakes and decrypted bytes: what a client sent past the TLS layer, if anything. Closed after the test.
 */
export async function startHttpsTestServer(tls: HttpsTestServerTls, handler: TestHandler): Promise<HttpsTestServer> {
  const requests: RecordedRequest[] = [];
  let connections = 0;
  let handshakes = 0;
  let cleartextBytes = 0;
  const server = createServer(
    {
      key: tls.key,
      cert: tls.cert,
      ...(tls.ca ? { ca: tls.ca } : {}),
      requestCert: tls.requestCert ?? false,
      rejectUnauthorized: tls.requestCert ?? false,
      ...(tls.maxVersion ? { maxVersion: tls.maxVersion } : {}),
    },
    (req, res) => {
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
    },
  );
  server.on('connection', () => connections++);
  server.on('secureConnection', (socket: TLSSocket) => {
    handshakes++;
    // Listening for 'data' next to the HTTP parser does not take bytes from it: both see every chunk.
    socket.on('data', (chunk: Buffer) => {
      cleartextBytes += chunk.length;
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
  return {
    url: `https://127.0.0.1:${port}${API_PREFIX}`,
    port,
    requests,
    get connections() {
      return connections;
    },
    get handshakes() {
      return handshakes;
    },
    get cleartextBytes() {
      return cleartextBytes;
    },
    close,
  };
}
