import type { StoredPoint } from '../../../src/cloud/index.js';

/** A reading as the disk, corruption and clock scenarios make them: unique by sensor and value. */
export interface LedgerReading {
  sensorId: string;
  value: number;
  unit: string;
  timestamp: Date;
}

/** The epoch of the scenarios' reading timestamps: value `v` is stamped `EPOCH + v` seconds. */
const EPOCH = Date.UTC(2024, 0, 1);

/** `n` readings of `sensorId` with values `from`, `from + 1`, ..., each with its own timestamp. */
export function readingsOf(sensorId: string, from: number, n: number): LedgerReading[] {
  return Array.from({ length: n }, (_, i) => ({
    sensorId,
    value: from + i,
    unit: 'celsius',
    timestamp: new Date(EPOCH + (from + i) * 1000),
  }));
}

const keyOf = (sensorId: string, value: number | undefined) => `${sensorId}#${value}`;

/** How the cloud's copy compares with what the gateway accepted. */
export interface LedgerComparison {
  /** Readings whose sendData()/sendBatch() resolved. */
  acknowledged: number;
  /** Of those, found in the cloud with the same content. */
  delivered: number;
  /** Accepted and not in the cloud (or there with other content). */
  lost: number;
  /** Copies beyond the first, by content or by (replicaId, seq); and points nobody sent (a refused write stored after all). */
  duplicated: number;
  /** The first problems found, for failure messages. */
  problems: string[];
}

/**
 * What a test handed to a gateway and had accepted, to compare with what reached the cloud: every accepted reading
 * exactly once with its content, and nothing that was refused.
 */
export class ReadingLedger {
  readonly #accepted = new Map<string, LedgerReading>();
  /** Readings the test let go of on purpose (e.g. stranded in a quarantined file): not expected, not counted. */
  readonly #excused = new Set<string>();

  /** Readings whose sendData()/sendBatch() resolved. */
  accept(readings: readonly LedgerReading[]): void {
    for (const reading of readings) this.#accepted.set(keyOf(reading.sensorId, reading.value), reading);
  }

  /** Takes accepted readings off the books: the test knows they cannot reach the cloud, and says why elsewhere. */
  excuse(readings: readonly LedgerReading[]): void {
    for (const reading of readings) {
      const key = keyOf(reading.sensorId, reading.value);
      this.#accepted.delete(key);
      this.#excused.add(key);
    }
  }

  get size(): number {
    return this.#accepted.size;
  }

  compare(points: readonly StoredPoint[]): LedgerComparison {
    const problems: string[] = [];
    const note = (text: string) => {
      if (problems.length < 20) problems.push(text);
    };
    const copies = new Map<string, number>();
    const seqs = new Set<string>();
    let duplicated = 0;
    for (const point of points) {
      const key = keyOf(point.sensorId, point.value);
      const seqKey = `${point.replicaId}:${point.seq}`;
      if (seqs.has(seqKey)) {
        duplicated++;
        note(`(replicaId, seq) ${seqKey} stored twice`);
      }
      seqs.add(seqKey);
      if (this.#excused.has(key)) continue;
      const expected = this.#accepted.get(key);
      if (!expected) {
        duplicated++;
        note(`${key} is in the cloud but was never accepted`);
        continue;
      }
      if (point.unit !== expected.unit || point.timestamp !== expected.timestamp.toISOString()) {
        note(`${key} arrived with other content: ${JSON.stringify(point)}`);
        continue;
      }
      const n = (copies.get(key) ?? 0) + 1;
      copies.set(key, n);
      if (n > 1) {
        duplicated++;
        note(`${key} arrived ${n} times`);
      }
    }
    let delivered = 0;
    for (const key of this.#accepted.keys()) {
      if (copies.has(key)) delivered++;
      else note(`${key} was accepted and never arrived`);
    }
    return {
      acknowledged: this.#accepted.size,
      delivered,
      lost: this.#accepted.size - delivered,
      duplicated,
      problems,
    };
  }
}
