import {
  type CloudStore,
  type IncomingBatch,
  type IngestOutcome,
  SqliteCloudStore,
  type StoredPoint,
  type TelemetryQuery,
} from '../../../src/cloud/index.js';

/**
 * The reference SQLite store, with a hook that runs once a chosen batch is committed and before the server
 * answers: a test kills the gateway from there, inside the window that idempotency exists for.
 */
export class HookedCloudStore implements CloudStore {
  readonly #inner: SqliteCloudStore;
  #countdown = 0;
  #hook: (() => void) | undefined;

  constructor(path: string) {
    this.#inner = new SqliteCloudStore(path);
  }

  /** Runs `hook` right after the `nth` batch from now is stored (not replayed). */
  afterStored(nth: number, hook: () => void): void {
    this.#countdown = nth;
    this.#hook = hook;
  }

  clearHook(): void {
    this.#hook = undefined;
  }

  lookup(key: string) {
    return this.#inner.lookup(key);
  }

  async ingest(batch: IncomingBatch): Promise<IngestOutcome> {
    const outcome = await this.#inner.ingest(batch);
    if (this.#hook && outcome.kind === 'stored' && --this.#countdown === 0) {
      const hook = this.#hook;
      this.#hook = undefined;
      hook();
    }
    return outcome;
  }

  noteReplay(key: string) {
    return this.#inner.noteReplay(key);
  }

  query(q: TelemetryQuery) {
    return this.#inner.query(q);
  }

  stats(deviceId?: string) {
    return this.#inner.stats(deviceId);
  }

  pushMutations(...args: Parameters<CloudStore['pushMutations']>) {
    return this.#inner.pushMutations(...args);
  }

  pullChanges(...args: Parameters<CloudStore['pullChanges']>) {
    return this.#inner.pullChanges(...args);
  }

  getRecord(collection: string, key: string) {
    return this.#inner.getRecord(collection, key);
  }

  editRecord(...args: Parameters<CloudStore['editRecord']>) {
    return this.#inner.editRecord(...args);
  }

  flagClockSkew(...args: Parameters<CloudStore['flagClockSkew']>) {
    return this.#inner.flagClockSkew(...args);
  }

  recordStats() {
    return this.#inner.recordStats();
  }

  latestHlc() {
    return this.#inner.latestHlc();
  }

  close() {
    return this.#inner.close();
  }
}

/** Every point a store holds for `deviceId`, a page at a time. */
export async function* storePages(store: CloudStore, deviceId: string): AsyncGenerator<StoredPoint[]> {
  let cursor: string | undefined;
  do {
    const page = await store.query({ deviceId, limit: 10_000, cursor });
    yield page.points;
    cursor = page.nextCursor ?? undefined;
  } while (cursor);
}

/** Every point a cloud server holds for `deviceId`, read over its HTTP API as an operator would, a page at a time. */
export async function* httpPages(url: string, apiKey: string, deviceId: string): AsyncGenerator<StoredPoint[]> {
  let cursor: string | null = null;
  do {
    const query = new URLSearchParams({ deviceId, limit: '10000' });
    if (cursor) query.set('cursor', cursor);
    const response = await fetch(`${url}/telemetry?${query}`, { headers: { authorization: `Bearer ${apiKey}` } });
    if (!response.ok) throw new Error(`GET /telemetry answered ${response.status}: ${await response.text()}`);
    const page = (await response.json()) as { points: StoredPoint[]; nextCursor: string | null };
    yield page.points;
    cursor = page.nextCursor;
  } while (cursor);
}
