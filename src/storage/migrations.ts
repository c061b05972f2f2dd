import type { Database } from 'better-sqlite3';

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
];

/** Brings the schema to the latest version. Returns the version it found. */
export function migrate(db: Database): number {
  const found = db.pragma('user_version', { simple: true }) as number;
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
