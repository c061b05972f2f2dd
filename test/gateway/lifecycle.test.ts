import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import {
  type DataPoint,
  DataProcessor,
  EdgeGateway,
  GatewayStoppedError,
  isGatewayStoppedError,
  isNotStartedError,
  NotStartedError,
} from '../../src/index.js';
import { createGateway, outboxCount } from '../helpers/gateway.js';
import { tempDbPath, tempDir } from '../helpers/temp-dir.js';
import { waitFor } from '../helpers/wait-for.js';

const reading = { sensorId: 'temp-01', value: 21.5 };

/** A processor that holds every reading until released. */
class GatedProcessor extends DataProcessor {
  started = 0;
  release: () => void = () => {};
  readonly #gate = new Promise<void>((resolve) => {
    this.release = resolve;
  });

  async process(point: DataPoint) {
    this.started++;
    await this.#gate;
    return point;
  }
}

describe('EdgeGateway', () => {
  describe('.start()', () => {
    it('is safe to call twice: both calls resolve and the gateway runs once', async () => {
      const gateway = createGateway();
      const [a, b] = await Promise.all([gateway.start(), gateway.start()]);
      expect(a).toBeUndefined();
      expect(b).toBeUndefined();
      await gateway.start();
      expect(gateway.getStatus().running).toBe(true);
      expect(await gateway.sendData(reading)).toBe(true);
      expect(gateway.getStatus().pendingSyncCount).toBe(1);
    });

    it('gives the status a replicaId once started', async () => {
      const gateway = createGateway();
      expect(gateway.getStatus().replicaId).toBe('');
      await gateway.start();
      expect(gateway.getStatus().replicaId).toMatch(
        /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/,
      );
    });

    it('rejects with GatewayStoppedError after stop()', async () => {
      const gateway = createGateway();
      await gateway.start();
      await gateway.stop();
      await expect(gateway.start()).rejects.toBeInstanceOf(GatewayStoppedError);
    });

    it('rejects with a StorageError when the database cannot be opened, and can be retried', async () => {
      const file = join(tempDir(), 'a-file');
      writeFileSync(file, 'not a folder');
      const gateway = createGateway({ localDb: join(file, 'edge.db') });
      await expect(gateway.start()).rejects.toMatchObject({ name: 'StorageError', code: 'STORAGE_FAILED' });
      expect(gateway.getStatus().running).toBe(false);
      await expect(gateway.start()).rejects.toMatchObject({ name: 'StorageError' });
    });
  });

  describe('.stop()', () => {
    it('is safe to call twice: both promises resolve', async () => {
      const gateway = createGateway();
      await gateway.start();
      await gateway.sendData(reading);
      const first = gateway.stop();
      const second = gateway.stop();
      await expect(first).resolves.toBeUndefined();
      await expect(second).resolves.toBeUndefined();
      await expect(gateway.stop()).resolves.toBeUndefined();
      expect(gateway.getStatus().running).toBe(false);
    });

    it('waits for readings still in the processor and stores them', async () => {
      const processor = new GatedProcessor();
      const path = tempDbPath();
      const gateway = createGateway({ localDb: path, processor });
      const errors: Error[] = [];
      gateway.on('error', (error) => errors.push(error));
      await gateway.start();
      const sent = gateway.sendData(reading);
      await waitFor(() => processor.started > 0, 5000, 'the processor to start');
      const stopping = gateway.stop();
      processor.release();
      await stopping;
      expect(await sent).toBe(true);
      expect(errors).toEqual([]);
      expect(outboxCount(path)).toBe(1);
    });

    it('refuses with GatewayStoppedError a reading whose processor outlasts stopTimeout, storing nothing', async () => {
      const processor = new GatedProcessor();
      const path = tempDbPath();
      const gateway = createGateway({ localDb: path, processor, stopTimeout: 0.05 });
      const errors: Error[] = [];
      gateway.on('error', (error) => errors.push(error));
      await gateway.start();
      const sent = gateway.sendData(reading).catch((error: unknown) => error);
      await waitFor(() => processor.started > 0, 5000, 'the processor to start');
      await gateway.stop();
      processor.release();
      expect(isGatewayStoppedError(await sent)).toBe(true);
      expect(errors).toEqual([]);
      expect(outboxCount(path)).toBe(0);
    });

    it('resolves for a gateway that was never started', async () => {
      const gateway = new EdgeGateway({ deviceId: 'never-started' });
      await expect(gateway.stop()).resolves.toBeUndefined();
    });

    it('keeps accepted readings for the next start', async () => {
      const gateway = createGateway();
      await gateway.start();
      await gateway.sendBatch([reading, reading, reading]);
      await gateway.stop();
      const again = createGateway({ localDb: gateway.options.localDb, deviceId: gateway.options.deviceId });
      await again.start();
      expect(again.getStatus().pendingSyncCount).toBe(3);
    });
  });

  describe('.sendData()', () => {
    it('rejects with NotStartedError before start()', async () => {
      const gateway = createGateway();
      const error = await gateway.sendData(reading).catch((e: unknown) => e);
      expect(error).toBeInstanceOf(NotStartedError);
      expect(isNotStartedError(error)).toBe(true);
      expect((error as NotStartedError).code).toBe('NOT_STARTED');
    });

    it('rejects with GatewayStoppedError after stop()', async () => {
      const gateway = createGateway();
      await gateway.start();
      await gateway.stop();
      const error = await gateway.sendData(reading).catch((e: unknown) => e);
      expect(isGatewayStoppedError(error)).toBe(true);
      expect((error as GatewayStoppedError).code).toBe('STOPPED');
    });

    it('rejects with GatewayStoppedError while stop() is in progress', async () => {
      const gateway = createGateway();
      await gateway.start();
      const stopping = gateway.stop();
      const error = await gateway.sendData(reading).catch((e: unknown) => e);
      await stopping;
      expect(isGatewayStoppedError(error)).toBe(true);
    });
  });

  describe('.sendBatch()', () => {
    it('rejects with NotStartedError before start()', async () => {
      await expect(createGateway().sendBatch([reading])).rejects.toSatisfy(isNotStartedError);
    });

    it('rejects with GatewayStoppedError after stop()', async () => {
      const gateway = createGateway();
      await gateway.start();
      await gateway.stop();
      await expect(gateway.sendBatch([reading])).rejects.toSatisfy(isGatewayStoppedError);
    });
  });

  describe('.forceSync()', () => {
    it('rejects with NotStartedError before start()', async () => {
      await expect(createGateway().forceSync()).rejects.toSatisfy(isNotStartedError);
    });
  });

  describe('.getDeadLetters()', () => {
    it('throws NotStartedError before start()', () => {
      expect(() => createGateway().getDeadLetters()).toThrow(NotStartedError);
    });
  });

  describe('.healthCheck()', () => {
    it('reports a stopped gateway as unhealthy, saying so', async () => {
      const gateway = createGateway();
      await gateway.start();
      await gateway.stop();
      const health = gateway.healthCheck();
      expect(health.status).toBe('unhealthy');
      expect(health.reasons.join(' ')).toMatch(/stopped/);
    });

    it('reports a running gateway without a cloud and with an empty queue as healthy', async () => {
      const gateway = createGateway();
      await gateway.start();
      expect(gateway.healthCheck()).toMatchObject({ status: 'healthy', reasons: [], pendingSyncCount: 0 });
    });
  });
});
