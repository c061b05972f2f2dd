import { describe, expect, it } from 'vitest';
import type { DroppedEvent, SendResult, SyncErrorEvent } from '../../src/index.js';
import { MemoryTransport, type MemoryTransportResponder, startCloudServer } from '../../src/testing/index.js';
import { defer } from '../helpers/cleanup.js';
import { createGateway, readings } from '../helpers/gateway.js';
import { waitFor } from '../helpers/wait-for.js';

describe('EdgeGateway', () => {
  describe('when the cloud refuses a reading by name', () => {
    async function poisonCloud() {
      const cloud = await startCloudServer({
        validatePoint: (point) => (point.value === 666 ? 'value 666 is not allowed' : undefined),
      });
      defer(() => cloud.close());
      return cloud;
    }

    /** 50 readings, the 18th of which has the value the cloud refuses. */
    const withPoison = () => readings(50).map((r, i) => (i === 17 ? { ...r, value: 666 } : r));

    it('delivers every other reading of the batch', async () => {
      const cloud = await poisonCloud();
      const gateway = createGateway({ cloudUrl: cloud.url, apiKey: cloud.apiKey });
      await gateway.start();
      const sent = withPoison();
      await gateway.sendBatch(sent);
      await waitFor(() => gateway.getStatus().pendingSyncCount === 0, 5000, 'an empty local queue');

      const stored = await cloud.points(gateway.options.deviceId);
      expect(stored.map((p) => p.value)).toEqual(sent.filter((r) => r.value !== 666).map((r) => r.value));
      expect(await cloud.server.store.stats(gateway.options.deviceId)).toMatchObject({ points: 49 });
    });

    it('keeps the refused reading in the dead letters with the reason', async () => {
      const cloud = await poisonCloud();
      const gateway = createGateway({ cloudUrl: cloud.url, apiKey: cloud.apiKey });
      await gateway.start();
      await gateway.sendBatch(withPoison());
      await waitFor(() => gateway.getStatus().deadLetterCount === 1, 5000, 'one dead letter');

      expect(gateway.getDeadLetters()).toEqual([
        expect.objectContaining({
          sensorId: 'temp-01',
          value: 666,
          reason: 'value 666 is not allowed',
          source: 'cloud',
          seq: 18,
        }),
      ]);
    });

    it("emits 'dropped' with reason rejected-by-cloud and a REJECTED sync-error", async () => {
      const cloud = await poisonCloud();
      const gateway = createGateway({ cloudUrl: cloud.url, apiKey: cloud.apiKey });
      const dropped: DroppedEvent[] = [];
      const errors: SyncErrorEvent[] = [];
      gateway.on('dropped', (event) => dropped.push(event));
      gateway.on('sync-error', (event) => errors.push(event));
      await gateway.start();
      await gateway.sendBatch(withPoison());
      await waitFor(() => dropped.length > 0, 5000, "a 'dropped' event");

      expect(dropped).toEqual([{ reason: 'rejected-by-cloud', count: 1, message: expect.any(String) }]);
      expect(errors).toEqual([expect.objectContaining({ code: 'REJECTED', httpStatus: 422 })]);
    });

    it('does not block the readings sent afterwards', async () => {
      const cloud = await poisonCloud();
      const gateway = createGateway({ cloudUrl: cloud.url, apiKey: cloud.apiKey });
      await gateway.start();
      await gateway.sendBatch(withPoison());
      await waitFor(() => gateway.getStatus().deadLetterCount === 1, 5000, 'one dead letter');

      await gateway.sendBatch(readings(10, 'after-01'));
      await waitFor(() => gateway.getStatus().pendingSyncCount === 0, 5000, 'an empty local queue');
      const stored = await cloud.points(gateway.options.deviceId);
      expect(stored).toHaveLength(59);
      expect(stored.filter((p) => p.sensorId === 'after-01')).toHaveLength(10);
    });
  });

  describe('when the cloud refuses a batch without naming the reading', () => {
    // The reference server always names refused readings; a 400 without a list comes from other servers.
    const refuse13: MemoryTransportResponder = (batch): SendResult =>
      batch.body.points.some((p) => p.value === 13)
        ? { status: 'rejected', httpStatus: 400, message: 'bad' }
        : {
            status: 'acknowledged',
            replayed: false,
            ack: {
              ackThroughBatchNo: batch.batchNo,
              accepted: batch.body.points.length,
              duplicates: 0,
              serverTime: '',
            },
          };

    /** 64 readings with the values 0 to 63. */
    const values64 = () => Array.from({ length: 64 }, (_, i) => ({ sensorId: 'temp-01', value: i }));

    it('halves the batch until the refused reading stands alone, and acknowledges every other one once', async () => {
      const transport = new MemoryTransport(refuse13);
      const gateway = createGateway({ transport, batchSize: 64 });
      await gateway.start();
      await gateway.sendBatch(values64());
      await waitFor(() => gateway.getStatus().pendingSyncCount === 0, 5000, 'an empty local queue');

      const acknowledged = transport.points;
      expect(acknowledged).toHaveLength(63);
      expect(new Set(acknowledged.map((p) => p.seq)).size).toBe(63);
      expect(acknowledged.map((p) => p.value).sort((a, b) => (a ?? 0) - (b ?? 0))).toEqual(
        values64()
          .map((p) => p.value)
          .filter((v) => v !== 13),
      );
    });

    it('keeps the refused reading in the dead letters with the cloud message', async () => {
      const transport = new MemoryTransport(refuse13);
      const gateway = createGateway({ transport, batchSize: 64 });
      await gateway.start();
      await gateway.sendBatch(values64());
      await waitFor(() => gateway.getStatus().deadLetterCount === 1, 5000, 'one dead letter');

      expect(gateway.getDeadLetters()).toEqual([
        expect.objectContaining({ value: 13, reason: 'bad', source: 'cloud' }),
      ]);
    });

    it('goes back to full batches once the refused reading is set aside', async () => {
      const transport = new MemoryTransport(refuse13);
      const gateway = createGateway({ transport, batchSize: 64 });
      await gateway.start();
      await gateway.sendBatch(values64());
      await waitFor(() => gateway.getStatus().pendingSyncCount === 0, 5000, 'an empty local queue');

      const before = transport.sent.length;
      await gateway.sendBatch(values64().map((p) => ({ ...p, value: p.value + 100 })));
      await waitFor(() => gateway.getStatus().pendingSyncCount === 0, 5000, 'an empty local queue');
      expect(transport.sent.slice(before).map((b) => b.body.points.length)).toEqual([64]);
    });
  });
});
