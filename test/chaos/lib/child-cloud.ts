import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import { TestChild } from './child-process.js';

const FIXTURE = fileURLToPath(new URL('../../fixtures/cloud-server.ts', import.meta.url));

/** Where test/fixtures/cloud-server.ts can hold a batch: read and not stored, or stored and not answered. */
export type HoldPhase = 'received' | 'stored';

/**
 * The reference cloud server in a child process (test/fixtures/cloud-server.ts), on a file-backed store, so that
 * it can be SIGKILLed mid-request and started again on the same port and database.
 */
export class CloudChild {
  readonly child: TestChild;
  url: string | undefined;
  /** Idempotency keys of the batches it holds, by phase. */
  readonly held: { phase: HoldPhase; key: string }[] = [];

  private constructor(db: string, port: number, apiKey: string) {
    this.child = new TestChild(FIXTURE, [db, String(port), apiKey], (line) => this.#line(line));
  }

  /**
   * Starts it and waits until it listens. A port freed a moment ago can still be busy for a while (a connection
   * of the killed server's being torn down): it tries again, a few times.
   */
  static async start(db: string, port: number, apiKey: string, timeoutMs = 30_000): Promise<CloudChild> {
    for (let attempt = 1; ; attempt++) {
      const cloud = new CloudChild(db, port, apiKey);
      try {
        await cloud.child.waitUntil('the cloud server listened', () => cloud.url !== undefined, timeoutMs);
        return cloud;
      } catch (error) {
        await cloud.child.kill();
        if (attempt === 5 || !/EADDRINUSE/.test(cloud.child.stderr)) throw error;
        await sleep(100 * attempt);
      }
    }
  }

  /** Holds the `nth` batch from now that reaches `phase`, until it is killed; see {@link waitUntilHeld}. */
  hold(phase: HoldPhase, nth: number): void {
    this.child.send(`hold ${phase} ${nth}`);
  }

  waitUntilHeld(timeoutMs?: number): Promise<void> {
    return this.child.waitUntil('the cloud server held a batch', () => this.held.length > 0, timeoutMs);
  }

  #line(line: string): void {
    const held = /^held (received|stored) (.+)$/.exec(line);
    if (held) this.held.push({ phase: held[1] as HoldPhase, key: held[2] as string });
    else if (line.startsWith('listening ')) this.url = line.slice('listening '.length);
  }
}
