import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { formatHlc, parseHlc } from '../../src/model/records-wire.js';
import { HybridClock, hlcTime } from '../../src/sync/hlc.js';

/** A wall clock the test moves by hand. */
function manualClock(start: number) {
  const clock = { now: start, read: () => clock.now };
  return clock;
}

describe('HybridClock', () => {
  it('formats stamps so that string order is time order', () => {
    fc.assert(
      fc.property(
        fc.record({ ms: fc.nat(2 ** 48), counter: fc.nat(999_999) }),
        fc.record({ ms: fc.nat(2 ** 48), counter: fc.nat(999_999) }),
        (a, b) => {
          const byTime = a.ms - b.ms || a.counter - b.counter;
          const byText = formatHlc(a) < formatHlc(b) ? -1 : formatHlc(a) > formatHlc(b) ? 1 : 0;
          expect(Math.sign(byText)).toBe(Math.sign(byTime));
          expect(parseHlc(formatHlc(a))).toEqual(a);
        },
      ),
    );
  });

  it('refuses text that is not a stamp', () => {
    expect(() => parseHlc('2024-01-01')).toThrow(RangeError);
  });

  it('stamps strictly increase while the wall clock jumps backwards', () => {
    const wall = manualClock(Date.UTC(2026, 0, 1, 12));
    const clock = new HybridClock({ now: wall.read });
    const stamps = [clock.tick()];
    wall.now -= 3_600_000; // NTP steps the clock back an hour
    for (let i = 0; i < 5; i++) stamps.push(clock.tick());
    wall.now += 10;
    stamps.push(clock.tick());
    for (let i = 1; i < stamps.length; i++) expect((stamps[i] as string) > (stamps[i - 1] as string)).toBe(true);
    // The physical part stays at the highest time seen; only the counter moves until the wall clock catches up.
    expect(parseHlc(stamps.at(-1) as string).ms).toBe(Date.UTC(2026, 0, 1, 12));
  });

  it('orders its next stamp after a received one, and ignores one absurdly far ahead', () => {
    const wall = manualClock(1_000_000);
    const clock = new HybridClock({ now: wall.read, maxDriftMs: 60_000 });
    const remote = formatHlc({ ms: 1_030_000, counter: 7 });
    expect(clock.receive(remote)).toBe(true);
    expect(clock.tick() > remote).toBe(true);
    const broken = formatHlc({ ms: 1_030_000 + 3_600_000, counter: 0 });
    expect(clock.receive(broken)).toBe(false);
    expect(clock.tick() < broken).toBe(true);
  });

  it('resumes after the last stamp it is given, across a restart', () => {
    const last = formatHlc({ ms: 5_000_000, counter: 3 });
    const clock = new HybridClock({ now: () => 1_000, last });
    expect(clock.tick()).toBe(formatHlc({ ms: 5_000_000, counter: 4 }));
  });

  it('stamps in the server time once it has measured the offset', () => {
    const wall = manualClock(Date.UTC(2026, 0, 1, 13)); // an hour fast
    const clock = new HybridClock({ now: wall.read });
    const serverTime = new Date(Date.UTC(2026, 0, 1, 12)).toISOString();
    clock.observeServerTime(serverTime, 20);
    expect(clock.skewMs).toBe(3_600_000 - 10);
    wall.now += 1000;
    expect(hlcTime(clock.tick()).getTime()).toBe(Date.UTC(2026, 0, 1, 12) + 1000 + 10);
  });

  it('never lets the counter outgrow its width: the physical part moves on instead', () => {
    const clock = new HybridClock({ now: () => 0, last: formatHlc({ ms: 42, counter: 999_999 }) });
    expect(clock.tick()).toBe(formatHlc({ ms: 43, counter: 0 }));
  });
});
