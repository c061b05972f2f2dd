/**
 * The reference cloud sync server: `import { CloudServer } from 'edge-gateway/cloud'`.
 *
 * @packageDocumentation
 */

export { CloudStoreError, isCloudStoreError } from '../errors.js';
export type {
  CloudRecord,
  MutationResult,
  PullRequester,
  PullResponse,
  PushRequest,
  PushResponse,
  RecordChange,
  RecordMutation,
} from '../model/records-wire.js';
export { RECORD_LIMITS } from '../model/records-wire.js';
export type { BatchAck, BatchEnvelope, ErrorBody, RejectedPoint, WirePoint } from '../model/wire.js';
export { batchEnvelopeSchema, wirePointSchema } from '../model/wire.js';
export type { ApiKey, ApiKeyEntry, RateLimit } from './api-keys.js';
export type { CloudServerOptions, CloudServerTls } from './cloud-server.js';
export { CloudServer } from './cloud-server.js';
export type {
  ChangePage,
  ClockSkewFlag,
  CloudStore,
  IncomingBatch,
  IngestOutcome,
  MutationContext,
  PushDecision,
  RecordEdit,
  RecordStamp,
  RecordStats,
  StoredPoint,
  TelemetryQuery,
  TelemetryStats,
} from './cloud-store.js';
export { neverExistedRecord } from './cloud-store.js';
export type { RedisCloudStoreOptions } from './redis-cloud-store.js';
export { RedisCloudStore } from './redis-cloud-store.js';
export type { SqliteCloudStoreOptions } from './sqlite-cloud-store.js';
export { SqliteCloudStore } from './sqlite-cloud-store.js';
