import { isDeepStrictEqual } from 'node:util';
import type { Logger } from '../logger.js';
import {
  type CloudRecord,
  formatHlc,
  type MutationResult,
  parseHlc,
  RECORD_LIMITS,
  type RecordMutation,
} from '../model/records-wire.js';
import type {
  IncomingRecord,
  MutationOutcome,
  RecordStorage,
  StoredMutation,
  StoredRecord,
} from '../storage/record-storage.js';
import type { ExchangeResult, Transport } from '../transport/transport.js';
import type { ConflictResolver, ConflictStrategy, Resolution, SyncRecord } from './conflict-resolver.js';
import type { HybridClock } from './hlc.js';
import type { SyncErrorEvent } from './sync-result.js';

/** A conflict the gateway resolved: both sides, the strategy, and what won. */
export interface ConflictEvent {
  collection: string;
  key: string;
  edge: SyncRecord;
  cloud: SyncRecord;
  strategy: ConflictStrategy;
  /** `edge`, `cloud`, or `merged` when the resolver returned a value of its own. */
  winner: 'edge' | 'cloud' | 'merged';
  /** The record as it stands after the resolution (pushed again when the edge or a merge won). */
  resolved: SyncRecord;
}

/** What records sync tells the gateway. */
export interface RecordsListener {
  conflict(event: ConflictEvent): void;
  /** Records whose local state a pull or a resolution replaced with the cloud's. */
  changed(records: readonly SyncRecord[]): void;
  /** Mutations the cloud refused as invalid, set aside in the record dead letters. */
  rejected(count: number, reason: string): void;
  error(event: SyncErrorEvent): void;
}

export interface RecordsSyncOptions {
  storage: RecordStorage;
  deviceId: string;
  replicaId: () => string;
  clock: () => HybridClock;
  /** The resolver and strategy in force, read at each conflict: they may change at run time. */
  resolver: () => { resolver: ConflictResolver; strategy: ConflictStrategy };
  resolverTimeoutMs: number;
  /** An edge stamp further ahead of the server's time than this is judged at the server's time (as it would). */
  maxClockSkewMs: number;
  listener: RecordsListener;
  logger: Logger;
  /** Saves the clock's offset to the server, so that a restart offline still stamps in the cloud's time. */
  saveClockOffset: (offsetMs: number) => void;
  /**
   * Whether pulls name this device and replica, so that the cloud leaves out the changes it wrote. Only when every
   * commit is durable: a power cut under synchronous=NORMAL can undo a local write the cloud has already applied,
   * and the cloud would then never send it back.
   */
  namePuller: boolean;
}

/** The outcome of the records part of one sync cycle. */
export interface RecordsCycle {
  pushed: number;
  applied: number;
  conflicts: number;
  rejected: number;
  pulled: number;
  /** How the exchanges ended: `ok`, or the first failure (the rest of the cycle's records work was skipped). */
  failure?: Exclude<ExchangeResult<unknown>, { status: 'ok' }>;
  /** The cloud's clock at the last answer, and the round trip it came with. */
  serverTime?: { at: string; roundTripMs: number };
}

/** Rounds of push per cycle: a key whose resolver keeps failing must not hold the cycle. */
const MAX_PUSH_ROUNDS = 20;
/** Pages of pull per cycle; the next cycle goes on from the saved cursor. */
const MAX_PULL_PAGES = 50;
/** Changes asked for per pull page. */
export const PULL_PAGE_SIZE = 200;

const parseValue = (text: string | null): unknown => (text === null ? null : JSON.parse(text));

/** A stored record as a resolver and a listener see it. */
export function toSyncRecord(record: StoredRecord | IncomingRecord): SyncRecord {
  return {
    collection: record.collection,
    key: record.key,
    value: record.deleted ? null : parseValue(record.value),
    version: record.version,
    timestamp: new Date(parseHlc(record.hlc).ms),
    hlc: record.hlc,
    origin: record.origin,
    deleted: record.deleted,
  };
}

const fromCloud = (record: CloudRecord): IncomingRecord => ({
  collection: record.collection,
  key: record.key,
  value: record.deleted ? null : JSON.stringify(record.value ?? null),
  deleted: record.deleted,
  version: record.version,
  hlc: record.hlc,
  origin: record.origin,
});

/**
 * The records half of a sync cycle (DESIGN §4): pushes local edits, resolves conflicts with the user's strategy,
 * pulls the cloud's changes. Every step is one transaction of {@link RecordStorage}; a crash between steps
 * resends the same mutations (same ids), which the cloud answers from its stored outcomes.
 */
export class RecordsSync {
  readonly #o: RecordsSyncOptions;
  /** False once the cloud answered 404 to records: it has no records API; telemetry goes on without. */
  #supported = true;

  constructor(options: RecordsSyncOptions) {
    this.#o = options;
  }

  get supported(): boolean {
    return this.#supported;
  }

  /** Local edits not yet settled with the cloud. */
  pendingCount(): number {
    return this.#o.storage.mutationCount();
  }

  /** Pushes what is pending, then pulls: always, never, or only when anything was pushed (`if-pushed`). */
  async run(transport: Transport, signal: AbortSignal, pull: boolean | 'if-pushed'): Promise<RecordsCycle> {
    const cycle: RecordsCycle = { pushed: 0, applied: 0, conflicts: 0, rejected: 0, pulled: 0 };
    if (!this.#supported || !transport.pushRecords || !transport.pullRecords) return cycle;
    for (let round = 0; round < MAX_PUSH_ROUNDS && !signal.aborted; round++) {
      const mutations = this.#o.storage.takeOutgoing(RECORD_LIMITS.mutationsPerPush);
      if (mutations.length === 0) break;
      const settled = await this.#push(transport, mutations, signal, cycle);
      if (cycle.failure || settled === 0) break;
    }
    if (cycle.failure || signal.aborted || pull === false || (pull === 'if-pushed' && cycle.pushed === 0)) return cycle;
    for (let page = 0; page < MAX_PULL_PAGES && !signal.aborted; page++) {
      const more = await this.#pull(transport, signal, cycle);
      if (!more) break;
    }
    return cycle;
  }

  #noteServerTime(cycle: RecordsCycle, serverTime: string, roundTripMs: number): void {
    cycle.serverTime = { at: serverTime, roundTripMs };
    this.observeServerTime(serverTime, roundTripMs);
  }

  /** Keeps the clock in step with the cloud's, from any answer that carries its time. */
  observeServerTime(serverTime: string, roundTripMs: number): void {
    const before = this.#o.clock().offsetMs;
    const offset = this.#o.clock().observeServerTime(serverTime, roundTripMs);
    if (Math.abs(offset - before) > 1000) this.#o.saveClockOffset(offset);
  }

  #failed(cycle: RecordsCycle, result: Exclude<ExchangeResult<unknown>, { status: 'ok' }>, what: string): void {
    if (result.status === 'refused' && result.httpStatus === 404) {
      this.#supported = false;
      this.#o.logger.warn(
        { httpStatus: 404 },
        `the cloud has no records API (${what} answered 404); records stay local`,
      );
      return;
    }
    cycle.failure = result;
  }

  // One push round. Returns how many mutations were settled (applied, resolved or set aside).
  async #push(
    transport: Transport,
    mutations: readonly StoredMutation[],
    signal: AbortSignal,
    cycle: RecordsCycle,
  ): Promise<number> {
    const replicaId = this.#o.replicaId();
    const byMid = new Map<string, StoredMutation>();
    const wire: RecordMutation[] = mutations.map((m) => {
      const mid = `${replicaId}:${m.id}`;
      byMid.set(mid, m);
      return {
        mid,
        collection: m.collection,
        key: m.key,
        op: m.op,
        ...(m.op === 'put' ? { value: parseValue(m.value) } : {}),
        baseVersion: m.baseVersion ?? 0,
        hlc: m.hlc,
      };
    });
    const sentAt = performance.now();
    const answer = await transport.pushRecords?.({ deviceId: this.#o.deviceId, replicaId, mutations: wire }, signal);
    if (!answer) return 0;
    if (answer.status !== 'ok') {
      this.#failed(cycle, answer, 'push');
      return 0;
    }
    const { results, serverTime } = answer.body;
    this.#noteServerTime(cycle, serverTime, performance.now() - sentAt);
    cycle.pushed += mutations.length;
    // Resolve what conflicted (async: a custom resolver may take its time), then record every outcome of the
    // push in one transaction: one commit for the whole push, not one per mutation.
    const planned: Planned[] = [];
    for (const result of results) {
      const mutation = byMid.get(result.mid);
      if (!mutation) continue; // an answer about a mutation not sent: nothing to settle
      const plan = await this.#plan(mutation, result, serverTime, cycle);
      if (plan) planned.push(plan);
    }
    if (planned.length === 0) return 0;
    const done = this.#o.storage.settle(planned.map((p) => p.outcome));
    let settled = 0;
    for (const [i, plan] of planned.entries()) {
      if (!done[i]) continue;
      settled++;
      plan.after?.();
    }
    return settled;
  }

  // What to record for one result, and what to tell once it is recorded; undefined leaves the mutation pending.
  async #plan(
    mutation: StoredMutation,
    result: MutationResult,
    serverTime: string,
    cycle: RecordsCycle,
  ): Promise<Planned | undefined> {
    const clock = this.#o.clock();
    switch (result.status) {
      case 'applied':
        clock.receive(result.hlc);
        cycle.applied++;
        return { outcome: { kind: 'applied', id: mutation.id, version: result.version, hlc: result.hlc } };
      case 'rejected': {
        cycle.rejected++;
        const mid = `${this.#o.replicaId()}:${mutation.id}`;
        return {
          outcome: { kind: 'rejected', id: mutation.id, mid, reason: result.reason },
          after: () => this.#o.listener.rejected(1, `${mutation.collection}/${mutation.key}: ${result.reason}`),
        };
      }
      case 'conflict':
        cycle.conflicts++;
        clock.receive(result.current.hlc);
        return this.#resolve(mutation, fromCloud(result.current), serverTime);
    }
  }

  // Resolves one conflict with the strategy in force. The outcome is version-checked: the cloud side is taken, or
  // the winner is queued against the cloud's version (and meets the same check on the next push).
  async #resolve(mutation: StoredMutation, current: IncomingRecord, serverTime: string): Promise<Planned | undefined> {
    const { storage, listener } = this.#o;
    const local = storage.get(mutation.collection, mutation.key);
    if (!local) return undefined;
    const edge = { ...toSyncRecord(local), version: mutation.baseVersion ?? 0 };
    const cloud = toSyncRecord(current);
    const judged = this.#judgedAtServerTime(edge, serverTime);
    const { resolver, strategy } = this.#o.resolver();
    let resolution: Resolution;
    try {
      resolution = await this.#withDeadline(resolver.resolve(judged, cloud), mutation);
      checkResolution(resolution);
    } catch (error) {
      listener.error({
        code: 'CONFLICT_UNRESOLVED',
        message: `the conflict resolver failed on ${mutation.collection}/${mutation.key}; the edit stays pending: ${(error as Error).message}`,
      });
      return undefined;
    }
    const winner = resolution === cloud ? 'cloud' : resolution === judged || resolution === edge ? 'edge' : 'merged';
    const merged = winner === 'merged' ? (resolution as { value: unknown; deleted?: boolean }) : undefined;
    // A merge equal to the cloud's state needs no push: take the cloud's record, version and all.
    if (
      winner === 'cloud' ||
      (merged &&
        (merged.deleted ?? false) === cloud.deleted &&
        (cloud.deleted || isDeepStrictEqual(merged.value, cloud.value)))
    ) {
      return {
        outcome: { kind: 'take-cloud', id: mutation.id, cloud: current, seenHlc: local.hlc },
        after: () => {
          listener.conflict({ ...base(mutation), edge, cloud, strategy, winner, resolved: cloud });
          listener.changed([cloud]);
        },
      };
    }
    const replicaId = this.#o.replicaId();
    const deleted = merged ? (merged.deleted ?? false) : edge.deleted;
    const value = deleted ? null : JSON.stringify(merged ? merged.value : edge.value);
    // The edge's own write keeps its stamp (it is what won); a merge is a new write.
    const hlc = merged ? this.#o.clock().tick() : edge.hlc;
    const origin = merged ? replicaId : edge.origin;
    const resolved = toSyncRecord({ ...base(mutation), value, deleted, version: current.version, hlc, origin });
    return {
      outcome: {
        kind: 'repush',
        id: mutation.id,
        cloudVersion: current.version,
        resolved: { value, hlc, origin },
        seenHlc: local.hlc,
      },
      after: () => listener.conflict({ ...base(mutation), edge, cloud, strategy, winner, resolved }),
    };
  }

  // A stamp more than the allowed skew ahead of the cloud's clock (DESIGN §4) says nothing about when the edit was
  // made: the device's clock was wrong when it made it, and the cloud restamps such an edit when it applies one.
  // In a conflict it is judged as older than any trusted write, so that a device an hour fast does not win every
  // last-write-wins conflict; the conflict event still shows the stamp the device wrote.
  #judgedAtServerTime(edge: SyncRecord, serverTime: string): SyncRecord {
    const serverMs = Date.parse(serverTime);
    if (!Number.isFinite(serverMs) || edge.timestamp.getTime() <= serverMs + this.#o.maxClockSkewMs) return edge;
    return { ...edge, hlc: formatHlc({ ms: 0, counter: 0 }), timestamp: new Date(0) };
  }

  #withDeadline<T>(work: T | Promise<T>, mutation: StoredMutation): Promise<T> {
    const ms = this.#o.resolverTimeoutMs;
    return new Promise<T>((resolve, reject) => {
      const timer = setTimeout(
        () => reject(new Error(`no answer within ${ms} ms for ${mutation.collection}/${mutation.key}`)),
        ms,
      );
      timer.unref();
      Promise.resolve(work).then(
        (value) => {
          clearTimeout(timer);
          resolve(value);
        },
        (error: unknown) => {
          clearTimeout(timer);
          reject(error);
        },
      );
    });
  }

  // One pull page, applied with its cursor in one transaction. Returns whether there is more.
  async #pull(transport: Transport, signal: AbortSignal, cycle: RecordsCycle): Promise<boolean> {
    const { storage, listener } = this.#o;
    const clock = this.#o.clock();
    const from = storage.pullCursor();
    // As the pusher of its own changes: the cloud leaves out those this replica holds already.
    const requester = this.#o.namePuller ? { deviceId: this.#o.deviceId, replicaId: this.#o.replicaId() } : undefined;
    const sentAt = performance.now();
    const answer = await transport.pullRecords?.(from, PULL_PAGE_SIZE, signal, requester);
    if (!answer) return false;
    if (answer.status !== 'ok') {
      this.#failed(cycle, answer, 'pull');
      return false;
    }
    const { changes, cursor, hasMore, serverTime } = answer.body;
    this.#noteServerTime(cycle, serverTime, performance.now() - sentAt);
    // A page may hold no change and still move the cursor past changes left out; with neither, nothing to write.
    const applied = changes.length === 0 && cursor === from ? [] : storage.applyPulled(changes.map(fromCloud), cursor);
    for (const change of changes) clock.receive(change.hlc);
    cycle.pulled += applied.length;
    if (applied.length > 0) listener.changed(applied.map(toSyncRecord));
    // Only while the cursor moves: a cloud that says hasMore without moving it would be asked again for ever.
    return hasMore && cursor > from;
  }
}

/** An outcome to record, and what to tell once it is recorded. */
interface Planned {
  outcome: MutationOutcome;
  after?: () => void;
}

const base = (m: { collection: string; key: string }) => ({ collection: m.collection, key: m.key });

// A resolver's answer must be one side or `{ value, deleted? }` with a value that survives JSON within the limits.
function checkResolution(resolution: unknown): void {
  if (typeof resolution !== 'object' || resolution === null || !('value' in resolution)) {
    throw new TypeError('the resolver must return the edge record, the cloud record, or { value, deleted? }');
  }
  const { value, deleted } = resolution as { value: unknown; deleted?: unknown };
  if (deleted !== undefined && typeof deleted !== 'boolean') throw new TypeError('"deleted" must be a boolean');
  if (deleted === true) return;
  const text = JSON.stringify(value);
  if (text === undefined) throw new TypeError('the resolved value cannot be written as JSON');
  if (Buffer.byteLength(text) > RECORD_LIMITS.valueBytes) {
    throw new RangeError(`the resolved value is over ${RECORD_LIMITS.valueBytes} bytes of JSON`);
  }
}
