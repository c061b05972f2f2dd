import { spawn } from 'node:child_process';
import { accessSync, constants, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { delimiter, join } from 'node:path';
import { createInterface } from 'node:readline';
import { setTimeout as sleep } from 'node:timers/promises';
import { createClient } from '@redis/client';
import { freePort } from './free-port.js';

/** The `redis-server` binary on PATH, or undefined when none is installed. */
export function findRedisServer(): string | undefined {
  for (const dir of (process.env.PATH ?? '').split(delimiter)) {
    const path = join(dir, 'redis-server');
    try {
      accessSync(path, constants.X_OK);
      return path;
    } catch {
      // not in this folder
    }
  }
  return undefined;
}

/** A throwaway redis-server on 127.0.0.1: no persistence, its own temp folder. */
export interface RedisServer {
  /** `redis://127.0.0.1:{port}`. */
  readonly url: string;
  readonly port: number;
  /** The redis-server process id. */
  readonly pid: number;
  /** FLUSHALL: every database emptied. */
  flush(): Promise<void>;
  /** SIGKILLs redis-server at once, as a crash would. */
  kill(): Promise<void>;
  /** Stops it (SIGTERM) and removes its folder. Safe to call twice, and after kill(). */
  stop(): Promise<void>;
}

/**
 * Runs redis-server under a shell that kills it when its stdin closes: when the process that started it ends, even
 * by SIGKILL, redis-server ends too, and no test leaves one behind. (A background job's stdin is /dev/null unless
 * redirected: hence fd 3.)
 */
const WATCHDOG = `
exec 3<&0
"$0" "$@" 3<&- &
pid=$!
echo "pid $pid"
(read -r _ <&3; kill -9 $pid) >/dev/null 2>&1 &
wait $pid
`;

/**
 * Starts redis-server on a free loopback port (redis has no `--port 0`: a port is picked by binding and closing a
 * socket, and another is tried when someone takes it meanwhile). Resolves once it accepts connections.
 */
export async function startRedisServer(
  options: {
    port?: number;
    binary?: string /** More redis-server options, after ours (later ones win). */;
    args?: readonly string[];
  } = {},
): Promise<RedisServer> {
  const binary = options.binary ?? findRedisServer();
  if (!binary) throw new Error('redis-server is not installed (apt-get install redis-server)');
  let lastOutput = '';
  for (let attempt = 1; attempt <= 5; attempt++) {
    const port = options.port ?? (await freePort());
    const dir = mkdtempSync(join(tmpdir(), 'edge-gateway-redis-'));
    const args = [
      ...['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', '--dir', dir],
      ...(options.args ?? []),
    ];
    const child = spawn('sh', ['-c', WATCHDOG, binary, ...args], { stdio: ['pipe', 'pipe', 'pipe'] });
    child.stdin.on('error', () => undefined);
    const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
    let pid = 0;
    let output = '';
    const ready = await new Promise<boolean>((resolve) => {
      const lines = createInterface({ input: child.stdout });
      lines.on('line', (line) => {
        if (output.length < 16_384) output += `${line}\n`;
        const match = /^pid (\d+)$/.exec(line);
        if (match) pid = Number(match[1]);
        if (line.includes('Ready to accept connections')) resolve(true);
      });
      child.stderr.on('data', (chunk: Buffer) => {
        if (output.length < 16_384) output += chunk.toString('utf8');
      });
      void exited.then(() => resolve(false));
      setTimeout(() => resolve(false), 10_000).unref();
    });
    if (!ready) {
      lastOutput = output;
      child.stdin.end();
      child.kill('SIGKILL');
      rmSync(dir, { recursive: true, force: true });
      if (options.port !== undefined || !/Address already in use/i.test(output)) break;
      await sleep(50 * attempt);
      continue;
    }
    const url = `redis://127.0.0.1:${port}`;
    let stopping: Promise<void> | undefined;
    const stop = () => {
      stopping ??= (async () => {
        if (child.exitCode === null && child.signalCode === null) {
          try {
            process.kill(pid, 'SIGTERM');
          } catch {
            // already gone
          }
          const timer = setTimeout(() => child.stdin.end(), 3000);
          await exited;
          clearTimeout(timer);
        }
        child.stdin.end();
        rmSync(dir, { recursive: true, force: true });
      })();
      return stopping;
    };
    // A test run that ends without stop() still takes redis-server with it.
    process.once('exit', () => child.stdin.end());
    return {
      url,
      port,
      pid,
      async flush() {
        const client = createClient({ url, RESP: 3 });
        client.on('error', () => undefined);
        await client.connect();
        try {
          await client.sendCommand(['FLUSHALL']);
        } finally {
          client.destroy();
        }
      },
      async kill() {
        try {
          process.kill(pid, 'SIGKILL');
        } catch {
          // already gone
        }
        await exited;
      },
      stop,
    };
  }
  throw new Error(`redis-server did not start:\n${lastOutput}`);
}
