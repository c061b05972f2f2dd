import type { Logger } from '../logger.js';
import type {
  CleanupStrategy,
  HistoryPruned,
  OutboxRemoval,
  RetentionListener,
  RetentionStorage,
} from '../storage/retention.js';

/** Most rows one cleanup transaction may touch; intake runs between transactions. */
export const CLEANUP_CHUNK_ROWS = 5000;
/** Fewest rows a cleanup transaction is given, however slow the disk. */
const MIN_CHUNK_ROWS = 100;
/**
 * How long one cleanup transaction should take: the chunk halves after a slower one and doubles after one under a
 * quarter of it, so that a slow disk (an SD card) gets short transactions and intake never waits for long.
 */
const TARGET_STEP_MS = 20;
/**
 * Free pages one compaction step gives back (1 MiB at SQLite's default 4 KiB pages): about 5-15 ms here. Small
 * steps also move fewer pages through the WAL than one large one.
 */
export const COMPACT_STEP_PAGES = 256;
/** Compaction starts when at least this many pages are free (1 MiB at 4 KiB pages) ... */
const COMPACT_MIN_FREE_PAGES = 256;
/** ... and they are at least this share of the file. */
const COMPACT_MIN_FREE_SHARE = 0.25;
/**
 * A file made with auto_vacuum off is converted by one VACUUM, which rewrites every page in use in one go (about
 * 40 ms per MiB here): only while it holds at most this many (1 MiB at 4 KiB pages), that is, once the queue drained.
 */
export const CONVERT_MAX_LIVE_PAGES = 256;
const DAY_MS = 86_400_000;
/** Wait after a drain before compaction looks at the freelist, so that a run of acknowledgements settles first. */
const AFTER_DRAIN_MS = 1000;

/** The retention settings the manager reads at every pass. */
export interface RetentionSettings {
  maxDays: number | undefined;
  strategy: CleanupStrategy;
  intervalMs: number;
}

/** What one cleanup did. */
export interface CleanupReport {
  /** Rows of local history pruned, by prune step (e.g. `dead_letters`). */
  pruned: Record<string, number>;
  /** Queued readings removed: past `maxDays` under `drop-oldest` (`retention`), to bring the queue within a budget
   * (`drop-oldest`), replaced by aggregates (`downsampled`). */
  removed: { retention: number; 'drop-oldest': number; downsampled: number };
  /** Aggregate rows queued in place of downsampled readings. */
  aggregates: number;
  /** Idempotency keys of the ingest endpoint forgotten: past their window, or past the ledger's bound. */
  ingestKeys: number;
  /** Bytes given back to the file system. */
  reclaimedBytes: number;
  durationMs: number;
}

/** Totals since start, for status. */
export interface RetentionTotals {
  pruned: Record<string, number>;
  removed: CleanupReport['removed'];
  aggregates: number;
  reclaimedBytes: number;
  cleanups: number;
  lastCleanupAt: Date | null;
}

/** What the manager tells the gateway. */
export interface RetentionEvents {
  removed(removal: OutboxRemoval): void;
  pruned(pruned: HistoryPruned): void;
  failed(error: Error): void;
}

const nextTick = () => new Promise<void>((resolve) => setImmediate(resolve));

const emptyRemoved = (): CleanupReport['removed'] => ({ retention: 0, 'drop-oldest': 0, downsampled: 0 });

/**
 * Runs retention on a storage: a cleanup pass every `cleanupInterval` (and at start, and when asked), each made of
 * bounded steps (at most {@link CLEANUP_CHUNK_ROWS} rows, fewer when a step takes more than about 20 ms, or one
 * compaction step, per transaction) with the event loop yielded between steps, so that intake never waits for more
 * than one step. A pass:
 * 1. prunes local history past `maxDays`;
 * 2. applies the strategy to queued readings past `maxDays`;
 * 3. brings the queue back within `maxRecords` and the file within `maxBytes` (after either was lowered);
 * 4. forgets the ingest endpoint's idempotency keys past their window (whatever the strategy, with or without
 *    `maxDays`), so that they do not stay once keyed requests stop;
 * 5. gives free pages back to the file system when the queue is (nearly) empty and a quarter of the file is free.
 * It is also the storage's {@link RetentionListener}: it counts what the storage removed (at intake too) and
 * passes it on.
 */
export class RetentionManager implements RetentionListener {
  readonly #storage: RetentionStorage;
  readonly #settings: () => RetentionSettings;
  readonly #now: () => number;
  readonly #ledgerNow: () => number;
  readonly #idle: () => boolean;
  readonly #events: RetentionEvents;
  readonly #logger: Logger;
  #controller = new AbortController();
  #timer: NodeJS.Timeout | undefined;
  #drainTimer: NodeJS.Timeout | undefined;
  #running: Promise<CleanupReport> | undefined;
  /** Compaction started by a drain, outside a pass. */
  #compacting: Promise<void> | undefined;
  #chunk = CLEANUP_CHUNK_ROWS;
  readonly #totals: RetentionTotals = {
    pruned: {},
    removed: emptyRemoved(),
    aggregates: 0,
    reclaimedBytes: 0,
    cleanups: 0,
    lastCleanupAt: null,
  };

  constructor(options: {
    storage: RetentionStorage;
    settings: () => RetentionSettings;
    /** The wall clock, epoch ms: what `maxDays` is counted back from. */
    now: () => number;
    /** The clock idempotency keys' expiries are written by (the gateway's steady clock), epoch ms. @default now */
    ledgerNow?: () => number;
    /** True when the queue is small enough that giving space back will not be undone at once. */
    idle: () => boolean;
    events: RetentionEvents;
    logger: Logger;
  }) {
    this.#storage = options.storage;
    this.#settings = options.settings;
    this.#now = options.now;
    this.#ledgerNow = options.ledgerNow ?? options.now;
    this.#idle = options.idle;
    this.#events = options.events;
    this.#logger = options.logger;
  }

  /** Totals since start. */
  get totals(): Readonly<RetentionTotals> {
    return { ...this.#totals, pruned: { ...this.#totals.pruned }, removed: { ...this.#totals.removed } };
  }

  /** Starts the schedule: a pass at once, then one every `cleanupInterval`. */
  start(): void {
    this.#controller = new AbortController();
    this.#schedule(0);
  }

  /** Stops the schedule and waits for a pass in progress to finish its current step. */
  async stop(): Promise<void> {
    this.#controller.abort();
    if (this.#timer) clearTimeout(this.#timer);
    if (this.#drainTimer) clearTimeout(this.#drainTimer);
    this.#timer = undefined;
    this.#drainTimer = undefined;
    await Promise.all([this.#running?.catch(() => undefined), this.#compacting]);
  }

  /** Settings changed: a pass soon, and the interval counted from it. */
  kick(): void {
    this.#schedule(0);
  }

  /** The queue drained: look at the freelist soon (compaction only). */
  noteDrained(): void {
    if (this.#drainTimer || this.#controller.signal.aborted) return;
    this.#drainTimer = setTimeout(() => {
      this.#drainTimer = undefined;
      if (this.#running || this.#compacting || this.#controller.signal.aborted) return;
      this.#compacting = this.#compact(this.#controller.signal)
        .then((bytes) => {
          this.#totals.reclaimedBytes += bytes;
          if (bytes > 0) this.#logger.info({ reclaimedBytes: bytes }, 'gave free space back after the queue drained');
        })
        .catch((error: unknown) => this.#events.failed(error as Error))
        .finally(() => {
          this.#compacting = undefined;
        });
    }, AFTER_DRAIN_MS);
    this.#drainTimer.unref();
  }

  /**
   * Runs a pass now (after the one in progress, if any) and resolves with what it did. It stands for the scheduled
   * pass: the next one is due `cleanupInterval` after it.
   */
  async run(): Promise<CleanupReport> {
    if (this.#timer) clearTimeout(this.#timer);
    this.#timer = undefined;
    while (this.#running) await this.#running.catch(() => undefined);
    const pass = this.#pass(this.#controller.signal);
    this.#running = pass;
    try {
      return await pass;
    } finally {
      if (this.#running === pass) this.#running = undefined;
      this.#schedule(this.#settings().intervalMs);
    }
  }

  // ---- RetentionListener ----

  removed(removal: OutboxRemoval): void {
    this.#totals.removed[removal.reason] += removal.count;
    this.#totals.aggregates += removal.aggregates;
    this.#events.removed(removal);
  }

  pruned(pruned: HistoryPruned): void {
    this.#totals.pruned[pruned.step] = (this.#totals.pruned[pruned.step] ?? 0) + pruned.count;
    this.#events.pruned(pruned);
  }

  // ----

  #schedule(delayMs: number): void {
    if (this.#controller.signal.aborted) return;
    if (this.#timer) clearTimeout(this.#timer);
    this.#timer = setTimeout(() => {
      this.#timer = undefined;
      this.run().catch((error: unknown) => this.#events.failed(error as Error));
    }, delayMs);
    this.#timer.unref();
  }

  async #pass(signal: AbortSignal): Promise<CleanupReport> {
    const started = performance.now();
    const before = this.totals;
    const storage = this.#storage;
    const { maxDays, strategy } = this.#settings();
    // Runs `work` a chunk at a time until it says there is no more, yielding between calls; stops early when the
    // gateway stops.
    const steps = async (work: (limit: number) => boolean) => {
      while (!signal.aborted) {
        const at = performance.now();
        const more = work(this.#chunk);
        this.#adapt(performance.now() - at);
        if (!more) return;
        await nextTick();
      }
    };
    if (maxDays !== undefined) {
      const cutoff = this.#now() - maxDays * DAY_MS;
      await steps((limit) => storage.pruneHistory(cutoff, limit) > 0);
      if (strategy !== 'reject-new') {
        let from: number | undefined = 0;
        // Up to the newest row queued now: readings arriving meanwhile are not old, and need not be chased.
        const until = storage.lastSeq();
        await steps((limit) => {
          from = storage.expire(cutoff, from as number, limit, until);
          return from !== undefined;
        });
      }
    }
    if (strategy !== 'reject-new') {
      await steps((limit) => storage.trim(limit) > 0);
      await steps((limit) => storage.overBudgetBytes() > 0 && storage.freeSpace(limit) > 0);
    }
    let ingestKeys = 0;
    if (storage.pruneIngestKeys) {
      const now = this.#ledgerNow();
      await steps((limit) => {
        const pruned = storage.pruneIngestKeys?.(now, limit) ?? 0;
        ingestKeys += pruned;
        return pruned >= limit;
      });
    }
    const reclaimedBytes = await this.#compact(signal);
    this.#totals.reclaimedBytes += reclaimedBytes;
    this.#totals.cleanups++;
    this.#totals.lastCleanupAt = new Date(this.#now());
    const after = this.#totals;
    const pruned: Record<string, number> = {};
    for (const [step, count] of Object.entries(after.pruned)) {
      const delta = count - (before.pruned[step] ?? 0);
      if (delta > 0) pruned[step] = delta;
    }
    const removed = emptyRemoved();
    for (const reason of Object.keys(removed) as (keyof CleanupReport['removed'])[]) {
      removed[reason] = after.removed[reason] - before.removed[reason];
    }
    const report: CleanupReport = {
      pruned,
      removed,
      aggregates: after.aggregates - before.aggregates,
      ingestKeys,
      reclaimedBytes,
      durationMs: Math.round(performance.now() - started),
    };
    const busy = Object.keys(pruned).length > 0 || removed.retention + removed['drop-oldest'] + removed.downsampled > 0;
    if (busy || ingestKeys > 0 || reclaimedBytes > 0) this.#logger.info({ ...report }, 'retention cleanup');
    return report;
  }

  #adapt(stepMs: number): void {
    if (stepMs > TARGET_STEP_MS) this.#chunk = Math.max(MIN_CHUNK_ROWS, Math.floor(this.#chunk / 2));
    else if (stepMs < TARGET_STEP_MS / 4) this.#chunk = Math.min(CLEANUP_CHUNK_ROWS, this.#chunk * 2);
  }

  // Gives free pages back while the queue stays (nearly) empty, a bounded step at a time. A file that keeps its free
  // pages costs nothing but disk (later appends reuse them), so this waits until they are many and no backlog is
  // about to take them again.
  async #compact(signal: AbortSignal): Promise<number> {
    const storage = this.#storage;
    if (!this.#idle()) return 0;
    const space = storage.space();
    if (space.freePages < Math.max(COMPACT_MIN_FREE_PAGES, COMPACT_MIN_FREE_SHARE * space.pageCount)) return 0;
    let freed = 0;
    while (!signal.aborted && this.#idle()) {
      const step = storage.compact(COMPACT_STEP_PAGES, CONVERT_MAX_LIVE_PAGES);
      freed += step.freedPages;
      if (step.freePages === 0 || step.freedPages === 0) break;
      await nextTick();
    }
    return freed * space.pageSize;
  }
}
