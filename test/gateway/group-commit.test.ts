import { describe, expect, it } from 'vitest';
import { GroupCommit } from '../../src/gateway/group-commit.js';
import type { IngestKeyClaim, PendingIngestKey } from '../../src/gateway/ingest-keys.js';
import type { OutboxInsert } from '../../src/storage/storage.js';

const row: OutboxInsert = {
  kind: 'reading',
  sensorId: 'temp-01',
  ts: 0,
  value: 1,
  unit: null,
  tags: null,
  payload: null,
};

const key = (idempotencyKey: string): PendingIngestKey => ({
  claim: { idempotencyKey } as IngestKeyClaim,
  accepted: 1,
  stored: () => 1,
});

/**
 * A group commit recording the keys each flush hands to the storage: the array as handed, and its keys then (the
 * commit may read the array only while it runs).
 */
function recording() {
  const handed: (readonly PendingIngestKey[])[] = [];
  const names: string[][] = [];
  const commit = new GroupCommit((_rows, _dead, _extras, keys) => {
    handed.push(keys);
    names.push(keys.map((pending) => pending.claim.idempotencyKey));
  });
  return { commit, handed, names };
}

describe('GroupCommit', () => {
  describe('.flush()', () => {
    it('hands every group without keys the same empty array, making none per flush', async () => {
      const { commit, handed } = recording();
      await commit.add(row);
      await commit.add(row);
      await commit.addAll([row, row]);
      expect(handed).toHaveLength(3);
      expect(handed[0]).toHaveLength(0);
      expect(handed[1]).toBe(handed[0]);
      expect(handed[2]).toBe(handed[0]);
    });

    it('hands a group its own keys, and the next group none of them', async () => {
      const { commit, names } = recording();
      await Promise.all([commit.add(row, key('a')), commit.addAll([row], key('b'))]);
      await commit.add(row);
      await commit.add(row, key('c'));
      await commit.add(row);
      expect(names).toEqual([['a', 'b'], [], ['c'], []]);
    });
  });
});
