import { createRequire } from 'node:module';
import { ValidationError, type ValidationIssue } from '../errors.js';

/** Flat map of string tags, e.g. `{ location: 'warehouse-A' }`. */
export type Tags = Readonly<Record<string, string>>;

/** A timestamp as accepted on input: a `Date`, epoch milliseconds, or an ISO-8601 string. */
export type TimestampInput = Date | number | string;

/** A reading as a host application hands it over: a {@link DataPoint} or a plain object of the same shape. */
export interface DataPointInput {
  /** Which sensor produced the reading; 1 to 256 characters. */
  readonly sensorId: string;
  /** A finite number. NaN and ±Infinity are refused. */
  readonly value: number;
  /** Unit of `value`, e.g. `celsius`; up to 64 characters. */
  readonly unit?: string | undefined;
  /** Flat map of strings; up to 32 tags, keys up to 64 and values up to 256 characters. */
  readonly tags?: Tags | undefined;
  /** When the reading was taken. @default now */
  readonly timestamp?: TimestampInput | undefined;
}

/** Limits on one reading. A reading over any of them is refused with a {@link ValidationError}. */
export const DATA_POINT_LIMITS = {
  sensorIdLength: 256,
  unitLength: 64,
  tagCount: 32,
  tagKeyLength: 64,
  tagValueLength: 256,
} as const;

/** Earliest and latest accepted timestamps (epoch ms): 1970-01-01 and 9999-12-31. */
const MIN_TS = 0;
const MAX_TS = 253402300799999;

/**
 * The normalised, validated form of a reading, as stored and sent. `ts` is epoch milliseconds; `tags` is the
 * JSON text of the tags, or `null` when there are none. It has the shape of an outbox row, so that the hot path
 * makes one object per reading, not two.
 * @internal
 */
export interface NormalizedPoint {
  kind: 'reading';
  payload: null;
  sensorId: string;
  value: number;
  unit: string | null;
  tags: string | null;
  ts: number;
}

/**
 * One sensor reading. Constructing one validates it; an invalid reading throws {@link ValidationError} listing
 * every problem.
 *
 * @example
 * ```ts
 * const point = new DataPoint({ sensorId: 'temp-01', value: 23.5, unit: 'celsius', tags: { location: 'warehouse-A' } });
 * ```
 */
export class DataPoint implements DataPointInput {
  readonly sensorId: string;
  readonly value: number;
  readonly unit: string | undefined;
  readonly tags: Tags;
  /** When the reading was taken, normalised to a `Date`. */
  readonly timestamp: Date;

  constructor(input: DataPointInput) {
    const normalized = normalizePoint(input);
    this.sensorId = normalized.sensorId;
    this.value = normalized.value;
    this.unit = normalized.unit ?? undefined;
    this.tags = Object.freeze(normalized.tags === null ? {} : (JSON.parse(normalized.tags) as Record<string, string>));
    this.timestamp = new Date(normalized.ts);
  }

  /** The plain-object form, with an ISO-8601 timestamp. */
  toJSON(): { sensorId: string; value: number; unit?: string; tags: Tags; timestamp: string } {
    return {
      sensorId: this.sensorId,
      value: this.value,
      ...(this.unit === undefined ? {} : { unit: this.unit }),
      tags: this.tags,
      timestamp: this.timestamp.toISOString(),
    };
  }
}

// A lone UTF-16 surrogate is not Unicode: it cannot travel as UTF-8, and would arrive altered.
// String.prototype.isWellFormed (ES2024, in every Node 20) rather than a /\p{Cs}/u test: it runs for every string of
// every reading, and is three times faster. TypeScript's ES2023 library does not declare it yet.
const illFormed = (value: string) => !(value as unknown as { isWellFormed(): boolean }).isWellFormed();
const NOT_UNICODE = 'contains an unpaired surrogate, which is not valid Unicode';

const describe = (value: unknown): string => {
  if (typeof value === 'string') return JSON.stringify(value.length > 40 ? `${value.slice(0, 40)}…` : value);
  if (typeof value === 'number') return String(value);
  if (value === null) return 'null';
  if (Array.isArray(value)) return 'an array';
  return typeof value === 'object' ? 'an object' : typeof value;
};

// date-fns's ISO-8601 parser is loaded with the first timestamp given as a string: readings stamped with a Date or
// a number, or not at all, never need it, and it is ~3 MiB of resident memory. Its own module, not the package
// index, which loads all of date-fns (~15 MiB more).
let parseISO: ((argument: string) => Date) | undefined;
const loadParseISO = () =>
  (createRequire(import.meta.url)('date-fns/parseISO') as typeof import('date-fns/parseISO')).parseISO;

/**
 * Parses a timestamp input to epoch ms, or returns a message saying why it cannot.
 * @internal
 */
export function parseTimestamp(input: unknown): number | string {
  let ms: number;
  if (input instanceof Date) ms = input.getTime();
  else if (typeof input === 'number') ms = input;
  else if (typeof input === 'string') {
    parseISO ??= loadParseISO();
    ms = parseISO(input).getTime();
    if (Number.isNaN(ms)) return `expected an ISO-8601 date, got ${describe(input)}`;
  } else return `expected a Date, epoch milliseconds or an ISO-8601 string, got ${describe(input)}`;
  if (!Number.isFinite(ms)) return `expected a valid date, got ${describe(input)}`;
  if (ms < MIN_TS || ms > MAX_TS) return `expected a date between 1970 and 9999, got ${describe(input)}`;
  return Math.trunc(ms);
}

/** Normalises the tags, pushing problems to `issues`; returns their JSON text or null when empty. */
function normalizeTags(tags: unknown, issues: ValidationIssue[], index: number | undefined): string | null {
  if (tags === undefined || tags === null) return null;
  if (typeof tags !== 'object' || Array.isArray(tags)) {
    issues.push({ index, field: 'tags', message: `expected a flat map of strings, got ${describe(tags)}` });
    return null;
  }
  let count = 0;
  for (const key in tags) {
    if (!Object.hasOwn(tags, key)) continue;
    count++;
    const value = (tags as Record<string, unknown>)[key];
    if (key.length === 0 || key.length > DATA_POINT_LIMITS.tagKeyLength) {
      issues.push({
        index,
        field: 'tags',
        message: `tag keys must have 1 to ${DATA_POINT_LIMITS.tagKeyLength} characters, got ${describe(key)}`,
      });
    }
    if (illFormed(key)) issues.push({ index, field: 'tags', message: `a tag key ${NOT_UNICODE}` });
    if (typeof value !== 'string') {
      issues.push({ index, field: `tags.${key}`, message: `expected a string, got ${describe(value)}` });
    } else if (illFormed(value)) {
      issues.push({ index, field: `tags.${key}`, message: NOT_UNICODE });
    } else if (value.length > DATA_POINT_LIMITS.tagValueLength) {
      issues.push({
        index,
        field: `tags.${key}`,
        message: `expected at most ${DATA_POINT_LIMITS.tagValueLength} characters, got ${value.length}`,
      });
    }
  }
  if (count > DATA_POINT_LIMITS.tagCount) {
    issues.push({ index, field: 'tags', message: `expected at most ${DATA_POINT_LIMITS.tagCount} tags, got ${count}` });
  }
  return count === 0 ? null : JSON.stringify(tags);
}

/**
 * Validates one reading and returns its normalised form, or pushes every problem to `issues` and returns
 * undefined. Hand-written rather than a zod schema: it runs once per reading on the hot path.
 * @internal
 */
export function checkPoint(
  input: unknown,
  issues: ValidationIssue[],
  index?: number,
  now: number = Date.now(),
): NormalizedPoint | undefined {
  if (typeof input !== 'object' || input === null || Array.isArray(input)) {
    issues.push({ index, field: '(reading)', message: `expected an object, got ${describe(input)}` });
    return undefined;
  }
  const before = issues.length;
  const point = input as Record<string, unknown>;
  const { sensorId, value, unit, timestamp } = point;

  if (typeof sensorId !== 'string' || sensorId.length === 0 || sensorId.length > DATA_POINT_LIMITS.sensorIdLength) {
    issues.push({
      index,
      field: 'sensorId',
      message: `expected a string of 1 to ${DATA_POINT_LIMITS.sensorIdLength} characters, got ${describe(sensorId)}`,
    });
  } else if (illFormed(sensorId)) issues.push({ index, field: 'sensorId', message: NOT_UNICODE });
  if (typeof value !== 'number' || !Number.isFinite(value)) {
    issues.push({ index, field: 'value', message: `expected a finite number, got ${describe(value)}` });
  }
  if (unit !== undefined && unit !== null && (typeof unit !== 'string' || unit.length > DATA_POINT_LIMITS.unitLength)) {
    issues.push({
      index,
      field: 'unit',
      message: `expected a string of at most ${DATA_POINT_LIMITS.unitLength} characters, got ${describe(unit)}`,
    });
  }
  if (typeof unit === 'string' && illFormed(unit)) issues.push({ index, field: 'unit', message: NOT_UNICODE });
  let ts = now;
  if (timestamp !== undefined && timestamp !== null) {
    const parsed = parseTimestamp(timestamp);
    if (typeof parsed === 'string') issues.push({ index, field: 'timestamp', message: parsed });
    else ts = parsed;
  }
  const tags = normalizeTags(point.tags, issues, index);
  if (issues.length !== before) return undefined;
  return {
    kind: 'reading',
    sensorId: sensorId as string,
    ts,
    value: value as number,
    unit: (unit as string | undefined) ?? null,
    tags,
    payload: null,
  };
}

// Reused by normalizePoint(): it runs once per reading, synchronously, and needs a list only when input is bad.
const scratch: ValidationIssue[] = [];

/**
 * Validates one reading; throws {@link ValidationError} listing every problem.
 * @internal
 */
export function normalizePoint(input: unknown, now?: number): NormalizedPoint {
  if (scratch.length !== 0) scratch.length = 0;
  const point = checkPoint(input, scratch, undefined, now);
  if (point === undefined) throw new ValidationError(scratch.splice(0));
  return point;
}

/** Turns a stored reading back into a {@link DataPoint}. @internal */
export function toDataPoint(point: NormalizedPoint): DataPoint {
  return new DataPoint({
    sensorId: point.sensorId,
    value: point.value,
    unit: point.unit ?? undefined,
    tags: point.tags === null ? undefined : (JSON.parse(point.tags) as Tags),
    timestamp: point.ts,
  });
}
