import { ValidationError, type ValidationIssue } from '../errors.js';
import { RECORD_LIMITS } from '../model/records-wire.js';
import type { RecordDeadLetter, RecordStorage } from '../storage/record-storage.js';
import type { SyncRecord } from '../sync/conflict-resolver.js';
import type { HybridClock } from '../sync/hlc.js';
import { toSyncRecord } from '../sync/records-sync.js';

/** Who changed a record, as a watcher is told. */
export interface RecordChange {
  /** `local`: this gateway's `put`/`delete`; `cloud`: a change pulled from the cloud or a conflict it won. */
  source: 'local' | 'cloud';
}

export type RecordWatcher = (record: SyncRecord, change: RecordChange) => void;

/** What {@link Records} needs from the gateway. @internal */
export interface RecordsHost {
  /** The open store; throws NotStartedError / GatewayStoppedError otherwise. */
  storage(method: string): RecordStorage;
  clock(): HybridClock;
  replicaId(): string;
  /** A local edit was committed: sync soon. */
  written(): void;
  /** A watcher threw: reported, never thrown into the writer. */
  watcherFailed(error: unknown): void;
}

const COLLECTION_PATTERN = /^[A-Za-z0-9_.-]+$/;
const MAX_DEPTH = 64;

/**
 * Shared records: small documents that both the edge and the cloud change (setpoints, device configuration, work
 * orders), kept in step both ways. Reads are local and work offline; writes are durable at once and go to the
 * cloud with the next sync, where conflicts are resolved by the gateway's strategy (see docs/conflicts.md).
 *
 * @example
 * ```ts
 * await gateway.records.put('setpoints', 'boiler-1', { target: 72 });
 * gateway.records.get('setpoints', 'boiler-1')?.value; // { target: 72 }
 * ```
 */
export class Records {
  readonly #host: RecordsHost;
  readonly #watchers = new Map<string, Set<RecordWatcher>>();

  /** @internal */
  constructor(host: RecordsHost) {
    this.#host = host;
  }

  /**
   * Writes a record: stored with its outgoing mutation in one transaction before the promise resolves. Rejects
   * with `ValidationError` (nothing stored) for a bad collection or key, or a value that is not plain JSON or is
   * over 256 KiB as JSON.
   */
  async put<T = unknown>(collection: string, key: string, value: T): Promise<SyncRecord<T>> {
    const issues = checkName(collection, key);
    const text = checkValue(value, issues);
    if (issues.length > 0) throw new ValidationError(issues, 'record');
    return this.#write(collection, key, text as string, 'put') as SyncRecord<T>;
  }

  /** Deletes a record: a tombstone, synced like any edit. Resolves `false` when there was nothing to delete. */
  async delete(collection: string, key: string): Promise<boolean> {
    const issues = checkName(collection, key);
    if (issues.length > 0) throw new ValidationError(issues, 'record');
    const existing = this.#host.storage('records.delete').get(collection, key);
    if (!existing || existing.deleted) return false;
    this.#write(collection, key, null, 'delete');
    return true;
  }

  /** The record as this gateway holds it, or undefined (also for a deleted one). Local: works offline. */
  get<T = unknown>(collection: string, key: string): SyncRecord<T> | undefined {
    const stored = this.#host.storage('records.get').get(collection, key);
    return stored && !stored.deleted ? (toSyncRecord(stored) as SyncRecord<T>) : undefined;
  }

  /** Every live record of a collection, ordered by key. */
  list<T = unknown>(collection: string): SyncRecord<T>[] {
    return this.#host
      .storage('records.list')
      .list(collection)
      .filter((r) => !r.deleted)
      .map((r) => toSyncRecord(r) as SyncRecord<T>);
  }

  /**
   * Calls `watcher` on every change to a record of `collection`, local or from the cloud (a deletion comes with
   * `deleted: true`). Returns a function that stops watching.
   */
  watch(collection: string, watcher: RecordWatcher): () => void {
    let set = this.#watchers.get(collection);
    if (!set) {
      set = new Set();
      this.#watchers.set(collection, set);
    }
    set.add(watcher);
    return () => {
      set.delete(watcher);
      if (set.size === 0) this.#watchers.delete(collection);
    };
  }

  /** Local edits not yet settled with the cloud. */
  pendingCount(): number {
    return this.#host.storage('records.pendingCount').mutationCount();
  }

  /** Edits the cloud refused as invalid, newest first, with the reason. */
  deadLetters(limit = 100): RecordDeadLetter[] {
    return this.#host.storage('records.deadLetters').deadLetters(limit);
  }

  /** @internal Tells the watchers of each record's collection. */
  notify(records: readonly SyncRecord[], source: RecordChange['source']): void {
    for (const record of records) {
      const set = this.#watchers.get(record.collection);
      if (!set) continue;
      for (const watcher of [...set]) {
        try {
          watcher(record, { source });
        } catch (error) {
          this.#host.watcherFailed(error);
        }
      }
    }
  }

  #write(collection: string, key: string, value: string | null, method: string): SyncRecord {
    const storage = this.#host.storage(`records.${method}`);
    const host = this.#host;
    const stored = storage.write({ collection, key, value, hlc: host.clock().tick(), origin: host.replicaId() });
    const record = toSyncRecord(stored);
    host.written();
    this.notify([record], 'local');
    return record;
  }
}

function checkName(collection: unknown, key: unknown): ValidationIssue[] {
  const issues: ValidationIssue[] = [];
  if (typeof collection !== 'string' || collection.length === 0) {
    issues.push({ field: 'collection', message: 'expected a non-empty string' });
  } else if (collection.length > RECORD_LIMITS.collectionLength) {
    issues.push({ field: 'collection', message: `at most ${RECORD_LIMITS.collectionLength} characters` });
  } else if (!COLLECTION_PATTERN.test(collection)) {
    issues.push({ field: 'collection', message: 'letters, digits, "_", "." and "-" only (it appears in URLs)' });
  }
  if (typeof key !== 'string' || key.length === 0) {
    issues.push({ field: 'key', message: 'expected a non-empty string' });
  } else if (key.length > RECORD_LIMITS.keyLength) {
    issues.push({ field: 'key', message: `at most ${RECORD_LIMITS.keyLength} characters` });
  }
  return issues;
}

// The value as JSON text, or undefined with the problems added to `issues`. Only what survives a JSON round trip
// unchanged is taken: a Date, a Map, NaN or undefined would come back as something else on the other side.
function checkValue(value: unknown, issues: ValidationIssue[]): string | undefined {
  const before = issues.length;
  walk(value, 'value', 0, issues);
  if (issues.length > before) return undefined;
  const text = JSON.stringify(value);
  const bytes = Buffer.byteLength(text);
  if (bytes > RECORD_LIMITS.valueBytes) {
    issues.push({ field: 'value', message: `${bytes} bytes as JSON; at most ${RECORD_LIMITS.valueBytes}` });
    return undefined;
  }
  return text;
}

function walk(value: unknown, path: string, depth: number, issues: ValidationIssue[]): void {
  if (issues.length >= 10) return;
  if (depth > MAX_DEPTH) {
    issues.push({ field: path, message: `nested deeper than ${MAX_DEPTH} levels (or circular)` });
    return;
  }
  switch (typeof value) {
    case 'string':
    case 'boolean':
      return;
    case 'number':
      if (!Number.isFinite(value)) issues.push({ field: path, message: `${value} cannot be written as JSON` });
      return;
    case 'object': {
      if (value === null) return;
      if (Array.isArray(value)) {
        for (let i = 0; i < value.length; i++) walk(value[i], `${path}[${i}]`, depth + 1, issues);
        return;
      }
      const proto = Object.getPrototypeOf(value);
      if (proto !== Object.prototype && proto !== null) {
        issues.push({ field: path, message: `a ${proto?.constructor?.name ?? 'class instance'} is not plain JSON` });
        return;
      }
      for (const [k, v] of Object.entries(value)) walk(v, `${path}.${k}`, depth + 1, issues);
      return;
    }
    default:
      issues.push({ field: path, message: `a ${typeof value} cannot be written as JSON` });
  }
}
