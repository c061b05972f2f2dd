/** How serious an alert is. */
export type AlertSeverity = 'info' | 'warning' | 'critical';

/** The severities, least serious first. */
export const ALERT_SEVERITIES: readonly AlertSeverity[] = ['info', 'warning', 'critical'];

/** Longest alert message kept, in characters; a longer one is cut there. */
export const MAX_ALERT_MESSAGE = 1024;

/** An alert as a processor raises it with `triggerAlert()`. */
export interface AlertInput {
  severity: AlertSeverity;
  message: string;
  /** The sensor concerned. @default the sensor of the reading being processed */
  sensorId?: string;
}

/**
 * An alert as the gateway stored it and emits it (`alert` event) and returns it (`alerts()`). Repeats of the same
 * source, sensor and message within `alertDedupWindow` are counted into it rather than raised again.
 */
export interface Alert {
  /** Its id in the local database. */
  id: number;
  severity: AlertSeverity;
  message: string;
  sensorId: string;
  /** The processor that raised it. */
  source: string;
  /** When it was raised: the time of the reading it is about. */
  timestamp: Date;
  /** How many times it was raised within its de-duplication window, itself included. */
  count: number;
  /** The time of the latest repeat counted into it (equal to `timestamp` while `count` is 1). */
  lastTimestamp: Date;
}

/** What {@link EdgeGateway.alerts} selects. Every field narrows the selection. */
export interface AlertQuery {
  /** Alerts raised at or after this time. */
  since?: Date | number | string;
  /** Alerts raised before this time. */
  until?: Date | number | string;
  /** Alerts of this severity or a more serious one. */
  severity?: AlertSeverity;
  sensorId?: string;
  /** The processor that raised them. */
  source?: string;
  /** Most alerts returned, newest first. @default 100 */
  limit?: number;
}
