import { mkdirSync } from 'node:fs';
import { dirname } from 'node:path';
import BetterSqlite3, { type Database } from 'better-sqlite3-multiple-ciphers';
import { ConfigError } from '../errors.js';
import type {
  CloudRecord,
  MutationResult,
  PullRequester,
  RecordChange,
  RecordMutation,
} from '../model/records-wire.js';
import type { BatchAck } from '../model/wire.js';
import {
  type ChangePage,
  type ClockSkewFlag,
  type CloudStore,
  DEFAULT_PULL_SCAN_ROWS,
  type IncomingBatch,
  type IngestOutcome,
  type MutationContext,
  neverExistedRecord,
  type PushDecision,
  pullScanRowsProblem,
  type RecordEdit,
  type RecordStamp,
  type RecordStats,
  type StoredPoint,
  type TelemetryQuery,
  type TelemetryStats,
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

  -- change_seq: the last change sequence number given; hlc_high: the greatest stamp stored.
  CREATE TABLE IF NOT EXISTS cloud_meta (name TEXT PRIMARY KEY, value) WITHOUT ROWID;
  INSERT OR IGNORE INTO cloud_meta (name, value) VALUES ('change_seq', 0);
  -- One row per record, in its latest state; a tombstone keeps its row (value NULL) so that pulls carry deletes.
  -- known_by, known_at: the device whose mutation wrote this state as sent (not restamped), and the version its
  -- answer gave; a pull by that device and replica (origin) leaves the row out while version is still known_at.
  CREATE TABLE IF NOT EXISTS cloud_records (
    collection TEXT NOT NULL,
    key TEXT NOT NULL,
    value TEXT,
    deleted INTEGER NOT NULL,
    version INTEGER NOT NULL,
    hlc TEXT NOT NULL,
    origin TEXT NOT NULL,
    seq INTEGER NOT NULL,
    known_by TEXT,
    known_at INTEGER,
    PRIMARY KEY (collection, key)
  );
  CREATE UNIQUE INDEX IF NOT EXISTS cloud_records_by_seq ON cloud_records (seq);
  CREATE TABLE IF NOT EXISTS mutation_outcomes (
    mid TEXT PRIMARY KEY,
    device_id TEXT NOT NULL,
    replica_id TEXT NOT NULL,
    result TEXT NOT NULL,
    at INTEGER NOT NULL
  );
  CREATE TABLE IF NOT EXISTS clock_skew_flags (
    device_id TEXT PRIMARY KEY,
    replica_id TEXT NOT NULL,
    skew_ms INTEGER NOT NULL,
    at TEXT NOT NULL
  ) WITHOUT ROWID;
`;

interface RecordRow {
  collection: string;
  key: string;
  value: string | null;
  deleted: number;
  version: number;
  hlc: string;
  origin: string;
  seq: number;
}

const toRecord = (row: RecordRow): CloudRecord => ({
  collection: row.collection,
  key: row.key,
  value: row.value === null ? null : (JSON.parse(row.value) as unknown),
  deleted: row.deleted === 1,
  version: row.version,
  hlc: row.hlc,
  origin: row.origin,
});

const toChange = (row: RecordRow): RecordChange => ({ ...toRecord(row), seq: row.seq });

/** A row of the pull scan, as an array (cheaper than an object, row by row): `known` first, `value` null when it is. */
type ChangeRow = [
  seq: number,
  known: number | null,
  collection: string,
  key: string,
  value: string | null,
  deleted: number,
  version: number,
  hlc: string,
  origin: string,
];

/** Columns added since the first release, with their definitions: a store file made before gets them at open. */
const ADDED_COLUMNS: Record<string, [string, string][]> = {
  cloud_records: [
    ['known_by', 'TEXT'],
    ['known_at', 'INTEGER'],
  ],
};

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

/** Options of {@link SqliteCloudStore}. */
export interface SqliteCloudStoreOptions {
  /**
   * Changes a pull page looks at, at most, to find its changes for a puller that names itself (never fewer than
   * the page's `limit`): the changes left out for it count here, not toward `limit`. @default 2000
   */
  pullScanRows?: number;
}

/**
 * The reference server's default store: one SQLite file (or `:memory:`), WAL, fsync on commit.
 *
 * @example
 * ```ts
 * const store = new SqliteCloudStore('/var/lib/edge-cloud/cloud.db', { pullScanRows: 5000 });
 * const server = await CloudServer.listen({ store, apiKeys: ['k'] });
 * ```
 */
export class SqliteCloudStore implements CloudStore {
  readonly #db: Database;
  readonly #statements;
  readonly #pullScanRows: number;

  constructor(path: string, options: SqliteCloudStoreOptions = {}) {
    const problem = pullScanRowsProblem(options.pullScanRows);
    if (problem) throw new ConfigError([problem]);
    this.#pullScanRows = options.pullScanRows ?? DEFAULT_PULL_SCAN_ROWS;
    if (path !== ':memory:') mkdirSync(dirname(path), { recursive: true });
    this.#db = new BetterSqlite3(path);
    this.#db.pragma('journal_mode = WAL');
    this.#db.pragma('synchronous = FULL');
    this.#db.exec(SCHEMA);
    const db = this.#db;
    // Read and altered under one write lock: two processes opening an older file at once both see the columns
    // missing otherwise, and the second ALTER fails with "duplicate column".
    db.transaction(() => {
      for (const [table, columns] of Object.entries(ADDED_COLUMNS)) {
        const present = new Set(db.prepare('SELECT name FROM pragma_table_info(?)').pluck().all(table) as string[]);
        for (const [name, type] of columns) {
          if (!present.has(name)) db.exec(`ALTER TABLE ${table} ADD COLUMN ${name} ${type}`);
        }
      }
    }).immediate();
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
      outcome: db.prepare('SELECT result FROM mutation_outcomes WHERE mid = ?').pluck(),
      insertOutcome: db.prepare(
        'INSERT INTO mutation_outcomes (mid, device_id, replica_id, result, at) VALUES (?, ?, ?, ?, ?)',
      ),
      record: db.prepare('SELECT * FROM cloud_records WHERE collection = ? AND key = ?'),
      nextSeq: db.prepare("UPDATE cloud_meta SET value = value + 1 WHERE name = 'change_seq' RETURNING value").pluck(),
      changeSeq: db.prepare("SELECT value FROM cloud_meta WHERE name = 'change_seq'").pluck(),
      raiseHlc: db.prepare(
        `INSERT INTO cloud_meta (name, value) VALUES ('hlc_high', ?)
         ON CONFLICT (name) DO UPDATE SET value = max(value, excluded.value)`,
      ),
      hlcHigh: db.prepare("SELECT value FROM cloud_meta WHERE name = 'hlc_high'").pluck(),
      upsertRecord: db.prepare(
        `INSERT INTO cloud_records (collection, key, value, deleted, version, hlc, origin, seq, known_by, known_at)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
         ON CONFLICT (collection, key) DO UPDATE SET value = excluded.value, deleted = excluded.deleted,
           version = excluded.version, hlc = excluded.hlc, origin = excluded.origin, seq = excluded.seq,
           known_by = excluded.known_by, known_at = excluded.known_at`,
      ),
      // known: the requester holds this state already (NULL without a requester); its value is not even read out.
      // One flat scan of the seq index, read row by row as arrays: a page stops at the row after its last.
      changes: db
        .prepare(
          `SELECT seq, (origin = @replica AND known_by = @device AND known_at = version) AS known,
             collection, key,
             CASE WHEN origin = @replica AND known_by = @device AND known_at = version THEN NULL ELSE value END,
             deleted, version, hlc, origin
           FROM cloud_records WHERE seq > @cursor ORDER BY seq LIMIT @rows`,
        )
        .raw(),
      recordCounts: db.prepare(
        'SELECT coalesce(sum(deleted = 0), 0) AS records, coalesce(sum(deleted), 0) AS tombstones FROM cloud_records',
      ),
      upsertFlag: db.prepare(
        `INSERT INTO clock_skew_flags (device_id, replica_id, skew_ms, at) VALUES (?, ?, ?, ?)
         ON CONFLICT (device_id) DO UPDATE SET replica_id = excluded.replica_id, skew_ms = excluded.skew_ms,
           at = excluded.at`,
      ),
      flags: db.prepare('SELECT * FROM clock_skew_flags ORDER BY at DESC, device_id'),
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

  async pushMutations(context: MutationContext, items: readonly PushDecision[]): Promise<MutationResult[]> {
    return this.#db
      .transaction(() =>
        items.map((item) =>
          item.kind === 'valid'
            ? this.#decide(context, item.mutation, item.stamp)
            : this.#reject(context, item.mid, item.reason),
        ),
      )
      .immediate();
  }

  #decide(context: MutationContext, m: RecordMutation, stamp: RecordStamp): MutationResult {
    const s = this.#statements;
    const stored = s.outcome.get(m.mid) as string | undefined;
    if (stored !== undefined) return JSON.parse(stored) as MutationResult;
    const row = s.record.get(m.collection, m.key) as RecordRow | undefined;
    let result: MutationResult;
    if (m.baseVersion === (row?.version ?? 0)) {
      const version = m.baseVersion + 1;
      // Known to its writer only as stored: a restamped write holds a stamp the device has not written.
      const knownBy = stamp.restamped ? null : context.deviceId;
      this.#write(m.collection, m.key, m.op === 'delete', m.value, version, stamp.hlc, context.replicaId, knownBy);
      result = {
        mid: m.mid,
        status: 'applied',
        version,
        hlc: stamp.hlc,
        ...(stamp.restamped ? { restamped: true } : {}),
      };
    } else {
      result = {
        mid: m.mid,
        status: 'conflict',
        current: row ? toRecord(row) : neverExistedRecord(m.collection, m.key),
      };
    }
    s.insertOutcome.run(m.mid, context.deviceId, context.replicaId, JSON.stringify(result), Date.now());
    return result;
  }

  #reject(context: MutationContext, mid: string, reason: string): MutationResult {
    const s = this.#statements;
    const stored = s.outcome.get(mid) as string | undefined;
    if (stored !== undefined) return JSON.parse(stored) as MutationResult;
    const result: MutationResult = { mid, status: 'rejected', reason };
    s.insertOutcome.run(mid, context.deviceId, context.replicaId, JSON.stringify(result), Date.now());
    return result;
  }

  async pullChanges(cursor: number, limit: number, requester?: PullRequester): Promise<ChangePage> {
    // Without a requester nothing is left out, and the page looks at no more than it returns.
    const scan = requester ? Math.max(limit, this.#pullScanRows) : limit;
    const rows = this.#statements.changes.iterate({
      cursor,
      rows: scan + 1,
      device: requester?.deviceId ?? null,
      replica: requester?.replicaId ?? null,
    }) as IterableIterator<ChangeRow>;
    const changes: RecordChange[] = [];
    let last = cursor;
    let looked = 0;
    for (const [seq, known, collection, key, value, deleted, version, hlc, origin] of rows) {
      // A row past a full page, or past the scan bound, is not consumed: it only shows that more remain.
      if (changes.length === limit || looked === scan) return { changes, cursor: last, hasMore: true };
      looked++;
      last = seq;
      if (known !== 1) changes.push(toChange({ collection, key, value, deleted, version, hlc, origin, seq }));
    }
    return { changes, cursor: last, hasMore: false };
  }

  async getRecord(collection: string, key: string): Promise<CloudRecord | undefined> {
    const row = this.#statements.record.get(collection, key) as RecordRow | undefined;
    return row && toRecord(row);
  }

  async editRecord(collection: string, key: string, edit: RecordEdit, hlc: string): Promise<CloudRecord> {
    const s = this.#statements;
    return this.#db
      .transaction((): CloudRecord => {
        const row = s.record.get(collection, key) as RecordRow | undefined;
        const version = (row?.version ?? 0) + 1;
        const deleted = edit.op === 'delete';
        const value = edit.op === 'put' ? (edit.value ?? null) : null;
        this.#write(collection, key, deleted, value, version, hlc, 'cloud', null);
        return { collection, key, value, deleted, version, hlc, origin: 'cloud' };
      })
      .immediate();
  }

  async flagClockSkew(flag: ClockSkewFlag): Promise<void> {
    this.#statements.upsertFlag.run(flag.deviceId, flag.replicaId, flag.skewMs, flag.at);
  }

  async recordStats(): Promise<RecordStats> {
    const s = this.#statements;
    const counts = s.recordCounts.get() as { records: number; tombstones: number };
    const flags = s.flags.all() as { device_id: string; replica_id: string; skew_ms: number; at: string }[];
    return {
      records: counts.records,
      tombstones: counts.tombstones,
      changeSeq: s.changeSeq.get() as number,
      flaggedDevices: flags.map((f) => ({
        deviceId: f.device_id,
        replicaId: f.replica_id,
        skewMs: f.skew_ms,
        at: f.at,
      })),
    };
  }

  async latestHlc(): Promise<string | undefined> {
    return this.#statements.hlcHigh.get() as string | undefined;
  }

  /**
   * Writes a record's new state under the next change sequence number; a tombstone keeps no value. `knownBy`: the
   * device that wrote exactly this state and was told `version`, or null.
   */
  #write(
    collection: string,
    key: string,
    deleted: boolean,
    value: unknown,
    version: number,
    hlc: string,
    origin: string,
    knownBy: string | null,
  ): void {
    const s = this.#statements;
    const seq = s.nextSeq.get() as number;
    const json = deleted ? null : JSON.stringify(value ?? null);
    s.upsertRecord.run(
      collection,
      key,
      json,
      deleted ? 1 : 0,
      version,
      hlc,
      origin,
      seq,
      knownBy,
      knownBy === null ? null : version,
    );
    s.raiseHlc.run(hlc);
  }

  async close(): Promise<void> {
    if (this.#db.open) this.#db.close();
  }
}
