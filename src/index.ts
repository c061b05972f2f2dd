/**
 * edge-gateway: an offline-first edge gateway for Node.js. Readings are stored durably in SQLite before they are
 * acknowledged, processed at the edge, and forwarded to the cloud in compressed, exactly-once batches.
 *
 * @packageDocumentation
 */

export type { DatabaseHolder, EdgeGatewayErrorCode, ValidationIssue } from './errors.js';
export {
  CertificatePinError,
  ConfigError,
  EdgeGatewayError,
  EncryptionKeyError,
  GatewayStoppedError,
  isCertificatePinError,
  isConfigError,
  isEdgeGatewayError,
  isEncryptionKeyError,
  isGatewayStoppedError,
  isNotStartedError,
  isProcessorError,
  isQueueFullError,
  isStorageError,
  isValidationError,
  NotStartedError,
  ProcessorError,
  QueueFullError,
  StorageError,
  ValidationError,
} from './errors.js';
export type { RetentionView } from './gateway/edge-gateway.js';
export { EdgeGateway } from './gateway/edge-gateway.js';
export type { EncryptionOptions } from './gateway/encryption-options.js';
export type { HistoryQuery, QueryPoint, QueryResult } from './gateway/local-query.js';
export type { EdgeGatewayOptions, ResolvedOptions, ResolvedRetention, RetentionOptions } from './gateway/options.js';
export type { RecordChange, RecordWatcher } from './gateway/records.js';
export { Records } from './gateway/records.js';
export type { CleanupReport } from './gateway/retention-manager.js';
export type {
  DropCounts,
  DroppedEvent,
  GatewayEvents,
  GatewayStatus,
  HealthStatus,
  PrunedEvent,
  RetentionStatus,
} from './gateway/status.js';
export type { Logger } from './logger.js';
export type { DataPointInput, Tags, TimestampInput } from './model/data-point.js';
export { DATA_POINT_LIMITS, DataPoint } from './model/data-point.js';
export type {
  CloudRecord,
  MutationResult,
  PullRequester,
  PullResponse,
  PushRequest,
  PushResponse,
  RecordChange as CloudRecordChange,
  RecordMutation,
} from './model/records-wire.js';
export { RECORD_LIMITS } from './model/records-wire.js';
export type { HealthJson } from './ops/health-json.js';
export { toHealthJson } from './ops/health-json.js';
export type { GatewayHttpServer, HttpServerOptions } from './ops/http-server.js';
export type { Alert, AlertInput, AlertQuery, AlertSeverity } from './processing/alert.js';
export type { DeadbandOptions } from './processing/builtins/deadband.js';
export { Deadband } from './processing/builtins/deadband.js';
export type { RateOfChangeOptions } from './processing/builtins/rate-of-change.js';
export { RateOfChange } from './processing/builtins/rate-of-change.js';
export type { SensorSelector, TagGrouping } from './processing/builtins/series.js';
export type { ThresholdAlertsOptions, ThresholdRule } from './processing/builtins/threshold-alerts.js';
export { ThresholdAlerts } from './processing/builtins/threshold-alerts.js';
export type { AggregatePayload, WindowedAggregationOptions } from './processing/builtins/windowed-aggregation.js';
export { WindowedAggregation } from './processing/builtins/windowed-aggregation.js';
export type { Processor, ProcessResult } from './processing/processor.js';
export { DataProcessor } from './processing/processor.js';
export type { StageStats } from './processing/stage.js';
export type { DownsampledAggregate } from './storage/downsample.js';
export type { EncryptionKey } from './storage/encryption.js';
export type { QuarantineReport } from './storage/quarantine.js';
export type {
  IncomingRecord,
  RecordDeadLetter,
  RecordStorage,
  StoredMutation,
  StoredRecord,
} from './storage/record-storage.js';
export type {
  CleanupStrategy,
  CompactionStep,
  HistoryPruned,
  IntakePolicy,
  OutboxRemoval,
  PruneLimits,
  PruneStep,
  RetentionBudget,
  RetentionListener,
  RetentionStorage,
  SpaceUse,
} from './storage/retention.js';
export { tablePruneStep } from './storage/retention.js';
export type { Reencryption, SqliteStorageOptions } from './storage/sqlite-storage.js';
export { SqliteStorage } from './storage/sqlite-storage.js';
export type {
  AggregateInsert,
  AlertInsert,
  DeadLetter,
  DeadLetterInsert,
  HistoryRow,
  IntakeResult,
  IntakeWork,
  OutboxInsert,
  OutboxKind,
  OutboxRow,
  SealedBatch,
  SealInput,
  SeriesRange,
  StateWrite,
  Storage,
  StorageCapacity,
  StoredAlert,
  StoredAlertQuery,
  UnsealedRead,
} from './storage/storage.js';
export type { ConflictResolver, ConflictStrategy, Resolution, SyncRecord } from './sync/conflict-resolver.js';
export { lastWriteWins } from './sync/conflict-resolver.js';
export { HybridClock, hlcTime } from './sync/hlc.js';
export type { ConflictEvent } from './sync/records-sync.js';
export type { SyncStrategy } from './sync/sync-manager.js';
export type { RecordsSummary, SyncErrorCode, SyncErrorEvent, SyncResult } from './sync/sync-result.js';
export { certificatePin } from './transport/certificate-pins.js';
export type { CloudTlsOptions, Pem } from './transport/cloud-tls.js';
export type { HttpTransportOptions } from './transport/http-transport.js';
export { HttpTransport } from './transport/http-transport.js';
export type {
  ExchangeResult,
  OutgoingBatch,
  PingResult,
  RetryableCode,
  SendResult,
  Transport,
} from './transport/transport.js';
