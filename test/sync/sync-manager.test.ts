import BetterSqlite3 from 'better-sqlite3-multiple-ciphers';
import { describe, expect, it, vi } from 'vitest';
import { silentLogger } from '../../src/logger.js';
import { SqliteStorage } from '../../src/storage/sqlite-storage.js';
import type { OutboxInsert, SealInput } from '../../src/storage/storage.js';
import { encodeBatch } from '../../src/sync/batch-codec.js';
import { type BatchEncoder, type EncodeJob, EncoderPool } from '../../src/sync/encoder-pool.js';
import { type SyncListener, SyncManager, type SyncSettings } from '../../src/sync/sync-manager.js';
import { MemoryTransport } from '../../src/testing/index.js';
import type { OutgoingBatch, SendResult } from '../../src/transport/transport.js';
import { defer } from '../helpers/cleanup.js';
import { tempDbPath } from '../helpers/temp-dir.js';

const row = (i: number): OutboxInsert => ({
  kind: 'reading',
  sensorId: `sensor-${i % 4}`,
  ts: Date.UTC(2024, 0, 1) + i * 1000,
  value: Math.sin(i) * 100,
  unit: 'celsius',
  tags: '{"location":"warehouse-A"}',
  payload: null,
});

function openStorage(n: number, path = tempDbPath()): SqliteStorage {
  const storage = new SqliteStorage({ path });
  storage.open();
  defer(() => storage.close());
  if (n > 0) storage.append(Array.from({ length: n }, (_, i) => row(i)));
  return storage;
}

/** A MemoryTransport that also keeps the bytes of every attempt. */
class RecordingTransport extends MemoryTransport {
  readonly bodies: { batchNo: number; body: Buffer }[] = [];

  override async sendBatch(batch: OutgoingBatch): Promise<SendResult> {
    this.bodies.push({ batchNo: batch.batchNo, body: Buffer.from(batch.body) });
    return super.sendBatch(batch);
  }
}

const listener: SyncListener = {
  onlineChanged: () => undefined,
  synced: () => undefined,
  syncError: () => undefined,
  deadLettered: () => undefined,
  failed: () => undefined,
};

const settings = (encoder: BatchEncoder | undefined, overrides: Partial<SyncSettings> = {}): SyncSettings => ({
  deviceId: 'device-001',
  strategy: 'fixed-interval',
  intervalMs: 3_600_000,
  batchSize: 1000,
  compression: { level: 6 },
  wireFormat: 'json',
  maxRetryAttempts: 5,
  initialBackoffMs: 1,
  maxBackoffMs: 10,
  encoder,
  ...overrides,
});

function syncManager(storage: SqliteStorage, transport: MemoryTransport, encoder: BatchEncoder | undefined) {
  const manager = new SyncManager(storage, transport, settings(encoder), listener, silentLogger);
  defer(() => manager.stop());
  return manager;
}

function encoderPool(): EncoderPool {
  const pool = new EncoderPool(1, silentLogger);
  defer(() => pool.close());
  return pool;
}

/** An encoder that takes every batch and answers only when `release()` is called, or rejects when aborted. */
class HeldEncoder implements BatchEncoder {
  readonly jobs: EncodeJob[] = [];
  #release: (() => void) | undefined;

  offloads(): boolean {
    return true;
  }

  encode(job: EncodeJob, signal: AbortSignal): Promise<SealInput> {
    this.jobs.push(job);
    return new Promise((resolve, reject) => {
      signal.addEventListener('abort', () => reject(signal.reason), { once: true });
      this.#release = () => resolve(encodeBatch(job.header, job.batchNo, job.rows, job.compression, job.format));
    });
  }

  release(): void {
    this.#release?.();
  }
}

describe('SyncManager', () => {
  describe('with an encoder (workerThreads)', () => {
    it('sends the batches the encoder takes encoded in a thread, byte for byte what inline encoding makes', async () => {
      const storage = openStorage(2500);
      const transport = new RecordingTransport();
      const pool = encoderPool();
      const encode = vi.spyOn(pool, 'encode');
      const result = await syncManager(storage, transport, pool).syncNow();

      expect(result).toMatchObject({ sent: 2500, acknowledged: 2500, failed: 0, remaining: 0 });
      // 1000, 1000, then 500: below the pool's threshold, the last one is encoded inline.
      expect(encode).toHaveBeenCalledTimes(2);
      expect(pool.running).toBe(1);
      expect(transport.points.map((p) => p.seq)).toEqual(Array.from({ length: 2500 }, (_, i) => i + 1));

      const header = { deviceId: 'device-001', replicaId: storage.replicaId };
      for (const { batchNo, body } of transport.bodies) {
        const from = (batchNo - 1) * 1000;
        const rows = Array.from({ length: Math.min(1000, 2500 - from) }, (_, i) => ({
          seq: from + i + 1,
          ...row(from + i),
        }));
        const inline = encodeBatch(header, batchNo, rows, { level: 6 }, 'json');
        expect(body.equals(Buffer.from(inline.body))).toBe(true);
      }
    });

    it('resends a batch encoded in a thread byte for byte after a failed attempt', async () => {
      const storage = openStorage(1000);
      let attempts = 0;
      const transport = new RecordingTransport(() =>
        ++attempts === 1
          ? { status: 'retryable', code: 'network', message: 'cable pulled' }
          : {
              status: 'acknowledged',
              replayed: false,
              ack: { ackThroughBatchNo: 1, accepted: 1000, duplicates: 0, serverTime: new Date().toISOString() },
            },
      );
      const manager = syncManager(storage, transport, encoderPool());
      expect((await manager.syncNow()).acknowledged).toBe(0);
      expect((await manager.syncNow()).acknowledged).toBe(1000);
      const [first, second] = transport.bodies;
      expect(transport.bodies).toHaveLength(2);
      expect(first?.batchNo).toBe(1);
      expect(second?.batchNo).toBe(1);
      expect(second?.body.equals(first?.body as Buffer)).toBe(true);
    });

    it('stopped while the encoder works, leaves the rows unsealed; a new loop seals them under the same number', async () => {
      const storage = openStorage(1500);
      const transport = new RecordingTransport();
      const held = new HeldEncoder();
      const manager = new SyncManager(storage, transport, settings(held), listener, silentLogger);
      const cycle = manager.syncNow();
      await vi.waitFor(() => expect(held.jobs).toHaveLength(1));
      await manager.stop();
      await expect(cycle).resolves.toMatchObject({ sent: 0, acknowledged: 0 });
      expect(storage.oldestBatch()).toBeUndefined();
      expect(storage.pendingCount()).toBe(1500);
      expect(transport.bodies).toHaveLength(0);

      const result = await syncManager(storage, transport, encoderPool()).syncNow();
      expect(result.acknowledged).toBe(1500);
      expect(transport.batches.map((b) => b.batchNo)).toEqual([1, 2]);
      expect(transport.points).toHaveLength(1500);
    });

    it('reads again, and sends no row twice, when the queue changed while the encoder worked', async () => {
      const path = tempDbPath();
      const storage = openStorage(1200, path);
      const transport = new RecordingTransport();
      const held = new HeldEncoder();
      const manager = syncManager(storage, transport, held);
      const cycle = manager.syncNow();
      await vi.waitFor(() => expect(held.jobs).toHaveLength(1));
      // Meanwhile another writer drops the oldest reading (as a retention policy would).
      const other = new BetterSqlite3(path);
      other.prepare('DELETE FROM outbox WHERE seq = 1').run();
      other.close();
      held.release();
      await vi.waitFor(() => expect(held.jobs).toHaveLength(2));
      held.release();
      await vi.waitFor(() => expect(held.jobs).toHaveLength(3));
      held.release();
      const result = await cycle;

      expect(held.jobs[1]?.rows[0]?.seq).toBe(2);
      expect(held.jobs[1]?.batchNo).toBe(1);
      expect(result.acknowledged).toBe(1199);
      expect(transport.batches.map((b) => b.batchNo)).toEqual([1, 2]);
      expect(transport.points.map((p) => p.seq)).toEqual(Array.from({ length: 1199 }, (_, i) => i + 2));
    });
  });
});
