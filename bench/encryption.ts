/**
 * The encryption section of `npm run bench`: what at-rest encryption (SQLCipher 4 format, a raw key) costs durable
 * ingest, as ratios to the same work in plaintext measured in the same run: the raw driver's 1000-row inserts,
 * awaited `sendBatch()` of 1000 and awaited `sendData()` from many callers; then what a key rotation and the
 * opening of the database cost, with a raw key and with a passphrase.
 */
import { statSync } from 'node:fs';
import BetterSqlite3 from 'better-sqlite3-multiple-ciphers';
import { EdgeGateway, type EncryptionKey, SqliteStorage } from '../src/index.js';
import { keyConnection } from '../src/storage/encryption.js';
import { MIGRATIONS } from '../src/storage/migrations.js';

const RAW_KEY = `x'${'5e'.repeat(32)}'`;
const PASSPHRASE = 'a passphrase of the bench';

const reading = (i: number) => ({
  sensorId: `sensor-${i % 10}`,
  value: 20 + (i % 1000) / 100,
  unit: 'celsius',
  tags: { location: 'warehouse-A' },
  timestamp: 1_780_000_000_000 + i,
});

function rawInserts(path: string, key: EncryptionKey | undefined, n: number): number {
  const db = new BetterSqlite3(path);
  if (key !== undefined) keyConnection(db, key);
  db.pragma('journal_mode = WAL');
  db.pragma('synchronous = FULL');
  db.exec(MIGRATIONS[0] as string);
  const insert = db.prepare(
    'INSERT INTO outbox (seq, kind, sensor_id, ts, value, unit, tags, payload) VALUES (?, ?, ?, ?, ?, ?, ?, ?)',
  );
  const tags = JSON.stringify({ location: 'warehouse-A' });
  const write = db.transaction((from: number, to: number) => {
    for (let i = from; i < to; i++) {
      const r = reading(i);
      insert.run(i + 1, 0, r.sensorId, r.timestamp, r.value, r.unit, tags, null);
    }
  });
  const t0 = performance.now();
  for (let i = 0; i < n; i += 1000) write(i, Math.min(n, i + 1000));
  const seconds = (performance.now() - t0) / 1000;
  db.close();
  return n / seconds;
}

async function viaSendBatch(path: string, key: EncryptionKey | undefined, n: number): Promise<number> {
  const gateway = new EdgeGateway({
    deviceId: 'bench',
    localDb: path,
    maxOfflineQueueSize: 10 * n,
    encryptionKey: key,
  });
  await gateway.start();
  const batch = Array.from({ length: 1000 }, (_, i) => reading(i));
  const t0 = performance.now();
  for (let i = 0; i < n; i += 1000) await gateway.sendBatch(batch);
  const seconds = (performance.now() - t0) / 1000;
  await gateway.stop();
  return n / seconds;
}

async function viaSendData(path: string, key: EncryptionKey | undefined, n: number, callers: number): Promise<number> {
  const gateway = new EdgeGateway({
    deviceId: 'bench',
    localDb: path,
    maxOfflineQueueSize: 10 * n,
    encryptionKey: key,
  });
  await gateway.start();
  let next = 0;
  const t0 = performance.now();
  await Promise.all(
    Array.from({ length: callers }, async () => {
      for (let i = next++; i < n; i = next++) await gateway.sendData(reading(i));
    }),
  );
  const seconds = (performance.now() - t0) / 1000;
  await gateway.stop();
  return n / seconds;
}

/** Milliseconds to open a storage holding `n` readings, and to re-key it once (to encrypt it, when plaintext). */
function openAndRekey(path: string, key: EncryptionKey | undefined, next: EncryptionKey, n: number) {
  const seed = new SqliteStorage({ path, encryptionKey: key });
  seed.open();
  for (let i = 0; i < n; i += 5000) {
    seed.append(
      Array.from({ length: Math.min(5000, n - i) }, (_, j) => {
        const r = reading(i + j);
        return {
          kind: 'reading' as const,
          sensorId: r.sensorId,
          ts: r.timestamp,
          value: r.value,
          unit: r.unit,
          tags: JSON.stringify(r.tags),
          payload: null,
        };
      }),
    );
  }
  seed.close();
  const storage = new SqliteStorage({ path, encryptionKey: key });
  let t0 = performance.now();
  storage.open();
  const openMs = performance.now() - t0;
  t0 = performance.now();
  storage.rekey(next);
  const rekeyMs = performance.now() - t0;
  storage.close();
  return { openMs, rekeyMs, mb: statSync(path).size / 1048576 };
}

const median = (values: number[]) => [...values].sort((a, b) => a - b)[Math.floor(values.length / 2)] as number;
const fmt = (n: number) => `${Math.round(n).toLocaleString('en-US')}/s`;

export async function encryptionSection(
  n: number,
  rounds: number,
  callers: number,
  freshPath: (name: string) => string,
): Promise<void> {
  console.log(`## At-rest encryption: ${n.toLocaleString('en-US')} readings, median of ${rounds} rounds\n`);
  const runs = {
    raw: { plain: [] as number[], encrypted: [] as number[] },
    sendBatch: { plain: [] as number[], encrypted: [] as number[] },
    sendData: { plain: [] as number[], encrypted: [] as number[] },
  };
  for (let round = 0; round < rounds; round++) {
    // Interleaved, so that a noisy neighbour weighs on both sides alike.
    for (const [side, key] of [
      ['plain', undefined],
      ['encrypted', RAW_KEY],
    ] as const) {
      runs.raw[side].push(rawInserts(freshPath(`raw-${side}.db`), key, n));
      runs.sendBatch[side].push(await viaSendBatch(freshPath(`batch-${side}.db`), key, n));
      runs.sendData[side].push(await viaSendData(freshPath(`data-${side}.db`), key, n, callers));
    }
  }
  console.log('| what | plaintext | encrypted | encrypted / plaintext |');
  console.log('|---|---:|---:|---:|');
  const table = [
    ['raw driver insert, 1000-row transactions', runs.raw],
    ['awaited sendBatch() of 1000', runs.sendBatch],
    [`awaited sendData(), ${callers} concurrent callers`, runs.sendData],
  ] as const;
  for (const [name, run] of table) {
    const plain = median(run.plain);
    const encrypted = median(run.encrypted);
    console.log(`| ${name} | ${fmt(plain)} | ${fmt(encrypted)} | ${(encrypted / plain).toFixed(2)} |`);
  }
  const queued = 300_000;
  const plain = openAndRekey(freshPath('rekey-plain.db'), undefined, RAW_KEY, queued);
  const raw = openAndRekey(freshPath('rekey-raw.db'), RAW_KEY, `x'${'7a'.repeat(32)}'`, queued);
  const pass = openAndRekey(freshPath('rekey-pass.db'), PASSPHRASE, `${PASSPHRASE} 2`, queued);
  console.log(
    `\nWith ${queued.toLocaleString('en-US')} readings queued (${raw.mb.toFixed(1)} MB): open() (with its quick_check) takes ${Math.round(plain.openMs)} ms in plaintext, ${Math.round(raw.openMs)} ms with a raw key, ${Math.round(pass.openMs)} ms with a passphrase (PBKDF2, 256,000 iterations); rekey() (copy, re-key, check, sync, rename, reopen) takes ${Math.round(raw.rekeyMs)} ms with raw keys, ${Math.round(pass.rekeyMs)} ms with passphrases, and encrypting the plaintext database ${Math.round(plain.rekeyMs)} ms.\n`,
  );
  console.log('Durability is the same on both sides: WAL, synchronous=FULL. The key is a raw key (no stretching).\n');
}
