import { createHash, X509Certificate } from 'node:crypto';
import type { DetailedPeerCertificate, PeerCertificate } from 'node:tls';
import { CertificatePinError } from '../errors.js';

/** `sha256/` and the base64 of 32 bytes, padded: 43 characters and one `=`. */
const PIN_PATTERN = /^sha256\/[A-Za-z0-9+/]{42}[AEIMQUYcgkosw048]=$/;

/** A chain longer than this is cut there; real chains have 2 to 4 certificates. */
const MAX_CHAIN = 10;

/** True when `value` is a pin in the `sha256/<base64>` form. */
export const isPin = (value: string): boolean => PIN_PATTERN.test(value);

/**
 * The pin of a certificate's public key: `sha256/` and the base64 SHA-256 of its DER SubjectPublicKeyInfo, the
 * `pin-sha256` of HPKP (RFC 7469). The same as
 * `openssl x509 -pubkey -noout -in cert.pem | openssl pkey -pubin -outform der | openssl dgst -sha256 -binary | base64`.
 * A certificate renewed with the same key keeps its pin.
 *
 * @param certificate a certificate, as PEM (the first one of a chain is taken), DER or `X509Certificate`.
 * @example
 * ```ts
 * const pin = certificatePin(readFileSync('cloud-ca.pem', 'utf8')); // 'sha256/…='
 * new EdgeGateway({ deviceId: 'd', cloudUrl, pinnedCertificates: [pin] });
 * ```
 */
export function certificatePin(certificate: X509Certificate | string | Buffer): string {
  const x509 = certificate instanceof X509Certificate ? certificate : new X509Certificate(certificate);
  const spki = x509.publicKey.export({ type: 'spki', format: 'der' });
  return `sha256/${createHash('sha256').update(spki).digest('base64')}`;
}

/**
 * The chain a TLS peer was verified with, leaf first, as far as each certificate's signature verifies with the
 * key of the next one. `getPeerCertificate(true)` links certificates by name only, from what the server sent and
 * from the trusted store: a certificate the server added with an issuer's name and a pinned key, but which did not
 * sign the one below it, ends the walk there and so cannot satisfy a pin.
 * @internal
 */
export function verifiedChain(peer: PeerCertificate): X509Certificate[] {
  const chain: X509Certificate[] = [];
  const seen = new Set<string>();
  let current: Partial<DetailedPeerCertificate> | undefined = peer;
  while (current?.raw && chain.length < MAX_CHAIN) {
    let certificate: X509Certificate;
    try {
      certificate = new X509Certificate(current.raw);
    } catch {
      break; // what cannot be read cannot match: the check fails closed
    }
    if (seen.has(certificate.fingerprint256)) break; // a root is its own issuer
    const child = chain.at(-1);
    if (child && !(child.checkIssued(certificate) && child.verify(certificate.publicKey))) break;
    seen.add(certificate.fingerprint256);
    chain.push(certificate);
    current = current.issuerCertificate;
  }
  return chain;
}

/**
 * Checks a verified peer against pins: passes when the key of any certificate of its verified chain (the leaf,
 * an intermediate or the root, as HPKP did) is pinned. Returns the error to close the connection with, or
 * undefined. Meant for `checkServerIdentity`, which Node runs after chain and host checks pass and before the
 * connection is handed to the request.
 * @internal
 */
export function checkPins(host: string, peer: PeerCertificate, pins: ReadonlySet<string>): Error | undefined {
  const chain = verifiedChain(peer).map((certificate) => ({
    pin: certificatePin(certificate),
    subject: certificate.subject.replaceAll('\n', ', '),
  }));
  if (chain.some((certificate) => pins.has(certificate.pin))) return undefined;
  return new CertificatePinError(host, chain);
}
