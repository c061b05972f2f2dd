import { existsSync, renameSync, statSync } from 'node:fs';

/** A database file found corrupt at open and set aside, from {@link Storage.quarantined}. */
export interface QuarantineReport {
  /** Where the file is now: `<path>.corrupt-<timestamp>` (its `-wal` and `-shm` next to it, when it had them). */
  path: string;
  /** What was wrong with it, in SQLite's words (`file is not a database`, the first lines of `quick_check`, ...). */
  reason: string;
  /** When it was set aside. */
  at: Date;
}

/** Thrown inside the storage when a check finds the file corrupt; never escapes `open()`. @internal */
export class CorruptDatabaseError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'CorruptDatabaseError';
  }
}

// SQLite's words for "this file is damaged", as opposed to "this file is fine but I cannot use it now"
// (SQLITE_BUSY, SQLITE_CANTOPEN, SQLITE_READONLY, SQLITE_IOERR_*, or a newer schema): those are refused, never
// quarantined, since a rename would not fix them and could hide a healthy file from its owner.
const CORRUPT_CODES = /^SQLITE_(NOTADB|CORRUPT)/;

// SQLite has used schema formats 1 to 4 since 2006; it answers "unsupported file format" (a plain SQLITE_ERROR) to
// any other value in the header's schema-format field, which only damage puts there.
const UNSUPPORTED_FORMAT = /^unsupported file format$/;

/** Why `error` shows the database file to be damaged, or undefined when it does not. @internal */
export function corruptionReason(error: unknown): string | undefined {
  if (error instanceof CorruptDatabaseError) return error.message;
  const code = (error as { code?: unknown } | null)?.code;
  if (typeof code !== 'string') return undefined;
  const message = (error as Error).message;
  if (CORRUPT_CODES.test(code) || (code === 'SQLITE_ERROR' && UNSUPPORTED_FORMAT.test(message))) {
    return `${message} (${code})`;
  }
  return undefined;
}

/** Size of a file in bytes, 0 when it does not exist. @internal */
export function fileSize(path: string): number {
  try {
    return statSync(path).size;
  } catch {
    return 0;
  }
}

// ISO 8601 basic format (20240102T030405.678Z): no colons, so the name is valid on every file system.
const stamp = (at: Date) => at.toISOString().replace(/[-:]/g, '');

/**
 * Renames a damaged database file, with its `-wal`, `-shm` and `-journal` companions, to
 * `<path>.corrupt-<timestamp>`, and returns the new path. Never deletes anything. @internal
 */
export function quarantineFiles(path: string, at: Date): string {
  let target = `${path}.corrupt-${stamp(at)}`;
  for (let n = 1; existsSync(target); n++) target = `${path}.corrupt-${stamp(at)}-${n}`;
  // The companions first: a WAL left behind at `<path>-wal` would be replayed into the fresh database made at
  // `<path>`, bringing the damaged pages back. A crash between the renames leaves the main file in place, and the
  // next start sets it aside again.
  for (const suffix of ['-wal', '-shm', '-journal']) {
    if (existsSync(`${path}${suffix}`)) renameSync(`${path}${suffix}`, `${target}${suffix}`);
  }
  renameSync(path, target);
  return target;
}
