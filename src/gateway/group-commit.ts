import type { RaisedAlert } from '../processing/processing-scope.js';
import type { StagedReading } from '../processing/processor-chain.js';
import type { DeadLetterInsert, OutboxInsert } from '../storage/storage.js';
import type { PendingIngestKey } from './ingest-keys.js';

/** Largest group: past this many rows in one tick, the group commits at once, so memory stays bounded. */
export const MAX_GROUP_ROWS = 8192;

/** What a group holds besides its plain rows and dead letters: the processors' share of the transaction. */
export interface GroupExtras {
  /** Readings for the built-in processors, which run inside the commit. */
  staged: StagedReading[];
  alerts: RaisedAlert[];
  /** Set when the built-ins should close what the clock says is over. */
  tick: boolean;
}

/** Stores one group, in one transaction. */
export type CommitGroup = (
  rows: OutboxInsert[],
  dead: DeadLetterInsert[],
  extras: GroupExtras | undefined,
  keys: readonly PendingIngestKey[],
) => void;

/**
 * Group commit: every row added in the same tick of the event loop goes into one transaction, and every caller
 * of that tick shares one promise, settled after the commit. Durability then costs one fsync per tick, not one per
 * reading, and a burst costs one allocation per tick, not one promise per reading. Alerts, the readings the
 * built-in processors still have to see, and the ingest endpoint's idempotency keys ride in the same transaction as
 * the rows they came with.
 */
export class GroupCommit {
  readonly #commit: CommitGroup;
  #rows: OutboxInsert[] = [];
  #dead: DeadLetterInsert[] = [];
  #extras: GroupExtras | undefined;
  #keys: PendingIngestKey[] = [];
  #promise: Promise<true> | undefined;
  #resolve: ((value: true) => void) | undefined;
  #reject: ((error: unknown) => void) | undefined;
  #immediate: NodeJS.Immediate | undefined;

  constructor(commit: CommitGroup) {
    this.#commit = commit;
  }

  /** Rows waiting for the end of the tick. */
  get size(): number {
    return this.#rows.length + (this.#extras?.staged.length ?? 0);
  }

  /**
   * Adds one row, with the idempotency key of its ingest request if it has one; the promise settles when its
   * transaction commits or fails.
   */
  add(row: OutboxInsert, key?: PendingIngestKey): Promise<true> {
    this.#rows.push(row);
    if (key) this.#keys.push(key);
    return this.#pending();
  }

  /** Adds rows that must commit together (a batch lands in one transaction), with their request's key if any. */
  addAll(rows: readonly OutboxInsert[], key?: PendingIngestKey): Promise<true> {
    for (const row of rows) this.#rows.push(row);
    if (key) this.#keys.push(key);
    return this.#pending();
  }

  /** Adds a dead letter, kept in the same transaction as the readings of its tick. */
  addDeadLetter(dead: DeadLetterInsert): Promise<true> {
    this.#dead.push(dead);
    return this.#pending();
  }

  /** Adds what a processor chain made of readings: all of it lands in one transaction. */
  addProcessed(work: {
    rows: readonly OutboxInsert[];
    dead: readonly DeadLetterInsert[];
    staged: readonly StagedReading[];
    alerts: readonly RaisedAlert[];
    tick?: boolean;
    key?: PendingIngestKey | undefined;
  }): Promise<true> {
    for (const row of work.rows) this.#rows.push(row);
    for (const dead of work.dead) this.#dead.push(dead);
    if (work.key) this.#keys.push(work.key);
    if (work.staged.length > 0 || work.alerts.length > 0 || work.tick) {
      this.#extras ??= { staged: [], alerts: [], tick: false };
      for (const entry of work.staged) this.#extras.staged.push(entry);
      for (const alert of work.alerts) this.#extras.alerts.push(alert);
      if (work.tick) this.#extras.tick = true;
    }
    return this.#pending();
  }

  /** Adds one reading for the built-in processors (the hot path of `sendData()` with a chain). */
  addStaged(entry: StagedReading, key?: PendingIngestKey): Promise<true> {
    this.#extras ??= { staged: [], alerts: [], tick: false };
    this.#extras.staged.push(entry);
    if (key) this.#keys.push(key);
    return this.#pending();
  }

  #pending(): Promise<true> {
    if (this.#promise === undefined) {
      this.#promise = new Promise<true>((resolve, reject) => {
        this.#resolve = resolve;
        this.#reject = reject;
      });
      this.#immediate = setImmediate(() => this.flush());
    }
    const promise = this.#promise;
    if (this.size >= MAX_GROUP_ROWS) this.flush();
    return promise;
  }

  /** Commits what is waiting now. Synchronous: the storage is. */
  flush(): void {
    if (this.#promise === undefined) return;
    if (this.#immediate) clearImmediate(this.#immediate);
    const rows = this.#rows;
    const dead = this.#dead;
    const extras = this.#extras;
    const keys = this.#keys;
    const resolve = this.#resolve;
    const reject = this.#reject;
    this.#rows = [];
    this.#dead = [];
    this.#extras = undefined;
    // A group without keys (nearly every one) leaves its empty array to the next: nothing holds on to it.
    if (keys.length > 0) this.#keys = [];
    this.#promise = undefined;
    this.#resolve = undefined;
    this.#reject = undefined;
    this.#immediate = undefined;
    try {
      this.#commit(rows, dead, extras, keys);
    } catch (error) {
      reject?.(error);
      return;
    }
    resolve?.(true);
  }
}
