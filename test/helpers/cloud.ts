import type { StoredPoint, TelemetryStats } from '../../src/cloud/index.js';
import { startCloudServer } from '../../src/testing/index.js';

/** A cloud the integration tests sync to, as a gateway and a test see it. */
export interface TestCloud {
  /** Base URL to pass as `cloudUrl`. */
  url: string;
  apiKey: string;
  /** True when the tests run against a deployed server (`EDGE_CLOUD_URL` and `EDGE_CLOUD_API_KEY` set). */
  deployed: boolean;
  /** Every reading the cloud stored for `deviceId`, oldest first, following cursors to the end. */
  points(deviceId: string): Promise<StoredPoint[]>;
  /** What the cloud counts for `deviceId`. */
  stats(deviceId: string): Promise<TelemetryStats>;
  /** Closes a throwaway server; leaves a deployed one alone. */
  close(): Promise<void>;
}

async function getJson<T>(url: string, apiKey: string): Promise<T> {
  const response = await fetch(url, { headers: { authorization: `Bearer ${apiKey}` } });
  if (!response.ok) throw new Error(`GET ${url} answered ${response.status}: ${await response.text()}`);
  return (await response.json()) as T;
}

/**
 * The cloud for integration tests: the deployed server named by `EDGE_CLOUD_URL` and `EDGE_CLOUD_API_KEY` when
 * both are set, else a throwaway reference server on 127.0.0.1. Either way readings are read back over HTTP, as an
 * operator would, so use a unique deviceId per test.
 */
export async function startTestCloud(): Promise<TestCloud> {
  const deployedUrl = process.env.EDGE_CLOUD_URL;
  const deployedKey = process.env.EDGE_CLOUD_API_KEY;
  const deployed = Boolean(deployedUrl && deployedKey);
  const throwaway = deployedUrl && deployedKey ? undefined : await startCloudServer();
  const url = (throwaway ? throwaway.url : (deployedUrl as string)).replace(/\/+$/, '');
  const apiKey = throwaway ? throwaway.apiKey : (deployedKey as string);
  return {
    url,
    apiKey,
    deployed,
    async points(deviceId) {
      const all: StoredPoint[] = [];
      let cursor: string | null = null;
      do {
        const query = new URLSearchParams({ deviceId, limit: '1000' });
        if (cursor) query.set('cursor', cursor);
        const page: { points: StoredPoint[]; nextCursor: string | null } = await getJson(
          `${url}/telemetry?${query}`,
          apiKey,
        );
        all.push(...page.points);
        cursor = page.nextCursor;
      } while (cursor);
      return all;
    },
    stats: (deviceId) => getJson<TelemetryStats>(`${url}/telemetry/stats?${new URLSearchParams({ deviceId })}`, apiKey),
    close: async () => {
      await throwaway?.close();
    },
  };
}
