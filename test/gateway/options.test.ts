import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { type ConfigError, EdgeGateway, isConfigError } from '../../src/index.js';
import { EncoderPool } from '../../src/sync/encoder-pool.js';
import { defer } from '../helpers/cleanup.js';
import { startTestCloud, type TestCloud } from '../helpers/cloud.js';
import { comparable, createGateway, readings } from '../helpers/gateway.js';
import { batchRequests, decodeBatch, forward, startTestServer } from '../helpers/http.js';

/** The ConfigError `build` throws; fails the test when it throws nothing. */
function configError(build: () => unknown): ConfigError {
  try {
    build();
  } catch (error) {
    expect(isConfigError(error)).toBe(true);
    return error as ConfigError;
  }
  throw new Error('expected a ConfigError');
}

const construct = (options: Record<string, unknown>) => () => new EdgeGateway({ deviceId: 'd', ...options } as never);

describe('EdgeGateway', () => {
  describe('constructor', () => {
    it('applies the documented defaults', () => {
      const { options } = new EdgeGateway({ deviceId: 'device-001' });
      expect(options).toMatchObject({
        localDb: './data/edge_gateway.db',
        syncStrategy: 'adaptive',
        syncInterval: 60,
        batchSize: 100,
        compression: true,
        wireFormat: 'compact',
        maxOfflineQueueSize: 1_000_000,
        connectionTimeout: 30,
        maxRetryAttempts: 5,
        initialBackoff: 1,
        maxBackoff: 300,
        durability: 'full',
        stopTimeout: 5,
        workerThreads: 0,
      });
    });

    it('does not show the API key in its options', () => {
      const gateway = new EdgeGateway({ deviceId: 'd', cloudUrl: 'http://127.0.0.1:1/api/v1', apiKey: 'secret' });
      expect(gateway.options).not.toHaveProperty('apiKey');
      expect(JSON.stringify(gateway.options)).not.toContain('secret');
    });

    it('throws ConfigError for a misspelled option, suggesting the right name', () => {
      const error = configError(construct({ batchsize: 50 }));
      expect(error.code).toBe('CONFIG_INVALID');
      expect(error.issues).toEqual(['Misspelled option "batchsize"; did you mean "batchSize"?']);
      expect(error.message).toContain('did you mean "batchSize"');
    });

    it('throws ConfigError for batchSize 0, naming the option and the value', () => {
      const error = configError(construct({ batchSize: 0 }));
      expect(error.issues).toHaveLength(1);
      expect(error.issues[0]).toMatch(/"batchSize"/);
      expect(error.issues[0]).toMatch(/got 0/);
    });

    it('throws ConfigError for a workerThreads that is not an integer from 0 to 16, naming the option', () => {
      for (const workerThreads of [-1, 17, 1.5, '2']) {
        const error = configError(construct({ workerThreads }));
        expect(error.issues).toHaveLength(1);
        expect(error.issues[0]).toMatch(/"workerThreads"/);
        expect(error.issues[0]).toContain(`got ${JSON.stringify(workerThreads)}`);
      }
      expect(new EdgeGateway({ deviceId: 'd', workerThreads: 16 }).options.workerThreads).toBe(16);
    });

    it('throws ConfigError for compression level 12, naming the option', () => {
      const error = configError(construct({ compression: { level: 12 } }));
      expect(error.issues).toHaveLength(1);
      expect(error.issues[0]).toMatch(/"compression\.level"/);
      expect(error.issues[0]).toMatch(/12/);
    });

    it('throws ConfigError for a cloudUrl that is not http(s)', () => {
      expect(configError(construct({ cloudUrl: 'ftp://cloud.example.com' })).issues[0]).toMatch(/"cloudUrl"/);
    });

    it('throws ConfigError for an unknown sync strategy', () => {
      expect(configError(construct({ syncStrategy: 'sometimes' })).issues[0]).toMatch(/"syncStrategy"/);
    });

    it('throws ConfigError when maxBackoff is below initialBackoff, naming both', () => {
      const [issue] = configError(construct({ initialBackoff: 10, maxBackoff: 5 })).issues;
      expect(issue).toMatch(/"maxBackoff"/);
      expect(issue).toMatch(/"initialBackoff"/);
    });

    it('throws ConfigError without a deviceId', () => {
      expect(configError(() => new EdgeGateway({} as never)).issues[0]).toMatch(/"deviceId"/);
    });

    it('lists every bad option at once', () => {
      const error = configError(construct({ batchSize: 0, syncInterval: -1, compresion: true }));
      expect(error.issues).toHaveLength(3);
      expect(error.issues.join('\n')).toMatch(/did you mean "compression"/);
    });
  });

  describe('.configure()', () => {
    it('throws ConfigError for a bad value and keeps the options in force', () => {
      const gateway = createGateway({ batchSize: 20 });
      expect(configError(() => gateway.configure({ batchSize: -1 })).issues[0]).toMatch(/"batchSize"/);
      expect(gateway.options.batchSize).toBe(20);
    });

    it('changes localDb before start()', () => {
      const gateway = createGateway();
      gateway.configure({ localDb: `${gateway.options.localDb}.other` });
      expect(gateway.options.localDb).toMatch(/\.other$/);
    });

    it('refuses to change localDb after start(), naming the option', async () => {
      const gateway = createGateway();
      await gateway.start();
      const error = configError(() => gateway.configure({ localDb: '/tmp/elsewhere.db' }));
      expect(error.issues).toEqual(['The "localDb" option cannot change after start()']);
    });

    it('refuses to change durability after start()', async () => {
      const gateway = createGateway();
      await gateway.start();
      expect(configError(() => gateway.configure({ durability: 'normal' })).issues[0]).toMatch(/"durability"/);
    });
  });

  describe('with a cloud', () => {
    let cloud: TestCloud;
    beforeAll(async () => {
      cloud = await startTestCloud();
    });
    afterAll(() => cloud.close());

    /** A gateway behind a recording proxy to the cloud, syncing only when forced. */
    async function gatewayBehindProxy(options: Parameters<typeof createGateway>[0] = {}) {
      const proxy = await startTestServer((request, response) => forward(request, response, cloud.url));
      const gateway = createGateway({
        cloudUrl: proxy.url,
        apiKey: cloud.apiKey,
        syncStrategy: 'fixed-interval',
        syncInterval: 3600,
        ...options,
      });
      await gateway.start();
      return { gateway, proxy };
    }

    describe('.configure()', () => {
      it('makes a smaller batchSize apply to the next batches', async () => {
        const { gateway, proxy } = await gatewayBehindProxy({ batchSize: 100 });
        gateway.configure({ batchSize: 5 });
        expect(gateway.options.batchSize).toBe(5);
        await gateway.sendBatch(readings(12));
        expect(await gateway.forceSync()).toMatchObject({ acknowledged: 12, remaining: 0 });
        expect(batchRequests(proxy).map((r) => decodeBatch(r).points.length)).toEqual([5, 5, 2]);
        expect((await cloud.points(gateway.options.deviceId)).map((p) => p.value)).toEqual(
          readings(12).map((r) => r.value),
        );
      });

      it('turns worker threads on and off at run time, delivering every reading once either way', async () => {
        const encode = vi.spyOn(EncoderPool.prototype, 'encode');
        defer(() => encode.mockRestore());
        const close = vi.spyOn(EncoderPool.prototype, 'close');
        defer(() => close.mockRestore());
        const { gateway } = await gatewayBehindProxy({ wireFormat: 'json', batchSize: 1000 });
        const sent = readings(3000);

        await gateway.sendBatch(sent.slice(0, 1000));
        await gateway.forceSync();
        expect(encode).not.toHaveBeenCalled();

        gateway.configure({ workerThreads: 1 });
        expect(gateway.options.workerThreads).toBe(1);
        await gateway.sendBatch(sent.slice(1000, 2000));
        await gateway.forceSync();
        expect(encode).toHaveBeenCalledTimes(1);

        gateway.configure({ workerThreads: 0 });
        expect(close).toHaveBeenCalledTimes(1);
        await gateway.sendBatch(sent.slice(2000));
        expect(await gateway.forceSync()).toMatchObject({ acknowledged: 1000, remaining: 0 });
        expect(encode).toHaveBeenCalledTimes(1);

        expect((await cloud.points(gateway.options.deviceId)).map(comparable)).toEqual(sent.map(comparable));
      });

      it('closes the worker threads at stop()', async () => {
        const close = vi.spyOn(EncoderPool.prototype, 'close');
        defer(() => close.mockRestore());
        const { gateway } = await gatewayBehindProxy({ wireFormat: 'json', batchSize: 1000, workerThreads: 2 });
        await gateway.sendBatch(readings(1000));
        await gateway.forceSync();
        await gateway.stop();
        expect(close).toHaveBeenCalledTimes(1);
      });

      it('makes a larger batchSize apply to the next batch', async () => {
        const { gateway, proxy } = await gatewayBehindProxy({ batchSize: 5 });
        gateway.configure({ batchSize: 50 });
        await gateway.sendBatch(readings(12));
        await gateway.forceSync();
        expect(batchRequests(proxy).map((r) => decodeBatch(r).points.length)).toEqual([12]);
      });
    });

    describe('.enableCompression()', () => {
      it('makes later batches gzip at the level asked for', async () => {
        const { gateway, proxy } = await gatewayBehindProxy({ compression: false, wireFormat: 'json' });
        const deviceId = gateway.options.deviceId;
        await gateway.sendBatch(readings(20));
        await gateway.forceSync();

        gateway.enableCompression({ level: 1 });
        await gateway.sendBatch(readings(20, 'temp-02'));
        await gateway.forceSync();

        gateway.enableCompression({ level: 9 });
        expect(gateway.options.compression).toEqual({ level: 9 });
        await gateway.sendBatch(readings(20, 'temp-03'));
        await gateway.forceSync();

        const [plain, fastest, smallest] = batchRequests(proxy);
        expect(plain?.headers['content-encoding']).toBeUndefined();
        expect(JSON.parse(plain?.body.toString() as string).points).toHaveLength(20);
        // gzip's XFL header byte says how the body was deflated: 4 = fastest (level 1), 2 = smallest (level 9).
        expect(fastest?.headers['content-encoding']).toBe('gzip');
        expect(fastest?.body[8]).toBe(4);
        expect(smallest?.headers['content-encoding']).toBe('gzip');
        expect(smallest?.body[8]).toBe(2);
        expect(decodeBatch(smallest as never).points.map((p) => p.sensorId)).toEqual(Array(20).fill('temp-03'));
        expect(await cloud.points(deviceId)).toHaveLength(60);
      });

      it('defaults to level 6', () => {
        const gateway = createGateway({ compression: false });
        gateway.enableCompression();
        expect(gateway.options.compression).toEqual({ level: 6 });
      });

      it('throws ConfigError for level 12', () => {
        const gateway = createGateway();
        expect(configError(() => gateway.enableCompression({ level: 12 })).issues[0]).toMatch(/"compression\.level"/);
      });
    });
  });
});
