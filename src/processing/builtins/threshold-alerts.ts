import { ConfigError } from '../../errors.js';
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

/** One threshold: give `above` or `below` (or both, which makes two rules). */
export interface ThresholdRule {
  /** Which sensors the rule watches. @default every sensor */
  sensors?: SensorSelector;
  /** Raise when the value goes above this. */
  above?: number;
  /** Raise when the value goes below this. */
  below?: number;
  /**
   * How far back past the threshold the value must come before the alert clears (and may be raised again), in
   * the reading's unit: above 100 with hysteresis 5 clears below 95. @default 0
   */
  hysteresis?: number;
  /** Seconds (of the readings' time) the value must stay past the threshold before the alert is raised. @default 0 */
  hold?: number;
  /** @default 'warning' */
  severity?: AlertSeverity;
  /** Raise an `info` alert when the value comes back. @default true */
  notifyClear?: boolean;
  /** The alert message; `{sensorId}` and `{threshold}` are filled in. @default '{sensorId} above {threshold}' (or 'below') */
  message?: string;
}

/** Options of {@link ThresholdAlerts}. */
export interface ThresholdAlertsOptions {
  /** @default 'thresholds' */
  name?: string;
  rules: readonly ThresholdRule[];
  /** Which tags tell series apart (each series has its own alert state). @default 'all' */
  groupBy?: TagGrouping;
  /** Most series tracked per rule; further series are not watched, counted as `overflow`. @default 10000 */
  maxSeries?: number;
}

const ruleSchema = z.strictObject({
  sensors: commonOptions.sensors,
  above: z.optional(z.number()),
  below: z.optional(z.number()),
  hysteresis: z._default(z.number().check(z.nonnegative()), 0),
  hold: z._default(z.number().check(z.nonnegative(), z.lte(31 * 86_400)), 0),
  severity: z._default(z.enum(['info', 'warning', 'critical']), 'warning'),
  notifyClear: z._default(z.boolean(), true),
  message: z.optional(z.string().check(z.minLength(1), z.maxLength(512))),
});

const schema = z.strictObject({
  name: commonOptions.name,
  groupBy: commonOptions.groupBy,
  maxSeries: commonOptions.maxSeries,
  rules: z.array(ruleSchema).check(z.minLength(1), z.maxLength(1000)),
});

/** One direction of one rule, as evaluated. */
interface Condition {
  index: number;
  selects: (sensorId: string) => boolean;
  direction: 'above' | 'below';
  threshold: number;
  hysteresis: number;
  holdMs: number;
  severity: AlertSeverity;
  notifyClear: boolean;
  message: string;
}

/** A series' state under one condition: `pending` since the first reading past the threshold, or `active`. */
interface Phase {
  phase: 'pending' | 'active';
  since: number;
}

const fill = (template: string, sensorId: string, threshold: number) =>
  template.replaceAll('{sensorId}', sensorId).replaceAll('{threshold}', String(threshold));

/**
 * Threshold alert rules with hysteresis and a hold time. A series goes `pending` when a reading passes the
 * threshold, `active` (raising the alert, in the transaction that stores that reading) once readings have stayed
 * past it for `hold` seconds, and back to normal (raising an `info` alert when `notifyClear`) once a reading comes
 * back by more than `hysteresis`. Readings pass through unchanged. The phase of each series is stored with the
 * readings, so a restart neither repeats nor forgets an alert.
 *
 * @example
 * ```ts
 * new ThresholdAlerts({ rules: [{ sensors: ['boiler-2'], above: 90, hysteresis: 2, hold: 30, severity: 'critical' }] })
 * ```
 */
export class ThresholdAlerts extends SeriesStage<Phase> {
  readonly name: string;
  readonly #conditions: Condition[];
  readonly #tags: SeriesTags;

  constructor(options: ThresholdAlertsOptions) {
    const o = parseOptions('ThresholdAlerts', schema, options);
    const conditions: Condition[] = [];
    o.rules.forEach((rule, index) => {
      if (rule.above === undefined && rule.below === undefined) {
        throw new ConfigError([`Expected rule ${index} of ThresholdAlerts to give "above", "below" or both`]);
      }
      for (const direction of ['above', 'below'] as const) {
        const threshold = rule[direction];
        if (threshold === undefined) continue;
        conditions.push({
          index,
          selects: sensorTest(rule.sensors),
          direction,
          threshold,
          hysteresis: rule.hysteresis,
          holdMs: Math.round(rule.hold * 1000),
          severity: rule.severity,
          notifyClear: rule.notifyClear,
          message: rule.message ?? `{sensorId} ${direction} {threshold}`,
        });
      }
    });
    super(o.maxSeries * conditions.length);
    this.name = o.name ?? 'thresholds';
    this.#conditions = conditions;
    this.#tags = new SeriesTags(o.groupBy);
    Object.assign(this.counters, { raised: 0, cleared: 0 });
  }

  /** @internal */
  protected cloneState(s: Phase): Phase {
    return { ...s };
  }

  /** @internal */
  protected encodeState(s: Phase): string {
    return JSON.stringify(s);
  }

  /** @internal */
  protected decodeState(json: string): Phase {
    return JSON.parse(json) as Phase;
  }

  /** @internal */
  apply(point: NormalizedPoint, out: StageOutput): void {
    const series = seriesKey(point.sensorId, this.#tags.of(point.tags));
    for (const c of this.#conditions) {
      if (c.selects(point.sensorId)) this.#evaluate(c, `${c.index}${c.direction[0]}\u0000${series}`, point, out);
    }
    out.pass(point);
  }

  #evaluate(c: Condition, key: string, point: NormalizedPoint, out: StageOutput): void {
    const past = c.direction === 'above' ? point.value > c.threshold : point.value < c.threshold;
    const back =
      c.direction === 'above' ? point.value < c.threshold - c.hysteresis : point.value > c.threshold + c.hysteresis;
    const state = this.peek(key);
    const raise = (severity: AlertSeverity, message: string) =>
      out.alert({ severity, message, sensorId: point.sensorId, source: this.name, ts: point.ts });
    if (state === undefined) {
      if (!past) return;
      if (!this.hasRoomFor(key)) {
        this.count('overflow');
        return;
      }
      if (c.holdMs === 0) {
        this.setState(key, { phase: 'active', since: point.ts });
        this.count('raised');
        raise(c.severity, fill(c.message, point.sensorId, c.threshold));
      } else this.setState(key, { phase: 'pending', since: point.ts });
      return;
    }
    if (state.phase === 'pending') {
      if (!past) this.setState(key, undefined);
      else if (point.ts - state.since >= c.holdMs) {
        this.setState(key, { phase: 'active', since: point.ts });
        this.count('raised');
        raise(c.severity, fill(c.message, point.sensorId, c.threshold));
      }
      return;
    }
    if (back) {
      this.setState(key, undefined);
      this.count('cleared');
      if (c.notifyClear) {
        const bound = c.direction === 'above' ? c.threshold - c.hysteresis : c.threshold + c.hysteresis;
        raise(
          'info',
          `${fill(c.message, point.sensorId, c.threshold)}: back ${c.direction === 'above' ? 'below' : 'above'} ${bound}`,
        );
      }
    }
  }
}
