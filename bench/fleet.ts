/**
 * `npm run fleet -- --gateways=200 --nodes=3 --duration=60`: the fleet test's long form (test/fleet/lib/fleet.ts),
 * printing its figures for docs/benchmarks.md. More: `--processes=4 --rate=50 --keys=10 --edit-every-ms=2000
 * --downtime=2 --sync-interval=1 --appendfsync=everysec`. Loopback only; stops by itself. Exits 1 when a reading was
 * lost or stored twice, or a replica disagrees with the cloud.
 */
import { formatFleet, runFleet } from '../test/fleet/lib/fleet.js';

const args = new Map(process.argv.slice(2).map((a) => a.replace(/^--/, '').split('=') as [string, string]));
const number = (name: string, fallback: number) => {
  const value = Number(args.get(name) ?? fallback);
  if (!Number.isFinite(value) || value <= 0) throw new Error(`--${name} must be a positive number`);
  return value;
};
const appendfsync = args.get('appendfsync') ?? 'everysec';
if (appendfsync !== 'no' && appendfsync !== 'everysec' && appendfsync !== 'always') {
  throw new Error('--appendfsync must be no, everysec or always');
}

const report = await runFleet({
  gateways: number('gateways', 200),
  nodes: number('nodes', 3),
  durationS: number('duration', 60),
  ...(args.has('processes') ? { processes: number('processes', 4) } : {}),
  rate: number('rate', 50),
  keys: number('keys', 10),
  editEveryMs: number('edit-every-ms', 2000),
  downtimeS: number('downtime', 2),
  syncInterval: number('sync-interval', 1),
  appendfsync,
  log: (line) => console.log(line),
});
console.log(`\n${formatFleet(report)}`);
for (const problem of [...report.deliveryProblems, ...report.records.disagreements].slice(0, 20)) {
  console.log(`  ! ${problem}`);
}
const ok = report.deliveryProblems.length === 0 && report.records.disagreements.length === 0;
process.exit(ok ? 0 : 1);
