import { afterEach, describe, expect, it, vi } from 'vitest';
import { type EdgeGateway, isConfigError, SqliteStorage, StorageError } from '../../src/index.js';
import type { DeadLetterInsert, OutboxInsert } from '../../src/storage/storage.js';
import { defer } from '../helpers/cleanup.js';
import { startTestCloud } from '../helpers/cloud.js';
import { createGateway, outboxCount, readDb, readings } from '../helpers/gateway.js';
import { freePort } from '../helpers/http.js';
import { tempDbPath } from '../helpers/temp-dir.js';
import { waitFor } from '../helpers/wait-for.js';

const MIB = 1024 * 1024;

afterEach(() => {
  vi.restoreAllMocks();
});

/** Sends batches of `chunk` readings until the gateway refuses one; returns the refusal and how many went in. */
async function fillDatabase(gateway: EdgeGateway, chunk = 500): Promise<{ error: StorageError; stored: number }> {
  let stored = 0;
  for (let i = 0; i < 1000; i++) {
    try {
      stored += await gateway.sendBatch(readings(chunk, 'temp-01', Date.UTC(2024, 0, 1) + stored * 1000));
    } catch (error) {
      return { error: error as StorageError, stored };
    }
  }
  throw new Error('the database never filled up');
}

/** The real SQLite storage, with a disk too full to record an acknowledgement. */
class FullOnAcknowledge extends SqliteStorage {
  refused = 0;

  override acknowledge(): number {
    this.refused++;
    throw new StorageError('The local database is full (the disk has no room left): the acknowledge was not stored', {
      sqliteCode: 'SQLITE_FULL',
    });
  }
}

/** The real SQLite storage, counting its transactions. */
class CountingStorage extends SqliteStorage {
  appends: number[] = [];

  override append(rows: readonly OutboxInsert[], dead?: readonly DeadLetterInsert[]): number {
    const first = super.append(rows, dead);
    this.appends.push(rows.length);
    return first;
  }
}

describe('EdgeGateway', () => {
  describe('.sendData()', () => {
    it('resolves only once the reading is in the database file', async () => {
      const path = tempDbPath();
      const gateway = createGateway({ localDb: path });
      await gateway.start();
      expect(await gateway.sendData({ sensorId: 'temp-01', value: 42.5, tags: { line: '3' } })).toBe(true);
      // Read by another connection while the gateway still runs: committed, not merely buffered.
      const rows = readDb(path, (db) => db.prepare('SELECT sensor_id, value, tags FROM outbox').all());
      expect(rows).toEqual([{ sensor_id: 'temp-01', value: 42.5, tags: '{"line":"3"}' }]);
    });

    it('resolves true for every one of many calls made in one tick, and stores them all', async () => {
      const path = tempDbPath();
      const gateway = createGateway({ localDb: path });
      await gateway.start();
      const results = await Promise.all(readings(1000).map((point) => gateway.sendData(point)));
      expect(results).toHaveLength(1000);
      expect(results.every((ok) => ok === true)).toBe(true);
      await gateway.stop();
      expect(outboxCount(path)).toBe(1000);
      const values = readDb(path, (db) => db.prepare('SELECT value FROM outbox ORDER BY seq').pluck().all());
      expect(values).toEqual(readings(1000).map((p) => p.value));
    });

    it('commits the calls made in one tick in one transaction', async () => {
      const storage = new CountingStorage({ path: tempDbPath() });
      const gateway = createGateway({ storage });
      await gateway.start();
      await Promise.all(readings(500).map((point) => gateway.sendData(point)));
      expect(storage.appends).toEqual([500]);
      await gateway.sendData({ sensorId: 'later', value: 1 });
      expect(storage.appends).toEqual([500, 1]);
    });

    it('rejects with a StorageError saying the database is full at maxDatabaseSize, and the health check says so', async () => {
      const path = tempDbPath();
      const gateway = createGateway({ localDb: path, maxDatabaseSize: MIB });
      await gateway.start();
      const errors: Error[] = [];
      gateway.on('error', (error) => errors.push(error));

      const { error, stored } = await fillDatabase(gateway);
      expect(error).toMatchObject({
        name: 'StorageError',
        sqliteCode: 'SQLITE_FULL',
        message: expect.stringMatching(/database is full/),
      });
      expect(gateway.getStatus().pendingSyncCount).toBe(stored);
      expect(outboxCount(path)).toBe(stored);
      expect(errors.map((e) => e.name)).toEqual(['StorageError']);
      const health = gateway.healthCheck();
      expect(health.status).toBe('unhealthy');
      expect(health.reasons.join(' ')).toMatch(/local database refused a write: The local database is full/);
    });

    it('reports degraded before the database reaches maxDatabaseSize', async () => {
      const gateway = createGateway({ maxDatabaseSize: MIB });
      await gateway.start();
      let stored = 0;
      for (;;) {
        stored += await gateway.sendBatch(readings(100, 'temp-01', Date.UTC(2024, 0, 1) + stored * 1000));
        const health = gateway.healthCheck();
        if (health.status !== 'healthy') {
          expect(health).toMatchObject({
            status: 'degraded',
            reasons: [expect.stringMatching(/database is 9\d% full/)],
          });
          break;
        }
      }
    });

    it('takes readings again, and reports healthy, once the cloud acknowledges what filled the database', async () => {
      const cloud = await startTestCloud();
      defer(() => cloud.close());
      const gateway = createGateway({ maxDatabaseSize: MIB, cloudUrl: `http://127.0.0.1:${await freePort()}/api/v1` });
      await gateway.start();
      const { stored } = await fillDatabase(gateway);
      expect(stored).toBeGreaterThan(0);
      expect(gateway.healthCheck().status).toBe('unhealthy');

      gateway.configure({ cloudUrl: cloud.url, apiKey: cloud.apiKey });
      await waitFor(() => gateway.getStatus().pendingSyncCount === 0, 20_000, 'the queue drains');
      // Healthy again by itself, before any new reading: acknowledged batches freed the room.
      expect(gateway.healthCheck()).toMatchObject({ status: 'healthy', reasons: [] });
      expect(await gateway.sendBatch(readings(2000, 'temp-02'))).toBe(2000);
    });

    it('backs off further at each acknowledgement the local database cannot record', async () => {
      vi.spyOn(Math, 'random').mockReturnValue(1); // no jitter: each wait is its ceiling
      const cloud = await startTestCloud();
      defer(() => cloud.close());
      const storage = new FullOnAcknowledge({ path: tempDbPath() });
      const gateway = createGateway({
        storage,
        cloudUrl: cloud.url,
        apiKey: cloud.apiKey,
        initialBackoff: 0.05,
        maxBackoff: 10,
        maxRetryAttempts: 100,
      });
      const waits: number[] = [];
      gateway.on('error', () => {
        // After the loop has scheduled its next attempt.
        setImmediate(() => waits.push((gateway.getStatus().nextSyncAt?.getTime() ?? 0) - Date.now()));
      });
      await gateway.start();
      await gateway.sendBatch(readings(10));
      await waitFor(() => waits.length >= 4, 10_000, 'four acknowledgements fail');
      // 50 ms, then 100, 200, 400: without counting these failures, every wait would be the first one.
      expect(waits[3]).toBeGreaterThan(250);
      expect(storage.refused).toBeGreaterThanOrEqual(4);
    });

    it('refuses a maxDatabaseSize below 1 MiB, naming the option', () => {
      let error: unknown;
      try {
        createGateway({ maxDatabaseSize: 4096 });
      } catch (caught) {
        error = caught;
      }
      expect(isConfigError(error)).toBe(true);
      expect(String(error)).toMatch(/"maxDatabaseSize" option/);
    });
  });

  describe('.sendBatch()', () => {
    it('stores the whole batch in one transaction and resolves with its size', async () => {
      const storage = new CountingStorage({ path: tempDbPath() });
      const gateway = createGateway({ storage });
      await gateway.start();
      expect(await gateway.sendBatch(readings(250))).toBe(250);
      expect(storage.appends).toEqual([250]);
      expect(gateway.getStatus().pendingSyncCount).toBe(250);
    });
  });

  describe('.stop()', () => {
    it('commits readings accepted in the same tick before closing the database', async () => {
      const path = tempDbPath();
      const gateway = createGateway({ localDb: path });
      await gateway.start();
      const sent = readings(20).map((point) => gateway.sendData(point));
      await gateway.stop();
      expect(await Promise.all(sent)).toEqual(Array(20).fill(true));
      expect(outboxCount(path)).toBe(20);
    });
  });
});
