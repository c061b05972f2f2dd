// The HTTP-date forms of RFC 9110 (IMF-fixdate, RFC 850, asctime): Date.parse alone reads "foo 2030" as a year.
const HTTP_DATE = /^(?:Mon|Tue|Wed|Thu|Fri|Sat|Sun)[a-z]*,? .*\b\d{2}:\d{2}:\d{2}\b/;

/**
 * Parses a `Retry-After` header (delay-seconds or an HTTP date) to milliseconds from `now`, or undefined when
 * absent or unreadable. Capped at one hour so that a hostile or broken server cannot park the gateway.
 */
export function parseRetryAfter(header: string | null | undefined, now: number = Date.now()): number | undefined {
  if (!header) return undefined;
  const trimmed = header.trim();
  let ms: number;
  if (/^\d+(\.\d+)?$/.test(trimmed)) ms = Number(trimmed) * 1000;
  else {
    if (!HTTP_DATE.test(trimmed)) return undefined;
    const date = Date.parse(trimmed);
    if (Number.isNaN(date)) return undefined;
    ms = date - now;
  }
  return Math.min(Math.max(0, Math.round(ms)), 3_600_000);
}
