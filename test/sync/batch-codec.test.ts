import { createHash } from 'node:crypto';
import { gunzipSync } from 'node:zlib';
import { describe, expect, it } from 'vitest';
import type { OutboxRow } from '../../src/storage/storage.js';
import { encodeBatch } from '../../src/sync/batch-codec.js';

const header = { deviceId: 'device-001', replicaId: '00000000-0000-4000-8000-000000000001' };

const rows: OutboxRow[] = [
  {
    seq: 7,
    kind: 'reading',
    sensorId: 'temp-01',
    ts: 1_700_000_000_000,
    value: 23.5,
    unit: 'celsius',
    tags: '{"location":"warehouse-A"}',
    payload: null,
  },
  {
    seq: 9,
    kind: 'processed',
    sensorId: 'temp-01',
    ts: 1_700_000_001_000,
    value: null,
    unit: null,
    tags: null,
    payload: '{"avg":1.5}',
  },
];

describe('encodeBatch()', () => {
  it('encodes rows as a protocol v1 batch, in order, leaving out empty fields', () => {
    const sealed = encodeBatch(header, 3, rows, false);
    expect(JSON.parse(Buffer.from(sealed.body).toString('utf8'))).toEqual({
      v: 1,
      ...header,
      batchNo: 3,
      firstSeq: 7,
      lastSeq: 9,
      points: [
        {
          seq: 7,
          sensorId: 'temp-01',
          ts: 1_700_000_000_000,
          value: 23.5,
          unit: 'celsius',
          tags: { location: 'warehouse-A' },
        },
        { seq: 9, sensorId: 'temp-01', ts: 1_700_000_001_000, data: { avg: 1.5 } },
      ],
    });
    expect(sealed).toMatchObject({
      firstSeq: 7,
      lastSeq: 9,
      count: 2,
      contentType: 'application/json',
      contentEncoding: null,
    });
  });

  it('gzips the body when compression is on', () => {
    const plain = encodeBatch(header, 3, rows, false);
    const gzipped = encodeBatch(header, 3, rows, { level: 6 });
    expect(gzipped.contentEncoding).toBe('gzip');
    expect(gunzipSync(gzipped.body).equals(Buffer.from(plain.body))).toBe(true);
  });

  it('hashes the uncompressed body, so the hash does not depend on compression', () => {
    const plain = encodeBatch(header, 3, rows, false);
    const gzipped = encodeBatch(header, 3, rows, { level: 9 });
    expect(plain.hash).toBe(createHash('sha256').update(plain.body).digest('hex'));
    expect(gzipped.hash).toBe(plain.hash);
  });

  it('encodes the same rows to the same bytes', () => {
    const a = encodeBatch(header, 3, rows, { level: 6 });
    const b = encodeBatch(header, 3, rows, { level: 6 });
    expect(Buffer.from(a.body).equals(Buffer.from(b.body))).toBe(true);
  });

  it('refuses to encode no rows', () => {
    expect(() => encodeBatch(header, 1, [], false)).toThrow(RangeError);
  });
});
