import { ConfigError } from '../../errors.js';
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

/** Options of {@link Deadband}. Give `absolute`, `percent`, or both. */
export interface DeadbandOptions {
  /** @default 'deadband' */
  name?: string;
  /** Forward a reading that differs from the last forwarded one by more than this, in the reading's unit. */
  absolute?: number;
  /** Forward a reading that differs from the last forwarded one by more than this percentage of it. */
  percent?: number;
  /**
   * Forward a reading anyway when the last forwarded one of its series is at least this many seconds older, so
   * that a steady sensor still reports and a silent one can be told from it. @default 300 (0: no heartbeat)
   */
  heartbeat?: number;
  /** Which sensors to filter; the others pass through. @default every sensor */
  sensors?: SensorSelector;
  /** Which tags tell series apart. @default 'all' */
  groupBy?: TagGrouping;
  /** Most series tracked; readings of further series pass through, counted as `overflow`. @default 10000 */
  maxSeries?: number;
}

const schema = z.strictObject({
  ...commonOptions,
  absolute: z.optional(z.number().check(z.nonnegative())),
  percent: z.optional(z.number().check(z.nonnegative(), z.lte(100_000))),
  heartbeat: z._default(z.number().check(z.nonnegative(), z.lte(31 * 86_400)), 300),
});

/** The last forwarded reading of a series. */
interface Reported {
  value: number;
  ts: number;
}

/**
 * Deadband, or report by exception: forwards a reading only when it moved more than `absolute` or more than
 * `percent`% away from the last forwarded reading of its series, or when the heartbeat is due; drops the rest
 * (`sendData()` resolves `false` for them). Counters in `stats`: `forwarded`, `suppressed`, `heartbeats`. The last
 * forwarded reading of each series is stored with it, so a restart does not forward a steady value again.
 *
 * @example
 * ```ts
 * new Deadband({ absolute: 0.5, heartbeat: 600 }) // a thermometer: report moves over half a degree, or every 10 min
 * ```
 */
export class Deadband extends SeriesStage<Reported> {
  readonly name: string;
  readonly #absolute: number | undefined;
  readonly #ratio: number | undefined;
  readonly #heartbeatMs: number;
  readonly #selects: (sensorId: string) => boolean;
  readonly #tags: SeriesTags;

  constructor(options: DeadbandOptions) {
    const o = parseOptions('Deadband', schema, options);
    if (o.absolute === undefined && o.percent === undefined) {
      throw new ConfigError(['Expected the Deadband options to give "absolute", "percent" or both']);
    }
    super(o.maxSeries);
    this.name = o.name ?? 'deadband';
    this.#absolute = o.absolute;
    this.#ratio = o.percent === undefined ? undefined : o.percent / 100;
    this.#heartbeatMs = Math.round(o.heartbeat * 1000);
    this.#selects = sensorTest(o.sensors);
    this.#tags = new SeriesTags(o.groupBy);
    Object.assign(this.counters, { forwarded: 0, suppressed: 0, heartbeats: 0 });
  }

  /** @internal */
  protected cloneState(s: Reported): Reported {
    return { ...s };
  }

  /** @internal */
  protected encodeState(s: Reported): string {
    return `[${s.value},${s.ts}]`;
  }

  /** @internal */
  protected decodeState(json: string): Reported {
    const [value, ts] = JSON.parse(json) as [number, number];
    return { value, ts };
  }

  /** Whether `value` moved out of the band around `last`. */
  #moved(value: number, last: number): boolean {
    const change = Math.abs(value - last);
    if (this.#absolute !== undefined && change > this.#absolute) return true;
    return this.#ratio !== undefined && change > this.#ratio * Math.abs(last);
  }

  /** @internal */
  apply(point: NormalizedPoint, out: StageOutput): void {
    if (!this.#selects(point.sensorId)) {
      out.pass(point);
      return;
    }
    const key = seriesKey(point.sensorId, this.#tags.of(point.tags));
    if (!this.hasRoomFor(key)) {
      this.count('overflow');
      out.pass(point);
      return;
    }
    const last = this.peek(key);
    let forward = last === undefined || this.#moved(point.value, last.value);
    if (!forward && last && this.#heartbeatMs > 0 && point.ts - last.ts >= this.#heartbeatMs) {
      forward = true;
      this.count('heartbeats');
    }
    if (!forward) {
      this.count('suppressed');
      return;
    }
    this.count('forwarded');
    // A reading older than the last forwarded one moves the band but not the heartbeat's clock.
    this.setState(key, { value: point.value, ts: last === undefined ? point.ts : Math.max(last.ts, point.ts) });
    out.pass(point);
  }
}
