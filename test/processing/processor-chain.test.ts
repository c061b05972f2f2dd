import { setTimeout as sleep } from 'node:timers/promises';
import { describe, expect, it } from 'vitest';
import {
  type DataPoint,
  DataProcessor,
  Deadband,
  type DroppedEvent,
  EdgeGateway,
  isConfigError,
  isProcessorError,
  type Processor,
  ProcessorError,
  WindowedAggregation,
} from '../../src/index.js';
import { createGateway, readDb } from '../helpers/gateway.js';
import { tempDbPath } from '../helpers/temp-dir.js';

interface StoredRow {
  kind: number;
  sensor_id: string;
  value: number | null;
  payload: string | null;
}

const outbox = (path: string) =>
  readDb(
    path,
    (db) => db.prepare('SELECT kind, sensor_id, value, payload FROM outbox ORDER BY seq').all() as StoredRow[],
  );

/** Adds `by` to the value; sync. */
const add = (by: number): Processor => ({
  name: `add${by}`,
  process: (point) => ({ ...point.toJSON(), value: point.value + by }),
});

/** Multiplies the value by `by`, after a turn of the event loop. */
const times = (by: number): Processor => ({
  name: `times${by}`,
  process: async (point) => {
    await sleep(1);
    return { ...point.toJSON(), value: point.value * by };
  },
});

class Hangs extends DataProcessor {
  process(point: DataPoint) {
    return point.value === 13 ? new Promise<never>(() => {}) : point;
  }
}

class Throws extends DataProcessor {
  process(point: DataPoint) {
    if (point.value === 7) throw new Error('seven is unlucky');
    return point;
  }
}

describe('EdgeGateway', () => {
  describe('with a chain of processors', () => {
    it('runs each reading through the processors in order, sync and async alike', async () => {
      const path = tempDbPath();
      const gateway = createGateway({ localDb: path, processors: [add(1), times(10), add(2)] });
      await gateway.start();
      expect(await gateway.sendBatch([1, 2, 3].map((value) => ({ sensorId: 's', value })))).toBe(3);
      expect(outbox(path).map((r) => r.value)).toEqual([22, 32, 42]);
    });

    it('drops a reading one processor returns null for, and later processors never see it', async () => {
      const path = tempDbPath();
      const seen: number[] = [];
      const gateway = createGateway({
        localDb: path,
        processors: [
          { name: 'odd-only', process: (p: DataPoint) => (p.value % 2 === 1 ? p : null) },
          {
            name: 'spy',
            process: (p: DataPoint) => {
              seen.push(p.value);
              return p;
            },
          },
        ],
      });
      await gateway.start();
      expect(await gateway.sendData({ sensorId: 's', value: 2 })).toBe(false);
      expect(await gateway.sendData({ sensorId: 's', value: 3 })).toBe(true);
      expect(seen).toEqual([3]);
      expect(outbox(path).map((r) => r.value)).toEqual([3]);
    });

    it('fans out an array and keeps processed data out of later processors', async () => {
      const path = tempDbPath();
      const gateway = createGateway({
        localDb: path,
        processors: [
          {
            name: 'split',
            process: (p: DataPoint) => [p, { ...p.toJSON(), sensorId: `${p.sensorId}-copy` }, { note: 'seen' }],
          },
          add(100),
        ],
      });
      await gateway.start();
      expect(await gateway.sendData({ sensorId: 's', value: 1 })).toBe(true);
      const rows = outbox(path);
      expect(rows.filter((r) => r.kind === 0).map((r) => [r.sensor_id, r.value])).toEqual([
        ['s', 101],
        ['s-copy', 101],
      ]);
      expect(rows.filter((r) => r.kind === 1).map((r) => r.payload)).toEqual(['{"note":"seen"}']);
    });

    it('sets aside a reading a processor throws on, names it, and keeps the rest of the batch', async () => {
      const path = tempDbPath();
      const errors: Error[] = [];
      const dropped: DroppedEvent[] = [];
      const gateway = createGateway({ localDb: path, processors: [add(0), new Throws(), add(1)] });
      gateway.on('error', (error) => errors.push(error));
      gateway.on('dropped', (event) => dropped.push(event));
      await gateway.start();
      expect(await gateway.sendBatch([6, 7, 8].map((value) => ({ sensorId: 's', value })))).toBe(2);
      expect(outbox(path).map((r) => r.value)).toEqual([7, 9]);
      expect(gateway.getDeadLetters()).toEqual([
        expect.objectContaining({ value: 7, source: 'Throws', reason: 'seven is unlucky' }),
      ]);
      expect(errors).toHaveLength(1);
      expect(errors[0]).toBeInstanceOf(ProcessorError);
      expect(errors[0]).toMatchObject({ processor: 'Throws', timedOut: false, code: 'PROCESSOR_FAILED' });
      expect(dropped).toEqual([expect.objectContaining({ reason: 'processor-failed', count: 1 })]);
    });

    it('gives up on a processor that outlasts processorTimeout, and keeps taking readings', async () => {
      const path = tempDbPath();
      const errors: Error[] = [];
      const gateway = createGateway({ localDb: path, processors: [new Hangs()], processorTimeout: 0.05 });
      gateway.on('error', (error) => errors.push(error));
      await gateway.start();
      const [hung, fine] = await Promise.all([
        gateway.sendData({ sensorId: 's', value: 13 }),
        gateway.sendData({ sensorId: 's', value: 14 }),
      ]);
      expect([hung, fine]).toEqual([false, true]);
      expect(await gateway.sendData({ sensorId: 's', value: 15 })).toBe(true);
      expect(outbox(path).map((r) => r.value)).toEqual([14, 15]);
      expect(gateway.getDeadLetters()).toEqual([
        expect.objectContaining({ value: 13, source: 'Hangs', reason: expect.stringMatching(/within 0.05 s/) }),
      ]);
      expect(isProcessorError(errors[0])).toBe(true);
      expect(errors[0]).toMatchObject({ timedOut: true });
    });

    it('keeps the alerts a reading raised before a later processor failed on it', async () => {
      class Alerts extends DataProcessor {
        async process(point: DataPoint) {
          await this.triggerAlert({ severity: 'warning', message: 'odd reading' });
          return point;
        }
      }
      const gateway = createGateway({ processors: [new Alerts(), new Throws()] });
      gateway.on('error', () => {});
      await gateway.start();
      expect(await gateway.sendData({ sensorId: 's', value: 7 })).toBe(false);
      expect(gateway.alerts()).toEqual([expect.objectContaining({ message: 'odd reading', source: 'Alerts' })]);
      expect(gateway.getDeadLetters()).toHaveLength(1);
    });

    it('refuses a custom processor placed after a built-in, and both processor and processors', () => {
      const refused = (options: Partial<ConstructorParameters<typeof EdgeGateway>[0]>) => {
        try {
          new EdgeGateway({ deviceId: 'd', localDb: tempDbPath(), ...options });
        } catch (error) {
          return isConfigError(error) ? error.message : 'another error';
        }
        return 'accepted';
      };
      expect(refused({ processors: [new Deadband({ absolute: 1 }), add(1)] })).toMatch(/move add1 before deadband/);
      expect(refused({ processor: add(1), processors: [add(2)] })).toMatch(/not both/);
      expect(refused({ processors: [new WindowedAggregation(), new WindowedAggregation()] })).toMatch(
        /distinct "name"/,
      );
      expect(refused({ processors: [add(1), new Deadband({ absolute: 1 })] })).toBe('accepted');
    });
  });

  describe('lifecycle hooks of processors', () => {
    class Hooked extends DataProcessor {
      constructor(
        readonly label: string,
        readonly calls: string[],
      ) {
        super();
      }
      override get name() {
        return this.label;
      }
      process(point: DataPoint) {
        this.calls.push(`${this.label}.process`);
        return point;
      }
      async start() {
        await sleep(1);
        this.calls.push(`${this.label}.start`);
      }
      flush() {
        this.calls.push(`${this.label}.flush`);
      }
      stop() {
        this.calls.push(`${this.label}.stop`);
      }
    }

    it('calls start before the first reading, flush and then stop at stop(), in chain order', async () => {
      const calls: string[] = [];
      const gateway = createGateway({ processors: [new Hooked('a', calls), new Hooked('b', calls)] });
      await gateway.start();
      expect(calls).toEqual(['a.start', 'b.start']);
      await gateway.sendData({ sensorId: 's', value: 1 });
      await gateway.stop();
      expect(calls).toEqual(['a.start', 'b.start', 'a.process', 'b.process', 'a.flush', 'b.flush', 'a.stop', 'b.stop']);
    });

    it('rejects start() with a ProcessorError when a start hook throws, and can start again', async () => {
      let fail = true;
      const processor = {
        name: 'picky',
        process: (p: DataPoint) => p,
        start: () => {
          if (fail) throw new Error('no licence');
        },
      };
      const gateway = createGateway({ processor });
      await expect(gateway.start()).rejects.toThrow(/start hook of processor picky failed: no licence/);
      fail = false;
      await gateway.start();
      expect(await gateway.sendData({ sensorId: 's', value: 1 })).toBe(true);
    });

    it('reports a stop hook that hangs and still stops', async () => {
      const errors: Error[] = [];
      const gateway = createGateway({
        processorTimeout: 0.05,
        processor: { name: 'sticky', process: (p: DataPoint) => p, stop: () => new Promise<void>(() => {}) },
      });
      gateway.on('error', (error) => errors.push(error));
      await gateway.start();
      await gateway.stop();
      expect(gateway.getStatus().running).toBe(false);
      expect(errors.map((e) => e.message)).toEqual([expect.stringMatching(/stop hook of processor sticky/)]);
    });
  });
});
