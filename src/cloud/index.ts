/**
 * The reference cloud sync server: `import { CloudServer } from 'edge-gateway/cloud'`.
 *
 * @packageDocumentation
 */

export type { BatchAck, BatchEnvelope, ErrorBody, RejectedPoint, WirePoint } from '../model/wire.js';
export { batchEnvelopeSchema, wirePointSchema } from '../model/wire.js';
export type { CloudServerOptions } from './cloud-server.js';
export { CloudServer } from './cloud-server.js';
export type {
  CloudStore,
  IncomingBatch,
  IngestOutcome,
  StoredPoint,
  TelemetryQuery,
  TelemetryStats,
} from './cloud-store.js';
export { SqliteCloudStore } from './sqlite-cloud-store.js';
