import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type Alert, DataPoint, DataProcessor, type DroppedEvent } from '../../src/index.js';
import { startTestCloud, type TestCloud } from '../helpers/cloud.js';
import { createGateway, readings } from '../helpers/gateway.js';
import { waitFor } from '../helpers/wait-for.js';

class Double extends DataProcessor {
  process(point: DataPoint) {
    return new DataPoint({ ...point.toJSON(), value: point.value * 2 });
  }
}

class DropNegatives extends DataProcessor {
  process(point: DataPoint) {
    return point.value < 0 ? null : point;
  }
}

class Normalise extends DataProcessor {
  process(point: DataPoint) {
    return { original: point.value, normalized: point.value / 100 };
  }
}

class ExplodesOnNegatives extends DataProcessor {
  async process(point: DataPoint) {
    if (point.value < 0) throw new Error(`cannot handle ${point.value}`);
    return point;
  }
}

class AlertsAbove100 extends DataProcessor {
  async process(point: DataPoint) {
    if (point.value > 100) await this.triggerAlert({ severity: 'warning', message: `High value: ${point.value}` });
    return point;
  }
}

describe('EdgeGateway', () => {
  let cloud: TestCloud;
  beforeAll(async () => {
    cloud = await startTestCloud();
  });
  afterAll(() => cloud.close());

  const gatewayWith = (processor: DataProcessor) =>
    createGateway({ cloudUrl: cloud.url, apiKey: cloud.apiKey, syncStrategy: 'on-change', processor });

  const drained = (gateway: ReturnType<typeof gatewayWith>) =>
    waitFor(() => gateway.getStatus().pendingSyncCount === 0, 5000, 'an empty local queue');

  describe('with a processor', () => {
    it('stores and delivers what a processor returning a DataPoint made of the reading', async () => {
      const gateway = gatewayWith(new Double());
      await gateway.start();
      const sent = readings(5);
      expect(await gateway.sendBatch(sent)).toBe(5);
      await drained(gateway);
      const stored = await cloud.points(gateway.options.deviceId);
      expect(stored.map((p) => p.value)).toEqual(sent.map((r) => r.value * 2));
      expect(stored.map((p) => [p.sensorId, p.timestamp, p.tags])).toEqual(
        sent.map((r) => [r.sensorId, r.timestamp.toISOString(), r.tags]),
      );
    });

    it('drops a reading the processor returns null for: sendData resolves false and nothing is stored', async () => {
      const gateway = gatewayWith(new DropNegatives());
      await gateway.start();
      expect(await gateway.sendData({ sensorId: 'temp-01', value: -5 })).toBe(false);
      expect(gateway.getStatus()).toMatchObject({ pendingSyncCount: 0, deadLetterCount: 0 });
      expect(await gateway.sendData({ sensorId: 'temp-01', value: 5 })).toBe(true);
      await drained(gateway);
      expect((await cloud.points(gateway.options.deviceId)).map((p) => p.value)).toEqual([5]);
    });

    it('delivers a plain object a processor returns as processed data of the reading', async () => {
      const gateway = gatewayWith(new Normalise());
      await gateway.start();
      const timestamp = new Date('2024-05-01T10:00:00.000Z');
      expect(await gateway.sendData({ sensorId: 'temp-01', value: 42, tags: { line: '3' }, timestamp })).toBe(true);
      await drained(gateway);
      const [stored] = await cloud.points(gateway.options.deviceId);
      expect(stored).toMatchObject({
        sensorId: 'temp-01',
        timestamp: timestamp.toISOString(),
        tags: { line: '3' },
        data: { original: 42, normalized: 0.42 },
      });
      expect(stored).not.toHaveProperty('value');
    });

    it('keeps a reading the processor throws on in the dead letters, named after the processor', async () => {
      const gateway = gatewayWith(new ExplodesOnNegatives());
      const errors: Error[] = [];
      const dropped: DroppedEvent[] = [];
      // A drop is reported once what it kept is committed: the dead letter is there when the event fires.
      const deadAtDrop: number[] = [];
      gateway.on('error', (error) => errors.push(error));
      gateway.on('dropped', (event) => {
        dropped.push(event);
        deadAtDrop.push(gateway.getDeadLetters().length);
      });
      await gateway.start();

      expect(await gateway.sendData({ sensorId: 'temp-01', value: -1 })).toBe(false);
      expect(deadAtDrop).toEqual([1]);
      expect(gateway.getDeadLetters()).toEqual([
        expect.objectContaining({
          sensorId: 'temp-01',
          value: -1,
          source: 'ExplodesOnNegatives',
          reason: 'cannot handle -1',
        }),
      ]);
      expect(dropped).toEqual([{ reason: 'processor-failed', count: 1, message: expect.stringMatching(/-1/) }]);
      expect(errors).toHaveLength(1);
      expect(errors[0]?.message).toMatch(/ExplodesOnNegatives/);
    });

    it('keeps working after the processor throws', async () => {
      const gateway = gatewayWith(new ExplodesOnNegatives());
      gateway.on('error', () => {});
      await gateway.start();
      expect(await gateway.sendData({ sensorId: 'temp-01', value: -1 })).toBe(false);
      expect(await gateway.sendBatch(readings(3))).toBe(3);
      await drained(gateway);
      expect(await cloud.points(gateway.options.deviceId)).toHaveLength(3);
      expect(gateway.getStatus().deadLetterCount).toBe(1);
    });

    it('does not throw into the host when the processor throws and nobody listens for errors', async () => {
      const gateway = gatewayWith(new ExplodesOnNegatives());
      await gateway.start();
      expect(await gateway.sendData({ sensorId: 'temp-01', value: -1 })).toBe(false);
    });

    it("emits the processor's alerts with the reading's sensor", async () => {
      const gateway = gatewayWith(new AlertsAbove100());
      const alerts: Alert[] = [];
      gateway.on('alert', (alert) => alerts.push(alert));
      await gateway.start();
      await gateway.sendData({ sensorId: 'boiler-2', value: 150 });
      await gateway.sendData({ sensorId: 'boiler-2', value: 50 });
      expect(alerts).toEqual([
        expect.objectContaining({
          severity: 'warning',
          message: 'High value: 150',
          sensorId: 'boiler-2',
          source: 'AlertsAbove100',
        }),
      ]);
    });
  });
});
