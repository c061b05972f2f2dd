/**
 * Every error the SDK throws is an {@link EdgeGatewayError} with a stable `code`. Each subclass has a type guard
 * that also compares `name`, so the guards work across duplicated copies of the package.
 */

/** Stable machine-readable error codes. */
export type EdgeGatewayErrorCode =
  | 'CONFIG_INVALID'
  | 'VALIDATION_FAILED'
  | 'NOT_STARTED'
  | 'STOPPED'
  | 'QUEUE_FULL'
  | 'STORAGE_FAILED'
  | 'PROCESSOR_FAILED'
  | 'PIN_MISMATCH'
  | 'ENCRYPTION_KEY_INVALID'
  | 'CLOUD_STORE_FAILED';

/** Base class of every error thrown by edge-gateway. */
export class EdgeGatewayError extends Error {
  readonly code: EdgeGatewayErrorCode;

  constructor(code: EdgeGatewayErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'EdgeGatewayError';
    this.code = code;
  }
}

/** An option is misspelled, missing or out of range. Thrown by constructors and `configure()`. */
export class ConfigError extends EdgeGatewayError {
  /** One line per problem, each naming the option, the value and what was expected. */
  readonly issues: readonly string[];

  constructor(issues: readonly string[], options?: { cause?: unknown }) {
    super('CONFIG_INVALID', `Invalid options:\n  - ${issues.join('\n  - ')}`, options);
    this.name = 'ConfigError';
    this.issues = issues;
  }
}

/** One problem found in one input. */
export interface ValidationIssue {
  /** Index of the reading in a batch, when the input was a batch. */
  readonly index?: number;
  /** The field at fault, e.g. `value` or `tags.location`. */
  readonly field: string;
  /** What is wrong with it. */
  readonly message: string;
}

/** Input was refused before anything was stored. Lists every problem, not only the first. */
export class ValidationError extends EdgeGatewayError {
  readonly issues: readonly ValidationIssue[];

  /** @param subject what was invalid, for the message: `data point` unless told. */
  constructor(issues: readonly ValidationIssue[], subject = 'data point') {
    const lines = issues.map(
      (issue) => `${issue.index === undefined ? '' : `[${issue.index}] `}${issue.field}: ${issue.message}`,
    );
    super('VALIDATION_FAILED', `Invalid ${subject}:\n  - ${lines.join('\n  - ')}`);
    this.name = 'ValidationError';
    this.issues = issues;
  }
}

/** A method that needs a started gateway was called before `start()`. */
export class NotStartedError extends EdgeGatewayError {
  constructor(method: string) {
    super('NOT_STARTED', `${method}() was called before start()`);
    this.name = 'NotStartedError';
  }
}

/** The gateway is stopping or stopped and takes no more input. */
export class GatewayStoppedError extends EdgeGatewayError {
  constructor(method: string) {
    super('STOPPED', `${method}() was called after stop(); the gateway takes no more input`);
    this.name = 'GatewayStoppedError';
  }
}

/** The offline queue holds `maxOfflineQueueSize` readings; the new ones were not stored. */
export class QueueFullError extends EdgeGatewayError {
  readonly limit: number;

  constructor(limit: number, incoming: number) {
    super(
      'QUEUE_FULL',
      `The offline queue is full (maxOfflineQueueSize ${limit}); ${incoming} reading(s) were not stored`,
    );
    this.name = 'QueueFullError';
    this.limit = limit;
  }
}

/**
 * The local database refused a write or could not be opened. Nothing of the failed write was stored.
 * `sqliteCode` names what SQLite said, when it said something: `SQLITE_FULL` when the database reached its
 * `maxDatabaseSize` or the disk is full, `SQLITE_READONLY`, `SQLITE_BUSY`, `SQLITE_IOERR_*`, ...
 */
export class StorageError extends EdgeGatewayError {
  /** The SQLite result code behind the failure (e.g. `SQLITE_FULL`), when there is one. */
  readonly sqliteCode: string | undefined;
  /**
   * Set when the database could not be opened because another gateway holds it (`sqliteCode` `SQLITE_BUSY`):
   * which process, on which host, since when, as that process wrote it in the lock file `<localDb>.lock`.
   */
  readonly inUseBy: DatabaseHolder | undefined;

  constructor(
    message: string,
    options?: { cause?: unknown; sqliteCode?: string | undefined; inUseBy?: DatabaseHolder | undefined },
  ) {
    super('STORAGE_FAILED', message, options);
    this.name = 'StorageError';
    this.sqliteCode = options?.sqliteCode;
    this.inUseBy = options?.inUseBy;
  }
}

/** The process that holds a local database, from its lock file; see {@link StorageError.inUseBy}. */
export interface DatabaseHolder {
  /** Its process id (on `hostname`). */
  readonly pid: number;
  readonly hostname: string;
  /** When it took the database, ISO 8601. */
  readonly since: string;
}

/**
 * A processor failed: it threw, returned something that cannot be stored, or missed its deadline
 * (`processorTimeout`). From `process()` the reading goes to the dead letters and this error is emitted as `error`;
 * from the `start` hook, `start()` rejects with it.
 */
export class ProcessorError extends EdgeGatewayError {
  /** The processor's name. */
  readonly processor: string;
  /** True when the processor missed its deadline rather than failing. */
  readonly timedOut: boolean;

  constructor(processor: string, message: string, options?: { cause?: unknown; timedOut?: boolean }) {
    super('PROCESSOR_FAILED', message, options);
    this.name = 'ProcessorError';
    this.processor = processor;
    this.timedOut = options?.timedOut ?? false;
  }
}

/**
 * The cloud's TLS certificate chain holds none of the keys in `pinnedCertificates`: the connection was closed
 * before a byte of the request was sent. The transport reports it as a result (`retryable`, code `pin-mismatch`)
 * and the gateway as a `sync-error` with code `PIN_MISMATCH`; it is not thrown to the host.
 */
export class CertificatePinError extends EdgeGatewayError {
  /** The host the connection was for. */
  readonly host: string;
  /** The pins (`sha256/<base64>`) of the verified chain the server presented, leaf first. */
  readonly presented: readonly string[];

  constructor(host: string, presented: readonly { pin: string; subject: string }[], options?: { cause?: unknown }) {
    const chain = presented.map((c) => `${c.pin} (${c.subject})`).join(', ');
    super(
      'PIN_MISMATCH',
      `The certificate chain of ${host} matches none of the pinned keys (pinnedCertificates); nothing was sent. It presented: ${chain || 'no certificate that could be read'}`,
      options,
    );
    this.name = 'CertificatePinError';
    this.host = host;
    this.presented = presented.map((c) => c.pin);
  }
}

/**
 * The local database cannot be decrypted with the key given: a wrong `encryptionKey` (and none of
 * `previousEncryptionKeys` fits either), or no key for a file that is encrypted. Thrown by `start()` (and by
 * `SqliteStorage.open()`). The file is left as it was: not renamed, not set aside as damaged, not written to.
 * A first page damaged beyond reading looks the same as a wrong key, and is refused the same way.
 */
export class EncryptionKeyError extends EdgeGatewayError {
  /** The database file. */
  readonly path: string;
  /** `wrong-key`: a key was given and the file does not open with it; `key-missing`: the file looks encrypted and no key was given. */
  readonly reason: 'wrong-key' | 'key-missing';

  constructor(path: string, reason: 'wrong-key' | 'key-missing', options?: { cause?: unknown; triedKeys?: number }) {
    const tried = options?.triedKeys ?? 1;
    super(
      'ENCRYPTION_KEY_INVALID',
      reason === 'wrong-key'
        ? `The local database at ${path} cannot be decrypted with the encryption key given${tried > 1 ? ` (nor with any of the ${tried - 1} previous key(s))` : ''}: a wrong key, or a damaged first page. The file was left untouched.`
        : `The local database at ${path} looks encrypted, and no encryption key was given (encryptionKey, EDGE_DB_KEY). The file was left untouched.`,
      { cause: options?.cause },
    );
    this.name = 'EncryptionKeyError';
    this.path = path;
    this.reason = reason;
  }
}

/**
 * The reference cloud server's store could not be reached or failed a command: Redis refused the connection at
 * start, went away, or answered an error. The server answers the request at hand with 500; nothing of it was stored.
 */
export class CloudStoreError extends EdgeGatewayError {
  constructor(message: string, options?: { cause?: unknown }) {
    super('CLOUD_STORE_FAILED', message, options);
    this.name = 'CloudStoreError';
  }
}

const ERROR_NAMES = new Set([
  'EdgeGatewayError',
  'ConfigError',
  'ValidationError',
  'NotStartedError',
  'GatewayStoppedError',
  'QueueFullError',
  'StorageError',
  'ProcessorError',
  'CertificatePinError',
  'EncryptionKeyError',
  'CloudStoreError',
]);

const hasCode = (error: unknown): error is EdgeGatewayError =>
  error instanceof Error && typeof (error as { code?: unknown }).code === 'string';

// Guards compare `name`, not only the prototype, so they hold across two copies of the package.
const guard =
  <T extends EdgeGatewayError>(name: string) =>
  (error: unknown): error is T =>
    hasCode(error) && error.name === name;

/** True for any error thrown by edge-gateway. */
export const isEdgeGatewayError = (error: unknown): error is EdgeGatewayError =>
  hasCode(error) && ERROR_NAMES.has(error.name);
export const isConfigError = guard<ConfigError>('ConfigError');
export const isValidationError = guard<ValidationError>('ValidationError');
export const isNotStartedError = guard<NotStartedError>('NotStartedError');
export const isGatewayStoppedError = guard<GatewayStoppedError>('GatewayStoppedError');
export const isQueueFullError = guard<QueueFullError>('QueueFullError');
export const isStorageError = guard<StorageError>('StorageError');
export const isProcessorError = guard<ProcessorError>('ProcessorError');
export const isCertificatePinError = guard<CertificatePinError>('CertificatePinError');
export const isEncryptionKeyError = guard<EncryptionKeyError>('EncryptionKeyError');
export const isCloudStoreError = guard<CloudStoreError>('CloudStoreError');
