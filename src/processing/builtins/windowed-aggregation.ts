import type { NormalizedPoint } from '../../model/data-point.js';
import * as z from '../../zod.js';
import { SeriesStage, type StageOutput } from '../stage.js';
import {
  commonOptions,
  parseOptions,
  type SensorSelector,
  SeriesTags,
  sensorTest,
  seriesKey,
  type TagGrouping,
} from './series.js';
import { addReading, statsOf, stddevOf, type WindowStats } from './window-stats.js';

/** Options of {@link WindowedAggregation}. Durations in seconds. */
export interface WindowedAggregationOptions {
  /** Names the processor in aggregates, logs and its stored state; give two aggregations distinct names. @default 'aggregation' */
  name?: string;
  /** Window length in seconds; windows are aligned to the clock (epoch multiples). @default 300 */
  window?: number;
  /**
   * How long after its end, in seconds of the series' own time, a window waits for late readings before it
   * closes. A reading for a window already closed is forwarded raw and counted as `late`, never lost. @default 10
   */
  grace?: number;
  /** Forward raw readings too; `false` forwards only the aggregates (and late readings). @default true */
  forwardRaw?: boolean;
  /**
   * Also close windows by the clock, at each flush (every second): a window of a sensor that went silent closes
   * once `clock()` passes its end plus `grace`. Without it a window closes only when a later reading of its series
   * arrives. @default true
   */
  closeOnClock?: boolean;
  /** The clock of `closeOnClock`, epoch ms. @default Date.now */
  clock?: () => number;
  /** Which sensors to aggregate; the others pass through. @default every sensor */
  sensors?: SensorSelector;
  /** Which tags tell series apart. @default 'all' */
  groupBy?: TagGrouping;
  /** Most series with open windows; readings of further series pass through, counted as `overflow`. @default 10000 */
  maxSeries?: number;
}

/** The `data` of an aggregate as synced: a processed-data row with the window start as its timestamp. */
export interface AggregatePayload {
  aggregate: {
    source: string;
    /** Window length, seconds. */
    window: number;
    count: number;
    min: number;
    max: number;
    sum: number;
    mean: number;
    /** Sample standard deviation; null for one reading. */
    stddev: number | null;
    first: number;
    last: number;
    /** Epoch ms of the first and last readings. */
    firstTs: number;
    lastTs: number;
  };
}

const schema = z.strictObject({
  ...commonOptions,
  window: z._default(z.number().check(z.positive(), z.lte(31 * 86_400)), 300),
  grace: z._default(z.number().check(z.nonnegative(), z.lte(31 * 86_400)), 10),
  forwardRaw: z._default(z.boolean(), true),
  closeOnClock: z._default(z.boolean(), true),
  clock: z.optional(z.custom<() => number>((v) => typeof v === 'function', 'expected a function')),
});

/** One series: its open windows, oldest first, and how far its time has gone. */
interface SeriesWindows {
  sensorId: string;
  tags: string | null;
  unit: string | null;
  /** Latest time seen (the series' readings, or the clock at a flush that closed windows); null before any. */
  horizon: number | null;
  open: [start: number, stats: WindowStats][];
}

/**
 * Windowed aggregation per sensor and tag set: tumbling windows aligned to the clock, with count, min, max, sum,
 * mean, sample standard deviation (Welford), first and last. A window closes once its series' time (or, with
 * `closeOnClock`, the clock) passes its end plus `grace`; its aggregate is then stored for `query()` and synced as
 * processed data (see {@link AggregatePayload}). Open windows are stored with the readings that changed them, so a
 * restart resumes them with no gap and no double count.
 *
 * @example
 * ```ts
 * const gateway = new EdgeGateway({
 *   deviceId: 'press-4',
 *   processors: [new WindowedAggregation({ window: 60, forwardRaw: false })],
 * });
 * ```
 */
export class WindowedAggregation extends SeriesStage<SeriesWindows> {
  readonly name: string;
  readonly windowMs: number;
  readonly graceMs: number;
  readonly forwardRaw: boolean;
  readonly #closeOnClock: boolean;
  readonly #clock: () => number;
  readonly #selects: (sensorId: string) => boolean;
  readonly #tags: SeriesTags;

  constructor(options: WindowedAggregationOptions = {}) {
    const o = parseOptions('WindowedAggregation', schema, options);
    super(o.maxSeries);
    this.name = o.name ?? 'aggregation';
    this.windowMs = Math.round(o.window * 1000);
    this.graceMs = Math.round(o.grace * 1000);
    this.forwardRaw = o.forwardRaw;
    this.#closeOnClock = o.closeOnClock;
    this.#clock = o.clock ?? Date.now;
    this.#selects = sensorTest(o.sensors);
    this.#tags = new SeriesTags(o.groupBy);
    Object.assign(this.counters, { aggregated: 0, late: 0, windows: 0 });
  }

  /** @internal */
  protected cloneState(s: SeriesWindows): SeriesWindows {
    return { ...s, open: s.open.map(([start, stats]) => [start, { ...stats }]) };
  }

  /** @internal */
  protected encodeState(s: SeriesWindows): string {
    return JSON.stringify(s);
  }

  /** @internal */
  protected decodeState(json: string): SeriesWindows {
    return JSON.parse(json) as SeriesWindows;
  }

  /** Start of the oldest window still open at `horizon`: windows starting before it are closed. */
  #closedBefore(horizon: number): number {
    return Math.floor((horizon - this.graceMs) / this.windowMs) * this.windowMs;
  }

  /** @internal */
  apply(point: NormalizedPoint, out: StageOutput): void {
    if (!this.#selects(point.sensorId)) {
      out.pass(point);
      return;
    }
    const tags = this.#tags.of(point.tags);
    const key = seriesKey(point.sensorId, tags);
    if (!this.hasRoomFor(key)) {
      this.count('overflow');
      out.pass(point);
      return;
    }
    const series = this.state(key) ?? { sensorId: point.sensorId, tags, unit: point.unit, horizon: null, open: [] };
    const start = Math.floor(point.ts / this.windowMs) * this.windowMs;
    if (series.horizon !== null && start < this.#closedBefore(series.horizon)) {
      // Its window was emitted already: forwarded raw, whatever forwardRaw says, so that it is not lost.
      this.count('late');
      out.pass(point);
      return;
    }
    let at = series.open.findIndex(([s]) => s >= start);
    if (at < 0) at = series.open.length;
    const found = series.open[at];
    if (found && found[0] === start) addReading(found[1], point.value, point.ts);
    else series.open.splice(at, 0, [start, statsOf(point.value, point.ts)]);
    series.unit = point.unit;
    series.horizon = series.horizon === null ? point.ts : Math.max(series.horizon, point.ts);
    this.count('aggregated');
    this.#close(series, out);
    this.setState(key, series);
    if (this.forwardRaw) out.pass(point);
    else out.absorb();
  }

  /** @internal */
  override due(): boolean {
    if (!this.#closeOnClock) return false;
    const edge = this.#closedBefore(this.#clock());
    for (const key of this.seriesKeys()) {
      const first = this.peek(key)?.open[0];
      if (first && first[0] < edge) return true;
    }
    return false;
  }

  /** @internal */
  override tick(_now: number, out: StageOutput): void {
    if (!this.#closeOnClock) return;
    const now = this.#clock();
    const edge = this.#closedBefore(now);
    for (const key of this.seriesKeys()) {
      const peek = this.peek(key);
      if (!peek || peek.open.length === 0 || (peek.open[0] as [number, WindowStats])[0] >= edge) continue;
      const series = this.state(key) as SeriesWindows;
      series.horizon = series.horizon === null ? now : Math.max(series.horizon, now);
      this.#close(series, out);
      this.setState(key, series);
    }
  }

  #close(series: SeriesWindows, out: StageOutput): void {
    if (series.horizon === null) return;
    const edge = this.#closedBefore(series.horizon);
    while (series.open.length > 0 && (series.open[0] as [number, WindowStats])[0] < edge) {
      const [start, stats] = series.open.shift() as [number, WindowStats];
      this.count('windows');
      const payload: AggregatePayload = {
        aggregate: {
          source: this.name,
          window: this.windowMs / 1000,
          count: stats.count,
          min: stats.min,
          max: stats.max,
          sum: stats.sum,
          mean: stats.mean,
          stddev: stddevOf(stats),
          first: stats.first,
          last: stats.last,
          firstTs: stats.firstTs,
          lastTs: stats.lastTs,
        },
      };
      out.aggregate(
        {
          source: this.name,
          sensorId: series.sensorId,
          tags: series.tags,
          unit: series.unit,
          windowStart: start,
          windowMs: this.windowMs,
          ...stats,
        },
        JSON.stringify(payload),
      );
    }
  }
}
