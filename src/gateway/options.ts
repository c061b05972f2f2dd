import { ConfigError } from '../errors.js';
import type { Logger } from '../logger.js';
import type { Processor } from '../processing/processor.js';
import { type EncryptionKey, keyProblems } from '../storage/encryption.js';
import type { CleanupStrategy } from '../storage/retention.js';
import { MIN_MAX_SIZE_BYTES } from '../storage/sqlite-storage.js';
import type { Storage } from '../storage/storage.js';
import type { CompressionSetting } from '../sync/batch-codec.js';
import type { ConflictResolver } from '../sync/conflict-resolver.js';
import type { SyncStrategy } from '../sync/sync-manager.js';
import { type CloudTlsOptions, cloudTlsProblems } from '../transport/cloud-tls.js';
import type { Transport } from '../transport/transport.js';
import * as z from '../zod.js';

/**
 * Options of {@link EdgeGateway}. Durations are in seconds, as in the `.env` file. The TLS options (`ca`, `cert`,
 * `key`, `pinnedCertificates`, `allowInsecure`) are those of {@link CloudTlsOptions}.
 */
export interface EdgeGatewayOptions extends CloudTlsOptions {
  /** Identifies this device to the cloud; 1 to 256 characters. */
  deviceId: string;
  /**
   * Base URL of the cloud API, e.g. `https://cloud.example.com/api/v1`. Without it the gateway stores and
   * processes locally and syncs nothing. Several URLs (up to 16, one scheme) name server nodes that share one
   * store: the gateway talks to one until it fails (network error, timeout, 5xx), then to the next, in turn; a
   * batch retried on another node is still stored once (docs/scaling.md).
   * @example ['https://cloud-a.example.com/api/v1', 'https://cloud-b.example.com/api/v1']
   */
  cloudUrl?: string | readonly string[] | undefined;
  /** Sent as `Authorization: Bearer <apiKey>`. */
  apiKey?: string | undefined;
  /** Path of the SQLite database file. @default './data/edge_gateway.db' */
  localDb?: string;
  /**
   * Encrypts the local database at rest: the whole file, its WAL and its journals, in SQLCipher 4's format (see
   * {@link EncryptionKey} for the forms a key takes, and docs/security-at-rest.md). A plaintext database found at
   * `localDb` is encrypted in place at `start()`, crash-safely. A wrong key makes `start()` reject with
   * `EncryptionKeyError`, the file untouched. Change it at run time with `rotateEncryptionKey()`. Not used with a
   * custom `storage`.
   * @default undefined (plaintext)
   */
  encryptionKey?: EncryptionKey | undefined;
  /**
   * Keys the database may still be under after a rotation that did not finish (a crash during
   * `rotateEncryptionKey()`, or a restart before the host saved the new key): when `encryptionKey` does not open
   * the file, `start()` tries these and, with the one that fits, re-encrypts the file under `encryptionKey`.
   * Hosts rotate keys crash-safely by saving the new key as `encryptionKey` and the old one here before calling
   * `rotateEncryptionKey()`, and dropping the old one once it resolved. @default []
   */
  previousEncryptionKeys?: readonly EncryptionKey[] | undefined;
  /**
   * When to sync. `adaptive` shortens its interval while syncs succeed, backs off while they fail and syncs
   * sooner as the queue grows; `fixed-interval` syncs every `syncInterval`; `on-change` syncs shortly after each
   * intake (debounced 50 ms).
   * @default 'adaptive'
   */
  syncStrategy?: SyncStrategy;
  /** Seconds between syncs (the adaptive strategy's starting point, and its idle probe interval). @default 60 */
  syncInterval?: number;
  /** Readings per batch sent to the cloud, 1 to 10000. @default 100 */
  batchSize?: number;
  /**
   * How batches are encoded on the wire: `compact`, the binary codec of protocol v2 (about 1 byte per reading
   * for slowly changing sensors, against 7 for gzip'd JSON), or `json` (protocol v1). A cloud that answers 415
   * to a compact batch gets JSON from then on. @default 'compact'
   */
  wireFormat?: 'compact' | 'json';
  /** Compress batch bodies (gzip for JSON, deflate inside the compact codec); `true` means level 6. @default true */
  compression?: boolean | { level: number };
  /**
   * Worker threads that encode and compress batches off the event loop, 0 to 16; 0 encodes on the event loop.
   * They take only gzip'd JSON batches of 1000 readings or more (`wireFormat: 'json'`, compression on, a large
   * `batchSize`), the only ones whose encoding costs the event loop much more than handing their rows to a thread;
   * a compact batch costs less to encode than to hand over (docs/benchmarks.md, "Event loop"). A thread starts with
   * the first batch it takes, so a setting that never meets one costs nothing. The sync loop encodes one batch at a
   * time, so one thread does all the work today.
   * @default 0
   */
  workerThreads?: number;
  /**
   * Most readings kept waiting for the cloud (`retention.maxRecords` is the same setting). When full, the
   * retention's `cleanupStrategy` applies: by default (`reject-new`) `sendData()` rejects with `QueueFullError`
   * and the refusal is counted and emitted as `dropped`. @default 1000000
   */
  maxOfflineQueueSize?: number;
  /**
   * The most bytes the local database file may take, at least 1 MiB (1048576). When readings fill it,
   * `sendData()` and `sendBatch()` reject with `StorageError` (`sqliteCode` `SQLITE_FULL`), nothing of them is
   * stored, and the health check reports `unhealthy`; as the cloud acknowledges batches their room is reused and
   * intake resumes by itself. The last 1/32 of the budget is kept for syncing, so a full database still drains.
   * The WAL file comes on top (up to about 4 MiB between checkpoints). Not used with a custom `storage`.
   * Under the `drop-oldest` and `downsample-oldest` cleanup strategies the gateway makes room instead of refusing
   * (see {@link RetentionOptions}). `retention.maxBytes` is the same setting.
   * @default undefined (no limit but the disk)
   */
  maxDatabaseSize?: number | undefined;
  /**
   * Retention: how long local data is kept, and what happens to queued readings when a budget is reached. Merged
   * into the retention in force by `configure({ retention })` and {@link EdgeGateway.configureRetention}.
   */
  retention?: RetentionOptions;
  /**
   * Seconds a database statement waits for a lock another connection holds (a backup, the `sqlite3` shell, a
   * checkpointing reader), and that `start()` waits for another gateway to let go of the database before it
   * rejects with `StorageError` naming that process (`inUseBy`). @default 5
   */
  dbTimeout?: number;
  /** Seconds allowed for one request to the cloud. @default 30 */
  connectionTimeout?: number;
  /**
   * Attempts to send a batch in one sync cycle before the gateway waits its longest interval (`maxBackoff`).
   * Nothing is ever dropped because attempts ran out. @default 5
   */
  maxRetryAttempts?: number;
  /** Ceiling of the first retry delay, in seconds; later retries double it (with full jitter). @default 1 */
  initialBackoff?: number;
  /** The longest wait between sync attempts, in seconds. @default 300 */
  maxBackoff?: number;
  /**
   * `full`: each commit is fsync'd, so a power cut loses nothing accepted. `normal`: faster, and safe against a
   * process crash, but a power cut may lose the last commits. @default 'full'
   */
  durability?: 'full' | 'normal';
  /** Seconds `stop()` may spend sending what is queued before it closes. @default 5 */
  stopTimeout?: number;
  /** Transforms each reading before it is stored: a chain of one. Give this or `processors`. */
  processor?: Processor | undefined;
  /**
   * A chain: each reading goes through the processors in order; what one returns as readings goes on to the next.
   * Custom processors come first, the built-ins (`WindowedAggregation`, `Deadband`, `ThresholdAlerts`,
   * `RateOfChange`) after them: they run inside the commit. See docs/processors.md.
   */
  processors?: readonly Processor[] | undefined;
  /**
   * Seconds a processor's asynchronous `process()` (or a lifecycle hook) may take; past it the reading goes to the
   * dead letters as if the processor had thrown. @default 5
   */
  processorTimeout?: number;
  /** `false` turns the built-in processors off (they pass readings through untouched); custom ones still run. @default true */
  localAnalytics?: boolean;
  /**
   * Seconds within which an alert with the same source, sensor and message as a stored one is counted into it
   * (`count`) rather than raised, stored and synced again. Measured on the alerts' own timestamps. 0 turns it
   * off. @default 60
   */
  alertDedupWindow?: number;
  /** Most alerts kept locally for `alerts()`; the oldest go first. @default 10000 */
  maxStoredAlerts?: number;
  /**
   * What is kept for `query()` besides the unsent queue (acknowledged rows leave the queue): `readings`, the most
   * raw readings kept (a second copy of each, so it costs intake throughput; 0 keeps none), and `aggregates`, the
   * most closed aggregation windows kept. Both bounded by count, the oldest going first.
   * @default { readings: 0, aggregates: 100000 }
   */
  localHistory?: { readings?: number; aggregates?: number };
  /** Replaces the SQLite storage (then `localDb` and `durability` are not used). */
  storage?: Storage | undefined;
  /** Replaces the HTTP transport (then `cloudUrl`, `apiKey` and `connectionTimeout` are not used). */
  transport?: Transport | undefined;
  /** Chooses between edge and cloud versions of shared records. @default last-write-wins */
  conflictResolver?: ConflictResolver | undefined;
  /** Seconds a conflict resolver may take on one conflict; past it the edit stays pending. @default 5 */
  conflictResolverTimeout?: number;
  /**
   * Seconds an edit's clock may run ahead of the cloud's before it is judged at the cloud's time (the reference
   * server applies the same bound, default 60). @default 60
   */
  maxClockSkew?: number;
  /**
   * The wall clock, epoch ms: records' hybrid logical clock, retention's `maxDays` and the ingest endpoint's
   * idempotency window read it. For tests. @default Date.now
   */
  clock?: (() => number) | undefined;
  /** A pino-compatible logger. @default silent */
  logger?: Logger | undefined;
  /**
   * Collect Prometheus metrics from `start()` on (see `EdgeGateway.metrics()`). Off, the metrics module
   * (prom-client, about 13 MiB) is loaded only when `metrics()`, `metricsRegistry()` or `serveHttp()` is first
   * called, and counts from then on. @default false
   */
  metrics?: boolean;
  /**
   * Seconds the gateway may stay online with readings waiting and nothing acknowledged before the health check
   * reports it `degraded` (a stuck batch, a cloud that keeps throttling). @default max(3 × syncInterval, 60)
   */
  stallTimeout?: number | undefined;
  /**
   * Seconds during which a reading set aside in the dead letters (refused by the cloud, or failed in a processor)
   * keeps the health check `degraded`: dead letters that keep growing need a look. @default 900
   */
  deadLetterWindow?: number;
}

/**
 * Retention options: the seed's `configure_retention(max_days, max_records, cleanup_strategy, ...)`. Durations in
 * seconds. Each budget bounds the disk; what happens when one is reached is `cleanupStrategy`'s choice, and every
 * reading removed is counted by reason (`getStatus().dropped`) and emitted as `dropped`.
 *
 * @example
 * ```ts
 * gateway.configureRetention({ maxDays: 7, maxRecords: 50_000, cleanupStrategy: 'downsample-oldest' });
 * ```
 */
export interface RetentionOptions {
  /**
   * Days local data is kept, by its timestamp (fractions allowed). Local history past it (dead letters, and what
   * other features keep for local queries) is pruned at every cleanup whatever the strategy; queued readings past
   * it are dropped under `drop-oldest` and downsampled under `downsample-oldest` (`reject-new` never removes
   * queued readings). @default undefined (no age limit)
   */
  maxDays?: number | undefined;
  /** Most readings queued for the cloud: the `maxOfflineQueueSize` option, under this name. @default 1000000 */
  maxRecords?: number;
  /** Most bytes the database file may take: the `maxDatabaseSize` option, under this name. @default undefined */
  maxBytes?: number | undefined;
  /**
   * What happens to queued readings at `maxRecords` or `maxBytes` (and past `maxDays`):
   * - `reject-new`: new readings are refused (`QueueFullError`, or `StorageError` `SQLITE_FULL` at `maxBytes`);
   *   nothing queued is removed;
   * - `drop-oldest` (the seed's `oldest-first` is accepted as another name): the oldest queued readings not yet
   *   sealed into a batch are deleted to make room (`dropped`, reason `drop-oldest`, or `retention` past `maxDays`);
   *   queued alerts are never removed;
   * - `downsample-oldest`: the oldest raw readings are first replaced by one aggregate per sensor and window of
   *   `downsampleWindow` (`dropped`, reason `downsampled`), queued as aggregates; only when nothing is left to
   *   downsample are the oldest rows dropped.
   * Under a size budget, local history is pruned, oldest first, before any queued reading (not under `reject-new`).
   * @default 'reject-new'
   */
  cleanupStrategy?: CleanupStrategy | 'oldest-first';
  /**
   * Seconds between cleanups (pruning past `maxDays`, bringing the queue back within lowered budgets, giving free
   * space back). A cleanup also runs at start, after `configureRetention()`, and (giving space back only) when the
   * queue has drained. @default 3600
   */
  cleanupInterval?: number;
  /** Window of `downsample-oldest`, seconds; windows are aligned to the epoch. @default 300 */
  downsampleWindow?: number;
}

/** Retention after defaults (the two budgets are `maxOfflineQueueSize` and `maxDatabaseSize`). */
export interface ResolvedRetention {
  maxDays: number | undefined;
  cleanupStrategy: CleanupStrategy;
  cleanupInterval: number;
  downsampleWindow: number;
}

const hasMethods =
  (...methods: string[]) =>
  (value: unknown) =>
    typeof value === 'object' &&
    value !== null &&
    methods.every((m) => typeof (value as Record<string, unknown>)[m] === 'function');

/** Most `workerThreads`. */
export const MAX_WORKER_THREADS = 16;

const seconds = (max: number) => z.number().check(z.positive(), z.lte(max));
const int = (min: number, max: number) => z.int().check(z.gte(min), z.lte(max));

const pem = z.union(
  [z.string().check(z.minLength(1)), z.instanceof(Buffer)],
  'expected PEM text, as a string or a Buffer',
);
const cloudUrlSchema = z
  .url({ protocol: /^https?$/ })
  .check(z.refine((url) => !/^[a-z]+:\/\/[^/?#]*@/i.test(url), 'no credentials in the URL; give the key as "apiKey"'));

const retentionSchema = z.strictObject({
  maxDays: z.optional(z.number().check(z.positive(), z.lte(36_500))),
  // Moved to maxOfflineQueueSize and maxDatabaseSize by normalizeOptions() before parsing; checked here when not.
  maxRecords: z.optional(z.int().check(z.positive())),
  maxBytes: z.optional(int(MIN_MAX_SIZE_BYTES, Number.MAX_SAFE_INTEGER)),
  cleanupStrategy: z._default(
    z.pipe(
      z.enum(['reject-new', 'drop-oldest', 'downsample-oldest', 'oldest-first']),
      z.transform((v): CleanupStrategy => (v === 'oldest-first' ? 'drop-oldest' : v)),
    ),
    'reject-new',
  ),
  cleanupInterval: z._default(seconds(7 * 86_400), 3600),
  downsampleWindow: z._default(seconds(86_400), 300),
});

export const optionsSchema = z.strictObject({
  deviceId: z.string().check(z.minLength(1), z.maxLength(256)),
  cloudUrl: z.optional(
    z.union([cloudUrlSchema, z.array(cloudUrlSchema).check(z.minLength(1), z.maxLength(16))]).check(
      z.refine((urls) => typeof urls === 'string' || new Set(urls.map((url) => new URL(url).protocol)).size === 1, {
        message: 'every URL of one scheme, http or https',
      }),
    ),
  ),
  apiKey: z.optional(
    z
      .string()
      .check(
        z.minLength(1),
        z.regex(/^[\x21-\x7e]+$/, 'visible ASCII characters without spaces, as a Bearer token is sent'),
      ),
  ),
  allowInsecure: z._default(z.boolean(), false),
  ca: z.optional(z.union([pem, z.readonly(z.array(pem).check(z.minLength(1)))])),
  cert: z.optional(pem),
  key: z.optional(pem),
  // The form of each pin is checked with the URL (cloudTlsProblems), with a message that names the entry.
  pinnedCertificates: z.optional(z.readonly(z.array(z.string()))),
  localDb: z._default(z.string().check(z.minLength(1)), './data/edge_gateway.db'),
  // Checked in resolveOptions, with messages that never show a key.
  encryptionKey: z.optional(z.custom<EncryptionKey>(() => true)),
  previousEncryptionKeys: z.optional(z.readonly(z.array(z.custom<EncryptionKey>(() => true)).check(z.maxLength(16)))),
  syncStrategy: z._default(z.enum(['adaptive', 'fixed-interval', 'on-change']), 'adaptive'),
  syncInterval: z._default(seconds(86_400), 60),
  batchSize: z._default(int(1, 10_000), 100),
  wireFormat: z._default(z.enum(['compact', 'json']), 'compact'),
  compression: z._default(z.union([z.boolean(), z.strictObject({ level: int(1, 9) })]), true),
  workerThreads: z._default(int(0, MAX_WORKER_THREADS), 0),
  maxOfflineQueueSize: z._default(z.int().check(z.positive()), 1_000_000),
  maxDatabaseSize: z.optional(int(MIN_MAX_SIZE_BYTES, Number.MAX_SAFE_INTEGER)),
  retention: z.prefault(retentionSchema, {}),
  dbTimeout: z._default(z.number().check(z.nonnegative(), z.lte(3600)), 5),
  connectionTimeout: z._default(seconds(3600), 30),
  maxRetryAttempts: z._default(int(1, 1000), 5),
  initialBackoff: z._default(seconds(3600), 1),
  maxBackoff: z._default(seconds(86_400), 300),
  durability: z._default(z.enum(['full', 'normal']), 'full'),
  stopTimeout: z._default(z.number().check(z.nonnegative(), z.lte(3600)), 5),
  processor: z.optional(z.custom<Processor>(hasMethods('process'), 'expected an object with a process() method')),
  processors: z.optional(
    z.readonly(
      z
        .array(z.custom<Processor>(hasMethods('process'), 'expected an object with a process() method'))
        .check(z.maxLength(100)),
    ),
  ),
  processorTimeout: z._default(seconds(3600), 5),
  localAnalytics: z._default(z.boolean(), true),
  alertDedupWindow: z._default(z.number().check(z.nonnegative(), z.lte(86_400 * 31)), 60),
  maxStoredAlerts: z._default(z.int().check(z.positive(), z.lte(100_000_000)), 10_000),
  localHistory: z._default(
    z.strictObject({
      readings: z._default(int(0, 1_000_000_000), 0),
      aggregates: z._default(z.int().check(z.positive(), z.lte(1_000_000_000)), 100_000),
    }),
    { readings: 0, aggregates: 100_000 },
  ),
  storage: z.optional(z.custom<Storage>(hasMethods('open', 'append', 'sealNext'), 'expected a Storage')),
  transport: z.optional(z.custom<Transport>(hasMethods('sendBatch', 'ping', 'close'), 'expected a Transport')),
  conflictResolver: z.optional(z.custom<ConflictResolver>(hasMethods('resolve'), 'expected an object with resolve()')),
  conflictResolverTimeout: z._default(seconds(3600), 5),
  maxClockSkew: z._default(seconds(86_400), 60),
  clock: z.optional(z.custom<() => number>((v) => typeof v === 'function', 'expected a function returning epoch ms')),
  logger: z.optional(
    z.custom<Logger>(hasMethods('debug', 'info', 'warn', 'error'), 'expected a pino-compatible logger'),
  ),
  metrics: z._default(z.boolean(), false),
  stallTimeout: z.optional(seconds(86_400)),
  deadLetterWindow: z._default(seconds(30 * 86_400), 900),
});

/** Options after defaults, as the gateway uses them (see `EdgeGateway.options`). */
export type ResolvedOptions = Omit<z.output<typeof optionsSchema>, 'retention'> & { retention: ResolvedRetention };

/** Options whose values are secrets: an error names them, never shows them. */
const SECRET_OPTION = /keys?$|secret|token|passphrase|password/i;

/**
 * `value` for a message: credentials in URLs masked, and fields named like secrets hidden, in plain objects and
 * arrays down to a few levels (deeper, and in class instances, nothing is shown).
 */
function redact(value: unknown, depth = 0): unknown {
  if (typeof value === 'string') return value.replace(/^([a-z][a-z0-9+.-]*:\/\/)[^/?#]*@/i, '$1***@');
  if (typeof value !== 'object' || value === null) return value;
  if (depth >= 4) return '…';
  if (Array.isArray(value)) return value.map((item) => redact(item, depth + 1));
  const prototype = Object.getPrototypeOf(value);
  if (prototype !== Object.prototype && prototype !== null) return `a ${value.constructor?.name ?? 'object'}`;
  return Object.fromEntries(
    Object.entries(value).map(([k, v]) => [
      k,
      SECRET_OPTION.test(k) && v !== undefined ? '[hidden]' : redact(v, depth + 1),
    ]),
  );
}

const describeValue = (value: unknown): string => {
  if (value === undefined) return 'undefined';
  if (typeof value === 'function') return 'a function';
  try {
    const json = JSON.stringify(value);
    return json.length > 60 ? `${json.slice(0, 60)}…` : json;
  } catch {
    return typeof value;
  }
};

function editDistance(a: string, b: string): number {
  const row = Array.from({ length: b.length + 1 }, (_, i) => i);
  for (let i = 1; i <= a.length; i++) {
    let previous = row[0] as number;
    row[0] = i;
    for (let j = 1; j <= b.length; j++) {
      const current = row[j] as number;
      row[j] = Math.min(
        current + 1,
        (row[j - 1] as number) + 1,
        previous + (a[i - 1]?.toLowerCase() === b[j - 1]?.toLowerCase() ? 0 : 1),
      );
      previous = current;
    }
  }
  return row[b.length] as number;
}

const KNOWN: Record<string, readonly string[]> = {
  '': Object.keys(optionsSchema.shape),
  retention: Object.keys(retentionSchema.shape),
};

function suggest(key: string, prefix: string): string {
  const known = KNOWN[prefix] ?? [];
  const best = known.map((k) => [k, editDistance(key, k)] as const).sort((x, y) => x[1] - y[1])[0];
  return best && best[1] <= 3 ? `; did you mean "${prefix ? `${prefix}.` : ''}${best[0]}"?` : '';
}

const isRecord = (value: unknown): value is Record<string, unknown> =>
  typeof value === 'object' && value !== null && !Array.isArray(value);

/** The value at `path` in `input`, for messages. */
function valueAt(input: unknown, path: readonly PropertyKey[]): unknown {
  let value = input;
  for (const key of path) {
    if (!isRecord(value) || typeof key === 'symbol') return undefined;
    value = value[key];
  }
  return value;
}

// retention.maxRecords and retention.maxBytes name the same settings as maxOfflineQueueSize and maxDatabaseSize:
// one setting each, two spellings. Moved to the top-level names, so that whichever a later configure() uses wins.
const ALIASES = [
  ['maxRecords', 'maxOfflineQueueSize'],
  ['maxBytes', 'maxDatabaseSize'],
] as const;

/**
 * Moves `retention.maxRecords` and `retention.maxBytes` to `maxOfflineQueueSize` and `maxDatabaseSize`; throws
 * {@link ConfigError} when one call gives both names of a setting with different values. @internal
 */
export function normalizeOptions<T>(input: T): T {
  if (!isRecord(input) || !isRecord(input.retention)) return input;
  const retention: Record<string, unknown> = { ...input.retention };
  const out: Record<string, unknown> = { ...input, retention };
  const issues: string[] = [];
  for (const [alias, name] of ALIASES) {
    if (!(alias in retention)) continue;
    const value = retention[alias];
    // A bad value stays where it was given, so that the error names the option the caller used.
    if (!optionsSchema.shape[name].safeParse(value).success) continue;
    delete retention[alias];
    if (name in input && input[name] !== value) {
      issues.push(
        `The "retention.${alias}" option (${describeValue(value)}) and the "${name}" option (${describeValue(input[name])}) are the same setting: give one`,
      );
    }
    out[name] = value;
  }
  if (issues.length > 0) throw new ConfigError(issues);
  return out as T;
}

/** Validates options and applies defaults; throws {@link ConfigError} naming each bad option. @internal */
export function resolveOptions(input: unknown): ResolvedOptions {
  const parsed = optionsSchema.safeParse(normalizeOptions(input));
  if (parsed.success) {
    const options = parsed.data;
    const problems: string[] = [];
    if (options.maxBackoff < options.initialBackoff) {
      problems.push(
        `Expected the "maxBackoff" option (${options.maxBackoff}) to be at least "initialBackoff" (${options.initialBackoff})`,
      );
    }
    problems.push(...cloudTlsProblems('cloudUrl', options.cloudUrl, options));
    problems.push(...encryptionProblems(options));
    if (problems.length > 0) throw new ConfigError(problems);
    const { maxDays, cleanupStrategy, cleanupInterval, downsampleWindow } = options.retention;
    return { ...options, retention: { maxDays, cleanupStrategy, cleanupInterval, downsampleWindow } };
  }
  const issues = parsed.error.issues.flatMap((issue) => {
    const prefix = issue.path.map(String).join('.');
    if (issue.code === 'unrecognized_keys') {
      return issue.keys.map((key) => `Misspelled option "${prefix ? `${prefix}.` : ''}${key}"${suggest(key, prefix)}`);
    }
    const top = issue.path[0];
    const value = issue.path.length === 0 ? input : valueAt(input, issue.path);
    const shown =
      typeof top === 'string' && SECRET_OPTION.test(top)
        ? 'a value not shown, as it is secret'
        : describeValue(redact(value));
    return [`Expected the "${prefix || '(options)'}" option to be valid: ${issue.message} (got ${shown})`];
  });
  throw new ConfigError(issues, { cause: parsed.error });
}

function encryptionProblems(
  options: Pick<ResolvedOptions, 'localDb' | 'encryptionKey' | 'previousEncryptionKeys' | 'storage'>,
): string[] {
  const { encryptionKey, previousEncryptionKeys = [] } = options;
  const problems = keyProblems(options.localDb, encryptionKey, previousEncryptionKeys);
  if (encryptionKey === undefined && previousEncryptionKeys.length > 0) {
    problems.push('The "previousEncryptionKeys" option needs "encryptionKey", the key to re-encrypt under');
  }
  if (encryptionKey !== undefined && options.storage) {
    problems.push('The "encryptionKey" option is not used with a custom "storage": encrypt in that storage');
  }
  return problems;
}

/** The compression setting as the codec takes it. @internal */
export function compressionSetting(option: ResolvedOptions['compression']): CompressionSetting {
  if (option === false) return false;
  if (option === true) return { level: 6 };
  return { level: option.level as 1 | 2 | 3 | 4 | 5 | 6 | 7 | 8 | 9 };
}
