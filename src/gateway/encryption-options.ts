import { ConfigError } from '../errors.js';
import { type EncryptionKey, encryptionKeyProblem } from '../storage/encryption.js';

/** What `EdgeGateway.enableEncryption()` takes: the seed's `enable_encryption(at_rest=True, in_transit=True)`. */
export interface EncryptionOptions {
  /**
   * Encrypt the local database (the file, its WAL and its journals) with `key`: SQLCipher 4 format. `false` is
   * accepted only while no key is set: a database is never decrypted by this call.
   */
  atRest?: boolean;
  /** The key for `atRest` (see {@link EncryptionKey}); required with `atRest: true`. */
  key?: EncryptionKey;
  /**
   * Insist on TLS to the cloud: an `http://` `cloudUrl` is refused from now on, even to a loopback host and even
   * with `allowInsecure`. (TLS is the default already: `http://` is only allowed to loopback hosts or with
   * `allowInsecure`.) `false` is refused: TLS is turned off only with an `http://` URL and `allowInsecure`.
   */
  inTransit?: boolean;
}

/** What to do, once the options make sense. @internal */
export interface EncryptionPlan {
  /** The key to encrypt the database with; undefined when `atRest` is not asked for. */
  key: EncryptionKey | undefined;
  requireTls: boolean;
}

/** Checks `enableEncryption()`'s options; throws {@link ConfigError} naming each problem. @internal */
export function encryptionPlan(options: EncryptionOptions, currentKey: EncryptionKey | undefined): EncryptionPlan {
  const problems: string[] = [];
  const { atRest, key, inTransit } = options;
  if (atRest === true) {
    if (key === undefined) problems.push('enableEncryption({ atRest: true }) needs a key: { atRest: true, key }');
    else {
      const problem = encryptionKeyProblem('key', key);
      if (problem) problems.push(problem);
    }
  } else if (key !== undefined) {
    problems.push('enableEncryption() was given a key without atRest: true');
  }
  if (atRest === false && currentKey !== undefined) {
    problems.push('The local database is encrypted; enableEncryption({ atRest: false }) does not decrypt it');
  }
  if (inTransit === false) {
    problems.push(
      'enableEncryption({ inTransit: false }) is refused: TLS is turned off only by an http:// cloudUrl (with allowInsecure beyond loopback)',
    );
  }
  if (problems.length > 0) throw new ConfigError(problems);
  return { key: atRest === true ? key : undefined, requireTls: inTransit === true };
}
