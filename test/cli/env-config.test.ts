import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { gatewayOptionsFrom, ignoredVariables, loadEnv, parseEnvConfig } from '../../src/cli/env-config.js';
import { EdgeGateway, isConfigError, WindowedAggregation } from '../../src/index.js';

const root = join(import.meta.dirname, '..', '..');
let dir: string | undefined;
afterEach(() => {
  if (dir) rmSync(dir, { recursive: true, force: true });
  dir = undefined;
});

describe('CLI configuration', () => {
  it('reads every variable of the shipped .env.example', () => {
    const config = parseEnvConfig(loadEnv(join(root, '.env.example'), {}));
    expect(config).toMatchObject({
      DEVICE_ID: 'edge-gateway-001',
      LOCAL_DB_PATH: './data/edge_gateway.db',
      SYNC_INTERVAL_SECONDS: 60,
      MAX_OFFLINE_QUEUE_SIZE: 10000,
      CLOUD_API_URL: 'https://your-cloud-backend.com/api/v1',
      CONNECTION_TIMEOUT_SECONDS: 30,
      MAX_RETRY_ATTEMPTS: 5,
      COMPRESSION_ENABLED: true,
      BATCH_SIZE: 100,
      LOG_LEVEL: 'info',
    });
    expect(gatewayOptionsFrom(config)).toEqual({
      deviceId: 'edge-gateway-001',
      localDb: './data/edge_gateway.db',
      cloudUrl: 'https://your-cloud-backend.com/api/v1',
      apiKey: 'your-api-key-here',
      syncInterval: 60,
      maxOfflineQueueSize: 10000,
      connectionTimeout: 30,
      maxRetryAttempts: 5,
      batchSize: 100,
      retention: { maxDays: 7 },
      processors: [expect.any(WindowedAggregation)],
    });
  });

  it('lets the environment win over the file', () => {
    dir = mkdtempSync(join(tmpdir(), 'edge-gateway-env-'));
    const file = join(dir, '.env');
    writeFileSync(file, 'DEVICE_ID=from-file\nBATCH_SIZE=10\n');
    const config = parseEnvConfig(loadEnv(file, { DEVICE_ID: 'from-env' }));
    expect(config.DEVICE_ID).toBe('from-env');
    expect(config.BATCH_SIZE).toBe(10);
  });

  it('works without a .env file', () => {
    expect(parseEnvConfig(loadEnv('/nonexistent/.env', { DEVICE_ID: 'd' })).DEVICE_ID).toBe('d');
  });

  it('names every bad variable and its value', () => {
    let caught: unknown;
    try {
      parseEnvConfig({ DEVICE_ID: 'd', BATCH_SIZE: 'lots', COMPRESSION_ENABLED: 'maybe', CLOUD_API_URL: 'ftp://x' });
    } catch (error) {
      caught = error;
    }
    expect(isConfigError(caught)).toBe(true);
    const message = (caught as Error).message;
    expect(message).toContain('BATCH_SIZE');
    expect(message).toContain('"lots"');
    expect(message).toContain('COMPRESSION_ENABLED');
    expect(message).toContain('CLOUD_API_URL');
  });

  it('takes several cloud URLs separated by commas, for server nodes over one store', () => {
    const config = parseEnvConfig({ DEVICE_ID: 'd', CLOUD_API_URL: 'https://a:8080/api/v1, https://b:8080/api/v1' });

    expect(gatewayOptionsFrom(config).cloudUrl).toEqual(['https://a:8080/api/v1', 'https://b:8080/api/v1']);
    expect(() => parseEnvConfig({ DEVICE_ID: 'd', CLOUD_API_URL: 'https://a:8080/api/v1,' })).toThrow(/CLOUD_API_URL/);
    // Every node of the list meets the clear-text rule, not only the first.
    expect(() =>
      parseEnvConfig({ DEVICE_ID: 'd', CLOUD_API_URL: 'http://127.0.0.1:8080/api/v1,http://b:8080/api/v1' }),
    ).toThrow(/CLOUD_ALLOW_INSECURE/);
  });

  it('refuses a missing DEVICE_ID', () => {
    expect(() => parseEnvConfig({})).toThrow(/DEVICE_ID/);
  });

  it('turns compression off, or sets its level', () => {
    expect(gatewayOptionsFrom(parseEnvConfig({ DEVICE_ID: 'd', COMPRESSION_ENABLED: 'false' })).compression).toBe(
      false,
    );
    expect(gatewayOptionsFrom(parseEnvConfig({ DEVICE_ID: 'd', COMPRESSION_LEVEL: '9' })).compression).toEqual({
      level: 9,
    });
  });

  it('turns on windowed aggregation with ENABLE_LOCAL_ANALYTICS or AGGREGATION_WINDOW_SECONDS, and off with false', () => {
    const options = (env: Record<string, string>) => gatewayOptionsFrom(parseEnvConfig({ DEVICE_ID: 'd', ...env }));
    const windows = (env: Record<string, string>) =>
      (options(env).processors ?? []).map((p) => (p as WindowedAggregation).windowMs);
    expect(windows({ ENABLE_LOCAL_ANALYTICS: 'true' })).toEqual([300_000]);
    expect(windows({ ENABLE_LOCAL_ANALYTICS: 'true', AGGREGATION_WINDOW_SECONDS: '60' })).toEqual([60_000]);
    expect(windows({ AGGREGATION_WINDOW_SECONDS: '15' })).toEqual([15_000]);
    expect(windows({})).toEqual([]);
    expect(options({ ENABLE_LOCAL_ANALYTICS: 'false', AGGREGATION_WINDOW_SECONDS: '60' })).toMatchObject({
      localAnalytics: false,
    });
    expect(windows({ ENABLE_LOCAL_ANALYTICS: 'false', AGGREGATION_WINDOW_SECONDS: '60' })).toEqual([]);
  });

  it('reports the variables of features not built yet, so none is ignored silently', () => {
    const config = parseEnvConfig({ DEVICE_ID: 'd', DATA_RETENTION_DAYS: '7', WORKER_THREADS: '2' });
    expect(ignoredVariables(config)).toEqual(['WORKER_THREADS']);
  });

  it('maps the retention and database variables to their options', () => {
    const config = parseEnvConfig({
      DEVICE_ID: 'd',
      DATA_RETENTION_DAYS: '1.5',
      MAX_OFFLINE_QUEUE_SIZE: '50000',
      CLEANUP_STRATEGY: 'oldest-first',
      CLEANUP_INTERVAL_SECONDS: '600',
      MAX_DATABASE_SIZE_MB: '64',
      DB_TIMEOUT_SECONDS: '30',
    });
    const options = gatewayOptionsFrom(config);
    expect(options).toMatchObject({
      maxOfflineQueueSize: 50000,
      maxDatabaseSize: 64 * 1048576,
      dbTimeout: 30,
      retention: { maxDays: 1.5, cleanupStrategy: 'oldest-first', cleanupInterval: 600 },
    });
    // The seed's "oldest-first" is drop-oldest under another name.
    expect(new EdgeGateway(options).retention).toMatchObject({ cleanupStrategy: 'drop-oldest', maxRecords: 50000 });
  });

  it('names a bad retention variable and its value', () => {
    expect(() => parseEnvConfig({ DEVICE_ID: 'd', CLEANUP_STRATEGY: 'sometimes' })).toThrow(
      /CLEANUP_STRATEGY.*"sometimes"/,
    );
    expect(() => parseEnvConfig({ DEVICE_ID: 'd', DATA_RETENTION_DAYS: '0' })).toThrow(/DATA_RETENTION_DAYS.*"0"/);
  });
});
