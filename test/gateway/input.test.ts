import { describe, expect, it } from 'vitest';
import {
  DataPoint,
  type DroppedEvent,
  isQueueFullError,
  isValidationError,
  QueueFullError,
  type ValidationError,
} from '../../src/index.js';
import { createGateway, outboxCount, readings } from '../helpers/gateway.js';
import { tempDbPath } from '../helpers/temp-dir.js';

describe('EdgeGateway', () => {
  describe('.sendData()', () => {
    it('accepts a DataPoint', async () => {
      const gateway = createGateway();
      await gateway.start();
      expect(await gateway.sendData(new DataPoint({ sensorId: 'temp-01', value: 23.5, unit: 'celsius' }))).toBe(true);
      expect(gateway.getStatus().pendingSyncCount).toBe(1);
    });

    it('accepts a plain object', async () => {
      const gateway = createGateway();
      await gateway.start();
      expect(await gateway.sendData({ sensorId: 'temp-01', value: 23.5, timestamp: '2024-01-01T00:00:00Z' })).toBe(
        true,
      );
      expect(gateway.getStatus().pendingSyncCount).toBe(1);
    });

    it('rejects NaN with a ValidationError naming the value field, and stores nothing', async () => {
      const path = tempDbPath();
      const gateway = createGateway({ localDb: path });
      await gateway.start();
      const error = (await gateway.sendData({ sensorId: 'temp-01', value: Number.NaN }).catch((e) => e)) as unknown;
      expect(isValidationError(error)).toBe(true);
      expect((error as ValidationError).issues.map((i) => i.field)).toEqual(['value']);
      expect(gateway.getStatus().pendingSyncCount).toBe(0);
      await gateway.stop();
      expect(outboxCount(path)).toBe(0);
    });

    it('lists every problem of one reading in the ValidationError', async () => {
      const gateway = createGateway();
      await gateway.start();
      const error = (await gateway
        .sendData({ sensorId: '', value: Number.POSITIVE_INFINITY, tags: { floor: 3 } as never })
        .catch((e) => e)) as ValidationError;
      expect(error.issues.map((i) => i.field).sort()).toEqual(['sensorId', 'tags.floor', 'value']);
    });
  });

  describe('.sendBatch()', () => {
    it('rejects a batch with one bad reading, naming its index and field', async () => {
      const gateway = createGateway();
      await gateway.start();
      const batch = [...readings(3), { sensorId: 'temp-01', value: Number.NaN }, ...readings(2)];
      const error = (await gateway.sendBatch(batch).catch((e) => e)) as ValidationError;
      expect(isValidationError(error)).toBe(true);
      expect(error.issues).toEqual([{ index: 3, field: 'value', message: expect.any(String) }]);
      expect(error.message).toContain('[3] value');
    });

    it('stores nothing of a batch with one bad reading', async () => {
      const path = tempDbPath();
      const gateway = createGateway({ localDb: path });
      await gateway.start();
      const batch = [...readings(10), { sensorId: 'temp-01', value: 1, timestamp: 'not a date' }];
      await expect(gateway.sendBatch(batch)).rejects.toSatisfy(isValidationError);
      expect(gateway.getStatus().pendingSyncCount).toBe(0);
      await gateway.stop();
      expect(outboxCount(path)).toBe(0);
    });

    it('names every bad reading of a batch by index', async () => {
      const gateway = createGateway();
      await gateway.start();
      const batch = [{ sensorId: '', value: 1 }, ...readings(2), { sensorId: 's', value: Number.NaN }];
      const error = (await gateway.sendBatch(batch).catch((e) => e)) as ValidationError;
      expect(error.issues.map((i) => [i.index, i.field])).toEqual([
        [0, 'sensorId'],
        [3, 'value'],
      ]);
    });

    it('rejects something that is not an array with a ValidationError', async () => {
      const gateway = createGateway();
      await gateway.start();
      await expect(gateway.sendBatch({ sensorId: 's', value: 1 } as never)).rejects.toSatisfy(isValidationError);
    });

    it('resolves 0 for an empty batch', async () => {
      const gateway = createGateway();
      await gateway.start();
      expect(await gateway.sendBatch([])).toBe(0);
    });
  });

  describe('maxOfflineQueueSize', () => {
    it('rejects a reading past the limit with QueueFullError and emits dropped with reason queue-full', async () => {
      const gateway = createGateway({ maxOfflineQueueSize: 5 });
      await gateway.start();
      const dropped: DroppedEvent[] = [];
      gateway.on('dropped', (event) => dropped.push(event));
      expect(await gateway.sendBatch(readings(5))).toBe(5);

      const error = await gateway.sendData({ sensorId: 'temp-01', value: 1 }).catch((e: unknown) => e);
      expect(error).toBeInstanceOf(QueueFullError);
      expect(isQueueFullError(error)).toBe(true);
      expect((error as QueueFullError).limit).toBe(5);
      expect((error as QueueFullError).code).toBe('QUEUE_FULL');
      expect(dropped).toEqual([{ reason: 'queue-full', count: 1, message: expect.stringContaining('5') }]);
      expect(gateway.getStatus().pendingSyncCount).toBe(5);
    });

    it('counts readings waiting for the same commit against the limit', async () => {
      const gateway = createGateway({ maxOfflineQueueSize: 3 });
      await gateway.start();
      const results = await Promise.allSettled(readings(5).map((p) => gateway.sendData(p)));
      expect(results.map((r) => r.status)).toEqual(['fulfilled', 'fulfilled', 'fulfilled', 'rejected', 'rejected']);
      expect(gateway.getStatus().pendingSyncCount).toBe(3);
    });

    it('rejects a whole batch that does not fit, storing none of it', async () => {
      const path = tempDbPath();
      const gateway = createGateway({ localDb: path, maxOfflineQueueSize: 10 });
      await gateway.start();
      await gateway.sendBatch(readings(8));
      const dropped: DroppedEvent[] = [];
      gateway.on('dropped', (event) => dropped.push(event));
      await expect(gateway.sendBatch(readings(3))).rejects.toSatisfy(isQueueFullError);
      expect(dropped).toEqual([expect.objectContaining({ reason: 'queue-full', count: 3 })]);
      await gateway.stop();
      expect(outboxCount(path)).toBe(8);
    });

    it('reports degraded health when the queue is 90% full', async () => {
      const gateway = createGateway({ maxOfflineQueueSize: 10 });
      await gateway.start();
      await gateway.sendBatch(readings(9));
      const health = gateway.healthCheck();
      expect(health.status).toBe('degraded');
      expect(health.reasons).toEqual([expect.stringMatching(/offline queue is 90% full/)]);
    });
  });
});
