import type { DeadLetterInsert, OutboxInsert } from '../storage/storage.js';

/** Largest group: past this many rows in one tick, the group commits at once, so memory stays bounded. */
export const MAX_GROUP_ROWS = 8192;

/**
 * Group commit: every row added in the same tick of the event loop goes into one transaction, and every caller
 * of that tick shares one promise, settled after the commit. Durability then costs one fsync per tick, not one per
 * reading, and a burst costs one allocation per tick, not one promise per reading.
 */
export class GroupCommit {
  readonly #commit: (rows: OutboxInsert[], dead: DeadLetterInsert[]) => void;
  #rows: OutboxInsert[] = [];
  #dead: DeadLetterInsert[] = [];
  #promise: Promise<true> | undefined;
  #resolve: ((value: true) => void) | undefined;
  #reject: ((error: unknown) => void) | undefined;
  #immediate: NodeJS.Immediate | undefined;

  constructor(commit: (rows: OutboxInsert[], dead: DeadLetterInsert[]) => void) {
    this.#commit = commit;
  }

  /** Rows waiting for the end of the tick. */
  get size(): number {
    return this.#rows.length;
  }

  /** Adds one row; the promise settles when its transaction commits or fails. */
  add(row: OutboxInsert): Promise<true> {
    this.#rows.push(row);
    return this.#pending();
  }

  /** Adds rows that must commit together (a batch lands in one transaction). */
  addAll(rows: readonly OutboxInsert[]): Promise<true> {
    for (const row of rows) this.#rows.push(row);
    return this.#pending();
  }

  /** Adds a dead letter, kept in the same transaction as the readings of its tick. */
  addDeadLetter(dead: DeadLetterInsert): Promise<true> {
    this.#dead.push(dead);
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
    if (this.#rows.length >= MAX_GROUP_ROWS) this.flush();
    return promise;
  }

  /** Commits what is waiting now. Synchronous: the storage is. */
  flush(): void {
    if (this.#promise === undefined) return;
    if (this.#immediate) clearImmediate(this.#immediate);
    const rows = this.#rows;
    const dead = this.#dead;
    const resolve = this.#resolve;
    const reject = this.#reject;
    this.#rows = [];
    this.#dead = [];
    this.#promise = undefined;
    this.#resolve = undefined;
    this.#reject = undefined;
    this.#immediate = undefined;
    try {
      this.#commit(rows, dead);
    } catch (error) {
      reject?.(error);
      return;
    }
    resolve?.(true);
  }
}
