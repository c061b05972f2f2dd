import { describe, expect, it } from 'vitest';
import { RecentCount } from '../../src/gateway/recent-count.js';

describe('RecentCount', () => {
  it('counts events within the window and forgets older ones', () => {
    const recent = new RecentCount(10_000);
    recent.add(2, 0);
    recent.add(3, 5_000);
    expect(recent.total(9_000)).toBe(5);
    expect(recent.total(12_000)).toBe(3);
    expect(recent.total(16_000)).toBe(0);
  });

  it('groups events by resolution step, and forgets a step whole', () => {
    const recent = new RecentCount(60_000, 1000);
    for (let t = 0; t < 10_000; t++) recent.add(1, t); // one event a millisecond for ten seconds
    expect(recent.total(10_000)).toBe(10_000);
    expect(recent.total(65_000)).toBe(5000); // the steps begun at 5 s to 9 s are still in the window
    expect(recent.total(70_001)).toBe(0);
  });

  it('applies a changed window at the next read', () => {
    const recent = new RecentCount(10_000);
    recent.add(1, 0);
    recent.windowMs = 1000;
    expect(recent.total(5000)).toBe(0);
  });

  it('ignores counts that are not positive', () => {
    const recent = new RecentCount(1000);
    recent.add(0, 0);
    recent.add(-3, 0);
    expect(recent.total(0)).toBe(0);
  });
});
