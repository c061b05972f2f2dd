import { type DataPoint, type NormalizedPoint, normalizePoint } from '../model/data-point.js';
import type { AggregateInsert, StateWrite } from '../storage/storage.js';
import type { RaisedAlert } from './processing-scope.js';
import type { Processor, ProcessResult } from './processor.js';

/** Marks the built-in processors that run inside the commit. @internal */
export const STAGE = Symbol.for('edge-gateway.stage');

/** Where a stage puts what it makes of a reading, during one commit. @internal */
export interface StageOutput {
  /** The reading (or a derived one) goes on to the next stage, then to storage. */
  pass(point: NormalizedPoint): void;
  alert(alert: RaisedAlert): void;
  /** A closed window: stored for local queries and queued for the cloud. */
  aggregate(aggregate: AggregateInsert, payload: string): void;
  /** The stage used the reading (counted it into a window) without passing it on: it was not dropped. */
  absorb(): void;
}

/** What a stage tells about itself. */
export type StageStats = Readonly<Record<string, number>>;

/**
 * The base of the built-in processors: synchronous state machines keyed by series. The gateway runs them inside
 * the group commit, on the readings of that commit in commit order, against a draft of their state: the draft's
 * changes are written in the same transaction as the readings and installed only once it commits, and dropped if
 * it fails. So the state on disk always matches the readings on disk, across a crash, with no gap and no double
 * count. Built-ins must come after custom processors in a chain.
 *
 * Outside a gateway, `process()` runs one reading and installs the result at once (handy in unit tests).
 * @internal
 */
export abstract class SeriesStage<S> implements Processor {
  readonly [STAGE] = true;
  abstract readonly name: string;
  /** Most series whose state is kept; readings of further series pass through untouched (counted as `overflow`). */
  readonly maxSeries: number;
  readonly #committed = new Map<string, S>();
  /** Series touched by the commit being prepared: their new state, or undefined when it goes. */
  readonly #draft = new Map<string, S | undefined>();
  /** @internal */
  protected readonly counters: Record<string, number> = { overflow: 0 };

  constructor(maxSeries: number) {
    this.maxSeries = maxSeries;
  }

  /** Counters since the gateway started (not durable). */
  get stats(): StageStats {
    return { ...this.counters };
  }

  /** @internal */
  protected abstract cloneState(state: S): S;
  /** @internal */
  protected abstract encodeState(state: S): string;
  /** @internal */
  protected abstract decodeState(json: string): S;

  /** Runs one reading: pass it on (or not), raise alerts, emit aggregates. @internal */
  abstract apply(point: NormalizedPoint, out: StageOutput): void;

  /** Clock-driven work at each flush (closing windows of silent sensors). @internal */
  tick(_now: number, _out: StageOutput): void {}

  /** Whether `tick` would do anything now; the gateway commits a tick only then. @internal */
  due(_now: number): boolean {
    return false;
  }

  /** @internal */
  protected count(counter: string, by = 1): void {
    this.counters[counter] = (this.counters[counter] ?? 0) + by;
  }

  /** The state of a series as the commit being prepared sees it; a copy, so that changes stay in the draft. @internal */
  protected state(key: string): S | undefined {
    if (this.#draft.has(key)) return this.#draft.get(key);
    const committed = this.#committed.get(key);
    if (committed === undefined) return undefined;
    const copy = this.cloneState(committed);
    this.#draft.set(key, copy);
    return copy;
  }

  /** The state of a series without taking a copy: read it, do not change it. @internal */
  protected peek(key: string): Readonly<S> | undefined {
    return this.#draft.has(key) ? this.#draft.get(key) : this.#committed.get(key);
  }

  /** Whether a new series fits under `maxSeries`. @internal */
  protected hasRoomFor(key: string): boolean {
    if (this.#committed.has(key) || this.#draft.has(key)) return true;
    return this.#committed.size + this.#draft.size < this.maxSeries;
  }

  /** @internal */
  protected setState(key: string, state: S | undefined): void {
    this.#draft.set(key, state);
  }

  /** Every series with state, committed or drafted. @internal */
  protected *seriesKeys(): Iterable<string> {
    yield* this.#committed.keys();
    for (const key of this.#draft.keys()) if (!this.#committed.has(key)) yield key;
  }

  /** @internal Replaces the state with what was stored. */
  load(entries: ReadonlyMap<string, string>): void {
    this.#committed.clear();
    this.#draft.clear();
    for (const [key, json] of entries) this.#committed.set(key, this.decodeState(json));
  }

  /** @internal The draft's changes, to write in the commit's transaction. */
  writes(): StateWrite[] {
    const writes: StateWrite[] = [];
    for (const [key, state] of this.#draft) {
      writes.push({ processor: this.name, key, value: state === undefined ? null : this.encodeState(state) });
    }
    return writes;
  }

  /** @internal The commit went through: the draft becomes the state. */
  install(): void {
    for (const [key, state] of this.#draft) {
      if (state === undefined) this.#committed.delete(key);
      else this.#committed.set(key, state);
    }
    this.#draft.clear();
  }

  /** @internal The commit failed: forget the draft. */
  discard(): void {
    this.#draft.clear();
  }

  /**
   * Runs one reading outside a gateway and keeps the outcome: returns the readings passed on and the closed
   * windows (as `{ aggregate }` objects). Alerts are not kept here; in a gateway they are stored and emitted.
   */
  process(point: DataPoint): ProcessResult {
    const results: (DataPoint | Record<string, unknown>)[] = [];
    const out: StageOutput = {
      pass: (p) =>
        results.push({
          sensorId: p.sensorId,
          value: p.value,
          unit: p.unit ?? undefined,
          tags: p.tags === null ? undefined : (JSON.parse(p.tags) as Record<string, string>),
          timestamp: p.ts,
        }),
      alert: () => {},
      aggregate: (_a, payload) => results.push(JSON.parse(payload) as Record<string, unknown>),
      absorb: () => {},
    };
    this.apply(normalizePoint(point), out);
    this.install();
    return results;
  }
}

/** True for the built-in processors that run inside the commit. @internal */
export const isStage = (processor: Processor): processor is SeriesStage<unknown> =>
  (processor as { [STAGE]?: unknown })[STAGE] === true;
