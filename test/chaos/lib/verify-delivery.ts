import { isDeepStrictEqual } from 'node:util';
import type { StoredPoint } from '../../../src/cloud/index.js';
import {
  CRASH_EPOCH,
  CRASH_SENSOR,
  CRASH_UNIT,
  crashProcessed,
  PROCESSED_EVERY,
} from '../../fixtures/crash-reading.js';

/** What the cloud was expected to receive from a crash-fixture gateway. */
export interface ExpectedDelivery {
  /** The replica every point must come from: one database file, however often it was restarted. */
  replicaId: string;
  /** Counters whose sendData() resolved. */
  acked: Iterable<number>;
  /** Whether counter `n` was sent through the crash processor (then every fifth counter has processed data). */
  processed: (n: number) => boolean;
}

/** How the cloud's copy compares with what was acknowledged. */
export interface DeliveryResult {
  /** Readings acknowledged by the gateway. */
  acknowledged: number;
  /** Of those, readings found in the cloud. */
  delivered: number;
  /** Acknowledged readings, and processed data of acknowledged readings, not in the cloud. */
  lost: number;
  /** Copies beyond the first, by content (a reading or its processed data) or by (replicaId, seq). */
  duplicated: number;
  /** Points in the cloud. */
  points: number;
  /** The first problems found, for the failure message: losses, duplicates, content that differs. */
  problems: string[];
}

const MAX_PROBLEMS = 20;

/**
 * Compares the cloud's points with what a crash-fixture gateway acknowledged, a page at a time (a long run holds
 * hundreds of thousands of points): every acknowledged reading once, with its content; no (replicaId, seq) twice.
 */
export class DeliveryCheck {
  readonly #copies = new Map<number, number>();
  readonly #processedCopies = new Map<number, number>();
  readonly #keys = new Set<string>();
  readonly #problems: string[] = [];
  readonly #expected: ExpectedDelivery;
  #points = 0;
  #keyDuplicates = 0;

  constructor(expected: ExpectedDelivery) {
    this.#expected = expected;
  }

  #problem(text: string): void {
    if (this.#problems.length < MAX_PROBLEMS) this.#problems.push(text);
  }

  /** Takes one page of the cloud's points. */
  add(points: readonly StoredPoint[]): void {
    for (const point of points) {
      this.#points++;
      const key = `${point.replicaId}:${point.seq}`;
      if (this.#keys.has(key)) {
        this.#keyDuplicates++;
        this.#problem(`(replicaId, seq) ${key} stored twice`);
      }
      this.#keys.add(key);
      const n = Number(point.tags?.n);
      const common =
        point.replicaId === this.#expected.replicaId &&
        point.sensorId === CRASH_SENSOR &&
        isDeepStrictEqual(point.tags, { n: String(n) }) &&
        point.timestamp === new Date(CRASH_EPOCH + n).toISOString();
      if (point.data === undefined) {
        this.#copies.set(n, (this.#copies.get(n) ?? 0) + 1);
        if (!common || point.value !== n || point.unit !== CRASH_UNIT) {
          this.#problem(`reading ${n} differs: ${JSON.stringify(point)}`);
        }
      } else {
        this.#processedCopies.set(n, (this.#processedCopies.get(n) ?? 0) + 1);
        const expected = this.#expected.processed(n) && n % PROCESSED_EVERY === 0;
        if (!common || !expected || !isDeepStrictEqual(point.data, crashProcessed(n)) || point.value !== undefined) {
          this.#problem(`processed data of ${n} differs or was not expected: ${JSON.stringify(point)}`);
        }
      }
    }
  }

  result(): DeliveryResult {
    let acknowledged = 0;
    let delivered = 0;
    let lost = 0;
    for (const n of this.#expected.acked) {
      acknowledged++;
      if (this.#copies.has(n)) delivered++;
      else {
        lost++;
        this.#problem(`acknowledged reading ${n} is not in the cloud`);
      }
      if (this.#expected.processed(n) && n % PROCESSED_EVERY === 0 && !this.#processedCopies.has(n)) {
        lost++;
        this.#problem(`processed data of acknowledged reading ${n} is not in the cloud`);
      }
    }
    let contentDuplicates = 0;
    for (const copies of [this.#copies, this.#processedCopies]) {
      for (const [n, count] of copies) {
        if (count <= 1) continue;
        contentDuplicates += count - 1;
        this.#problem(`counter ${n} stored ${count} times${copies === this.#processedCopies ? ' (processed)' : ''}`);
      }
    }
    return {
      acknowledged,
      delivered,
      lost,
      duplicated: Math.max(contentDuplicates, this.#keyDuplicates),
      points: this.#points,
      problems: [...this.#problems],
    };
  }
}
