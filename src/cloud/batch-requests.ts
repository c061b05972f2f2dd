import { inflateRawSync } from 'node:zlib';
import * as z from 'zod';
import { COMPACT_MAX_ROWS, CompactCodecError, decodeCompactRaw } from '../model/compact-codec.js';
import { batchEnvelopeSchema } from '../model/wire.js';
import { HttpError } from './http-error.js';
import { jsonTextTooDeep } from './json-depth.js';

/**
 * Reading the body of `POST /telemetry/batches`, in either format. Each function throws only {@link HttpError}
 * (400, or 413 for a compact body that inflates past its bound): the body is refused whole. The points are
 * returned unchecked, to be checked one by one so that a bad one can be named.
 */

/** A batch body read far enough to route it: its envelope, and its points still unchecked. */
export interface DecodedBatch {
  deviceId: string;
  replicaId: string;
  batchNo: number;
  points: unknown[];
}

/** The envelope fields a compact body carries, under the same bounds as a JSON envelope's. */
const compactHeaderSchema = z.object({
  deviceId: batchEnvelopeSchema.shape.deviceId,
  replicaId: batchEnvelopeSchema.shape.replicaId,
  batchNo: batchEnvelopeSchema.shape.batchNo,
});

/** Parses JSON text after checking its nesting, so that no later step can overflow the stack on it. */
export function parseJsonBody(body: Buffer, maxDepth: number): unknown {
  if (jsonTextTooDeep(body, maxDepth)) {
    throw new HttpError(400, 'too_deep', `the JSON nests deeper than ${maxDepth} levels`);
  }
  try {
    return JSON.parse(body.toString('utf8'));
  } catch (error) {
    throw new HttpError(400, 'malformed_json', `the body is not JSON: ${(error as Error).message}`);
  }
}

/** A JSON batch (`application/json`): the envelope must follow the protocol. */
export function decodeJsonBatch(body: Buffer, maxDepth: number): DecodedBatch {
  const envelope = batchEnvelopeSchema.safeParse(parseJsonBody(body, maxDepth));
  if (!envelope.success) throw new HttpError(400, 'bad_batch', z.prettifyError(envelope.error));
  return envelope.data;
}

/** A compact batch (raw DEFLATE of the binary layout), inflated to at most `maxInflatedBytes`. */
export function decodeCompactBatch(body: Buffer, maxInflatedBytes: number): DecodedBatch {
  let raw: Buffer;
  try {
    raw = inflateRawSync(body, { maxOutputLength: maxInflatedBytes });
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ERR_BUFFER_TOO_LARGE' || error instanceof RangeError) {
      throw new HttpError(413, 'payload_too_large', `the body inflates past ${maxInflatedBytes} bytes`);
    }
    throw new HttpError(400, 'bad_encoding', `the compact body does not inflate: ${(error as Error).message}`);
  }
  let batch: ReturnType<typeof decodeCompactRaw>;
  try {
    batch = decodeCompactRaw(raw, { maxRows: COMPACT_MAX_ROWS });
  } catch (error) {
    if (error instanceof CompactCodecError) throw new HttpError(400, 'bad_batch', error.message);
    throw error;
  }
  // The JSON envelope's bounds hold here too: a device id of megabytes would be stored with every reading.
  const header = compactHeaderSchema.safeParse(batch);
  if (!header.success) throw new HttpError(400, 'bad_batch', z.prettifyError(header.error));
  return { ...header.data, points: batch.points };
}
