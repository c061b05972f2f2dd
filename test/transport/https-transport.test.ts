import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CloudServer, type CloudServerTls } from '../../src/cloud/index.js';
import { HttpTransport, type HttpTransportOptions, isConfigError, type OutgoingBatch } from '../../src/index.js';
import { encodeBatch } from '../../src/sync/batch-codec.js';
import { makeCertificates, type TestCertificates } from '../helpers/certificates.js';
import { defer } from '../helpers/cleanup.js';
import { startTestServer } from '../helpers/http.js';
import { startHttpsTestServer } from '../helpers/https.js';

const REPLICA = '00000000-0000-4000-8000-000000000002';

function batch(batchNo = 1): OutgoingBatch {
  const rows = [1, 2, 3].map((seq) => ({
    seq,
    kind: 'reading' as const,
    sensorId: 'temp-01',
    ts: Date.UTC(2024, 0, 1) + seq,
    value: seq * 1.5,
    unit: 'celsius',
    tags: null,
    payload: null,
  }));
  const sealed = encodeBatch({ deviceId: 'device-1', replicaId: REPLICA }, batchNo, rows, { level: 6 });
  return {
    replicaId: REPLICA,
    batchNo,
    count: sealed.count,
    body: sealed.body,
    contentType: sealed.contentType,
    contentEncoding: sealed.contentEncoding,
    idempotencyKey: `${REPLICA}:${batchNo}`,
  };
}

let certs: TestCertificates;
beforeAll(() => {
  certs = makeCertificates();
});
afterAll(() => certs.remove());

function transport(url: string, options: Partial<HttpTransportOptions> = {}): HttpTransport {
  const made = new HttpTransport({ baseUrl: url, apiKey: 'right', timeoutMs: 5000, ...options });
  defer(() => made.close());
  return made;
}

async function cloud(tls: Partial<CloudServerTls> = {}): Promise<CloudServer> {
  const server = await CloudServer.listen({
    port: 0,
    host: '127.0.0.1',
    apiKeys: ['right'],
    tls: { key: certs.server.key, cert: certs.server.cert, ...tls },
  });
  defer(() => server.close());
  return server;
}

/** An HTTPS server that acknowledges nothing and counts what reaches it. */
const recorder = (pair = certs.server, maxVersion?: 'TLSv1.2' | 'TLSv1.3') =>
  startHttpsTestServer({ key: pair.key, cert: pair.cert, ...(maxVersion ? { maxVersion } : {}) }, (_q, response) => {
    response.writeHead(500).end();
  });

describe('HttpTransport over HTTPS', () => {
  describe('certificate validation', () => {
    it('gets a batch acknowledged by a cloud whose certificate chains to `ca`', async () => {
      const server = await cloud();
      expect(server.url).toMatch(/^https:\/\/127\.0\.0\.1:\d+\/api\/v1$/);
      const result = await transport(server.url, { ca: certs.root.cert }).sendBatch(batch());
      expect(result).toMatchObject({ status: 'acknowledged', ack: { accepted: 3 } });
    });

    it('refuses a certificate from a CA it does not know (no `ca`: the bundled roots)', async () => {
      const server = await recorder();
      const result = await transport(server.url).sendBatch(batch());
      expect(result).toMatchObject({ status: 'retryable', code: 'tls' });
      expect((result as { message: string }).message).toMatch(/not trusted.*UNABLE_TO_GET_ISSUER_CERT_LOCALLY/);
      expect(server.requests).toHaveLength(0);
    });

    it('refuses a certificate from another CA than the one `ca` names', async () => {
      const server = await recorder();
      const result = await transport(server.url, { ca: certs.otherRoot.cert }).sendBatch(batch());
      expect(result).toMatchObject({ status: 'retryable', code: 'tls' });
      expect(server.requests).toHaveLength(0);
    });

    it('refuses an expired certificate', async () => {
      const server = await recorder(certs.expired);
      const result = await transport(server.url, { ca: certs.root.cert }).sendBatch(batch());
      expect(result).toMatchObject({ status: 'retryable', code: 'tls' });
      expect((result as { message: string }).message).toMatch(/CERT_HAS_EXPIRED/);
      expect(server.requests).toHaveLength(0);
    });

    it('refuses a certificate for another host', async () => {
      const server = await recorder(certs.wrongHost);
      const result = await transport(server.url, { ca: certs.root.cert }).sendBatch(batch());
      expect(result).toMatchObject({ status: 'retryable', code: 'tls' });
      expect((result as { message: string }).message).toMatch(/ERR_TLS_CERT_ALTNAME_INVALID/);
      expect(server.requests).toHaveLength(0);
    });

    it('keeps validating when NODE_TLS_REJECT_UNAUTHORIZED=0 is set', async () => {
      const server = await recorder(certs.expired);
      const before = process.env.NODE_TLS_REJECT_UNAUTHORIZED;
      process.env.NODE_TLS_REJECT_UNAUTHORIZED = '0';
      defer(() => {
        if (before === undefined) delete process.env.NODE_TLS_REJECT_UNAUTHORIZED;
        else process.env.NODE_TLS_REJECT_UNAUTHORIZED = before;
      });
      const result = await transport(server.url, { ca: certs.root.cert }).sendBatch(batch());
      expect(result).toMatchObject({ status: 'retryable', code: 'tls' });
      expect(server.requests).toHaveLength(0);
    });

    it('reports a plain-HTTP server behind an https:// URL as a TLS failure', async () => {
      const server = await startTestServer((_q, response) => {
        response.writeHead(500).end();
      });
      const result = await transport(server.url.replace('http:', 'https:')).sendBatch(batch());
      expect(result).toMatchObject({ status: 'retryable', code: 'tls' });
      expect(server.requests).toHaveLength(0);
    });

    it('reports a certificate failure from ping() with its code', async () => {
      const server = await recorder(certs.expired);
      expect(await transport(server.url, { ca: certs.root.cert }).ping()).toMatchObject({
        reachable: false,
        code: 'tls',
      });
    });
  });

  describe('pinnedCertificates', () => {
    it.each([
      ['the leaf', () => certs.server.pin],
      ['the intermediate', () => certs.intermediate.pin],
      ['the root', () => certs.root.pin],
    ])('passes a chain in which %s is pinned', async (_which, pin) => {
      const server = await cloud();
      const result = await transport(server.url, {
        ca: certs.root.cert,
        pinnedCertificates: [certs.otherRoot.pin, pin()],
      }).sendBatch(batch());
      expect(result).toMatchObject({ status: 'acknowledged' });
    });

    it('sends bytes past TLS when the pin matches (the counters below can see them)', async () => {
      const server = await recorder();
      await transport(server.url, { ca: certs.root.cert, pinnedCertificates: [certs.root.pin] }).sendBatch(batch());
      expect(server.requests).toHaveLength(1);
      expect(server.cleartextBytes).toBeGreaterThan(0);
    });

    it.each(['TLSv1.2', 'TLSv1.3'] as const)(
      'refuses a chain without a pinned key before a request byte is sent (%s)',
      async (maxVersion) => {
        const server = await recorder(certs.server, maxVersion);
        const sender = transport(server.url, { ca: certs.root.cert, pinnedCertificates: [certs.otherRoot.pin] });
        // Twice: a refused connection leaves no session behind that the next one could resume unchecked.
        for (const batchNo of [1, 2]) {
          const result = await sender.sendBatch(batch(batchNo));
          expect(result).toMatchObject({ status: 'retryable', code: 'pin-mismatch' });
          const message = (result as { message: string }).message;
          expect(message).toContain('matches none of the pinned keys');
          // It names what the server presented, leaf first, so that an operator can compare.
          expect(message).toContain(certs.server.pin);
          expect(message).toContain(certs.intermediate.pin);
        }
        expect(server.connections).toBe(2);
        expect(server.requests).toHaveLength(0);
        expect(server.cleartextBytes).toBe(0);
      },
    );

    it('refuses records pushes, pulls and pings the same way', async () => {
      const server = await recorder();
      const sender = transport(server.url, { ca: certs.root.cert, pinnedCertificates: [certs.otherRoot.pin] });
      const push = await sender.pushRecords({ deviceId: 'd', replicaId: REPLICA, mutations: [] });
      expect(push).toMatchObject({ status: 'retryable', code: 'pin-mismatch' });
      expect(await sender.pullRecords(0, 10)).toMatchObject({ status: 'retryable', code: 'pin-mismatch' });
      expect(await sender.ping()).toMatchObject({ reachable: false, code: 'pin-mismatch' });
      expect(server.requests).toHaveLength(0);
      expect(server.cleartextBytes).toBe(0);
    });

    it('does not check pins on a certificate that fails validation: that is a TLS error first', async () => {
      const server = await recorder(certs.expired);
      const result = await transport(server.url, {
        ca: certs.root.cert,
        pinnedCertificates: [certs.expired.pin],
      }).sendBatch(batch());
      expect(result).toMatchObject({ status: 'retryable', code: 'tls' });
    });
  });

  describe('mutual TLS', () => {
    const mutual = () => cloud({ ca: certs.clientCa.cert, requestCert: true });

    it('is refused by a cloud that requires a client certificate when it has none', async () => {
      const server = await mutual();
      const result = await transport(server.url, { ca: certs.root.cert }).sendBatch(batch());
      expect(result).toMatchObject({ status: 'retryable', code: 'tls' });
      expect(await server.store.stats()).toMatchObject({ points: 0 });
    });

    it('is refused when its certificate comes from a CA the cloud does not trust', async () => {
      const server = await mutual();
      const result = await transport(server.url, {
        ca: certs.root.cert,
        cert: certs.stranger.cert,
        key: certs.stranger.key,
      }).sendBatch(batch());
      // Node's TLS server closes such a connection after the handshake without an alert: the client sees a reset,
      // which it cannot tell from a network failure (docs/security-transport.md, Caveats).
      expect(result).toMatchObject({ status: 'retryable', code: expect.stringMatching(/^(tls|network)$/) });
      expect(await server.store.stats()).toMatchObject({ points: 0 });
    });

    it('is accepted with a client certificate the cloud trusts', async () => {
      const server = await mutual();
      const result = await transport(server.url, {
        ca: certs.root.cert,
        cert: certs.client.cert,
        key: certs.client.key,
      }).sendBatch(batch());
      expect(result).toMatchObject({ status: 'acknowledged', ack: { accepted: 3 } });
    });
  });

  describe('constructor', () => {
    const refusal = (options: Partial<HttpTransportOptions> & { baseUrl: string }) => {
      try {
        new HttpTransport(options).close();
      } catch (error) {
        if (isConfigError(error)) return error.issues.join('\n');
        throw error;
      }
      return undefined;
    };

    it('refuses http:// to a host that is not loopback, naming the option and why', () => {
      expect(refusal({ baseUrl: 'http://cloud.example.com/api/v1' })).toMatch(
        /"baseUrl" option to be an https:\/\/ URL.*allowInsecure.*clear text/,
      );
      expect(refusal({ baseUrl: 'http://10.0.0.5/api/v1' })).toMatch(/https:\/\//);
    });

    it('takes http:// to a loopback host, or anywhere with allowInsecure', () => {
      for (const baseUrl of ['http://127.0.0.1:1/', 'http://127.9.9.9/', 'http://[::1]:8/', 'http://localhost/']) {
        expect(refusal({ baseUrl })).toBeUndefined();
      }
      expect(refusal({ baseUrl: 'http://cloud.example.com/', allowInsecure: true })).toBeUndefined();
    });

    it('refuses TLS options with an http:// URL, since they could not apply', () => {
      expect(refusal({ baseUrl: 'http://127.0.0.1/', pinnedCertificates: [certs.root.pin] })).toMatch(
        /"pinnedCertificates" option needs an https:\/\//,
      );
      expect(refusal({ baseUrl: 'http://127.0.0.1/', ca: certs.root.cert })).toMatch(/"ca" option needs/);
    });

    it('refuses a pin that is not sha256/<base64 of 32 bytes>, naming its index', () => {
      const hex = certs.root.pin.replace('sha256/', 'sha256:');
      expect(refusal({ baseUrl: 'https://x.example/', pinnedCertificates: [certs.root.pin, hex] })).toMatch(
        /"pinnedCertificates\[1\]"/,
      );
      expect(refusal({ baseUrl: 'https://x.example/', pinnedCertificates: ['sha256/abc='] })).toMatch(
        /pinnedCertificates\[0\]/,
      );
      expect(refusal({ baseUrl: 'https://x.example/', pinnedCertificates: [] })).toMatch(/at least one pin/);
    });

    it('refuses a `ca` that holds no certificate, such as a file path', () => {
      expect(refusal({ baseUrl: 'https://x.example/', ca: '/etc/ssl/my-ca.pem' })).toMatch(
        /"ca" option to hold PEM certificates.*not its path/,
      );
      expect(refusal({ baseUrl: 'https://x.example/', ca: [certs.root.cert, 'junk'] })).toMatch(/"ca\[1\]"/);
    });

    it('refuses `cert` without `key`, and a key that is not the certificate’s, without quoting the key', () => {
      expect(refusal({ baseUrl: 'https://x.example/', cert: certs.client.cert })).toMatch(/"cert" option needs "key"/);
      const mismatch = refusal({ baseUrl: 'https://x.example/', cert: certs.client.cert, key: certs.stranger.key });
      expect(mismatch).toMatch(/not the private key of the "cert"/);
      const garbled = refusal({ baseUrl: 'https://x.example/', cert: certs.client.cert, key: 'secret-ish text' });
      expect(garbled).toMatch(/"key" option to be an unencrypted PEM private key/);
      expect(garbled).not.toContain('secret-ish');
    });
  });
});
