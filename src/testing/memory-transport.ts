import { gunzipSync, inflateRawSync } from 'node:zlib';
import { COMPACT_BATCH_CONTENT_TYPE, decodeCompactRaw } from '../model/compact-codec.js';
import type { WirePoint } from '../model/wire.js';
import type { OutgoingBatch, PingResult, SendResult, Transport } from '../transport/transport.js';

/** A batch as a {@link MemoryTransport} recorded it, decoded. */
export interface RecordedBatch {
  idempotencyKey: string;
  batchNo: number;
  /** Bytes as sent (compressed when compression is on). */
  wireBytes: number;
  /** The batch decoded, whichever codec carried it. */
  body: {
    deviceId: string;
    replicaId: string;
    batchNo: number;
    firstSeq: number;
    lastSeq: number;
    points: WirePoint[];
  };
}

/** Decides the outcome of a send; the default acknowledges everything. */
export type MemoryTransportResponder = (batch: RecordedBatch) => SendResult | Promise<SendResult>;

/**
 * A {@link Transport} for host applications' own tests: it records every batch it is sent, decoded, and answers
 * as told (acknowledge by default; `goOffline()` makes every send fail as a network error). It deduplicates by
 * idempotency key like the real server, so `points` holds each reading once.
 *
 * @example
 * ```ts
 * const transport = new MemoryTransport();
 * const gateway = new EdgeGateway({ deviceId: 'd', localDb: path, transport });
 * await gateway.start();
 * await gateway.sendData({ sensorId: 't', value: 1 });
 * await gateway.forceSync();
 * expect(transport.points).toHaveLength(1);
 * ```
 */
export class MemoryTransport implements Transport {
  /** Every send attempt, in order, replays included. */
  readonly sent: RecordedBatch[] = [];
  readonly #stored = new Map<string, RecordedBatch>();
  #offline = false;
  #responder: MemoryTransportResponder | undefined;
  #closed = false;

  constructor(responder?: MemoryTransportResponder) {
    this.#responder = responder;
  }

  /** Each reading acknowledged, once, in the order stored. */
  get points(): WirePoint[] {
    return [...this.#stored.values()].flatMap((batch) => batch.body.points);
  }

  /** Batches acknowledged, once each. */
  get batches(): RecordedBatch[] {
    return [...this.#stored.values()];
  }

  get closed(): boolean {
    return this.#closed;
  }

  /** Makes every send and ping fail as if the network were down. */
  goOffline(): void {
    this.#offline = true;
  }

  goOnline(): void {
    this.#offline = false;
  }

  /** Replaces how sends are answered. */
  respondWith(responder: MemoryTransportResponder | undefined): void {
    this.#responder = responder;
  }

  async sendBatch(batch: OutgoingBatch): Promise<SendResult> {
    if (this.#offline) return { status: 'retryable', code: 'network', message: 'MemoryTransport is offline' };
    const recorded: RecordedBatch = {
      idempotencyKey: batch.idempotencyKey,
      batchNo: batch.batchNo,
      wireBytes: batch.body.byteLength,
      body: decode(batch),
    };
    this.sent.push(recorded);
    const outcome = this.#responder
      ? await this.#responder(recorded)
      : ({
          status: 'acknowledged',
          replayed: false,
          ack: {
            ackThroughBatchNo: batch.batchNo,
            accepted: batch.count,
            duplicates: 0,
            serverTime: new Date().toISOString(),
          },
        } as const);
    if (outcome.status === 'acknowledged') {
      const replayed = this.#stored.has(batch.idempotencyKey);
      if (!replayed) this.#stored.set(batch.idempotencyKey, recorded);
      return { ...outcome, replayed: replayed || outcome.replayed };
    }
    return outcome;
  }

  async ping(): Promise<PingResult> {
    return this.#offline ? { reachable: false, message: 'MemoryTransport is offline' } : { reachable: true };
  }

  async close(): Promise<void> {
    this.#closed = true;
  }
}

function decode(batch: OutgoingBatch): RecordedBatch['body'] {
  if (batch.contentType === COMPACT_BATCH_CONTENT_TYPE) return decodeCompactRaw(inflateRawSync(batch.body));
  const raw = batch.contentEncoding === 'gzip' ? gunzipSync(batch.body) : batch.body;
  return JSON.parse(new TextDecoder().decode(raw)) as RecordedBatch['body'];
}
