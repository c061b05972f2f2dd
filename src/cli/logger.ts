import { mkdirSync } from 'node:fs';
import { dirname } from 'node:path';
import { type LoggerOptions, pino } from 'pino';
import type { Logger } from '../logger.js';

/** Fields that hold secrets wherever they appear in a log object: their values are replaced by `[Redacted]`. */
const REDACTED_PATHS = [
  'apiKey',
  '*.apiKey',
  'ingestToken',
  '*.ingestToken',
  'authorization',
  '*.authorization',
  'headers.authorization',
  '*.headers.authorization',
  'CLOUD_API_KEY',
  '*.CLOUD_API_KEY',
  'INGEST_TOKEN',
  '*.INGEST_TOKEN',
  'encryptionKey',
  '*.encryptionKey',
  'previousEncryptionKeys',
  '*.previousEncryptionKeys',
  'EDGE_DB_KEY',
  '*.EDGE_DB_KEY',
  'EDGE_DB_PREVIOUS_KEY',
  '*.EDGE_DB_PREVIOUS_KEY',
];
const CENSOR = '[Redacted]';
/** Shorter secrets are not searched for in the text of log lines: it would censor ordinary words. */
const MIN_SCRUBBED_LENGTH = 6;

/**
 * A `streamWrite` hook that censors each secret wherever it appears in a log line, in a message or an error's
 * stack as much as in a field: the last line of defence behind the redacted paths.
 */
export function secretScrubber(secrets: readonly (string | undefined)[]): ((line: string) => string) | undefined {
  const needles = new Set<string>();
  for (const secret of secrets) {
    if (secret === undefined || secret.length < MIN_SCRUBBED_LENGTH) continue;
    needles.add(secret);
    needles.add(JSON.stringify(secret).slice(1, -1)); // as it appears inside a JSON string
  }
  if (needles.size === 0) return undefined;
  const list = [...needles];
  return (line) => {
    let out = line;
    for (const needle of list) if (out.includes(needle)) out = out.split(needle).join(CENSOR);
    return out;
  };
}

/**
 * The CLI's logger: JSON lines with pino, to stdout, and to `file` as well when given. Secrets never reach either:
 * fields named like one are redacted, and each of `secrets` is censored wherever it appears in a line.
 */
export function createLogger(level: string, file?: string, secrets: readonly (string | undefined)[] = []): Logger {
  const scrub = secretScrubber(secrets);
  const options: LoggerOptions = {
    level,
    redact: { paths: REDACTED_PATHS, censor: CENSOR },
    ...(scrub ? { hooks: { streamWrite: scrub } } : {}),
  };
  if (!file) return pino(options);
  mkdirSync(dirname(file), { recursive: true });
  return pino(
    options,
    pino.multistream([
      { stream: process.stdout },
      { stream: pino.destination({ dest: file, mkdir: true, sync: false }) },
    ]),
  );
}
