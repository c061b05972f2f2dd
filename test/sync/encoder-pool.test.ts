import { Worker } from 'node:worker_threads';
import { describe, expect, it } from 'vitest';
import type { Logger } from '../../src/logger.js';
import type { OutboxRow } from '../../src/storage/storage.js';
import { type CompressionSetting, encodeBatch, type WireFormat } from '../../src/sync/batch-codec.js';
import { type EncodeJob, EncoderPool, MIN_OFFLOADED_ROWS } from '../../src/sync/encoder-pool.js';
import { defer } from '../helpers/cleanup.js';

const HEADER = { deviceId: 'device-001', replicaId: '6f1c0a52-8a7e-4c4e-9a54-2b1f0f7d1c33' };

/** Rows of ten sensors, with units, tags, a processed payload now and then, and noisy and round values. */
const rows = (n: number, from = 1): OutboxRow[] =>
  Array.from({ length: n }, (_, i) => ({
    seq: from + i,
    kind: i % 17 === 0 ? 'processed' : 'reading',
    sensorId: `sensor-${i % 10}`,
    ts: 1_795_000_000_000 + i * 250,
    value: i % 17 === 0 ? null : i % 2 === 0 ? Math.sin(i) * 1000 : 20 + (i % 100) / 100,
    unit: i % 3 === 0 ? null : 'celsius',
    tags: i % 5 === 0 ? null : '{"location":"warehouse-A","line":"é ☃"}',
    payload: i % 17 === 0 ? `{"mean":${i / 7}}` : null,
  }));

const job = (format: WireFormat, compression: CompressionSetting, n = 1200, batchNo = 7): EncodeJob => ({
  header: HEADER,
  batchNo,
  rows: rows(n),
  compression,
  format,
});

/** A logger that keeps its warnings. */
function recordingLogger(): Logger & { warnings: string[] } {
  const warnings: string[] = [];
  const noop = () => undefined;
  return { debug: noop, info: noop, error: noop, warn: (_object, message) => warnings.push(message ?? ''), warnings };
}

function pool(size = 1, start?: () => Worker, logger: Logger = recordingLogger()): EncoderPool {
  const created = new EncoderPool(size, logger, start);
  defer(() => created.close());
  return created;
}

const never = () => new AbortController().signal;

describe('EncoderPool', () => {
  describe('.encode()', () => {
    it('encodes in a thread, byte for byte what encodeBatch() makes inline, for every format and compression', async () => {
      const encoder = pool();
      const cases: [WireFormat, CompressionSetting][] = [
        ['json', { level: 6 }],
        ['json', false],
        ['json', { level: 1 }],
        ['compact', { level: 6 }],
        ['compact', false],
      ];
      for (const [format, compression] of cases) {
        const input = job(format, compression);
        const inThread = await encoder.encode(input, never());
        const inline = encodeBatch(input.header, input.batchNo, input.rows, compression, format);
        expect(Buffer.from(inThread.body).equals(Buffer.from(inline.body))).toBe(true);
        expect({ ...inThread, body: undefined }).toEqual({ ...inline, body: undefined });
      }
      expect(encoder.running).toBe(1);
      expect(encoder.unavailable).toBeUndefined();
    });

    it('runs jobs given together on up to size threads, each answered with its own encoding', async () => {
      const encoder = pool(2);
      const jobs = [1, 2, 3, 4].map((batchNo) => ({
        ...job('json', { level: 6 }, 1000, batchNo),
        rows: rows(1000, batchNo * 1000),
      }));
      const results = await Promise.all(jobs.map((j) => encoder.encode(j, never())));
      for (const [i, result] of results.entries()) {
        const j = jobs[i] as EncodeJob;
        expect(result.firstSeq).toBe(j.batchNo * 1000);
        expect(result.hash).toBe(encodeBatch(HEADER, j.batchNo, j.rows, { level: 6 }, 'json').hash);
      }
      expect(encoder.running).toBe(2);
    });

    it('rejects with the reason of a signal aborted while the thread works, and still answers the next job', async () => {
      const encoder = pool();
      const controller = new AbortController();
      const pending = encoder.encode(job('json', { level: 9 }, 5000), controller.signal);
      controller.abort(new Error('stopping'));
      await expect(pending).rejects.toThrow('stopping');
      const next = await encoder.encode(job('json', { level: 6 }), never());
      expect(next.count).toBe(1200);
    });

    it('rejects at once, starting no thread, when the signal is already aborted', async () => {
      const encoder = pool();
      await expect(encoder.encode(job('json', { level: 6 }), AbortSignal.abort(new Error('gone')))).rejects.toThrow(
        'gone',
      );
      expect(encoder.running).toBe(0);
    });

    it('rejects with what the codec throws, as it would inline', async () => {
      const encoder = pool();
      await expect(encoder.encode({ ...job('json', false), rows: [] }, never())).rejects.toThrow(
        'encodeBatch needs at least one row',
      );
    });
  });

  describe('when threads fail', () => {
    it('encodes inline, with one warning, when a thread cannot start', async () => {
      const logger = recordingLogger();
      const encoder = pool(
        1,
        () => {
          throw new Error('no such file: encode-worker.js');
        },
        logger,
      );
      const input = job('json', { level: 6 });
      const first = await encoder.encode(input, never());
      const second = await encoder.encode(input, never());
      expect(first.hash).toBe(encodeBatch(HEADER, 7, input.rows, { level: 6 }, 'json').hash);
      expect(second.hash).toBe(first.hash);
      expect(encoder.unavailable).toContain('no such file');
      expect(logger.warnings).toHaveLength(1);
    });

    it('encodes inline when a thread dies while loading, and starts no other', async () => {
      let started = 0;
      const encoder = pool(1, () => {
        started++;
        return new Worker('throw new Error("broken build")', { eval: true });
      });
      const input = job('json', { level: 6 });
      expect((await encoder.encode(input, never())).count).toBe(1200);
      expect((await encoder.encode(input, never())).count).toBe(1200);
      expect(started).toBe(1);
      expect(encoder.unavailable).toContain('broken build');
    });

    it('finishes the job of a thread that exits mid-job inline, and stops starting threads after three such exits', async () => {
      let started = 0;
      // Answers its first job like the real entry, then dies on the next one.
      const flaky = () => {
        started++;
        return new Worker(
          `const { parentPort } = require('node:worker_threads');
           let jobs = 0;
           parentPort.on('message', (request) => {
             if (jobs++ > 0) process.exit(3);
             parentPort.postMessage({ id: request.id, error: { name: 'Error', message: 'first job' } });
           });`,
          { eval: true },
        );
      };
      const logger = recordingLogger();
      const encoder = pool(1, flaky, logger);
      const input = job('compact', { level: 6 });
      const expected = encodeBatch(HEADER, 7, input.rows, { level: 6 }, 'compact').hash;
      for (let round = 0; round < 3; round++) {
        await expect(encoder.encode(input, never())).rejects.toThrow('first job');
        expect((await encoder.encode(input, never())).hash).toBe(expected); // the thread died: inline
      }
      expect(started).toBe(3);
      expect(encoder.unavailable).toContain('exited with code 3');
      expect((await encoder.encode(input, never())).hash).toBe(expected);
      expect(started).toBe(3);
    });
  });

  describe('.resize() / .close()', () => {
    it('close() ends the threads and finishes a job in flight inline', async () => {
      const encoder = new EncoderPool(1, recordingLogger());
      const input = job('json', { level: 9 }, 5000);
      const pending = encoder.encode(input, never());
      await encoder.close();
      expect((await pending).hash).toBe(encodeBatch(HEADER, 7, input.rows, { level: 9 }, 'json').hash);
      expect(encoder.running).toBe(0);
      await encoder.close();
    });

    it('resize(0) makes later jobs inline; resize(1) brings a thread back', async () => {
      const encoder = pool(1);
      await encoder.encode(job('json', false), never());
      expect(encoder.running).toBe(1);
      encoder.resize(0);
      expect(encoder.running).toBe(0);
      expect((await encoder.encode(job('json', false), never())).count).toBe(1200);
      expect(encoder.running).toBe(0);
      encoder.resize(1);
      await encoder.encode(job('json', false), never());
      expect(encoder.running).toBe(1);
    });
  });

  describe('.offloads()', () => {
    it(`takes gzip'd JSON batches of ${MIN_OFFLOADED_ROWS} rows or more, and neither compact nor plain JSON`, () => {
      const encoder = pool();
      expect(encoder.offloads('json', { level: 6 }, MIN_OFFLOADED_ROWS)).toBe(true);
      expect(encoder.offloads('json', { level: 1 }, 10_000)).toBe(true);
      expect(encoder.offloads('json', { level: 6 }, MIN_OFFLOADED_ROWS - 1)).toBe(false);
      expect(encoder.offloads('json', false, 10_000)).toBe(false);
      expect(encoder.offloads('compact', { level: 6 }, 10_000)).toBe(false);
    });
  });
});
