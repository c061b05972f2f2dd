import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { gatewayOptionsFrom, parseEnvConfig } from '../../src/cli/env-config.js';
import { EdgeGateway, isConfigError } from '../../src/index.js';
import { makeCertificates, type TestCertificates } from '../helpers/certificates.js';

let certs: TestCertificates;
beforeAll(() => {
  certs = makeCertificates();
});
afterAll(() => certs.remove());

const options = (env: Record<string, string>) => gatewayOptionsFrom(parseEnvConfig({ DEVICE_ID: 'd', ...env }));

function configIssues(run: () => unknown): string {
  try {
    run();
  } catch (error) {
    if (isConfigError(error)) return error.issues.join('\n');
    throw error;
  }
  throw new Error('expected a ConfigError');
}

describe('CLI configuration of TLS', () => {
  it('reads the CA, the client certificate and its key from the files named, and splits the pins', () => {
    const made = options({
      CLOUD_API_URL: 'https://cloud.example.com/api/v1',
      CLOUD_CA_FILE: join(certs.dir, 'root.crt'),
      CLOUD_CLIENT_CERT_FILE: join(certs.dir, 'client.crt'),
      CLOUD_CLIENT_KEY_FILE: join(certs.dir, 'client.key'),
      CLOUD_PINNED_CERTS: ` ${certs.root.pin}, ${certs.intermediate.pin} `,
    });
    expect(made).toMatchObject({
      ca: certs.root.cert,
      cert: certs.client.cert,
      key: certs.client.key,
      pinnedCertificates: [certs.root.pin, certs.intermediate.pin],
    });
    expect(() => new EdgeGateway(made)).not.toThrow();
  });

  it('names the variable of a file it cannot read', () => {
    const issues = configIssues(() =>
      options({ CLOUD_API_URL: 'https://cloud.example.com', CLOUD_CA_FILE: join(certs.dir, 'missing.pem') }),
    );
    expect(issues).toMatch(/Could not read CLOUD_CA_FILE .*missing\.pem.*ENOENT/);
  });

  it('refuses an http:// CLOUD_API_URL to another host, unless CLOUD_ALLOW_INSECURE=true', () => {
    expect(configIssues(() => options({ CLOUD_API_URL: 'http://cloud.example.com/api/v1' }))).toMatch(
      /CLOUD_API_URL to be an https:\/\/ URL.*CLOUD_ALLOW_INSECURE=true/,
    );
    const insecure = options({ CLOUD_API_URL: 'http://cloud.example.com/api/v1', CLOUD_ALLOW_INSECURE: 'true' });
    expect(insecure.allowInsecure).toBe(true);
    expect(() => new EdgeGateway(insecure)).not.toThrow();
    expect(options({ CLOUD_API_URL: 'http://127.0.0.1:8080/api/v1' })).not.toHaveProperty('allowInsecure');
  });

  it('refuses an empty CLOUD_PINNED_CERTS list of separators', () => {
    expect(configIssues(() => options({ CLOUD_PINNED_CERTS: ' , ' }))).toMatch(/CLOUD_PINNED_CERTS/);
  });
});
