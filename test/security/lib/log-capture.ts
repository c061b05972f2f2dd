import type { Logger } from '../../../src/logger.js';

/** One call to a {@link Logger}, with when it happened. */
export interface LogEntry {
  level: 'debug' | 'info' | 'warn' | 'error';
  /** `Date.now()` at the call. */
  at: number;
  fields: Record<string, unknown>;
  message: string | undefined;
}

/** A logger that keeps every call, at every level. */
export function captureLogger(): Logger & { entries: LogEntry[] } {
  const entries: LogEntry[] = [];
  const at =
    (level: LogEntry['level']) =>
    (fields: object, message?: string): void => {
      entries.push({ level, at: Date.now(), fields: { ...fields } as Record<string, unknown>, message });
    };
  return { entries, debug: at('debug'), info: at('info'), warn: at('warn'), error: at('error') };
}

/** The cloud server's request log lines (one per request it answered), oldest first. */
export const requestLines = (entries: readonly LogEntry[]) =>
  entries
    .filter((e) => typeof e.fields.status === 'number' && typeof e.fields.path === 'string')
    .map((e) => ({
      at: e.at,
      method: e.fields.method as string,
      path: e.fields.path as string,
      status: e.fields.status as number,
      key: e.fields.key as string | undefined,
      retryAfterSeconds: e.fields.retryAfterSeconds as number | undefined,
    }));
