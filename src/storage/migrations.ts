import BetterSqlite3, { type Database } from 'better-sqlite3-multiple-ciphers';
import { CorruptDatabaseError } from './quarantine.js';

/**
 * Schema migrations, keyed by `PRAGMA user_version`. Each entry moves the schema from version `index` to
 * `index + 1` and runs in one transaction with the version bump, so a crash mid-migration leaves the old schema.
 * Append only: never edit a migration that has shipped.
 */
export const MIGRATIONS: readonly string[] = [
  `
  CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID;

  -- Readings and processed data waiting for the cloud, in arrival order. seq is assigned by the gateway and
  -- never reused (see SqliteStorage.open); acknowledged rows are deleted, so this table holds only the backlog.
  CREATE TABLE outbox (
    seq INTEGER PRIMARY KEY,
    kind INTEGER NOT NULL,
    sensor_id TEXT NOT NULL,
    ts INTEGER NOT NULL,
    value REAL,
    unit TEXT,
    tags TEXT,
    payload TEXT
  );

  -- Sealed batches keep their exact bytes until acknowledged, so that every retry is byte-identical.
  CREATE TABLE batches (
    batch_no INTEGER PRIMARY KEY,
    first_seq INTEGER NOT NULL,
    last_seq INTEGER NOT NULL,
    count INTEGER NOT NULL,
    body BLOB NOT NULL,
    content_type TEXT NOT NULL,
    content_encoding TEXT,
    hash TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    created_at INTEGER NOT NULL
  );

  CREATE TABLE dead_letters (
    id INTEGER PRIMARY KEY,
    seq INTEGER,
    kind INTEGER NOT NULL,
    sensor_id TEXT NOT NULL,
    ts INTEGER NOT NULL,
    value REAL,
    unit TEXT,
    tags TEXT,
    payload TEXT,
    reason TEXT NOT NULL,
    source TEXT NOT NULL,
    created_at INTEGER NOT NULL
  );
  `,
  `
  -- Shared records as this replica holds them; value is JSON text, NULL for a tombstone. version is the cloud
  -- version the state is at, or was made on for a local edit the cloud has not acknowledged yet.
  CREATE TABLE records (
    collection TEXT NOT NULL,
    key TEXT NOT NULL,
    value TEXT,
    deleted INTEGER NOT NULL DEFAULT 0,
    version INTEGER NOT NULL DEFAULT 0,
    hlc TEXT NOT NULL,
    origin TEXT NOT NULL,
    PRIMARY KEY (collection, key)
  ) WITHOUT ROWID;

  -- Local edits of records waiting for the cloud. state 0: pending, coalescing with later edits of its key;
  -- state 1: sent, frozen until its outcome is applied. AUTOINCREMENT: an id names a mutation to the cloud
  -- ({replicaId}:{id}) and must never be reused, even after the newest row is deleted.
  CREATE TABLE mutations (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    collection TEXT NOT NULL,
    key TEXT NOT NULL,
    op INTEGER NOT NULL,
    value TEXT,
    hlc TEXT NOT NULL,
    state INTEGER NOT NULL DEFAULT 0,
    base_version INTEGER
  );
  CREATE UNIQUE INDEX mutations_pending ON mutations (collection, key) WHERE state = 0;
  CREATE INDEX mutations_key ON mutations (collection, key, state);

  -- Mutations the cloud refused as invalid, kept with the reason.
  CREATE TABLE record_dead_letters (
    id INTEGER PRIMARY KEY,
    mid TEXT NOT NULL,
    collection TEXT NOT NULL,
    key TEXT NOT NULL,
    op INTEGER NOT NULL,
    value TEXT,
    base_version INTEGER,
    hlc TEXT NOT NULL,
    reason TEXT NOT NULL,
    created_at INTEGER NOT NULL
  );
  `,
  // Local stream processing (issue 6).
  `
  -- Alerts (outbox kind 2) travel in a lane of their own: sealing takes them before bulk telemetry, so an alert
  -- raised behind a long backlog goes out in the next batch. The partial index holds only queued alerts.
  ALTER TABLE batches ADD COLUMN lane INTEGER NOT NULL DEFAULT 0;
  CREATE INDEX outbox_alert_lane ON outbox (seq) WHERE kind = 2;

  -- Alerts as raised, for local queries and de-duplication; bounded by count (maxStoredAlerts).
  CREATE TABLE alerts (
    id INTEGER PRIMARY KEY,
    source TEXT NOT NULL,
    sensor_id TEXT NOT NULL,
    severity TEXT NOT NULL,
    message TEXT NOT NULL,
    ts INTEGER NOT NULL,
    last_ts INTEGER NOT NULL,
    count INTEGER NOT NULL,
    created_at INTEGER NOT NULL
  );
  CREATE INDEX alerts_by_key ON alerts (sensor_id, source, message, ts);
  CREATE INDEX alerts_by_ts ON alerts (ts);

  -- The state of the built-in processors (open windows, last reported values), written in the transaction that
  -- stores the readings that changed it.
  CREATE TABLE processor_state (
    processor TEXT NOT NULL,
    key TEXT NOT NULL,
    value TEXT NOT NULL,
    PRIMARY KEY (processor, key)
  ) WITHOUT ROWID;

  -- Closed aggregation windows, kept for local queries after the outbox copy is acknowledged; bounded by count.
  CREATE TABLE aggregates (
    id INTEGER PRIMARY KEY,
    source TEXT NOT NULL,
    sensor_id TEXT NOT NULL,
    tags TEXT,
    unit TEXT,
    window_start INTEGER NOT NULL,
    window_ms INTEGER NOT NULL,
    count INTEGER NOT NULL,
    min REAL NOT NULL,
    max REAL NOT NULL,
    sum REAL NOT NULL,
    mean REAL NOT NULL,
    m2 REAL NOT NULL,
    first REAL NOT NULL,
    first_ts INTEGER NOT NULL,
    last REAL NOT NULL,
    last_ts INTEGER NOT NULL
  );
  CREATE INDEX aggregates_by_sensor ON aggregates (sensor_id, window_start);

  -- Raw readings kept for local queries (off unless localHistory.readings > 0); bounded by count.
  CREATE TABLE history (
    id INTEGER PRIMARY KEY,
    sensor_id TEXT NOT NULL,
    ts INTEGER NOT NULL,
    value REAL NOT NULL,
    unit TEXT,
    tags TEXT
  );
  CREATE INDEX history_by_sensor ON history (sensor_id, ts);
  `,
  // Idempotency keys of the local ingest endpoint.
  `
  -- Idempotency-Key headers of POST /api/v1/data, each written in the transaction that stored its request's readings,
  -- so that a key is known exactly when its readings are stored, crash or not. hash: sha-256 of the request body,
  -- hex; accepted and stored: the answer given, replayed to a retry. id orders keys by arrival (a key used again
  -- after its expiry gets a new row); bounded by expires_at and by count, the oldest pruned by later keyed requests.
  CREATE TABLE ingest_ledger (
    id INTEGER PRIMARY KEY,
    idempotency_key TEXT NOT NULL UNIQUE,
    hash TEXT NOT NULL,
    accepted INTEGER NOT NULL,
    stored INTEGER NOT NULL,
    received_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL
  );
  `,
];

/** Brings the schema to the latest version. Returns the version it found. */
export function migrate(db: Database): number {
  const found = db.pragma('user_version', { simple: true }) as number;
  // Versions only ever count up from 0: a negative one is a damaged header, not a schema.
  if (found < 0) throw new CorruptDatabaseError(`the database header holds an impossible schema version (${found})`);
  if (found > MIGRATIONS.length) {
    throw new Error(
      `the database has schema version ${found}, newer than this edge-gateway knows (${MIGRATIONS.length}); upgrade edge-gateway`,
    );
  }
  for (let version = found; version < MIGRATIONS.length; version++) {
    db.transaction(() => {
      db.exec(MIGRATIONS[version] as string);
      db.pragma(`user_version = ${version + 1}`);
    }).immediate();
  }
  return found;
}

interface SchemaObject {
  type: string;
  name: string;
  tbl_name: string;
  sql: string | null;
}

const readSchema = (db: Database) =>
  new Map(
    (db.prepare('SELECT type, name, tbl_name, sql FROM sqlite_schema').all() as SchemaObject[]).map((o) => [o.name, o]),
  );

let reference: Map<string, SchemaObject> | undefined;

/**
 * Throws `CorruptDatabaseError` unless every table and index the migrations make is in `db` exactly as they make
 * it (SQLite keeps the schema as the text of each CREATE statement: a damaged byte there passes `quick_check` and
 * shows up later as "no such column", or as a column with another type). Objects the migrations do not make, such
 * as an index an operator added, are left alone. Call after {@link migrate}.
 */
export function verifySchema(db: Database): void {
  if (!reference) {
    const blank = new BetterSqlite3(':memory:');
    migrate(blank);
    reference = readSchema(blank);
    blank.close();
  }
  const actual = readSchema(db);
  for (const [name, expected] of reference) {
    const found = actual.get(name);
    if (!found) throw new CorruptDatabaseError(`the ${expected.type} ${name} is missing from the schema`);
    if (found.type !== expected.type || found.tbl_name !== expected.tbl_name || found.sql !== expected.sql) {
      throw new CorruptDatabaseError(`the schema of the ${expected.type} ${name} is not the one its migration made`);
    }
  }
}
