import { mkdirSync } from 'node:fs';
import { dirname } from 'node:path';
import { pino } from 'pino';
import type { Logger } from '../logger.js';

/** The CLI's logger: JSON lines with pino, to stdout, and to `file` as well when given. */
export function createLogger(level: string, file?: string): Logger {
  if (!file) return pino({ level });
  mkdirSync(dirname(file), { recursive: true });
  return pino(
    { level },
    pino.multistream([
      { stream: process.stdout },
      { stream: pino.destination({ dest: file, mkdir: true, sync: false }) },
    ]),
  );
}
