import { type ChildProcess, spawn } from 'node:child_process';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';

const ROOT = fileURLToPath(new URL('../../..', import.meta.url));

/** How a child ended. */
export interface ChildExit {
  code: number | null;
  signal: NodeJS.Signals | null;
}

/** Every child still running, so that {@link killChildren} can end them after a test. */
const live = new Set<TestChild>();

/**
 * A TypeScript script run in a child process with `node --import tsx`, its stdout split into lines. Its stdin stays
 * open: the fixtures exit when it closes, so a child cannot outlive the process that spawned it.
 */
export class TestChild {
  readonly process: ChildProcess;
  readonly exited: Promise<ChildExit>;
  /** `Date.now()` at spawn. */
  readonly spawnedAt = Date.now();
  readonly #name: string;
  #stderr = '';

  /** Spawns `script` (a path) with `args`; `onLine` sees every complete line of its stdout, in order. */
  constructor(script: string, args: readonly string[], onLine: (line: string) => void, env: NodeJS.ProcessEnv = {}) {
    this.#name = script.split('/').pop() ?? script;
    const proc = spawn(process.execPath, ['--import', 'tsx', script, ...args], {
      cwd: ROOT,
      stdio: ['pipe', 'pipe', 'pipe'],
      env: { ...process.env, ...env },
    });
    this.process = proc;
    live.add(this);
    this.exited = new Promise((resolve) =>
      proc.once('close', (code, signal) => {
        live.delete(this);
        resolve({ code, signal });
      }),
    );
    let partial = '';
    proc.stdout?.setEncoding('utf8').on('data', (text: string) => {
      const parts = (partial + text).split('\n');
      // A line cut short by SIGKILL has no newline: it does not count.
      partial = parts.pop() ?? '';
      for (const line of parts) onLine(line);
    });
    proc.stderr?.setEncoding('utf8').on('data', (text: string) => {
      // Bounded: a child that loops on an error must not fill the test's memory.
      if (this.#stderr.length < 64 * 1024) this.#stderr += text;
    });
    // A write to a child that died a moment ago fails with EPIPE; that is no error of the test.
    proc.stdin?.on('error', () => undefined);
  }

  get stderr(): string {
    return this.#stderr;
  }

  get alive(): boolean {
    return this.process.exitCode === null && this.process.signalCode === null;
  }

  /** Sends one line to its stdin. */
  send(line: string): void {
    if (this.alive) this.process.stdin?.write(`${line}\n`);
  }

  /** SIGKILLs it now (a no-op once it is dead). Synchronous, so that it can run inside a callback at a chosen moment. */
  killNow(): void {
    if (this.alive) this.process.kill('SIGKILL');
  }

  /** SIGKILLs it and waits until it is gone. */
  async kill(timeoutMs = 15_000): Promise<ChildExit> {
    this.killNow();
    return this.exit(timeoutMs);
  }

  /** Waits for it to end, at most `timeoutMs`. */
  async exit(timeoutMs = 15_000): Promise<ChildExit> {
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(
        () => reject(new Error(`${this.#name} did not exit within ${timeoutMs} ms; stderr: ${this.#stderr}`)),
        timeoutMs,
      );
    });
    try {
      return await Promise.race([this.exited, timeout]);
    } finally {
      clearTimeout(timer);
    }
  }

  /**
   * Polls `condition` every few ms until it holds. Rejects when the child ends first, or after `timeoutMs`: a
   * bound against a hang, not a measure of speed.
   */
  async waitUntil(what: string, condition: () => boolean, timeoutMs = 30_000): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    while (!condition()) {
      if (!this.alive) {
        const how = this.process.signalCode ?? this.process.exitCode;
        throw new Error(`${this.#name} exited (${how}) before ${what}; stderr: ${this.#stderr}`);
      }
      if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}; stderr: ${this.#stderr}`);
      await sleep(5);
    }
  }
}

/** SIGKILLs every child still running and waits for each to end. For `afterEach`. */
export async function killChildren(): Promise<void> {
  await Promise.all([...live].map((child) => child.kill().catch(() => undefined)));
}
