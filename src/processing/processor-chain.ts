import { ConfigError, ProcessorError } from '../errors.js';
import { DataPoint, type DataPointInput, type NormalizedPoint, normalizePoint } from '../model/data-point.js';
import type { AggregateInsert, DeadLetterInsert, OutboxInsert, StateWrite } from '../storage/storage.js';
import { processingScope, type RaisedAlert } from './processing-scope.js';
import { type Processor, type ProcessResult, processorName } from './processor.js';
import { isStage, type SeriesStage, type StageOutput } from './stage.js';

/** Largest processed-data object a processor may return for one reading, as JSON. */
export const MAX_PAYLOAD_BYTES = 64 * 1024;

/** Why a reading left the chain for the dead letters. @internal */
export interface ChainFailure {
  processor: string;
  /** The processor's own words (its error's message), kept with the dead letter. */
  reason: string;
  error: ProcessorError;
}

/** What the custom part of the chain made of one reading. @internal */
export interface IntakeOutcome {
  /** Readings that go on: to the built-ins in the commit, or straight to storage. */
  readings: NormalizedPoint[];
  /** Processed data, final. */
  rows: OutboxInsert[];
  alerts: RaisedAlert[];
  failure: ChainFailure | undefined;
}

/** A reading handed to the built-ins in the commit; `kept` says afterwards whether anything of it was stored. @internal */
export interface StagedReading {
  point: NormalizedPoint;
  kept: boolean;
}

/** What the built-ins made of one commit's readings, before the transaction. @internal */
export interface PreparedStages {
  rows: OutboxInsert[];
  aggregates: AggregateInsert[];
  alerts: RaisedAlert[];
  dead: DeadLetterInsert[];
  state: StateWrite[];
  /** Call once the transaction committed. */
  install(): void;
  /** Call when it failed. */
  discard(): void;
}

const isReading = (value: unknown): value is DataPoint | DataPointInput =>
  value instanceof DataPoint ||
  (typeof value === 'object' &&
    value !== null &&
    typeof (value as { sensorId?: unknown }).sensorId === 'string' &&
    typeof (value as { value?: unknown }).value === 'number');

const isThenable = (value: unknown): value is PromiseLike<ProcessResult> =>
  typeof (value as { then?: unknown } | null)?.then === 'function';

const toDataPoint = (point: NormalizedPoint): DataPoint =>
  new DataPoint({
    sensorId: point.sensorId,
    value: point.value,
    unit: point.unit ?? undefined,
    tags: point.tags === null ? undefined : (JSON.parse(point.tags) as Record<string, string>),
    timestamp: point.ts,
  });

/** The state of one reading's trip through the custom processors, resumable after an await. */
interface Trip {
  index: number;
  item: number;
  items: NormalizedPoint[];
  next: NormalizedPoint[];
  outcome: IntakeOutcome;
  scope: { open: boolean };
}

/**
 * A chain of processors, split where the built-ins begin: custom processors run at intake, one reading at a
 * time through the list (sync ones without a turn of the event loop, async ones under a deadline); the built-ins
 * run in the commit (see {@link SeriesStage}).
 * @internal
 */
export class ProcessorChain {
  readonly custom: readonly Processor[];
  readonly stages: readonly SeriesStage<unknown>[];
  readonly #timeoutMs: number;

  /** Throws `ConfigError` when a custom processor follows a built-in, or two built-ins share a name. */
  constructor(processors: readonly Processor[], options: { timeoutMs: number; localAnalytics: boolean }) {
    const firstStage = processors.findIndex(isStage);
    const custom = firstStage < 0 ? processors : processors.slice(0, firstStage);
    const stages = firstStage < 0 ? [] : processors.slice(firstStage);
    const misplaced = stages.filter((p) => !isStage(p));
    if (misplaced.length > 0) {
      throw new ConfigError([
        `Expected custom processors before the built-in ones in "processors" (built-ins run inside the commit): move ${misplaced.map(processorName).join(', ')} before ${processorName(stages[0] as Processor)}`,
      ]);
    }
    const names = stages.map(processorName);
    const repeated = names.filter((name, i) => names.indexOf(name) !== i);
    if (repeated.length > 0) {
      throw new ConfigError([
        `Expected each built-in processor to have its own name (their state is stored by name): give the ${repeated[0]} processors distinct "name" options`,
      ]);
    }
    this.custom = custom;
    this.stages = options.localAnalytics ? (stages as SeriesStage<unknown>[]) : [];
    this.#timeoutMs = options.timeoutMs;
  }

  get empty(): boolean {
    return this.custom.length === 0 && this.stages.length === 0;
  }

  /** Every processor, for the lifecycle hooks. */
  get all(): readonly Processor[] {
    return [...this.custom, ...this.stages];
  }

  /** Runs a reading through the custom processors; synchronously when every one of them answers synchronously. */
  run(point: NormalizedPoint): IntakeOutcome | Promise<IntakeOutcome> {
    const outcome: IntakeOutcome = { readings: [], rows: [], alerts: [], failure: undefined };
    if (this.custom.length === 0) {
      outcome.readings.push(point);
      return outcome;
    }
    return this.#drive({ index: 0, item: 0, items: [point], next: [], outcome, scope: { open: true } });
  }

  #drive(trip: Trip): IntakeOutcome | Promise<IntakeOutcome> {
    while (trip.index < this.custom.length) {
      const processor = this.custom[trip.index] as Processor;
      while (trip.item < trip.items.length) {
        const item = trip.items[trip.item] as NormalizedPoint;
        let result: ProcessResult | PromiseLike<ProcessResult>;
        try {
          result = processingScope.run(
            { sensorId: item.sensorId, ts: item.ts, alerts: trip.outcome.alerts, trip: trip.scope },
            () => processor.process(toDataPoint(item)),
          );
        } catch (error) {
          return this.#fail(trip, processor, error);
        }
        if (isThenable(result)) return this.#resume(trip, processor, item, result);
        try {
          this.#collect(result, item, trip);
        } catch (error) {
          return this.#fail(trip, processor, error);
        }
        trip.item++;
      }
      trip.items = trip.next;
      trip.next = [];
      trip.item = 0;
      trip.index++;
    }
    trip.scope.open = false;
    trip.outcome.readings = trip.items;
    return trip.outcome;
  }

  async #resume(
    trip: Trip,
    processor: Processor,
    item: NormalizedPoint,
    pending: PromiseLike<ProcessResult>,
  ): Promise<IntakeOutcome> {
    let timer: NodeJS.Timeout | undefined;
    const deadline = new Promise<never>((_resolve, reject) => {
      timer = setTimeout(
        () => reject(new DeadlineError(`did not finish within ${this.#timeoutMs / 1000} s (processorTimeout)`)),
        this.#timeoutMs,
      );
      timer.unref();
    });
    try {
      this.#collect(await Promise.race([pending, deadline]), item, trip);
    } catch (error) {
      return this.#fail(trip, processor, error);
    } finally {
      clearTimeout(timer);
    }
    trip.item++;
    return this.#drive(trip);
  }

  #fail(trip: Trip, processor: Processor, error: unknown): IntakeOutcome {
    const name = processorName(processor);
    const reason = error instanceof Error ? error.message : String(error);
    const timedOut = error instanceof DeadlineError;
    trip.scope.open = false;
    trip.outcome.readings = [];
    trip.outcome.rows = [];
    trip.outcome.failure = {
      processor: name,
      reason,
      error: new ProcessorError(name, `processor ${name} ${timedOut ? '' : 'failed: '}${reason}`, {
        cause: error,
        timedOut,
      }),
    };
    return trip.outcome;
  }

  // What a processor returned: readings go on to the next processor; objects are processed data of `source`.
  #collect(result: ProcessResult, source: NormalizedPoint, trip: Trip): void {
    if (result === null || result === undefined) return;
    const items: readonly unknown[] = Array.isArray(result) ? result : [result];
    for (const item of items) {
      if (isReading(item)) {
        trip.next.push(normalizePoint(item, source.ts));
        continue;
      }
      if (typeof item !== 'object' || item === null) {
        throw new TypeError(`the processor returned ${typeof item}; expected a DataPoint, an object, an array or null`);
      }
      const payload = JSON.stringify(item);
      if (payload.length > MAX_PAYLOAD_BYTES) {
        throw new RangeError(
          `the processor returned ${payload.length} bytes of JSON; at most ${MAX_PAYLOAD_BYTES} are kept`,
        );
      }
      trip.outcome.rows.push({
        kind: 'processed',
        sensorId: source.sensorId,
        ts: source.ts,
        value: null,
        unit: null,
        tags: source.tags,
        payload,
      });
    }
  }

  /**
   * Runs one commit's readings through the built-ins, in order, against drafts of their state; with `tickAt`,
   * then lets each close what the clock says is over. Synchronous: it runs inside the group commit.
   */
  prepare(staged: readonly StagedReading[], tickAt: number | undefined): PreparedStages {
    const prepared: PreparedStages = {
      rows: [],
      aggregates: [],
      alerts: [],
      dead: [],
      state: [],
      install: () => {
        for (const stage of this.stages) stage.install();
      },
      discard: () => {
        for (const stage of this.stages) stage.discard();
      },
    };
    let current: StagedReading | undefined;
    // Two buffers, swapped between stages: a commit of thousands of readings allocates none per reading.
    let input: NormalizedPoint[] = [];
    let passed: NormalizedPoint[] = [];
    const out: StageOutput = {
      pass: (point) => passed.push(point),
      alert: (alert) => prepared.alerts.push(alert),
      aggregate: (aggregate, payload) => {
        prepared.aggregates.push(aggregate);
        prepared.rows.push({
          kind: 'aggregate',
          sensorId: aggregate.sensorId,
          ts: aggregate.windowStart,
          value: null,
          unit: aggregate.unit,
          tags: aggregate.tags,
          payload,
        });
      },
      absorb: () => {
        if (current) current.kept = true;
      },
    };
    for (const entry of staged) {
      current = entry;
      input.length = 0;
      input.push(entry.point);
      let failed = false;
      for (const stage of this.stages) {
        passed.length = 0;
        for (let k = 0; k < input.length && !failed; k++) {
          try {
            stage.apply(input[k] as NormalizedPoint, out);
          } catch (error) {
            // A built-in throws only on a bug: set the reading aside rather than fail the whole commit.
            prepared.dead.push({
              ...entry.point,
              seq: null,
              reason: error instanceof Error ? error.message : String(error),
              source: stage.name,
            });
            failed = true;
          }
        }
        const swap = input;
        input = passed;
        passed = swap;
        if (failed || input.length === 0) break;
      }
      if (failed) continue;
      for (const item of input) prepared.rows.push(item);
      if (input.length > 0) entry.kept = true;
    }
    current = undefined;
    if (tickAt !== undefined) {
      for (const stage of this.stages) {
        passed = [];
        stage.tick(tickAt, out);
      }
    }
    for (const stage of this.stages) prepared.state.push(...stage.writes());
    return prepared;
  }
}

/** A processor missed its deadline. */
class DeadlineError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'DeadlineError';
  }
}
