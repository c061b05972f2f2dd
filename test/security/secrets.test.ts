import { Writable } from 'node:stream';
import { pino } from 'pino';
import { describe, expect, it } from 'vitest';
import { CloudServer } from '../../src/cloud/index.js';
import { EdgeGateway, type SyncErrorEvent } from '../../src/index.js';
import type { Logger } from '../../src/logger.js';
import { startCloudServer } from '../../src/testing/index.js';
import { defer } from '../helpers/cleanup.js';
import { createGateway, readings } from '../helpers/gateway.js';
import { tempDbPath } from '../helpers/temp-dir.js';
import { waitFor } from '../helpers/wait-for.js';
import { send } from './lib/cloud-client.js';

/** Every secret the scenario handles: none may appear in anything a user or an operator can read. */
const SECRETS = {
  fleet: 'SECRET-fleet-7d1e9a2b4c6d8e0f',
  device: 'SECRET-device-1a2b3c4d5e6f7a8b',
  other: 'SECRET-other-9c0d1e2f3a4b5c6d',
  wrong: 'SECRET-wrong-5e6f7a8b9c0d1e2f',
  rotated: 'SECRET-rotated-3a4b5c6d7e8f9a0b',
  inUrl: 'SECRET-url-password-0f1e2d3c',
};

/** A pino logger at debug level writing JSON lines into `lines`: what an operator's log file would hold. */
function pinoInto(lines: string[]): Logger {
  const sink = new Writable({
    write(chunk: Buffer, _encoding, done) {
      lines.push(chunk.toString('utf8'));
      done();
    },
  });
  return pino({ level: 'debug' }, sink);
}

/** An error as a user sees it: message, stack and every cause, as text. */
function describeError(error: unknown): string {
  const parts: string[] = [];
  for (let e: unknown = error, depth = 0; e !== undefined && depth < 5; depth++) {
    if (e instanceof Error) {
      parts.push(e.message, e.stack ?? '', JSON.stringify(e));
      e = e.cause;
    } else {
      parts.push(String(e));
      break;
    }
  }
  return parts.join('\n');
}

const caught = (run: () => unknown): string => {
  try {
    run();
  } catch (error) {
    return describeError(error);
  }
  throw new Error('expected a throw');
};

const leaks = (text: string) => Object.entries(SECRETS).filter(([, secret]) => text.includes(secret));

describe('secrets', () => {
  it('never reach the logs, events, errors, status or answers of a gateway and a cloud at debug level', async () => {
    const gatewayLog: string[] = [];
    const cloudLog: string[] = [];
    const cloud = await startCloudServer({
      apiKeys: [SECRETS.fleet, { key: SECRETS.other, devices: ['someone-else'] }],
      logger: pinoInto(cloudLog),
    });
    defer(() => cloud.close());
    const gateway = createGateway({ cloudUrl: cloud.url, apiKey: SECRETS.wrong, logger: pinoInto(gatewayLog) });
    const deviceId = gateway.options.deviceId;
    const seen: string[] = [];
    const events: SyncErrorEvent[] = [];
    gateway.on('sync-error', (event) => events.push(event));
    gateway.on('error', (error) => seen.push(describeError(error)));
    await gateway.start();
    await gateway.sendBatch(readings(20));

    // 401: a key the cloud does not know.
    await waitFor(() => events.some((e) => e.httpStatus === 401), 5000, 'a 401');
    seen.push(JSON.stringify(gateway.getStatus()), JSON.stringify(gateway.healthCheck()));
    // 403: a key bound to another device.
    gateway.setApiKey(SECRETS.other);
    await waitFor(() => events.some((e) => e.httpStatus === 403), 5000, 'a 403');
    seen.push(JSON.stringify(gateway.getStatus()), JSON.stringify(gateway.healthCheck()));
    // 429: the right key, over a tight budget; then a rotation to a new key.
    cloud.server.setApiKeys([
      SECRETS.fleet,
      { key: SECRETS.device, devices: [deviceId], rateLimit: { requestsPerSecond: 5, burst: 1 } },
    ]);
    gateway.setApiKey(SECRETS.device);
    await gateway.sendBatch(readings(5));
    await waitFor(() => events.some((e) => e.httpStatus === 429), 5000, 'a 429');
    cloud.server.setApiKeys([SECRETS.fleet, { key: SECRETS.device, devices: [deviceId] }, SECRETS.rotated]);
    gateway.setApiKey(SECRETS.rotated);
    await waitFor(() => gateway.getStatus().pendingSyncCount === 0, 5000, 'an empty queue');

    // Misuse that names a secret: each error must not repeat it.
    seen.push(
      caught(() => gateway.configure({ apiKey: `${SECRETS.rotated} with a space` })),
      caught(() => gateway.configure({ apiKey: 42 as never })),
      caught(() => gateway.configure({ cloudUrl: `ftp://user:${SECRETS.inUrl}@example.com/api` })),
      caught(() => gateway.configure({ cloudUrl: `https://user:${SECRETS.inUrl}@example.com/api` })),
      caught(
        () =>
          new EdgeGateway({
            deviceId: 'd',
            localDb: tempDbPath(),
            apiKey: SECRETS.fleet,
            cloudUrl: 'not a url',
            syncIntervall: 1,
          } as never),
      ),
    );
    for (const apiKeys of [
      [{ key: SECRETS.fleet, devices: [] }],
      [`${SECRETS.fleet} `],
      [SECRETS.fleet, SECRETS.fleet],
      [{ key: SECRETS.fleet, sha256: 'x' }],
    ]) {
      seen.push(
        describeError(await CloudServer.listen({ apiKeys: apiKeys as never }).catch((error: unknown) => error)),
      );
    }
    // What the cloud answers to a refused key, a refused device and a throttled key.
    for (const key of [SECRETS.wrong, SECRETS.other]) {
      const answer = await send(cloud.server, 'GET', `/telemetry?deviceId=${deviceId}`, undefined, { apiKey: key });
      seen.push(answer.text, JSON.stringify([...answer.headers]));
    }

    seen.push(JSON.stringify(events), JSON.stringify(gateway.getStatus()), JSON.stringify(gateway.healthCheck()));
    seen.push(JSON.stringify(gateway.options));
    const everything = [...gatewayLog, ...cloudLog, ...seen].join('\n');

    expect(events.map((e) => e.httpStatus)).toEqual(expect.arrayContaining([401, 403, 429]));
    // The scenario did reach every refusal, and both logs said so.
    expect(gatewayLog.join('')).toMatch(/HTTP 401[\s\S]*HTTP 403[\s\S]*"httpStatus":429/);
    expect(cloudLog.join('')).toMatch(/"status":401[\s\S]*"status":403[\s\S]*"status":429/);
    expect(cloudLog.some((line) => line.includes('"level":20'))).toBe(true);
    expect(leaks(everything)).toEqual([]);
  }, 30_000);

  it('never reach the metrics text, through a refused key, a throttled one and a rotation', async () => {
    const cloud = await startCloudServer({
      apiKeys: [{ key: SECRETS.device, rateLimit: { requestsPerSecond: 5, burst: 1 } }, SECRETS.rotated],
    });
    defer(() => cloud.close());
    const gateway = createGateway({ cloudUrl: cloud.url, apiKey: SECRETS.wrong });
    const metrics = () => gateway.metrics();
    const events: SyncErrorEvent[] = [];
    gateway.on('sync-error', (event) => events.push(event));
    await metrics(); // counting starts here
    await gateway.start();

    await gateway.sendBatch(readings(10));
    await waitFor(() => events.some((e) => e.httpStatus === 401), 5000, 'a 401');
    gateway.setApiKey(SECRETS.device);
    await gateway.sendBatch(readings(5));
    await waitFor(() => events.some((e) => e.httpStatus === 429), 5000, 'a 429');
    gateway.setApiKey(SECRETS.rotated);
    await waitFor(() => gateway.getStatus().pendingSyncCount === 0, 5000, 'an empty queue');
    const text = await metrics();

    expect(text).toMatch(/edge_gateway_sync_failures_total/);
    expect(leaks(text)).toEqual([]);
  });
});
