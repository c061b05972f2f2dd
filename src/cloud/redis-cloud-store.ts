import type { createClient, RedisArgument } from '@redis/client';
import { CloudStoreError, ConfigError } from '../errors.js';
import type { CloudRecord, MutationResult, PullRequester, RecordChange } from '../model/records-wire.js';
import type { BatchAck, WirePoint } from '../model/wire.js';
import {
  type ChangePage,
  type ClockSkewFlag,
  type CloudStore,
  DEFAULT_PULL_SCAN_ROWS,
  type IncomingBatch,
  type IngestOutcome,
  type MutationContext,
  neverExistedRecord,
  type PushDecision,
  pullScanRowsProblem,
  type RecordEdit,
  type RecordStats,
  type StoredPoint,
  type TelemetryQuery,
  type TelemetryStats,
} from './cloud-store.js';
import type { RateDecision } from './rate-limiter.js';
import {
  EDIT_RECORD,
  INGEST,
  type LuaScript,
  NOTE_REPLAY,
  PULL_CHANGES,
  PUSH_MUTATION,
  TAKE_TOKEN,
} from './redis-scripts.js';

/** Options of {@link RedisCloudStore.connect}. */
export interface RedisCloudStoreOptions {
  /** `redis[s]://[[user][:password]@]host[:port][/db]`, e.g. `redis://127.0.0.1:6379/0`. */
  url: string;
  /**
   * Put before every key, so that several stores can share one Redis. Under Redis Cluster it must hold a hash tag
   * (`{...}`): every script touches several keys, and those must live in one slot. @default '{edge-gateway}:'
   */
  keyPrefix?: string;
  /** How long `connect()` keeps trying to reach Redis before it gives up, in ms. @default 5000 */
  connectTimeoutMs?: number;
  /**
   * Changes a pull page looks at, at most, to find its changes for a puller that names itself (never fewer than
   * the page's `limit`): the changes left out for it count here, not toward `limit`. It bounds the time one pull
   * holds Redis (one atomic script). @default 2000
   */
  pullScanRows?: number;
}

type Ack = Omit<BatchAck, 'serverTime'>;

/** What Redis answers to the commands this store sends (RESP3, default type mapping). */
type Reply = string | number | null | Reply[] | { [field: string]: Reply };

/** The stored form of a batch's readings: the validated wire points, as JSON, in a stream entry of the batch. */
interface BatchEntry {
  firstId: number;
  deviceId: string;
  replicaId: string;
  receivedAt: number;
  points: WirePoint[];
}

/** Batch entries read per round trip while a query scans. */
const SCAN_BATCHES = 64;

/**
 * A {@link CloudStore} on Redis, for several stateless server nodes over one store: same semantics as
 * {@link SqliteCloudStore}, proven by the same server test suite. Every write that must be atomic is one Lua script
 * (see redis-scripts.ts); reads are single commands or read-only scripts. Durability is Redis's: with
 * `appendonly yes` and `appendfsync always` an acknowledged batch survives a crash of Redis; with `everysec`, up to
 * a second of acknowledgements may be lost with it (docs/scaling.md).
 *
 * Key layout, under `keyPrefix` (P):
 *
 * | key | type | holds |
 * |---|---|---|
 * | `P ledger:{idempotencyKey}` | hash | `hash`, `ack`, `device`, `at`, `replays` of a stored batch |
 * | `P points` | stream | one entry per stored batch, ID `{firstId}-0`: `d` device, `r` replica, `t` received at, `p` readings JSON |
 * | `P point-id` | string | the last reading id given (reading ids are global, in storage order) |
 * | `P batches` | zset | every batch entry: member its first reading id, score its last |
 * | `P device-batches:{deviceId}` | zset | the same, for one device |
 * | `P stats`, `P device-stats:{deviceId}` | hash | `points`, `batches`, `replays` |
 * | `P rec:{collection}:{key}` | hash | `value` (JSON, absent on a tombstone), `deleted`, `version`, `hlc`, `origin`, `seq`; `known-by`, `known-at`: the device whose unrestamped mutation wrote this state, and the version it was told |
 * | `P changes` | zset | every record, `{collection}:{key}`, scored by its last change's sequence number |
 * | `P change-seq` | string | the last change sequence number given |
 * | `P hlc-high` | string | the greatest stamp stored |
 * | `P record-counts` | hash | `records`, `tombstones` |
 * | `P mid:{mid}` | string | the stored outcome of a mutation, JSON |
 * | `P clock-skew` | hash | device id → its latest clock-skew finding, JSON |
 * | `P rate:{keyId}` | hash | `tokens`, `at` (ms, the server's clock) of an API key's rate bucket; expires once full |
 *
 * @example
 * ```ts
 * const store = await RedisCloudStore.connect({ url: 'redis://127.0.0.1:6379' });
 * const server = await CloudServer.listen({ store, apiKeys: ['k'] });
 * ```
 */
export class RedisCloudStore implements CloudStore {
  readonly #client: Client;
  readonly #prefix: string;
  readonly #pullScanRows: number;
  #closing: Promise<void> | undefined;

  private constructor(client: Client, prefix: string, pullScanRows: number) {
    this.#client = client;
    this.#prefix = prefix;
    this.#pullScanRows = pullScanRows;
  }

  /**
   * Connects to Redis; rejects with {@link CloudStoreError} when it cannot within `connectTimeoutMs`. Once
   * connected, a lost connection is retried for ever (backing off up to 2 s); meanwhile every call fails at once,
   * so that the server answers 500 and gateways try another node or later, instead of waiting on a queue.
   */
  static async connect(options: RedisCloudStoreOptions): Promise<RedisCloudStore> {
    const problems: string[] = [];
    if (!/^rediss?:\/\//.test(options.url ?? '')) {
      problems.push(`Expected the "url" option to be a redis:// or rediss:// URL (got ${JSON.stringify(options.url)})`);
    }
    const prefix = options.keyPrefix ?? '{edge-gateway}:';
    if (typeof prefix !== 'string') {
      problems.push(`Expected the "keyPrefix" option to be a string (got ${JSON.stringify(prefix)})`);
    }
    const timeoutMs = options.connectTimeoutMs ?? 5000;
    if (!(Number.isFinite(timeoutMs) && timeoutMs > 0)) {
      problems.push(`Expected the "connectTimeoutMs" option to be a positive number (got ${String(timeoutMs)})`);
    }
    const scanProblem = pullScanRowsProblem(options.pullScanRows);
    if (scanProblem) problems.push(scanProblem);
    if (problems.length > 0) throw new ConfigError(problems);

    const deadline = Date.now() + timeoutMs;
    let connected = false;
    let lastError: Error | undefined;
    // Loaded here, not at import: the client costs ~17 MiB, which a server on SQLite need not carry.
    const { createClient: create } = await import('@redis/client');
    const client = makeClient(create, options.url, timeoutMs, (retries, cause) => {
      if (!connected && Date.now() >= deadline) return cause;
      return Math.min(50 * 2 ** Math.min(retries, 6), 2000);
    });
    // Without a listener an 'error' event would end the process; the failed calls report what matters.
    client.on('error', (error: Error) => {
      lastError = error;
    });
    try {
      await client.connect();
      connected = true;
    } catch (error) {
      client.destroy();
      const reason = (lastError ?? (error as Error)).message;
      throw new CloudStoreError(`Could not connect to Redis at ${redactUrl(options.url)}: ${reason}`, { cause: error });
    }
    return new RedisCloudStore(client, prefix, options.pullScanRows ?? DEFAULT_PULL_SCAN_ROWS);
  }

  /** The prefix of every key of this store. */
  get keyPrefix(): string {
    return this.#prefix;
  }

  #key(name: string): string {
    return this.#prefix + name;
  }

  async #command<T extends Reply>(args: readonly RedisArgument[]): Promise<T> {
    try {
      return await this.#client.sendCommand<T>(args);
    } catch (error) {
      throw storeError(error);
    }
  }

  /** EVALSHA, or EVAL once when Redis does not know the script (a fresh or restarted Redis, a SCRIPT FLUSH). */
  async #run<T extends Reply>(script: LuaScript, keys: readonly string[], args: readonly RedisArgument[]): Promise<T> {
    const tail = [String(keys.length), ...keys, ...args];
    try {
      return await this.#client.sendCommand<T>(['EVALSHA', script.sha, ...tail]);
    } catch (error) {
      if (!(error instanceof Error && error.message.startsWith('NOSCRIPT'))) throw storeError(error);
    }
    try {
      return await this.#client.sendCommand<T>(['EVAL', script.source, ...tail]);
    } catch (error) {
      throw storeError(error);
    }
  }

  async lookup(idempotencyKey: string): Promise<{ hash: string; ack: Ack } | undefined> {
    const [hash, ack] = await this.#command<(string | null)[]>([
      'HMGET',
      this.#key(`ledger:${idempotencyKey}`),
      'hash',
      'ack',
    ]);
    return hash && ack ? { hash, ack: JSON.parse(ack) as Ack } : undefined;
  }

  async ingest(batch: IncomingBatch): Promise<IngestOutcome> {
    const ack: Ack = { ackThroughBatchNo: batch.batchNo, accepted: batch.points.length, duplicates: 0 };
    const [kind, stored] = await this.#run<(string | null)[]>(
      INGEST,
      [
        this.#key(`ledger:${batch.idempotencyKey}`),
        this.#key('point-id'),
        this.#key('points'),
        this.#key('batches'),
        this.#key(`device-batches:${batch.deviceId}`),
        this.#key('stats'),
        this.#key(`device-stats:${batch.deviceId}`),
      ],
      [
        batch.hash,
        JSON.stringify(ack),
        batch.deviceId,
        batch.replicaId,
        String(Date.now()),
        String(batch.points.length),
        JSON.stringify(batch.points),
      ],
    );
    if (kind === 'conflict') return { kind: 'conflict' };
    return { kind: kind === 'replayed' ? 'replayed' : 'stored', ack: JSON.parse(stored ?? 'null') as Ack };
  }

  async noteReplay(idempotencyKey: string): Promise<void> {
    const ledger = this.#key(`ledger:${idempotencyKey}`);
    const device = await this.#command<string | null>(['HGET', ledger, 'device']);
    if (device === null) return;
    await this.#run(NOTE_REPLAY, [ledger, this.#key('stats'), this.#key(`device-stats:${device}`)], []);
  }

  async query(q: TelemetryQuery): Promise<{ points: StoredPoint[]; nextCursor: string | null }> {
    const index = this.#key(q.deviceId === undefined ? 'batches' : `device-batches:${q.deviceId}`);
    const after = q.cursor ? Number(q.cursor) : 0;
    const found: { id: number; point: StoredPoint }[] = [];
    // Batches whose last reading id is past the cursor, in storage order; a batch's readings, filtered, in order.
    let from = `(${after}`;
    while (found.length <= q.limit) {
      const firsts = await this.#command<string[]>([
        'ZRANGE',
        index,
        from,
        '+inf',
        'BYSCORE',
        'LIMIT',
        '0',
        String(SCAN_BATCHES),
      ]);
      if (firsts.length === 0) break;
      const entries = await this.#batchEntries(firsts);
      for (const entry of entries) {
        for (const [i, point] of entry.points.entries()) {
          const id = entry.firstId + i;
          if (id <= after || !matches(point, q)) continue;
          found.push({ id, point: toStoredPoint(entry, point) });
          if (found.length > q.limit) break;
        }
        if (found.length > q.limit) break;
      }
      if (firsts.length < SCAN_BATCHES) break;
      const lastEntry = entries.at(-1);
      if (!lastEntry) break;
      from = `(${lastEntry.firstId + lastEntry.points.length - 1}`;
    }
    const more = found.length > q.limit;
    const page = more ? found.slice(0, q.limit) : found;
    const last = page.at(-1);
    return { points: page.map((f) => f.point), nextCursor: more && last ? String(last.id) : null };
  }

  /** The stream entries of the batches whose first reading ids are `firsts`, in that order. */
  async #batchEntries(firsts: readonly string[]): Promise<BatchEntry[]> {
    const stream = this.#key('points');
    // Sent together: the client writes them in one go and Redis answers them in order.
    const replies = await Promise.all(
      firsts.map((first) => this.#command<[string, string[]][]>(['XRANGE', stream, `${first}-0`, `${first}-0`])),
    );
    const entries: BatchEntry[] = [];
    for (const [i, reply] of replies.entries()) {
      const entry = reply[0];
      if (!entry) throw new CloudStoreError(`Redis holds no readings entry ${firsts[i]}-0 for an indexed batch`);
      const fields = fieldMap(entry[1]);
      entries.push({
        firstId: Number(firsts[i]),
        deviceId: fields.d ?? '',
        replicaId: fields.r ?? '',
        receivedAt: Number(fields.t),
        points: JSON.parse(fields.p ?? '[]') as WirePoint[],
      });
    }
    return entries;
  }

  async stats(deviceId?: string): Promise<TelemetryStats> {
    const key = this.#key(deviceId === undefined ? 'stats' : `device-stats:${deviceId}`);
    const [points, batches, replays] = await this.#command<(string | null)[]>([
      'HMGET',
      key,
      'points',
      'batches',
      'replays',
    ]);
    return { points: Number(points ?? 0), batches: Number(batches ?? 0), duplicateBatches: Number(replays ?? 0) };
  }

  async pushMutations(context: MutationContext, items: readonly PushDecision[]): Promise<MutationResult[]> {
    // Sent together, run in order: each is atomic with its outcome (the contract allows item by item).
    const outcomes = await Promise.all(items.map((item) => this.#decide(context, item)));
    return outcomes.map((json) => JSON.parse(json) as MutationResult);
  }

  #decide(context: MutationContext, item: PushDecision): Promise<string> {
    if (item.kind === 'invalid') {
      const rejected: MutationResult = { mid: item.mid, status: 'rejected', reason: item.reason };
      return this.#run<string>(PUSH_MUTATION, [this.#key(`mid:${item.mid}`)], ['reject', JSON.stringify(rejected)]);
    }
    const { mutation: m, stamp } = item;
    const applied: MutationResult = {
      mid: m.mid,
      status: 'applied',
      version: m.baseVersion + 1,
      hlc: stamp.hlc,
      ...(stamp.restamped ? { restamped: true } : {}),
    };
    const member = `${m.collection}:${m.key}`;
    const conflictHead = `${JSON.stringify({ mid: m.mid, status: 'conflict' }).slice(0, -1)},"current":`;
    const recordHead = `${JSON.stringify({ collection: m.collection, key: m.key }).slice(0, -1)},"value":`;
    return this.#run<string>(
      PUSH_MUTATION,
      [this.#key(`mid:${m.mid}`), ...this.#recordKeys(member)],
      [
        m.op,
        JSON.stringify(applied),
        String(m.baseVersion),
        m.op === 'put' ? JSON.stringify(m.value ?? null) : '',
        stamp.hlc,
        context.replicaId,
        member,
        conflictHead,
        recordHead,
        JSON.stringify(neverExistedRecord(m.collection, m.key)),
        // Known to its writer only as stored: a restamped write holds a stamp the device has not written.
        stamp.restamped ? '' : context.deviceId,
      ],
    );
  }

  /** The keys a record write touches, in the order the record scripts take them. */
  #recordKeys(member: string): string[] {
    return [
      this.#key(`rec:${member}`),
      this.#key('change-seq'),
      this.#key('changes'),
      this.#key('hlc-high'),
      this.#key('record-counts'),
    ];
  }

  async pullChanges(cursor: number, limit: number, requester?: PullRequester): Promise<ChangePage> {
    const [more, last, rows] = await this.#run<[number, string, (string | null)[][]]>(
      PULL_CHANGES,
      [this.#key('changes')],
      [
        String(cursor),
        String(limit),
        this.#key('rec:'),
        requester?.deviceId ?? '',
        requester?.replicaId ?? '',
        String(Math.max(limit, this.#pullScanRows)),
      ],
    );
    return { changes: rows.map(toChange), cursor: Number(last), hasMore: more === 1 };
  }

  async getRecord(collection: string, key: string): Promise<CloudRecord | undefined> {
    const [value, deleted, version, hlc, origin] = await this.#command<(string | null)[]>([
      'HMGET',
      this.#key(`rec:${collection}:${key}`),
      'value',
      'deleted',
      'version',
      'hlc',
      'origin',
    ]);
    if (version === null || version === undefined) return undefined;
    return {
      collection,
      key,
      value: value ? (JSON.parse(value) as unknown) : null,
      deleted: deleted === '1',
      version: Number(version),
      hlc: hlc ?? '',
      origin: origin ?? '',
    };
  }

  async editRecord(collection: string, key: string, edit: RecordEdit, hlc: string): Promise<CloudRecord> {
    const member = `${collection}:${key}`;
    const deleted = edit.op === 'delete';
    const value = edit.op === 'put' ? (edit.value ?? null) : null;
    const version = await this.#run<number>(EDIT_RECORD, this.#recordKeys(member), [
      deleted ? '1' : '0',
      deleted ? '' : JSON.stringify(value),
      hlc,
      'cloud',
      member,
    ]);
    return { collection, key, value, deleted, version: Number(version), hlc, origin: 'cloud' };
  }

  async flagClockSkew(flag: ClockSkewFlag): Promise<void> {
    const json = JSON.stringify({ replicaId: flag.replicaId, skewMs: flag.skewMs, at: flag.at });
    await this.#command(['HSET', this.#key('clock-skew'), flag.deviceId, json]);
  }

  async recordStats(): Promise<RecordStats> {
    const [counts, seq, flags] = await Promise.all([
      this.#command<(string | null)[]>(['HMGET', this.#key('record-counts'), 'records', 'tombstones']),
      this.#command<string | null>(['GET', this.#key('change-seq')]),
      this.#command<Record<string, string>>(['HGETALL', this.#key('clock-skew')]),
    ]);
    const flaggedDevices = Object.entries(flags).map(([deviceId, json]): ClockSkewFlag => {
      const { replicaId, skewMs, at } = JSON.parse(json) as Omit<ClockSkewFlag, 'deviceId'>;
      return { deviceId, replicaId, skewMs, at };
    });
    flaggedDevices.sort((a, b) =>
      a.at === b.at ? (a.deviceId < b.deviceId ? -1 : a.deviceId > b.deviceId ? 1 : 0) : a.at < b.at ? 1 : -1,
    );
    return {
      records: Number(counts[0] ?? 0),
      tombstones: Number(counts[1] ?? 0),
      changeSeq: Number(seq ?? 0),
      flaggedDevices,
    };
  }

  async latestHlc(): Promise<string | undefined> {
    return (await this.#command<string | null>(['GET', this.#key('hlc-high')])) ?? undefined;
  }

  /** One bucket per key for every node over this Redis: one Lua script reads, refills, takes and writes it. */
  async takeToken(
    id: string,
    limit: { requestsPerSecond: number; burst: number },
    nowMs: number,
  ): Promise<RateDecision> {
    const [allowed, retryAfterSeconds] = await this.#run<number[]>(
      TAKE_TOKEN,
      [this.#key(`rate:${id}`)],
      [String(nowMs), String(limit.requestsPerSecond), String(limit.burst)],
    );
    return allowed === 1 ? { allowed: true } : { allowed: false, retryAfterSeconds: Number(retryAfterSeconds) };
  }

  async forgetTokens(ids: readonly string[]): Promise<void> {
    if (ids.length > 0) await this.#command(['DEL', ...ids.map((id) => this.#key(`rate:${id}`))]);
  }

  /** Closes the connection once the calls in flight are answered. Safe to call twice. */
  close(): Promise<void> {
    this.#closing ??= this.#client.isOpen
      ? this.#client.close().catch(() => this.#client.destroy())
      : Promise.resolve();
    return this.#closing;
  }
}

/**
 * A RESP3 client that fails calls at once while disconnected (no offline queue): a node without its store answers
 * 500 at once, and the gateway tries the next node.
 */
function makeClient(
  create: typeof createClient,
  url: string,
  timeoutMs: number,
  reconnect: (retries: number, cause: Error) => number | Error,
) {
  return create({
    url,
    RESP: 3,
    disableOfflineQueue: true,
    // Redis Enterprise's maintenance notices: open-source Redis has none, and the handshake costs a round trip.
    maintNotifications: 'disabled',
    socket: { connectTimeout: Math.min(timeoutMs, 5000), reconnectStrategy: reconnect },
  });
}

type Client = ReturnType<typeof makeClient>;

function storeError(error: unknown): CloudStoreError {
  if (error instanceof CloudStoreError) return error;
  const message = error instanceof Error ? error.message : String(error);
  return new CloudStoreError(`Redis: ${message}`, { cause: error });
}

/** The URL without its password, for messages. */
function redactUrl(url: string): string {
  try {
    const parsed = new URL(url);
    if (parsed.password) parsed.password = '***';
    return parsed.toString();
  } catch {
    return '(an unreadable URL)';
  }
}

/** A stream entry's flat field list as an object. */
function fieldMap(flat: readonly string[]): Record<string, string> {
  const fields: Record<string, string> = {};
  for (let i = 0; i + 1 < flat.length; i += 2) fields[flat[i] as string] = flat[i + 1] as string;
  return fields;
}

function matches(p: WirePoint, q: TelemetryQuery): boolean {
  return (
    (q.sensorId === undefined || p.sensorId === q.sensorId) &&
    (q.from === undefined || p.ts >= q.from) &&
    (q.to === undefined || p.ts < q.to)
  );
}

/** A reading as the SQLite store returns it, field for field. */
function toStoredPoint(entry: BatchEntry, p: WirePoint): StoredPoint {
  return {
    deviceId: entry.deviceId,
    replicaId: entry.replicaId,
    seq: p.seq,
    sensorId: p.sensorId,
    timestamp: new Date(p.ts).toISOString(),
    ...(p.value === undefined ? {} : { value: p.value }),
    ...(p.unit === undefined ? {} : { unit: p.unit }),
    ...(p.tags === undefined ? {} : { tags: p.tags }),
    ...(p.data === undefined ? {} : { data: p.data }),
    receivedAt: new Date(entry.receivedAt).toISOString(),
  };
}

function toChange(row: readonly (string | null)[]): RecordChange {
  const [member, value, deleted, version, hlc, origin, seq] = row;
  if (!member) throw new CloudStoreError('Redis answered a change without its record');
  const split = member.indexOf(':');
  return {
    collection: member.slice(0, split),
    key: member.slice(split + 1),
    value: value ? (JSON.parse(value) as unknown) : null,
    deleted: deleted === '1',
    version: Number(version),
    hlc: hlc ?? '',
    origin: origin ?? '',
    seq: Number(seq),
  };
}
