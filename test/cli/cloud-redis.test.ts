import { describe, expect, it } from 'vitest';
import { type CliIo, runCli } from '../../src/cli/cli.js';
import { redisAvailable, useCloudStore } from '../helpers/cloud-stores.js';

function captureIo(signal: Promise<string>): CliIo & { lines: string[]; errors: string[] } {
  const lines: string[] = [];
  const errors: string[] = [];
  return { lines, errors, out: (l) => lines.push(l), err: (l) => errors.push(l), untilSignal: () => signal };
}

describe('edge-gateway cloud --redis', () => {
  it('refuses --db and --redis together with exit code 2', async () => {
    const io = captureIo(new Promise(() => {}));

    const code = await runCli(
      ['cloud', '--port', '0', '--db', 'x.db', '--redis', 'redis://127.0.0.1:1', '--api-key', 'k'],
      io,
    );

    expect(code).toBe(2);
    expect(io.errors.join('\n')).toContain('either --db or --redis');
  });

  describe.skipIf(!redisAvailable())('with a Redis', () => {
    const store = useCloudStore('redis');

    it('serves from the Redis it names, shared by a second server started the same way', async () => {
      const url = store.options().redisUrl as string;
      let stop: (signal: string) => void = () => {};
      const stopped = new Promise<string>((resolve) => (stop = resolve));
      const [first, second] = [captureIo(stopped), captureIo(stopped)];
      const exits = [
        runCli(['cloud', '--port', '0', '--redis', url, '--api-key', 'k'], first),
        runCli(['cloud', '--port', '0', '--redis', url, '--api-key', 'k'], second),
      ];
      while (first.lines.length === 0 || second.lines.length === 0) await new Promise((r) => setTimeout(r, 20));
      const [a, b] = [first, second].map((io) => /listening at (\S+) \(store: Redis\)/.exec(io.lines[0] ?? '')?.[1]);

      const headers = { authorization: 'Bearer k', 'content-type': 'application/json' };
      const put = await fetch(`${a}/records/setpoints/boiler`, { method: 'PUT', headers, body: '{"value":72}' });
      const got = await fetch(`${b}/records/setpoints/boiler`, { headers });

      expect(put.status).toBe(200);
      expect(await got.json()).toMatchObject({ value: 72, version: 1, origin: 'cloud' });
      stop('SIGTERM');
      expect(await Promise.all(exits)).toEqual([0, 0]);
    });
  });
});
