import { request as httpRequest } from 'node:http';
import { join } from 'node:path';
import { deflateRawSync, gzipSync } from 'node:zlib';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { decodeCompactBatch, decodeJsonBatch } from '../../src/cloud/batch-requests.js';
import { HttpError } from '../../src/cloud/http-error.js';
import type { CloudServer } from '../../src/cloud/index.js';
import { parseEdit, parsePush } from '../../src/cloud/records-requests.js';
import type { Logger } from '../../src/logger.js';
import {
  COMPACT_BATCH_CONTENT_TYPE,
  type CodecRow,
  CompactCodecError,
  decodeCompactRaw,
  encodeCompactRaw,
} from '../../src/model/compact-codec.js';
import { tempDir } from '../helpers/temp-dir.js';
import { jsonBatch, listenCloud, pushBody, T0, tableCounts } from '../security/lib/cloud-client.js';

/**
 * Fuzzing of what reads untrusted bytes: the compact decoder, the JSON batch and records parsers, and the whole
 * server. Run counts are bounded so that the file stays within seconds; set FUZZ_RUNS to go further, and replay a
 * failure with the seed fast-check prints.
 */
const RUNS = Number(process.env.FUZZ_RUNS ?? 300);

/** A change to a byte string: what a bit flip, a cut connection or a careless proxy does. */
type Mutation =
  | { kind: 'flip'; at: number; bit: number }
  | { kind: 'set'; at: number; byte: number }
  | { kind: 'truncate'; at: number }
  | { kind: 'insert'; at: number; bytes: Uint8Array }
  | { kind: 'delete'; at: number; count: number };

const mutation: fc.Arbitrary<Mutation> = fc.oneof(
  fc.record({ kind: fc.constant('flip' as const), at: fc.nat(), bit: fc.integer({ min: 0, max: 7 }) }),
  fc.record({ kind: fc.constant('set' as const), at: fc.nat(), byte: fc.integer({ min: 0, max: 255 }) }),
  fc.record({ kind: fc.constant('truncate' as const), at: fc.nat() }),
  fc.record({ kind: fc.constant('insert' as const), at: fc.nat(), bytes: fc.uint8Array({ maxLength: 16 }) }),
  fc.record({ kind: fc.constant('delete' as const), at: fc.nat(), count: fc.integer({ min: 1, max: 16 }) }),
);

function mutate(input: Uint8Array, mutations: readonly Mutation[]): Uint8Array {
  let bytes = Uint8Array.from(input);
  for (const m of mutations) {
    const at = bytes.length === 0 ? 0 : m.at % (bytes.length + 1);
    if (m.kind === 'flip' && at < bytes.length) bytes[at] = (bytes[at] as number) ^ (1 << m.bit);
    else if (m.kind === 'set' && at < bytes.length) bytes[at] = m.byte;
    else if (m.kind === 'truncate') bytes = bytes.subarray(0, at);
    else if (m.kind === 'insert')
      bytes = Uint8Array.from([...bytes.subarray(0, at), ...m.bytes, ...bytes.subarray(at)]);
    else if (m.kind === 'delete') bytes = Uint8Array.from([...bytes.subarray(0, at), ...bytes.subarray(at + m.count)]);
  }
  return bytes;
}

const text = (bytes: Uint8Array) => Buffer.from(bytes).toString('utf8');

/** Rows as the outbox holds them: any doubles, a few series, readings and processed data mixed. */
const codecRows: fc.Arbitrary<CodecRow[]> = fc
  .array(
    fc.record({
      gap: fc.integer({ min: 1, max: 1000 }),
      sensorId: fc.constantFrom('t', 'p', 'h\u00e9'),
      dt: fc.integer({ min: -5000, max: 5000 }),
      value: fc.oneof(
        fc.double(),
        fc.integer({ min: -1e6, max: 1e6 }).map((n) => n / 100),
      ),
      unit: fc.constantFrom(null, 'bar'),
      tags: fc.constantFrom(null, '{"room":"a"}'),
      payload: fc.option(
        fc.jsonValue({ maxDepth: 3 }).map((v) => JSON.stringify(v) ?? 'null'),
        { freq: 5 },
      ),
    }),
    { minLength: 1, maxLength: 40 },
  )
  .map((rows) => {
    let seq = 0;
    let ts = T0;
    return rows.map((r) => {
      seq += r.gap;
      ts = Math.max(0, ts + r.dt);
      return {
        seq,
        sensorId: r.sensorId,
        ts,
        value: r.payload === null ? r.value : null,
        unit: r.unit,
        tags: r.tags,
        payload: r.payload,
      };
    });
  });

const header = { deviceId: 'dev-a', replicaId: 'replica-dev-a', batchNo: 1 };

/** Runs `decode` and returns what it threw, if anything. */
function thrown(decode: () => unknown): unknown {
  try {
    decode();
    return undefined;
  } catch (error) {
    return error;
  }
}

/** Passes when `error` is nothing or a 4xx {@link HttpError}. */
function expectClientError(error: unknown): void {
  if (error === undefined) return;
  expect(error).toBeInstanceOf(HttpError);
  expect((error as HttpError).status).toBeGreaterThanOrEqual(400);
  expect((error as HttpError).status).toBeLessThan(500);
}

describe('fuzz', () => {
  describe('decodeCompactRaw()', () => {
    it('decodes what the encoder made, every double bit for bit', () => {
      fc.assert(
        fc.property(codecRows, (rows) => {
          const batch = decodeCompactRaw(encodeCompactRaw(header, rows));
          expect(batch.points.map((p) => p.seq)).toEqual(rows.map((r) => r.seq));
          expect(batch.points.map((p) => p.ts)).toEqual(rows.map((r) => r.ts));
          for (const [i, row] of rows.entries()) {
            if (row.payload === null) expect(Object.is(batch.points[i]?.value, row.value)).toBe(true);
            else expect(batch.points[i]?.data).toEqual(JSON.parse(row.payload));
          }
        }),
        { numRuns: RUNS },
      );
    });

    it('throws only CompactCodecError on mutated bodies', () => {
      fc.assert(
        fc.property(codecRows, fc.array(mutation, { minLength: 1, maxLength: 4 }), (rows, mutations) => {
          const error = thrown(() => decodeCompactRaw(mutate(encodeCompactRaw(header, rows), mutations)));
          if (error !== undefined) expect(error).toBeInstanceOf(CompactCodecError);
        }),
        { numRuns: RUNS * 3 },
      );
    });

    it('throws only CompactCodecError on random bytes, with or without the magic', () => {
      fc.assert(
        fc.property(fc.boolean(), fc.uint8Array({ maxLength: 300 }), (magic, tail) => {
          const bytes = magic ? Uint8Array.from([0x45, 0x47, 0x42, 0x02, ...tail]) : tail;
          const error = thrown(() => decodeCompactRaw(bytes));
          if (error !== undefined) expect(error).toBeInstanceOf(CompactCodecError);
        }),
        { numRuns: RUNS * 3 },
      );
    });

    it('throws only 4xx HttpError from the server-side compact reader, deflated or not', () => {
      fc.assert(
        fc.property(codecRows, fc.array(mutation, { maxLength: 3 }), fc.boolean(), (rows, mutations, before) => {
          const raw = encodeCompactRaw(header, rows);
          const body = before ? deflateRawSync(mutate(raw, mutations)) : mutate(deflateRawSync(raw), mutations);
          expectClientError(thrown(() => decodeCompactBatch(Buffer.from(body), 1024 * 1024)));
        }),
        { numRuns: RUNS },
      );
    });
  });

  describe('the JSON readers', () => {
    const validBatch = fc
      .array(
        fc.record({
          sensorId: fc.string({ minLength: 1, maxLength: 8 }),
          value: fc.double({ noNaN: true, noDefaultInfinity: true }),
        }),
        { maxLength: 8 },
      )
      .map((points) => jsonBatch(points.map((p, i) => ({ seq: i + 1, ts: T0 + i, ...p }))).body);
    const validPush = fc
      .tuple(fc.string({ maxLength: 8 }), fc.jsonValue({ maxDepth: 4 }))
      .map(([key, value]) => pushBody('dev-a', 'm:1', key || 'k', value));
    const bodies = fc.oneof(
      fc.string({ unit: 'binary', maxLength: 200 }),
      fc.jsonValue({ maxDepth: 6 }).map((v) => JSON.stringify(v) ?? ''),
      fc
        .tuple(validBatch, fc.array(mutation, { minLength: 1, maxLength: 4 }))
        .map(([body, m]) => text(mutate(Buffer.from(body), m))),
      fc
        .tuple(validPush, fc.array(mutation, { minLength: 1, maxLength: 4 }))
        .map(([body, m]) => text(mutate(Buffer.from(body), m))),
      validBatch,
      validPush,
      fc.integer({ min: 0, max: 300 }).map((depth) => `${'['.repeat(depth)}${']'.repeat(depth)}`),
      // Valid envelopes around values nested past what JSON.stringify survives.
      fc.tuple(fc.constantFrom(10, 63, 65, 20_000), fc.constantFrom('push', 'edit', 'batch')).map(([depth, kind]) => {
        const deep = `${'['.repeat(depth)}${']'.repeat(depth)}`;
        if (kind === 'push') return pushBody('dev-a', 'm:1', 'k', 'X').replace('"X"', deep);
        if (kind === 'edit') return `{"value":${deep}}`;
        return jsonBatch([{ seq: 1, sensorId: 's', ts: T0, data: 'X' }]).body.replace('"X"', deep);
      }),
    );

    for (const [name, read] of [
      ['decodeJsonBatch()', (body: Buffer) => decodeJsonBatch(body, 64)],
      ['parsePush()', (body: Buffer) => parsePush(body, 64)],
      ['parseEdit()', (body: Buffer) => parseEdit(body, 64)],
    ] as const) {
      it(`${name} throws only a 4xx HttpError, whatever the body`, () => {
        fc.assert(
          fc.property(bodies, (body) => {
            expectClientError(thrown(() => read(Buffer.from(body, 'utf8'))));
          }),
          { numRuns: RUNS * 2 },
        );
      });
    }
  });

  describe('the server, end to end', () => {
    const FLEET = 'fuzz-fleet-key-0123456789';
    const BOUND = 'fuzz-bound-key-0123456789';

    interface FuzzRequest {
      method: string;
      path: string;
      authorization: string | undefined;
      contentType: string | undefined;
      encoding: 'none' | 'gzip' | 'gzip-header-only' | 'br';
      idempotencyKey: string | undefined;
      body: Uint8Array;
    }

    const device = fc.constantFrom('dev-a', 'dev-b');
    const authorization = fc.oneof(
      { weight: 4, arbitrary: fc.constant(`Bearer ${FLEET}`) },
      { weight: 4, arbitrary: fc.constant(`Bearer ${BOUND}`) },
      { weight: 1, arbitrary: fc.constantFrom('Bearer wrong', 'Basic x', `Bearer ${FLEET} extra`, undefined) },
    );
    /** Mostly the body as made, sometimes damaged. */
    const damaged = (body: fc.Arbitrary<Uint8Array>) =>
      fc.oneof(
        { weight: 3, arbitrary: body },
        {
          weight: 2,
          arbitrary: fc.tuple(body, fc.array(mutation, { minLength: 1, maxLength: 3 })).map(([b, m]) => mutate(b, m)),
        },
        { weight: 1, arbitrary: fc.uint8Array({ maxLength: 300 }) },
      );
    const encoding = fc.constantFrom('none', 'none', 'gzip', 'gzip-header-only', 'br') as fc.Arbitrary<
      FuzzRequest['encoding']
    >;
    /** Readings, some of them invalid (a negative seq, an empty sensor id, a timestamp no Date can hold). */
    const points = fc.array(
      fc.record({
        seq: fc.oneof({ weight: 19, arbitrary: fc.integer({ min: 1, max: 50 }) }, fc.constantFrom(-1, 0, 1.5)),
        sensorId: fc.oneof({ weight: 19, arbitrary: fc.constantFrom('t', 'p') }, fc.string({ maxLength: 4 })),
        ts: fc.oneof({ weight: 19, arbitrary: fc.constant(T0) }, fc.constantFrom(-1, 9e15, 2 ** 53)),
        value: fc.double({ noNaN: true, noDefaultInfinity: true }),
      }),
      { minLength: 1, maxLength: 6 },
    );

    const batchRequest: fc.Arbitrary<FuzzRequest> = fc
      .record({
        deviceId: device,
        batchNo: fc.integer({ min: 1, max: 6 }),
        compact: fc.boolean(),
        points,
        keyRight: fc.oneof({ weight: 9, arbitrary: fc.constant(true) }, { weight: 1, arbitrary: fc.constant(false) }),
        otherKey: fc.string({ maxLength: 20 }),
        typeRight: fc.oneof({ weight: 9, arbitrary: fc.constant(true) }, { weight: 1, arbitrary: fc.constant(false) }),
        authorization,
        encoding,
        mutations: fc.oneof(
          { weight: 3, arbitrary: fc.constant([] as Mutation[]) },
          { weight: 1, arbitrary: fc.array(mutation, { minLength: 1, maxLength: 3 }) },
        ),
      })
      .map((b) => {
        const replicaId = `replica-${b.deviceId}`;
        const body = b.compact
          ? deflateRawSync(
              encodeCompactRaw(
                { deviceId: b.deviceId, replicaId, batchNo: b.batchNo },
                b.points.map((p) => ({ ...p, unit: null, tags: null, payload: null })),
              ),
            )
          : Buffer.from(jsonBatch(b.points, { deviceId: b.deviceId, replicaId, batchNo: b.batchNo }).body);
        const rightType = b.compact ? COMPACT_BATCH_CONTENT_TYPE : 'application/json';
        return {
          method: 'POST',
          path: '/telemetry/batches',
          authorization: b.authorization,
          contentType: b.typeRight ? rightType : 'text/plain',
          encoding: b.encoding,
          idempotencyKey: b.keyRight ? `${replicaId}:${b.batchNo}` : b.otherKey,
          body: mutate(body, b.mutations),
        };
      });

    const pushRequest: fc.Arbitrary<FuzzRequest> = fc.record({
      method: fc.constant('POST'),
      path: fc.constant('/records/push'),
      authorization,
      contentType: fc.constantFrom('application/json', 'application/json', undefined, 'text/plain'),
      encoding,
      idempotencyKey: fc.constant(undefined),
      body: damaged(
        fc
          .tuple(device, fc.nat(20), fc.constantFrom('k0', 'k1', 'k2'), fc.jsonValue({ maxDepth: 3 }))
          .map(([deviceId, n, key, value]) => Buffer.from(pushBody(deviceId, `m:${n}`, key, value))),
      ),
    });

    const editRequest: fc.Arbitrary<FuzzRequest> = fc.record({
      method: fc.constantFrom('PUT', 'GET'),
      path: fc.constantFrom('/records/config/k0', '/records/config/k1', '/records/bad%ZZ/k', '/records/c/'),
      authorization,
      contentType: fc.constantFrom('application/json', undefined),
      encoding: fc.constant('none' as const),
      idempotencyKey: fc.constant(undefined),
      body: damaged(
        fc
          .oneof(
            fc.jsonValue({ maxDepth: 3 }).map((value) => ({ value })),
            fc.constant({ deleted: true }),
          )
          .map((edit) => Buffer.from(JSON.stringify(edit))),
      ),
    });

    const readRequest: fc.Arbitrary<FuzzRequest> = fc.record({
      method: fc.constant('GET'),
      path: fc
        .constantFrom('/telemetry?', '/records/pull?', '/telemetry/stats?', '/records/stats?')
        .chain((p) =>
          fc
            .dictionary(
              fc.constantFrom('deviceId', 'sensorId', 'from', 'to', 'limit', 'cursor', 'x'),
              fc.oneof(
                fc.constantFrom('dev-a', 'dev-b', '0', '10', 'm0.', 'm1.3', '2024-01-01'),
                fc.string({ maxLength: 12 }),
              ),
            )
            .map((q) => `${p}${new URLSearchParams(q)}`),
        ),
      authorization,
      contentType: fc.constant(undefined),
      encoding: fc.constant('none' as const),
      idempotencyKey: fc.constant(undefined),
      body: fc.constant(new Uint8Array()),
    });

    const strayRequest: fc.Arbitrary<FuzzRequest> = fc.record({
      method: fc.constantFrom('GET', 'POST', 'PUT', 'DELETE', 'PATCH', 'OPTIONS'),
      path: fc.oneof(
        fc.webPath().map((p) => p || '/'),
        fc.constantFrom('/health', '/records/push', '/telemetry'),
      ),
      authorization,
      contentType: fc.constantFrom('application/json', COMPACT_BATCH_CONTENT_TYPE, 'text/plain', undefined, 'a/b; x=1'),
      encoding,
      idempotencyKey: fc.option(fc.string({ maxLength: 30 })).map((k) => k ?? undefined),
      body: fc.uint8Array({ maxLength: 300 }),
    });

    const fuzzRequest = fc.oneof(
      { weight: 4, arbitrary: batchRequest },
      { weight: 2, arbitrary: pushRequest },
      { weight: 1, arbitrary: editRequest },
      { weight: 2, arbitrary: readRequest },
      { weight: 1, arbitrary: strayRequest },
    );

    /** Sends one request with node:http (any header, any method) and returns the status and body. */
    function sendRaw(server: CloudServer, r: FuzzRequest): Promise<{ status: number; text: string }> {
      const body = r.encoding === 'gzip' ? gzipSync(r.body) : Buffer.from(r.body);
      const headers: Record<string, string> = {};
      if (r.authorization) headers.authorization = r.authorization;
      if (r.contentType !== undefined) headers['content-type'] = r.contentType;
      if (r.encoding !== 'none') headers['content-encoding'] = r.encoding === 'br' ? 'br' : 'gzip';
      if (r.idempotencyKey !== undefined) headers['idempotency-key'] = r.idempotencyKey;
      // Framed by its length whatever the method: node:http sends a DELETE's body unframed otherwise.
      headers['content-length'] = String(body.length);
      return new Promise((resolve, reject) => {
        const request = httpRequest(
          { host: '127.0.0.1', port: server.port, method: r.method, path: `/api/v1${r.path}`, headers },
          (response) => {
            const chunks: Buffer[] = [];
            response.on('data', (c: Buffer) => chunks.push(c));
            response.on('end', () =>
              resolve({ status: response.statusCode ?? 0, text: Buffer.concat(chunks).toString('utf8') }),
            );
          },
        );
        request.on('error', reject);
        request.end(body);
      });
    }

    it('answers every generated request below 500, and stores nothing of a refused one', async () => {
      const dbPath = join(tempDir('edge-gateway-fuzz-'), 'cloud.db');
      const failures: unknown[] = [];
      const logger: Logger = {
        debug: () => undefined,
        info: () => undefined,
        warn: () => undefined,
        error: (object) => failures.push(object),
      };
      const server = await listenCloud({
        apiKeys: [FLEET, { key: BOUND, devices: ['dev-a'] }],
        dbPath,
        logger,
        maxBodyBytes: 64 * 1024,
        maxInflatedBytes: 256 * 1024,
      });

      await fc.assert(
        fc.asyncProperty(fuzzRequest, async (r) => {
          const before = tableCounts(dbPath);
          const { status, text: answer } = await sendRaw(server, r);
          expect(status, answer).toBeLessThan(500);
          expect(status, answer).toBeGreaterThanOrEqual(200);
          // A read never writes; a refusal never writes. (A 200 to a write may.)
          if (status !== 200 || r.method === 'GET') expect(tableCounts(dbPath)).toEqual(before);
          if (status === 200 && r.path === '/telemetry/batches') {
            const ack = JSON.parse(answer) as { accepted: number };
            const after = tableCounts(dbPath);
            const stored = (after.points ?? 0) - (before.points ?? 0);
            expect(stored === 0 || stored === ack.accepted).toBe(true);
          }
        }),
        { numRuns: RUNS },
      );

      expect(failures).toEqual([]);
      const health = await fetch(`${server.url}/health`);
      expect(health.status).toBe(200);
    });
  });
});
