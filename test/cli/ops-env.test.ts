import { describe, expect, it } from 'vitest';
import { gatewayOptionsFrom, httpOptionsFrom, parseEnvConfig } from '../../src/cli/env-config.js';

describe('the HTTP and health variables', () => {
  it('serve on 127.0.0.1:8000 unless told otherwise', () => {
    expect(httpOptionsFrom(parseEnvConfig({ DEVICE_ID: 'd' }))).toEqual({ port: 8000 });
  });

  it('map to the server and gateway options', () => {
    const config = parseEnvConfig({
      DEVICE_ID: 'd',
      HTTP_HOST: '0.0.0.0',
      HTTP_PORT: '9100',
      INGEST_MAX_BODY_BYTES: '65536',
      INGEST_RATE_LIMIT: '0',
      INGEST_BURST: '500',
      INGEST_TOKEN: 'tok-123456',
      INGEST_IDEMPOTENCY_WINDOW_SECONDS: '3600',
      INGEST_IDEMPOTENCY_MAX_KEYS: '5000',
      STOP_TIMEOUT_SECONDS: '0',
      STALL_TIMEOUT_SECONDS: '120',
      DEAD_LETTER_WINDOW_SECONDS: '60',
    });
    expect(httpOptionsFrom(config)).toEqual({
      port: 9100,
      host: '0.0.0.0',
      maxBodyBytes: 65536,
      rateLimit: 0,
      burst: 500,
      ingestToken: 'tok-123456',
      idempotencyWindow: 3600,
      maxIdempotencyKeys: 5000,
    });
    expect(gatewayOptionsFrom(config)).toMatchObject({ stopTimeout: 0, stallTimeout: 120, deadLetterWindow: 60 });
  });

  it('turn the server off with HTTP_ENABLED=false', () => {
    expect(httpOptionsFrom(parseEnvConfig({ DEVICE_ID: 'd', HTTP_ENABLED: 'false' }))).toBeUndefined();
  });

  it('refuse a bad port, naming it', () => {
    expect(() => parseEnvConfig({ DEVICE_ID: 'd', HTTP_PORT: '70000' })).toThrow(/HTTP_PORT.*"70000"/);
    expect(() => parseEnvConfig({ DEVICE_ID: 'd', INGEST_RATE_LIMIT: '-1' })).toThrow(/INGEST_RATE_LIMIT/);
  });
});
