import type { Database, Statement } from 'better-sqlite3-multiple-ciphers';
import type { IngestKeyEntry, IngestKeyWrite } from './storage.js';

/** Rows one write looks at for pruning beyond one per key it writes: what bounds the work of a write. */
const PRUNE_SLACK = 16;

/** Share of a size budget the ledger may take: a tenth, so that keys never crowd out the readings they came with. */
export const LEDGER_BUDGET_SHARE = 0.1;

/**
 * Bytes a key of the longest length taken (255 characters) costs in the database, its row and its unique index
 * together, rounded up from the 720 measured once the table is at its bound (one key in, the oldest out; index pages
 * split by random keys about two thirds full). A UUID key costs about a quarter of it: a bound made with this figure
 * holds whatever keys clients send.
 */
export const LEDGER_BYTES_PER_KEY = 1024;

/**
 * Most keys the ledger keeps under a size budget of `maxSizeBytes`: a tenth of the budget at 1 KiB a key
 * (102 at the smallest budget, 1 MiB; 10240 at 100 MiB); no bound without a budget.
 */
export function ledgerKeyCap(maxSizeBytes: number | undefined): number {
  if (maxSizeBytes === undefined) return Number.POSITIVE_INFINITY;
  return Math.max(1, Math.floor((maxSizeBytes * LEDGER_BUDGET_SHARE) / LEDGER_BYTES_PER_KEY));
}

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

  /**
   * Prunes expired entries and those past the bound (the smaller of `maxEntries` and `cap`), a few more than it
   * writes, then writes the entries. Pruning comes first: an entry removed gives its room to the one written, so a
   * ledger at its bound needs no new page, and a write refused for want of room cannot stop the pruning for ever.
   */
  write(write: IngestKeyWrite, cap: number): void {
    const bound = Math.min(write.maxEntries, cap);
    const count = write.entries.length;
    this.prune(count + PRUNE_SLACK, write.now, Math.max(0, bound - count));
    for (const entry of write.entries) {
      this.#insert.run(entry.idempotencyKey, entry.hash, entry.accepted, entry.stored, write.now, entry.expiresAt);
    }
    // More keys in one commit than the bound (a burst of requests in one tick, a bound of a few keys).
    if (count > bound) this.prune(count + PRUNE_SLACK, write.now, bound);
  }

  /**
   * Removes, among the `limit` oldest entries, those expired by `now` and those past the newest `bound`; returns how
   * many it removed. Fewer than `limit` means one of them was kept: the entries after it most likely are too.
   */
  prune(limit: number, now: number, bound: number): number {
    // A bound of no number of keys: the newest row minus it is below every id.
    return this.#prune.run(limit, now, Number.isFinite(bound) ? bound : Number.MAX_SAFE_INTEGER).changes;
  }
}
