import { randomUUID } from 'node:crypto';
import BetterSqlite3 from 'better-sqlite3-multiple-ciphers';
import { EdgeGateway, type EdgeGatewayOptions } from '../../src/index.js';
import { defer } from './cleanup.js';
import { tempDbPath } from './temp-dir.js';

/** Timings small enough for tests: retries within milliseconds, the longest wait a fraction of a second. */
export const FAST = {
  syncInterval: 0.1,
  initialBackoff: 0.01,
  maxBackoff: 0.2,
  connectionTimeout: 2,
  stopTimeout: 2,
} as const satisfies Partial<EdgeGatewayOptions>;

/**
 * A gateway on a fresh database file in a temp folder, with a unique deviceId and {@link FAST} timings; stopped
 * after the current test.
 */
export function createGateway(options: Partial<EdgeGatewayOptions> = {}): EdgeGateway {
  const gateway = new EdgeGateway({
    deviceId: `device-${randomUUID()}`,
    localDb: tempDbPath(),
    ...FAST,
    ...options,
  });
  defer(() => gateway.stop());
  return gateway;
}

/** Runs `read` on a read-only connection to a database file, closed afterwards. */
export function readDb<T>(path: string, read: (db: BetterSqlite3.Database) => T): T {
  const db = new BetterSqlite3(path, { readonly: true, fileMustExist: true });
  try {
    return read(db);
  } finally {
    db.close();
  }
}

/** Rows in the outbox of a database file. */
export const outboxCount = (path: string): number =>
  readDb(path, (db) => db.prepare('SELECT count(*) FROM outbox').pluck().get() as number);

/** `n` readings of one sensor with distinct values and timestamps a second apart. */
export function readings(n: number, sensorId = 'temp-01', start = Date.UTC(2024, 0, 1)) {
  return Array.from({ length: n }, (_, i) => ({
    sensorId,
    value: i + 0.5,
    unit: 'celsius',
    tags: { location: 'warehouse-A', index: String(i) },
    timestamp: new Date(start + i * 1000),
  }));
}

/** The fields a reading keeps from intake to the cloud, in a form both sides can be compared in. */
export function comparable(point: {
  sensorId: string;
  value?: number | undefined;
  unit?: string | undefined;
  tags?: Readonly<Record<string, string>> | undefined;
  timestamp?: Date | string | number | undefined;
}) {
  return {
    sensorId: point.sensorId,
    value: point.value,
    unit: point.unit,
    tags: point.tags,
    timestamp: point.timestamp === undefined ? undefined : new Date(point.timestamp).toISOString(),
  };
}
