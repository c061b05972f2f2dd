import { mkdirSync } from 'node:fs';
import { dirname } from 'node:path';
import BetterSqlite3, { type Database } from 'better-sqlite3';
import type { BatchAck } from '../model/wire.js';
import type {
  CloudStore,
  IncomingBatch,
  IngestOutcome,
  StoredPoint,
  TelemetryQuery,
  TelemetryStats,
} from './cloud-store.js';

const SCHEMA = `
  CREATE TABLE IF NOT EXISTS ledger (
    idempotency_key TEXT PRIMARY KEY,
    device_id TEXT NOT NULL,
    hash TEXT NOT NULL,
    ack TEXT NOT NULL,
    received_at INTEGER NOT NULL,
    replays INTEGER NOT NULL DEFAULT 0
  ) WITHOUT ROWID;
  CREATE TABLE IF NOT EXISTS points (
    id INTEGER PRIMARY KEY,
    device_id TEXT NOT NULL,
    replica_id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    sensor_id TEXT NOT NULL,
    ts INTEGER NOT NULL,
    value REAL,
    unit TEXT,
    tags TEXT,
    data TEXT,
    received_at INTEGER NOT NULL
  );
  CREATE INDEX IF NOT EXISTS points_by_device ON points (device_id, id);
  CREATE INDEX IF NOT EXISTS points_by_sensor ON points (device_id, sensor_id, ts);
`;

interface PointRow {
  id: number;
  device_id: string;
  replica_id: string;
  seq: number;
  sensor_id: string;
  ts: number;
  value: number | null;
  unit: string | null;
  tags: string | null;
  data: string | null;
  received_at: number;
}

const toPoint = (row: PointRow): StoredPoint => ({
  deviceId: row.device_id,
  replicaId: row.replica_id,
  seq: row.seq,
  sensorId: row.sensor_id,
  timestamp: new Date(row.ts).toISOString(),
  ...(row.value === null ? {} : { value: row.value }),
  ...(row.unit === null ? {} : { unit: row.unit }),
  ...(row.tags === null ? {} : { tags: JSON.parse(row.tags) as Record<string, string> }),
  ...(row.data === null ? {} : { data: JSON.parse(row.data) as unknown }),
  receivedAt: new Date(row.received_at).toISOString(),
});

/** The reference server's default store: one SQLite file (or `:memory:`), WAL, fsync on commit. */
export class SqliteCloudStore implements CloudStore {
  readonly #db: Database;
  readonly #statements;

  constructor(path: string) {
    if (path !== ':memory:') mkdirSync(dirname(path), { recursive: true });
    this.#db = new BetterSqlite3(path);
    this.#db.pragma('journal_mode = WAL');
    this.#db.pragma('synchronous = FULL');
    this.#db.exec(SCHEMA);
    const db = this.#db;
    this.#statements = {
      lookup: db.prepare('SELECT hash, ack FROM ledger WHERE idempotency_key = ?'),
      insertLedger: db.prepare(
        'INSERT INTO ledger (idempotency_key, device_id, hash, ack, received_at) VALUES (?, ?, ?, ?, ?)',
      ),
      insertPoint: db.prepare(
        `INSERT INTO points (device_id, replica_id, seq, sensor_id, ts, value, unit, tags, data, received_at)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
      ),
      replay: db.prepare('UPDATE ledger SET replays = replays + 1 WHERE idempotency_key = ?'),
    };
  }

  async lookup(key: string): Promise<{ hash: string; ack: Omit<BatchAck, 'serverTime'> } | undefined> {
    const row = this.#statements.lookup.get(key) as { hash: string; ack: string } | undefined;
    return row && { hash: row.hash, ack: JSON.parse(row.ack) as Omit<BatchAck, 'serverTime'> };
  }

  async ingest(batch: IncomingBatch): Promise<IngestOutcome> {
    const s = this.#statements;
    return this.#db
      .transaction((): IngestOutcome => {
        const existing = s.lookup.get(batch.idempotencyKey) as { hash: string; ack: string } | undefined;
        if (existing) {
          if (existing.hash !== batch.hash) return { kind: 'conflict' };
          s.replay.run(batch.idempotencyKey);
          return { kind: 'replayed', ack: JSON.parse(existing.ack) as Omit<BatchAck, 'serverTime'> };
        }
        const now = Date.now();
        for (const p of batch.points) {
          s.insertPoint.run(
            batch.deviceId,
            batch.replicaId,
            p.seq,
            p.sensorId,
            p.ts,
            p.value ?? null,
            p.unit ?? null,
            p.tags === undefined ? null : JSON.stringify(p.tags),
            p.data === undefined ? null : JSON.stringify(p.data),
            now,
          );
        }
        const ack = { ackThroughBatchNo: batch.batchNo, accepted: batch.points.length, duplicates: 0 };
        s.insertLedger.run(batch.idempotencyKey, batch.deviceId, batch.hash, JSON.stringify(ack), now);
        return { kind: 'stored', ack };
      })
      .immediate();
  }

  async noteReplay(key: string): Promise<void> {
    this.#statements.replay.run(key);
  }

  async query(q: TelemetryQuery): Promise<{ points: StoredPoint[]; nextCursor: string | null }> {
    const where: string[] = ['id > ?'];
    const params: (string | number)[] = [q.cursor ? Number(q.cursor) : 0];
    if (q.deviceId !== undefined) {
      where.push('device_id = ?');
      params.push(q.deviceId);
    }
    if (q.sensorId !== undefined) {
      where.push('sensor_id = ?');
      params.push(q.sensorId);
    }
    if (q.from !== undefined) {
      where.push('ts >= ?');
      params.push(q.from);
    }
    if (q.to !== undefined) {
      where.push('ts < ?');
      params.push(q.to);
    }
    const rows = this.#db
      .prepare(`SELECT * FROM points WHERE ${where.join(' AND ')} ORDER BY id LIMIT ?`)
      .all(...params, q.limit + 1) as PointRow[];
    const more = rows.length > q.limit;
    const page = more ? rows.slice(0, q.limit) : rows;
    const last = page[page.length - 1];
    return { points: page.map(toPoint), nextCursor: more && last ? String(last.id) : null };
  }

  async stats(deviceId?: string): Promise<TelemetryStats> {
    const filter = deviceId === undefined ? '' : 'WHERE device_id = ?';
    const args = deviceId === undefined ? [] : [deviceId];
    const points = (this.#db.prepare(`SELECT count(*) AS n FROM points ${filter}`).get(...args) as { n: number }).n;
    const ledger = this.#db
      .prepare(`SELECT count(*) AS batches, coalesce(sum(replays), 0) AS replays FROM ledger ${filter}`)
      .get(...args) as { batches: number; replays: number };
    return { points, batches: ledger.batches, duplicateBatches: ledger.replays };
  }

  async close(): Promise<void> {
    if (this.#db.open) this.#db.close();
  }
}
