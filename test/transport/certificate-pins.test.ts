import { execFileSync } from 'node:child_process';
import { X509Certificate } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import type { PeerCertificate } from 'node:tls';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { certificatePin, isCertificatePinError } from '../../src/index.js';
import { checkPins, isPin, verifiedChain } from '../../src/transport/certificate-pins.js';
import { isLoopbackHost } from '../../src/transport/cloud-tls.js';
import { makeCertificates, type TestCertificates } from '../helpers/certificates.js';

let certs: TestCertificates;
beforeAll(() => {
  certs = makeCertificates();
});
afterAll(() => certs.remove());

/** The pin as docs/security-transport.md tells an operator to compute it, in a shell. */
const opensslPin = (file: string) =>
  execFileSync(
    'sh',
    [
      '-c',
      `openssl x509 -in '${file}' -pubkey -noout | openssl pkey -pubin -outform der | openssl dgst -sha256 -binary | base64`,
    ],
    { cwd: certs.dir },
  )
    .toString()
    .trim();

/** A peer certificate as `getPeerCertificate(true)` links it: each with the one Node took for its issuer. */
function peer(...pems: string[]): PeerCertificate {
  const [first, ...rest] = pems;
  const raw = new X509Certificate(first as string).raw;
  const issuer = rest.length > 0 ? peer(...rest) : undefined;
  return { raw, ...(issuer ? { issuerCertificate: issuer } : {}) } as unknown as PeerCertificate;
}

describe('certificatePin()', () => {
  it('is the documented openssl pin of an EC certificate (the SPKI, not the bare EC point)', () => {
    expect(certificatePin(certs.root.cert)).toBe(`sha256/${opensslPin('root.crt')}`);
    expect(certificatePin(readFileSync(join(certs.dir, 'server.crt')))).toBe(`sha256/${opensslPin('server.crt')}`);
  });

  it('is the documented openssl pin of an RSA certificate', () => {
    certs.openssl([
      'req',
      '-x509',
      ...['-newkey', 'rsa:2048', '-nodes', '-keyout', 'rsa.key', '-out', 'rsa.crt', '-subj', '/CN=rsa', '-days', '1'],
    ]);
    const pem = readFileSync(join(certs.dir, 'rsa.crt'), 'utf8');
    expect(certificatePin(new X509Certificate(pem))).toBe(`sha256/${opensslPin('rsa.crt')}`);
  });

  it('takes the first certificate of a chain', () => {
    expect(certificatePin(certs.server.cert)).toBe(certs.server.pin);
    expect(certs.server.pin).not.toBe(certs.intermediate.pin);
  });

  it('makes pins of the sha256/<base64> form', () => {
    expect(isPin(certs.root.pin)).toBe(true);
    expect(isPin(certs.root.pin.slice('sha256/'.length))).toBe(false);
    expect(isPin(`sha1/${certs.root.pin.slice('sha256/'.length)}`)).toBe(false);
    expect(isPin('sha256/AAAA')).toBe(false);
  });
});

describe('checkPins()', () => {
  const chain = () => peer(certs.server.cert, certs.intermediate.cert, certs.root.cert);

  it('passes when any certificate of the chain is pinned', () => {
    for (const pin of [certs.server.pin, certs.intermediate.pin, certs.root.pin]) {
      expect(checkPins('127.0.0.1', chain(), new Set([pin]))).toBeUndefined();
    }
  });

  it('refuses a chain without a pinned key, naming the host and what it presented', () => {
    const error = checkPins('127.0.0.1', chain(), new Set([certs.otherRoot.pin]));
    expect(isCertificatePinError(error)).toBe(true);
    expect(error).toMatchObject({
      code: 'PIN_MISMATCH',
      host: '127.0.0.1',
      presented: [certs.server.pin, certs.intermediate.pin, certs.root.pin],
    });
    expect(error?.message).toContain('CN=Test Intermediate CA');
  });

  it('ends the chain at a certificate that carries a pinned key but did not sign the one below it', () => {
    // A forged "issuer": the untrusted CA's name, the pinned root's public key, signed by the untrusted CA. Linked
    // by name only, it would put the pinned key into the chain of a certificate the pinned key never signed.
    certs.openssl(['pkey', '-in', 'root.key', '-pubout', '-out', 'root-pub.pem']);
    certs.openssl([
      'req',
      '-new',
      ...['-key', 'other-root.key', '-subj', '/O=somebody else/CN=Other Root CA', '-out', 'forged.csr'],
    ]);
    certs.openssl([
      'x509',
      '-req',
      ...['-in', 'forged.csr', '-force_pubkey', 'root-pub.pem', '-CA', 'other-root.crt', '-CAkey', 'other-root.key'],
      ...['-set_serial', '7', '-days', '1', '-out', 'forged.crt'],
    ]);
    const forged = readFileSync(join(certs.dir, 'forged.crt'), 'utf8');
    expect(certificatePin(forged)).toBe(certs.root.pin);

    const spoofed = peer(certs.stranger.cert, forged);
    expect(verifiedChain(spoofed).map((c) => certificatePin(c))).toEqual([certs.stranger.pin]);
    expect(checkPins('127.0.0.1', spoofed, new Set([certs.root.pin]))).toBeDefined();
    // The genuine issuer does verify, and its pin passes.
    expect(
      checkPins('127.0.0.1', peer(certs.stranger.cert, certs.otherRoot.cert), new Set([certs.otherRoot.pin])),
    ).toBeUndefined();
  });
});

describe('isLoopbackHost()', () => {
  it.each(['127.0.0.1', '127.255.0.9', 'localhost', 'LOCALHOST', 'localhost.', '[::1]', '[::ffff:7f00:1]'])(
    'takes %s',
    (host) => expect(isLoopbackHost(host)).toBe(true),
  );

  it.each([
    '128.0.0.1',
    '10.0.0.1',
    '0.0.0.0',
    '[::]',
    '[fe80::1]',
    'localhost.example.com',
    'mylocalhost',
    '127.0.0.1.nip.io',
  ])('refuses %s', (host) => expect(isLoopbackHost(host)).toBe(false));

  it('sees through the forms a URL normalizes', () => {
    for (const url of [
      'http://127.1/',
      'http://0x7f000001/',
      'http://[0:0:0:0:0:0:0:1]/',
      'http://[::ffff:127.0.0.1]/',
    ]) {
      expect(isLoopbackHost(new URL(url).hostname)).toBe(true);
    }
  });
});
