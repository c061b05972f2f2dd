import { existsSync } from 'node:fs';
import BetterSqlite3 from 'better-sqlite3-multiple-ciphers';

const open = (path: string) => new BetterSqlite3(path, { readonly: true, fileMustExist: true });

const counterOf = (tags: string | null): number => Number((JSON.parse(tags ?? '{}') as { n?: string }).n);

/**
 * `PRAGMA integrity_check` of a database file, opened read-only (with its WAL) while nothing else has it open:
 * 'ok', or what SQLite found wrong.
 */
export function integrityCheck(path: string): string {
  if (!existsSync(path)) return `${path} does not exist`;
  const db = open(path);
  try {
    const rows = db.pragma('integrity_check') as { integrity_check: string }[];
    return rows.map((row) => row.integrity_check).join('; ');
  } finally {
    db.close();
  }
}

/**
 * Counters of the readings (not processed data) in a gateway database's outbox, read-only; none when the outbox
 * does not exist yet (a gateway killed while it created the file).
 */
export function outboxCounters(path: string): Set<number> {
  const db = open(path);
  try {
    if (!db.prepare("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'outbox'").get()) return new Set();
    const tags = db.prepare('SELECT tags FROM outbox WHERE kind = 0').pluck().all() as (string | null)[];
    return new Set(tags.map(counterOf));
  } finally {
    db.close();
  }
}

/** Replays counted by a SQLite cloud store's ledger for each of `keys` it holds (read-only). */
export function ledgerReplays(path: string, keys: readonly string[]): Map<string, number> {
  const db = open(path);
  try {
    const get = db.prepare('SELECT replays FROM ledger WHERE idempotency_key = ?').pluck();
    const found = new Map<string, number>();
    for (const key of keys) {
      const replays = get.get(key) as number | undefined;
      if (replays !== undefined) found.set(key, replays);
    }
    return found;
  } finally {
    db.close();
  }
}

/**
 * The counters of the readings a SQLite cloud store holds, read incrementally from its file (read-only, WAL lets
 * it read beside the server): after each kill only what arrived since the last look is read.
 */
export class CloudCounters {
  readonly #db: BetterSqlite3.Database;
  readonly #since: BetterSqlite3.Statement;
  readonly counters = new Set<number>();
  #lastId = 0;

  constructor(path: string) {
    this.#db = open(path);
    this.#since = this.#db.prepare('SELECT id, tags FROM points WHERE id > ? AND data IS NULL ORDER BY id');
  }

  /** Reads what arrived since the last call. */
  refresh(): Set<number> {
    for (const row of this.#since.iterate(this.#lastId) as Iterable<{ id: number; tags: string | null }>) {
      this.counters.add(counterOf(row.tags));
      this.#lastId = row.id;
    }
    return this.counters;
  }

  close(): void {
    this.#db.close();
  }
}
