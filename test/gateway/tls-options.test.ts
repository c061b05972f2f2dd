import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type ConfigError, EdgeGateway, type EdgeGatewayOptions, isConfigError } from '../../src/index.js';
import { makeCertificates, type TestCertificates } from '../helpers/certificates.js';
import { createGateway } from '../helpers/gateway.js';

let certs: TestCertificates;
beforeAll(() => {
  certs = makeCertificates();
});
afterAll(() => certs.remove());

function configError(build: () => unknown): ConfigError {
  try {
    build();
  } catch (error) {
    expect(isConfigError(error)).toBe(true);
    return error as ConfigError;
  }
  throw new Error('expected a ConfigError');
}

const construct = (options: Partial<EdgeGatewayOptions>) => () => new EdgeGateway({ deviceId: 'd', ...options });

describe('EdgeGateway', () => {
  describe('constructor: the security of the link to the cloud', () => {
    it('refuses an http:// cloudUrl to a host that is not loopback, naming the option and why', () => {
      const error = configError(construct({ cloudUrl: 'http://cloud.example.com/api/v1' }));
      expect(error.issues).toEqual([expect.stringMatching(/^Expected the "cloudUrl" option to be an https:\/\/ URL/)]);
      expect(error.message).toMatch(/loopback host.*allowInsecure: true.*clear text/);
    });

    it('takes http:// to a loopback host', () => {
      for (const cloudUrl of ['http://127.0.0.1:8080/api/v1', 'http://localhost/api/v1', 'http://[::1]:1/api/v1']) {
        expect(() => construct({ cloudUrl })()).not.toThrow();
      }
    });

    it('takes http:// to any host with allowInsecure: true', () => {
      const gateway = new EdgeGateway({ deviceId: 'd', cloudUrl: 'http://10.1.2.3/api/v1', allowInsecure: true });
      expect(gateway.options.allowInsecure).toBe(true);
    });

    it('defaults allowInsecure to false', () => {
      expect(new EdgeGateway({ deviceId: 'd' }).options.allowInsecure).toBe(false);
    });

    it('refuses TLS options with an http:// cloudUrl rather than ignore them', () => {
      const error = configError(
        construct({ cloudUrl: 'http://127.0.0.1:1/api/v1', pinnedCertificates: [certs.root.pin], ca: certs.root.cert }),
      );
      expect(error.issues).toEqual([
        expect.stringMatching(/^The "ca" option needs an https:\/\/ "cloudUrl"/),
        expect.stringMatching(/^The "pinnedCertificates" option needs an https:\/\/ "cloudUrl"/),
      ]);
    });

    it('checks TLS options even before a cloudUrl is given', () => {
      const error = configError(construct({ pinnedCertificates: ['sha256/not-a-pin'] }));
      expect(error.issues).toEqual([expect.stringMatching(/"pinnedCertificates\[0\]" option/)]);
    });

    it('refuses a key that is not the certificate’s, without quoting either', () => {
      const error = configError(
        construct({ cloudUrl: 'https://cloud.example.com', cert: certs.client.cert, key: certs.stranger.key }),
      );
      expect(error.issues).toEqual(['The "key" option is not the private key of the "cert" certificate']);
      expect(error.message).not.toContain('PRIVATE KEY');
    });

    it('does not quote a key of the wrong type', () => {
      const error = configError(() => new EdgeGateway({ deviceId: 'd', key: 42 as unknown as string }));
      expect(error.issues).toEqual([expect.stringMatching(/"key" option.*\(got a value not shown, as it is secret\)/)]);
    });
  });

  describe('.configure()', () => {
    it('refuses an insecure cloudUrl, and leaves the options as they were', () => {
      const gateway = createGateway({ cloudUrl: 'https://cloud.example.com/api/v1' });
      const error = configError(() => gateway.configure({ cloudUrl: 'http://cloud.example.com/api/v1' }));
      expect(error.issues[0]).toMatch(/"cloudUrl" option to be an https:\/\/ URL/);
      expect(gateway.options.cloudUrl).toBe('https://cloud.example.com/api/v1');
    });

    it('refuses to drop allowInsecure while the cloudUrl is http:// to another host', () => {
      const gateway = createGateway({ cloudUrl: 'http://10.1.2.3/api/v1', allowInsecure: true });
      expect(configError(() => gateway.configure({ allowInsecure: false })).issues[0]).toMatch(/allowInsecure/);
      expect(gateway.options.allowInsecure).toBe(true);
    });

    it('takes pins with an https:// cloudUrl', () => {
      const gateway = createGateway({ cloudUrl: 'https://cloud.example.com/api/v1' });
      gateway.configure({ pinnedCertificates: [certs.root.pin, certs.intermediate.pin] });
      expect(gateway.options.pinnedCertificates).toEqual([certs.root.pin, certs.intermediate.pin]);
    });
  });
});
