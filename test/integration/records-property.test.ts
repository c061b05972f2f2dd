import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import type { EdgeGateway, SyncRecord } from '../../src/index.js';
import { CHAOS_SEED } from '../chaos/lib/chaos-config.js';
import { FaultProxy } from '../chaos/lib/fault-proxy.js';
import { heldBy, heldByCloud, recordsGateway, sharedClock, startRecordsCloud } from '../helpers/records.js';

const C = 'config';
const KEYS = ['alpha', 'beta'] as const;
const REPLICAS = 3;

type Command =
  | { t: 'edit'; g: number; key: number; value: number }
  | { t: 'delete'; g: number; key: number }
  | { t: 'cloud'; key: number; value: number | null }
  | { t: 'sync'; g: number }
  /** A sync whose answers are lost after the cloud committed: the gateway must resend, the cloud must not apply twice. */
  | { t: 'cut'; g: number }
  | { t: 'restart'; g: number };

const gateway = fc.integer({ min: 0, max: REPLICAS - 1 });
const key = fc.integer({ min: 0, max: KEYS.length - 1 });
const command: fc.Arbitrary<Command> = fc.oneof(
  { weight: 4, arbitrary: fc.record({ t: fc.constant('edit' as const), g: gateway, key, value: fc.nat(1000) }) },
  { weight: 1, arbitrary: fc.record({ t: fc.constant('delete' as const), g: gateway, key }) },
  {
    weight: 2,
    arbitrary: fc.record({ t: fc.constant('cloud' as const), key, value: fc.option(fc.nat(1000), { freq: 4 }) }),
  },
  { weight: 3, arbitrary: fc.record({ t: fc.constant('sync' as const), g: gateway }) },
  { weight: 1, arbitrary: fc.record({ t: fc.constant('cut' as const), g: gateway }) },
  { weight: 1, arbitrary: fc.record({ t: fc.constant('restart' as const), g: gateway }) },
);

/** A write anyone made, as last-write-wins ranks it. */
interface Write {
  hlc: string;
  origin: string;
  value: unknown;
}

const later = (a: Write, b: Write) => (a.hlc !== b.hlc ? a.hlc > b.hlc : a.origin > b.origin);

describe('records sync, property', () => {
  it('after random edits, syncs, lost answers and restarts on three gateways and the cloud, everyone holds the last write', async () => {
    await fc.assert(
      fc.asyncProperty(fc.array(command, { minLength: 4, maxLength: 24 }), async (commands) => {
        const clock = sharedClock();
        const cloud = await startRecordsCloud(clock);
        const target = new URL(cloud.url);
        const proxies: FaultProxy[] = [];
        const edges: EdgeGateway[] = [];
        const writes = new Map<string, Write[]>(KEYS.map((k) => [k, []]));
        const watchLocal = (g: EdgeGateway) =>
          g.records.watch(C, (record: SyncRecord, change) => {
            if (change.source !== 'local') return;
            const value = record.deleted ? 'deleted' : record.value;
            writes.get(record.key)?.push({ hlc: record.hlc, origin: record.origin, value });
          });
        try {
          for (let i = 0; i < REPLICAS; i++) {
            const proxy = await FaultProxy.start({
              target: { host: target.hostname, port: Number(target.port) },
              seed: CHAOS_SEED + i,
            });
            proxies.push(proxy);
            const g = await recordsGateway(cloud, { clock: clock.read, cloudUrl: proxy.url() });
            watchLocal(g);
            edges.push(g);
          }
          for (const c of commands) {
            clock.advance(10);
            switch (c.t) {
              case 'edit':
                await edges[c.g]?.records.put(C, KEYS[c.key] as string, c.value);
                break;
              case 'delete':
                await edges[c.g]?.records.delete(C, KEYS[c.key] as string);
                break;
              case 'cloud': {
                const k = KEYS[c.key] as string;
                const record = c.value === null ? await cloud.remove(C, k) : await cloud.put(C, k, c.value);
                writes.get(k)?.push({ hlc: record.hlc, origin: record.origin, value: c.value ?? 'deleted' });
                break;
              }
              case 'sync':
                await edges[c.g]?.forceSync();
                break;
              case 'cut':
                proxies[c.g]?.set({ kind: 'lose-response' });
                await edges[c.g]?.forceSync();
                proxies[c.g]?.heal();
                break;
              case 'restart': {
                const old = edges[c.g] as EdgeGateway;
                await old.stop();
                const g = await recordsGateway(cloud, {
                  clock: clock.read,
                  cloudUrl: proxies[c.g]?.url() as string,
                  localDb: old.options.localDb,
                });
                watchLocal(g);
                edges[c.g] = g;
                break;
              }
            }
          }
          // The network heals; everyone syncs until nothing moves.
          for (let round = 0; round < 6; round++) {
            let moved = 0;
            for (const g of edges) {
              const r = await g.forceSync();
              moved += (r.records?.pushed ?? 0) + (r.records?.pulled ?? 0);
            }
            if (moved === 0) break;
          }
          for (const k of KEYS) {
            const all = writes.get(k) as Write[];
            const last = all.reduce<Write | undefined>(
              (best, w) => (best === undefined || later(w, best) ? w : best),
              undefined,
            );
            const expected = last === undefined ? 'deleted' : last.value;
            expect(await heldByCloud(cloud, C, k), `cloud, ${k}`).toEqual(expected);
            for (const [i, g] of edges.entries()) {
              expect(heldBy(g, C, k), `gateway ${i}, ${k}`).toEqual(expected);
              expect(g.records.pendingCount()).toBe(0);
            }
          }
          // Every replica holds the cloud's version of each record, not only its value. (That a replayed push is
          // applied once is checked directly in test/cloud/records.test.ts.)
          for (const k of KEYS) {
            const version = (await cloud.get(C, k))?.version ?? 0;
            for (const g of edges) {
              const held = g.records.get(C, k)?.version;
              if (held !== undefined) expect(held).toBe(version);
            }
          }
        } finally {
          for (const g of edges) await g.stop();
          for (const p of proxies) await p.close();
        }
      }),
      { numRuns: 12, seed: CHAOS_SEED, endOnFailure: true },
    );
  });
});
