import { type ChildProcess, spawn } from 'node:child_process';
import { createInterface } from 'node:readline';
import { fileURLToPath, pathToFileURL } from 'node:url';
import type { StoredPoint } from '../../../src/cloud/index.js';
import { CloudServer } from '../../../src/cloud/index.js';

const API_KEY = 'own-clock-key';
const SELF = fileURLToPath(import.meta.url);

/** A reference cloud server in a child process of its own, so that its clock is not the test's. */
export interface CloudProcess {
  /** Base URL to pass as `cloudUrl`. */
  url: string;
  apiKey: string;
  /** Every reading stored for `deviceId`, over HTTP, following cursors to the end. */
  points(deviceId: string): Promise<StoredPoint[]>;
  close(): Promise<void>;
}

/** Starts the cloud process and waits until it listens. */
export async function startCloudProcess(): Promise<CloudProcess> {
  const child: ChildProcess = spawn(process.execPath, ['--import', 'tsx', SELF], {
    stdio: ['pipe', 'pipe', 'inherit'],
  });
  const lines = createInterface({ input: child.stdout as NodeJS.ReadableStream });
  const url = await new Promise<string>((resolve, reject) => {
    child.once('exit', (code) => reject(new Error(`the cloud process exited with ${code} before it listened`)));
    lines.once('line', (line) => resolve((JSON.parse(line) as { url: string }).url));
  });
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  return {
    url,
    apiKey: API_KEY,
    async points(deviceId) {
      const all: StoredPoint[] = [];
      let cursor: string | null = null;
      do {
        const query = new URLSearchParams({ deviceId, limit: '10000' });
        if (cursor) query.set('cursor', cursor);
        const response = await fetch(`${url}/telemetry?${query}`, { headers: { authorization: `Bearer ${API_KEY}` } });
        if (!response.ok) throw new Error(`GET /telemetry answered ${response.status}: ${await response.text()}`);
        const page = (await response.json()) as { points: StoredPoint[]; nextCursor: string | null };
        all.push(...page.points);
        cursor = page.nextCursor;
      } while (cursor);
      return all;
    },
    async close() {
      child.stdin?.end();
      await exited;
    },
  };
}

// As a child: listen, print the URL, and exit when the parent closes stdin (or dies).
if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  const server = await CloudServer.listen({ port: 0, host: '127.0.0.1', dbPath: ':memory:', apiKeys: [API_KEY] });
  process.stdout.write(`${JSON.stringify({ url: server.url })}\n`);
  process.stdin.resume();
  process.stdin.on('end', () => {
    void server.close().then(() => process.exit(0));
  });
}
