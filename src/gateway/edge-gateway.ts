import { EventEmitter } from 'eventemitter3';
import {
  ConfigError,
  GatewayStoppedError,
  isQueueFullError,
  NotStartedError,
  QueueFullError,
  StorageError,
  ValidationError,
  type ValidationIssue,
} from '../errors.js';
import { type Logger, silentLogger } from '../logger.js';
import {
  checkPoint,
  DataPoint,
  type DataPointInput,
  type NormalizedPoint,
  normalizePoint,
  toDataPoint,
} from '../model/data-point.js';
import { hlcSchema } from '../model/records-wire.js';
import { DataProcessor, type Processor, type ProcessResult } from '../processing/processor.js';
import type { OutboxRemoval, RetentionStorage } from '../storage/retention.js';
import { RECORDS_META } from '../storage/sqlite-records.js';
import { SqliteStorage } from '../storage/sqlite-storage.js';
import type { DeadLetter, DeadLetterInsert, OutboxInsert, Storage } from '../storage/storage.js';
import { type ConflictResolver, type ConflictStrategy, lastWriteWins, resolverFor } from '../sync/conflict-resolver.js';
import { HybridClock } from '../sync/hlc.js';
import { RecordsSync } from '../sync/records-sync.js';
import { type SyncListener, SyncManager, type SyncSettings } from '../sync/sync-manager.js';
import type { SyncResult } from '../sync/sync-result.js';
import { HttpTransport } from '../transport/http-transport.js';
import type { Transport } from '../transport/transport.js';
import { GroupCommit } from './group-commit.js';
import {
  compressionSetting,
  type EdgeGatewayOptions,
  normalizeOptions,
  type ResolvedOptions,
  type RetentionOptions,
  resolveOptions,
} from './options.js';
import { Records } from './records.js';
import { type CleanupReport, RetentionManager } from './retention-manager.js';
import type { DropCounts, DroppedEvent, GatewayEvents, GatewayStatus, HealthStatus } from './status.js';

/** Largest processed-data object a processor may return for one reading, as JSON. */
const MAX_PAYLOAD_BYTES = 64 * 1024;
/** Options that name the local store; they cannot change once it is open. */
const FIXED_AFTER_START = ['localDb', 'storage', 'durability', 'clock'] as const;
/** Pause between attempts to open a database another gateway holds, within `dbTimeout`. */
const LOCK_RETRY_MS = 100;

/** The retention in force, as {@link EdgeGateway.retention} shows it: every budget under its retention name. */
export interface RetentionView {
  maxDays: number | undefined;
  /** `maxOfflineQueueSize`. */
  maxRecords: number;
  /** `maxDatabaseSize`. */
  maxBytes: number | undefined;
  cleanupStrategy: ResolvedOptions['retention']['cleanupStrategy'];
  cleanupInterval: number;
  downsampleWindow: number;
}

const noDrops = (): DropCounts => ({
  'queue-full': 0,
  'rejected-by-cloud': 0,
  'processor-failed': 0,
  'drop-oldest': 0,
  retention: 0,
  downsampled: 0,
});

type Lifecycle = 'created' | 'starting' | 'running' | 'stopping' | 'stopped';

const emptyResult = (remaining: number): SyncResult => ({
  sent: 0,
  acknowledged: 0,
  duplicates: 0,
  failed: 0,
  deadLettered: 0,
  remaining,
  durationMs: 0,
});

/**
 * The gateway: takes readings, stores each durably before saying so, runs them through the processor, and
 * forwards them to the cloud in batches, exactly once in effect, whenever the link allows.
 *
 * @example
 * ```ts
 * const gateway = new EdgeGateway({ deviceId: 'device-001', cloudUrl: 'https://api.example.com/api/v1', apiKey: 'k' });
 * await gateway.start();
 * await gateway.sendData(new DataPoint({ sensorId: 'temp-01', value: 23.5, unit: 'celsius' }));
 * await gateway.stop();
 * ```
 */
export class EdgeGateway extends EventEmitter<GatewayEvents> {
  #input: EdgeGatewayOptions;
  #options: ResolvedOptions;
  readonly #storage: Storage;
  readonly #logger: Logger;
  readonly #commit: GroupCommit;
  #transport: Transport | undefined;
  #sync: SyncManager | undefined;
  #resolver: ConflictResolver;
  #strategy: ConflictStrategy = 'last-write-wins';
  #lifecycle: Lifecycle = 'created';
  #starting: Promise<void> | undefined;
  #stopping: Promise<void> | undefined;
  /** `performance.now()` at start: uptime and stall detection must not move with the wall clock. */
  #startedAt = 0;
  /** When the queue last went from empty to not empty (monotonic ms): a stall is counted from there at the earliest. */
  #pendingSince = 0;
  /** The last write the database refused; `side` says whose, and so which success clears it. */
  #storageFailure: { message: string; at: Date; full: boolean; side: 'intake' | 'sync' } | undefined;
  /** sendData/sendBatch calls still in the processor. */
  readonly #processing = new Set<Promise<unknown>>();
  /** Every `dropped` event since start, by reason. */
  readonly #drops = noDrops();
  /** Runs retention on the storage; made at start when the storage supports it. */
  #retention: RetentionManager | undefined;
  #cpu = { usage: process.cpuUsage(), at: performance.now() };
  /** Stamps record writes; made at start, from the last stamp and clock offset kept in the database. */
  #clock: HybridClock;
  #recordsSync: RecordsSync | undefined;
  /**
   * Shared records, kept in step with the cloud both ways: `put`, `get`, `delete`, `list`, `watch`. Reads work
   * offline; writes are durable at once. Available after `start()`.
   */
  readonly records: Records;

  constructor(options: EdgeGatewayOptions) {
    super();
    this.#options = resolveOptions(options);
    this.#input = normalizeOptions({ ...options });
    this.#logger = this.#options.logger ?? silentLogger;
    this.#storage =
      this.#options.storage ??
      new SqliteStorage({
        path: this.#options.localDb,
        synchronous: this.#options.durability,
        maxSizeBytes: this.#options.maxDatabaseSize,
        busyTimeoutMs: Math.round(this.#options.dbTimeout * 1000),
      });
    this.#checkRetentionSupport(this.#options);
    this.#resolver = this.#options.conflictResolver ?? lastWriteWins;
    if (this.#options.conflictResolver) this.#strategy = 'custom';
    this.#commit = new GroupCommit((rows, dead) => this.#commitRows(rows, dead));
    this.#clock = new HybridClock({ now: this.#options.clock ?? Date.now });
    this.records = new Records({
      storage: (method) => this.#recordStorage(method),
      clock: () => this.#clock,
      replicaId: () => this.#storage.replicaId,
      written: () => this.#sync?.noteRecordWrite(),
      watcherFailed: (error) => this.#backgroundError(error as Error),
    });
    this.#attachProcessor();
  }

  #recordStorage(method: string) {
    const refused = this.#inputError(method);
    if (refused) throw refused;
    const records = this.#storage.records;
    if (!records) throw new ConfigError([`The storage given to this gateway keeps no shared records (${method})`]);
    return records;
  }

  // The clock carries on from the last stamp written and the last offset to the cloud measured, so that stamps
  // never go back across a restart, and a device whose wall clock is wrong stamps in the cloud's time offline too.
  #restoreClock(): void {
    if (!this.#storage.records) return;
    const offset = Number(this.#storage.getMeta(RECORDS_META.clockOffset) ?? '0');
    const last = this.#storage.getMeta(RECORDS_META.hlc);
    this.#clock = new HybridClock({
      now: this.#options.clock ?? Date.now,
      // A damaged stamp is not worth refusing to start over: the clock starts from the wall clock instead.
      last: last !== undefined && hlcSchema.safeParse(last).success ? last : undefined,
      offsetMs: Number.isFinite(offset) ? offset : 0,
      maxDriftMs: this.#options.maxClockSkew * 1000,
    });
  }

  /** The hybrid logical clock that stamps record writes. */
  get clock(): HybridClock {
    return this.#clock;
  }

  // Gives a DataProcessor its alert sink: in the constructor, and again when configure() sets a new processor.
  #attachProcessor(): void {
    if (!this.#options.processor) return;
    DataProcessor.attach(this.#options.processor, (alert) => this.#guarded('alert', () => this.emit('alert', alert)));
  }

  /** The options in force, after defaults. */
  get options(): Readonly<Omit<ResolvedOptions, 'apiKey'>> {
    const { apiKey: _hidden, ...visible } = this.#options;
    return visible;
  }

  /** The conflict resolver in force for shared records. */
  get conflictResolver(): ConflictResolver {
    return this.#resolver;
  }

  /** The conflict strategy in force. */
  get conflictStrategy(): ConflictStrategy {
    return this.#strategy;
  }

  /**
   * Opens the local database (creating or migrating it), resumes any batch left unacknowledged by a previous run,
   * and starts the sync loop. Safe to call twice; a second call waits for the first.
   */
  start(): Promise<void> {
    if (this.#lifecycle === 'stopping' || this.#lifecycle === 'stopped') {
      return Promise.reject(new GatewayStoppedError('start'));
    }
    this.#starting ??= this.#start();
    return this.#starting;
  }

  async #start(): Promise<void> {
    this.#lifecycle = 'starting';
    try {
      await this.#openStorage();
    } catch (error) {
      this.#lifecycle = 'created';
      this.#starting = undefined;
      throw error;
    }
    this.#startedAt = performance.now();
    this.#restoreClock();
    this.#lifecycle = 'running';
    this.#reportQuarantine();
    this.#startRetention();
    this.#startSync();
    this.#logger.info(
      { deviceId: this.#options.deviceId, replicaId: this.#storage.replicaId, pending: this.#storage.pendingCount() },
      'edge gateway started',
    );
  }

  // Another gateway holding the database (a restart overlapping the old process's stop, say) gets `dbTimeout` to let
  // go: tried every 100 ms, without blocking the event loop, then the storage's error, naming that process.
  async #openStorage(): Promise<void> {
    const deadline = performance.now() + this.#options.dbTimeout * 1000;
    for (;;) {
      try {
        this.#storage.open();
        return;
      } catch (error) {
        const wait = deadline - performance.now();
        if (!(error instanceof StorageError && error.sqliteCode === 'SQLITE_BUSY') || wait <= 0) throw error;
        await new Promise((resolve) => setTimeout(resolve, Math.min(LOCK_RETRY_MS, wait)));
      }
    }
  }

  // Strategies other than reject-new need a storage that can remove rows (SqliteStorage has a `retention` getter,
  // valid once open; a custom storage declares one or does without).
  #checkRetentionSupport(options: ResolvedOptions): void {
    if (options.retention.cleanupStrategy === 'reject-new' || 'retention' in this.#storage) return;
    throw new ConfigError([
      `The "retention.cleanupStrategy" option ${JSON.stringify(options.retention.cleanupStrategy)} needs a storage with retention; the storage given has none (use "reject-new")`,
    ]);
  }

  #retentionStorage(): RetentionStorage | undefined {
    return this.#lifecycle === 'running' ? this.#storage.retention : undefined;
  }

  #startRetention(): void {
    const storage = this.#retentionStorage();
    if (!storage) return;
    const manager = new RetentionManager({
      storage,
      settings: () => ({
        maxDays: this.#options.retention.maxDays,
        strategy: this.#options.retention.cleanupStrategy,
        intervalMs: this.#options.retention.cleanupInterval * 1000,
      }),
      now: () => (this.#options.clock ?? Date.now)(),
      idle: () => this.#storage.pendingCount() <= this.#options.batchSize,
      events: {
        removed: (removal) => this.#drop(this.#removalEvent(removal)),
        pruned: (pruned) => this.#guarded('pruned', () => this.emit('pruned', pruned)),
        failed: (error) => this.#backgroundError(error),
      },
      logger: this.#logger,
    });
    this.#retention = manager;
    storage.setListener(manager);
    this.#applyRetentionPolicy(storage);
    manager.start();
  }

  #applyRetentionPolicy(storage: RetentionStorage): void {
    storage.setPolicy({
      strategy: this.#options.retention.cleanupStrategy,
      maxRows: this.#options.maxOfflineQueueSize,
      windowMs: this.#options.retention.downsampleWindow * 1000,
    });
  }

  #removalEvent(removal: OutboxRemoval): DroppedEvent {
    const { reason, budget, count, aggregates, firstSeq, lastSeq } = removal;
    const seqs = `seq ${firstSeq}-${lastSeq}`;
    const within =
      budget === 'maxRecords'
        ? `maxRecords ${this.#options.maxOfflineQueueSize}`
        : budget === 'maxBytes'
          ? `maxBytes ${this.#options.maxDatabaseSize ?? '(none)'}`
          : `maxDays ${this.#options.retention.maxDays}`;
    const message =
      reason === 'downsampled'
        ? `replaced ${count} queued raw reading(s) (${seqs}) by ${aggregates} aggregate(s) of ${this.#options.retention.downsampleWindow} s windows to stay within ${within}`
        : reason === 'retention'
          ? `dropped ${count} queued reading(s) (${seqs}) older than ${within}`
          : `dropped the ${count} oldest queued reading(s) (${seqs}) to stay within ${within}`;
    return { reason, count, message, budget, aggregates, firstSeq, lastSeq };
  }

  // Every dropped event goes through here: counted for status, emitted, never thrown into the caller.
  #drop(event: DroppedEvent): void {
    this.#drops[event.reason] += event.count;
    this.#logger.debug({ ...event }, 'readings dropped');
    this.#guarded('dropped', () => this.emit('dropped', event));
  }

  // A damaged database set aside at this start (or at an earlier one, while its file is still there): the gateway
  // runs on a new one, and says so in the log, as an 'error' event, in getStatus() and in healthCheck().
  #reportQuarantine(): void {
    const report = this.#storage.quarantined;
    if (!report) return;
    const error = new StorageError(
      `The local database was damaged (${report.reason}); it was moved to ${report.path} at ${report.at.toISOString()} and a new one was started. Readings it held that the cloud had not acknowledged are only in that file.`,
    );
    this.#logger.error({ err: error, quarantined: report.path, reason: report.reason }, error.message);
    if (this.listenerCount('error') > 0) this.#guarded('error', () => this.emit('error', error));
  }

  #startSync(): void {
    const transport = this.#makeTransport();
    if (!transport) return;
    this.#transport = transport;
    this.#recordsSync = this.#makeRecordsSync();
    this.#sync = new SyncManager(
      this.#storage,
      transport,
      this.#syncSettings(),
      this.#syncListener(),
      this.#logger,
      this.#recordsSync,
    );
    this.#sync.start();
  }

  #makeRecordsSync(): RecordsSync | undefined {
    const storage = this.#storage.records;
    if (!storage) return undefined;
    return new RecordsSync({
      storage,
      deviceId: this.#options.deviceId,
      replicaId: () => this.#storage.replicaId,
      clock: () => this.#clock, // remade at start, from what the database remembers
      resolver: () => ({ resolver: this.#resolver, strategy: this.#strategy }),
      resolverTimeoutMs: this.#options.conflictResolverTimeout * 1000,
      maxClockSkewMs: this.#options.maxClockSkew * 1000,
      logger: this.#logger,
      saveClockOffset: (offset) => this.#storage.setMeta(RECORDS_META.clockOffset, String(offset)),
      listener: {
        conflict: (event) => {
          this.#logger.info(
            { collection: event.collection, key: event.key, strategy: event.strategy, winner: event.winner },
            'record conflict resolved',
          );
          this.#guarded('conflict', () => this.emit('conflict', event));
        },
        changed: (records) => {
          for (const record of records) this.#guarded('record-change', () => this.emit('record-change', record));
          this.records.notify(records, 'cloud');
        },
        rejected: (count, message) => {
          this.#logger.warn(
            { count, message },
            'the cloud refused a record edit; it is kept in the record dead letters',
          );
        },
        error: (event) => this.#guarded('sync-error', () => this.emit('sync-error', event)),
      },
    });
  }

  #makeTransport(): Transport | undefined {
    const { transport, cloudUrl, apiKey, connectionTimeout } = this.#options;
    if (transport) return transport;
    if (!cloudUrl) return undefined;
    return new HttpTransport({ baseUrl: cloudUrl, apiKey, timeoutMs: connectionTimeout * 1000 });
  }

  #syncSettings(): SyncSettings {
    const o = this.#options;
    return {
      deviceId: o.deviceId,
      strategy: o.syncStrategy,
      intervalMs: o.syncInterval * 1000,
      batchSize: o.batchSize,
      compression: compressionSetting(o.compression),
      wireFormat: o.wireFormat,
      maxRetryAttempts: o.maxRetryAttempts,
      initialBackoffMs: o.initialBackoff * 1000,
      maxBackoffMs: o.maxBackoff * 1000,
    };
  }

  // A host's listener that throws must not stop the sync loop, which calls these from inside its cycle.
  #guarded(what: string, emit: () => void): void {
    try {
      emit();
    } catch (error) {
      this.#logger.error({ err: error, event: what }, `a '${what}' listener threw; the gateway carries on`);
    }
  }

  #syncListener(): SyncListener {
    return {
      onlineChanged: (online, reason) => {
        this.#logger.info({ online, reason }, online ? 'cloud reachable' : 'cloud unreachable');
        this.#guarded(online ? 'online' : 'offline', () =>
          online ? this.emit('online') : this.emit('offline', { reason }),
        );
      },
      synced: (result) => {
        // Acknowledged batches freed room: a database that was full takes readings again.
        // A refused sync-side write is over once a batch is acknowledged (its writes went through).
        const failure = this.#storageFailure;
        if (result.acknowledged > 0 && (failure?.full || failure?.side === 'sync')) this.#storageFailure = undefined;
        if (result.remaining <= this.#options.batchSize) this.#retention?.noteDrained();
        this.#guarded('sync', () => this.emit('sync', result));
      },
      syncError: (event) => this.#guarded('sync-error', () => this.emit('sync-error', event)),
      deadLettered: (count, message) => {
        this.#logger.warn({ count, message }, 'the cloud refused readings; they are kept in the dead letters');
        this.#drop({ reason: 'rejected-by-cloud', count, message });
      },
      failed: (error) => this.#backgroundError(error, 'sync'),
    };
  }

  #backgroundError(error: Error, side: 'intake' | 'sync' = 'intake'): void {
    this.#logger.error({ err: error }, error.message);
    if (error instanceof StorageError) {
      const full = error.sqliteCode === 'SQLITE_FULL';
      this.#storageFailure = { message: error.message, at: new Date(), full, side };
    }
    // An 'error' event without a listener would throw into the host; background failures never do.
    if (this.listenerCount('error') > 0) this.#guarded('error', () => this.emit('error', error));
  }

  /**
   * Stops taking input, commits what was accepted, spends up to `stopTimeout` seconds sending the queue, then
   * closes the transport and the database. What is not sent stays queued for the next start. Safe to call twice.
   */
  stop(): Promise<void> {
    if (!this.#stopping) {
      const wasRunning = this.#lifecycle === 'running' || this.#lifecycle === 'starting';
      // At once, not after an await: input that arrives once stop() was called is refused, not half-taken.
      this.#lifecycle = 'stopping';
      this.#stopping = this.#stop(wasRunning);
    }
    return this.#stopping;
  }

  async #stop(wasRunning: boolean): Promise<void> {
    await this.#starting?.catch(() => undefined);
    if (wasRunning) {
      const deadline = AbortSignal.timeout(this.#options.stopTimeout * 1000);
      // Readings handed over before stop() and still in the processor were accepted: let them land, within the
      // deadline, rather than fail on a closed database.
      if (this.#processing.size > 0 && !deadline.aborted) {
        const expired = new Promise((resolve) => deadline.addEventListener('abort', resolve, { once: true }));
        await Promise.race([Promise.allSettled(this.#processing), expired]);
      }
      this.#commit.flush();
      const sync = this.#sync;
      const pending = this.#storage.pendingCount() + (this.#storage.records?.mutationCount() ?? 0);
      if (sync && this.#options.stopTimeout > 0 && pending > 0 && !deadline.aborted) {
        await sync.syncNow(deadline).catch(() => undefined);
      }
      await sync?.stop();
      await this.#retention?.stop();
      await this.#transport?.close().catch((error: unknown) => this.#backgroundError(error as Error));
      this.#commit.flush(); // what a processor finished meanwhile
      this.#storage.close();
    }
    this.#lifecycle = 'stopped';
    this.#logger.info({ deviceId: this.#options.deviceId }, 'edge gateway stopped');
  }

  #inputError(method: string): Error | undefined {
    if (this.#lifecycle === 'running') return undefined;
    return this.#lifecycle === 'stopping' || this.#lifecycle === 'stopped'
      ? new GatewayStoppedError(method)
      : new NotStartedError(method);
  }

  #commitRows(rows: OutboxInsert[], dead: DeadLetterInsert[]): void {
    const wasEmpty = this.#storage.pendingCount() === 0;
    try {
      this.#storage.append(rows, dead);
    } catch (error) {
      // Rows sealed into a batch since #checkRoom took all the room drop-oldest could make: refused, as at intake.
      if (isQueueFullError(error)) this.#drop({ reason: 'queue-full', count: rows.length, message: error.message });
      else this.#backgroundError(error as Error);
      throw error;
    }
    // An intake write went through: an intake failure is over; a sync-side one is not, until a batch is acknowledged.
    if (this.#storageFailure?.side === 'intake') this.#storageFailure = undefined;
    if (rows.length > 0 && wasEmpty) this.#pendingSince = performance.now();
    if (rows.length > 0) this.#sync?.noteIntake();
  }

  #checkRoom(incoming: number): QueueFullError | undefined {
    const limit = this.#options.maxOfflineQueueSize;
    if (this.#storage.pendingCount() + this.#commit.size + incoming <= limit) return undefined;
    // drop-oldest and downsample-oldest make room at the commit, from every row not sealed into a batch.
    const retention = this.#options.retention.cleanupStrategy === 'reject-new' ? undefined : this.#retentionStorage();
    if (retention && retention.sealedCount() + this.#commit.size + incoming <= limit) return undefined;
    const error = new QueueFullError(limit, incoming);
    this.#drop({ reason: 'queue-full', count: incoming, message: error.message });
    return error;
  }

  /**
   * Stores one reading durably and queues it for the cloud. Resolves `true` once it is committed to disk, or
   * `false` when the processor dropped it (or failed on it: then it is kept in the dead letters). Rejects with
   * `ValidationError` (nothing stored), `QueueFullError`, or `GatewayStoppedError`.
   */
  sendData(point: DataPoint | DataPointInput): Promise<boolean> {
    const refused = this.#inputError('sendData');
    if (refused) return Promise.reject(refused);
    let normalized: NormalizedPoint;
    try {
      normalized = normalizePoint(point);
    } catch (error) {
      return Promise.reject(error);
    }
    if (this.#options.processor) return this.#tracked(this.#process([normalized], 'sendData')).then((n) => n > 0);
    const full = this.#checkRoom(1);
    if (full) return Promise.reject(full);
    return this.#commit.add(normalized);
  }

  /**
   * Stores many readings in one transaction: all of them, or, when any is invalid, none (the
   * `ValidationError` lists every problem with its index). Resolves with how many readings were stored.
   */
  sendBatch(points: readonly (DataPoint | DataPointInput)[]): Promise<number> {
    const refused = this.#inputError('sendBatch');
    if (refused) return Promise.reject(refused);
    if (!Array.isArray(points)) {
      return Promise.reject(new ValidationError([{ field: '(batch)', message: 'expected an array of readings' }]));
    }
    const issues: ValidationIssue[] = [];
    const normalized: NormalizedPoint[] = [];
    const now = Date.now();
    for (let i = 0; i < points.length; i++) {
      const point = checkPoint(points[i], issues, i, now);
      if (point) normalized.push(point);
    }
    if (issues.length > 0) return Promise.reject(new ValidationError(issues));
    if (normalized.length === 0) return Promise.resolve(0);
    if (this.#options.processor) return this.#tracked(this.#process(normalized, 'sendBatch'));
    const full = this.#checkRoom(normalized.length);
    if (full) return Promise.reject(full);
    return this.#commit.addAll(normalized).then(() => normalized.length);
  }

  #tracked<T>(work: Promise<T>): Promise<T> {
    this.#processing.add(work);
    const done = () => this.#processing.delete(work);
    work.then(done, done);
    return work;
  }

  async #process(points: readonly NormalizedPoint[], method: string): Promise<number> {
    const processor = this.#options.processor as Processor;
    const rows: OutboxInsert[] = [];
    const failures: DeadLetterInsert[] = [];
    await Promise.all(
      points.map(async (point) => {
        try {
          const result = await DataProcessor.run(processor, toDataPoint(point));
          for (const row of rowsFromResult(result, point)) rows.push(row);
        } catch (error) {
          failures.push({
            ...point,
            seq: null,
            reason: (error as Error).message ?? String(error),
            source: processorName(processor),
          });
        }
      }),
    );
    // stop() waited for this reading up to its deadline and closed the database: nothing of it was stored.
    if (this.#lifecycle === 'stopped') throw new GatewayStoppedError(method);
    let kept: Promise<true> | undefined;
    if (failures.length > 0) {
      const message = `processor ${processorName(processor)} failed on ${failures.length} reading(s): ${failures[0]?.reason}`;
      this.#drop({ reason: 'processor-failed', count: failures.length, message });
      this.#backgroundError(new Error(message));
      for (const dead of failures) kept = this.#commit.addDeadLetter(dead);
      kept?.catch(() => undefined); // awaited below when it is all there is; else shared with the rows' commit
    }
    if (rows.length === 0) {
      await kept;
      return 0;
    }
    const full = this.#checkRoom(rows.length);
    if (full) throw full;
    await this.#commit.addAll(rows);
    return rows.length;
  }

  /**
   * Syncs now, whatever the schedule or backoff says, after committing what is waiting. Resolves with what the
   * cycle did; failures to reach or satisfy the cloud are in the result and the `sync-error` event, not thrown.
   * It rejects only when the local database fails (`StorageError`).
   */
  async forceSync(): Promise<SyncResult> {
    const refused = this.#inputError('forceSync');
    if (refused) throw refused;
    this.#commit.flush();
    if (!this.#sync) return emptyResult(this.#storage.pendingCount());
    return this.#sync.syncNow();
  }

  /** A snapshot of the gateway's state. */
  getStatus(): GatewayStatus {
    const sync = this.#sync?.state;
    const open = this.#lifecycle === 'running';
    return {
      deviceId: this.#options.deviceId,
      replicaId: open ? this.#storage.replicaId : '',
      isOnline: sync?.isOnline ?? false,
      pendingSyncCount: open ? this.#storage.pendingCount() + this.#commit.size : 0,
      lastSyncTime: sync?.lastSyncTime ?? null,
      failedSyncCount: sync?.failedSyncCount ?? 0,
      deadLetterCount: open ? this.#storage.deadLetterCount() : 0,
      pendingRecordCount: open ? (this.#storage.records?.mutationCount() ?? 0) : 0,
      lastError: sync?.lastError ?? null,
      authRefused: sync?.authRefused ?? false,
      clockSkewMs: sync?.clockSkewMs ?? null,
      nextSyncAt: sync?.nextSyncAt ?? null,
      syncStrategy: this.#options.syncStrategy,
      running: open,
      quarantined: open ? (this.#storage.quarantined ?? null) : null,
      dropped: { ...this.#drops },
      retention: this.#retentionStatus(),
    };
  }

  #retentionStatus(): GatewayStatus['retention'] {
    const totals = this.#retention?.totals;
    return {
      cleanupStrategy: this.#options.retention.cleanupStrategy,
      pruned: totals?.pruned ?? {},
      aggregates: totals?.aggregates ?? 0,
      reclaimedBytes: totals?.reclaimedBytes ?? 0,
      cleanups: totals?.cleanups ?? 0,
      lastCleanupAt: totals?.lastCleanupAt ?? null,
    };
  }

  /**
   * Whether the gateway is doing its job, with reasons when it is not: `unhealthy` when it cannot store or
   * forward at all (stopped, local database failing or full, API key refused), `degraded` when it works with a
   * problem (cloud unreachable with readings queued, online but nothing acknowledged for a while, queue or
   * database nearly full, a damaged database set aside at start).
   */
  healthCheck(): HealthStatus {
    const status = this.getStatus();
    const reasons: string[] = [];
    let level: HealthStatus['status'] = 'healthy';
    const degrade = (reason: string) => {
      reasons.push(reason);
      if (level === 'healthy') level = 'degraded';
    };
    const fail = (reason: string) => {
      reasons.push(reason);
      level = 'unhealthy';
    };
    const pending = status.pendingSyncCount;
    if (!status.running) fail(`the gateway is ${this.#lifecycle}`);
    if (this.#storageFailure) fail(`the local database refused a write: ${this.#storageFailure.message}`);
    if (status.authRefused) fail('the cloud refuses the API key: nothing is being forwarded');
    else if (this.#sync && status.running && pending > 0) {
      const stallMs = Math.max(3 * this.#options.syncInterval * 1000, 60_000);
      // Monotonic: a wall clock stepped forwards (NTP, a dead RTC battery fixed) is not a stall.
      // Since the last acknowledgement, or since readings began waiting if that is later: a quiet hour followed by
      // one reading is not a stall.
      const sinceMs =
        performance.now() - Math.max(this.#sync.state.lastSyncMonotonic ?? this.#startedAt, this.#pendingSince);
      if (!status.isOnline) degrade(`the cloud is unreachable; ${pending} reading(s) queued`);
      else if (sinceMs > stallMs) {
        degrade(
          `online, but nothing acknowledged for ${Math.round(sinceMs / 1000)} s while ${pending} reading(s) wait`,
        );
      }
    }
    const limit = this.#options.maxOfflineQueueSize;
    if (pending >= 0.9 * limit) degrade(`the offline queue is ${Math.floor((100 * pending) / limit)}% full`);
    const capacity = status.running ? this.#storage.capacity?.() : undefined;
    if (capacity && !this.#storageFailure && capacity.usedBytes >= 0.9 * capacity.limitBytes) {
      degrade(
        `the local database is ${Math.min(100, Math.floor((100 * capacity.usedBytes) / capacity.limitBytes))}% full (maxDatabaseSize)`,
      );
    }
    if (status.quarantined) {
      degrade(
        `the local database was damaged (${status.quarantined.reason}) and set aside as ${status.quarantined.path}; running on a new one`,
      );
    }

    const now = performance.now();
    const usage = process.cpuUsage(this.#cpu.usage);
    const elapsedUs = Math.max(1, (now - this.#cpu.at) * 1000);
    this.#cpu = { usage: process.cpuUsage(), at: now };
    return {
      status: level,
      deviceId: status.deviceId,
      isOnline: status.isOnline,
      pendingSyncCount: pending,
      lastSync: status.lastSyncTime,
      uptimeSeconds: status.running ? Math.round((performance.now() - this.#startedAt) / 1000) : 0,
      localStorageMb: status.running ? round1(this.#storage.sizeBytes() / 1048576) : 0,
      cpuPercent: round1((100 * (usage.user + usage.system)) / elapsedUs),
      memoryMb: round1(process.memoryUsage.rss() / 1048576),
      reasons,
    };
  }

  /**
   * Changes options at run time, validated as in the constructor. `localDb`, `storage`, `durability` and `clock`
   * cannot change after `start()`. A new `cloudUrl`, `apiKey`, `connectionTimeout` or `transport` takes effect at the
   * next request, and clears an API-key refusal. `retention` is merged into the retention in force; a new
   * `maxDatabaseSize` (`retention.maxBytes`) or `dbTimeout` applies at once, and a change of retention runs a
   * cleanup soon.
   */
  configure(options: Partial<EdgeGatewayOptions>): void {
    const partial = normalizeOptions({ ...options });
    const merged: EdgeGatewayOptions = { ...this.#input, ...partial };
    if (partial.retention !== undefined || this.#input.retention !== undefined) {
      merged.retention = { ...this.#input.retention, ...partial.retention };
    }
    const next = resolveOptions(merged);
    if (this.#lifecycle !== 'created') {
      const changed = FIXED_AFTER_START.filter((key) => key in options && options[key] !== this.#input[key]);
      if (changed.length > 0) {
        throw new ConfigError(changed.map((key) => `The "${key}" option cannot change after start()`));
      }
    }
    this.#checkRetentionSupport(next);
    const previous = this.#options;
    this.#input = merged;
    this.#options = next;
    if (next.processor !== previous.processor) this.#attachProcessor();
    this.#applyStorageSettings(previous);
    if (this.#lifecycle !== 'running') return;
    const transportChanged =
      next.transport !== previous.transport ||
      next.cloudUrl !== previous.cloudUrl ||
      next.apiKey !== previous.apiKey ||
      next.connectionTimeout !== previous.connectionTimeout;
    if (!this.#sync) {
      this.#startSync();
      return;
    }
    const transport = transportChanged ? this.#makeTransport() : undefined;
    if (transportChanged && !transport) {
      // The cloud was configured away: stop syncing; the queue waits for a new cloudUrl.
      const sync = this.#sync;
      this.#sync = undefined;
      void sync.stop();
      return;
    }
    this.#sync.update(this.#syncSettings());
    if (transport) {
      const old = this.#transport;
      this.#transport = transport;
      this.#sync.replaceTransport(transport);
      if (old && old !== transport) void old.close().catch(() => undefined);
    }
  }

  // Settings the storage takes at any time (the default storage was made with the constructor's).
  #applyStorageSettings(previous: ResolvedOptions): void {
    const next = this.#options;
    if (next.dbTimeout !== previous.dbTimeout) this.#storage.setBusyTimeout?.(Math.round(next.dbTimeout * 1000));
    if (next.maxDatabaseSize !== previous.maxDatabaseSize) this.#storage.setMaxSizeBytes?.(next.maxDatabaseSize);
    const storage = this.#retentionStorage();
    if (!storage) return;
    this.#applyRetentionPolicy(storage);
    const retentionChanged =
      JSON.stringify(next.retention) !== JSON.stringify(previous.retention) ||
      next.maxOfflineQueueSize !== previous.maxOfflineQueueSize ||
      next.maxDatabaseSize !== previous.maxDatabaseSize;
    if (retentionChanged) this.#retention?.kick();
  }

  /**
   * Sets how long local data is kept and what happens to queued readings when a budget is reached: the seed's
   * `configure_retention()`. Validated as the constructor's `retention` option and merged into the retention in
   * force (`maxRecords` is `maxOfflineQueueSize`, `maxBytes` is `maxDatabaseSize`: one setting each, two names);
   * applies to the next intake at once, and runs a cleanup soon. Throws `ConfigError` naming a bad option.
   *
   * @example
   * ```ts
   * gateway.configureRetention({ maxDays: 7, maxRecords: 50_000, cleanupStrategy: 'drop-oldest' });
   * ```
   */
  configureRetention(options: RetentionOptions): void {
    this.configure({ retention: options });
  }

  /** The retention in force, every budget under its retention name. */
  get retention(): RetentionView {
    const { maxOfflineQueueSize, maxDatabaseSize, retention } = this.#options;
    return { ...retention, maxRecords: maxOfflineQueueSize, maxBytes: maxDatabaseSize };
  }

  /**
   * Runs a cleanup pass now (after the one in progress, if any), in bounded steps with intake running between them,
   * and resolves with what it did. Rejects with `StorageError` when the local database fails.
   */
  async runCleanup(): Promise<CleanupReport> {
    const refused = this.#inputError('runCleanup');
    if (refused) throw refused;
    this.#commit.flush();
    if (!this.#retention) {
      return {
        pruned: {},
        removed: { retention: 0, 'drop-oldest': 0, downsampled: 0 },
        aggregates: 0,
        reclaimedBytes: 0,
        durationMs: 0,
      };
    }
    return this.#retention.run();
  }

  /** Turns gzip compression of batches on, at `level` 1 (fastest) to 9 (smallest). Batches already sealed keep their bytes. */
  enableCompression(options: { level?: number } = {}): void {
    this.configure({ compression: { level: options.level ?? 6 } });
  }

  /** Chooses how conflicts on shared records are resolved. `custom` needs {@link setConflictResolver}. */
  setConflictResolutionStrategy(strategy: ConflictStrategy): void {
    if (strategy === 'custom') {
      if (this.#strategy !== 'custom') {
        throw new ConfigError(['The "custom" conflict strategy needs a resolver: call setConflictResolver(fn)']);
      }
      return;
    }
    if (!['last-write-wins', 'cloud-wins', 'edge-wins'].includes(strategy)) {
      throw new ConfigError([
        `Expected a conflict strategy of last-write-wins, cloud-wins, edge-wins or custom, got ${JSON.stringify(strategy)}`,
      ]);
    }
    this.#strategy = strategy;
    this.#resolver = resolverFor(strategy);
  }

  /** Sets a custom conflict resolver (and the `custom` strategy). */
  setConflictResolver(resolver: ConflictResolver['resolve'] | ConflictResolver): void {
    this.#resolver = typeof resolver === 'function' ? { resolve: resolver } : resolver;
    this.#strategy = 'custom';
  }

  /** The most recent dead letters (readings refused for good, with the reason), newest first. */
  getDeadLetters(limit = 100): DeadLetter[] {
    const refused = this.#inputError('getDeadLetters');
    if (refused) throw refused;
    return this.#storage.deadLetters(limit);
  }
}

const round1 = (n: number) => Math.round(n * 10) / 10;

const processorName = (processor: Processor) => processor.name ?? processor.constructor?.name ?? 'processor';

const isReading = (value: unknown): value is DataPoint | DataPointInput =>
  value instanceof DataPoint ||
  (typeof value === 'object' &&
    value !== null &&
    typeof (value as { sensorId?: unknown }).sensorId === 'string' &&
    typeof (value as { value?: unknown }).value === 'number');

// What a processor returned, as outbox rows; throws (so the reading goes to the dead letters) when unusable.
function rowsFromResult(result: ProcessResult, source: NormalizedPoint): OutboxInsert[] {
  if (result === null || result === undefined) return [];
  const items = Array.isArray(result) ? result : [result];
  return items.map((item: unknown) => {
    if (isReading(item)) return normalizePoint(item, source.ts);
    if (typeof item !== 'object' || item === null) {
      throw new TypeError(`the processor returned ${typeof item}; expected a DataPoint, an object, an array or null`);
    }
    const payload = JSON.stringify(item);
    if (payload.length > MAX_PAYLOAD_BYTES) {
      throw new RangeError(
        `the processor returned ${payload.length} bytes of JSON; at most ${MAX_PAYLOAD_BYTES} are kept`,
      );
    }
    return {
      kind: 'processed',
      sensorId: source.sensorId,
      ts: source.ts,
      value: null,
      unit: null,
      tags: source.tags,
      payload,
    };
  });
}
