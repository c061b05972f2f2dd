import { spawn, spawnSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { type CliIo, runCli, USAGE } from '../../src/cli/cli.js';
import { envSchema } from '../../src/cli/env-config.js';
import { startCloudServer } from '../../src/testing/index.js';
import { defer } from '../helpers/cleanup.js';
import { createGateway } from '../helpers/gateway.js';
import { freePort } from '../helpers/http.js';
import { tempDir } from '../helpers/temp-dir.js';

const root = join(import.meta.dirname, '..', '..');
const read = (path: string) => readFileSync(join(root, path), 'utf8');
const dockerfile = read('deploy/Dockerfile');
const compose = read('deploy/docker-compose.yml');
const unit = read('deploy/edge-gateway.service');
const KNOWN = new Set([...Object.keys(envSchema.shape), 'NODE_ENV']);

/** Runs a `["node", "-e", "..."]` health check command with `env`; resolves with its exit code. */
function runCheck(command: string[], env: Record<string, string> = {}): Promise<number | null> {
  const [program, ...args] = command;
  expect(program).toBe('node');
  return new Promise((resolve) => {
    const child = spawn(process.execPath, args, { env: { ...process.env, ...env }, stdio: 'ignore' });
    child.on('close', (code) => resolve(code));
  });
}

/** The exec-form array after `marker` on one line of `text`. */
function execForm(text: string, marker: RegExp): string[] {
  const line = text.split('\n').find((l) => marker.test(l));
  const json = line?.slice(line.indexOf('['));
  if (!json) throw new Error(`no ${marker} line`);
  return JSON.parse(json) as string[];
}

describe('deploy/Dockerfile', () => {
  it('runs the CLI entry that exists, with the start command', () => {
    const cmd = execForm(dockerfile, /^CMD \[/);
    expect(cmd).toEqual(['node', '--max-semi-space-size=2', 'bin/edge-gateway.js', 'start']);
    // The V8 flag is one this Node takes (an unknown one would stop the container at start).
    expect(spawnSync(process.execPath, [cmd[1] as string, '-e', '0']).status).toBe(0);
    expect(existsSync(join(root, 'bin/edge-gateway.js'))).toBe(true);
    expect(USAGE).toContain('edge-gateway [start]');
    expect(dockerfile).toMatch(/^FROM node:20-slim AS build$/m);
    expect(dockerfile).toMatch(/^COPY --from=build /m);
  });

  it('sets only variables the CLI reads', () => {
    const names = [...dockerfile.matchAll(/^\s*(?:ENV\s+)?([A-Z][A-Z0-9_]+)=\S+(?: \\)?$/gm)].map((m) => m[1]);
    expect(names).toEqual(['NODE_ENV', 'LOCAL_DB_PATH', 'HTTP_HOST', 'HTTP_PORT']);
    for (const name of names) expect(KNOWN).toContain(name);
  });

  it('has a HEALTHCHECK that passes on a healthy gateway and fails on an unhealthy or absent one', async () => {
    const check = execForm(dockerfile, /^\s+CMD \["node", "-e"/);
    const gateway = createGateway();
    await gateway.start();
    const server = await gateway.serveHttp({ port: 0 });
    defer(() => server.close());
    expect(await runCheck(check, { HTTP_PORT: String(server.port) })).toBe(0);
    await gateway.stop(); // unhealthy: 503
    expect(await runCheck(check, { HTTP_PORT: String(server.port) })).toBe(1);
    expect(await runCheck(check, { HTTP_PORT: String(await freePort()) })).toBe(1);
  });
});

describe('deploy/docker-compose.yml', () => {
  it('passes only variables the CLI reads', () => {
    const names = [...compose.matchAll(/^ {6}([A-Z][A-Z0-9_]+):/gm)].map((m) => m[1] as string);
    expect(names.length).toBeGreaterThan(3);
    for (const name of names) expect(KNOWN).toContain(name);
  });

  it('runs the reference cloud with flags the CLI takes, and checks its health at a path it serves', async () => {
    const command = execForm(compose, /^\s+command: \[/);
    expect(command.slice(0, 3)).toEqual(['node', 'bin/edge-gateway.js', 'cloud']);
    // The same arguments, on a loopback port of this test's choosing.
    const args = command.slice(2).map((arg, i, all) => {
      if (all[i - 1] === '--port') return '0';
      if (all[i - 1] === '--host') return '127.0.0.1';
      if (all[i - 1] === '--db') return join(tempDir(), 'cloud.db');
      return arg;
    });
    const saved = process.env.CLOUD_API_KEY;
    process.env.CLOUD_API_KEY = 'compose-key';
    defer(() => {
      if (saved === undefined) delete process.env.CLOUD_API_KEY;
      else process.env.CLOUD_API_KEY = saved;
    });
    const lines: string[] = [];
    const io: CliIo = {
      out: (l) => lines.push(l),
      err: (l) => lines.push(l),
      untilSignal: () => Promise.resolve('SIGTERM'),
    };
    expect(await runCli(args, io)).toBe(0);
    expect(lines.join('\n')).toMatch(/edge-gateway cloud listening at http:\/\/127\.0\.0\.1:\d+\/api\/v1/);

    const check = execForm(compose, /^\s+test: \["CMD", "node"/).slice(1);
    const cloud = await startCloudServer();
    defer(() => cloud.close());
    const port = String(new URL(cloud.url).port);
    const onPort = check.map((arg) => arg.replace('127.0.0.1:8080', `127.0.0.1:${port}`));
    expect(await runCheck(onPort)).toBe(0);
  });

  it('gives the daemon longer to stop than it takes', () => {
    const grace = Number(/stop_grace_period: (\d+)s/.exec(compose)?.[1]);
    expect(grace).toBeGreaterThanOrEqual(10);
    expect(compose).toContain('"127.0.0.1:8000:8000"');
  });
});

describe('deploy/edge-gateway.service', () => {
  it('starts the CLI entry with the start command, configured by an EnvironmentFile', () => {
    expect(unit).toMatch(/^ExecStart=\/usr\/bin\/node (--max-semi-space-size=\d+ )?\S+\/bin\/edge-gateway\.js start$/m);
    expect(unit).toMatch(/^EnvironmentFile=\/etc\/edge-gateway\/edge-gateway\.env$/m);
    expect(unit).toMatch(/^KillSignal=SIGTERM$/m);
    expect(Number(/^TimeoutStopSec=(\d+)$/m.exec(unit)?.[1])).toBeGreaterThanOrEqual(10);
    expect(unit).toMatch(/^Restart=always$/m);
  });
});
