import { describe, expect, it } from 'vitest';
import { isNotStartedError, isValidationError, type SyncRecord, type ValidationError } from '../../src/index.js';
import { createGateway } from '../helpers/gateway.js';

describe('gateway.records', () => {
  it('writes, reads, lists and deletes locally, with no cloud at all', async () => {
    const gateway = createGateway();
    await gateway.start();
    const written = await gateway.records.put('setpoints', 'boiler-1', { target: 72 });
    expect(written).toMatchObject({ collection: 'setpoints', key: 'boiler-1', value: { target: 72 }, version: 0 });
    expect(written.origin).toBe(gateway.getStatus().replicaId);
    expect(written.timestamp).toBeInstanceOf(Date);
    await gateway.records.put('setpoints', 'boiler-2', { target: 65 });
    expect(gateway.records.get('setpoints', 'boiler-1')?.value).toEqual({ target: 72 });
    expect(gateway.records.list('setpoints').map((r) => r.key)).toEqual(['boiler-1', 'boiler-2']);
    expect(await gateway.records.delete('setpoints', 'boiler-1')).toBe(true);
    expect(await gateway.records.delete('setpoints', 'boiler-1')).toBe(false);
    expect(gateway.records.get('setpoints', 'boiler-1')).toBeUndefined();
    expect(gateway.records.list('setpoints').map((r) => r.key)).toEqual(['boiler-2']);
    expect(gateway.records.pendingCount()).toBe(2); // one per key: the delete coalesced with the put
    expect(gateway.getStatus().pendingRecordCount).toBe(2);
  });

  it('keeps records across a restart, with stamps that carry on increasing', async () => {
    const gateway = createGateway();
    await gateway.start();
    const first = await gateway.records.put('config', 'rate', 10);
    await gateway.stop();
    const again = createGateway({ localDb: gateway.options.localDb, clock: () => 0 }); // a clock reset to 1970
    await again.start();
    expect(again.records.get('config', 'rate')?.value).toBe(10);
    const second = await again.records.put('config', 'rate', 11);
    expect(second.hlc > first.hlc).toBe(true);
  });

  it('refuses bad names and values with a ValidationError, storing nothing', async () => {
    const gateway = createGateway();
    await gateway.start();
    const attempts: [string, string, unknown, string][] = [
      ['', 'k', 1, 'collection'],
      ['has space', 'k', 1, 'collection'],
      ['c', '', 1, 'key'],
      ['c', 'k', undefined, 'value'],
      ['c', 'k', { when: new Date() }, 'value.when'],
      ['c', 'k', { n: Number.NaN }, 'value.n'],
      ['c', 'k', [1, () => 2], 'value[1]'],
      ['c', 'k', 10n, 'value'],
      ['c', 'k', 'x'.repeat(300 * 1024), 'value'],
    ];
    for (const [collection, key, value, field] of attempts) {
      const error = (await gateway.records.put(collection, key, value).catch((e: unknown) => e)) as ValidationError;
      expect(isValidationError(error), `${collection}/${key}`).toBe(true);
      expect(error.issues.map((i) => i.field)).toContain(field);
      expect(error.message).toMatch(/^Invalid record/);
    }
    const circular: Record<string, unknown> = {};
    circular.self = circular;
    await expect(gateway.records.put('c', 'k', circular)).rejects.toThrow(/circular/);
    expect(gateway.records.pendingCount()).toBe(0);
    expect(gateway.records.list('c')).toEqual([]);
  });

  it('tells watchers of a collection about local writes and deletes, and survives a throwing watcher', async () => {
    const gateway = createGateway();
    await gateway.start();
    const seen: [SyncRecord, string][] = [];
    const errors: Error[] = [];
    gateway.on('error', (e) => errors.push(e));
    gateway.records.watch('setpoints', () => {
      throw new Error('watcher bug');
    });
    const stop = gateway.records.watch('setpoints', (record, change) => seen.push([record, change.source]));
    gateway.records.watch('other', (record) => seen.push([record, 'wrong collection']));
    await gateway.records.put('setpoints', 'a', 1);
    await gateway.records.delete('setpoints', 'a');
    stop();
    await gateway.records.put('setpoints', 'a', 2);
    expect(seen.map(([r, source]) => [r.key, r.deleted, source])).toEqual([
      ['a', false, 'local'],
      ['a', true, 'local'],
    ]);
    expect(errors.map((e) => e.message)).toEqual(['watcher bug', 'watcher bug', 'watcher bug']);
  });

  it('refuses record calls before start and after stop', async () => {
    const gateway = createGateway();
    const before = (() => {
      try {
        gateway.records.list('c');
      } catch (error) {
        return error;
      }
    })();
    expect(isNotStartedError(before)).toBe(true);
    await gateway.start();
    await gateway.stop();
    await expect(gateway.records.put('c', 'k', 1)).rejects.toThrow(/records.put\(\) was called after stop/);
  });
});
