import BetterSqlite3 from 'better-sqlite3';
import { describe, expect, it, vi } from 'vitest';
import { type EdgeGateway, SqliteStorage } from '../../src/index.js';
import type { DeadLetterInsert, OutboxInsert } from '../../src/storage/storage.js';
import { createGateway, outboxCount, readDb, readings } from '../helpers/gateway.js';
import { tempDbPath } from '../helpers/temp-dir.js';

/** Starts the gateway and returns its own SQLite connection, to make the disk full under it. */
async function startCapturingConnection(gateway: EdgeGateway): Promise<BetterSqlite3.Database> {
  const pragma = vi.spyOn(BetterSqlite3.prototype, 'pragma');
  try {
    await gateway.start();
    return pragma.mock.contexts[0] as BetterSqlite3.Database;
  } finally {
    pragma.mockRestore();
  }
}

/** Caps the database at its current size, as a full disk would; returns the cap in pages. */
function fillDisk(connection: BetterSqlite3.Database): number {
  const pages = connection.pragma('page_count', { simple: true }) as number;
  connection.pragma(`max_page_count = ${pages}`);
  return pages;
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

    it('rejects with a StorageError while the disk is full, and the health check says so', async () => {
      const gateway = createGateway();
      const connection = await startCapturingConnection(gateway);
      const errors: Error[] = [];
      gateway.on('error', (error) => errors.push(error));
      fillDisk(connection);

      await expect(gateway.sendBatch(readings(2000))).rejects.toMatchObject({
        name: 'StorageError',
        message: expect.stringMatching(/full/),
      });
      expect(gateway.getStatus().pendingSyncCount).toBe(0);
      expect(errors.map((e) => e.name)).toEqual(['StorageError']);
      const health = gateway.healthCheck();
      expect(health.status).toBe('unhealthy');
      expect(health.reasons.join(' ')).toMatch(/local database refused a write/);
    });

    it('takes readings again, and reports healthy, once the disk has room', async () => {
      const gateway = createGateway();
      const connection = await startCapturingConnection(gateway);
      const limit = fillDisk(connection);
      await expect(gateway.sendBatch(readings(2000))).rejects.toMatchObject({ name: 'StorageError' });

      connection.pragma(`max_page_count = ${limit * 100}`);
      expect(await gateway.sendBatch(readings(2000))).toBe(2000);
      expect(gateway.healthCheck().status).toBe('healthy');
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
