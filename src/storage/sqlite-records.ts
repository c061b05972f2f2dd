import type { Database } from 'better-sqlite3-multiple-ciphers';
import type {
  IncomingRecord,
  MutationOutcome,
  RecordDeadLetter,
  RecordStorage,
  StoredMutation,
  StoredRecord,
} from './record-storage.js';

/** Runs `work` in one write transaction of the owning storage (size budget, error mapping). */
export type WriteTransaction = <T>(what: string, work: () => T, room: 'intake' | 'upkeep') => T;

interface RawRecord {
  collection: string;
  key: string;
  value: string | null;
  deleted: number;
  version: number;
  hlc: string;
  origin: string;
}

interface RawMutation {
  id: number;
  collection: string;
  key: string;
  op: number;
  value: string | null;
  hlc: string;
  state: number;
  base_version: number | null;
}

const OP_PUT = 0;
const OP_DELETE = 1;
const PENDING = 0;
const SENT = 1;

const toRecord = (raw: RawRecord): StoredRecord => ({
  collection: raw.collection,
  key: raw.key,
  value: raw.value,
  deleted: raw.deleted === 1,
  version: raw.version,
  hlc: raw.hlc,
  origin: raw.origin,
});

const toMutation = (raw: RawMutation): StoredMutation => ({
  id: raw.id,
  collection: raw.collection,
  key: raw.key,
  op: raw.op === OP_DELETE ? 'delete' : 'put',
  value: raw.value,
  hlc: raw.hlc,
  state: raw.state === SENT ? 'sent' : 'pending',
  baseVersion: raw.base_version,
});

function prepare(db: Database) {
  return {
    get: db.prepare('SELECT * FROM records WHERE collection = ? AND key = ?'),
    list: db.prepare('SELECT * FROM records WHERE collection = ? ORDER BY key'),
    upsertLocal: db.prepare(
      `INSERT INTO records (collection, key, value, deleted, version, hlc, origin) VALUES (?, ?, ?, ?, 0, ?, ?)
       ON CONFLICT (collection, key) DO UPDATE SET
         value = excluded.value, deleted = excluded.deleted, hlc = excluded.hlc, origin = excluded.origin`,
    ),
    upsertFull: db.prepare(
      `INSERT INTO records (collection, key, value, deleted, version, hlc, origin) VALUES (?, ?, ?, ?, ?, ?, ?)
       ON CONFLICT (collection, key) DO UPDATE SET value = excluded.value, deleted = excluded.deleted,
         version = excluded.version, hlc = excluded.hlc, origin = excluded.origin`,
    ),
    // Pending edits of one key coalesce into one row, which keeps its id: it was never sent, so no one knows it.
    queue: db.prepare(
      `INSERT INTO mutations (collection, key, op, value, hlc, state) VALUES (?, ?, ?, ?, ?, ${PENDING})
       ON CONFLICT (collection, key) WHERE state = ${PENDING}
       DO UPDATE SET op = excluded.op, value = excluded.value, hlc = excluded.hlc`,
    ),
    sent: db.prepare(`SELECT * FROM mutations WHERE state = ${SENT} ORDER BY id LIMIT ?`),
    sendable: db.prepare(
      `SELECT m.* FROM mutations m WHERE m.state = ${PENDING} AND NOT EXISTS (
         SELECT 1 FROM mutations s WHERE s.state = ${SENT} AND s.collection = m.collection AND s.key = m.key)
       ORDER BY m.id LIMIT ?`,
    ),
    markSent: db.prepare(
      `UPDATE mutations SET state = ${SENT}, base_version =
         coalesce((SELECT version FROM records r WHERE r.collection = mutations.collection AND r.key = mutations.key), 0)
       WHERE id = ?`,
    ),
    mutation: db.prepare('SELECT * FROM mutations WHERE id = ?'),
    deleteMutation: db.prepare('DELETE FROM mutations WHERE id = ?'),
    deleteKeyMutations: db.prepare('DELETE FROM mutations WHERE collection = ? AND key = ?'),
    hasMutation: db.prepare('SELECT 1 FROM mutations WHERE collection = ? AND key = ? LIMIT 1').pluck(),
    mutationCount: db.prepare('SELECT count(*) FROM mutations').pluck(),
    moveVersion: db.prepare('UPDATE records SET version = ? WHERE collection = ? AND key = ? AND version < ?'),
    restamp: db.prepare('UPDATE records SET hlc = ? WHERE collection = ? AND key = ? AND hlc = ?'),
    insertDead: db.prepare(
      `INSERT INTO record_dead_letters (mid, collection, key, op, value, base_version, hlc, reason, created_at)
       VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)`,
    ),
    deadLetters: db.prepare('SELECT * FROM record_dead_letters ORDER BY id DESC LIMIT ?'),
    getMeta: db.prepare('SELECT value FROM meta WHERE key = ?').pluck(),
    setMeta: db.prepare(
      'INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value',
    ),
  };
}

/** Meta keys of records sync. */
export const RECORDS_META = { cursor: 'records_pull_cursor', hlc: 'hlc_last', clockOffset: 'clock_offset_ms' } as const;

/** {@link RecordStorage} on the gateway's SQLite database; made by {@link SqliteStorage} at open. */
export class SqliteRecordStorage implements RecordStorage {
  readonly #s: ReturnType<typeof prepare>;
  readonly #write: WriteTransaction;

  constructor(db: Database, write: WriteTransaction) {
    this.#s = prepare(db);
    this.#write = write;
  }

  get(collection: string, key: string): StoredRecord | undefined {
    const raw = this.#s.get.get(collection, key) as RawRecord | undefined;
    return raw && toRecord(raw);
  }

  list(collection: string): StoredRecord[] {
    return (this.#s.list.all(collection) as RawRecord[]).map(toRecord);
  }

  write(edit: { collection: string; key: string; value: string | null; hlc: string; origin: string }): StoredRecord {
    const { collection, key, value, hlc, origin } = edit;
    const deleted = value === null;
    return this.#write(
      'record write',
      () => {
        this.#s.upsertLocal.run(collection, key, value, deleted ? 1 : 0, hlc, origin);
        this.#s.queue.run(collection, key, deleted ? OP_DELETE : OP_PUT, value, hlc);
        this.#s.setMeta.run(RECORDS_META.hlc, hlc);
        return toRecord(this.#s.get.get(collection, key) as RawRecord);
      },
      'intake',
    );
  }

  takeOutgoing(limit: number): StoredMutation[] {
    return this.#write(
      'record push',
      () => {
        const sent = this.#s.sent.all(limit) as RawMutation[];
        const room = limit - sent.length;
        const fresh = room > 0 ? (this.#s.sendable.all(room) as RawMutation[]) : [];
        for (const raw of fresh) this.#s.markSent.run(raw.id);
        return [...sent, ...fresh.map((raw) => this.#s.mutation.get(raw.id) as RawMutation)].map(toMutation);
      },
      'upkeep',
    );
  }

  mutationCount(): number {
    return this.#s.mutationCount.get() as number;
  }

  settle(outcomes: readonly MutationOutcome[]): boolean[] {
    return this.#write('record outcomes', () => outcomes.map((outcome) => this.#settleOne(outcome)), 'upkeep');
  }

  #settleOne(outcome: MutationOutcome): boolean {
    const raw = this.#s.mutation.get(outcome.id) as RawMutation | undefined;
    if (!raw) return false;
    const { collection, key } = raw;
    switch (outcome.kind) {
      case 'applied':
        this.#s.deleteMutation.run(outcome.id);
        this.#s.moveVersion.run(outcome.version, collection, key, outcome.version);
        // The cloud restamped a write from a clock too far ahead: keep its stamp, so every replica holds the same.
        if (outcome.hlc !== raw.hlc) this.#s.restamp.run(outcome.hlc, collection, key, raw.hlc);
        return true;
      case 'rejected':
        this.#s.insertDead.run(
          outcome.mid,
          collection,
          key,
          raw.op,
          raw.value,
          raw.base_version,
          raw.hlc,
          outcome.reason,
          Date.now(),
        );
        this.#s.deleteMutation.run(outcome.id);
        return true;
      case 'take-cloud':
        if (!this.#unchanged(raw, outcome.seenHlc)) return false;
        this.#s.deleteKeyMutations.run(collection, key);
        this.#upsert(outcome.cloud);
        return true;
      case 'repush': {
        if (!this.#unchanged(raw, outcome.seenHlc)) return false;
        const { value, hlc, origin } = outcome.resolved;
        const deleted = value === null;
        this.#s.deleteKeyMutations.run(collection, key);
        this.#s.upsertFull.run(collection, key, value, deleted ? 1 : 0, outcome.cloudVersion, hlc, origin);
        this.#s.queue.run(collection, key, deleted ? OP_DELETE : OP_PUT, value, hlc);
        return true;
      }
    }
  }

  applyPulled(changes: readonly IncomingRecord[], cursor: number): IncomingRecord[] {
    return this.#write(
      'records pull',
      () => {
        const applied: IncomingRecord[] = [];
        for (const change of changes) {
          if (this.#s.hasMutation.get(change.collection, change.key)) continue;
          const local = this.#s.get.get(change.collection, change.key) as RawRecord | undefined;
          if (local && local.version >= change.version) continue;
          this.#upsert(change);
          applied.push(change);
        }
        this.#s.setMeta.run(RECORDS_META.cursor, String(cursor));
        return applied;
      },
      'upkeep',
    );
  }

  pullCursor(): number {
    return Number(this.#s.getMeta.get(RECORDS_META.cursor) ?? '0');
  }

  deadLetters(limit = 100): RecordDeadLetter[] {
    return (
      this.#s.deadLetters.all(limit) as (Omit<RawMutation, 'state' | 'id'> & {
        id: number;
        mid: string;
        reason: string;
        created_at: number;
      })[]
    ).map((raw) => ({
      id: raw.id,
      mid: raw.mid,
      collection: raw.collection,
      key: raw.key,
      op: raw.op === OP_DELETE ? 'delete' : 'put',
      value: raw.value,
      baseVersion: raw.base_version,
      hlc: raw.hlc,
      reason: raw.reason,
      createdAt: raw.created_at,
    }));
  }

  // The record still holds the state the resolver was shown: no local edit came in while it ran.
  #unchanged(mutation: RawMutation, seenHlc: string): boolean {
    const local = this.#s.get.get(mutation.collection, mutation.key) as RawRecord | undefined;
    return local?.hlc === seenHlc;
  }

  #upsert(record: IncomingRecord): void {
    this.#s.upsertFull.run(
      record.collection,
      record.key,
      record.deleted ? null : record.value,
      record.deleted ? 1 : 0,
      record.version,
      record.hlc,
      record.origin,
    );
  }
}
