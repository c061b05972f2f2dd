import { createPrivateKey, X509Certificate } from 'node:crypto';
import { BlockList } from 'node:net';
import { isPin } from './certificate-pins.js';

/** PEM text, or a Buffer holding it. */
export type Pem = string | Buffer;

/**
 * How the link to the cloud is secured. Shared by `EdgeGateway` and `HttpTransport`. Certificate validation
 * (chain, validity dates, host name) is always on, whatever these say; they only add to it.
 */
export interface CloudTlsOptions {
  /**
   * Allows an `http://` cloud URL to a host that is not loopback. Readings, records and the API key then cross the
   * network in clear text, readable and changeable by anyone on the path. Without it, `http://` is accepted only
   * for 127.0.0.0/8, `::1` and `localhost`. It does not weaken `https://` in any way.
   * @default false
   */
  allowInsecure?: boolean | undefined;
  /**
   * The certificate authorities (PEM) the cloud's certificate must chain to, in place of Node's bundled Mozilla
   * roots: a private CA. To trust both, pass `[...tls.rootCertificates, myCa]`.
   * @default Node's bundled root certificates
   */
  ca?: Pem | readonly Pem[] | undefined;
  /**
   * The client certificate (PEM; may be followed by its intermediates) presented to a cloud that asks for one:
   * mutual TLS. Needs `key`.
   */
  cert?: Pem | undefined;
  /** The private key (PEM, unencrypted) of `cert`. Never logged nor shown in `options`. */
  key?: Pem | undefined;
  /**
   * Public-key pins, `sha256/<base64>` each: the SHA-256 of a DER SubjectPublicKeyInfo, as HPKP's `pin-sha256`
   * (compute one with `certificatePin()` or the openssl line in docs/security-transport.md). Every new TLS
   * connection is checked before a byte of a request is sent: it passes when the key of any certificate of the
   * verified chain (leaf, intermediate or root) is pinned, and is refused otherwise, reported as `sync-error`
   * `PIN_MISMATCH` and in `healthCheck()`. There is no fallback to unpinned connections. Pin a backup key too
   * (the next key, or the issuing CA's), or a key rotation cuts the device off until it is reconfigured.
   * @default undefined (no pinning: any certificate that validates is accepted)
   */
  pinnedCertificates?: readonly string[] | undefined;
}

/** The TLS options of {@link CloudTlsOptions}, by name: the ones that need `https://`. */
const TLS_ONLY = ['ca', 'cert', 'key', 'pinnedCertificates'] as const;

const loopback = new BlockList();
loopback.addSubnet('127.0.0.0', 8, 'ipv4');
loopback.addAddress('::1', 'ipv6');

/**
 * True for a host name that stays on this machine: 127.0.0.0/8, `::1` (also as an IPv4-mapped address) and
 * `localhost`. Takes a URL's `hostname` (IPv6 in brackets).
 * @internal
 */
export function isLoopbackHost(hostname: string): boolean {
  const host = hostname.toLowerCase().replace(/^\[(.*)\]$/, '$1');
  if (host === 'localhost' || host === 'localhost.') return true;
  if (/^[\d.]+$/.test(host)) return loopback.check(host, 'ipv4');
  if (host.includes(':')) {
    try {
      return loopback.check(host, 'ipv6');
    } catch {
      return false;
    }
  }
  return false;
}

const PEM_CERTIFICATE = /-----BEGIN CERTIFICATE-----[\s\S]*?-----END CERTIFICATE-----/g;

const text = (pem: Pem): string => (typeof pem === 'string' ? pem : pem.toString('utf8'));

// Node ignores what is not a certificate in `ca`: a file path given instead of the file's contents would leave
// no CA at all, and every connection failing for a reason far from its cause.
function caProblems(ca: Pem | readonly Pem[]): string[] {
  const entries: readonly Pem[] = Array.isArray(ca) ? ca : [ca as Pem];
  return entries.flatMap((entry, index) => {
    const name = Array.isArray(ca) ? `ca[${index}]` : 'ca';
    const blocks = text(entry).match(PEM_CERTIFICATE) ?? [];
    if (blocks.length === 0) {
      return [
        `Expected the "${name}" option to hold PEM certificates ("-----BEGIN CERTIFICATE-----"), got none: pass the file's contents, not its path`,
      ];
    }
    for (const block of blocks) {
      try {
        new X509Certificate(block);
      } catch (error) {
        return [`Expected the "${name}" option to hold valid PEM certificates: ${(error as Error).message}`];
      }
    }
    return [];
  });
}

function clientCertificateProblems(cert: Pem | undefined, key: Pem | undefined): string[] {
  if (cert === undefined && key === undefined) return [];
  if (cert === undefined) return ['The "key" option needs "cert" (mutual TLS takes both)'];
  if (key === undefined) return ['The "cert" option needs "key" (mutual TLS takes both)'];
  let certificate: X509Certificate;
  try {
    certificate = new X509Certificate(cert);
  } catch (error) {
    return [`Expected the "cert" option to be a PEM certificate: ${(error as Error).message}`];
  }
  let privateKey: ReturnType<typeof createPrivateKey>;
  try {
    privateKey = createPrivateKey(key);
  } catch (error) {
    // The message is OpenSSL's, which does not quote the key.
    return [`Expected the "key" option to be an unencrypted PEM private key: ${(error as Error).message}`];
  }
  return certificate.checkPrivateKey(privateKey)
    ? []
    : ['The "key" option is not the private key of the "cert" certificate'];
}

/**
 * Every problem with how the link to the cloud would be secured, one line each, naming the option: an
 * `http://` URL to a host that is not loopback without `allowInsecure`, TLS options with an `http://` URL, pins
 * not in the `sha256/<base64>` form, unreadable PEM, a key that does not match its certificate.
 * @param urlOption the name of the URL option in messages (`cloudUrl`, `baseUrl`).
 * @param url the URL; when undefined, only the TLS options themselves are checked.
 * @internal
 */
export function cloudTlsProblems(
  urlOption: string,
  url: string | readonly string[] | undefined,
  options: CloudTlsOptions,
): string[] {
  const urls = url === undefined ? [] : typeof url === 'string' ? [url] : url;
  const problems = urls.flatMap((one, i) =>
    urlProblems(typeof url === 'string' ? urlOption : `${urlOption}[${i}]`, one, options),
  );
  if (options.pinnedCertificates?.length === 0) {
    problems.push('Expected the "pinnedCertificates" option to hold at least one pin; leave it out to pin nothing');
  }
  for (const [index, pin] of (options.pinnedCertificates ?? []).entries()) {
    if (typeof pin !== 'string' || !isPin(pin)) {
      problems.push(
        `Expected the "pinnedCertificates[${index}]" option to be "sha256/" and the base64 SHA-256 of a SubjectPublicKeyInfo (44 characters ending in "="), got ${JSON.stringify(pin)}`,
      );
    }
  }
  if (options.ca !== undefined) problems.push(...caProblems(options.ca));
  problems.push(...clientCertificateProblems(options.cert, options.key));
  return problems;
}

function urlProblems(urlOption: string, url: string, options: CloudTlsOptions): string[] {
  let parsed: URL;
  try {
    parsed = new URL(url);
  } catch {
    return [`Expected the "${urlOption}" option to be an absolute URL (got ${JSON.stringify(url)})`];
  }
  if (parsed.protocol === 'https:') return [];
  if (parsed.protocol !== 'http:') {
    return [`Expected the "${urlOption}" option to be an https:// URL (got ${JSON.stringify(url)})`];
  }
  const problems: string[] = [];
  if (!options.allowInsecure && !isLoopbackHost(parsed.hostname)) {
    problems.push(
      `Expected the "${urlOption}" option to be an https:// URL (got ${JSON.stringify(url)}): http:// is allowed only to a loopback host (127.0.0.0/8, ::1, localhost) or with "allowInsecure: true", because readings, records and the API key would cross the network in clear text`,
    );
  }
  for (const name of TLS_ONLY) {
    if (options[name] !== undefined) {
      problems.push(
        `The "${name}" option needs an https:// "${urlOption}" (got ${JSON.stringify(url)}): it cannot apply to http://, and the gateway does not fall back to a connection without it`,
      );
    }
  }
  return problems;
}
