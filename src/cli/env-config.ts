import { readFileSync } from 'node:fs';
import { parseEnv } from 'node:util';
import { ConfigError } from '../errors.js';
import { type EdgeGatewayOptions, MAX_WORKER_THREADS } from '../gateway/options.js';
import type { HttpServerOptions } from '../ops/http-server.js';
import { WindowedAggregation } from '../processing/builtins/windowed-aggregation.js';
import { isLoopbackHost } from '../transport/cloud-tls.js';
import * as z from '../zod.js';

const BOOLEANS = ['true', 'false', '1', '0', 'yes', 'no', 'on', 'off'] as const;
const bool = z.pipe(
  z.pipe(
    z.pipe(
      z.string(),
      z.transform((v: string) => v.trim().toLowerCase()),
    ),
    z.enum(BOOLEANS),
  ),
  z.transform((v: (typeof BOOLEANS)[number]) => ['true', '1', 'yes', 'on'].includes(v)),
);
const LOG_LEVELS = ['trace', 'debug', 'info', 'warn', 'warning', 'error', 'fatal', 'silent'] as const;
const int = (min: number, max: number) => z.coerce.number().check(z.int(), z.gte(min), z.lte(max));
const positive = (max: number) => z.coerce.number().check(z.positive(), z.lte(max));
const nonnegative = (max: number) => z.coerce.number().check(z.nonnegative(), z.lte(max));
const nonEmpty = () => z.string().check(z.minLength(1));
const cloudUrlSchema = z.url({ protocol: /^https?$/ });
const cloudUrls = (value: string) => value.split(',').map((url) => url.trim());
// An empty variable counts as unset.
const optional = <T extends z.ZodMiniType>(schema: T) =>
  z.pipe(
    z.transform((v: unknown) => (v === '' ? undefined : v)),
    z.optional(schema),
  );

/**
 * The environment the CLI reads: every variable of the original `.env.example`, plus a few of ours. Variables
 * of features that are not built yet are validated and reported as ignored, never silently. A zod/mini object, so
 * that `edge-gateway start` loads no classic zod.
 */
export const envSchema = z.object({
  DEVICE_ID: z.string().check(z.minLength(1), z.maxLength(256)),
  DEVICE_NAME: optional(z.string()),
  ENVIRONMENT: optional(z.string()),
  LOCAL_DB_PATH: z._default(nonEmpty(), './data/edge_gateway.db'),
  /**
   * Encrypts the local database (SQLCipher 4 format): a passphrase, or a raw key x'<64 hex digits>'. See
   * docs/security-at-rest.md.
   */
  EDGE_DB_KEY: optional(nonEmpty()),
  /** A file holding EDGE_DB_KEY (one line), e.g. a systemd credential: the key stays out of the environment. */
  EDGE_DB_KEY_FILE: optional(nonEmpty()),
  /** The key the database may still be under after a rotation that did not finish; see docs/security-at-rest.md. */
  EDGE_DB_PREVIOUS_KEY: optional(nonEmpty()),
  SYNC_INTERVAL_SECONDS: optional(positive(86_400)),
  MAX_OFFLINE_QUEUE_SIZE: optional(int(1, Number.MAX_SAFE_INTEGER)),
  /** One URL, or several separated by commas: server nodes over one store, failed over in turn. */
  CLOUD_API_URL: optional(
    z.string().check(
      z.refine((v) => cloudUrls(v).every((url) => cloudUrlSchema.safeParse(url).success), {
        message: 'an http(s) URL, or several separated by commas',
      }),
    ),
  ),
  CLOUD_API_KEY: optional(nonEmpty()),
  /** A PEM file of the CAs the cloud's certificate must chain to (in place of Node's bundled roots). */
  CLOUD_CA_FILE: optional(nonEmpty()),
  /** PEM files of the client certificate and its private key, for a cloud that asks for one (mutual TLS). */
  CLOUD_CLIENT_CERT_FILE: optional(nonEmpty()),
  CLOUD_CLIENT_KEY_FILE: optional(nonEmpty()),
  /** Public-key pins of the cloud, `sha256/<base64>`, separated by commas or spaces. */
  CLOUD_PINNED_CERTS: optional(
    z.pipe(
      z.pipe(
        z.string(),
        z.transform((v: string) => v.split(/[\s,]+/).filter((pin) => pin.length > 0)),
      ),
      z.array(z.string()).check(z.minLength(1)),
    ),
  ),
  /** Allows an http:// CLOUD_API_URL to a host that is not loopback: everything then crosses the network in clear. */
  CLOUD_ALLOW_INSECURE: optional(bool),
  CONNECTION_TIMEOUT_SECONDS: optional(positive(3600)),
  MAX_RETRY_ATTEMPTS: optional(int(1, 1000)),
  ENABLE_LOCAL_ANALYTICS: optional(bool),
  AGGREGATION_WINDOW_SECONDS: optional(positive(86_400)),
  DATA_RETENTION_DAYS: optional(positive(36_500)),
  CLEANUP_STRATEGY: optional(z.enum(['reject-new', 'drop-oldest', 'downsample-oldest', 'oldest-first'])),
  CLEANUP_INTERVAL_SECONDS: optional(positive(7 * 86_400)),
  MAX_DATABASE_SIZE_MB: optional(positive(Number.MAX_SAFE_INTEGER / 1048576).check(z.gte(1))),
  DB_TIMEOUT_SECONDS: optional(nonnegative(3600)),
  COMPRESSION_ENABLED: optional(bool),
  COMPRESSION_LEVEL: optional(int(1, 9)),
  BATCH_SIZE: optional(int(1, 10_000)),
  WORKER_THREADS: optional(int(0, MAX_WORKER_THREADS)),
  SYNC_STRATEGY: optional(z.enum(['adaptive', 'fixed-interval', 'on-change'])),
  DURABILITY: optional(z.enum(['full', 'normal'])),
  LOG_LEVEL: z.pipe(
    z.pipe(
      z.pipe(
        z._default(z.string(), 'info'),
        z.transform((v: string) => v.trim().toLowerCase()),
      ),
      z.enum(LOG_LEVELS),
    ),
    z.transform((v: (typeof LOG_LEVELS)[number]) => (v === 'warning' ? 'warn' : v)),
  ),
  LOG_FILE: optional(nonEmpty()),
  STOP_TIMEOUT_SECONDS: optional(nonnegative(3600)),
  STALL_TIMEOUT_SECONDS: optional(positive(86_400)),
  DEAD_LETTER_WINDOW_SECONDS: optional(positive(30 * 86_400)),
  HTTP_ENABLED: optional(bool),
  HTTP_HOST: optional(nonEmpty()),
  HTTP_PORT: optional(int(0, 65_535)),
  INGEST_MAX_BODY_BYTES: optional(int(1024, 256 * 1024 * 1024)),
  INGEST_RATE_LIMIT: optional(nonnegative(1e9)),
  INGEST_BURST: optional(int(1, 1e9)),
  INGEST_TOKEN: optional(nonEmpty()),
  INGEST_IDEMPOTENCY_WINDOW_SECONDS: optional(z.coerce.number().check(z.gte(1), z.lte(30 * 86_400))),
  INGEST_IDEMPOTENCY_MAX_KEYS: optional(int(1, 10_000_000)),
});

/** Variables whose values are secrets: never echoed in an error, redacted from logs. */
export const SECRET_VARIABLES: ReadonlySet<string> = new Set([
  'CLOUD_API_KEY',
  'INGEST_TOKEN',
  'EDGE_DB_KEY',
  'EDGE_DB_PREVIOUS_KEY',
]);

/** The port `edge-gateway start` serves /health, /metrics and the ingest API on, unless HTTP_PORT says otherwise. */
export const DEFAULT_HTTP_PORT = 8000;

export type EnvConfig = z.output<typeof envSchema>;

/** Variables accepted for compatibility with the original spec whose features are not built yet. */
const NOT_YET: readonly (keyof EnvConfig)[] = [];

/**
 * Reads the `.env` file at `path` (when it exists) under the process environment: a variable set in the
 * environment wins over the file, as with dotenv.
 */
export function loadEnv(
  path: string | undefined,
  environment: NodeJS.ProcessEnv = process.env,
): Record<string, string> {
  let fromFile: Record<string, string> = {};
  if (path) {
    try {
      fromFile = parseEnv(readFileSync(path, 'utf8')) as Record<string, string>;
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== 'ENOENT') throw error;
    }
  }
  const merged: Record<string, string> = { ...fromFile };
  for (const [key, value] of Object.entries(environment)) if (value !== undefined) merged[key] = value;
  return merged;
}

/** Validates the environment; throws {@link ConfigError} naming each bad variable. */
export function parseEnvConfig(env: Record<string, string>): EnvConfig {
  const parsed = envSchema.safeParse(env);
  if (parsed.success) {
    // Said here in the variables' names; the gateway would say it again in its options' names.
    if (parsed.data.EDGE_DB_KEY && parsed.data.EDGE_DB_KEY_FILE) {
      throw new ConfigError(['Set EDGE_DB_KEY or EDGE_DB_KEY_FILE, not both']);
    }
    if (parsed.data.EDGE_DB_PREVIOUS_KEY && !parsed.data.EDGE_DB_KEY && !parsed.data.EDGE_DB_KEY_FILE) {
      throw new ConfigError([
        'EDGE_DB_PREVIOUS_KEY needs EDGE_DB_KEY (or EDGE_DB_KEY_FILE), the key to re-encrypt under',
      ]);
    }
    const urls = parsed.data.CLOUD_API_URL === undefined ? [] : cloudUrls(parsed.data.CLOUD_API_URL);
    const url = urls.find((one) => one.startsWith('http:') && !isLoopbackHost(new URL(one).hostname));
    if (url && !parsed.data.CLOUD_ALLOW_INSECURE) {
      throw new ConfigError([
        `Expected CLOUD_API_URL to be an https:// URL (got ${JSON.stringify(url)}): http:// is allowed only to a loopback host, or with CLOUD_ALLOW_INSECURE=true, because readings, records and the API key would cross the network in clear text`,
      ]);
    }
    return parsed.data;
  }
  throw new ConfigError(
    parsed.error.issues.map((issue) => {
      const name = String(issue.path[0] ?? '(env)');
      const value = env[name];
      const shown = SECRET_VARIABLES.has(name) ? 'a hidden value' : JSON.stringify(value);
      return `Expected ${name} to be valid: ${issue.message} (got ${value === undefined ? 'nothing' : shown})`;
    }),
  );
}

/** Variables that were set but have no effect in this version, for a warning at start. */
export function ignoredVariables(config: EnvConfig): string[] {
  return NOT_YET.filter((name) => config[name] !== undefined);
}

function readPem(variable: string, path: string): string {
  try {
    return readFileSync(path, 'utf8');
  } catch (error) {
    throw new ConfigError([`Could not read ${variable} (${path}): ${(error as Error).message}`], { cause: error });
  }
}

// The file's first line: editors and `echo` end it with a newline that is no part of the key.
function readKeyFile(path: string): string {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (error) {
    throw new ConfigError([`Could not read EDGE_DB_KEY_FILE (${path}): ${(error as Error).message}`], { cause: error });
  }
  const key = text.replace(/\r?\n$/, '');
  if (key.length === 0 || key.includes('\n')) {
    throw new ConfigError([`Expected EDGE_DB_KEY_FILE (${path}) to hold the key on one line (contents not shown)`]);
  }
  return key;
}

/** The database options of the environment: its path and its encryption keys (read from EDGE_DB_KEY_FILE). */
export function databaseOptionsFrom(
  config: EnvConfig,
): Pick<EdgeGatewayOptions, 'localDb' | 'encryptionKey' | 'previousEncryptionKeys'> {
  const key = config.EDGE_DB_KEY_FILE ? readKeyFile(config.EDGE_DB_KEY_FILE) : config.EDGE_DB_KEY;
  return {
    localDb: config.LOCAL_DB_PATH,
    ...(key ? { encryptionKey: key } : {}),
    ...(config.EDGE_DB_PREVIOUS_KEY ? { previousEncryptionKeys: [config.EDGE_DB_PREVIOUS_KEY] } : {}),
  };
}

/** Gateway options from the environment; reads the certificate and key files the variables name. */
export function gatewayOptionsFrom(config: EnvConfig): EdgeGatewayOptions {
  const options: EdgeGatewayOptions = { deviceId: config.DEVICE_ID, ...databaseOptionsFrom(config) };
  if (config.CLOUD_API_URL) {
    const urls = cloudUrls(config.CLOUD_API_URL);
    options.cloudUrl = urls.length === 1 ? urls[0] : urls;
  }
  if (config.CLOUD_API_KEY) options.apiKey = config.CLOUD_API_KEY;
  if (config.CLOUD_ALLOW_INSECURE) options.allowInsecure = true;
  if (config.CLOUD_CA_FILE) options.ca = readPem('CLOUD_CA_FILE', config.CLOUD_CA_FILE);
  if (config.CLOUD_CLIENT_CERT_FILE) options.cert = readPem('CLOUD_CLIENT_CERT_FILE', config.CLOUD_CLIENT_CERT_FILE);
  if (config.CLOUD_CLIENT_KEY_FILE) options.key = readPem('CLOUD_CLIENT_KEY_FILE', config.CLOUD_CLIENT_KEY_FILE);
  if (config.CLOUD_PINNED_CERTS) options.pinnedCertificates = config.CLOUD_PINNED_CERTS;
  if (config.SYNC_INTERVAL_SECONDS) options.syncInterval = config.SYNC_INTERVAL_SECONDS;
  if (config.MAX_OFFLINE_QUEUE_SIZE) options.maxOfflineQueueSize = config.MAX_OFFLINE_QUEUE_SIZE;
  if (config.CONNECTION_TIMEOUT_SECONDS) options.connectionTimeout = config.CONNECTION_TIMEOUT_SECONDS;
  if (config.MAX_RETRY_ATTEMPTS) options.maxRetryAttempts = config.MAX_RETRY_ATTEMPTS;
  if (config.BATCH_SIZE) options.batchSize = config.BATCH_SIZE;
  if (config.SYNC_STRATEGY) options.syncStrategy = config.SYNC_STRATEGY;
  if (config.DURABILITY) options.durability = config.DURABILITY;
  if (config.WORKER_THREADS !== undefined) options.workerThreads = config.WORKER_THREADS;
  if (config.MAX_DATABASE_SIZE_MB) options.maxDatabaseSize = Math.floor(config.MAX_DATABASE_SIZE_MB * 1048576);
  if (config.DB_TIMEOUT_SECONDS !== undefined) options.dbTimeout = config.DB_TIMEOUT_SECONDS;
  const retention: NonNullable<EdgeGatewayOptions['retention']> = {};
  if (config.DATA_RETENTION_DAYS) retention.maxDays = config.DATA_RETENTION_DAYS;
  if (config.CLEANUP_STRATEGY) retention.cleanupStrategy = config.CLEANUP_STRATEGY;
  if (config.CLEANUP_INTERVAL_SECONDS) retention.cleanupInterval = config.CLEANUP_INTERVAL_SECONDS;
  if (Object.keys(retention).length > 0) options.retention = retention;
  if (config.COMPRESSION_ENABLED === false) options.compression = false;
  else if (config.COMPRESSION_LEVEL) options.compression = { level: config.COMPRESSION_LEVEL };
  // As in the original .env.example: local analytics means windowed aggregates, synced beside the raw readings.
  if (config.ENABLE_LOCAL_ANALYTICS === false) options.localAnalytics = false;
  else if (config.ENABLE_LOCAL_ANALYTICS === true || config.AGGREGATION_WINDOW_SECONDS !== undefined) {
    options.processors = [new WindowedAggregation({ window: config.AGGREGATION_WINDOW_SECONDS ?? 300 })];
  }
  if (config.STOP_TIMEOUT_SECONDS !== undefined) options.stopTimeout = config.STOP_TIMEOUT_SECONDS;
  if (config.STALL_TIMEOUT_SECONDS) options.stallTimeout = config.STALL_TIMEOUT_SECONDS;
  if (config.DEAD_LETTER_WINDOW_SECONDS) options.deadLetterWindow = config.DEAD_LETTER_WINDOW_SECONDS;
  return options;
}

/** The daemon's HTTP server options from the environment; undefined when `HTTP_ENABLED=false`. */
export function httpOptionsFrom(config: EnvConfig): HttpServerOptions | undefined {
  if (config.HTTP_ENABLED === false) return undefined;
  const options: HttpServerOptions = { port: config.HTTP_PORT ?? DEFAULT_HTTP_PORT };
  if (config.HTTP_HOST) options.host = config.HTTP_HOST;
  if (config.INGEST_MAX_BODY_BYTES) options.maxBodyBytes = config.INGEST_MAX_BODY_BYTES;
  if (config.INGEST_RATE_LIMIT !== undefined) options.rateLimit = config.INGEST_RATE_LIMIT;
  if (config.INGEST_BURST) options.burst = config.INGEST_BURST;
  if (config.INGEST_TOKEN) options.ingestToken = config.INGEST_TOKEN;
  if (config.INGEST_IDEMPOTENCY_WINDOW_SECONDS) options.idempotencyWindow = config.INGEST_IDEMPOTENCY_WINDOW_SECONDS;
  if (config.INGEST_IDEMPOTENCY_MAX_KEYS) options.maxIdempotencyKeys = config.INGEST_IDEMPOTENCY_MAX_KEYS;
  return options;
}
