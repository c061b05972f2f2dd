import { CloudServer, type CloudServerOptions } from '../cloud/cloud-server.js';
import type { StoredPoint } from '../cloud/cloud-store.js';

/** A reference cloud server on 127.0.0.1 (with an in-memory store unless told otherwise), and the key to reach it. */
export interface ThrowawayCloud {
  server: CloudServer;
  /** Base URL to pass as `cloudUrl`. */
  url: string;
  /** The API key it accepts: the first of `apiKeys` (when given as a key, not a hash), else `test-key`. */
  apiKey: string;
  /** Every reading stored for `deviceId` (all devices when omitted), following cursors to the end. */
  points(deviceId?: string): Promise<StoredPoint[]>;
  close(): Promise<void>;
}

/**
 * Starts a throwaway reference cloud server on a free loopback port, for tests.
 *
 * @example
 * ```ts
 * const cloud = await startCloudServer();
 * const gateway = new EdgeGateway({ deviceId: 'd', cloudUrl: cloud.url, apiKey: cloud.apiKey, localDb: path });
 * // ...
 * await cloud.close();
 * ```
 */
export async function startCloudServer(options: Partial<CloudServerOptions> = {}): Promise<ThrowawayCloud> {
  const first = options.apiKeys?.[0];
  const apiKey = (typeof first === 'string' ? first : first?.key) ?? 'test-key';
  const server = await CloudServer.listen({
    port: 0,
    host: '127.0.0.1',
    ...options,
    apiKeys: options.apiKeys ?? [apiKey],
  });
  return {
    server,
    url: server.url,
    apiKey,
    async points(deviceId) {
      const all: StoredPoint[] = [];
      let cursor: string | undefined;
      do {
        const page = await server.store.query({ deviceId, limit: 10_000, cursor });
        all.push(...page.points);
        cursor = page.nextCursor ?? undefined;
      } while (cursor);
      return all;
    },
    close: () => server.close(),
  };
}
