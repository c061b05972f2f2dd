import { describe, expect, it } from 'vitest';
import { SqliteStorage } from '../../src/index.js';
import { formatHlc } from '../../src/model/records-wire.js';
import { defer } from '../helpers/cleanup.js';
import { tempDbPath } from '../helpers/temp-dir.js';

function open(path = tempDbPath()) {
  const storage = new SqliteStorage({ path });
  storage.open();
  defer(() => storage.close());
  return storage;
}

let tick = 0;
const stamp = () => formatHlc({ ms: 1_700_000_000_000 + tick++, counter: 0 });
const put = (storage: SqliteStorage, key: string, value: unknown, collection = 'setpoints') =>
  storage.records.write({ collection, key, value: JSON.stringify(value), hlc: stamp(), origin: storage.replicaId });

describe('SqliteRecordStorage', () => {
  it('keeps a write and its mutation together, and coalesces pending edits of one key', () => {
    const storage = open();
    put(storage, 'boiler-1', { target: 70 });
    put(storage, 'boiler-1', { target: 71 });
    const last = put(storage, 'boiler-1', { target: 72 });
    expect(storage.records.get('setpoints', 'boiler-1')).toMatchObject({ value: '{"target":72}', version: 0 });
    expect(storage.records.mutationCount()).toBe(1);
    const [out] = storage.records.takeOutgoing(10);
    expect(out).toMatchObject({ op: 'put', value: '{"target":72}', hlc: last.hlc, state: 'sent', baseVersion: 0 });
  });

  it('never changes a sent mutation: a later edit waits as a new one until the first is settled', () => {
    const storage = open();
    put(storage, 'k', 1);
    const [sent] = storage.records.takeOutgoing(10);
    put(storage, 'k', 2);
    // Resent as it was; the new edit is not sent beside it (one mutation per key in flight).
    const again = storage.records.takeOutgoing(10);
    expect(again).toEqual([sent]);
    storage.records.settle([{ kind: 'applied', id: sent?.id as number, version: 1, hlc: sent?.hlc as string }]);
    const [next] = storage.records.takeOutgoing(10);
    expect(next).toMatchObject({ value: '2', baseVersion: 1 });
    expect(next?.id).not.toBe(sent?.id);
  });

  it('sends pending edits of other keys while one key waits for its resolver', () => {
    const storage = open();
    put(storage, 'stuck', 1);
    storage.records.takeOutgoing(10); // sent, and (say) its resolver keeps failing
    put(storage, 'other', 2);
    expect(storage.records.takeOutgoing(10).map((m) => m.key)).toEqual(['stuck', 'other']);
  });

  it('never reuses a mutation id, even after the newest is deleted and the database reopened', () => {
    const path = tempDbPath();
    let storage = open(path);
    put(storage, 'a', 1);
    const [first] = storage.records.takeOutgoing(10);
    storage.records.settle([{ kind: 'applied', id: first?.id as number, version: 1, hlc: first?.hlc as string }]);
    storage.close();
    storage = open(path);
    put(storage, 'b', 1);
    const [second] = storage.records.takeOutgoing(10);
    expect(second?.id).toBeGreaterThan(first?.id as number);
  });

  it('takes a restamp from the cloud unless a newer local edit replaced the state', () => {
    const storage = open();
    put(storage, 'k', 1);
    const [m] = storage.records.takeOutgoing(10);
    const restamped = formatHlc({ ms: 1_600_000_000_000, counter: 0 });
    storage.records.settle([{ kind: 'applied', id: m?.id as number, version: 1, hlc: restamped }]);
    expect(storage.records.get('setpoints', 'k')).toMatchObject({ version: 1, hlc: restamped });

    put(storage, 'k', 2);
    const [m2] = storage.records.takeOutgoing(10);
    const newer = put(storage, 'k', 3);
    storage.records.settle([{ kind: 'applied', id: m2?.id as number, version: 2, hlc: restamped }]);
    expect(storage.records.get('setpoints', 'k')).toMatchObject({ version: 2, hlc: newer.hlc, value: '3' });
  });

  it('settles a conflict only if the record is still what the resolver saw', () => {
    const storage = open();
    const seen = put(storage, 'k', 'edge');
    const [m] = storage.records.takeOutgoing(10);
    const cloud = {
      collection: 'setpoints',
      key: 'k',
      value: '"cloud"',
      deleted: false,
      version: 4,
      hlc: stamp(),
      origin: 'cloud',
    };
    put(storage, 'k', 'newer'); // arrives while the resolver runs
    expect(storage.records.settle([{ kind: 'take-cloud', id: m?.id as number, cloud, seenHlc: seen.hlc }])).toEqual([
      false,
    ]);
    expect(storage.records.get('setpoints', 'k')?.value).toBe('"newer"');
    const current = storage.records.get('setpoints', 'k');
    const seenNow = current?.hlc as string;
    expect(storage.records.settle([{ kind: 'take-cloud', id: m?.id as number, cloud, seenHlc: seenNow }])).toEqual([
      true,
    ]);
    expect(storage.records.get('setpoints', 'k')).toMatchObject({ value: '"cloud"', version: 4, origin: 'cloud' });
    expect(storage.records.mutationCount()).toBe(0);
  });

  it('re-queues the winner against the cloud version when the edge side wins', () => {
    const storage = open();
    const seen = put(storage, 'k', 'edge');
    const [m] = storage.records.takeOutgoing(10);
    const ok = storage.records.settle([
      {
        kind: 'repush',
        id: m?.id as number,
        cloudVersion: 7,
        resolved: { value: '"edge"', hlc: seen.hlc, origin: storage.replicaId },
        seenHlc: seen.hlc,
      },
    ]);
    expect(ok).toEqual([true]);
    const [again] = storage.records.takeOutgoing(10);
    expect(again).toMatchObject({ value: '"edge"', baseVersion: 7, state: 'sent' });
    expect(again?.id).not.toBe(m?.id);
  });

  it('applies a pulled page with its cursor, skipping keys with local edits and versions already held', () => {
    const storage = open();
    put(storage, 'mine', 'local edit');
    const change = (key: string, version: number, value: string | null) => ({
      collection: 'setpoints',
      key,
      value,
      deleted: value === null,
      version,
      hlc: stamp(),
      origin: 'cloud',
    });
    const applied = storage.records.applyPulled(
      [change('mine', 3, '"cloud"'), change('theirs', 2, '"x"'), change('gone', 1, null)],
      42,
    );
    expect(applied.map((c) => c.key)).toEqual(['theirs', 'gone']);
    expect(storage.records.pullCursor()).toBe(42);
    expect(storage.records.get('setpoints', 'mine')?.value).toBe('"local edit"');
    expect(storage.records.get('setpoints', 'gone')).toMatchObject({ deleted: true, value: null });
    expect(storage.records.applyPulled([change('theirs', 2, '"old replay"')], 43)).toEqual([]);
    expect(storage.records.get('setpoints', 'theirs')?.value).toBe('"x"');
  });

  it('moves a refused mutation to the record dead letters with its reason', () => {
    const storage = open();
    put(storage, 'k', 'bad');
    const [m] = storage.records.takeOutgoing(10);
    const mid = `${storage.replicaId}:${m?.id}`;
    storage.records.settle([{ kind: 'rejected', id: m?.id as number, mid, reason: 'too large' }]);
    expect(storage.records.mutationCount()).toBe(0);
    expect(storage.records.deadLetters()).toMatchObject([{ key: 'k', reason: 'too large', value: '"bad"' }]);
  });

  it('records the outcomes of one push in one transaction: all of them or, on a failure, none', () => {
    const storage = open();
    put(storage, 'a', 1);
    put(storage, 'b', 2);
    const [a, b] = storage.records.takeOutgoing(10);
    const bad = { kind: 'applied', id: b?.id as number, version: 1, hlc: null } as unknown as {
      kind: 'applied';
      id: number;
      version: number;
      hlc: string;
    };
    expect(() =>
      storage.records.settle([{ kind: 'applied', id: a?.id as number, version: 1, hlc: a?.hlc as string }, bad]),
    ).toThrow();
    expect(storage.records.mutationCount()).toBe(2);
    expect(storage.records.get('setpoints', 'a')?.version).toBe(0);
  });

  it('keeps records, pending edits and the cursor across a reopen', () => {
    const path = tempDbPath();
    let storage = open(path);
    put(storage, 'k', { a: 1 });
    storage.records.applyPulled([], 9);
    storage.close();
    storage = open(path);
    expect(storage.records.get('setpoints', 'k')?.value).toBe('{"a":1}');
    expect(storage.records.mutationCount()).toBe(1);
    expect(storage.records.pullCursor()).toBe(9);
  });
});
