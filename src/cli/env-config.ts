import { readFileSync } from 'node:fs';
import { parseEnv } from 'node:util';
import { z } from 'zod';
import { ConfigError } from '../errors.js';
import type { EdgeGatewayOptions } from '../gateway/options.js';

const bool = z
  .string()
  .transform((v) => v.trim().toLowerCase())
  .pipe(z.enum(['true', 'false', '1', '0', 'yes', 'no', 'on', 'off']))
  .transform((v) => ['true', '1', 'yes', 'on'].includes(v));
const int = (min: number, max: number) => z.coerce.number().int().min(min).max(max);
const positive = (max: number) => z.coerce.number().positive().max(max);
const optional = <T extends z.ZodType>(schema: T) => z.preprocess((v) => (v === '' ? undefined : v), schema.optional());

/**
 * The environment the CLI reads: every variable of the original `.env.example`, plus a few of ours. Variables
 * of features that are not built yet are validated and reported as ignored, never silently.
 */
export const envSchema = z.object({
  DEVICE_ID: z.string().min(1).max(256),
  DEVICE_NAME: optional(z.string()),
  ENVIRONMENT: optional(z.string()),
  LOCAL_DB_PATH: z.string().min(1).default('./data/edge_gateway.db'),
  SYNC_INTERVAL_SECONDS: optional(positive(86_400)),
  MAX_OFFLINE_QUEUE_SIZE: optional(int(1, Number.MAX_SAFE_INTEGER)),
  CLOUD_API_URL: optional(z.url({ protocol: /^https?$/ })),
  CLOUD_API_KEY: optional(z.string().min(1)),
  CONNECTION_TIMEOUT_SECONDS: optional(positive(3600)),
  MAX_RETRY_ATTEMPTS: optional(int(1, 1000)),
  ENABLE_LOCAL_ANALYTICS: optional(bool),
  AGGREGATION_WINDOW_SECONDS: optional(positive(86_400)),
  DATA_RETENTION_DAYS: optional(positive(36_500)),
  CLEANUP_STRATEGY: optional(z.enum(['reject-new', 'drop-oldest', 'downsample-oldest', 'oldest-first'])),
  CLEANUP_INTERVAL_SECONDS: optional(positive(7 * 86_400)),
  MAX_DATABASE_SIZE_MB: optional(positive(Number.MAX_SAFE_INTEGER / 1048576).min(1)),
  DB_TIMEOUT_SECONDS: optional(z.coerce.number().nonnegative().max(3600)),
  COMPRESSION_ENABLED: optional(bool),
  COMPRESSION_LEVEL: optional(int(1, 9)),
  BATCH_SIZE: optional(int(1, 10_000)),
  WORKER_THREADS: optional(int(0, 64)),
  SYNC_STRATEGY: optional(z.enum(['adaptive', 'fixed-interval', 'on-change'])),
  DURABILITY: optional(z.enum(['full', 'normal'])),
  LOG_LEVEL: z
    .string()
    .default('info')
    .transform((v) => v.trim().toLowerCase())
    .pipe(z.enum(['trace', 'debug', 'info', 'warn', 'warning', 'error', 'fatal', 'silent']))
    .transform((v) => (v === 'warning' ? 'warn' : v)),
  LOG_FILE: optional(z.string().min(1)),
});

export type EnvConfig = z.output<typeof envSchema>;

/** Variables accepted for compatibility with the original spec whose features are not built yet. */
const NOT_YET = ['ENABLE_LOCAL_ANALYTICS', 'AGGREGATION_WINDOW_SECONDS', 'WORKER_THREADS'] as const;

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
  if (parsed.success) return parsed.data;
  throw new ConfigError(
    parsed.error.issues.map((issue) => {
      const name = String(issue.path[0] ?? '(env)');
      const value = env[name];
      return `Expected ${name} to be valid: ${issue.message} (got ${value === undefined ? 'nothing' : JSON.stringify(value)})`;
    }),
  );
}

/** Variables that were set but have no effect in this version, for a warning at start. */
export function ignoredVariables(config: EnvConfig): string[] {
  return NOT_YET.filter((name) => config[name] !== undefined);
}

/** Gateway options from the environment. */
export function gatewayOptionsFrom(config: EnvConfig): EdgeGatewayOptions {
  const options: EdgeGatewayOptions = { deviceId: config.DEVICE_ID, localDb: config.LOCAL_DB_PATH };
  if (config.CLOUD_API_URL) options.cloudUrl = config.CLOUD_API_URL;
  if (config.CLOUD_API_KEY) options.apiKey = config.CLOUD_API_KEY;
  if (config.SYNC_INTERVAL_SECONDS) options.syncInterval = config.SYNC_INTERVAL_SECONDS;
  if (config.MAX_OFFLINE_QUEUE_SIZE) options.maxOfflineQueueSize = config.MAX_OFFLINE_QUEUE_SIZE;
  if (config.CONNECTION_TIMEOUT_SECONDS) options.connectionTimeout = config.CONNECTION_TIMEOUT_SECONDS;
  if (config.MAX_RETRY_ATTEMPTS) options.maxRetryAttempts = config.MAX_RETRY_ATTEMPTS;
  if (config.BATCH_SIZE) options.batchSize = config.BATCH_SIZE;
  if (config.SYNC_STRATEGY) options.syncStrategy = config.SYNC_STRATEGY;
  if (config.DURABILITY) options.durability = config.DURABILITY;
  if (config.MAX_DATABASE_SIZE_MB) options.maxDatabaseSize = Math.floor(config.MAX_DATABASE_SIZE_MB * 1048576);
  if (config.DB_TIMEOUT_SECONDS !== undefined) options.dbTimeout = config.DB_TIMEOUT_SECONDS;
  const retention: NonNullable<EdgeGatewayOptions['retention']> = {};
  if (config.DATA_RETENTION_DAYS) retention.maxDays = config.DATA_RETENTION_DAYS;
  if (config.CLEANUP_STRATEGY) retention.cleanupStrategy = config.CLEANUP_STRATEGY;
  if (config.CLEANUP_INTERVAL_SECONDS) retention.cleanupInterval = config.CLEANUP_INTERVAL_SECONDS;
  if (Object.keys(retention).length > 0) options.retention = retention;
  if (config.COMPRESSION_ENABLED === false) options.compression = false;
  else if (config.COMPRESSION_LEVEL) options.compression = { level: config.COMPRESSION_LEVEL };
  return options;
}
