import { randomBytes } from 'node:crypto';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { basename, dirname } from 'node:path';
import BetterSqlite3 from 'better-sqlite3-multiple-ciphers';
import { describe, expect, it } from 'vitest';
import {
  EdgeGateway,
  type EdgeGatewayOptions,
  isConfigError,
  isEncryptionKeyError,
  isNotStartedError,
} from '../../src/index.js';
import { keyConnection } from '../../src/storage/encryption.js';
import { defer } from '../helpers/cleanup.js';
import { createGateway, FAST } from '../helpers/gateway.js';
import { startRecordsCloud } from '../helpers/records.js';
import { tempDbPath } from '../helpers/temp-dir.js';

const CANARY = 'CANARY-e4b21d';
const CANARY_VALUE = 7654321.015625;

const rawKey = () => `x'${randomBytes(32).toString('hex')}'`;

const canaryReading = (n: number) => ({
  sensorId: `${CANARY}-boiler-${n}`,
  value: CANARY_VALUE,
  unit: `${CANARY}-unit`,
  tags: { site: `${CANARY}-site` },
  timestamp: new Date(Date.UTC(2024, 0, 1) + n * 1000),
});

/** Files of the database at `path` whose raw bytes hold a reading's or a record's text, or the reading's value. */
function filesHoldingCanary(path: string): string[] {
  const value = Buffer.alloc(8);
  value.writeDoubleBE(CANARY_VALUE);
  return ['', '-wal', '-shm', '-journal']
    .map((suffix) => `${path}${suffix}`)
    .filter((file) => existsSync(file))
    .filter((file) => {
      const bytes = readFileSync(file);
      return bytes.includes(CANARY) || bytes.includes(value);
    })
    .map((file) => basename(file));
}

/** The queued readings of the database at `path`, read with `key` (undefined: none); undefined when it does not open. */
function queuedWith(path: string, key: string | undefined): number | undefined {
  const db = new BetterSqlite3(path, { fileMustExist: true });
  try {
    if (key !== undefined) keyConnection(db, key);
    return db.prepare('SELECT count(*) FROM outbox').pluck().get() as number;
  } catch {
    return undefined;
  } finally {
    db.close();
  }
}

function configIssues(run: () => unknown): string {
  try {
    run();
  } catch (error) {
    if (isConfigError(error)) return error.issues.join('\n');
    throw error;
  }
  throw new Error('expected a ConfigError');
}

async function rejection(promise: Promise<unknown>): Promise<unknown> {
  try {
    await promise;
  } catch (error) {
    return error;
  }
  throw new Error('expected a rejection');
}

describe('EdgeGateway', () => {
  describe('at-rest encryption', () => {
    it('leaves nothing of readings or records in clear in the database, WAL or -shm files, running or stopped', async () => {
      const path = tempDbPath();
      const gateway = createGateway({ localDb: path });
      await gateway.enableEncryption({ atRest: true, key: rawKey() });
      await gateway.start();
      for (let i = 0; i < 50; i++) await gateway.sendData(canaryReading(i));
      await gateway.sendBatch(Array.from({ length: 200 }, (_, i) => canaryReading(100 + i)));
      await gateway.records.put('work-orders', `${CANARY}-order`, { note: `${CANARY}-note` });
      expect(readFileSync(`${path}-wal`).length).toBeGreaterThan(0);
      expect(filesHoldingCanary(path)).toEqual([]);
      await gateway.stop();
      expect(filesHoldingCanary(path)).toEqual([]);
    });

    it('finds them in clear when encryption is off: the scan can fail', async () => {
      const path = tempDbPath();
      const gateway = createGateway({ localDb: path });
      await gateway.start();
      for (let i = 0; i < 50; i++) await gateway.sendData(canaryReading(i));
      await gateway.records.put('work-orders', `${CANARY}-order`, { note: `${CANARY}-note` });
      expect(filesHoldingCanary(path)).toContain(`${basename(path)}-wal`);
      await gateway.stop();
      expect(filesHoldingCanary(path)).toEqual([basename(path)]);
    });

    it('rejects start() with EncryptionKeyError on a wrong key, the file untouched, and starts with the right one', async () => {
      const path = tempDbPath();
      const key = rawKey();
      const first = createGateway({ localDb: path, encryptionKey: key });
      await first.start();
      await first.sendBatch([canaryReading(1), canaryReading(2)]);
      await first.stop();
      const before = readFileSync(path);

      const second = createGateway({ localDb: path, encryptionKey: rawKey() });
      const error = await rejection(second.start());
      expect(isEncryptionKeyError(error)).toBe(true);
      expect(readFileSync(path).equals(before)).toBe(true);
      // The database alone, and its lock file (each open attempt writes its pid there: it is not the database).
      expect(readdirSync(dirname(path)).sort()).toEqual([basename(path), `${basename(path)}.lock`]);
      expect(second.getStatus().running).toBe(false);

      second.configure({ encryptionKey: key });
      await second.start();
      expect(second.getStatus().pendingSyncCount).toBe(2);
    });

    it('encrypts a plaintext database in place at start() when given a key, keeping its queue and replicaId', async () => {
      const path = tempDbPath();
      const plain = createGateway({ localDb: path });
      await plain.start();
      await plain.sendBatch(Array.from({ length: 120 }, (_, i) => canaryReading(i)));
      const { replicaId } = plain.getStatus();
      await plain.stop();
      expect(filesHoldingCanary(path)).toEqual([basename(path)]);

      const logged: string[] = [];
      const logger = {
        debug: () => undefined,
        info: (_: object, message: string) => logged.push(message),
        warn: (_: object, message: string) => logged.push(message),
        error: (_: object, message: string) => logged.push(message),
      };
      const key = rawKey();
      const gateway = createGateway({ localDb: path, encryptionKey: key, logger });
      await gateway.start();
      expect(gateway.getStatus()).toMatchObject({ replicaId, pendingSyncCount: 120 });
      expect(logged).toContain('the plaintext local database was encrypted in place');
      await gateway.stop();
      expect(filesHoldingCanary(path)).toEqual([]);
      expect(queuedWith(path, key)).toBe(120);
      expect(logged.join('\n')).not.toContain(key.slice(2, -1));
    });

    describe('.enableEncryption()', () => {
      it('after start(), encrypts the running plaintext database, which goes on taking readings', async () => {
        const path = tempDbPath();
        const gateway = createGateway({ localDb: path });
        await gateway.start();
        await gateway.sendBatch(Array.from({ length: 30 }, (_, i) => canaryReading(i)));
        const key = rawKey();
        await gateway.enableEncryption({ atRest: true, key });
        await gateway.enableEncryption({ atRest: true, key }); // the same key again: nothing to do
        await gateway.sendData(canaryReading(30));
        expect(gateway.getStatus().pendingSyncCount).toBe(31);
        await gateway.stop();
        expect(filesHoldingCanary(path)).toEqual([]);
        expect(queuedWith(path, key)).toBe(31);
      });

      it('refuses what it cannot do, naming why', async () => {
        const gateway = createGateway();
        expect(await rejection(gateway.enableEncryption({ atRest: true }))).toMatchObject({
          name: 'ConfigError',
          message: expect.stringMatching(/needs a key/),
        });
        expect(await rejection(gateway.enableEncryption({ inTransit: false }))).toMatchObject({ name: 'ConfigError' });
        await gateway.enableEncryption({ atRest: true, key: rawKey() });
        expect(await rejection(gateway.enableEncryption({ atRest: false }))).toMatchObject({
          message: expect.stringMatching(/does not decrypt/),
        });
        await gateway.start();
        expect(await rejection(gateway.enableEncryption({ atRest: true, key: rawKey() }))).toMatchObject({
          message: expect.stringMatching(/use rotateEncryptionKey/),
        });
      });

      it('with inTransit: true, refuses an http:// cloudUrl, now and later, even to loopback', async () => {
        const local = createGateway({ cloudUrl: 'http://127.0.0.1:9/api/v1', syncInterval: 3600 });
        expect(await rejection(local.enableEncryption({ inTransit: true }))).toMatchObject({
          message: expect.stringMatching(/https:\/\//),
        });
        const gateway = createGateway({ cloudUrl: 'https://cloud.example.com/api/v1' });
        await gateway.enableEncryption({ atRest: true, key: rawKey(), inTransit: true });
        expect(configIssues(() => gateway.configure({ cloudUrl: 'http://127.0.0.1:9/api/v1' }))).toMatch(
          /refuses http:\/\//,
        );
        expect(() => gateway.configure({ cloudUrl: 'https://other.example.com/api/v1' })).not.toThrow();
      });
    });

    describe('.rotateEncryptionKey()', () => {
      it('re-keys while syncing: every reading and record edit reaches the cloud once, and only the new key opens the file', async () => {
        const cloud = await startRecordsCloud();
        const path = tempDbPath();
        const [oldKey, newKey] = [rawKey(), rawKey()];
        const gateway = new EdgeGateway({
          deviceId: `device-${randomBytes(4).toString('hex')}`,
          localDb: path,
          cloudUrl: cloud.url,
          apiKey: cloud.apiKey,
          ...FAST,
          syncStrategy: 'fixed-interval',
          syncInterval: 3600,
          encryptionKey: oldKey,
        });
        defer(() => gateway.stop());
        await gateway.start();
        await gateway.sendBatch(Array.from({ length: 40 }, (_, i) => canaryReading(i)));
        await gateway.records.put('setpoints', 'boiler-1', { target: 70 });
        await gateway.forceSync();
        await gateway.sendBatch(Array.from({ length: 25 }, (_, i) => canaryReading(40 + i)));

        await gateway.rotateEncryptionKey(newKey);
        await gateway.records.put('setpoints', 'boiler-2', { target: 71 });
        await gateway.sendData(canaryReading(65));
        const result = await gateway.forceSync();
        expect(result.remaining).toBe(0);

        const sensors = (await cloud.points(gateway.options.deviceId)).map((p) => p.sensorId);
        expect(new Set(sensors).size).toBe(66);
        expect(sensors).toHaveLength(66);
        expect(await cloud.get('setpoints', 'boiler-2')).toMatchObject({ value: { target: 71 } });
        await gateway.stop();
        expect(queuedWith(path, oldKey)).toBeUndefined();
        expect(queuedWith(path, newKey)).toBe(0);
        expect(filesHoldingCanary(path)).toEqual([]);
      });

      it('refuses before start(), on a plaintext database, and keys of the wrong form; the same key is a no-op', async () => {
        const key = rawKey();
        const gateway = createGateway({ encryptionKey: key });
        expect(isNotStartedError(await rejection(gateway.rotateEncryptionKey(rawKey())))).toBe(true);
        await gateway.start();
        expect(await rejection(gateway.rotateEncryptionKey("x'00'"))).toMatchObject({ name: 'ConfigError' });
        await gateway.rotateEncryptionKey(key);
        const plain = createGateway();
        await plain.start();
        expect(await rejection(plain.rotateEncryptionKey(rawKey()))).toMatchObject({
          message: expect.stringMatching(/not encrypted/),
        });
      });

      it('keeps the database lock and the retention policy across the rotation', async () => {
        const path = tempDbPath();
        const gateway = createGateway({
          localDb: path,
          encryptionKey: rawKey(),
          maxOfflineQueueSize: 50,
          retention: { cleanupStrategy: 'drop-oldest' },
        });
        const dropped: number[] = [];
        gateway.on('dropped', (event) => dropped.push(event.count));
        await gateway.start();
        await gateway.sendBatch(Array.from({ length: 50 }, (_, i) => canaryReading(i)));

        await gateway.rotateEncryptionKey(rawKey());
        await gateway.sendBatch(Array.from({ length: 5 }, (_, i) => canaryReading(50 + i)));
        expect(dropped).toEqual([5]); // drop-oldest still in force on the reopened database, and reported
        expect(gateway.getStatus().dropped['drop-oldest']).toBe(5);
        await expect(gateway.runCleanup()).resolves.toMatchObject({ removed: { 'drop-oldest': 0 } });

        const second = createGateway({ localDb: path, encryptionKey: rawKey(), dbTimeout: 0 });
        expect(await rejection(second.start())).toMatchObject({
          name: 'StorageError',
          sqliteCode: 'SQLITE_BUSY',
          inUseBy: expect.objectContaining({ pid: process.pid }),
        });
      });

      it('lets configure() change the key only before start()', async () => {
        const gateway = createGateway({ encryptionKey: rawKey() });
        gateway.configure({ encryptionKey: rawKey() });
        await gateway.start();
        expect(configIssues(() => gateway.configure({ encryptionKey: rawKey() }))).toMatch(/rotateEncryptionKey/);
      });
    });

    it('finishes an interrupted rotation at start() with previousEncryptionKeys', async () => {
      const path = tempDbPath();
      const [oldKey, newKey] = [rawKey(), rawKey()];
      const first = createGateway({ localDb: path, encryptionKey: oldKey });
      await first.start();
      await first.sendBatch([canaryReading(1)]);
      await first.stop();
      const gateway = createGateway({ localDb: path, encryptionKey: newKey, previousEncryptionKeys: [oldKey] });
      await gateway.start();
      expect(gateway.getStatus().pendingSyncCount).toBe(1);
      await gateway.stop();
      expect(queuedWith(path, newKey)).toBe(1);
      expect(queuedWith(path, oldKey)).toBeUndefined();
    });

    it('keeps keys out of options, errors and messages', () => {
      const key = `x'${'ab'.repeat(32)}'`;
      const gateway = createGateway({ encryptionKey: key, previousEncryptionKeys: ['an old passphrase'] });
      expect(JSON.stringify(gateway.options)).not.toContain('abab');
      expect(JSON.stringify(gateway.options)).not.toContain('old passphrase');
      const bad: EdgeGatewayOptions = { deviceId: 'd', encryptionKey: "x'not-a-key-secret'" };
      const issues = configIssues(() => new EdgeGateway(bad));
      expect(issues).toMatch(/encryptionKey/);
      expect(issues).not.toContain('not-a-key-secret');
      expect(configIssues(() => new EdgeGateway({ deviceId: 'd', encryptionKey: 42 as unknown as string }))).toMatch(
        /encryptionKey/,
      );
      expect(configIssues(() => new EdgeGateway({ deviceId: 'd', previousEncryptionKeys: [rawKey()] }))).toMatch(
        /needs "encryptionKey"/,
      );
      // The option redaction of secret-looking names (options.ts) covers both names, the plural one too.
      const wrongShape = configIssues(
        () =>
          new EdgeGateway({ deviceId: 'd', encryptionKey: key, previousEncryptionKeys: 'old-secret-words' as never }),
      );
      expect(wrongShape).toMatch(/previousEncryptionKeys.*not shown/);
      expect(wrongShape).not.toContain('old-secret-words');
      expect(configIssues(() => new EdgeGateway({ deviceId: 'd', localDb: ':memory:', encryptionKey: key }))).toMatch(
        /:memory:/,
      );
    });
  });
});
