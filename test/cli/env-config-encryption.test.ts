import { randomBytes } from 'node:crypto';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import BetterSqlite3 from 'better-sqlite3-multiple-ciphers';
import { describe, expect, it } from 'vitest';
import { type CliIo, runCli } from '../../src/cli/cli.js';
import { databaseOptionsFrom, gatewayOptionsFrom, parseEnvConfig } from '../../src/cli/env-config.js';
import { EdgeGateway, isConfigError } from '../../src/index.js';
import { keyConnection } from '../../src/storage/encryption.js';
import { tempDir } from '../helpers/temp-dir.js';

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

const rawKey = () => `x'${randomBytes(32).toString('hex')}'`;

function captureIo(): CliIo & { lines: string[]; errors: string[] } {
  const lines: string[] = [];
  const errors: string[] = [];
  return {
    lines,
    errors,
    out: (line) => lines.push(line),
    err: (line) => errors.push(line),
    untilSignal: () => new Promise(() => {}),
  };
}

async function initDb(env: Record<string, string>): Promise<{ code: number; io: ReturnType<typeof captureIo> }> {
  const saved = { ...process.env };
  Object.assign(process.env, { DEVICE_ID: 'cli-encryption', ...env });
  try {
    const io = captureIo();
    const code = await runCli(['--init-db', '--env', join(tempDir(), 'absent.env')], io);
    return { code, io };
  } finally {
    for (const name of Object.keys(env)) delete process.env[name];
    Object.assign(process.env, saved);
  }
}

describe('CLI configuration of at-rest encryption', () => {
  it('passes EDGE_DB_KEY and EDGE_DB_PREVIOUS_KEY to the gateway', () => {
    expect(options({ EDGE_DB_KEY: 'current passphrase', EDGE_DB_PREVIOUS_KEY: 'old passphrase' })).toMatchObject({
      encryptionKey: 'current passphrase',
      previousEncryptionKeys: ['old passphrase'],
    });
    expect(options({})).not.toHaveProperty('encryptionKey');
  });

  it('reads the key from EDGE_DB_KEY_FILE, without the line end an editor adds', () => {
    const file = join(tempDir(), 'db.key');
    const key = rawKey();
    writeFileSync(file, `${key}\n`, { mode: 0o600 });
    expect(databaseOptionsFrom(parseEnvConfig({ DEVICE_ID: 'd', EDGE_DB_KEY_FILE: file }))).toMatchObject({
      encryptionKey: key,
    });
  });

  it('refuses both EDGE_DB_KEY and EDGE_DB_KEY_FILE, a previous key alone, and a key file it cannot use', () => {
    expect(configIssues(() => options({ EDGE_DB_KEY: 'a', EDGE_DB_KEY_FILE: '/x' }))).toMatch(/not both/);
    expect(configIssues(() => options({ EDGE_DB_PREVIOUS_KEY: 'old' }))).toMatch(/needs EDGE_DB_KEY/);
    expect(configIssues(() => options({ EDGE_DB_KEY_FILE: join(tempDir(), 'absent.key') }))).toMatch(
      /Could not read EDGE_DB_KEY_FILE/,
    );
    const file = join(tempDir(), 'two-lines.key');
    writeFileSync(file, 'first-secret-line\nsecond-secret-line\n');
    const issues = configIssues(() => options({ EDGE_DB_KEY_FILE: file }));
    expect(issues).toMatch(/on one line/);
    expect(issues).not.toContain('secret-line');
  });

  it('never shows a key it refuses', () => {
    const issues = configIssues(() => new EdgeGateway(options({ EDGE_DB_KEY: "x'short-secret'" })));
    expect(issues).toMatch(/encryptionKey/);
    expect(issues).not.toContain('short-secret');
  });

  it('creates an encrypted database with --init-db and EDGE_DB_KEY, and refuses it to a wrong key', async () => {
    const path = join(tempDir(), 'edge.db');
    const key = rawKey();
    const made = await initDb({ LOCAL_DB_PATH: path, EDGE_DB_KEY: key });
    expect(made.code).toBe(0);
    const db = new BetterSqlite3(path, { fileMustExist: true });
    expect(() => db.prepare('SELECT count(*) FROM meta').get()).toThrow(/not a database/);
    db.close();
    const keyed = new BetterSqlite3(path, { fileMustExist: true });
    keyConnection(keyed, key);
    expect(keyed.prepare("SELECT value FROM meta WHERE key = 'replica_id'").pluck().get()).toMatch(/^[0-9a-f-]{36}$/);
    keyed.close();

    const before = readFileSync(path);
    const wrong = await initDb({ LOCAL_DB_PATH: path, EDGE_DB_KEY: rawKey() });
    expect(wrong.code).toBe(1);
    expect(wrong.io.errors.join('\n')).toMatch(/cannot be decrypted with the encryption key given/);
    expect(readFileSync(path).equals(before)).toBe(true);
  });
});
