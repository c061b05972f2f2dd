import type { Database, Statement } from 'better-sqlite3-multiple-ciphers';
import type { IngestKeyEntry, IngestKeyWrite } from './storage.js';

/** Rows one write looks at for pruning beyond one per key it writes: what bounds the work of a write. */
const PRUNE_SLACK = 16;

interface RawEntry {
  hash: string;
  accepted: number;
  stored: number;
  expires_at: number;
}

/**
 * The `ingest_ledger` table: the ingest endpoint's idempotency keys, with their statements prepared once. Writes run
 * inside the caller's transaction, the one that stores the keys' readings.
 * @internal
 */
export class IngestLedger {
  readonly #lookup: Statement;
  readonly #insert: Statement;
  readonly #prune: Statement;

  constructor(db: Database) {
    this.#lookup = db.prepare(
      'SELECT hash, accepted, stored, expires_at FROM ingest_ledger WHERE idempotency_key = ? AND expires_at > ?',
    );
    // The caller holds the key (no other request of it is in flight) and found it unknown or expired: REPLACE only
    // ever replaces an expired entry, and the new row takes a new id, at the end of the arrival order.
    this.#insert = db.prepare(
      `INSERT OR REPLACE INTO ingest_ledger (idempotency_key, hash, accepted, stored, received_at, expires_at)
       VALUES (?, ?, ?, ?, ?, ?)`,
    );
    // Only the oldest rows are looked at: keys arrive in about expiry order, so the expired ones are there, and the
    // cost stays the same however large the table. Past the count bound the oldest go, expired or not (ids may have
    // gaps where a key was used again: then a few fewer than the bound are kept).
    this.#prune = db.prepare(
      `DELETE FROM ingest_ledger WHERE id IN (SELECT id FROM ingest_ledger ORDER BY id LIMIT ?)
       AND (expires_at <= ? OR id <= (SELECT max(id) FROM ingest_ledger) - ?)`,
    );
  }

  /** The key's entry, unless it expired by `now`. */
  lookup(idempotencyKey: string, now: number): IngestKeyEntry | undefined {
    const raw = this.#lookup.get(idempotencyKey, now) as RawEntry | undefined;
    return (
      raw && {
        idempotencyKey,
        hash: raw.hash,
        accepted: raw.accepted,
        stored: raw.stored,
        expiresAt: raw.expires_at,
      }
    );
  }

  /** Writes the entries, then prunes expired entries and those past the bound, a few more than it wrote. */
  write(write: IngestKeyWrite): void {
    for (const entry of write.entries) {
      this.#insert.run(entry.idempotencyKey, entry.hash, entry.accepted, entry.stored, write.now, entry.expiresAt);
    }
    this.#prune.run(write.entries.length + PRUNE_SLACK, write.now, write.maxEntries);
  }
}
