import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { defer } from './cleanup.js';

/** A fresh folder under the OS temp folder, removed after the current test. */
export function tempDir(prefix = 'edge-gateway-test-'): string {
  const dir = mkdtempSync(join(tmpdir(), prefix));
  defer(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

/** A path for a database file in a fresh temp folder. */
export function tempDbPath(name = 'edge.db'): string {
  return join(tempDir(), name);
}
