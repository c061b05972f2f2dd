import { describe, expect, it } from 'vitest';
import { MemoryTransport } from '../../src/testing/index.js';
import { createGateway, readings } from '../helpers/gateway.js';

describe('MemoryTransport', () => {
  it('records what it was sent, decoded, and keeps each acknowledged reading once', async () => {
    const transport = new MemoryTransport();
    const gateway = createGateway({ transport, batchSize: 4 });
    await gateway.start();
    await gateway.sendBatch(readings(10));
    const result = await gateway.forceSync();
    expect(result.acknowledged).toBe(10);
    expect(transport.points.map((p) => p.value)).toEqual(readings(10).map((r) => r.value));
    expect(transport.batches.map((b) => b.body.points.length)).toEqual([4, 4, 2]);
    expect(transport.sent[0]?.idempotencyKey).toBe(`${gateway.getStatus().replicaId}:1`);
  });

  it('fails sends and pings while offline, and delivers the same batch once back online', async () => {
    const transport = new MemoryTransport();
    const gateway = createGateway({ transport });
    await gateway.start();
    transport.goOffline();
    await gateway.sendBatch(readings(3));
    const offline = await gateway.forceSync();
    expect(offline.acknowledged).toBe(0);
    expect(gateway.getStatus().isOnline).toBe(false);
    expect(await transport.ping()).toEqual({ reachable: false, message: 'MemoryTransport is offline' });
    transport.goOnline();
    const online = await gateway.forceSync();
    expect(online.acknowledged).toBe(3);
    expect(transport.points).toHaveLength(3);
  });

  it('answers as its responder says, and counts an acknowledged replay as a duplicate', async () => {
    let first = true;
    const transport = new MemoryTransport((batch) => {
      if (first) {
        first = false;
        return { status: 'retryable', code: 'server', message: 'try later', httpStatus: 503 };
      }
      return {
        status: 'acknowledged',
        replayed: false,
        ack: {
          ackThroughBatchNo: batch.batchNo,
          accepted: batch.body.points.length,
          duplicates: 0,
          serverTime: new Date().toISOString(),
        },
      };
    });
    const gateway = createGateway({ transport });
    await gateway.start();
    await gateway.sendBatch(readings(2));
    expect((await gateway.forceSync()).failed).toBe(2);
    expect((await gateway.forceSync()).acknowledged).toBe(2);
    expect(transport.sent).toHaveLength(2);
    expect(transport.sent[0]?.body).toEqual(transport.sent[1]?.body);
    transport.respondWith(undefined);
    expect(transport.points).toHaveLength(2);
  });

  it('reports closed after the gateway stops', async () => {
    const transport = new MemoryTransport();
    const gateway = createGateway({ transport });
    await gateway.start();
    await gateway.stop();
    expect(transport.closed).toBe(true);
  });
});
