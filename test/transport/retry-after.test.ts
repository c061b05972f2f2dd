import { describe, expect, it } from 'vitest';
import { parseRetryAfter } from '../../src/transport/retry-after.js';

const NOW = Date.UTC(2024, 0, 1, 12, 0, 0);

describe('parseRetryAfter()', () => {
  it('reads delay-seconds as milliseconds', () => {
    expect(parseRetryAfter('1', NOW)).toBe(1000);
    expect(parseRetryAfter('120', NOW)).toBe(120_000);
  });

  it('reads fractional seconds', () => {
    expect(parseRetryAfter('1.5', NOW)).toBe(1500);
  });

  it('ignores surrounding whitespace', () => {
    expect(parseRetryAfter('  3 ', NOW)).toBe(3000);
  });

  it('reads an HTTP date as the time from now until it', () => {
    expect(parseRetryAfter('Mon, 01 Jan 2024 12:00:30 GMT', NOW)).toBe(30_000);
  });

  it('reads an HTTP date in the past as no wait', () => {
    expect(parseRetryAfter('Mon, 01 Jan 2024 11:00:00 GMT', NOW)).toBe(0);
  });

  it('returns undefined for an absent header', () => {
    expect(parseRetryAfter(null, NOW)).toBeUndefined();
    expect(parseRetryAfter(undefined, NOW)).toBeUndefined();
    expect(parseRetryAfter('', NOW)).toBeUndefined();
  });

  it('returns undefined for garbage', () => {
    expect(parseRetryAfter('soon', NOW)).toBeUndefined();
    expect(parseRetryAfter('-5', NOW)).toBeUndefined();
    expect(parseRetryAfter('1e3', NOW)).toBeUndefined();
  });

  it('returns undefined for text that only contains a year', () => {
    expect(parseRetryAfter('foo 2030', NOW)).toBeUndefined();
  });

  it('reads the obsolete RFC 850 date form', () => {
    expect(parseRetryAfter('Monday, 01-Jan-24 12:00:10 GMT', NOW)).toBe(10_000);
  });

  it('caps delay-seconds at one hour', () => {
    expect(parseRetryAfter('86400', NOW)).toBe(3_600_000);
  });

  it('caps an HTTP date at one hour', () => {
    expect(parseRetryAfter('Tue, 02 Jan 2024 12:00:00 GMT', NOW)).toBe(3_600_000);
  });
});
