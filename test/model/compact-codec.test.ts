import { createHash } from 'node:crypto';
import { deflateRawSync, gzipSync } from 'node:zlib';
import { describe, expect, it } from 'vitest';
import { type CodecRow, CompactCodecError, decodeCompactRaw, encodeCompactRaw } from '../../src/model/compact-codec.js';
import { mulberry32 } from '../chaos/lib/chaos-config.js';

const HEADER = { deviceId: 'device-001', replicaId: '6f1c0a52-8a7e-4c4e-9a54-2b1f0f7d1c33', batchNo: 42 };
const TAGS = '{"location":"warehouse-A"}';

/** Ten sensors; `walk` values move by 0.01 steps, otherwise they are noisy float64. */
function rows(n: number, kind: 'walk' | 'noisy', seed = 7): CodecRow[] {
  const random = mulberry32(seed);
  const level = Array.from({ length: 10 }, (_, i) => 20 + i);
  return Array.from({ length: n }, (_, i) => {
    const s = i % 10;
    level[s] =
      kind === 'walk' ? Math.round(((level[s] as number) + (random() - 0.5) * 0.1) * 100) / 100 : random() * 1e3;
    return {
      seq: 1000 + i,
      sensorId: `sensor-${s}`,
      ts: 1_795_000_000_000 + Math.floor(i / 10) * 1000,
      value: level[s] as number,
      unit: 'celsius',
      tags: TAGS,
      payload: null,
    };
  });
}

const roundTrip = (input: CodecRow[]) => decodeCompactRaw(encodeCompactRaw(HEADER, input));

const asDecoded = (row: CodecRow) => ({
  seq: row.seq,
  sensorId: row.sensorId,
  ts: row.ts,
  ...(row.value === null ? {} : { value: row.value }),
  ...(row.unit === null ? {} : { unit: row.unit }),
  ...(row.tags === null ? {} : { tags: JSON.parse(row.tags) }),
  ...(row.payload === null ? {} : { data: JSON.parse(row.payload) }),
});

describe('compact codec', () => {
  it('round-trips random walks and noisy floats exactly, with the header', () => {
    for (const kind of ['walk', 'noisy'] as const) {
      const input = rows(1000, kind);
      const decoded = roundTrip(input);
      expect(decoded).toMatchObject({ ...HEADER, firstSeq: 1000, lastSeq: 1999 });
      expect(decoded.points).toEqual(input.map(asDecoded));
    }
  });

  it('round-trips what the scaled-integer path must not round: -0, tiny, huge and irregular values', () => {
    const values = [0, -0, 1e-12, 123456789.123, -5.5, 2 ** 52, Number.MIN_VALUE, -Number.MAX_VALUE, 0.1 + 0.2];
    const input = values.map((value, i) => ({
      seq: i + 1,
      sensorId: 'x',
      ts: i,
      value,
      unit: null,
      tags: null,
      payload: null,
    }));
    const decoded = roundTrip(input).points.map((p) => p.value);
    for (const [i, value] of values.entries()) expect(Object.is(decoded[i], value)).toBe(true);
  });

  it('keeps row order, seq gaps, units, tags, processed payloads and out-of-order timestamps', () => {
    const input: CodecRow[] = [
      { seq: 5, sensorId: 'a', ts: 3000, value: 1.5, unit: 'bar', tags: null, payload: null },
      {
        seq: 9,
        sensorId: 'b',
        ts: 1000,
        value: null,
        unit: null,
        tags: TAGS,
        payload: '{"normalized":0.5,"when":"x"}',
      },
      { seq: 10, sensorId: 'a', ts: 2000, value: 1.25, unit: 'bar', tags: null, payload: null },
      { seq: 11, sensorId: 'a', ts: 2000, value: 7, unit: 'psi', tags: '{"k":"é ☃"}', payload: null },
    ];
    expect(roundTrip(input).points).toEqual(input.map(asDecoded));
  });

  it('makes random walks at most 2 bytes a reading at 1000 per batch and 5 at 100, deflated', () => {
    const size = (n: number) => deflateRawSync(encodeCompactRaw(HEADER, rows(n, 'walk'))).length / n;
    expect(size(1000)).toBeLessThanOrEqual(2);
    expect(size(100)).toBeLessThanOrEqual(5);
  });

  it('is smaller than gzip of the same batch as JSON, for noisy floats too', () => {
    const input = rows(1000, 'noisy');
    const compact = deflateRawSync(encodeCompactRaw(HEADER, input)).length;
    const json = gzipSync(JSON.stringify({ points: input.map(asDecoded) })).length;
    expect(compact).toBeLessThan(json);
  });

  it('encodes a mixed batch to the very bytes it always has (a sealed batch on disk is resent as stored)', () => {
    // Series of several units, tag sets and kinds per sensor, non-ASCII strings, seq gaps, scaled and Gorilla
    // values, processed payloads. The digests are of the encoder as first shipped; a change to the encoder must keep
    // them, or be a new format version.
    const mixed = (n: number): CodecRow[] => {
      const random = mulberry32(11);
      return Array.from({ length: n }, (_, i) => {
        const processed = i % 13 === 0;
        return {
          seq: 500 + i * (i % 7 === 0 ? 2 : 1),
          sensorId: i % 9 === 0 ? 'capteur-é☃' : `sensor-${i % 6}`,
          ts: 1_795_000_000_000 + Math.floor(random() * 1000) * 100,
          value: processed ? null : i % 2 === 0 ? Math.round(random() * 10_000) / 100 : random() * 1e6 - 5e5,
          unit: i % 4 === 0 ? null : i % 5 === 0 ? 'bar' : 'celsius',
          tags: i % 3 === 0 ? null : i % 8 === 0 ? '{"line":"ß-7","k":"v"}' : '{"location":"warehouse-A"}',
          payload: processed ? `{"mean":${i / 3},"note":"\\u00e9"}` : null,
        };
      });
    };
    const digest = (n: number) =>
      createHash('sha256')
        .update(encodeCompactRaw(HEADER, mixed(n)))
        .digest('hex');
    expect(digest(1)).toBe('d2c3fec0437521978c857be7f16b96ff01203c5899d996517e6b290e4bc27288');
    expect(digest(100)).toBe('415885442f9f0ed05cb0400cc79acf5ef3e886b0317320f6364511dbe229029e');
    expect(digest(1000)).toBe('b615259565d97b1bc65b97278f6b702d42358f4f3f268a4b855e59d0ae0330c1');
  });

  it('refuses a body that is not a compact batch, truncated, or with trailing bytes', () => {
    const good = encodeCompactRaw(HEADER, rows(50, 'walk'));
    expect(() => decodeCompactRaw(new TextEncoder().encode('{"v":1}'))).toThrow(CompactCodecError);
    for (const cut of [3, 10, good.length / 2, good.length - 1]) {
      expect(() => decodeCompactRaw(good.subarray(0, Math.floor(cut)))).toThrow(CompactCodecError);
    }
    expect(() => decodeCompactRaw(Uint8Array.from([...good, 0]))).toThrow(CompactCodecError);
  });

  it('never throws anything but CompactCodecError on random damage', () => {
    const random = mulberry32(99);
    const good = encodeCompactRaw(HEADER, rows(200, 'noisy'));
    for (let trial = 0; trial < 300; trial++) {
      const damaged = Uint8Array.from(good);
      for (let i = 0; i < 3; i++) damaged[4 + Math.floor(random() * (good.length - 4))] = Math.floor(random() * 256);
      try {
        decodeCompactRaw(damaged);
      } catch (error) {
        expect(error).toBeInstanceOf(CompactCodecError);
      }
    }
  });
});
