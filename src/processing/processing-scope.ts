import { AsyncLocalStorage } from 'node:async_hooks';
import type { AlertSeverity } from './alert.js';

/** An alert as a processor raised it, before the gateway stores it. @internal */
export interface RaisedAlert {
  severity: AlertSeverity;
  message: string;
  sensorId: string;
  /** The processor that raised it. */
  source: string;
  /** Epoch ms: the time of the reading it is about, or the clock's when it is about none. */
  ts: number;
}

/**
 * What one reading's trip through the chain shares with the processors it meets: the reading a processor is
 * working on (so that its alerts name the right sensor even when calls interleave) and where those alerts go.
 * @internal
 */
export interface ProcessingScope {
  readonly sensorId: string;
  readonly ts: number;
  /** Alerts raised for this reading; stored in the transaction that stores the reading. */
  readonly alerts: RaisedAlert[];
  /** Shared by every scope of one reading; false once the reading's outcome is decided (stored, dropped, timed out). */
  readonly trip: { open: boolean };
}

/** One store per reading per processor call: concurrent async `process()` calls each see their own. @internal */
export const processingScope = new AsyncLocalStorage<ProcessingScope>();
