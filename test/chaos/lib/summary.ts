import { appendFileSync, readFileSync } from 'node:fs';

/** One scenario's outcome, a row of the table printed at the end of a chaos run. */
export interface ChaosRow {
  scenario: string;
  trials: number;
  kills: number;
  faults: number;
  /** Readings whose sendData() resolved. */
  acknowledged: number;
  /** Of those, readings found in the cloud. */
  delivered: number;
  lost: number;
  duplicated: number;
  /** Longest time from the end of a fault (restart, heal) to the queue drained, in ms. */
  maxRecoveryMs: number;
  /** Peak resident memory of the gateway process, in MiB. */
  peakRssMb: number;
}

const FILE_VARIABLE = 'EDGE_CHAOS_SUMMARY_FILE';

/** Records a row for the summary printed when the run ends (see global-setup.ts). */
export function recordChaos(row: ChaosRow): void {
  const file = process.env[FILE_VARIABLE];
  if (file) appendFileSync(file, `${JSON.stringify(row)}\n`);
}

/** The summary file's variable, set by the global setup. @internal */
export const SUMMARY_FILE_VARIABLE = FILE_VARIABLE;

/** Reads the rows recorded during a run. */
export function readRows(file: string): ChaosRow[] {
  let text = '';
  try {
    text = readFileSync(file, 'utf8');
  } catch {
    return [];
  }
  return text
    .split('\n')
    .filter(Boolean)
    .map((line) => JSON.parse(line) as ChaosRow);
}

/** The rows as a Markdown table, with a total line. */
export function formatTable(rows: readonly ChaosRow[]): string {
  const header = [
    'scenario',
    'trials',
    'kills',
    'faults',
    'acknowledged',
    'delivered',
    'lost',
    'duplicated',
    'max recovery',
    'peak RSS',
  ];
  const line = (r: ChaosRow) => [
    r.scenario,
    r.trials,
    r.kills,
    r.faults,
    r.acknowledged,
    r.delivered,
    r.lost,
    r.duplicated,
    `${(r.maxRecoveryMs / 1000).toFixed(2)} s`,
    `${r.peakRssMb.toFixed(0)} MiB`,
  ];
  const sum = (key: keyof ChaosRow) => rows.reduce((total, r) => total + (r[key] as number), 0);
  const total: ChaosRow = {
    scenario: '**total**',
    trials: sum('trials'),
    kills: sum('kills'),
    faults: sum('faults'),
    acknowledged: sum('acknowledged'),
    delivered: sum('delivered'),
    lost: sum('lost'),
    duplicated: sum('duplicated'),
    maxRecoveryMs: Math.max(0, ...rows.map((r) => r.maxRecoveryMs)),
    peakRssMb: Math.max(0, ...rows.map((r) => r.peakRssMb)),
  };
  return [
    `| ${header.join(' | ')} |`,
    `|${header.map((_, i) => (i === 0 ? '---' : '---:')).join('|')}|`,
    ...[...rows, total].map((r) => `| ${line(r).join(' | ')} |`),
  ].join('\n');
}
