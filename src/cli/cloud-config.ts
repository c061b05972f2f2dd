import { readFileSync } from 'node:fs';
import { type ApiKey, ApiKeyring, type RateLimit } from '../cloud/api-keys.js';
import { ConfigError, isConfigError } from '../errors.js';

/** The flags of `edge-gateway cloud` that say who may call it and how often. */
export interface CloudAccessFlags {
  'api-key'?: string[] | undefined;
  'keys-file'?: string | undefined;
  'rate-limit'?: string | undefined;
  'rate-burst'?: string | undefined;
}

/** What `edge-gateway cloud` gives the server: its keys, its per-key budget, and how much it logs. */
export interface CloudAccess {
  apiKeys: ApiKey[];
  rateLimit: RateLimit | undefined;
  /** pino level from `LOG_LEVEL`. @default 'info' (refused keys and rate limits are logged) */
  logLevel: string;
}

const LOG_LEVELS = ['trace', 'debug', 'info', 'warn', 'error', 'fatal', 'silent'];

/**
 * The keys and rate limit of `edge-gateway cloud`, from flags first, then the environment:
 *
 * - `--api-key KEY` (repeatable) or `CLOUD_API_KEY`: fleet keys, valid for every device;
 * - `--keys-file FILE` or `CLOUD_API_KEYS_FILE`: a JSON array of keys, each a string or an entry
 *   `{ "key" | "sha256", "devices"?, "name"?, "rateLimit"? }` (see docs/security.md);
 * - `--rate-limit RPS` or `CLOUD_RATE_LIMIT`, and `--rate-burst N` or `CLOUD_RATE_BURST`: each key's budget;
 * - `LOG_LEVEL`: pino JSON lines to stdout, `info` by default.
 *
 * Throws {@link ConfigError} naming the flag or variable at fault, never showing a key.
 */
export function cloudAccessFrom(flags: CloudAccessFlags, env: NodeJS.ProcessEnv): CloudAccess {
  const apiKeys: ApiKey[] = [...(flags['api-key'] ?? (env.CLOUD_API_KEY ? [env.CLOUD_API_KEY] : []))];
  const keysFile = flags['keys-file'] ?? (env.CLOUD_API_KEYS_FILE || undefined);
  const keysFileName = flags['keys-file'] === undefined ? 'CLOUD_API_KEYS_FILE' : '--keys-file';
  if (keysFile !== undefined) apiKeys.push(...readKeysFile(keysFile, keysFileName));
  if (apiKeys.length === 0) {
    throw new ConfigError([
      'Give at least one --api-key, CLOUD_API_KEY or --keys-file: the cloud server does not run open',
    ]);
  }
  const rps = number(flags['rate-limit'], env.CLOUD_RATE_LIMIT, '--rate-limit', 'CLOUD_RATE_LIMIT', false);
  const burst = number(flags['rate-burst'], env.CLOUD_RATE_BURST, '--rate-burst', 'CLOUD_RATE_BURST', true);
  if (burst !== undefined && rps === undefined) {
    throw new ConfigError(['--rate-burst (CLOUD_RATE_BURST) needs --rate-limit (CLOUD_RATE_LIMIT)']);
  }
  const rateLimit = rps === undefined ? undefined : { requestsPerSecond: rps, ...(burst ? { burst } : {}) };
  const logLevel = env.LOG_LEVEL?.trim().toLowerCase() || 'info';
  if (!LOG_LEVELS.includes(logLevel)) {
    throw new ConfigError([
      `Expected LOG_LEVEL to be one of ${LOG_LEVELS.join(', ')}, got ${JSON.stringify(logLevel)}`,
    ]);
  }
  return { apiKeys, rateLimit, logLevel };
}

function readKeysFile(path: string, name: string): ApiKey[] {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (error) {
    throw new ConfigError([`${name}: cannot read ${path} (${(error as NodeJS.ErrnoException).code ?? 'error'})`]);
  }
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch {
    // The parser's message quotes the text around the fault: it could quote a key.
    throw new ConfigError([`${name}: ${path} is not valid JSON`]);
  }
  if (!Array.isArray(parsed)) throw new ConfigError([`${name}: ${path} must hold a JSON array of keys`]);
  try {
    ApiKeyring.from(parsed as ApiKey[]);
  } catch (error) {
    // Named by their place in the file, not in the server's whole list.
    if (isConfigError(error)) throw new ConfigError(error.issues.map((issue) => issue.replace(/^apiKeys/, path)));
    throw error;
  }
  return parsed as ApiKey[];
}

/** A positive number (an integer when `integer`) from a flag, else from a variable, else undefined. */
function number(
  flag: string | undefined,
  variable: string | undefined,
  flagName: string,
  variableName: string,
  integer: boolean,
): number | undefined {
  const raw = flag ?? (variable || undefined);
  if (raw === undefined) return undefined;
  const value = Number(raw);
  if (!Number.isFinite(value) || value <= 0 || (integer && !Number.isInteger(value))) {
    const name = flag === undefined ? variableName : flagName;
    throw new ConfigError([
      `Expected ${name} to be a positive ${integer ? 'integer' : 'number'}, got ${JSON.stringify(raw)}`,
    ]);
  }
  return value;
}
