import { describe, expect, it } from 'vitest';
import { SteadyClock } from '../../src/gateway/steady-clock.js';

const DAY_MS = 86_400_000;

describe('SteadyClock', () => {
  describe('.now()', () => {
    it('reads the wall clock when it is made', () => {
      const clock = new SteadyClock(
        () => Date.UTC(2026, 0, 1),
        () => 5_000.25,
      );
      expect(clock.now()).toBe(Date.UTC(2026, 0, 1));
    });

    it('advances by the monotonic clock only: a wall clock stepped two days forward moves it one second', () => {
      let wall = Date.UTC(2026, 0, 1);
      let monotonic = 12_345.5;
      const clock = new SteadyClock(
        () => wall,
        () => monotonic,
      );
      const before = clock.now();
      wall += 2 * DAY_MS + 1000;
      monotonic += 1000;
      expect(clock.now()).toBe(before + 1000);
    });

    it('does not go back with a wall clock stepped back', () => {
      let wall = Date.UTC(2026, 0, 1);
      let monotonic = 0;
      const clock = new SteadyClock(
        () => wall,
        () => monotonic,
      );
      wall -= DAY_MS;
      monotonic += 250;
      expect(clock.now()).toBe(Date.UTC(2026, 0, 1) + 250);
    });

    it('is the injected clock itself when both sides are that clock (the gateway under a `clock` option)', () => {
      let now = Date.UTC(2026, 0, 1);
      const clock = new SteadyClock(
        () => now,
        () => now,
      );
      now += 2 * DAY_MS;
      expect(clock.now()).toBe(Date.UTC(2026, 0, 3));
    });
  });
});
