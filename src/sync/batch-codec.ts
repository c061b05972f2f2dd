import { createHash } from 'node:crypto';
import { gzipSync } from 'fflate';
import { BATCH_VERSION, JSON_BATCH_CONTENT_TYPE } from '../model/wire.js';
import type { OutboxRow, SealInput } from '../storage/storage.js';

/** Compression of batch bodies: off, or gzip at a level from 1 (fastest) to 9 (smallest). */
export type CompressionSetting = false | { level: 1 | 2 | 3 | 4 | 5 | 6 | 7 | 8 | 9 };

/** What identifies a batch besides its rows. */
export interface BatchHeader {
  deviceId: string;
  replicaId: string;
}

const encoder = new TextEncoder();

// Rows keep their tags and payload as JSON text, so the body is assembled from strings without parsing them.
function pointJson(row: OutboxRow): string {
  let json = `{"seq":${row.seq},"sensorId":${JSON.stringify(row.sensorId)},"ts":${row.ts}`;
  if (row.value !== null) json += `,"value":${row.value}`;
  if (row.unit !== null) json += `,"unit":${JSON.stringify(row.unit)}`;
  if (row.tags !== null) json += `,"tags":${row.tags}`;
  if (row.payload !== null) json += `,"data":${row.payload}`;
  return `${json}}`;
}

/** Encodes rows as a JSON batch body (protocol v1), gzip'd when compression is on. */
export function encodeBatch(
  header: BatchHeader,
  batchNo: number,
  rows: readonly OutboxRow[],
  compression: CompressionSetting,
): SealInput {
  const first = rows[0];
  const last = rows[rows.length - 1];
  if (!first || !last) throw new RangeError('encodeBatch needs at least one row');
  const points = rows.map(pointJson).join(',');
  const json =
    `{"v":${BATCH_VERSION},"deviceId":${JSON.stringify(header.deviceId)},"replicaId":${JSON.stringify(header.replicaId)}` +
    `,"batchNo":${batchNo},"firstSeq":${first.seq},"lastSeq":${last.seq},"points":[${points}]}`;
  const raw = encoder.encode(json);
  const hash = createHash('sha256').update(raw).digest('hex');
  const body = compression === false ? raw : gzipSync(raw, { level: compression.level });
  return {
    firstSeq: first.seq,
    lastSeq: last.seq,
    count: rows.length,
    body,
    contentType: JSON_BATCH_CONTENT_TYPE,
    contentEncoding: compression === false ? null : 'gzip',
    hash,
  };
}
