import { EventEmitter } from 'eventemitter3';
import type { Registry } from 'prom-client';
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
  type DataPoint,
  type DataPointInput,
  type NormalizedPoint,
  normalizePoint,
} from '../model/data-point.js';
import { hlcSchema } from '../model/records-wire.js';
import type { GatewayMetrics } from '../ops/gateway-metrics.js';
import type { GatewayHttpServer, HttpServerOptions } from '../ops/http-server.js';
import type { Alert, AlertQuery } from '../processing/alert.js';
import { type EncryptionKey, encryptionKeyProblem, sameKey } from '../storage/encryption.js';
import type { RecordStorage } from '../storage/record-storage.js';
import type { OutboxRemoval, RetentionStorage } from '../storage/retention.js';
import { RECORDS_META } from '../storage/sqlite-records.js';
import { SqliteStorage } from '../storage/sqlite-storage.js';
import type { DeadLetter, DeadLetterInsert, OutboxInsert, Storage } from '../storage/storage.js';
import { type ConflictResolver, type ConflictStrategy, lastWriteWins, resolverFor } from '../sync/conflict-resolver.js';
import { type EncoderPool, encoderFor } from '../sync/encoder-pool.js';
import { HybridClock } from '../sync/hlc.js';
import { RecordsSync } from '../sync/records-sync.js';
import { type SyncListener, SyncManager, type SyncSettings } from '../sync/sync-manager.js';
import type { SyncResult } from '../sync/sync-result.js';
import { HttpTransport } from '../transport/http-transport.js';
import type { Transport } from '../transport/transport.js';
import { type EncryptionOptions, encryptionPlan } from './encryption-options.js';
import { GroupCommit, type GroupExtras } from './group-commit.js';
import {
  type IngestKeyBounds,
  type IngestKeyClaim,
  type IngestKeyLookup,
  IngestKeys,
  ledgerWrite,
  type PendingIngestKey,
} from './ingest-keys.js';
import { LocalProcessing } from './local-processing.js';
import { type HistoryQuery, type QueryResult, queryHistory } from './local-query.js';
import {
  compressionSetting,
  type EdgeGatewayOptions,
  normalizeOptions,
  type ResolvedOptions,
  type RetentionOptions,
  resolveOptions,
} from './options.js';
import { RecentCount } from './recent-count.js';
import { Records } from './records.js';
import { type CleanupReport, RetentionManager } from './retention-manager.js';
import type { DropCounts, DroppedEvent, GatewayEvents, GatewayStatus, HealthStatus } from './status.js';
import { SteadyClock } from './steady-clock.js';

/** Options that name the local store; they cannot change once it is open. */
const FIXED_AFTER_START = [
  'localDb',
  'storage',
  'durability',
  'clock',
  'encryptionKey',
  'previousEncryptionKeys',
] as const;
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
  bytesSent: 0,
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
  readonly #local: LocalProcessing;
  #transport: Transport | undefined;
  #sync: SyncManager | undefined;
  /** Encoder threads (`workerThreads`), or none. */
  #encoder: EncoderPool | undefined;
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
  /** Loaded on first use (prom-client is heavy): at start() with the `metrics` option, else when first asked for. */
  #metrics: GatewayMetrics | undefined;
  #metricsLoading: Promise<GatewayMetrics> | undefined;
  /** Readings set aside in the dead letters within `deadLetterWindow`, for the health check. */
  readonly #recentDeadLetters: RecentCount;
  /** Set by `enableEncryption({ inTransit: true })`: an http:// cloudUrl is refused from then on. */
  #requireTls = false;
  /** Idempotency keys of the HTTP ingest endpoint held by requests in flight. */
  readonly #ingestKeys = new IngestKeys();
  /** What the ingest ledger measures its windows by: a wall clock stepped while the gateway runs moves nothing. */
  readonly #ledgerClock: SteadyClock;
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
        encryptionKey: this.#options.encryptionKey,
        previousEncryptionKeys: this.#options.previousEncryptionKeys,
        busyTimeoutMs: Math.round(this.#options.dbTimeout * 1000),
      });
    this.#checkRetentionSupport(this.#options);
    this.#resolver = this.#options.conflictResolver ?? lastWriteWins;
    if (this.#options.conflictResolver) this.#strategy = 'custom';
    this.#clock = new HybridClock({ now: this.#options.clock ?? Date.now });
    // The `clock` option drives both sides, so that a test moves the ledger's time as it moves the wall clock.
    this.#ledgerClock = new SteadyClock(
      this.#options.clock ?? Date.now,
      this.#options.clock ?? (() => performance.now()),
    );
    this.#recentDeadLetters = new RecentCount(this.#options.deadLetterWindow * 1000);
    this.records = new Records({
      storage: (method) => this.#recordStorage(method),
      clock: () => this.#clock,
      replicaId: () => this.#storage.replicaId,
      written: () => this.#sync?.noteRecordWrite(),
      watcherFailed: (error) => this.#backgroundError(error as Error),
    });
    this.#commit = new GroupCommit((rows, dead, extras, keys) => this.#commitRows(rows, dead, extras, keys));
    this.#encoder = encoderFor(undefined, this.#options.workerThreads, this.#logger);
    this.#local = new LocalProcessing(
      {
        storage: this.#storage,
        commit: this.#commit,
        logger: this.#logger,
        // Stopping, the storage stays open until the end of stop(); #startedAt is set once start() opened it.
        open: () => this.#lifecycle === 'running' || (this.#lifecycle === 'stopping' && this.#startedAt > 0),
        stopped: () => this.#lifecycle === 'stopped',
        checkRoom: (incoming) => this.#checkRoom(incoming),
        track: (work) => this.#tracked(work),
        emitAlert: (alert) => this.#guarded('alert', () => this.emit('alert', alert)),
        emitDropped: (event) => {
          if (event.reason === 'processor-failed') this.#recentDeadLetters.add(event.count, performance.now());
          this.#drop(event);
        },
        reportError: (error) => this.#backgroundError(error),
      },
      this.#options,
    );
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

  /** The options in force, after defaults; without the secrets (`apiKey`, `key`, `encryptionKey`, `previousEncryptionKeys`). */
  get options(): Readonly<Omit<ResolvedOptions, 'apiKey' | 'key' | 'encryptionKey' | 'previousEncryptionKeys'>> {
    const {
      apiKey: _hidden,
      key: _private,
      encryptionKey: _atRest,
      previousEncryptionKeys: _previous,
      ...visible
    } = this.#options;
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
    if (!this.#starting) {
      const starting = this.#start();
      this.#starting = starting;
      // A failed start may be retried (say, with the right encryptionKey). Reset here, not inside #start(): a
      // failure before its first await would run before the assignment above and be undone by it.
      starting.catch(() => {
        if (this.#starting === starting) this.#starting = undefined;
      });
    }
    return this.#starting;
  }

  async #start(): Promise<void> {
    this.#lifecycle = 'starting';
    try {
      if (this.#options.metrics) await this.#enableMetrics();
      // The keys may have changed since the constructor (configure(), enableEncryption()).
      if (this.#storage instanceof SqliteStorage && !this.#options.storage) {
        this.#storage.useEncryptionKeys(this.#options.encryptionKey, this.#options.previousEncryptionKeys);
      }
      await this.#openStorage();
    } catch (error) {
      this.#lifecycle = 'created';
      throw error;
    }
    try {
      await this.#local.start();
    } catch (error) {
      this.#storage.close();
      this.#lifecycle = 'created';
      throw error;
    }
    this.#startedAt = performance.now();
    this.#restoreClock();
    // stop() was called while the processors started: it closes what this opened, and nothing more starts.
    if (this.#lifecycle !== 'starting') return;
    this.#lifecycle = 'running';
    this.#reportQuarantine();
    this.#reportReencryption();
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
    // Read at each call: re-encrypting the database (rotateEncryptionKey) reopens it, with a retention of its own.
    const current = (): RetentionStorage => this.#storage.retention ?? storage;
    const manager = new RetentionManager({
      storage: new Proxy(storage, {
        get: (_target, name) => {
          const target = current();
          const value = Reflect.get(target, name);
          return typeof value === 'function' ? value.bind(target) : value;
        },
      }),
      settings: () => ({
        maxDays: this.#options.retention.maxDays,
        strategy: this.#options.retention.cleanupStrategy,
        intervalMs: this.#options.retention.cleanupInterval * 1000,
      }),
      now: () => (this.#options.clock ?? Date.now)(),
      ledgerNow: () => this.#ledgerClock.now(),
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

  // Never the key: only that the file changed hands.
  #reportReencryption(): void {
    const done = this.#storage instanceof SqliteStorage ? this.#storage.reencrypted : undefined;
    if (done === 'from-plaintext') {
      this.#logger.info({ localDb: this.#options.localDb }, 'the plaintext local database was encrypted in place');
    } else if (done === 'from-previous-key') {
      this.#logger.warn(
        { localDb: this.#options.localDb },
        'the local database was still under a previous encryption key (a rotation had not finished); it is now under encryptionKey',
      );
    }
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
    if (!this.#storage.records) return undefined;
    // Read at each use: re-encrypting the database (rotateEncryptionKey) reopens it, with a records store of its own.
    const records = () => this.#storage.records as RecordStorage;
    return new RecordsSync({
      get storage() {
        return records();
      },
      deviceId: this.#options.deviceId,
      replicaId: () => this.#storage.replicaId,
      clock: () => this.#clock, // remade at start, from what the database remembers
      resolver: () => ({ resolver: this.#resolver, strategy: this.#strategy }),
      resolverTimeoutMs: this.#options.conflictResolverTimeout * 1000,
      maxClockSkewMs: this.#options.maxClockSkew * 1000,
      logger: this.#logger,
      saveClockOffset: (offset) => this.#storage.setMeta(RECORDS_META.clockOffset, String(offset)),
      // A custom storage's durability is unknown: its pulls take every change, as with synchronous=NORMAL.
      namePuller: this.#options.storage === undefined && this.#options.durability === 'full',
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
    const { transport, cloudUrl, apiKey, connectionTimeout, allowInsecure, ca, cert, key, pinnedCertificates } =
      this.#options;
    if (transport) return transport;
    if (!cloudUrl) return undefined;
    return new HttpTransport({
      baseUrl: cloudUrl,
      apiKey,
      timeoutMs: connectionTimeout * 1000,
      allowInsecure,
      ca,
      cert,
      key,
      pinnedCertificates,
    });
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
      encoder: this.#encoder,
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
        this.#recentDeadLetters.add(count, performance.now());
        this.#logger.warn({ count, message }, 'the cloud refused readings; they are kept in the dead letters');
        this.#drop({ reason: 'rejected-by-cloud', count, message });
      },
      failed: (error) => this.#backgroundError(error, 'sync'),
      sent: (report) => this.#metrics?.sent(report),
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
      await this.#local.stop();
      this.#commit.flush();
      const sync = this.#sync;
      const pending = this.#storage.pendingCount() + (this.#storage.records?.mutationCount() ?? 0);
      if (sync && this.#options.stopTimeout > 0 && pending > 0 && !deadline.aborted) {
        // Push what is queued; a pull now would only spend the deadline on changes nobody will see before restart.
        await sync.syncNow(deadline, { pullRecords: false }).catch(() => undefined);
      }
      await sync?.stop();
      await this.#retention?.stop();
      await this.#encoder?.close();
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

  #commitRows(
    rows: OutboxInsert[],
    dead: DeadLetterInsert[],
    extras: GroupExtras | undefined,
    keys: readonly PendingIngestKey[],
  ): void {
    const wasEmpty = this.#storage.pendingCount() === 0;
    let added = rows.length;
    const ingestKeys = keys.length > 0 ? () => ledgerWrite(keys, this.#now()) : undefined;
    try {
      if (extras || this.#local.keepsHistory) added = this.#local.store(rows, dead, extras, ingestKeys);
      else if (ingestKeys) this.#storage.append(rows, dead, ingestKeys());
      else this.#storage.append(rows, dead);
    } catch (error) {
      // Rows sealed into a batch since #checkRoom took all the room drop-oldest could make: refused, as at intake.
      if (isQueueFullError(error)) {
        // Readings for the built-ins wait in `extras.staged`, not in `rows`: they are refused too.
        const count = rows.length + (extras?.staged.length ?? 0);
        this.#drop({ reason: 'queue-full', count, message: error.message });
      } else this.#backgroundError(error as Error);
      throw error;
    }
    // An intake write went through: an intake failure is over; a sync-side one is not, until a batch is acknowledged.
    if (this.#storageFailure?.side === 'intake') this.#storageFailure = undefined;
    if (added > 0 && wasEmpty) this.#pendingSince = performance.now();
    if (added > 0) this.#sync?.noteIntake();
  }

  #checkRoom(incoming: number): QueueFullError | undefined {
    const limit = this.#options.maxOfflineQueueSize;
    if (this.#storage.pendingCount() + this.#commit.size + incoming <= limit) return undefined;
    // drop-oldest and downsample-oldest make room at the commit, from every row not sealed into a batch (alerts excepted).
    const retention = this.#options.retention.cleanupStrategy === 'reject-new' ? undefined : this.#retentionStorage();
    if (retention && retention.protectedCount() + this.#commit.size + incoming <= limit) return undefined;
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
    return this.#keyedSendData(point, undefined);
  }

  // sendData(), with the idempotency key of an HTTP ingest request to commit with the reading.
  #keyedSendData(point: DataPoint | DataPointInput, key: IngestKeyClaim | undefined): Promise<boolean> {
    const metrics = this.#metrics;
    if (!metrics) return this.#sendData(point, key);
    const startedAt = performance.now();
    return this.#sendData(point, key).then((stored) => {
      metrics.intake(startedAt, stored ? 1 : 0);
      return stored;
    });
  }

  #sendData(point: DataPoint | DataPointInput, key: IngestKeyClaim | undefined): Promise<boolean> {
    const refused = this.#inputError('sendData');
    if (refused) return Promise.reject(refused);
    let normalized: NormalizedPoint;
    try {
      normalized = normalizePoint(point);
    } catch (error) {
      return Promise.reject(error);
    }
    if (!this.#local.idle) return this.#local.processOne(normalized, 'sendData', key);
    const full = this.#checkRoom(1);
    if (full) return Promise.reject(full);
    return this.#commit.add(normalized, key && { claim: key, accepted: 1, stored: () => 1 });
  }

  /**
   * Stores many readings in one transaction: all of them, or, when any is invalid, none (the
   * `ValidationError` lists every problem with its index). Resolves with how many readings were stored.
   */
  sendBatch(points: readonly (DataPoint | DataPointInput)[]): Promise<number> {
    return this.#keyedSendBatch(points, undefined);
  }

  // sendBatch(), with the idempotency key of an HTTP ingest request to commit with the readings.
  #keyedSendBatch(points: readonly (DataPoint | DataPointInput)[], key: IngestKeyClaim | undefined): Promise<number> {
    const metrics = this.#metrics;
    if (!metrics) return this.#sendBatch(points, key);
    const startedAt = performance.now();
    return this.#sendBatch(points, key).then((stored) => {
      metrics.intake(startedAt, stored);
      return stored;
    });
  }

  #sendBatch(points: readonly (DataPoint | DataPointInput)[], key: IngestKeyClaim | undefined): Promise<number> {
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
    if (!this.#local.idle) return this.#local.process(normalized, 'sendBatch', key);
    const full = this.#checkRoom(normalized.length);
    if (full) return Promise.reject(full);
    const count = normalized.length;
    return this.#commit
      .addAll(normalized, key && { claim: key, accepted: count, stored: () => count })
      .then(() => count);
  }

  // The steady clock the idempotency window is measured by (the `clock` option in tests).
  #now(): number {
    return this.#ledgerClock.now();
  }

  // Looks an HTTP ingest request's idempotency key up, and holds it for the request when it is new.
  #claimIngestKey(idempotencyKey: string, hash: string, bounds: IngestKeyBounds): IngestKeyLookup {
    const refused = this.#inputError('sendData');
    if (refused) throw refused;
    return this.#ingestKeys.claim(this.#storage, idempotencyKey, hash, bounds, this.#now());
  }

  #tracked<T>(work: Promise<T>): Promise<T> {
    this.#processing.add(work);
    const done = () => this.#processing.delete(work);
    work.then(done, done);
    return work;
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
      tlsFailure: sync?.tlsFailure ?? null,
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
   * forward at all (stopped, local database failing or full, API key refused, no trusted TLS connection: a
   * certificate refused or a pin mismatch), `degraded` when it works with a
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
    else if (status.tlsFailure) fail(tlsReason(status.tlsFailure));
    else if (this.#sync && status.running && pending > 0) {
      const stallMs = (this.#options.stallTimeout ?? Math.max(3 * this.#options.syncInterval, 60)) * 1000;
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
    const deadLetters = status.running ? this.#recentDeadLetters.total(performance.now()) : 0;
    if (deadLetters > 0) {
      degrade(
        `${deadLetters} reading(s) went to the dead letters in the last ${this.#options.deadLetterWindow} s (${status.deadLetterCount} kept; see getDeadLetters())`,
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
   * cannot change after `start()`. A new `cloudUrl`, `apiKey`, `connectionTimeout`, `transport` or TLS option (`ca`,
   * `cert`, `key`, `pinnedCertificates`, `allowInsecure`) takes effect at the next request, on a new connection, and
   * clears an API-key or TLS refusal. `retention` is merged into the retention in force; a new `maxDatabaseSize`
   * (`retention.maxBytes`) or `dbTimeout` applies at once, and a change of retention runs a cleanup soon.
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
        throw new ConfigError(
          changed.map(
            (key) =>
              `The "${key}" option cannot change after start()${key === 'encryptionKey' ? ': use rotateEncryptionKey(newKey)' : ''}`,
          ),
        );
      }
    }
    if (this.#requireTls) this.#checkTls(next.cloudUrl);
    this.#checkRetentionSupport(next);
    const previous = this.#options;
    // First, as it may refuse the chain (a custom processor after a built-in): then nothing changes.
    if (!sameProcessing(next, previous)) this.#local.configure(next);
    this.#input = merged;
    this.#options = next;
    this.#recentDeadLetters.windowMs = next.deadLetterWindow * 1000;
    this.#applyStorageSettings(previous);
    this.#encoder = encoderFor(this.#encoder, next.workerThreads, this.#logger);
    if (this.#lifecycle !== 'running') return;
    const transportChanged =
      next.transport !== previous.transport ||
      String(next.cloudUrl) !== String(previous.cloudUrl) ||
      next.apiKey !== previous.apiKey ||
      next.connectionTimeout !== previous.connectionTimeout ||
      !sameTls(next, previous);
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

  #checkTls(cloudUrls: string | readonly string[] | undefined): void {
    const cloudUrl = [cloudUrls ?? []].flat().find((url) => url.startsWith('http:'));
    if (cloudUrl) {
      throw new ConfigError([
        `Expected the "cloudUrl" option to be an https:// URL, got ${JSON.stringify(cloudUrl)}: enableEncryption({ inTransit: true }) refuses http://, even to loopback`,
      ]);
    }
  }

  /**
   * Turns encryption on, as the seed's `enable_encryption(at_rest=True, in_transit=True)`.
   *
   * `atRest: true` with a `key` (see {@link EncryptionKey}): before `start()`, sets the `encryptionKey` option, so
   * that `start()` opens the database with it (and encrypts a plaintext one in place). After `start()`, encrypts
   * the open plaintext database in place, crash-safely, as {@link rotateEncryptionKey} re-keys: at every moment the
   * file is the whole database in clear or the whole database encrypted, and the promise resolves once it is
   * encrypted. A database already encrypted under this key is left as it is; under another key, the call is refused
   * (`ConfigError`): that is {@link rotateEncryptionKey}'s job. The host keeps the key, and gives it as
   * `encryptionKey` at every later start.
   *
   * `inTransit: true`: from now on an `http://` `cloudUrl` is refused, even to a loopback host and with
   * `allowInsecure` (TLS is the default already; this makes it a rule).
   *
   * @example
   * ```ts
   * await gateway.enableEncryption({ atRest: true, key: process.env.EDGE_DB_KEY, inTransit: true });
   * ```
   */
  async enableEncryption(options: EncryptionOptions): Promise<void> {
    const plan = encryptionPlan(options, this.#options.encryptionKey);
    if (plan.requireTls) this.#checkTls(this.#options.cloudUrl);
    if (plan.key !== undefined) {
      if (this.#lifecycle === 'starting') await this.#starting?.catch(() => undefined);
      if (this.#lifecycle === 'created') this.configure({ encryptionKey: plan.key });
      else {
        const refused = this.#inputError('enableEncryption');
        if (refused) throw refused;
        const current = this.#options.encryptionKey;
        if (current !== undefined && !sameKey(current, plan.key)) {
          throw new ConfigError([
            'The local database is already encrypted under another key: use rotateEncryptionKey(newKey) to change it',
          ]);
        }
        if (current === undefined) this.#reencrypt(plan.key, 'encrypted in place');
      }
    }
    if (plan.requireTls) this.#requireTls = true;
  }

  /**
   * Re-encrypts the local database under `newKey`, in place and crash-safely: a copy is re-keyed next to the file,
   * checked page by page, synced and renamed over it, so that at every moment the file is the whole database under
   * the old key or under the new one, never a mix, and nothing is lost or duplicated. Resolves once the database
   * is under `newKey`; when it rejects (`StorageError`: no room for the copy, ...), the database is unchanged
   * under the old key. The event loop is blocked while it runs (about 0.7 s for 300,000 queued readings, 21 MB, on
   * the reference machine with raw keys, 1.4 s with passphrases, for their stretching), and it needs free disk
   * room of about twice the database file.
   *
   * Killed part-way, the file is under exactly one of the two keys: save the new key as `encryptionKey` and the
   * old one in `previousEncryptionKeys` before calling this, and a start after a crash finishes the rotation; drop
   * the old key once this resolved.
   *
   * @example
   * ```ts
   * await keyStore.save({ current: next, previous: [old] }); // the host's own key store
   * await gateway.rotateEncryptionKey(next);
   * await keyStore.save({ current: next, previous: [] });
   * ```
   */
  async rotateEncryptionKey(newKey: EncryptionKey): Promise<void> {
    const problem = encryptionKeyProblem('newKey', newKey);
    if (problem) throw new ConfigError([problem]);
    if (this.#lifecycle === 'starting') await this.#starting?.catch(() => undefined);
    const refused = this.#inputError('rotateEncryptionKey');
    if (refused) throw refused;
    const current = this.#options.encryptionKey;
    if (current === undefined) {
      throw new ConfigError([
        'The local database is not encrypted: encrypt it with enableEncryption({ atRest: true, key })',
      ]);
    }
    if (sameKey(current, newKey)) return;
    this.#reencrypt(newKey, 're-encrypted under a new key');
  }

  // Synchronous from the flush to the reopen: no reading, sync step or record edit touches the database meanwhile,
  // and what was accepted before is committed under the old key, then copied.
  #reencrypt(key: EncryptionKey, what: string): void {
    const storage = this.#storage;
    if (!(storage instanceof SqliteStorage)) {
      throw new ConfigError(['A custom "storage" is not encrypted by edge-gateway: encrypt in that storage']);
    }
    this.#commit.flush();
    const startedAt = performance.now();
    storage.rekey(key);
    // The reopened database has a retention of its own: the manager listens to it and its policy is set again.
    const retention = this.#retentionStorage();
    if (retention && this.#retention) {
      retention.setListener(this.#retention);
      this.#applyRetentionPolicy(retention);
    }
    this.#input = { ...this.#input, encryptionKey: key, previousEncryptionKeys: undefined };
    this.#options = { ...this.#options, encryptionKey: key, previousEncryptionKeys: undefined };
    this.#logger.info(
      { localDb: this.#options.localDb, ms: Math.round(performance.now() - startedAt) },
      `the local database was ${what}`,
    );
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
        ingestKeys: 0,
        reclaimedBytes: 0,
        durationMs: 0,
      };
    }
    return this.#retention.run();
  }

  /**
   * Replaces the API key at run time, without a restart: `configure({ apiKey })`. The next request carries the
   * new key; a request in flight with the old one is cut and sent again, byte-identical, so the cloud stores its
   * readings once. Clears an API-key refusal. To rotate without a gap, have the cloud accept both keys, call this
   * on every gateway, then revoke the old key (docs/security.md).
   *
   * @example
   * ```ts
   * server.setApiKeys([oldKey, newKey]); // cloud side: both valid for a while
   * gateway.setApiKey(newKey);
   * server.setApiKeys([newKey]);         // revoke the old one
   * ```
   */
  setApiKey(apiKey: string): void {
    this.configure({ apiKey });
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

  /**
   * Stored alerts, newest first: those raised by processors, each with how many repeats its de-duplication
   * window counted into it. Every field of `query` narrows the selection; `severity` selects that one and the
   * more serious ones.
   *
   * @example
   * ```ts
   * const recent = gateway.alerts({ since: Date.now() - 3_600_000, severity: 'warning', sensorId: 'boiler-2' });
   * ```
   */
  alerts(query: AlertQuery = {}): Alert[] {
    const refused = this.#inputError('alerts');
    if (refused) throw refused;
    return this.#local.alerts(query);
  }

  /**
   * Local history of one sensor for a display that must work offline: raw readings (kept when
   * `localHistory.readings` > 0) or windows rolled up from stored aggregates, oldest first. Synchronous: it reads
   * the local database.
   *
   * @example
   * ```ts
   * const { points } = gateway.query({ sensorId: 'temp-01', from: Date.now() - 86_400_000, resolution: 3600 });
   * ```
   */
  query(query: HistoryQuery): QueryResult {
    const refused = this.#inputError('query');
    if (refused) throw refused;
    this.#commit.flush();
    return queryHistory(this.#storage, query, this.#local.keepsHistory);
  }

  /**
   * Runs the processors' `flush` hooks now and lets the built-ins close the windows the clock says are over
   * (the gateway does so every second by itself), and resolves once what they produced is stored.
   */
  async flushProcessors(): Promise<void> {
    const refused = this.#inputError('flushProcessors');
    if (refused) throw refused;
    await this.#local.flush();
  }

  /** The most recent dead letters (readings refused for good, with the reason), newest first. */
  getDeadLetters(limit = 100): DeadLetter[] {
    const refused = this.#inputError('getDeadLetters');
    if (refused) throw refused;
    return this.#storage.deadLetters(limit);
  }

  #enableMetrics(): Promise<GatewayMetrics> {
    this.#metricsLoading ??= import('../ops/gateway-metrics.js').then(
      ({ GatewayMetrics }) => {
        this.#metrics = new GatewayMetrics(this, {
          storageBytes: () => (this.#lifecycle === 'running' ? this.#storage.sizeBytes() : undefined),
          storageLimitBytes: () => (this.#lifecycle === 'running' ? this.#storage.capacity?.()?.limitBytes : undefined),
        });
        return this.#metrics;
      },
      (error: unknown) => {
        this.#metricsLoading = undefined;
        throw error;
      },
    );
    return this.#metricsLoading;
  }

  /**
   * The gateway's metrics in the Prometheus text format: the seed's `edge_gateway_data_points_total`,
   * `edge_gateway_sync_success_total`, `edge_gateway_sync_failures_total`, `edge_gateway_queue_size` and
   * `edge_gateway_processing_duration_seconds`, and the others of docs/operations.md. They live on a registry of
   * this gateway's own. Without the `metrics` option, counting starts at the first call of this method,
   * {@link metricsRegistry} or {@link serveHttp}.
   *
   * @example
   * ```ts
   * const gateway = new EdgeGateway({ deviceId: 'd', metrics: true });
   * await gateway.start();
   * console.log(await gateway.metrics()); // # HELP edge_gateway_data_points_total ...
   * ```
   */
  async metrics(): Promise<string> {
    return (await this.#enableMetrics()).metrics();
  }

  /**
   * The prom-client registry holding this gateway's metrics, e.g. to expose them with a host's own:
   * `Registry.merge([register, await gateway.metricsRegistry()])`. Starts counting as {@link metrics} does.
   */
  async metricsRegistry(): Promise<Registry> {
    return (await this.#enableMetrics()).registry;
  }

  /**
   * Serves `GET /health` (the health check as JSON, 503 when unhealthy), `GET /metrics` (Prometheus text) and
   * `POST /api/v1/data` (local ingest: one reading or an array, answered once they are durable; with an
   * `Idempotency-Key`, a retry is answered the first answer and stores nothing) over HTTP, on 127.0.0.1:8000 unless
   * told otherwise. Opt-in: the library serves nothing unless asked. `close()` the server
   * before `stop()`ping the gateway.
   *
   * @example
   * ```ts
   * const server = await gateway.serveHttp({ port: 8000 });
   * // curl http://127.0.0.1:8000/health
   * await server.close();
   * ```
   */
  async serveHttp(options: HttpServerOptions = {}): Promise<GatewayHttpServer> {
    const [{ serveGateway }] = await Promise.all([import('../ops/http-server.js'), this.#enableMetrics()]);
    return serveGateway(
      {
        healthCheck: () => this.healthCheck(),
        metrics: () => this.metrics(),
        sendData: (point, key) => this.#keyedSendData(point, key),
        sendBatch: (points, key) => this.#keyedSendBatch(points, key),
        claimIngestKey: (idempotencyKey, hash, bounds) => this.#claimIngestKey(idempotencyKey, hash, bounds),
      },
      options,
    );
  }
}

const round1 = (n: number) => Math.round(n * 10) / 10;

function tlsReason(failure: NonNullable<GatewayStatus['tlsFailure']>): string {
  return failure.code === 'PIN_MISMATCH'
    ? `the cloud's certificate matches none of the pinned keys (pinnedCertificates): nothing is being forwarded (${failure.message})`
    : `no trusted TLS connection to the cloud: nothing is being forwarded (${failure.message})`;
}

/** Whether two sets of options secure the link to the cloud alike (configure() makes a new transport when not). */
function sameTls(a: ResolvedOptions, b: ResolvedOptions): boolean {
  const list = <T>(value: T | readonly T[] | undefined): readonly T[] =>
    value === undefined ? [] : Array.isArray(value) ? value : [value as T];
  const sameList = <T>(x: T | readonly T[] | undefined, y: T | readonly T[] | undefined) =>
    list(x).length === list(y).length && list(x).every((item, i) => item === list(y)[i]);
  return (
    a.allowInsecure === b.allowInsecure &&
    a.cert === b.cert &&
    a.key === b.key &&
    sameList(a.ca, b.ca) &&
    sameList(a.pinnedCertificates, b.pinnedCertificates)
  );
}

/** Whether two sets of options make the same processing (configure() rebuilds the chain only when not). */
function sameProcessing(a: ResolvedOptions, b: ResolvedOptions): boolean {
  const list = (o: ResolvedOptions) => o.processors ?? [];
  return (
    a.processor === b.processor &&
    list(a).length === list(b).length &&
    list(a).every((p, i) => p === list(b)[i]) &&
    a.processorTimeout === b.processorTimeout &&
    a.localAnalytics === b.localAnalytics &&
    a.alertDedupWindow === b.alertDedupWindow &&
    a.maxStoredAlerts === b.maxStoredAlerts &&
    a.localHistory.readings === b.localHistory.readings &&
    a.localHistory.aggregates === b.localHistory.aggregates
  );
}
