import { ConfigError, GatewayStoppedError, ProcessorError } from '../errors.js';
import type { Logger } from '../logger.js';
import type { NormalizedPoint } from '../model/data-point.js';
import { ALERT_SEVERITIES, type Alert, type AlertQuery } from '../processing/alert.js';
import type { RaisedAlert } from '../processing/processing-scope.js';
import { DataProcessor, type Processor, processorName } from '../processing/processor.js';
import { type IntakeOutcome, ProcessorChain, type StagedReading } from '../processing/processor-chain.js';
import type { DeadLetterInsert, IngestKeyWrite, OutboxInsert, Storage, StoredAlert } from '../storage/storage.js';
import type { GroupCommit, GroupExtras } from './group-commit.js';
import type { IngestKeyClaim } from './ingest-keys.js';
import { parseTime } from './local-query.js';
import type { ResolvedOptions } from './options.js';
import type { DroppedEvent } from './status.js';

/** How often the processors' `flush` hooks run, and the built-ins close windows by the clock. */
export const PROCESSOR_FLUSH_INTERVAL_MS = 1000;

/** What the processing needs from the gateway around it. */
export interface ProcessingHost {
  storage: Storage;
  commit: GroupCommit;
  logger: Logger;
  /** The gateway's storage is open: it runs, or it is stopping and has not closed yet. */
  open(): boolean;
  /** The gateway stopped and closed its storage. */
  stopped(): boolean;
  /** Registers work still in an async processor, for `stop()` to wait for. */
  track<T>(work: Promise<T>): Promise<T>;
  /** A `QueueFullError` when `incoming` rows do not fit, after emitting `dropped`. */
  checkRoom(incoming: number): Error | undefined;
  emitAlert(alert: Alert): void;
  emitDropped(event: DroppedEvent): void;
  /** Logs, and emits `error` when someone listens. */
  reportError(error: Error): void;
}

type ProcessingOptions = Pick<
  ResolvedOptions,
  | 'processor'
  | 'processors'
  | 'processorTimeout'
  | 'localAnalytics'
  | 'alertDedupWindow'
  | 'maxStoredAlerts'
  | 'localHistory'
>;

/** Readings a settled intake kept: its rows, and its staged readings the built-ins kept (known once committed). */
function keptCount(rows: readonly OutboxInsert[], staged: readonly StagedReading[]): number {
  let count = rows.length;
  for (const entry of staged) if (entry.kept) count++;
  return count;
}

/** One reading out, nothing else: no alert, no processed data, no failure. */
const isPlain = (outcome: IntakeOutcome) =>
  outcome.readings.length === 1 && outcome.rows.length === 0 && outcome.alerts.length === 0 && !outcome.failure;

const toAlert = (stored: StoredAlert): Alert => ({
  id: stored.id,
  severity: stored.severity,
  message: stored.message,
  sensorId: stored.sensorId,
  source: stored.source,
  timestamp: new Date(stored.ts),
  count: stored.count,
  lastTimestamp: new Date(stored.lastTs),
});

/** The JSON an alert travels to the cloud as (a processed-data row of its own lane). */
const alertPayload = (alert: RaisedAlert) =>
  JSON.stringify({ alert: { severity: alert.severity, message: alert.message, source: alert.source } });

/**
 * The gateway's processing: runs readings through the chain, stores what it made of them (alerts, aggregates,
 * the built-ins' state) in the readings' own transaction, drives the processors' lifecycle hooks, and answers
 * `alerts()`.
 * @internal
 */
export class LocalProcessing {
  readonly #host: ProcessingHost;
  #options: ProcessingOptions;
  #chain: ProcessorChain;
  #timer: NodeJS.Timeout | undefined;
  #flushing: Promise<void> | undefined;

  constructor(host: ProcessingHost, options: ProcessingOptions) {
    this.#host = host;
    this.#options = options;
    this.#chain = this.#build(options);
  }

  #build(options: ProcessingOptions): ProcessorChain {
    if (options.processor && options.processors) {
      throw new ConfigError(['Give "processor" or "processors", not both']);
    }
    const list = options.processors ?? (options.processor ? [options.processor] : []);
    const chain = new ProcessorChain(list, {
      timeoutMs: options.processorTimeout * 1000,
      localAnalytics: options.localAnalytics,
    });
    if ((!chain.empty || options.localHistory.readings > 0) && !this.#host.storage.intake) {
      throw new ConfigError([
        'The "storage" option gives a Storage without intake(): processors and localHistory need it to store alerts, state and history with the readings',
      ]);
    }
    for (const processor of chain.custom) {
      DataProcessor.attach(processor, (alert) => this.#standaloneAlert(alert));
    }
    return chain;
  }

  /** No processor at all: readings go straight to storage. */
  get idle(): boolean {
    return this.#chain.empty;
  }

  /** Plain intake must go through `store()` too (to keep raw history). */
  get keepsHistory(): boolean {
    return this.#options.localHistory.readings > 0;
  }

  get chain(): ProcessorChain {
    return this.#chain;
  }

  /** New options; a new chain takes effect at once, its hooks run in the background when the gateway runs. */
  configure(options: ProcessingOptions): void {
    const previous = this.#chain;
    const chain = this.#build(options);
    this.#options = options;
    this.#chain = chain;
    if (!this.#host.open()) return;
    const added = chain.all.filter((p) => !previous.all.includes(p));
    const removed = previous.all.filter((p) => !chain.all.includes(p));
    this.#loadState(chain);
    void this.#hooks(added, 'start').catch(() => undefined);
    void this.#hooks(removed, 'stop').catch(() => undefined);
    this.#startTimer();
  }

  #loadState(chain: ProcessorChain): void {
    for (const stage of chain.stages) stage.load(this.#host.storage.processorState?.(stage.name) ?? new Map());
  }

  /** Loads the built-ins' state and runs the `start` hooks; a hook that fails makes this reject. */
  async start(): Promise<void> {
    this.#loadState(this.#chain);
    await this.#hooks(this.#chain.all, 'start', true);
    this.#startTimer();
  }

  #startTimer(): void {
    if (this.#timer || this.#chain.empty) return;
    this.#timer = setInterval(() => {
      this.#flushing ??= this.flush().finally(() => {
        this.#flushing = undefined;
      });
    }, PROCESSOR_FLUSH_INTERVAL_MS);
    this.#timer.unref();
  }

  /** Runs `flush` hooks, then lets the built-ins close what the clock says is over, and commits it. */
  async flush(): Promise<void> {
    await this.#hooks(this.#chain.custom, 'flush');
    const now = Date.now();
    if (this.#host.open() && this.#chain.stages.some((stage) => stage.due(now))) {
      await this.#host.commit.addProcessed({ rows: [], dead: [], staged: [], alerts: [], tick: true }).catch(() => {
        // reported by the commit
      });
    }
  }

  /** Flushes, then runs the `stop` hooks. */
  async stop(): Promise<void> {
    if (this.#timer) clearInterval(this.#timer);
    this.#timer = undefined;
    await this.#flushing;
    await this.flush();
    await this.#hooks(this.#chain.all, 'stop');
  }

  // Runs one hook of each processor in turn, each under the processor deadline. Failures are reported; with
  // `strict` the first one is thrown instead.
  async #hooks(processors: readonly Processor[], hook: 'start' | 'flush' | 'stop', strict = false): Promise<void> {
    const timeoutMs = this.#options.processorTimeout * 1000;
    for (const processor of processors) {
      const run = processor[hook];
      if (typeof run !== 'function') continue;
      let timer: NodeJS.Timeout | undefined;
      try {
        await Promise.race([
          run.call(processor),
          new Promise((_resolve, reject) => {
            timer = setTimeout(
              () => reject(new Error(`did not finish within ${timeoutMs / 1000} s (processorTimeout)`)),
              timeoutMs,
            );
            timer.unref();
          }),
        ]);
      } catch (error) {
        const name = processorName(processor);
        const failure = new ProcessorError(
          name,
          `the ${hook} hook of processor ${name} failed: ${(error as Error)?.message ?? String(error)}`,
          { cause: error },
        );
        if (strict) throw failure;
        this.#host.reportError(failure);
      } finally {
        clearTimeout(timer);
      }
    }
  }

  /**
   * Runs readings through the chain and stores the outcome in one transaction. Resolves with how many readings
   * were kept (stored, or counted into a window). When every custom processor answers synchronously, what the
   * chain made is in the group commit before this returns, as plain intake is; otherwise the work is tracked so
   * that `stop()` can wait for it. `key`, the ingest request's idempotency key, is committed with what the readings
   * gave, even when that is nothing.
   */
  process(points: readonly NormalizedPoint[], method: string, key?: IngestKeyClaim): Promise<number> {
    const chain = this.#chain;
    let pending = false;
    const outcomes = points.map((point) => {
      const outcome = chain.run(point);
      if (outcome instanceof Promise) pending = true;
      return outcome;
    });
    if (!pending) return this.#settle(points, outcomes as IntakeOutcome[], method, chain, key);
    return this.#host.track(Promise.all(outcomes).then((done) => this.#settle(points, done, method, chain, key)));
  }

  /** `process()` for one reading, with a shorter path for the usual case: a chain of built-ins, nothing failing. */
  processOne(point: NormalizedPoint, method: string, key?: IngestKeyClaim): Promise<boolean> {
    const chain = this.#chain;
    // Built-ins only: the reading goes to them as it came, with no outcome to build (four objects a reading fewer).
    if (chain.custom.length === 0 && chain.stages.length > 0) return this.#stageOne(point, key);
    const outcome = chain.run(point);
    if (!(outcome instanceof Promise) && chain.stages.length > 0 && isPlain(outcome)) {
      return this.#stageOne(outcome.readings[0] as NormalizedPoint, key);
    }
    const settled =
      outcome instanceof Promise
        ? this.#host.track(outcome.then((done) => this.#settle([point], [done], method, chain, key)))
        : this.#settle([point], [outcome], method, chain, key);
    return settled.then((kept) => kept > 0);
  }

  // One reading for the built-ins, into the tick's group commit, where they see it.
  #stageOne(point: NormalizedPoint, key: IngestKeyClaim | undefined): Promise<boolean> {
    const full = this.#host.checkRoom(1);
    if (full) return Promise.reject(full);
    const entry: StagedReading = { point, kept: false };
    const pending = key && { claim: key, accepted: 1, stored: () => (entry.kept ? 1 : 0) };
    return this.#host.commit.addStaged(entry, pending).then(() => entry.kept);
  }

  #settle(
    points: readonly NormalizedPoint[],
    outcomes: readonly IntakeOutcome[],
    method: string,
    chain: ProcessorChain,
    key: IngestKeyClaim | undefined,
  ): Promise<number> {
    // stop() waited for these readings up to its deadline and closed the database: nothing of them was stored.
    if (this.#host.stopped()) return Promise.reject(new GatewayStoppedError(method));
    const rows: OutboxInsert[] = [];
    const staged: StagedReading[] = [];
    const alerts: RaisedAlert[] = [];
    const dead: DeadLetterInsert[] = [];
    let firstFailure: ProcessorError | undefined;
    const direct = chain.stages.length === 0;
    for (let i = 0; i < outcomes.length; i++) {
      const outcome = outcomes[i] as IntakeOutcome;
      for (const alert of outcome.alerts) alerts.push(alert);
      if (outcome.failure) {
        const point = points[i] as NormalizedPoint;
        dead.push({ ...point, seq: null, reason: outcome.failure.reason, source: outcome.failure.processor });
        firstFailure ??= outcome.failure.error;
        continue;
      }
      for (const row of outcome.rows) rows.push(row);
      for (const reading of outcome.readings) {
        if (direct) rows.push(reading);
        else staged.push({ point: reading, kept: false });
      }
    }
    // The failure is news at once; the drop is reported once its dead letters are committed, as every drop is.
    const reportDrop = firstFailure
      ? () =>
          this.#host.emitDropped({
            reason: 'processor-failed',
            count: dead.length,
            message: `processor ${firstFailure.processor} failed on ${dead.length} reading(s): ${dead[0]?.reason}`,
          })
      : undefined;
    if (firstFailure) this.#host.reportError(firstFailure);
    const commit = this.#host.commit;
    const incoming = rows.length + staged.length;
    // Read once committed: the built-ins decide in the commit whether a staged reading is kept.
    const pending = key && { claim: key, accepted: points.length, stored: () => keptCount(rows, staged) };
    if (incoming === 0 && alerts.length === 0 && dead.length === 0 && !pending) return Promise.resolve(0);
    const full = incoming > 0 ? this.#host.checkRoom(incoming) : undefined;
    if (full) {
      // Alerts and dead letters are kept even when the readings do not fit.
      if (alerts.length === 0 && dead.length === 0) return Promise.reject(full);
      return commit.addProcessed({ rows: [], dead, staged: [], alerts }).then(() => {
        reportDrop?.();
        return Promise.reject(full);
      });
    }
    return commit.addProcessed({ rows, dead, staged, alerts, key: pending }).then(() => {
      reportDrop?.();
      return keptCount(rows, staged);
    });
  }

  /**
   * Stores a group commit that needs more than `append()`: runs the built-ins on its readings, then writes rows,
   * dead letters, alerts, aggregates, state and `ingestKeys` (made once the built-ins ran, which decide what a
   * request stored) in one transaction, and emits the new alerts once it committed. Returns the number of outbox
   * rows it added.
   */
  store(
    rows: OutboxInsert[],
    dead: DeadLetterInsert[],
    extras: GroupExtras | undefined,
    ingestKeys?: () => IngestKeyWrite,
  ): number {
    const storage = this.#host.storage;
    const stages =
      this.#chain.stages.length > 0 && extras
        ? this.#chain.prepare(extras.staged, extras.tick ? Date.now() : undefined)
        : undefined;
    const alerts = [...(extras?.alerts ?? []), ...(stages?.alerts ?? [])];
    const allRows = stages ? [...rows, ...stages.rows] : rows;
    // Checked in the constructor: a gateway that gets here has a storage with intake().
    const intake = (storage.intake as NonNullable<Storage['intake']>).bind(storage);
    let raised: StoredAlert[];
    let added: number;
    try {
      const before = storage.pendingCount();
      raised = intake({
        rows: allRows,
        deadLetters: stages ? [...dead, ...stages.dead] : dead,
        alerts: alerts.map((alert) => ({ ...alert, payload: alertPayload(alert) })),
        dedupWindowMs: this.#options.alertDedupWindow * 1000,
        maxAlerts: this.#options.maxStoredAlerts,
        aggregates: stages?.aggregates ?? [],
        maxAggregates: this.#options.localHistory.aggregates,
        maxHistory: this.#options.localHistory.readings,
        state: stages?.state ?? [],
        ingestKeys: ingestKeys?.(),
      }).raised;
      added = storage.pendingCount() - before;
    } catch (error) {
      stages?.discard();
      throw error;
    }
    stages?.install();
    for (const alert of raised) this.#host.emitAlert(toAlert(alert));
    return added;
  }

  // An alert raised outside process(): stored on its own (still in the next group commit).
  async #standaloneAlert(alert: RaisedAlert): Promise<void> {
    if (!this.#host.open()) {
      this.#host.logger.warn({ alert }, 'an alert was raised while the gateway was not running; it is not stored');
      return;
    }
    await this.#host.commit.addProcessed({ rows: [], dead: [], staged: [], alerts: [alert] });
  }

  /** Stored alerts, newest first. */
  alerts(query: AlertQuery = {}): Alert[] {
    const storage = this.#host.storage;
    if (!storage.alerts) return [];
    const limit = query.limit ?? 100;
    if (!Number.isInteger(limit) || limit < 1) {
      throw new ConfigError([`Expected the "limit" of alerts() to be a positive integer, got ${String(limit)}`]);
    }
    let severities: readonly string[] | undefined;
    if (query.severity !== undefined) {
      const from = ALERT_SEVERITIES.indexOf(query.severity);
      if (from < 0) {
        throw new ConfigError([
          `Expected the "severity" of alerts() to be info, warning or critical, got ${String(query.severity)}`,
        ]);
      }
      severities = ALERT_SEVERITIES.slice(from);
    }
    return storage
      .alerts({
        limit,
        since: query.since === undefined ? undefined : parseTime(query.since, 'since'),
        until: query.until === undefined ? undefined : parseTime(query.until, 'until'),
        severities,
        sensorId: query.sensorId,
        source: query.source,
      })
      .map(toAlert);
  }
}
