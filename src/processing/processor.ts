import type { DataPoint, DataPointInput } from '../model/data-point.js';

/**
 * What a processor may return for one reading: a {@link DataPoint} (or its plain form), which goes on as a
 * reading; any other JSON-serialisable object, stored and synced as processed data linked to the reading's
 * sensor and timestamp; an array of those; or `null`/`undefined` to drop the reading.
 */
export type ProcessResult =
  | DataPoint
  | DataPointInput
  | Record<string, unknown>
  | readonly (DataPoint | DataPointInput | Record<string, unknown>)[]
  | null
  | undefined;

/** An alert raised by a processor. */
export interface AlertInput {
  severity: 'info' | 'warning' | 'critical';
  message: string;
  /** The sensor concerned; defaults to the reading's. */
  sensorId?: string;
}

/** An alert as emitted by the gateway. */
export interface Alert extends AlertInput {
  sensorId: string;
  /** The processor that raised it. */
  source: string;
  timestamp: Date;
}

/** Turns one reading into zero, one or many. May be sync or async. */
export interface Processor {
  /** Shown in dead letters and logs. @default the class name */
  readonly name?: string;
  process(point: DataPoint): ProcessResult | Promise<ProcessResult>;
}

/** Where a {@link DataProcessor} sends its alerts; set by the gateway. @internal */
export type AlertSink = (alert: Alert) => void | Promise<void>;

const sinks = new WeakMap<DataProcessor, AlertSink>();

/**
 * Base class of user processors. Subclass it and implement `process`.
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
  #current: DataPoint | undefined;

  get name(): string {
    return this.constructor.name;
  }

  abstract process(point: DataPoint): ProcessResult | Promise<ProcessResult>;

  /** Raises an alert about the reading being processed; the gateway emits it as `alert`. */
  async triggerAlert(alert: AlertInput): Promise<void> {
    const sink = sinks.get(this);
    const point = this.#current;
    await sink?.({
      ...alert,
      sensorId: alert.sensorId ?? point?.sensorId ?? 'unknown',
      source: this.name,
      timestamp: point?.timestamp ?? new Date(),
    });
  }

  /** @internal */
  static attach(processor: Processor, sink: AlertSink): void {
    if (processor instanceof DataProcessor) sinks.set(processor, sink);
  }

  /** @internal Runs `process` with the reading recorded, so that alerts can name its sensor. */
  static run(processor: Processor, point: DataPoint): ProcessResult | Promise<ProcessResult> {
    if (!(processor instanceof DataProcessor)) return processor.process(point);
    processor.#current = point;
    return processor.process(point);
  }
}
