import { fileURLToPath } from 'node:url';
import { type ChildExit, TestChild } from './child-process.js';

const FIXTURE = fileURLToPath(new URL('../../fixtures/crash-gateway.ts', import.meta.url));

/** How to run test/fixtures/crash-gateway.ts. */
export interface GatewayChildOptions {
  mode: 'ingest' | 'drain';
  db: string;
  cloudUrl: string;
  apiKey: string;
  /** First counter an ingest sends. @default 1 */
  first?: number;
  /** The child SIGKILLs itself right after printing this many acknowledgements. */
  killAfterAcks?: number;
  /** Readings go through the crash processor. */
  processor?: boolean;
  batchSize?: number;
  pauseMs?: number;
}

/**
 * The crash fixture's gateway in a child process, in report mode: what it acknowledged, its peak memory, and how
 * long it took to recover, as it printed them.
 */
export class GatewayChild {
  readonly child: TestChild;
  /** Counters whose sendData() resolved, in the order printed. */
  readonly acked: number[] = [];
  replicaId: string | undefined;
  /** Largest peak resident memory printed (`VmHWM`), in KiB. */
  maxRssKb = 0;
  /** ms from its call to start() until every reading queued then was acknowledged (see the fixture). */
  recoveredMs: number | undefined;
  /** The `caught-up <ms>` answers to `mark`, in order. */
  readonly caughtUp: number[] = [];
  /** From `pending <n>`, once a drain ends. */
  pending: number | undefined;
  stopped = false;

  constructor(options: GatewayChildOptions) {
    const args = [options.mode, options.db, options.cloudUrl, options.apiKey, String(options.first ?? 1)];
    if (options.killAfterAcks !== undefined) args.push(String(options.killAfterAcks));
    const env: NodeJS.ProcessEnv = { EDGE_CRASH_REPORT: '1' };
    if (options.processor) env.EDGE_CRASH_PROCESSOR = '1';
    if (options.batchSize !== undefined) env.EDGE_CRASH_BATCH_SIZE = String(options.batchSize);
    if (options.pauseMs !== undefined) env.EDGE_CRASH_PAUSE_MS = String(options.pauseMs);
    this.child = new TestChild(FIXTURE, args, (line) => this.#line(line), env);
  }

  #line(line: string): void {
    const space = line.indexOf(' ');
    const word = space < 0 ? line : line.slice(0, space);
    const rest = space < 0 ? '' : line.slice(space + 1);
    switch (word) {
      case 'ack':
        this.acked.push(Number(rest));
        break;
      case 'rss':
        this.maxRssKb = Math.max(this.maxRssKb, Number(rest));
        break;
      case 'started':
        this.replicaId = rest;
        break;
      case 'recovered':
        this.recoveredMs = Number(rest);
        break;
      case 'caught-up':
        this.caughtUp.push(Number(rest));
        break;
      case 'pending':
        this.pending = Number(rest);
        break;
      case 'stopped':
        this.stopped = true;
        break;
    }
  }

  get started(): boolean {
    return this.replicaId !== undefined;
  }

  /** The gateway's `error` events and failed sendData() calls, as the fixture reports them on stderr. */
  get errors(): string[] {
    return this.child.stderr.split('\n').filter((line) => /^(error|sendData failed) /.test(line));
  }

  waitUntilStarted(timeoutMs?: number): Promise<void> {
    return this.child.waitUntil('the gateway started', () => this.started, timeoutMs);
  }

  /** Asks for a `caught-up` answer (see the fixture) and waits for it; resolves with its ms. */
  async catchUp(timeoutMs?: number): Promise<number> {
    const before = this.caughtUp.length;
    this.child.send('mark');
    await this.child.waitUntil('the gateway caught up', () => this.caughtUp.length > before, timeoutMs);
    return this.caughtUp[before] as number;
  }

  /** Stops an ingest cleanly (stdin `stop`) and waits for it to exit. */
  async stop(timeoutMs?: number): Promise<ChildExit> {
    this.child.send('stop');
    return this.child.exit(timeoutMs);
  }
}
