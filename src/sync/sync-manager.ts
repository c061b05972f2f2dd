import type { Logger } from '../logger.js';
import { COMPACT_BATCH_CONTENT_TYPE } from '../model/compact-codec.js';
import type { SealedBatch, Storage } from '../storage/storage.js';
import type { RetryableCode, SendResult, Transport } from '../transport/transport.js';
import { backoffDelay, sleep } from './backoff.js';
import { type CompressionSetting, encodeBatch, type WireFormat } from './batch-codec.js';
import type { RecordsSync } from './records-sync.js';
import type { SyncErrorCode, SyncErrorEvent, SyncResult } from './sync-result.js';

/** How the gateway decides when to sync. */
export type SyncStrategy = 'adaptive' | 'fixed-interval' | 'on-change';

/** Settings of the sync loop, all in ms where they are durations. */
export interface SyncSettings {
  deviceId: string;
  strategy: SyncStrategy;
  intervalMs: number;
  batchSize: number;
  compression: CompressionSetting;
  /** The codec of new batches; `compact` falls back to `json` for a cloud that answers 415 to it. */
  wireFormat: WireFormat;
  maxRetryAttempts: number;
  initialBackoffMs: number;
  maxBackoffMs: number;
}

/** What the sync loop tells the gateway. */
export interface SyncListener {
  onlineChanged(online: boolean, reason: string): void;
  synced(result: SyncResult): void;
  syncError(event: SyncErrorEvent): void;
  deadLettered(count: number, reason: string): void;
  /** An unexpected failure of the loop itself, e.g. the local database refused a write. */
  failed(error: Error): void;
  /** One attempt to send one batch got an outcome (for metrics). */
  sent?(report: SendReport): void;
}

/** One attempt to send one batch, as {@link SyncListener.sent} reports it. */
export interface SendReport {
  /** Readings in the batch. */
  count: number;
  /** Bytes of the body as sent. */
  bytes: number;
  /** Bytes of the body before compression, when the batch was sealed in this run (see `SealInput.rawBytes`). */
  rawBytes: number | undefined;
  /** From sending to the outcome, in seconds. */
  seconds: number;
  status: SendResult['status'];
}

/**
 * State of the sync loop, for status and health. Dates are wall-clock, for people to read; the loop itself keeps
 * time with the monotonic clock (`performance.now()`), so a wall clock stepped forwards or backwards neither
 * stalls nor hurries it.
 */
export interface SyncState {
  isOnline: boolean;
  lastSyncTime: Date | null;
  /** `performance.now()` when the cloud last acknowledged a batch: what durations since then are measured from. */
  lastSyncMonotonic: number | null;
  failedSyncCount: number;
  consecutiveFailures: number;
  authRefused: boolean;
  /**
   * The last attempt could not establish a trusted connection (`TLS_ERROR`, `PIN_MISMATCH`); cleared when the
   * cloud answers over a trusted one, or by a new transport.
   */
  tlsFailure: { code: TlsFailureCode; message: string } | null;
  lastError: (SyncErrorEvent & { at: Date }) | null;
  clockSkewMs: number | null;
  /** When the next cycle is due, as a wall-clock date computed when read (the deadline itself is monotonic). */
  nextSyncAt: Date | null;
}

/** Debounce of the on-change strategy: intake within this window goes out in one cycle. */
export const ON_CHANGE_DEBOUNCE_MS = 50;
/** Shortest interval the adaptive strategy shrinks to. */
export const ADAPTIVE_MIN_INTERVAL_MS = 1000;
/** A cycle stops after this many batches and yields; the next cycle starts at once. */
const MAX_BATCHES_PER_CYCLE = 1000;

/** The `sync-error` codes of a connection that could not be trusted. */
export type TlsFailureCode = Extract<SyncErrorCode, 'TLS_ERROR' | 'PIN_MISMATCH'>;

// `untrusted`: no trusted connection to the cloud (TLS_ERROR, PIN_MISMATCH); waits like `unauthorized`.
type CycleEnd = 'drained' | 'yielded' | 'failed' | 'unauthorized' | 'untrusted' | 'aborted' | 'interrupted';

const RETRYABLE_CODES: Record<RetryableCode, SyncErrorCode> = {
  network: 'NETWORK',
  timeout: 'TIMEOUT',
  server: 'SERVER_ERROR',
  throttled: 'THROTTLED',
  tls: 'TLS_ERROR',
  'pin-mismatch': 'PIN_MISMATCH',
};

const retryableCode = (code: string): SyncErrorCode => RETRYABLE_CODES[code as RetryableCode] ?? 'NETWORK';

/** True for the failures that retrying soon cannot fix, because the connection itself is not trusted. */
const untrusted = (code: string | undefined): code is 'tls' | 'pin-mismatch' =>
  code === 'tls' || code === 'pin-mismatch';

const whenAborted = (signal: AbortSignal): Promise<void> =>
  new Promise((resolve) => {
    if (signal.aborted) resolve();
    else signal.addEventListener('abort', () => resolve(), { once: true });
  });

/**
 * Moves sealed batches from storage through the transport, one batch in flight, oldest first. A batch is sealed
 * once and resent byte for byte until acknowledged; rows leave storage only on acknowledgement. Retries back off
 * with full jitter; after `maxRetryAttempts` failures in a cycle the loop waits its longest interval. Data is never
 * dropped because a retry budget ran out.
 */
export class SyncManager {
  readonly #storage: Storage;
  readonly #listener: SyncListener;
  readonly #logger: Logger;
  #transport: Transport;
  #settings: SyncSettings;
  #controller = new AbortController();
  // Cuts short a backoff sleep inside a cycle, when forceSync() wants the floor now.
  #wake = new AbortController();
  #timer: NodeJS.Timeout | undefined;
  /** `performance.now()` when the scheduled cycle is due; undefined when none is. */
  #dueAt: number | undefined;
  #cycle: Promise<SyncResult> | undefined;
  #adaptiveMs: number;
  #sealLimit: number;
  #backingOff = false;
  // False until the first answer or failure: the first failure is news ('offline') even though isOnline starts false.
  #reachabilityKnown = false;
  // The server's Retry-After on the failure that ended a cycle: the next cycle waits at least this long.
  #retryAfterFloorMs = 0;
  // The wait a failure already announced (in its sync-error event): the next cycle is scheduled after exactly it.
  #plannedDelayMs: number | undefined;
  // Set when the cloud answered 415 to a compact batch: JSON from then on.
  #jsonOnly = false;
  readonly #records: RecordsSync | undefined;
  /** `performance.now()` of the last complete records pull. */
  #lastPullAt: number | undefined;
  readonly #state: SyncState = {
    isOnline: false,
    lastSyncTime: null,
    lastSyncMonotonic: null,
    failedSyncCount: 0,
    consecutiveFailures: 0,
    authRefused: false,
    tlsFailure: null,
    lastError: null,
    clockSkewMs: null,
    nextSyncAt: null,
  };

  constructor(
    storage: Storage,
    transport: Transport,
    settings: SyncSettings,
    listener: SyncListener,
    logger: Logger,
    records?: RecordsSync,
  ) {
    this.#storage = storage;
    this.#records = records;
    this.#transport = transport;
    this.#settings = settings;
    this.#listener = listener;
    this.#logger = logger;
    this.#adaptiveMs = settings.intervalMs;
    this.#sealLimit = settings.batchSize;
  }

  get state(): Readonly<SyncState> {
    const due = this.#dueAt;
    const nextSyncAt = due === undefined ? null : new Date(Date.now() + Math.max(0, due - performance.now()));
    return { ...this.#state, nextSyncAt };
  }

  /** Starts the loop; the first cycle runs at once, to drain what was queued before a restart. */
  start(): void {
    this.#controller = new AbortController();
    this.#schedule(0, true);
  }

  /** Stops the loop, aborting a request in flight (its batch stays sealed and is resent after restart). */
  async stop(): Promise<void> {
    this.#clearTimer();
    this.#controller.abort(new Error('sync stopped'));
    await this.#cycle?.catch(() => undefined);
  }

  update(settings: SyncSettings, transport?: Transport): void {
    const intervalChanged =
      settings.intervalMs !== this.#settings.intervalMs || settings.strategy !== this.#settings.strategy;
    const bisecting = this.#sealLimit < this.#settings.batchSize;
    this.#settings = settings;
    if (transport) this.#transport = transport;
    // A new batch size applies at once, unless a refused batch is being halved (then it applies when that ends).
    this.#sealLimit = bisecting ? Math.min(this.#sealLimit, settings.batchSize) : settings.batchSize;
    if (intervalChanged) {
      this.#adaptiveMs = settings.intervalMs;
      if (!this.#backingOff) this.#schedule(this.#idleDelay(), true);
    }
  }

  /** A new transport (new credentials or URL): clears an auth refusal and tries again soon. */
  replaceTransport(transport: Transport): void {
    this.#transport = transport;
    this.#state.authRefused = false;
    this.#state.tlsFailure = null;
    this.#backingOff = false;
    this.#schedule(0, true);
  }

  /** Called after readings were committed: the on-change and adaptive strategies may sync sooner. */
  noteIntake(): void {
    if (this.#backingOff || this.#controller.signal.aborted) return;
    const { strategy, batchSize } = this.#settings;
    if (strategy === 'on-change') this.#schedule(ON_CHANGE_DEBOUNCE_MS, false);
    else if (strategy === 'adaptive') {
      this.#schedule(this.#storage.pendingCount() >= batchSize ? 0 : this.#adaptiveMs, false);
    }
  }

  /** Called after a local record edit: records go out soon, whatever the strategy but fixed-interval. */
  noteRecordWrite(): void {
    if (this.#backingOff || this.#controller.signal.aborted) return;
    if (this.#settings.strategy !== 'fixed-interval') this.#schedule(ON_CHANGE_DEBOUNCE_MS, false);
  }

  /**
   * Runs a cycle now, whatever the schedule or backoff says: a cycle sleeping in backoff is cut short, one with
   * a request in flight is awaited. The forced cycle tries each batch once and does not sleep: on a failure it
   * returns, and the loop's schedule takes over again.
   */
  async syncNow(signal?: AbortSignal, options: { pullRecords?: boolean } = {}): Promise<SyncResult> {
    this.#wake.abort();
    while (this.#cycle) {
      // The wait for a request in flight counts against `signal` too: stop() must not outlast its stopTimeout.
      await (signal
        ? Promise.race([this.#cycle.catch(() => undefined), whenAborted(signal)])
        : this.#cycle.catch(() => undefined));
      signal?.throwIfAborted();
    }
    // Renewed only now: a cycle that was mid-request above must find the old one aborted when it goes to sleep.
    this.#wake = new AbortController();
    this.#clearTimer();
    return this.#run(signal, false, options.pullRecords ?? true);
  }

  #clearTimer(): void {
    if (this.#timer) clearTimeout(this.#timer);
    this.#timer = undefined;
    this.#dueAt = undefined;
  }

  // Moves the next cycle to `delayMs` from now; unless `force`, only ever earlier than what is scheduled. Deadlines
  // are monotonic (as setTimeout is): compared on the wall clock, a clock stepped forwards made every earlier
  // deadline look due already, and intake that should have synced at once waited a whole interval.
  #schedule(delayMs: number, force: boolean): void {
    if (this.#controller.signal.aborted) return;
    const at = performance.now() + delayMs;
    if (!force && this.#dueAt !== undefined && this.#dueAt <= at) return;
    if (this.#cycle && !force) return; // the running cycle drains what arrived; the next is scheduled after it
    this.#clearTimer();
    this.#dueAt = at;
    this.#timer = setTimeout(() => {
      this.#timer = undefined;
      this.#dueAt = undefined;
      if (this.#cycle) return;
      this.#run(undefined, true).catch(() => undefined); // reported through the listener by #run
    }, delayMs);
    this.#timer.unref();
  }

  #idleDelay(): number {
    const { strategy, intervalMs, batchSize } = this.#settings;
    const pending = this.#storage.pendingCount() + (this.#records?.supported ? this.#records.pendingCount() : 0);
    if (strategy === 'fixed-interval') return intervalMs;
    if (strategy === 'on-change') return pending > 0 ? ON_CHANGE_DEBOUNCE_MS : intervalMs;
    if (pending === 0) return intervalMs;
    // Adaptive: the fuller the queue, the sooner.
    return Math.round(this.#adaptiveMs / Math.min(8, 1 + Math.floor(pending / batchSize)));
  }

  async #run(signal: AbortSignal | undefined, patient: boolean, pull?: boolean): Promise<SyncResult> {
    const combined = signal ? AbortSignal.any([this.#controller.signal, signal]) : this.#controller.signal;
    const cycle = this.#cycleOnce(combined, patient, pull);
    const settled = cycle.then((r) => r.result);
    settled.catch(() => undefined);
    this.#cycle = settled;
    try {
      const { result, end } = await cycle;
      this.#afterCycle(end);
      return result;
    } catch (error) {
      // A storage failure mid-cycle: nothing was lost (every step is one transaction); try again later. It counts
      // as a failure, so that the wait grows: on a full disk the cloud answers every resend, and only the local
      // acknowledgement fails, until space returns.
      this.#state.consecutiveFailures++;
      try {
        this.#listener.failed(error as Error);
      } finally {
        this.#afterCycle('failed');
      }
      throw error;
    } finally {
      this.#cycle = undefined;
    }
  }

  #afterCycle(end: CycleEnd): void {
    const { maxBackoffMs, intervalMs } = this.#settings;
    switch (end) {
      case 'interrupted':
        return; // syncNow() runs next, and schedules after itself
      case 'aborted':
        if (!this.#controller.signal.aborted) this.#schedule(this.#idleDelay(), true);
        return;
      case 'yielded':
        this.#schedule(0, true);
        return;
      case 'drained':
        this.#backingOff = false;
        this.#adaptiveMs = Math.max(Math.min(ADAPTIVE_MIN_INTERVAL_MS, intervalMs), this.#adaptiveMs / 2);
        this.#schedule(this.#idleDelay(), true);
        return;
      default: {
        this.#backingOff = true;
        this.#adaptiveMs = Math.min(maxBackoffMs, this.#adaptiveMs * 2);
        const failures = this.#state.consecutiveFailures;
        // Out of attempts, refused credentials or an untrusted connection: the longest interval, jittered so that a
        // fleet spreads out. After a forced cycle's single failure: the backoff its failure count calls for.
        const delay =
          this.#plannedDelayMs ??
          (end === 'unauthorized' || end === 'untrusted' || failures >= this.#settings.maxRetryAttempts
            ? Math.round(maxBackoffMs * (0.5 + Math.random() * 0.5))
            : backoffDelay(failures, this.#backoffBounds()));
        this.#plannedDelayMs = undefined;
        this.#schedule(Math.max(delay, this.#retryAfterFloorMs), true);
        this.#retryAfterFloorMs = 0;
      }
    }
  }

  #setOnline(online: boolean, reason: string): void {
    // An answer came over a connection that passed every TLS check.
    if (online) this.#state.tlsFailure = null;
    if (this.#reachabilityKnown && this.#state.isOnline === online) return;
    this.#reachabilityKnown = true;
    this.#state.isOnline = online;
    this.#listener.onlineChanged(online, reason);
  }

  // The server stamped its answer somewhere within the round trip: compare it with the local clock at the middle.
  #noteServerTime(serverTime: string | undefined, roundTripMs: number): void {
    if (!serverTime) return;
    this.#records?.observeServerTime(serverTime, roundTripMs);
    const server = Date.parse(serverTime);
    if (!Number.isNaN(server)) this.#state.clockSkewMs = Math.round(server - (Date.now() - roundTripMs / 2));
  }

  #fail(event: SyncErrorEvent): void {
    this.#state.failedSyncCount++;
    this.#state.lastError = { ...event, at: new Date() };
    // A pin mismatch may be an interception attempt: worth more than a warning.
    if (event.code === 'PIN_MISMATCH') this.#logger.error({ ...event }, 'sync refused: certificate pin mismatch');
    else this.#logger.warn({ ...event }, 'sync failed');
    this.#listener.syncError(event);
  }

  // No trusted connection: nothing was sent, and retrying soon would meet the same certificate. Waits the longest
  // interval (jittered, announced in the event), as for refused credentials; the health check says why.
  #untrusted(code: 'tls' | 'pin-mismatch', message: string, batchNo?: number): void {
    const syncCode = retryableCode(code) as TlsFailureCode;
    this.#setOnline(false, message);
    this.#state.tlsFailure = { code: syncCode, message };
    this.#state.consecutiveFailures++;
    const delay = Math.round(this.#settings.maxBackoffMs * (0.5 + Math.random() * 0.5));
    this.#plannedDelayMs = delay;
    this.#fail({ code: syncCode, message, retryInMs: delay, ...(batchNo === undefined ? {} : { batchNo }) });
  }

  #nextBatch(): SealedBatch | undefined {
    const { deviceId, compression } = this.#settings;
    const header = { deviceId, replicaId: this.#storage.replicaId };
    const format = this.#jsonOnly ? 'json' : this.#settings.wireFormat;
    return (
      this.#storage.oldestBatch() ??
      this.#storage.sealNext(this.#sealLimit, (batchNo, rows) =>
        encodeBatch(header, batchNo, rows, compression, format),
      )
    );
  }

  #backoffBounds() {
    return { initialMs: this.#settings.initialBackoffMs, maxMs: this.#settings.maxBackoffMs };
  }

  // `pull` forces (true) or skips (false) the records pull; by default it runs once per sync interval.
  async #cycleOnce(
    signal: AbortSignal,
    patient: boolean,
    pull?: boolean,
  ): Promise<{ result: SyncResult; end: CycleEnd }> {
    const started = performance.now();
    const result: SyncResult = {
      sent: 0,
      acknowledged: 0,
      duplicates: 0,
      failed: 0,
      deadLettered: 0,
      remaining: 0,
      durationMs: 0,
      bytesSent: 0,
    };
    const finish = (end: CycleEnd) => {
      result.remaining = this.#storage.pendingCount();
      result.durationMs = Math.round(performance.now() - started);
      const records = result.records;
      const recordsMoved = records !== undefined && records.pushed + records.pulled > 0;
      if (result.acknowledged > 0 || result.deadLettered > 0 || recordsMoved) this.#listener.synced({ ...result });
      return { result, end };
    };
    // Records first: they are few and small, and a setpoint matters more than the thousandth reading.
    let answered = false;
    const records = this.#records;
    if (records?.supported && !signal.aborted) {
      const due = this.#lastPullAt === undefined || performance.now() - this.#lastPullAt >= this.#settings.intervalMs;
      const pulling = pull ?? (due || 'if-pushed');
      let cycle: Awaited<ReturnType<RecordsSync['run']>>;
      try {
        cycle = await records.run(this.#transport, signal, pulling);
      } catch (error) {
        if (signal.aborted) return finish('aborted');
        throw error; // the local database failed: #run reports it
      }
      const { failure, serverTime, ...summary } = cycle;
      if (records.supported) result.records = summary;
      if (serverTime) {
        this.#noteServerTime(serverTime.at, serverTime.roundTripMs);
        this.#setOnline(true, 'cloud answered');
        answered = true;
        if (pulling === true && !failure) this.#lastPullAt = performance.now();
      }
      if (failure) {
        switch (failure.status) {
          case 'unauthorized':
            this.#setOnline(true, 'cloud answered');
            this.#state.authRefused = true;
            this.#state.consecutiveFailures++;
            this.#fail({
              code: 'AUTH_REFUSED',
              message: `the cloud refused the API key (HTTP ${failure.httpStatus}): ${failure.message}`,
              httpStatus: failure.httpStatus,
              retryInMs: this.#settings.maxBackoffMs,
            });
            return finish('unauthorized');
          case 'refused':
            this.#setOnline(true, 'cloud answered');
            this.#fail({ code: 'RECORDS_REFUSED', message: failure.message, httpStatus: failure.httpStatus });
            break;
          case 'retryable': {
            // With readings queued, their sends meet the same failure (or not) and report it, back off, or carry
            // on; the records go again next cycle. With none, the failure ends the cycle here. So does a 429: the
            // cloud's budget is per key, and sending readings before its Retry-After would only be refused again.
            if (this.#storage.pendingCount() > 0 && failure.code !== 'throttled') {
              this.#logger.debug({ message: failure.message }, 'records sync failed; sending readings');
              break;
            }
            if (untrusted(failure.code)) {
              this.#untrusted(failure.code, failure.message);
              return finish('untrusted');
            }
            if (failure.code !== 'throttled') this.#setOnline(false, failure.message);
            this.#state.consecutiveFailures++;
            const delay = backoffDelay(this.#state.consecutiveFailures, this.#backoffBounds(), failure.retryAfterMs);
            this.#plannedDelayMs = delay;
            this.#fail({
              code: retryableCode(failure.code),
              message: `records: ${failure.message}`,
              retryInMs: delay,
              ...(failure.httpStatus === undefined ? {} : { httpStatus: failure.httpStatus }),
            });
            return finish('failed');
          }
        }
      }
    }
    let attempts = 0;
    let conflicts = 0;
    for (let batches = 0; batches < MAX_BATCHES_PER_CYCLE; batches++) {
      if (signal.aborted) return finish('aborted');
      const batch = this.#nextBatch();
      if (!batch) {
        const probed = result.sent === 0 && !answered ? await this.#probe(signal) : undefined;
        if (probed && !signal.aborted) {
          this.#untrusted(probed.code, probed.message);
          return finish('untrusted');
        }
        return finish(signal.aborted ? 'aborted' : 'drained');
      }
      result.sent += batch.count;
      result.bytesSent += batch.body.byteLength;
      const sentAt = performance.now();
      let outcome: SendResult;
      try {
        outcome = await this.#transport.sendBatch(
          {
            replicaId: this.#storage.replicaId,
            batchNo: batch.batchNo,
            count: batch.count,
            body: batch.body,
            contentType: batch.contentType,
            contentEncoding: batch.contentEncoding,
            idempotencyKey: `${this.#storage.replicaId}:${batch.batchNo}`,
          },
          signal,
        );
      } catch (error) {
        if (signal.aborted) {
          result.failed += batch.count;
          return finish('aborted');
        }
        // A transport that throws breaks its contract; treat it as a network failure so that nothing stalls.
        outcome = { status: 'retryable', code: 'network', message: (error as Error).message };
      }

      if (outcome.status === 'acknowledged' && outcome.ack.ackThroughBatchNo < batch.batchNo) {
        // An answer for another batch (a caching proxy, a confused server) acknowledges nothing of this one.
        outcome = {
          status: 'retryable',
          code: 'server',
          message: `the cloud acknowledged batch ${outcome.ack.ackThroughBatchNo} for batch ${batch.batchNo}`,
        };
      }
      this.#listener.sent?.({
        count: batch.count,
        bytes: batch.body.byteLength,
        rawBytes: batch.rawBytes,
        seconds: (performance.now() - sentAt) / 1000,
        status: outcome.status,
      });
      switch (outcome.status) {
        case 'acknowledged': {
          this.#storage.acknowledge(batch.batchNo);
          this.#noteServerTime(outcome.ack.serverTime, performance.now() - sentAt);
          this.#setOnline(true, 'batch acknowledged');
          this.#state.lastSyncTime = new Date();
          this.#state.lastSyncMonotonic = performance.now();
          this.#state.consecutiveFailures = 0;
          this.#state.authRefused = false;
          this.#sealLimit = Math.min(this.#settings.batchSize, this.#sealLimit * 2);
          attempts = 0;
          result.acknowledged += batch.count;
          result.duplicates += outcome.replayed ? batch.count : Math.min(batch.count, outcome.ack.duplicates);
          continue;
        }
        case 'rejected': {
          this.#setOnline(true, 'cloud answered');
          const moved = this.#isolate(batch, outcome.rejected, outcome.message);
          result.deadLettered += moved;
          this.#fail({
            code: 'REJECTED',
            message: outcome.message,
            httpStatus: outcome.httpStatus,
            batchNo: batch.batchNo,
          });
          continue;
        }
        case 'unsupported': {
          this.#setOnline(true, 'cloud answered');
          if (batch.contentType === COMPACT_BATCH_CONTENT_TYPE && !this.#jsonOnly) {
            // Negotiation: this cloud does not take the compact codec. Reseal as JSON, for the rest of this run.
            this.#jsonOnly = true;
            this.#logger.warn({ httpStatus: outcome.httpStatus }, 'the cloud refuses compact batches; sending JSON');
            this.#storage.unseal(batch.batchNo, new Map(), 'cloud');
            continue;
          }
          result.failed += batch.count;
          this.#state.consecutiveFailures++;
          this.#fail({
            code: 'SERVER_ERROR',
            message: outcome.message,
            httpStatus: outcome.httpStatus,
            batchNo: batch.batchNo,
          });
          return finish('failed');
        }
        case 'conflict': {
          this.#setOnline(true, 'cloud answered');
          // The key was used for other bytes (a restored database?): reseal these rows under a new number.
          this.#storage.unseal(batch.batchNo, new Map(), 'cloud');
          this.#fail({ code: 'BATCH_KEY_CONFLICT', message: outcome.message, httpStatus: 409, batchNo: batch.batchNo });
          if (++conflicts > 3) return finish('failed');
          continue;
        }
        case 'unauthorized': {
          this.#setOnline(true, 'cloud answered');
          this.#state.authRefused = true;
          this.#state.consecutiveFailures++;
          result.failed += batch.count;
          this.#storage.recordAttempt(batch.batchNo);
          this.#fail({
            code: 'AUTH_REFUSED',
            message: `the cloud refused the API key (HTTP ${outcome.httpStatus}): ${outcome.message}`,
            httpStatus: outcome.httpStatus,
            batchNo: batch.batchNo,
            retryInMs: this.#settings.maxBackoffMs,
          });
          return finish('unauthorized');
        }
        case 'retryable': {
          result.failed += batch.count;
          this.#storage.recordAttempt(batch.batchNo);
          if (untrusted(outcome.code)) {
            this.#untrusted(outcome.code, outcome.message, batch.batchNo);
            return finish('untrusted');
          }
          // An answer, even a 5xx or a 429, came over a trusted connection.
          if (outcome.httpStatus !== undefined) this.#state.tlsFailure = null;
          this.#state.consecutiveFailures++;
          attempts++;
          if (outcome.code !== 'throttled') this.#setOnline(false, outcome.message);
          const exhausted = attempts >= this.#settings.maxRetryAttempts;
          if (exhausted || !patient) this.#retryAfterFloorMs = outcome.retryAfterMs ?? 0;
          const delay = exhausted
            ? Math.max(this.#settings.maxBackoffMs, outcome.retryAfterMs ?? 0)
            : backoffDelay(attempts, this.#backoffBounds(), outcome.retryAfterMs);
          this.#fail({
            code: retryableCode(outcome.code),
            message: outcome.message,
            batchNo: batch.batchNo,
            retryInMs: delay,
            ...(outcome.httpStatus === undefined ? {} : { httpStatus: outcome.httpStatus }),
          });
          if (exhausted || !patient) return finish('failed');
          try {
            await sleep(delay, AbortSignal.any([signal, this.#wake.signal]));
          } catch {
            return finish(signal.aborted ? 'aborted' : 'interrupted');
          }
          continue;
        }
      }
    }
    return finish('yielded');
  }

  // Sets aside what the cloud refused: the named readings, or, when it did not name them, halves the batch until
  // the refused reading stands alone. Returns how many readings went to the dead letters.
  #isolate(
    batch: SealedBatch,
    rejected: readonly { seq: number; reason: string }[] | undefined,
    message: string,
  ): number {
    const named = new Map<number, string>();
    for (const { seq, reason } of rejected ?? []) {
      if (seq >= batch.firstSeq && seq <= batch.lastSeq) named.set(seq, reason);
    }
    if (named.size === 0 && batch.count === 1) named.set(batch.firstSeq, message);
    const moved = this.#storage.unseal(batch.batchNo, named, 'cloud');
    if (moved === 0) {
      this.#sealLimit = Math.max(1, Math.floor(batch.count / 2));
      return 0;
    }
    this.#sealLimit = this.#settings.batchSize;
    this.#listener.deadLettered(moved, message);
    return moved;
  }

  // Returns the failure when the probe met a connection it could not trust (the caller reports it).
  async #probe(signal: AbortSignal): Promise<{ code: 'tls' | 'pin-mismatch'; message: string } | undefined> {
    const sentAt = performance.now();
    try {
      const ping = await this.#transport.ping(signal);
      if (ping.reachable) {
        this.#noteServerTime(ping.serverTime, performance.now() - sentAt);
        this.#setOnline(true, 'cloud answered');
      } else if (untrusted(ping.code)) return { code: ping.code, message: ping.message };
      else this.#setOnline(false, ping.message);
    } catch (error) {
      if (!signal.aborted) this.#setOnline(false, (error as Error).message);
    }
    return undefined;
  }
}
