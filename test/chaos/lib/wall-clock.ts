/** A handle on the process's wall clock, shifted by a test. */
export interface ShiftedWallClock {
  /** How far the wall clock is from the real one now, in ms. */
  readonly offsetMs: number;
  /** Steps the wall clock by `ms` (negative: backwards), as NTP, an operator or a dead RTC battery would. */
  jump(ms: number): void;
  /** Puts the real `Date` back. */
  restore(): void;
}

/**
 * Replaces the global `Date` with one whose "now" (`Date.now()` and `new Date()`) is the real time plus an offset
 * the test moves in jumps. Everything else (`performance.now()`, timers) keeps real, monotonic time, as it does
 * when a real wall clock is stepped. Dates made before or by the real `Date` still pass `instanceof Date`.
 */
export function shiftWallClock(): ShiftedWallClock {
  const RealDate = globalThis.Date;
  let offsetMs = 0;
  class ShiftedDate extends RealDate {
    constructor(...args: unknown[]) {
      if (args.length === 0) super(RealDate.now() + offsetMs);
      else super(...(args as [string | number | Date]));
    }

    static override now(): number {
      return RealDate.now() + offsetMs;
    }

    static override [Symbol.hasInstance](value: unknown): boolean {
      return value instanceof RealDate;
    }
  }
  globalThis.Date = ShiftedDate as DateConstructor;
  return {
    get offsetMs() {
      return offsetMs;
    },
    jump(ms: number) {
      offsetMs += ms;
    },
    restore() {
      globalThis.Date = RealDate;
    },
  };
}
