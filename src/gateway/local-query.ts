import { ConfigError } from '../errors.js';
import { parseTimestamp, type Tags, type TimestampInput } from '../model/data-point.js';
import { SeriesTags } from '../processing/builtins/series.js';
import { mergeStats, statsOf, stddevOf, type WindowStats } from '../processing/builtins/window-stats.js';
import type { Storage } from '../storage/storage.js';

/** What {@link EdgeGateway.query} reads. */
export interface HistoryQuery {
  sensorId: string;
  /** Start of the range, included. @default 24 hours before `to` */
  from?: TimestampInput;
  /** End of the range, excluded. @default now */
  to?: TimestampInput;
  /**
   * `raw` for the readings kept by `localHistory.readings`, or a number of seconds: points are then windows of
   * that length, rolled up from stored aggregates whose window divides it (else from raw readings). @default `raw`
   * when raw readings are kept, else the aggregates as stored
   */
  resolution?: 'raw' | number;
  /** Only the series with exactly these tags. @default every series of the sensor */
  tags?: Tags;
  /** Most points returned, oldest first. @default 10000 */
  limit?: number;
}

/** One point of a {@link QueryResult}: a raw reading (count 1) or a window. */
export interface QueryPoint {
  /** The reading's time, or the window's start. */
  timestamp: Date;
  tags: Tags;
  unit: string | undefined;
  count: number;
  min: number;
  max: number;
  sum: number;
  mean: number;
  /** Sample standard deviation; null for a single reading. */
  stddev: number | null;
  first: number;
  last: number;
}

/** What {@link EdgeGateway.query} returns. */
export interface QueryResult {
  sensorId: string;
  /** `raw`, or the window length of the points, in seconds. */
  resolution: 'raw' | number;
  /** Where the points come from: the raw history, or stored aggregates. */
  source: 'history' | 'aggregates';
  points: QueryPoint[];
}

/** Most stored rows one query reads to roll up. */
export const MAX_QUERY_ROWS = 200_000;
const DAY_MS = 86_400_000;

/** A time option as epoch ms; throws `ConfigError` naming `what`. @internal */
export function parseTime(input: TimestampInput, what: string): number {
  const ms = parseTimestamp(input);
  if (typeof ms === 'string') throw new ConfigError([`Expected "${what}" to be a time: ${ms}`]);
  return ms;
}

interface Bucketed {
  ts: number;
  tags: string | null;
  unit: string | null;
  stats: WindowStats;
}

const canonical = new SeriesTags('all');

function toPoint(b: Bucketed): QueryPoint {
  return {
    timestamp: new Date(b.ts),
    tags: b.tags === null ? {} : (JSON.parse(b.tags) as Tags),
    unit: b.unit ?? undefined,
    count: b.stats.count,
    min: b.stats.min,
    max: b.stats.max,
    sum: b.stats.sum,
    mean: b.stats.mean,
    stddev: stddevOf(b.stats),
    first: b.stats.first,
    last: b.stats.last,
  };
}

// Merges entries into buckets of `ms` per tag set, in the order given (oldest first).
function rollUp(entries: Iterable<Bucketed>, ms: number): Bucketed[] {
  const buckets = new Map<string, Bucketed>();
  for (const e of entries) {
    const ts = Math.floor(e.ts / ms) * ms;
    const key = `${ts}\u0000${e.tags ?? ''}`;
    const found = buckets.get(key);
    if (found) {
      mergeStats(found.stats, e.stats);
      found.unit = e.unit ?? found.unit;
    } else buckets.set(key, { ts, tags: e.tags, unit: e.unit, stats: { ...e.stats } });
  }
  return [...buckets.values()].sort((a, b) => a.ts - b.ts || (a.tags ?? '').localeCompare(b.tags ?? ''));
}

/** Answers a history query from the storage's raw history and aggregates. @internal */
export function queryHistory(storage: Storage, query: HistoryQuery, keepsRaw: boolean): QueryResult {
  if (typeof query?.sensorId !== 'string' || query.sensorId.length === 0) {
    throw new ConfigError(['Expected the "sensorId" of query() to be a non-empty string']);
  }
  const limit = query.limit ?? 10_000;
  if (!Number.isInteger(limit) || limit < 1 || limit > MAX_QUERY_ROWS) {
    throw new ConfigError([`Expected the "limit" of query() to be an integer from 1 to ${MAX_QUERY_ROWS}`]);
  }
  const resolution = query.resolution ?? (keepsRaw ? 'raw' : undefined);
  if (resolution !== undefined && resolution !== 'raw' && !(typeof resolution === 'number' && resolution > 0)) {
    throw new ConfigError([
      `Expected the "resolution" of query() to be 'raw' or a positive number of seconds, got ${String(resolution)}`,
    ]);
  }
  const to = query.to === undefined ? Date.now() : parseTime(query.to, 'to');
  const from = query.from === undefined ? to - DAY_MS : parseTime(query.from, 'from');
  const wanted =
    query.tags === undefined
      ? undefined
      : canonical.of(Object.keys(query.tags).length ? JSON.stringify(query.tags) : null);
  const matches = (tags: string | null) => wanted === undefined || canonical.of(tags) === wanted;
  const range = { sensorId: query.sensorId, from, to, limit: MAX_QUERY_ROWS };

  const raw = (): Bucketed[] =>
    (storage.history?.(range) ?? [])
      .filter((r) => matches(r.tags))
      .map((r) => ({ ts: r.ts, tags: canonical.of(r.tags), unit: r.unit, stats: statsOf(r.value, r.ts) }));
  const result = (res: 'raw' | number, source: QueryResult['source'], points: Bucketed[]): QueryResult => ({
    sensorId: query.sensorId,
    resolution: res,
    source,
    points: points.slice(0, limit).map(toPoint),
  });

  if (resolution === 'raw') return result('raw', 'history', raw());

  const aggregates = (storage.aggregates?.(range) ?? []).filter((a) => matches(a.tags));
  const windows = [...new Set(aggregates.map((a) => a.windowMs))].sort((a, b) => a - b);
  const stored = (windowMs: number): Bucketed[] =>
    aggregates
      .filter((a) => a.windowMs === windowMs)
      .map((a) => ({ ts: a.windowStart, tags: a.tags, unit: a.unit, stats: { ...a } }));
  if (resolution === undefined) {
    const finest = windows[0];
    return finest === undefined ? result('raw', 'history', raw()) : result(finest / 1000, 'aggregates', stored(finest));
  }
  const ms = Math.round(resolution * 1000);
  const dividing = windows.filter((w) => ms % w === 0);
  const coarsest = dividing.at(-1);
  if (coarsest !== undefined) return result(resolution, 'aggregates', rollUp(stored(coarsest), ms));
  const fromRaw = raw();
  if (fromRaw.length > 0 || windows.length === 0) return result(resolution, 'history', rollUp(fromRaw, ms));
  // Finer than any stored window and no raw readings: the finest windows as they are.
  const finest = windows[0] as number;
  return result(finest / 1000, 'aggregates', stored(finest));
}
