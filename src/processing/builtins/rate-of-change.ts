import type { NormalizedPoint } from '../../model/data-point.js';
import * as z from '../../zod.js';
import type { AlertSeverity } from '../alert.js';
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

/** Options of {@link RateOfChange}. */
export interface RateOfChangeOptions {
  /** @default 'rate-of-change' */
  name?: string;
  /** The time unit of the rate. @default 'second' */
  per?: 'second' | 'minute' | 'hour';
  /** Raise an alert when the rate's magnitude exceeds this (units per `per`). @default none */
  maxRate?: number;
  /** @default 'warning' */
  severity?: AlertSeverity;
  /**
   * Emit the rate as a derived reading, on sensor `{sensorId}{suffix}` with unit `{unit}/s` (or `/min`, `/h`), after
   * the reading itself; later built-ins (an aggregation) see it. @default false
   */
  emit?: boolean;
  /** @default ':rate' */
  suffix?: string;
  /** Which sensors to watch; the others pass through. @default every sensor */
  sensors?: SensorSelector;
  /** Which tags tell series apart. @default 'all' */
  groupBy?: TagGrouping;
  /** Most series tracked. @default 10000 */
  maxSeries?: number;
}

const schema = z.strictObject({
  ...commonOptions,
  per: z._default(z.enum(['second', 'minute', 'hour']), 'second'),
  maxRate: z.optional(z.number().check(z.nonnegative())),
  severity: z._default(z.enum(['info', 'warning', 'critical']), 'warning'),
  emit: z._default(z.boolean(), false),
  suffix: z._default(z.string().check(z.minLength(1), z.maxLength(64)), ':rate'),
});

const PER_MS = { second: 1000, minute: 60_000, hour: 3_600_000 } as const;
const PER_UNIT = { second: 's', minute: 'min', hour: 'h' } as const;

/** The previous reading of a series. */
interface Previous {
  value: number;
  ts: number;
}

/**
 * Rate of change between consecutive readings of a series (by timestamp: a reading older than the previous one is
 * not compared, and does not become the previous one). Raises an alert when the rate exceeds `maxRate`, emits it
 * as a derived reading with `emit`, or both. Readings pass through unchanged.
 *
 * @example
 * ```ts
 * new RateOfChange({ per: 'minute', maxRate: 5, sensors: ['tank-level'] }) // a level falling 5 units a minute: a leak
 * ```
 */
export class RateOfChange extends SeriesStage<Previous> {
  readonly name: string;
  readonly #perMs: number;
  readonly #unit: string;
  readonly #maxRate: number | undefined;
  readonly #severity: AlertSeverity;
  readonly #emit: boolean;
  readonly #suffix: string;
  readonly #selects: (sensorId: string) => boolean;
  readonly #tags: SeriesTags;

  constructor(options: RateOfChangeOptions = {}) {
    const o = parseOptions('RateOfChange', schema, options);
    super(o.maxSeries);
    this.name = o.name ?? 'rate-of-change';
    this.#perMs = PER_MS[o.per];
    this.#unit = PER_UNIT[o.per];
    this.#maxRate = o.maxRate;
    this.#severity = o.severity;
    this.#emit = o.emit;
    this.#suffix = o.suffix;
    this.#selects = sensorTest(o.sensors);
    this.#tags = new SeriesTags(o.groupBy);
    Object.assign(this.counters, { rates: 0, alerts: 0 });
  }

  /** @internal */
  protected cloneState(s: Previous): Previous {
    return { ...s };
  }

  /** @internal */
  protected encodeState(s: Previous): string {
    return `[${s.value},${s.ts}]`;
  }

  /** @internal */
  protected decodeState(json: string): Previous {
    const [value, ts] = JSON.parse(json) as [number, number];
    return { value, ts };
  }

  /** @internal */
  apply(point: NormalizedPoint, out: StageOutput): void {
    out.pass(point);
    if (!this.#selects(point.sensorId)) return;
    const key = seriesKey(point.sensorId, this.#tags.of(point.tags));
    if (!this.hasRoomFor(key)) {
      this.count('overflow');
      return;
    }
    const previous = this.peek(key);
    if (previous !== undefined && point.ts <= previous.ts) return;
    this.setState(key, { value: point.value, ts: point.ts });
    if (previous === undefined) return;
    const rate = ((point.value - previous.value) * this.#perMs) / (point.ts - previous.ts);
    this.count('rates');
    if (this.#maxRate !== undefined && Math.abs(rate) > this.#maxRate) {
      this.count('alerts');
      out.alert({
        severity: this.#severity,
        message: `${point.sensorId} changing faster than ${this.#maxRate}/${this.#unit}`,
        sensorId: point.sensorId,
        source: this.name,
        ts: point.ts,
      });
    }
    if (this.#emit) {
      out.pass({
        kind: 'reading',
        payload: null,
        sensorId: `${point.sensorId}${this.#suffix}`.slice(0, 256),
        value: rate,
        unit: `${point.unit ?? ''}/${this.#unit}`.slice(0, 64),
        tags: point.tags,
        ts: point.ts,
      });
    }
  }
}
