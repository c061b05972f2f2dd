import { join } from 'node:path';
import { afterAll, beforeAll, beforeEach } from 'vitest';
import { type CloudServerOptions, type CloudStore, RedisCloudStore, SqliteCloudStore } from '../../src/cloud/index.js';
import { findRedisServer, type RedisServer, startRedisServer } from './redis-server.js';
import { tempDir } from './temp-dir.js';

/** The stores the cloud server's test suite runs on, each through the whole suite. */
export type CloudStoreKind = 'sqlite' | 'redis';
export const CLOUD_STORE_KINDS: readonly CloudStoreKind[] = ['sqlite', 'redis'];

/** A store for the tests of one `describe` block. */
export interface CloudStoreUnderTest {
  readonly kind: CloudStoreKind;
  /**
   * `CloudServer.listen` options choosing the store: a fresh one in each test. Within a test, one `name` is one store
   * (a SQLite file, a Redis database), so that a server can be closed and listen again on what it stored; without a
   * name, SQLite is in memory (fresh on every call) and Redis is database 0.
   */
  options(name?: string): Partial<CloudServerOptions>;
  /**
   * A store of this kind opened by hand, with store options `CloudServer.listen` cannot pass, where `options(name)`
   * puts it. The caller closes it (a server given it as `store` does, on close).
   */
  open(storeOptions: { pullScanRows?: number }, name?: string): Promise<CloudStore>;
  /** The Redis server under test (redis only). */
  readonly redis: RedisServer | undefined;
}

const REDIS_BINARY = findRedisServer();
const IN_CI = process.env.CI === 'true';
let warned = false;

/** Whether the redis half of the suite can run here; outside CI a missing redis-server is a reasoned skip. */
export function redisAvailable(): boolean {
  if (REDIS_BINARY || IN_CI) return true;
  if (!warned) {
    warned = true;
    console.warn(
      [
        '',
        '!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!',
        '!! SKIPPING the Redis store tests: no redis-server on PATH.',
        '!! They prove that the Redis store keeps the semantics of the SQLite store, through the same suite.',
        '!! Install it (apt-get install redis-server) to run them. In CI (CI=true) they run, and fail without it.',
        '!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!',
        '',
      ].join('\n'),
    );
  }
  return false;
}

/**
 * Registers the hooks of one store for the enclosing `describe`: for redis, a redis-server of its own for the block
 * (started before its first test, FLUSHALL'd before each, stopped after the last). Use it inside
 * `describe.skipIf(kind === 'redis' && !redisAvailable())`. In CI a missing redis-server fails the block.
 */
export function useCloudStore(kind: CloudStoreKind): CloudStoreUnderTest {
  let redis: RedisServer | undefined;
  let names = new Map<string, number>();
  let dir: string | undefined;
  if (kind === 'redis') {
    beforeAll(async () => {
      if (!REDIS_BINARY) throw new Error('CI=true and no redis-server on PATH: .ci/run must install redis-server');
      redis = await startRedisServer({ binary: REDIS_BINARY });
    });
    afterAll(async () => {
      await redis?.stop();
    });
  }
  beforeEach(async () => {
    names = new Map();
    dir = undefined;
    await redis?.flush();
  });
  return {
    kind,
    get redis() {
      return redis;
    },
    options(name) {
      if (kind === 'sqlite') {
        if (name === undefined) return { dbPath: ':memory:' };
        dir ??= tempDir('edge-gateway-cloud-');
        return { dbPath: join(dir, 'nested', `${name}.db`) };
      }
      if (!redis) throw new Error('the redis-server of this block is not running');
      let db = 0;
      if (name !== undefined) {
        db = names.get(name) ?? names.size + 1;
        names.set(name, db);
      }
      return { redisUrl: `${redis.url}/${db}` };
    },
    async open(storeOptions, name) {
      const { dbPath, redisUrl } = this.options(name);
      if (dbPath !== undefined) return new SqliteCloudStore(dbPath, storeOptions);
      return RedisCloudStore.connect({ url: redisUrl as string, ...storeOptions });
    },
  };
}
