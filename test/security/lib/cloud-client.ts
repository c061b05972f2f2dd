import { deflateRawSync, gzipSync } from 'node:zlib';
import BetterSqlite3 from 'better-sqlite3-multiple-ciphers';
import { CloudServer, type CloudServerOptions } from '../../../src/cloud/index.js';
import { COMPACT_BATCH_CONTENT_TYPE, type CodecRow, encodeCompactRaw } from '../../../src/model/compact-codec.js';
import { defer } from '../../helpers/cleanup.js';

/** 2024-01-01T00:00:00.000Z: readings of the fixtures are at T0 + seq seconds. */
export const T0 = Date.UTC(2024, 0, 1);

/** A reference server on 127.0.0.1, port 0, in-memory SQLite unless told a store; closed after the current test. */
export async function listenCloud(options: Partial<CloudServerOptions> = {}): Promise<CloudServer> {
  const server = await CloudServer.listen({
    port: 0,
    host: '127.0.0.1',
    ...(options.store || options.redisUrl || options.dbPath ? {} : { dbPath: ':memory:' }),
    apiKeys: [],
    ...options,
  });
  defer(() => server.close());
  return server;
}

/** Readings `first`..`first + count - 1` of one sensor. */
export function wirePoints(first: number, count: number, sensorId = 'temp-01'): Record<string, unknown>[] {
  return Array.from({ length: count }, (_, i) => {
    const seq = first + i;
    return { seq, sensorId, ts: T0 + seq * 1000, value: seq / 2, unit: 'celsius', tags: { room: `r${seq}` } };
  });
}

export interface BatchInit {
  deviceId?: string;
  replicaId?: string;
  batchNo?: number;
}

/** A JSON batch body (protocol v1) and its Idempotency-Key. */
export function jsonBatch(points: unknown[], init: BatchInit = {}): { body: string; key: string } {
  const { deviceId = 'dev-a', replicaId = `replica-${deviceId}`, batchNo = 1 } = init;
  // The envelope's range, from the readings that have a usable seq: the server checks it is positive, no more.
  const seqs = points.map((p) => (p as { seq?: unknown }).seq).filter((s): s is number => Number.isSafeInteger(s));
  const positive = seqs.filter((s) => s > 0);
  const body = JSON.stringify({
    v: 1,
    deviceId,
    replicaId,
    batchNo,
    firstSeq: Math.min(...positive, Number.MAX_SAFE_INTEGER) === Number.MAX_SAFE_INTEGER ? 1 : Math.min(...positive),
    lastSeq: Math.max(1, ...positive),
    points,
  });
  return { body, key: `${replicaId}:${batchNo}` };
}

/** A compact batch body (protocol v2, deflated) of `rows` and its Idempotency-Key. */
export function compactBatch(rows: readonly CodecRow[], init: BatchInit = {}): { body: Buffer; key: string } {
  const { deviceId = 'dev-a', replicaId = `replica-${deviceId}`, batchNo = 1 } = init;
  return {
    body: deflateRawSync(encodeCompactRaw({ deviceId, replicaId, batchNo }, rows)),
    key: `${replicaId}:${batchNo}`,
  };
}

/** Codec rows `first`..`first + count - 1` of one sensor. */
export function codecRows(first: number, count: number): CodecRow[] {
  return Array.from({ length: count }, (_, i) => ({
    seq: first + i,
    sensorId: 'temp-01',
    ts: T0 + (first + i) * 1000,
    value: (first + i) / 2,
    unit: 'celsius',
    tags: null,
    payload: null,
  }));
}

export interface Answer {
  status: number;
  headers: Headers;
  text: string;
  json: Record<string, unknown>;
}

async function answer(response: Response): Promise<Answer> {
  const text = await response.text();
  let json: Record<string, unknown> = {};
  try {
    json = JSON.parse(text) as Record<string, unknown>;
  } catch {
    // not JSON: `text` says what it was
  }
  return { status: response.status, headers: response.headers, text, json };
}

export interface SendOptions {
  /** `null` sends no Authorization header. */
  apiKey?: string | null;
  headers?: Record<string, string>;
  gzip?: boolean;
}

/** Sends a request to `server` at `path` (under /api/v1) and reads the whole answer. */
export async function send(
  server: CloudServer,
  method: string,
  path: string,
  body?: string | Uint8Array,
  options: SendOptions = {},
): Promise<Answer> {
  const headers: Record<string, string> = {};
  if (options.apiKey) headers.authorization = `Bearer ${options.apiKey}`;
  let payload = body;
  if (payload !== undefined) {
    headers['content-type'] = 'application/json';
    if (options.gzip) {
      payload = gzipSync(payload);
      headers['content-encoding'] = 'gzip';
    }
  }
  const response = await fetch(`${server.url}${path}`, {
    method,
    headers: { ...headers, ...options.headers },
    ...(payload === undefined ? {} : { body: payload }),
  });
  return answer(response);
}

/** POSTs a batch (JSON unless `compact`), with its Idempotency-Key. */
export function postBatch(
  server: CloudServer,
  batch: { body: string | Uint8Array; key: string },
  apiKey: string | null,
  options: { compact?: boolean; headers?: Record<string, string> } = {},
): Promise<Answer> {
  return send(server, 'POST', '/telemetry/batches', batch.body, {
    apiKey,
    headers: {
      'idempotency-key': batch.key,
      ...(options.compact ? { 'content-type': COMPACT_BATCH_CONTENT_TYPE } : {}),
      ...options.headers,
    },
  });
}

/** GET with a key. */
export const getWith = (server: CloudServer, path: string, apiKey: string | null) =>
  send(server, 'GET', path, undefined, { apiKey });

/** A push of one put on `config/{key}` for `deviceId`. */
export function pushBody(deviceId: string, mid: string, key = 'alpha', value: unknown = 1): string {
  return JSON.stringify({
    deviceId,
    replicaId: `replica-${deviceId}`,
    mutations: [{ mid, collection: 'config', key, op: 'put', value, baseVersion: 0, hlc: '001704067200000-000000' }],
  });
}

/** Everything the store holds, as counts: what a refused request must leave unchanged. */
export async function storeCounts(server: CloudServer) {
  const telemetry = await server.store.stats();
  const records = await server.store.recordStats();
  return {
    ...telemetry,
    records: records.records,
    tombstones: records.tombstones,
    changeSeq: records.changeSeq,
    flagged: records.flaggedDevices.length,
  };
}

/**
 * Rows in every table of a cloud store's SQLite file, read on a connection of its own: a refused request must leave
 * every count as it was (the ledger, mutation outcomes and flags included).
 */
export function tableCounts(path: string): Record<string, number> {
  const db = new BetterSqlite3(path, { readonly: true, fileMustExist: true });
  try {
    const tables = db
      .prepare("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")
      .pluck()
      .all() as string[];
    return Object.fromEntries(
      tables.map((t) => [t, db.prepare(`SELECT count(*) FROM "${t}"`).pluck().get() as number]),
    );
  } finally {
    db.close();
  }
}
