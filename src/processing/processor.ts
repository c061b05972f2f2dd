import { ValidationError } from '../errors.js';
import type { DataPoint, DataPointInput } from '../model/data-point.js';
import { ALERT_SEVERITIES, type AlertInput, MAX_ALERT_MESSAGE } from './alert.js';
import { processingScope, type RaisedAlert } from './processing-scope.js';

export type { Alert, AlertInput, AlertQuery, AlertSeverity } from './alert.js';

/**
 * What a processor may return for one reading: a {@link DataPoint} (or its plain form), which goes on as a
 * reading (to the next processor, then to storage); any other JSON-serialisable object, stored and synced as
 * processed data linked to the reading's sensor and timestamp (later processors do not see it); an array of
 * those; or `null`/`undefined` to drop the reading.
 */
export type ProcessResult =
  | DataPoint
  | DataPointInput
  | Record<string, unknown>
  | readonly (DataPoint | DataPointInput | Record<string, unknown>)[]
  | null
  | undefined;

/**
 * Turns one reading into zero, one or many. `process` may be sync or async; the hooks are optional and may be
 * either too. The gateway calls `start` in `start()` before it takes readings, `flush` every second and in
 * `stop()`, and `stop` in `stop()` once the last reading has left the chain.
 */
export interface Processor {
  /** Shown in dead letters, alerts and logs. @default the class name */
  readonly name?: string;
  process(point: DataPoint): ProcessResult | Promise<ProcessResult>;
  /** Prepares the processor. A hook that throws makes `start()` reject with a `ProcessorError`. */
  start?(): void | Promise<void>;
  /** Emits what the processor holds back (alerts on a timer, buffers). A throw is reported as an `error` event. */
  flush?(): void | Promise<void>;
  /** Releases what the processor holds. A throw is reported as an `error` event; `stop()` carries on. */
  stop?(): void | Promise<void>;
}

/** Where a processor's alerts raised outside `process()` go; set by the gateway. Resolves once stored. @internal */
export type AlertSink = (alert: RaisedAlert) => Promise<void>;

const sinks = new WeakMap<Processor, AlertSink>();

/** The name a processor goes by in dead letters, alerts and logs. @internal */
export const processorName = (processor: Processor): string =>
  processor.name ?? processor.constructor?.name ?? 'processor';

function checkAlert(alert: AlertInput): void {
  const problems = [];
  if (!ALERT_SEVERITIES.includes(alert?.severity)) {
    problems.push({ field: 'severity', message: `expected info, warning or critical, got ${String(alert?.severity)}` });
  }
  if (typeof alert?.message !== 'string' || alert.message.length === 0) {
    problems.push({ field: 'message', message: 'expected a non-empty string' });
  }
  if (alert?.sensorId !== undefined && (typeof alert.sensorId !== 'string' || alert.sensorId.length === 0)) {
    problems.push({ field: 'sensorId', message: 'expected a non-empty string' });
  }
  if (problems.length > 0) throw new ValidationError(problems);
}

/**
 * Base class of user processors. Subclass it and implement `process`; add `start`, `flush` or `stop` when the
 * processor holds resources or state.
 *
 * @example
 * ```ts
 * class CustomProcessor extends DataProcessor {
 *   async process(point: DataPoint) {
 *     if (point.value > 100) await this.triggerAlert({ severity: 'warning', message: `High value: ${point.value}` });
 *     return { original: point.value, normalized: point.value / 100, timestamp: point.timestamp };
 *   }
 * }
 * ```
 */
export abstract class DataProcessor implements Processor {
  get name(): string {
    return this.constructor.name;
  }

  abstract process(point: DataPoint): ProcessResult | Promise<ProcessResult>;

  /**
   * Raises an alert. Inside `process()` it is about the reading being processed (its sensor and time, even when
   * calls interleave), resolves at once, and is stored in the same transaction as that reading: durable when
   * `sendData()` resolves. Outside `process()` (a timer, `flush`) it resolves once the alert is stored. Repeats
   * within the gateway's `alertDedupWindow` are counted, not raised again. Throws `ValidationError` on a bad
   * severity or an empty message.
   */
  async triggerAlert(alert: AlertInput): Promise<void> {
    checkAlert(alert);
    const scope = processingScope.getStore();
    const raised: RaisedAlert = {
      severity: alert.severity,
      message: alert.message.slice(0, MAX_ALERT_MESSAGE),
      sensorId: alert.sensorId ?? scope?.sensorId ?? 'unknown',
      source: this.name,
      ts: scope?.ts ?? Date.now(),
    };
    if (scope?.trip.open) {
      scope.alerts.push(raised);
      return;
    }
    await sinks.get(this)?.(raised);
  }

  /** @internal */
  static attach(processor: Processor, sink: AlertSink): void {
    sinks.set(processor, sink);
  }
}
