import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { CloudServerTls } from '../../src/cloud/index.js';
import type { EdgeGatewayOptions, SyncErrorCode, SyncErrorEvent } from '../../src/index.js';
import { startCloudServer, type ThrowawayCloud } from '../../src/testing/index.js';
import { type KeyPair, makeCertificates, type TestCertificates } from '../helpers/certificates.js';
import { defer } from '../helpers/cleanup.js';
import { comparable, createGateway, readings } from '../helpers/gateway.js';
import { forward } from '../helpers/http.js';
import { startHttpsTestServer } from '../helpers/https.js';
import { waitFor } from '../helpers/wait-for.js';

let certs: TestCertificates;
beforeAll(() => {
  certs = makeCertificates();
});
afterAll(() => certs.remove());

/** The reference cloud, listening with TLS on the test server certificate (or `tls`). */
async function tlsCloud(tls: Partial<CloudServerTls> = {}): Promise<ThrowawayCloud> {
  const cloud = await startCloudServer({ tls: { key: certs.server.key, cert: certs.server.cert, ...tls } });
  defer(() => cloud.close());
  return cloud;
}

/**
 * An HTTPS front on `pair` that relays every request to a plain reference cloud: the front counts what gets past
 * TLS, the cloud behind it stores what is delivered.
 */
async function countingFront(pair: KeyPair = certs.server) {
  const cloud = await startCloudServer();
  defer(() => cloud.close());
  const front = await startHttpsTestServer({ key: pair.key, cert: pair.cert }, (request, response) =>
    forward(request, response, cloud.url),
  );
  return { cloud, front };
}

/** A started gateway to `url`, its sync errors, and `n` readings queued. */
async function gatewayTo(url: string, apiKey: string, options: Partial<EdgeGatewayOptions>, n = 20) {
  const gateway = createGateway({ cloudUrl: url, apiKey, ...options });
  const errors: SyncErrorEvent[] = [];
  gateway.on('sync-error', (event) => errors.push(event));
  await gateway.start();
  const sent = readings(n);
  if (n > 0) await gateway.sendBatch(sent);
  const firstError = (code: SyncErrorCode) =>
    waitFor(() => errors.find((e) => e.code === code), 5000, `a ${code} sync-error`);
  return { gateway, errors, sent, firstError };
}

const drained = (gateway: ReturnType<typeof createGateway>) =>
  waitFor(() => gateway.getStatus().pendingSyncCount === 0, 5000, 'an empty local queue');

describe('EdgeGateway over HTTPS', () => {
  describe('with a pinned certificate that matches', () => {
    it('delivers every reading exactly once, and reports healthy', async () => {
      const cloud = await tlsCloud();
      const { gateway, sent } = await gatewayTo(cloud.url, cloud.apiKey, {
        ca: certs.root.cert,
        pinnedCertificates: [certs.intermediate.pin],
      });
      await drained(gateway);
      expect((await cloud.points(gateway.options.deviceId)).map(comparable)).toEqual(sent.map(comparable));
      expect(await cloud.server.store.stats(gateway.options.deviceId)).toMatchObject({ points: 20 });
      expect(gateway.getStatus().tlsFailure).toBeNull();
      expect(gateway.healthCheck().status).toBe('healthy');
    });
  });

  describe('with a pin the cloud does not match', () => {
    const wrongPin = () => ({ ca: certs.root.cert, pinnedCertificates: [certs.otherRoot.pin], maxBackoff: 30 });

    it('sends nothing: connections are made, no request byte gets past TLS', async () => {
      const { cloud, front } = await countingFront();
      const { gateway, firstError } = await gatewayTo(front.url, cloud.apiKey, wrongPin());
      await firstError('PIN_MISMATCH');
      expect(front.connections).toBeGreaterThan(0);
      expect(front.requests).toHaveLength(0);
      expect(front.cleartextBytes).toBe(0);
      expect(await cloud.points(gateway.options.deviceId)).toEqual([]);
      expect(gateway.getStatus()).toMatchObject({
        pendingSyncCount: 20,
        isOnline: false,
        tlsFailure: { code: 'PIN_MISMATCH', message: expect.stringContaining(certs.server.pin) },
      });
    });

    it('emits PIN_MISMATCH and waits its longest interval before trying again', async () => {
      const { cloud, front } = await countingFront();
      const { gateway, firstError } = await gatewayTo(front.url, cloud.apiKey, { ...wrongPin(), initialBackoff: 0.01 });
      const error = await firstError('PIN_MISMATCH');
      expect(error.message).toMatch(/matches none of the pinned keys/);
      expect(error.retryInMs).toBeGreaterThanOrEqual(15_000);
      expect(error.retryInMs).toBeLessThanOrEqual(30_000);
      expect((gateway.getStatus().nextSyncAt?.getTime() ?? 0) - Date.now()).toBeGreaterThan(10_000);
      const tried = front.connections;
      await new Promise((resolve) => setTimeout(resolve, 300));
      expect(front.connections).toBe(tried);
    });

    it('reports unhealthy, naming the pins', async () => {
      const { cloud, front } = await countingFront();
      const { gateway, firstError } = await gatewayTo(front.url, cloud.apiKey, wrongPin());
      await firstError('PIN_MISMATCH');
      const health = gateway.healthCheck();
      expect(health.status).toBe('unhealthy');
      expect(health.reasons.join(' ')).toMatch(/matches none of the pinned keys \(pinnedCertificates\)/);
    });

    it('reports unhealthy when idle too (nothing queued): the probe meets the same certificate', async () => {
      const { cloud, front } = await countingFront();
      const { gateway, firstError } = await gatewayTo(front.url, cloud.apiKey, wrongPin(), 0);
      await firstError('PIN_MISMATCH');
      expect(gateway.healthCheck().status).toBe('unhealthy');
      expect(front.requests).toHaveLength(0);
    });

    it('delivers everything exactly once when configure() sets the right pin', async () => {
      const { cloud, front } = await countingFront();
      const { gateway, sent, firstError } = await gatewayTo(front.url, cloud.apiKey, wrongPin());
      await firstError('PIN_MISMATCH');
      gateway.configure({ pinnedCertificates: [certs.otherRoot.pin, certs.root.pin] });
      await drained(gateway);
      expect((await cloud.points(gateway.options.deviceId)).map(comparable)).toEqual(sent.map(comparable));
      expect(await cloud.server.store.stats(gateway.options.deviceId)).toMatchObject({ points: 20 });
      expect(gateway.getStatus().tlsFailure).toBeNull();
      expect(gateway.healthCheck().status).toBe('healthy');
    });
  });

  describe('ordinary certificate validation', () => {
    it.each([
      ['an expired certificate', () => certs.expired, /CERT_HAS_EXPIRED/],
      ['a certificate for another host', () => certs.wrongHost, /ERR_TLS_CERT_ALTNAME_INVALID/],
    ])('refuses %s with TLS_ERROR, unhealthy, sending nothing', async (_what, pair, reason) => {
      const { cloud, front } = await countingFront(pair());
      const { gateway, firstError } = await gatewayTo(front.url, cloud.apiKey, { ca: certs.root.cert });
      const error = await firstError('TLS_ERROR');
      expect(error.message).toMatch(reason);
      expect(front.requests).toHaveLength(0);
      expect(gateway.getStatus().tlsFailure).toMatchObject({ code: 'TLS_ERROR' });
      const health = gateway.healthCheck();
      expect(health.status).toBe('unhealthy');
      expect(health.reasons.join(' ')).toMatch(reason);
    });

    it('refuses a CA it does not know, and delivers once `ca` names it', async () => {
      const cloud = await tlsCloud();
      const { gateway, sent, firstError } = await gatewayTo(cloud.url, cloud.apiKey, { maxBackoff: 30 });
      expect((await firstError('TLS_ERROR')).message).toMatch(/UNABLE_TO_GET_ISSUER_CERT_LOCALLY/);
      gateway.configure({ ca: certs.root.cert });
      await drained(gateway);
      expect((await cloud.points(gateway.options.deviceId)).map(comparable)).toEqual(sent.map(comparable));
    });
  });

  describe('mutual TLS', () => {
    it('is refused by a cloud that requires a client certificate, and delivers once given one', async () => {
      const cloud = await tlsCloud({ ca: certs.clientCa.cert, requestCert: true });
      const { gateway, sent, firstError } = await gatewayTo(cloud.url, cloud.apiKey, {
        ca: certs.root.cert,
        maxBackoff: 30,
      });
      expect((await firstError('TLS_ERROR')).message).toMatch(/certificate required/);
      expect(await cloud.points(gateway.options.deviceId)).toEqual([]);
      expect(gateway.healthCheck().status).toBe('unhealthy');
      gateway.configure({ cert: certs.client.cert, key: certs.client.key });
      await drained(gateway);
      expect((await cloud.points(gateway.options.deviceId)).map(comparable)).toEqual(sent.map(comparable));
      expect(gateway.healthCheck().status).toBe('healthy');
    });

    it('does not show the private key in its options', async () => {
      const gateway = createGateway({
        cloudUrl: 'https://cloud.example.com/api/v1',
        cert: certs.client.cert,
        key: certs.client.key,
      });
      expect(gateway.options).not.toHaveProperty('key');
      expect(gateway.options.cert).toBe(certs.client.cert);
      expect(JSON.stringify(gateway.options)).not.toContain('PRIVATE KEY');
    });
  });
});
