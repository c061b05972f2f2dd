import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  HttpTransport,
  type OutgoingBatch,
  type PingResult,
  type SendResult,
  type SyncErrorEvent,
  type SyncResult,
  type Transport,
} from '../../src/index.js';
import { startTestCloud, type TestCloud } from '../helpers/cloud.js';
import { comparable, createGateway, readings } from '../helpers/gateway.js';
import { batchRequests, forward, sendJson, startTestServer } from '../helpers/http.js';
import { waitFor } from '../helpers/wait-for.js';

/** The real HTTP transport, except that the answer to the first `toLose` stored batches is lost on the way back. */
class LosingAnswers implements Transport {
  readonly attempts: { key: string; body: Buffer }[] = [];
  #lost = 0;

  constructor(
    readonly inner: Transport,
    readonly toLose: number,
  ) {}

  async sendBatch(batch: OutgoingBatch, signal?: AbortSignal): Promise<SendResult> {
    this.attempts.push({ key: batch.idempotencyKey, body: Buffer.from(batch.body) });
    const result = await this.inner.sendBatch(batch, signal);
    if (result.status === 'acknowledged' && this.#lost < this.toLose) {
      this.#lost++;
      return { status: 'retryable', code: 'network', message: 'socket hang up (the answer was lost)' };
    }
    return result;
  }

  ping(signal?: AbortSignal): Promise<PingResult> {
    return this.inner.ping(signal);
  }

  close(): Promise<void> {
    return this.inner.close();
  }
}

describe('EdgeGateway', () => {
  let cloud: TestCloud;
  beforeAll(async () => {
    cloud = await startTestCloud();
  });
  afterAll(() => cloud.close());

  describe('when the answer to a stored batch is lost', () => {
    it('resends the same bytes under the same key, and the cloud stores the readings once', async () => {
      const transport = new LosingAnswers(new HttpTransport({ baseUrl: cloud.url, apiKey: cloud.apiKey }), 1);
      const gateway = createGateway({ transport, syncStrategy: 'fixed-interval' });
      const deviceId = gateway.options.deviceId;
      const results: SyncResult[] = [];
      gateway.on('sync', (result) => results.push(result));
      await gateway.start();

      const sent = readings(40);
      await gateway.sendBatch(sent);
      await waitFor(() => gateway.getStatus().pendingSyncCount === 0, 5000, 'an empty local queue');

      const [first, second] = transport.attempts;
      expect(transport.attempts).toHaveLength(2);
      expect(second?.key).toBe(first?.key);
      expect(second?.body.equals(first?.body as Buffer)).toBe(true);

      expect(await cloud.stats(deviceId)).toMatchObject({ points: 40, batches: 1 });
      expect((await cloud.stats(deviceId)).duplicateBatches).toBeGreaterThanOrEqual(1);
      expect((await cloud.points(deviceId)).map(comparable)).toEqual(sent.map(comparable));
      const total = results.reduce((sum, r) => ({ ack: sum.ack + r.acknowledged, dup: sum.dup + r.duplicates }), {
        ack: 0,
        dup: 0,
      });
      expect(total.ack).toBe(40);
      expect(total.dup).toBeGreaterThan(0);
    });

    it('reports the replay in the SyncResult of forceSync()', async () => {
      const transport = new LosingAnswers(new HttpTransport({ baseUrl: cloud.url, apiKey: cloud.apiKey }), 1);
      // The loop's own retries wait out a long backoff, so the forced cycles below are the only ones to send.
      const gateway = createGateway({
        transport,
        syncStrategy: 'fixed-interval',
        syncInterval: 3600,
        initialBackoff: 60,
        maxBackoff: 3600,
      });
      await gateway.start();
      await gateway.sendBatch(readings(30));

      const lost = await gateway.forceSync();
      expect(lost).toMatchObject({ sent: 30, acknowledged: 0, failed: 30, remaining: 30 });
      const replayed = await gateway.forceSync();
      expect(replayed).toMatchObject({ sent: 30, acknowledged: 30, duplicates: 30, remaining: 0 });
      expect(await cloud.stats(gateway.options.deviceId)).toMatchObject({ points: 30, duplicateBatches: 1 });
    });
  });

  describe.each([503, 500])('when the cloud answers %i for a while', (status) => {
    it('retries until the cloud takes the batches, and each reading arrives once', async () => {
      let refused = 0;
      const flaky = await startTestServer(async (request, response) => {
        if (request.url.endsWith('/telemetry/batches') && refused < 3) {
          refused++;
          sendJson(response, status, { error: 'unavailable', message: 'try again later' });
          return;
        }
        await forward(request, response, cloud.url);
      });
      const gateway = createGateway({ cloudUrl: flaky.url, apiKey: cloud.apiKey, batchSize: 10 });
      const deviceId = gateway.options.deviceId;
      const errors: SyncErrorEvent[] = [];
      gateway.on('sync-error', (event) => errors.push(event));
      await gateway.start();

      const sent = readings(35);
      await gateway.sendBatch(sent);
      await waitFor(() => gateway.getStatus().pendingSyncCount === 0, 10_000, 'an empty local queue');

      expect(errors.slice(0, 3).map((e) => [e.code, e.httpStatus])).toEqual(Array(3).fill(['SERVER_ERROR', status]));
      expect(batchRequests(flaky).length).toBeGreaterThanOrEqual(3 + 4);
      expect(await cloud.stats(deviceId)).toMatchObject({ points: 35, batches: 4 });
      expect((await cloud.points(deviceId)).map(comparable)).toEqual(sent.map(comparable));
    });
  });

  describe('when the cloud answers 429 with Retry-After: 1', () => {
    /** A cloud that throttles the first batch with Retry-After: 1, then takes everything. */
    async function throttlingOnce() {
      let throttled = false;
      return startTestServer(async (request, response) => {
        if (request.url.endsWith('/telemetry/batches') && !throttled) {
          throttled = true;
          sendJson(response, 429, { error: 'slow_down', message: 'too many requests' }, { 'retry-after': '1' });
          return;
        }
        await forward(request, response, cloud.url);
      });
    }

    it('waits at least the Retry-After before sending again, and delivers', async () => {
      const server = await throttlingOnce();
      // maxBackoff far below the Retry-After: the server's word is a floor, not capped by the local settings.
      const gateway = createGateway({ cloudUrl: server.url, apiKey: cloud.apiKey, maxBackoff: 0.1 });
      const errors: SyncErrorEvent[] = [];
      gateway.on('sync-error', (event) => errors.push(event));
      await gateway.start();
      await gateway.sendBatch(readings(10));
      await waitFor(() => gateway.getStatus().pendingSyncCount === 0, 10_000, 'an empty local queue');

      const [first, second] = batchRequests(server);
      expect((second?.at as number) - (first?.at as number)).toBeGreaterThanOrEqual(950);
      expect(errors[0]).toMatchObject({ code: 'THROTTLED', httpStatus: 429 });
      expect(errors[0]?.retryInMs).toBeGreaterThanOrEqual(1000);
      expect(await cloud.stats(gateway.options.deviceId)).toMatchObject({ points: 10, duplicateBatches: 0 });
    });

    it('waits at least the Retry-After when the throttled attempt was the last of its cycle', async () => {
      const server = await throttlingOnce();
      const gateway = createGateway({
        cloudUrl: server.url,
        apiKey: cloud.apiKey,
        maxRetryAttempts: 1,
        maxBackoff: 0.1,
      });
      await gateway.start();
      await gateway.sendBatch(readings(10));
      await waitFor(() => gateway.getStatus().pendingSyncCount === 0, 10_000, 'an empty local queue');

      const [first, second] = batchRequests(server);
      expect((second?.at as number) - (first?.at as number)).toBeGreaterThanOrEqual(950);
      expect(await cloud.stats(gateway.options.deviceId)).toMatchObject({ points: 10 });
    });

    it('does not report the gateway offline for being throttled', async () => {
      const server = await throttlingOnce();
      const gateway = createGateway({ cloudUrl: server.url, apiKey: cloud.apiKey });
      const offline: unknown[] = [];
      gateway.on('offline', (info) => offline.push(info));
      await gateway.start();
      await waitFor(() => gateway.getStatus().isOnline, 5000, 'the first contact');
      await gateway.sendBatch(readings(5));
      await waitFor(() => gateway.getStatus().lastError?.code === 'THROTTLED', 5000, 'the 429');
      expect(gateway.getStatus().isOnline).toBe(true);
      expect(offline).toEqual([]);
    });
  });
});
