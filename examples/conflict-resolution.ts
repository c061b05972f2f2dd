/**
 * Shared records edited on both sides while the edge is offline, and how each conflict strategy settles them.
 *
 * Run: npx tsx examples/conflict-resolution.ts (starts its own reference cloud server on 127.0.0.1), or set
 * CLOUD_API_URL and CLOUD_API_KEY to use yours.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { type ConflictStrategy, EdgeGateway, type SyncRecord } from 'edge-gateway';
import { startCloudServer } from 'edge-gateway/testing';

const own = process.env.CLOUD_API_URL ? undefined : await startCloudServer();
const cloudUrl = process.env.CLOUD_API_URL ?? (own?.url as string);
const apiKey = process.env.CLOUD_API_KEY ?? (own?.apiKey as string);
const dir = mkdtempSync(join(tmpdir(), 'edge-gateway-conflicts-'));

/** An operator changes a record in the cloud, as another system would: `PUT /records/{collection}/{key}`. */
async function editInCloud(collection: string, key: string, value: unknown): Promise<void> {
  const response = await fetch(`${cloudUrl}/records/${collection}/${encodeURIComponent(key)}`, {
    method: 'PUT',
    headers: { authorization: `Bearer ${apiKey}`, 'content-type': 'application/json' },
    body: JSON.stringify({ value }),
  });
  if (!response.ok) throw new Error(`the cloud answered ${response.status}`);
}

const strategies: (ConflictStrategy | 'custom')[] = ['last-write-wins', 'cloud-wins', 'edge-wins', 'custom'];
try {
  for (const [i, strategy] of strategies.entries()) {
    const gateway = new EdgeGateway({
      deviceId: 'boiler-house-1',
      localDb: join(dir, `${strategy}.db`),
      cloudUrl,
      apiKey,
      syncStrategy: 'fixed-interval',
      syncInterval: 3600, // this example decides when to sync
    });
    if (strategy === 'custom') {
      // Keep the higher target and note that both sides were merged.
      gateway.setConflictResolver(async (edge: SyncRecord, cloud: SyncRecord) => {
        const e = edge.value as { target: number };
        const c = cloud.value as { target: number };
        return { value: { target: Math.max(e.target, c.target), mergedFrom: [e.target, c.target] } };
      });
    } else {
      gateway.setConflictResolutionStrategy(strategy);
    }
    gateway.on('conflict', (c) =>
      console.log(`  conflict on ${c.collection}/${c.key}: ${c.strategy} chose ${c.winner}`),
    );
    await gateway.start();
    const key = `boiler-${i + 1}`;

    await gateway.records.put('setpoints', key, { target: 70 });
    await gateway.forceSync(); // both sides now hold version 1

    // The link drops. The operator sets 68 in the cloud; a technician sets 74 on site, a little later.
    await editInCloud('setpoints', key, { target: 68 });
    await new Promise((resolve) => setTimeout(resolve, 20));
    await gateway.records.put('setpoints', key, { target: 74 });

    await gateway.forceSync(); // the link is back
    const settled = gateway.records.get('setpoints', key);
    console.log(`${strategy}: ${key} settles at ${JSON.stringify(settled?.value)} (version ${settled?.version})`);
    await gateway.stop();
  }
} finally {
  await own?.close();
  rmSync(dir, { recursive: true, force: true });
}
