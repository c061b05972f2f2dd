import { describe, expect, it } from 'vitest';
import { killChildren } from '../chaos/lib/child-process.js';
import { redisAvailable } from '../helpers/cloud-stores.js';
import { findRedisServer } from '../helpers/redis-server.js';
import { formatFleet, runFleet } from './lib/fleet.js';

// The short form of `npm run fleet` (docs/benchmarks.md has the long one's figures). It asserts what must hold,
// never a speed: benchmarks are not tests.
describe.skipIf(!redisAvailable())('the fleet: gateways over several server nodes sharing one Redis', () => {
  it('stores every accepted reading exactly once and leaves every replica agreeing with the cloud, through a node killed mid-run', async () => {
    if (!findRedisServer()) throw new Error('CI=true and no redis-server on PATH: .ci/run must install redis-server');
    try {
      const report = await runFleet({
        gateways: 20,
        nodes: 3,
        durationS: 10,
        processes: 2,
        keys: 5,
        editEveryMs: 1000,
      });
      console.log(`fleet, short form:\n${formatFleet(report)}`);

      expect(report.deliveryProblems).toEqual([]);
      expect(report.undrained).toEqual([]);
      expect(report.records.disagreements).toEqual([]);
      expect(report.accepted).toBeGreaterThan(0);
      expect(report.stored).toBe(report.accepted);
      // The gateways did edit the same keys, and the cloud refused some of those edits as conflicts.
      expect(report.records.conflicts).toBeGreaterThan(0);
      expect(report.kill.downS).toBeGreaterThan(0);
    } finally {
      await killChildren();
    }
  }, 180_000);
});
