import { stddevOf } from '../processing/builtins/window-stats.js';
import type { OutboxRow } from './storage.js';

/**
 * What a downsampled aggregate carries to the cloud, as the `data` of an aggregate row (outbox kind `aggregate`,
 * processed data on the wire) whose `sensorId`, `unit` and `tags` are those of the readings it replaced and whose
 * `ts` is the window's start: the shape of the windowed aggregation's `AggregatePayload`, told apart by
 * `source: 'downsample'`, so that a cloud reads both alike.
 *
 * @example
 * ```json
 * { "aggregate": { "source": "downsample", "window": 300, "count": 300, "min": 20.1, "max": 23.4, "sum": 6513,
 *   "mean": 21.71, "stddev": 0.84, "first": 20.1, "last": 22.9, "firstTs": 1767225600000,
 *   "lastTs": 1767225899000 } }
 * ```
 */
export interface DownsampledAggregate {
  aggregate: {
    source: 'downsample';
    /** Window length, seconds. Windows are aligned to the epoch: a window starts at a multiple of its length. */
    window: number;
    count: number;
    min: number;
    max: number;
    /** Sum of the values, added in arrival order. */
    sum: number;
    /** `sum / count`. */
    mean: number;
    /** Sample standard deviation (n − 1), from the deviations from `mean`; null for one reading. */
    stddev: number | null;
    /** Value with the earliest timestamp (the first to arrive among equal timestamps). */
    first: number;
    /** Value with the latest timestamp (the last to arrive among equal timestamps). */
    last: number;
    /** Epoch ms of the first and last readings. */
    firstTs: number;
    lastTs: number;
  };
}

/** Readings of one sensor, unit and window, to be replaced by one aggregate. @internal */
export interface DownsampleGroup {
  /** Their seqs, in arrival order; the aggregate takes the first, so that it keeps their place in the queue. */
  seqs: number[];
  /** The aggregate row that replaces them. */
  row: OutboxRow;
}

/** Start of the epoch-aligned window of `windowMs` holding `ts`. */
export const windowStartOf = (ts: number, windowMs: number): number => Math.floor(ts / windowMs) * windowMs;

/**
 * Groups raw readings (given in seq order) by sensor, unit and window, and makes each group of two or more
 * readings into its aggregate row; a reading alone in its group is left as it is (replacing it would save nothing).
 * Tags that every reading of a group has, with the same value, are kept; the others are dropped. Groups come out in
 * the order of their first seq.
 *
 * With `closedOnly`, for rows that are a prefix of a longer queue: only groups whose sensor has a reading in a
 * later window among `rows` (so that, for readings arriving in time order, the window is complete), and
 * `openFrom` is the first seq of the first group left out (undefined when none was). @internal
 */
export function downsampleGroups(
  rows: readonly OutboxRow[],
  windowMs: number,
  closedOnly = false,
): { groups: DownsampleGroup[]; openFrom: number | undefined } {
  const groups = new Map<string, { series: string; window: number; members: OutboxRow[] }>();
  const latest = new Map<string, number>();
  for (const row of rows) {
    if (row.kind !== 'reading' || row.value === null) continue;
    const series = `${row.sensorId}\u0000${row.unit ?? '\u0001'}`;
    const window = windowStartOf(row.ts, windowMs);
    const key = `${series}\u0000${window}`;
    const group = groups.get(key);
    if (group) group.members.push(row);
    else groups.set(key, { series, window, members: [row] });
    if (window > (latest.get(series) ?? Number.NEGATIVE_INFINITY)) latest.set(series, window);
  }
  const out: DownsampleGroup[] = [];
  let openFrom: number | undefined;
  for (const { series, window, members } of groups.values()) {
    if (closedOnly && window >= (latest.get(series) as number)) {
      openFrom ??= (members[0] as OutboxRow).seq;
      continue;
    }
    if (members.length < 2) continue;
    out.push({ seqs: members.map((r) => r.seq), row: aggregateRow(members, windowMs) });
  }
  return { groups: out, openFrom };
}

/** The aggregate row of readings of one sensor, unit and window, in seq order. @internal */
export function aggregateRow(members: readonly OutboxRow[], windowMs: number): OutboxRow {
  const head = members[0] as OutboxRow;
  let sum = 0;
  let min = Number.POSITIVE_INFINITY;
  let max = Number.NEGATIVE_INFINITY;
  let first = head;
  let last = head;
  for (const row of members) {
    const value = row.value as number;
    sum += value;
    if (value < min) min = value;
    if (value > max) max = value;
    if (row.ts < first.ts) first = row;
    if (row.ts >= last.ts) last = row;
  }
  const count = members.length;
  const mean = sum / count;
  let squares = 0;
  for (const row of members) squares += ((row.value as number) - mean) ** 2;
  const payload: DownsampledAggregate = {
    aggregate: {
      source: 'downsample',
      window: windowMs / 1000,
      count,
      min,
      max,
      sum,
      mean,
      stddev: stddevOf({ count, m2: squares }),
      first: first.value as number,
      last: last.value as number,
      firstTs: first.ts,
      lastTs: last.ts,
    },
  };
  return {
    seq: head.seq,
    kind: 'aggregate',
    sensorId: head.sensorId,
    ts: windowStartOf(head.ts, windowMs),
    value: null,
    unit: head.unit,
    tags: commonTags(members),
    payload: JSON.stringify(payload),
  };
}

// Tags as JSON text: identical text (the usual case, a sensor's tags do not change) is kept as it is, unparsed.
function commonTags(members: readonly OutboxRow[]): string | null {
  const text = (members[0] as OutboxRow).tags;
  if (members.every((row) => row.tags === text)) return text;
  if (members.some((row) => row.tags === null)) return null;
  const maps = members.map((row) => JSON.parse(row.tags as string) as Record<string, string>);
  const common: Record<string, string> = {};
  let kept = 0;
  for (const [key, value] of Object.entries(maps[0] as Record<string, string>)) {
    if (maps.every((map) => map[key] === value)) {
      common[key] = value;
      kept++;
    }
  }
  return kept === 0 ? null : JSON.stringify(common);
}
