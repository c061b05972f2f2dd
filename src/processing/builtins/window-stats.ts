/**
 * Running statistics of one window: count, min, max, sum, mean and the sum of squared deviations (Welford's
 * online algorithm, stable where the naive sum of squares cancels), first and last by timestamp.
 */
export interface WindowStats {
  count: number;
  min: number;
  max: number;
  sum: number;
  mean: number;
  /** Sum of squared deviations from the mean. */
  m2: number;
  /** Value with the earliest timestamp (the first to arrive among equals). */
  first: number;
  firstTs: number;
  /** Value with the latest timestamp (the last to arrive among equals). */
  last: number;
  lastTs: number;
}

/** Statistics of a single reading. */
export const statsOf = (value: number, ts: number): WindowStats => ({
  count: 1,
  min: value,
  max: value,
  sum: value,
  mean: value,
  m2: 0,
  first: value,
  firstTs: ts,
  last: value,
  lastTs: ts,
});

/** Adds one reading, in place (Welford). */
export function addReading(stats: WindowStats, value: number, ts: number): void {
  stats.count++;
  if (value < stats.min) stats.min = value;
  if (value > stats.max) stats.max = value;
  stats.sum += value;
  const delta = value - stats.mean;
  stats.mean += delta / stats.count;
  stats.m2 += delta * (value - stats.mean);
  if (ts < stats.firstTs) {
    stats.first = value;
    stats.firstTs = ts;
  }
  if (ts >= stats.lastTs) {
    stats.last = value;
    stats.lastTs = ts;
  }
}

/** Merges `b` into `a`, in place (Chan et al.'s parallel form of Welford); `b` counts as having arrived later. */
export function mergeStats(a: WindowStats, b: WindowStats): void {
  const count = a.count + b.count;
  const delta = b.mean - a.mean;
  a.mean += (delta * b.count) / count;
  a.m2 += b.m2 + (delta * delta * a.count * b.count) / count;
  a.count = count;
  a.sum += b.sum;
  if (b.min < a.min) a.min = b.min;
  if (b.max > a.max) a.max = b.max;
  if (b.firstTs < a.firstTs) {
    a.first = b.first;
    a.firstTs = b.firstTs;
  }
  if (b.lastTs >= a.lastTs) {
    a.last = b.last;
    a.lastTs = b.lastTs;
  }
}

/** Sample standard deviation (n − 1); null for a single reading. */
export const stddevOf = (stats: Pick<WindowStats, 'count' | 'm2'>): number | null =>
  stats.count < 2 ? null : Math.sqrt(Math.max(0, stats.m2) / (stats.count - 1));
