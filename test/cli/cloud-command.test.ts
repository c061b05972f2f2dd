import { createHash } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { type CliIo, runCli } from '../../src/cli/cli.js';
import { tempDir } from '../helpers/temp-dir.js';

const FLEET = 'cli-fleet-key-0123456789';
const DEVICE = 'cli-device-key-0123456789';
const VARIABLES = ['CLOUD_API_KEY', 'CLOUD_API_KEYS_FILE', 'CLOUD_RATE_LIMIT', 'CLOUD_RATE_BURST', 'LOG_LEVEL'];

const saved = new Map(VARIABLES.map((name) => [name, process.env[name]]));
afterEach(() => {
  for (const [name, value] of saved) {
    if (value === undefined) delete process.env[name];
    else process.env[name] = value;
  }
});

/** Runs `edge-gateway cloud ...args` until `stop()`; resolves with its URL once it listens, or its exit code. */
async function runCloud(args: string[], env: Record<string, string> = {}) {
  for (const name of VARIABLES) delete process.env[name];
  Object.assign(process.env, { LOG_LEVEL: 'silent', ...env });
  let stop = () => {};
  const lines: string[] = [];
  const errors: string[] = [];
  const io: CliIo = {
    out: (line) => lines.push(line),
    err: (line) => errors.push(line),
    untilSignal: () => new Promise((resolve) => (stop = () => resolve('SIGTERM'))),
  };
  const exit = runCli(['cloud', '--port', '0', '--db', join(tempDir(), 'cloud.db'), ...args], io);
  const started: { code?: number; url?: string } = await Promise.race([
    exit.then((code) => ({ code })),
    (async () => {
      while (lines.length === 0) await new Promise((r) => setTimeout(r, 10));
      return { url: /listening at (\S+)/.exec(lines[0] ?? '')?.[1] as string };
    })(),
  ]);
  return {
    ...started,
    errors,
    async stop() {
      stop();
      return exit;
    },
  };
}

const status = async (url: string, path: string, key: string) =>
  (await fetch(`${url}${path}`, { headers: { authorization: `Bearer ${key}` } })).status;

describe('edge-gateway cloud', () => {
  it('binds keys to devices from --keys-file, next to --api-key fleet keys', async () => {
    const file = join(tempDir(), 'keys.json');
    writeFileSync(file, JSON.stringify([{ key: DEVICE, devices: ['dev-a'], name: 'dev-a' }]));

    const cloud = await runCloud(['--api-key', FLEET, '--keys-file', file]);

    expect(cloud.url).toBeDefined();
    const url = cloud.url as string;
    expect(await status(url, '/telemetry?deviceId=dev-a', DEVICE)).toBe(200);
    expect(await status(url, '/telemetry?deviceId=dev-b', DEVICE)).toBe(403);
    expect(await status(url, '/telemetry?deviceId=dev-b', FLEET)).toBe(200);
    expect(await cloud.stop()).toBe(0);
  });

  it('takes the keys file, hashed keys and the rate limit from the environment', async () => {
    const file = join(tempDir(), 'keys.json');
    const hash = createHash('sha256').update(DEVICE).digest('hex');
    writeFileSync(file, JSON.stringify([{ sha256: hash, devices: ['dev-a'] }]));

    const cloud = await runCloud([], { CLOUD_API_KEYS_FILE: file, CLOUD_RATE_LIMIT: '0.5', CLOUD_RATE_BURST: '2' });

    const url = cloud.url as string;
    const statuses = [];
    for (let i = 0; i < 3; i++) statuses.push(await status(url, '/telemetry/stats', DEVICE));
    expect(statuses).toEqual([200, 200, 429]);
    expect(await cloud.stop()).toBe(0);
  });

  it('applies --rate-limit to each key', async () => {
    const cloud = await runCloud(['--api-key', FLEET, '--api-key', DEVICE, '--rate-limit', '1']);

    const url = cloud.url as string;
    expect([await status(url, '/telemetry/stats', FLEET), await status(url, '/telemetry/stats', FLEET)]).toEqual([
      200, 429,
    ]);
    expect(await status(url, '/telemetry/stats', DEVICE)).toBe(200);
    await cloud.stop();
  });

  for (const [label, args, env, message] of [
    ['no key at all', [], {}, /at least one --api-key/],
    ['a keys file that is not JSON', ['--keys-file', 'BAD_JSON'], {}, /is not valid JSON$/],
    ['a keys file that is missing', ['--keys-file', '/nonexistent/keys.json'], {}, /cannot read .* \(ENOENT\)/],
    ['an entry with no devices', ['--keys-file', 'EMPTY_DEVICES'], {}, /keys\.json\[0\]\.devices: at least one/],
    ['a rate limit of zero', ['--api-key', FLEET, '--rate-limit', '0'], {}, /--rate-limit to be a positive number/],
    ['a burst without a rate', ['--api-key', FLEET, '--rate-burst', '3'], {}, /--rate-burst .* needs --rate-limit/],
    [
      'a fractional burst',
      ['--api-key', FLEET],
      { CLOUD_RATE_LIMIT: '1', CLOUD_RATE_BURST: '1.5' },
      /CLOUD_RATE_BURST/,
    ],
    ['an unknown log level', ['--api-key', FLEET], { LOG_LEVEL: 'loud' }, /LOG_LEVEL/],
  ] as const) {
    it(`exits 2 on ${label}, never showing a key`, async () => {
      const dir = tempDir();
      const badJson = join(dir, 'bad.json');
      writeFileSync(badJson, `[{"key": "${DEVICE}"`);
      const emptyDevices = join(dir, 'keys.json');
      writeFileSync(emptyDevices, JSON.stringify([{ key: DEVICE, devices: [] }]));
      const resolved = args.map((a) => (a === 'BAD_JSON' ? badJson : a === 'EMPTY_DEVICES' ? emptyDevices : a));

      const cloud = await runCloud(resolved, env);

      expect(cloud).toMatchObject({ code: 2 });
      expect(cloud.errors.join('\n')).toMatch(message);
      expect(cloud.errors.join('\n')).not.toContain(DEVICE);
    });
  }
});
