import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { certificatePin } from '../../src/index.js';

/** A certificate and its private key, PEM. */
export interface KeyPair {
  cert: string;
  key: string;
  /** `sha256/<base64>` of the certificate's public key. */
  pin: string;
}

/**
 * Certificates for TLS tests, made with the openssl CLI in a temp folder:
 *
 * - `root` → `intermediate` → `server` (127.0.0.1, ::1 and localhost; its `cert` is followed by the intermediate,
 *   as a server sends it), `expired` and `wrongHost` (only `wrong.example.com`);
 * - `otherRoot`, a CA nobody trusts, and `stranger`, a client certificate it issued;
 * - `clientCa` → `client`, a client certificate for mutual TLS.
 */
export interface TestCertificates {
  dir: string;
  root: KeyPair;
  intermediate: KeyPair;
  server: KeyPair;
  expired: KeyPair;
  wrongHost: KeyPair;
  otherRoot: KeyPair;
  clientCa: KeyPair;
  client: KeyPair;
  stranger: KeyPair;
  /** Runs openssl in the folder (for tests of the documented commands). */
  openssl(args: readonly string[], input?: string | Buffer): Buffer;
  /** Removes the folder. */
  remove(): void;
}

const CA_EXTENSIONS = [
  'basicConstraints=critical,CA:TRUE',
  'keyUsage=critical,keyCertSign,cRLSign',
  'subjectKeyIdentifier=hash',
  'authorityKeyIdentifier=keyid:always',
];
const SERVER_EXTENSIONS = [
  'basicConstraints=critical,CA:FALSE',
  'keyUsage=critical,digitalSignature',
  'extendedKeyUsage=serverAuth',
  'subjectKeyIdentifier=hash',
  'authorityKeyIdentifier=keyid:always',
];
const CLIENT_EXTENSIONS = [...SERVER_EXTENSIONS.slice(0, 2), 'extendedKeyUsage=clientAuth'];

/**
 * Makes the {@link TestCertificates} (about 20 openssl runs, well under a second). Make them once per test file,
 * in `beforeAll`, and remove them in `afterAll`.
 */
export function makeCertificates(): TestCertificates {
  const dir = mkdtempSync(join(tmpdir(), 'edge-gateway-certs-'));
  const openssl = (args: readonly string[], input?: string | Buffer): Buffer =>
    execFileSync('openssl', args, { cwd: dir, input, stdio: ['pipe', 'pipe', 'pipe'] });
  const read = (name: string) => readFileSync(join(dir, name), 'utf8');
  const pair = (name: string): KeyPair => {
    const cert = read(`${name}.crt`);
    return { cert, key: read(`${name}.key`), pin: certificatePin(cert) };
  };
  let serial = 1000;

  // A self-signed CA.
  const rootCa = (name: string, subject: string): KeyPair => {
    openssl([
      'req',
      '-x509',
      ...['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes'],
      ...['-keyout', `${name}.key`, '-out', `${name}.crt`, '-days', '3650', '-subj', subject],
      ...CA_EXTENSIONS.slice(0, 3).flatMap((extension) => ['-addext', extension]),
    ]);
    return pair(name);
  };
  // A key and a certificate for it, signed by `issuer`.
  const issue = (name: string, subject: string, issuer: string, extensions: readonly string[], days: number) => {
    openssl([
      'req',
      ...['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes'],
      ...['-keyout', `${name}.key`, '-out', `${name}.csr`, '-subj', subject],
    ]);
    writeFileSync(join(dir, `${name}.ext`), `${extensions.join('\n')}\n`);
    openssl([
      'x509',
      '-req',
      ...['-in', `${name}.csr`, '-CA', `${issuer}.crt`, '-CAkey', `${issuer}.key`, '-set_serial', String(serial++)],
      // A negative count of days makes a certificate that expired the moment it was made.
      ...['-days', String(days), '-extfile', `${name}.ext`, '-out', `${name}.crt`],
    ]);
    return pair(name);
  };

  const root = rootCa('root', '/O=edge-gateway tests/CN=Test Root CA');
  const intermediate = issue(
    'intermediate',
    '/O=edge-gateway tests/CN=Test Intermediate CA',
    'root',
    ['basicConstraints=critical,CA:TRUE,pathlen:0', ...CA_EXTENSIONS.slice(1)],
    3650,
  );
  const serverNames = 'subjectAltName=IP:127.0.0.1,IP:::1,DNS:localhost';
  const leaf = (name: string, san: string, days: number) => {
    const made = issue(name, `/CN=${name}`, 'intermediate', [...SERVER_EXTENSIONS, san], days);
    // As a server sends it: the leaf, then the intermediate the client may not have.
    return { ...made, cert: `${made.cert}${intermediate.cert}` };
  };
  const server = leaf('server', serverNames, 30);
  const expired = leaf('expired', serverNames, -1);
  const wrongHost = leaf('wrong-host', 'subjectAltName=DNS:wrong.example.com', 30);
  const otherRoot = rootCa('other-root', '/O=somebody else/CN=Other Root CA');
  const clientCa = rootCa('client-ca', '/O=edge-gateway tests/CN=Test Client CA');
  const client = issue('client', '/CN=device-001', 'client-ca', CLIENT_EXTENSIONS, 30);
  const stranger = issue('stranger', '/CN=device-001', 'other-root', CLIENT_EXTENSIONS, 30);

  return {
    dir,
    root,
    intermediate,
    server,
    expired,
    wrongHost,
    otherRoot,
    clientCa,
    client,
    stranger,
    openssl,
    remove: () => rmSync(dir, { recursive: true, force: true }),
  };
}
