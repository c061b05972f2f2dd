import { describe, expect, it } from 'vitest';
import { type IntakeWork, type OutboxInsert, SqliteStorage } from '../../src/index.js';
import { encodeBatch } from '../../src/sync/batch-codec.js';
import { defer } from '../helpers/cleanup.js';
import { tempDbPath } from '../helpers/temp-dir.js';

const row = (value: number): OutboxInsert => ({
  kind: 'reading',
  sensorId: 's',
  ts: 1_700_000_000_000 + value,
  value,
  unit: null,
  tags: null,
  payload: null,
});

const work = (rows: OutboxInsert[], alertMessages: string[] = []): IntakeWork => ({
  rows,
  deadLetters: [],
  alerts: alertMessages.map((message, i) => ({
    source: 'test',
    sensorId: 's',
    severity: 'warning',
    message,
    ts: 1_700_000_000_000 + i,
    payload: JSON.stringify({ alert: { message } }),
  })),
  dedupWindowMs: 0,
  maxAlerts: 100,
  aggregates: [],
  maxAggregates: 100,
  maxHistory: 0,
  state: [],
});

function open(): SqliteStorage {
  const storage = new SqliteStorage({ path: tempDbPath() });
  storage.open();
  defer(() => storage.close());
  return storage;
}

const seal = (storage: SqliteStorage, limit: number) =>
  storage.sealNext(limit, (batchNo, rows) => ({
    ...encodeBatch({ deviceId: 'd', replicaId: storage.replicaId }, batchNo, rows, false, 'json'),
    count: rows.length,
  }));

const values = (batch: ReturnType<typeof seal>) => {
  const body = JSON.parse(Buffer.from(batch?.body ?? []).toString()) as {
    points: { seq: number; value?: number; data?: unknown }[];
  };
  return body.points.map((p) => p.value ?? p.data);
};

describe('SqliteStorage alert lane', () => {
  it('seals queued alerts before older telemetry, and each acknowledgement removes only its own lane', () => {
    const storage = open();
    storage.intake(work([row(1), row(2), row(3)]));
    storage.intake(work([row(4)], ['late alert']));
    storage.intake(work([row(5)]));
    expect(storage.pendingCount()).toBe(6);

    const alerts = seal(storage, 100);
    expect(values(alerts)).toEqual([{ alert: { message: 'late alert' } }]);
    expect(storage.acknowledge(alerts?.batchNo as number)).toBe(1);
    expect(storage.pendingCount()).toBe(5);

    const bulk = seal(storage, 100);
    expect(values(bulk)).toEqual([1, 2, 3, 4, 5]);
    // The bulk batch's seq range spans where the alert sat; acknowledging it removes its five rows only.
    expect(storage.acknowledge(bulk?.batchNo as number)).toBe(5);
    expect(storage.pendingCount()).toBe(0);
    expect(seal(storage, 100)).toBeUndefined();
  });

  it('sends a bulk batch sealed before an alert first, then the alert', () => {
    const storage = open();
    storage.intake(work([row(1), row(2)]));
    const bulk = seal(storage, 100);
    storage.intake(work([row(3)], ['alarm']));
    expect(storage.oldestBatch()?.batchNo).toBe(bulk?.batchNo);
    storage.acknowledge(bulk?.batchNo as number);
    expect(values(seal(storage, 100))).toEqual([{ alert: { message: 'alarm' } }]);
  });

  it('keeps the other lane queued when a batch is refused and unsealed', () => {
    const storage = open();
    storage.intake(work([row(1)], ['a']));
    storage.intake(work([row(2)]));
    const alerts = seal(storage, 100);
    const alertSeq = alerts?.firstSeq as number;
    expect(storage.unseal(alerts?.batchNo as number, new Map([[alertSeq, 'refused']]), 'cloud')).toBe(1);
    expect(storage.deadLetters()).toEqual([expect.objectContaining({ kind: 'alert', reason: 'refused' })]);
    expect(values(seal(storage, 100))).toEqual([1, 2]);
  });

  it('never reuses the seq of an acknowledged alert after a restart', () => {
    const path = tempDbPath();
    const first = new SqliteStorage({ path });
    first.open();
    first.intake(work([row(1)], ['a']));
    const alerts = seal(first, 100);
    first.acknowledge(alerts?.batchNo as number);
    const bulk = seal(first, 100);
    first.acknowledge(bulk?.batchNo as number);
    first.close();
    const again = new SqliteStorage({ path });
    again.open();
    defer(() => again.close());
    expect(again.intake(work([row(3)])).firstSeq).toBe(3);
  });
});
