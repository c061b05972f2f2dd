import type { EventEmitter } from 'eventemitter3';
import { Counter, Gauge, Histogram, Registry } from 'prom-client';
import type { EdgeGateway } from '../gateway/edge-gateway.js';
import type { GatewayEvents, GatewayStatus } from '../gateway/status.js';
import type { SendReport } from '../sync/sync-manager.js';

/** What the metrics read of a gateway beyond its public API; supplied by the gateway. @internal */
export interface MetricsProbe {
  /** Bytes the local store takes on disk (database and WAL); undefined while it is closed. */
  storageBytes(): number | undefined;
  /** The most bytes new readings may take (`maxDatabaseSize` less the sync reserve); undefined without a limit. */
  storageLimitBytes(): number | undefined;
}

/** Buckets of `edge_gateway_processing_duration_seconds`: from `sendData()` to durable, usually milliseconds. */
const PROCESSING_BUCKETS = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5];
/** Buckets of `edge_gateway_sync_latency_seconds`: one batch's round trip, loopback to a satellite link. */
const LATENCY_BUCKETS = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60];

/**
 * A label value as exposed: the enum-like words the gateway emits (codes, reasons, severities) pass; anything
 * else, such as free text a processor put in a severity, becomes `other`, so that no message, and nothing secret
 * in one, ever reaches a label, and the number of series stays bounded.
 */
export const labelValue = (value: unknown): string =>
  typeof value === 'string' && /^[A-Za-z0-9_.-]{1,64}$/.test(value) ? value : 'other';

/**
 * The gateway's Prometheus metrics, on a registry of its own (never prom-client's global one). Counters and
 * histograms are fed by the gateway's events and, batch by batch, by its intake and send paths; gauges read its
 * status when scraped. Made by `EdgeGateway.metrics()`, `metricsRegistry()` or `serveHttp()`, or at `start()`
 * with the `metrics` option, and kept for the gateway's life.
 * @internal
 */
export class GatewayMetrics {
  /** The registry holding every series below. Merge it into another with `Registry.merge()`. */
  readonly registry: Registry;
  readonly #gateway: EdgeGateway;
  readonly #probe: MetricsProbe;
  /** One status read serves every gauge of a scrape: prom-client collects them all in one synchronous pass. */
  #snapshot: GatewayStatus | undefined;
  /** `performance.now()` when the cloud became unreachable; undefined while it answers. */
  #offlineSince: number | undefined;
  #rawBytes = 0;
  #sealedBytes = 0;

  readonly #dataPoints: Counter;
  readonly #acknowledged: Counter;
  readonly #syncSuccess: Counter;
  readonly #syncFailures: Counter<'code'>;
  readonly #dropped: Counter<'reason'>;
  readonly #bytesSent: Counter;
  readonly #bytesRaw: Counter;
  readonly #bytesSealed: Counter;
  readonly #conflicts: Counter<'winner' | 'strategy'>;
  readonly #alerts: Counter<'severity'>;
  readonly #processing: Histogram;
  readonly #latency: Histogram<'outcome'>;

  constructor(gateway: EdgeGateway, probe: MetricsProbe, registry: Registry = new Registry()) {
    this.registry = registry;
    this.#gateway = gateway;
    this.#probe = probe;
    const registers = [registry];
    const status = () => this.#status();

    this.#dataPoints = new Counter({
      name: 'edge_gateway_data_points_total',
      help: 'Readings accepted: stored durably by sendData() or sendBatch() (after a processor, what it kept)',
      registers,
    });
    this.#acknowledged = new Counter({
      name: 'edge_gateway_readings_acknowledged_total',
      help: 'Readings the cloud acknowledged, after which they left the local queue',
      registers,
    });
    this.#syncSuccess = new Counter({
      name: 'edge_gateway_sync_success_total',
      help: 'Batches sent and acknowledged by the cloud',
      registers,
    });
    this.#syncFailures = new Counter({
      name: 'edge_gateway_sync_failures_total',
      help: 'Failed attempts to sync, by sync-error code (each is retried unless the code says otherwise)',
      labelNames: ['code'],
      registers,
    });
    this.#dropped = new Counter({
      name: 'edge_gateway_dropped_readings_total',
      help: 'Readings that will not reach the cloud, by reason (queue-full, rejected-by-cloud, processor-failed, drop-oldest, retention, downsampled)',
      labelNames: ['reason'],
      registers,
    });
    this.#bytesSent = new Counter({
      name: 'edge_gateway_sync_bytes_sent_total',
      help: 'Bytes of batch bodies put on the wire, every attempt counted',
      registers,
    });
    this.#bytesRaw = new Counter({
      name: 'edge_gateway_batch_uncompressed_bytes_total',
      help: 'Bytes of the batches sealed, before compression',
      registers,
    });
    this.#bytesSealed = new Counter({
      name: 'edge_gateway_batch_compressed_bytes_total',
      help: 'Bytes of the same batches as sealed and sent (compressed when compression is on)',
      registers,
    });
    this.#conflicts = new Counter({
      name: 'edge_gateway_record_conflicts_total',
      help: 'Conflicts on shared records resolved, by winner (edge, cloud, merged) and strategy',
      labelNames: ['winner', 'strategy'],
      registers,
    });
    this.#alerts = new Counter({
      name: 'edge_gateway_alerts_total',
      help: 'Alerts raised by processors, by severity',
      labelNames: ['severity'],
      registers,
    });
    this.#processing = new Histogram({
      name: 'edge_gateway_processing_duration_seconds',
      help: 'From a sendData() or sendBatch() call to its readings being durable (one observation per call)',
      buckets: PROCESSING_BUCKETS,
      registers,
    });
    this.#latency = new Histogram({
      name: 'edge_gateway_sync_latency_seconds',
      help: 'Round trip of one batch to the cloud, by outcome (acknowledged, retryable, rejected, unauthorized, ...)',
      labelNames: ['outcome'],
      buckets: LATENCY_BUCKETS,
      registers,
    });

    const gauge = (name: string, help: string, read: () => number) =>
      new Gauge({
        name,
        help,
        registers,
        collect() {
          this.set(read());
        },
      });
    gauge('edge_gateway_queue_size', 'Readings accepted and not yet acknowledged by the cloud', () => {
      return status().pendingSyncCount;
    });
    gauge(
      'edge_gateway_dead_letters',
      'Readings kept in the dead letters (refused for good), see getDeadLetters()',
      () => {
        return status().deadLetterCount;
      },
    );
    gauge('edge_gateway_records_pending', 'Local edits of shared records not yet settled with the cloud', () => {
      return status().pendingRecordCount;
    });
    gauge('edge_gateway_online', '1 when the last attempt to reach the cloud got an answer, else 0', () =>
      status().isOnline ? 1 : 0,
    );
    gauge('edge_gateway_auth_refused', '1 while the cloud refuses the API key, else 0', () =>
      status().authRefused ? 1 : 0,
    );
    gauge('edge_gateway_offline_duration_seconds', 'How long the cloud has been unreachable; 0 while it answers', () =>
      this.#offlineSince === undefined ? 0 : (performance.now() - this.#offlineSince) / 1000,
    );
    gauge(
      'edge_gateway_clock_skew_seconds',
      "The cloud's clock minus this device's at the last answer; 0 before the first answer",
      () => (status().clockSkewMs ?? 0) / 1000,
    );
    gauge(
      'edge_gateway_last_sync_timestamp_seconds',
      'When the cloud last acknowledged a batch (Unix time); 0 never',
      () => {
        const last = status().lastSyncTime;
        return last === null ? 0 : last.getTime() / 1000;
      },
    );
    gauge('edge_gateway_storage_bytes', 'Bytes the local database takes on disk, WAL included', () => {
      return this.#probe.storageBytes() ?? 0;
    });
    gauge(
      'edge_gateway_storage_limit_bytes',
      'Bytes new readings may take (maxDatabaseSize); 0 without a limit',
      () => {
        return this.#probe.storageLimitBytes() ?? 0;
      },
    );
    gauge(
      'edge_gateway_compression_ratio',
      'Uncompressed over compressed bytes of the batches sealed so far; 0 before the first',
      () => (this.#sealedBytes === 0 ? 0 : this.#rawBytes / this.#sealedBytes),
    );
    new Gauge({
      name: 'edge_gateway_info',
      help: 'Always 1; its label names the device',
      labelNames: ['device_id'],
      registers,
      collect() {
        this.reset();
        this.set({ device_id: status().deviceId }, 1);
      },
    });

    this.#listen();
  }

  #status(): GatewayStatus {
    if (this.#snapshot === undefined) {
      this.#snapshot = this.#gateway.getStatus();
      queueMicrotask(() => {
        this.#snapshot = undefined;
      });
    }
    return this.#snapshot;
  }

  #on<E extends keyof GatewayEvents>(event: E, listener: GatewayEvents[E]): void {
    (this.#gateway as EventEmitter<GatewayEvents>).on(event, listener as EventEmitter.EventListener<GatewayEvents, E>);
  }

  #listen(): void {
    this.#on('sync-error', (event) => this.#syncFailures.inc({ code: labelValue(event.code) }));
    this.#on('dropped', (event) => this.#dropped.inc({ reason: labelValue(event.reason) }, event.count));
    this.#on('conflict', (event) =>
      this.#conflicts.inc({ winner: labelValue(event.winner), strategy: labelValue(event.strategy) }),
    );
    this.#on('alert', (alert) => this.#alerts.inc({ severity: labelValue(alert.severity) }));
    this.#on('online', () => {
      this.#offlineSince = undefined;
    });
    this.#on('offline', () => {
      this.#offlineSince ??= performance.now();
    });
    // Made while the cloud is already known to be away: the outage is counted from now.
    const status = this.#gateway.getStatus();
    if (!status.isOnline && status.lastError !== null) this.#offlineSince = performance.now();
  }

  /**
   * A `sendData()` or `sendBatch()` call begun at `startedAt` (`performance.now()`) resolved, `stored` readings
   * durable. @internal
   */
  intake(startedAt: number, stored: number): void {
    this.#safely(() => {
      this.#processing.observe((performance.now() - startedAt) / 1000);
      if (stored > 0) this.#dataPoints.inc(stored);
    });
  }

  /** One attempt to send one batch ended. @internal */
  sent(report: SendReport): void {
    this.#safely(() => {
      this.#bytesSent.inc(report.bytes);
      this.#latency.observe({ outcome: labelValue(report.status) }, report.seconds);
      if (report.status === 'acknowledged') {
        this.#syncSuccess.inc();
        this.#acknowledged.inc(report.count);
      }
      if (report.rawBytes !== undefined) {
        this.#rawBytes += report.rawBytes;
        this.#sealedBytes += report.bytes;
        this.#bytesRaw.inc(report.rawBytes);
        this.#bytesSealed.inc(report.bytes);
      }
    });
  }

  // Called from the intake and sync paths: a metric that cannot be counted must not fail a reading or a cycle.
  #safely(count: () => void): void {
    try {
      count();
    } catch {
      // prom-client throws only on a value that is not a number, which these never are.
    }
  }

  /** The metrics in the Prometheus text format. */
  metrics(): Promise<string> {
    return this.registry.metrics();
  }
}
