import { rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { CHAOS_LONG, CHAOS_SEED } from './chaos-config.js';
import { formatTable, readRows, SUMMARY_FILE_VARIABLE } from './summary.js';

/** Collects the chaos scenarios' rows across test files and prints one table when the run ends. */
export default function setup(): () => void {
  const file = join(tmpdir(), `edge-gateway-chaos-${process.pid}-${Date.now()}.jsonl`);
  process.env[SUMMARY_FILE_VARIABLE] = file;
  return () => {
    const rows = readRows(file);
    rmSync(file, { force: true });
    if (rows.length === 0) return;
    const form = CHAOS_LONG ? 'long' : 'short';
    console.log(`\nChaos summary (${form} form, seed ${CHAOS_SEED}):\n\n${formatTable(rows)}\n`);
  };
}
