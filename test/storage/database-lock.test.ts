import { hostname } from 'node:os';
import { fileURLToPath } from 'node:url';
import { afterEach, describe, expect, it } from 'vitest';
import { EdgeGateway, isStorageError, SqliteStorage, type StorageError } from '../../src/index.js';
import { killChildren, TestChild } from '../chaos/lib/child-process.js';
import { defer } from '../helpers/cleanup.js';
import { outboxCount } from '../helpers/gateway.js';
import { tempDbPath } from '../helpers/temp-dir.js';

const HOLDER = fileURLToPath(new URL('../fixtures/hold-database.ts', import.meta.url));

afterEach(killChildren);

/** A gateway in a child process on `path`, with what it printed. */
function spawnHolder(path: string, dbTimeout = 0) {
  const lines: string[] = [];
  const child = new TestChild(HOLDER, [path, String(dbTimeout)], (line) => lines.push(line));
  return { child, lines };
}

/** What `build` throws (a failed test when it throws nothing). */
async function refusal(build: () => Promise<unknown>): Promise<StorageError> {
  try {
    await build();
  } catch (error) {
    expect(isStorageError(error), String(error)).toBe(true);
    return error as StorageError;
  }
  throw new Error('expected a StorageError');
}

describe('a second process on the same database', () => {
  it('gets a StorageError naming the process that holds it, at start', async () => {
    const path = tempDbPath();
    const { child, lines } = spawnHolder(path);
    await child.waitUntil('the holder starts', () => lines.some((line) => line.startsWith('started')));

    const gateway = new EdgeGateway({ deviceId: 'second', localDb: path, dbTimeout: 0 });
    defer(() => gateway.stop());
    const error = await refusal(() => gateway.start());
    expect(error.sqliteCode).toBe('SQLITE_BUSY');
    expect(error.inUseBy).toEqual({ pid: child.process.pid, hostname: hostname(), since: expect.any(String) });
    expect(error.message).toMatch(
      new RegExp(`already in use by another process \\(pid ${child.process.pid} on ${hostname()}, since `),
    );
    expect(gateway.getStatus().running).toBe(false);
  });

  it('refuses the child when this process holds it', async () => {
    const path = tempDbPath();
    const gateway = new EdgeGateway({ deviceId: 'first', localDb: path });
    defer(() => gateway.stop());
    await gateway.start();
    await gateway.sendData({ sensorId: 's', value: 1 });

    const { child, lines } = spawnHolder(path);
    expect((await child.exit()).code).toBe(3);
    const refused = lines.find((line) => line.startsWith('refused '));
    expect(JSON.parse((refused as string).slice('refused '.length))).toMatchObject({
      name: 'StorageError',
      sqliteCode: 'SQLITE_BUSY',
      inUseBy: { pid: process.pid, hostname: hostname() },
      message: expect.stringContaining('already in use by another process'),
    });
    // The refused process touched nothing: the first gateway carries on.
    await gateway.sendData({ sensorId: 's', value: 2 });
    expect(gateway.getStatus().pendingSyncCount).toBe(2);
  });

  it('opens it once the holder was killed with SIGKILL: no stale lock', async () => {
    const path = tempDbPath();
    const { child, lines } = spawnHolder(path);
    await child.waitUntil('the holder starts', () => lines.some((line) => line.startsWith('started')));
    await child.kill();

    const gateway = new EdgeGateway({ deviceId: 'after', localDb: path, dbTimeout: 0 });
    defer(() => gateway.stop());
    await gateway.start();
    expect(gateway.getStatus().running).toBe(true);
  });

  it('waits up to dbTimeout for the holder to let go, then starts', async () => {
    const path = tempDbPath();
    const { child, lines } = spawnHolder(path);
    await child.waitUntil('the holder starts', () => lines.some((line) => line.startsWith('started')));

    const gateway = new EdgeGateway({ deviceId: 'patient', localDb: path, dbTimeout: 20 });
    defer(() => gateway.stop());
    const started = gateway.start();
    // Still waiting: the holder has not let go.
    await new Promise((resolve) => setTimeout(resolve, 300));
    expect(gateway.getStatus().running).toBe(false);
    child.send('stop');
    await started;
    expect(lines).toContain('stopped');
    await gateway.sendData({ sensorId: 's', value: 1 });
    await gateway.stop();
    expect(outboxCount(path)).toBe(1);
  });
});

describe('a second storage in the same process', () => {
  it('is refused while the first is open, and opens once it is closed', () => {
    const path = tempDbPath();
    const first = new SqliteStorage({ path });
    first.open();
    defer(() => first.close());
    const second = new SqliteStorage({ path });
    defer(() => second.close());
    let error: unknown;
    try {
      second.open();
    } catch (caught) {
      error = caught;
    }
    expect(isStorageError(error)).toBe(true);
    expect((error as StorageError).message).toMatch(/already in use by another gateway in this process/);
    expect((error as StorageError).inUseBy?.pid).toBe(process.pid);
    first.close();
    second.open();
    expect(second.replicaId).toBe(first.replicaId);
  });

  it('lets readers of the database alone: only the lock file is locked', () => {
    const path = tempDbPath();
    const storage = new SqliteStorage({ path });
    storage.open();
    defer(() => storage.close());
    storage.append([{ kind: 'reading', sensorId: 's', ts: 1, value: 1, unit: null, tags: null, payload: null }]);
    expect(outboxCount(path)).toBe(1);
  });
});
