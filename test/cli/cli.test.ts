import { type ChildProcess, spawn } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import BetterSqlite3 from 'better-sqlite3-multiple-ciphers';
import { afterEach, describe, expect, it } from 'vitest';
import { type CliIo, runCli } from '../../src/cli/cli.js';

const root = join(import.meta.dirname, '..', '..');

interface CapturedIo extends CliIo {
  lines: string[];
  errors: string[];
}

function captureIo(signal: Promise<string> = new Promise(() => {})): CapturedIo {
  const lines: string[] = [];
  const errors: string[] = [];
  return {
    lines,
    errors,
    out: (line) => lines.push(line),
    err: (line) => errors.push(line),
    untilSignal: () => signal,
  };
}

let dir: string | undefined;
const children: ChildProcess[] = [];
afterEach(() => {
  for (const child of children.splice(0)) child.kill('SIGKILL');
  if (dir) rmSync(dir, { recursive: true, force: true });
  dir = undefined;
});

describe('edge-gateway CLI', () => {
  it('prints usage with --help', async () => {
    const io = captureIo();
    expect(await runCli(['--help'], io)).toBe(0);
    expect(io.lines.join('\n')).toContain('edge-gateway --init-db');
  });

  it('prints the package version with --version', async () => {
    const io = captureIo();
    expect(await runCli(['--version'], io)).toBe(0);
    expect(io.lines[0]).toMatch(/^\d+\.\d+\.\d+/);
  });

  it('refuses an unknown command with exit code 2', async () => {
    const io = captureIo();
    expect(await runCli(['frobnicate'], io)).toBe(2);
    expect(io.errors.join('\n')).toContain('Unknown command "frobnicate"');
  });

  it('refuses an unknown flag with exit code 2', async () => {
    const io = captureIo();
    expect(await runCli(['--frobnicate'], io)).toBe(2);
  });

  it('creates the database with --init-db', async () => {
    dir = mkdtempSync(join(tmpdir(), 'edge-gateway-cli-'));
    const path = join(dir, 'nested', 'edge.db');
    process.env.DEVICE_ID = 'cli-test';
    process.env.LOCAL_DB_PATH = path;
    try {
      const io = captureIo();
      expect(await runCli(['--init-db', '--env', join(dir, 'absent.env')], io)).toBe(0);
      expect(io.lines[0]).toContain(path);
    } finally {
      delete process.env.DEVICE_ID;
      delete process.env.LOCAL_DB_PATH;
    }
    expect(existsSync(path)).toBe(true);
    const db = new BetterSqlite3(path, { readonly: true });
    expect(db.prepare("SELECT value FROM meta WHERE key = 'replica_id'").pluck().get()).toMatch(/^[0-9a-f-]{36}$/);
    db.close();
  });

  it('exits 1 with a message naming the variable when the configuration is invalid', async () => {
    const io = captureIo();
    const saved = process.env.DEVICE_ID;
    delete process.env.DEVICE_ID;
    try {
      expect(await runCli(['--init-db', '--env', '/nonexistent/.env'], io)).toBe(1);
    } finally {
      if (saved !== undefined) process.env.DEVICE_ID = saved;
    }
    expect(io.errors.join('\n')).toContain('DEVICE_ID');
  });

  it('refuses to run the cloud server without an API key', async () => {
    const saved = process.env.CLOUD_API_KEY;
    delete process.env.CLOUD_API_KEY;
    const io = captureIo();
    try {
      expect(await runCli(['cloud', '--port', '0'], io)).toBe(2);
    } finally {
      if (saved !== undefined) process.env.CLOUD_API_KEY = saved;
    }
    expect(io.errors.join('\n')).toContain('--api-key');
  });

  it('runs the cloud server and the gateway daemon together, and the daemon stops cleanly on SIGTERM', async () => {
    dir = mkdtempSync(join(tmpdir(), 'edge-gateway-cli-'));
    let stopCloud: (signal: string) => void = () => {};
    const cloudIo = captureIo(new Promise((resolve) => (stopCloud = resolve)));
    const cloudExit = runCli(['cloud', '--port', '0', '--db', join(dir, 'cloud.db'), '--api-key', 'k'], cloudIo);
    while (cloudIo.lines.length === 0) await new Promise((r) => setTimeout(r, 20));
    const url = /listening at (\S+)/.exec(cloudIo.lines[0] ?? '')?.[1];
    expect(url).toMatch(/^http:\/\/127\.0\.0\.1:\d+\/api\/v1$/);

    const child = spawn(
      process.execPath,
      ['--import', 'tsx', join(root, 'src/cli/main.ts'), 'start', '--env', join(dir, 'none.env')],
      {
        cwd: root,
        env: {
          ...process.env,
          DEVICE_ID: 'daemon-1',
          CLOUD_API_URL: url,
          CLOUD_API_KEY: 'k',
          LOCAL_DB_PATH: join(dir, 'edge.db'),
          LOG_LEVEL: 'info',
          WORKER_THREADS: '2',
          DATA_RETENTION_DAYS: '7',
          HTTP_PORT: '0',
        },
      },
    );
    children.push(child);
    let output = '';
    child.stdout?.on('data', (chunk) => {
      output += chunk;
    });
    child.stderr?.on('data', (chunk) => {
      output += chunk;
    });
    const deadline = Date.now() + 15_000;
    while (!output.includes('running') && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
    expect(output).toContain('edge-gateway daemon-1 running');
    expect(output).not.toContain('has no effect'); // WORKER_THREADS and DATA_RETENTION_DAYS both take effect
    const exited = new Promise<number | null>((resolve) => child.on('close', (code) => resolve(code)));
    // A daemon stays up until it is told to stop.
    await new Promise((r) => setTimeout(r, 500));
    expect(child.exitCode).toBeNull();
    child.kill('SIGTERM');
    expect(await exited).toBe(0);
    expect(output).toContain('edge-gateway stopped');
    stopCloud('SIGTERM');
    expect(await cloudExit).toBe(0);
  });
});

describe('edge-gateway start (in process)', () => {
  it('runs until signalled, forwarding to the cloud, and logs to LOG_FILE', async () => {
    dir = mkdtempSync(join(tmpdir(), 'edge-gateway-cli-'));
    const { startCloudServer } = await import('../../src/testing/index.js');
    const cloud = await startCloudServer();
    const logFile = join(dir, 'logs', 'gateway.log');
    const saved = { ...process.env };
    Object.assign(process.env, {
      DEVICE_ID: 'in-process',
      CLOUD_API_URL: cloud.url,
      CLOUD_API_KEY: cloud.apiKey,
      LOCAL_DB_PATH: join(dir, 'edge.db'),
      LOG_FILE: logFile,
      LOG_LEVEL: 'debug',
      HTTP_PORT: '0',
    });
    let stop: (signal: string) => void = () => {};
    const io = captureIo(new Promise((resolve) => (stop = resolve)));
    try {
      const exit = runCli(['start', '--env', join(dir, 'none.env')], io);
      while (!io.lines.some((line) => line.includes('running'))) await new Promise((r) => setTimeout(r, 20));
      stop('SIGTERM');
      expect(await exit).toBe(0);
    } finally {
      process.env = saved;
      await cloud.close();
    }
    expect(io.lines).toContain('edge-gateway stopped');
    const { readFileSync } = await import('node:fs');
    const deadline = Date.now() + 5000;
    let log = '';
    while (!log.includes('edge gateway stopped') && Date.now() < deadline) {
      log = existsSync(logFile) ? readFileSync(logFile, 'utf8') : '';
      await new Promise((r) => setTimeout(r, 20));
    }
    expect(log).toContain('"msg":"edge gateway started"');
    expect(log).toContain('"msg":"edge gateway stopped"');
  });

  it('warns when CLOUD_API_URL is not set, and stores locally', async () => {
    dir = mkdtempSync(join(tmpdir(), 'edge-gateway-cli-'));
    const saved = { ...process.env };
    delete process.env.CLOUD_API_URL;
    Object.assign(process.env, {
      DEVICE_ID: 'local-only',
      LOCAL_DB_PATH: join(dir, 'edge.db'),
      LOG_LEVEL: 'silent',
      HTTP_ENABLED: 'false',
    });
    const io = captureIo(Promise.resolve('SIGINT'));
    try {
      expect(await runCli(['--env', join(dir, 'none.env')], io)).toBe(0);
    } finally {
      process.env = saved;
    }
    expect(io.lines[0]).toContain('edge-gateway local-only running');
  });
});
