import { createHash, timingSafeEqual } from 'node:crypto';
import * as z from 'zod';
import { ConfigError } from '../errors.js';

/** A per-key request budget: a token bucket that refills at `requestsPerSecond` and holds at most `burst`. */
export interface RateLimit {
  /** Sustained requests per second. */
  requestsPerSecond: number;
  /** Requests that may arrive at once after a quiet spell. @default max(1, ceil(requestsPerSecond)) */
  burst?: number;
}

/**
 * One API key the cloud server accepts, and what it may do.
 *
 * @example
 * ```ts
 * { key: process.env.KEY_DEV_A, devices: ['dev-a'] }          // a device's own key
 * { sha256: '9f86d081...', name: 'ops-console' }              // a fleet key, given by its hash only
 * ```
 */
export interface ApiKeyEntry {
  /** The key, as gateways send it in `Authorization: Bearer <key>`. Give `key` or `sha256`, not both. */
  key?: string;
  /**
   * The SHA-256 of the key's UTF-8 bytes, in hex (`printf %s "$KEY" | sha256sum`): the server's configuration then
   * never holds the key itself.
   */
  sha256?: string;
  /**
   * The device ids this key may write, read and push records for. Omitted: every device (a fleet key, for
   * operators and back-end systems). Never empty.
   */
  devices?: readonly string[];
  /** How logs name the key (never the key itself). @default `key-` and the first 8 hex digits of its SHA-256 */
  name?: string;
  /** This key's own request budget, replacing the server's `rateLimit`; `false`: none. */
  rateLimit?: RateLimit | false;
}

/** A key the cloud server accepts: a plain string is a fleet key (any device, the server's rate limit). */
export type ApiKey = string | ApiKeyEntry;

/** Who a request comes from, once its key matched. */
export interface Caller {
  /** The key's name, for logs and messages. */
  readonly name: string;
  /** Hex SHA-256 of the key: the identity of its rate budget across `setApiKeys()`. */
  readonly id: string;
  /** The devices it may act for; `undefined` for a fleet key. */
  readonly devices: ReadonlySet<string> | undefined;
  /** Its own budget, `false` for none, `undefined` for the server's. */
  readonly rateLimit: RateLimit | false | undefined;
}

interface Entry extends Caller {
  readonly digest: Buffer;
}

const sha256 = (text: string): Buffer => createHash('sha256').update(text, 'utf8').digest();

/** Visible ASCII, no spaces: what fits in a Bearer header unchanged. */
const KEY_CHARACTERS = /^[\x21-\x7e]+$/;

export const rateLimitSchema = z.strictObject({
  requestsPerSecond: z.number().positive().max(1_000_000),
  burst: z.number().int().min(1).max(1_000_000).optional(),
});

const entrySchema = z
  .strictObject({
    key: z.string().min(1).max(4096).regex(KEY_CHARACTERS, 'visible ASCII characters without spaces').optional(),
    sha256: z
      .string()
      .regex(/^[0-9a-fA-F]{64}$/, '64 hexadecimal digits')
      .optional(),
    devices: z
      .array(z.string().min(1).max(256))
      .min(1, 'at least one device id; omit "devices" for a key valid for every device')
      .optional(),
    name: z.string().min(1).max(128).optional(),
    rateLimit: z.union([rateLimitSchema, z.literal(false)]).optional(),
  })
  .refine((entry) => (entry.key === undefined) !== (entry.sha256 === undefined), {
    message: 'give either "key" or "sha256"',
  });

/** One line per problem of one entry; never the key itself. */
function entryProblems(index: number, raw: unknown): string[] {
  if (typeof raw === 'string') {
    if (raw.length === 0) return [`apiKeys[${index}]: an empty key`];
    if (!KEY_CHARACTERS.test(raw)) return [`apiKeys[${index}]: a key must be visible ASCII characters without spaces`];
    return [];
  }
  const parsed = entrySchema.safeParse(raw);
  if (parsed.success) return [];
  return parsed.error.issues.map((issue) => {
    const path = issue.path.length > 0 ? `.${issue.path.join('.')}` : '';
    return `apiKeys[${index}]${path}: ${issue.message}`;
  });
}

/**
 * The keys a cloud server accepts, kept only as SHA-256 digests. Keys are long random strings (see
 * docs/security.md), so a fast hash is enough: a slow one (scrypt) protects guessable passwords, and would cost
 * tens of milliseconds on every request for no gain. Digests also have a fixed length, which is what
 * `timingSafeEqual` needs.
 */
export class ApiKeyring {
  readonly #entries: readonly Entry[];

  private constructor(entries: readonly Entry[]) {
    this.#entries = entries;
  }

  /** Validates and hashes `keys`; throws {@link ConfigError} naming each bad entry by its index (never its key). */
  static from(keys: readonly ApiKey[]): ApiKeyring {
    if (!Array.isArray(keys)) throw new ConfigError(['Expected the "apiKeys" option to be an array of keys']);
    const problems = keys.flatMap((raw, index) => entryProblems(index, raw));
    if (problems.length > 0) throw new ConfigError(problems);
    const entries = keys.map((raw): Entry => {
      const entry: ApiKeyEntry = typeof raw === 'string' ? { key: raw } : raw;
      const digest = entry.key === undefined ? Buffer.from(entry.sha256 as string, 'hex') : sha256(entry.key);
      const id = digest.toString('hex');
      return {
        digest,
        id,
        name: entry.name ?? `key-${id.slice(0, 8)}`,
        devices: entry.devices === undefined ? undefined : new Set(entry.devices),
        rateLimit: entry.rateLimit,
      };
    });
    const seen = new Map<string, number>();
    for (const [index, entry] of entries.entries()) {
      const first = seen.get(entry.id);
      if (first !== undefined) {
        problems.push(`apiKeys[${index}]: the same key as apiKeys[${first}]; give each key once`);
      } else seen.set(entry.id, index);
    }
    if (problems.length > 0) throw new ConfigError(problems);
    return new ApiKeyring(entries);
  }

  /** No keys: the server lets every request in (loopback tests only). */
  get open(): boolean {
    return this.#entries.length === 0;
  }

  /** The ids (hex SHA-256) of the keys it holds. */
  get ids(): ReadonlySet<string> {
    return new Set(this.#entries.map((entry) => entry.id));
  }

  /**
   * The caller a presented key belongs to, or `undefined`. The key is hashed, then compared with every digest
   * held, in constant time and without stopping at a match: the time taken depends on how many keys there are,
   * not on which one matched nor on how much of one did.
   */
  authenticate(presented: string): Caller | undefined {
    const digest = sha256(presented);
    let found: Entry | undefined;
    for (const entry of this.#entries) {
      const equal = timingSafeEqual(digest, entry.digest);
      found = equal && found === undefined ? entry : found;
    }
    return found;
  }
}
