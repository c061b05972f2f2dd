import { describe, expect, it } from 'vitest';
import { DATA_POINT_LIMITS, DataPoint, isValidationError, ValidationError } from '../../src/index.js';

/** The ValidationError a reading is refused with; fails the test when it is accepted. */
function refusal(input: unknown): ValidationError {
  try {
    new DataPoint(input as never);
  } catch (error) {
    expect(isValidationError(error)).toBe(true);
    return error as ValidationError;
  }
  throw new Error(`expected ${JSON.stringify(input)} to be refused`);
}

const fieldsOf = (error: ValidationError) => error.issues.map((issue) => issue.field);

describe('DataPoint', () => {
  describe('constructor', () => {
    it('keeps the fields of a plain reading', () => {
      const point = new DataPoint({
        sensorId: 'temp-01',
        value: 23.5,
        unit: 'celsius',
        tags: { location: 'warehouse-A' },
        timestamp: new Date('2024-03-01T08:00:00.000Z'),
      });
      expect(point.sensorId).toBe('temp-01');
      expect(point.value).toBe(23.5);
      expect(point.unit).toBe('celsius');
      expect(point.tags).toEqual({ location: 'warehouse-A' });
      expect(point.timestamp.toISOString()).toBe('2024-03-01T08:00:00.000Z');
    });

    it('accepts another DataPoint as input', () => {
      const original = new DataPoint({ sensorId: 'temp-01', value: 1, tags: { a: 'b' }, timestamp: 1_700_000_000_000 });
      const copy = new DataPoint(original);
      expect(copy.toJSON()).toEqual(original.toJSON());
    });

    it('normalises a Date timestamp', () => {
      const point = new DataPoint({ sensorId: 's', value: 1, timestamp: new Date(Date.UTC(2024, 5, 1, 12)) });
      expect(point.timestamp).toBeInstanceOf(Date);
      expect(point.timestamp.getTime()).toBe(Date.UTC(2024, 5, 1, 12));
    });

    it('normalises an epoch-milliseconds timestamp', () => {
      const point = new DataPoint({ sensorId: 's', value: 1, timestamp: 1_717_243_200_123 });
      expect(point.timestamp.toISOString()).toBe('2024-06-01T12:00:00.123Z');
    });

    it('normalises an ISO-8601 string with an offset to the same instant', () => {
      const point = new DataPoint({ sensorId: 's', value: 1, timestamp: '2024-01-01T12:00:00+02:00' });
      expect(point.timestamp.toISOString()).toBe('2024-01-01T10:00:00.000Z');
    });

    it('normalises an ISO-8601 UTC string', () => {
      const point = new DataPoint({ sensorId: 's', value: 1, timestamp: '2024-01-01T12:00:00.250Z' });
      expect(point.timestamp.getTime()).toBe(Date.UTC(2024, 0, 1, 12, 0, 0, 250));
    });

    it('defaults the timestamp to now', () => {
      const before = Date.now();
      const point = new DataPoint({ sensorId: 's', value: 1 });
      const after = Date.now();
      expect(point.timestamp.getTime()).toBeGreaterThanOrEqual(before);
      expect(point.timestamp.getTime()).toBeLessThanOrEqual(after);
    });

    it('accepts a reading at every size limit', () => {
      const tags = Object.fromEntries(
        Array.from({ length: DATA_POINT_LIMITS.tagCount }, (_, i) => [
          `k${i}`.padEnd(DATA_POINT_LIMITS.tagKeyLength, 'k'),
          'v'.repeat(DATA_POINT_LIMITS.tagValueLength),
        ]),
      );
      const point = new DataPoint({
        sensorId: 's'.repeat(DATA_POINT_LIMITS.sensorIdLength),
        value: -0.5,
        unit: 'u'.repeat(DATA_POINT_LIMITS.unitLength),
        tags,
      });
      expect(Object.keys(point.tags)).toHaveLength(DATA_POINT_LIMITS.tagCount);
    });

    it('rejects NaN with a ValidationError naming the value field', () => {
      const error = refusal({ sensorId: 's', value: Number.NaN });
      expect(error).toBeInstanceOf(ValidationError);
      expect(error.code).toBe('VALIDATION_FAILED');
      expect(error.issues).toEqual([{ field: 'value', message: expect.stringContaining('NaN') }]);
    });

    it('rejects Infinity with a ValidationError naming the value field', () => {
      expect(fieldsOf(refusal({ sensorId: 's', value: Number.POSITIVE_INFINITY }))).toEqual(['value']);
    });

    it('rejects -Infinity with a ValidationError naming the value field', () => {
      expect(fieldsOf(refusal({ sensorId: 's', value: Number.NEGATIVE_INFINITY }))).toEqual(['value']);
    });

    it('rejects a value that is a numeric string', () => {
      expect(fieldsOf(refusal({ sensorId: 's', value: '23.5' }))).toEqual(['value']);
    });

    it('rejects an empty sensorId', () => {
      expect(fieldsOf(refusal({ sensorId: '', value: 1 }))).toEqual(['sensorId']);
    });

    it('rejects a missing sensorId', () => {
      expect(fieldsOf(refusal({ value: 1 }))).toEqual(['sensorId']);
    });

    it('rejects a sensorId that is not a string', () => {
      const error = refusal({ sensorId: 42, value: 1 });
      expect(error.issues).toEqual([{ field: 'sensorId', message: expect.stringContaining('got 42') }]);
    });

    it('rejects a sensorId longer than 256 characters', () => {
      expect(fieldsOf(refusal({ sensorId: 's'.repeat(DATA_POINT_LIMITS.sensorIdLength + 1), value: 1 }))).toEqual([
        'sensorId',
      ]);
    });

    it('rejects a unit longer than 64 characters', () => {
      expect(
        fieldsOf(refusal({ sensorId: 's', value: 1, unit: 'u'.repeat(DATA_POINT_LIMITS.unitLength + 1) })),
      ).toEqual(['unit']);
    });

    it('rejects a timestamp string that is not a date', () => {
      const error = refusal({ sensorId: 's', value: 1, timestamp: 'yesterday' });
      expect(error.issues).toEqual([{ field: 'timestamp', message: expect.stringContaining('"yesterday"') }]);
    });

    it('rejects an ISO-8601 string naming a day that does not exist', () => {
      expect(fieldsOf(refusal({ sensorId: 's', value: 1, timestamp: '2024-13-45T00:00:00Z' }))).toEqual(['timestamp']);
    });

    it('rejects an invalid Date', () => {
      expect(fieldsOf(refusal({ sensorId: 's', value: 1, timestamp: new Date('nope') }))).toEqual(['timestamp']);
    });

    it('rejects a timestamp before 1970', () => {
      expect(fieldsOf(refusal({ sensorId: 's', value: 1, timestamp: -1 }))).toEqual(['timestamp']);
    });

    it('rejects a tag whose value is a nested object', () => {
      const error = refusal({ sensorId: 's', value: 1, tags: { site: { building: 'B' } } });
      expect(fieldsOf(error)).toEqual(['tags.site']);
    });

    it('rejects a tag whose value is a number', () => {
      const error = refusal({ sensorId: 's', value: 1, tags: { floor: 3 } });
      expect(error.issues).toEqual([{ field: 'tags.floor', message: expect.stringContaining('got 3') }]);
    });

    it('rejects tags given as an array', () => {
      expect(fieldsOf(refusal({ sensorId: 's', value: 1, tags: ['warehouse-A'] }))).toEqual(['tags']);
    });

    it('rejects tags given as a string', () => {
      expect(fieldsOf(refusal({ sensorId: 's', value: 1, tags: 'location=warehouse-A' }))).toEqual(['tags']);
    });

    it('rejects more than 32 tags', () => {
      const tags = Object.fromEntries(Array.from({ length: DATA_POINT_LIMITS.tagCount + 1 }, (_, i) => [`k${i}`, 'v']));
      const error = refusal({ sensorId: 's', value: 1, tags });
      expect(error.issues).toEqual([{ field: 'tags', message: expect.stringContaining('33') }]);
    });

    it('rejects a tag value longer than 256 characters', () => {
      const tags = { note: 'v'.repeat(DATA_POINT_LIMITS.tagValueLength + 1) };
      expect(fieldsOf(refusal({ sensorId: 's', value: 1, tags }))).toEqual(['tags.note']);
    });

    it('rejects a tag key longer than 64 characters', () => {
      const tags = { ['k'.repeat(DATA_POINT_LIMITS.tagKeyLength + 1)]: 'v' };
      expect(fieldsOf(refusal({ sensorId: 's', value: 1, tags }))).toEqual(['tags']);
    });

    it('rejects an input that is not an object', () => {
      expect(fieldsOf(refusal(23.5))).toEqual(['(reading)']);
    });

    it('lists every problem of one input, one issue each', () => {
      const error = refusal({ sensorId: '', value: Number.NaN, timestamp: 'not a date' });
      expect(error.issues).toHaveLength(3);
      expect(fieldsOf(error).sort()).toEqual(['sensorId', 'timestamp', 'value']);
      for (const field of ['sensorId', 'value', 'timestamp']) expect(error.message).toContain(`${field}:`);
    });
  });

  describe('.toJSON()', () => {
    it('gives the plain form with an ISO-8601 timestamp', () => {
      const point = new DataPoint({ sensorId: 's', value: 2, unit: 'bar', tags: { a: 'b' }, timestamp: 0 });
      expect(JSON.parse(JSON.stringify(point))).toEqual({
        sensorId: 's',
        value: 2,
        unit: 'bar',
        tags: { a: 'b' },
        timestamp: '1970-01-01T00:00:00.000Z',
      });
    });
  });
});

describe('DataPoint and Unicode', () => {
  it('refuses lone surrogates in sensorId, unit and tags, which UTF-8 cannot carry unaltered', () => {
    const error = refusal({ sensorId: 'a\uD800b', value: 1, unit: '\uDC00', tags: { k: 'x\uD83D' } });
    expect(error.issues.map((i) => i.field)).toEqual(['sensorId', 'unit', 'tags.k']);
    expect(new DataPoint({ sensorId: 'température 🌡', value: 1, tags: { lieu: 'entrepôt' } }).sensorId).toBe(
      'température 🌡',
    );
  });
});
