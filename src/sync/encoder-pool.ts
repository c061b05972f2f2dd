import { createRequire } from 'node:module';
import type { Worker } from 'node:worker_threads';
import type { Logger } from '../logger.js';
import type { OutboxRow, SealInput } from '../storage/storage.js';
import { type BatchHeader, type CompressionSetting, encodeBatch, type WireFormat } from './batch-codec.js';

/** One batch to encode: what `encodeBatch()` takes. */
export interface EncodeJob {
  header: BatchHeader;
  batchNo: number;
  rows: readonly OutboxRow[];
  compression: CompressionSetting;
  format: WireFormat;
}

/** A job as posted to a thread. @internal */
export interface EncodeRequest extends EncodeJob {
  id: number;
}

/** A thread's answer: the encoding, or what the codec threw. @internal */
export type EncodeReply =
  | { id: number; input: SealInput; error?: undefined }
  | { id: number; input?: undefined; error: { name: string; message: string } };

/** What the sync loop needs of an encoder off the event loop. */
export interface BatchEncoder {
  /** Whether a batch of `rows` rows of this format is worth a thread; if not, the sync loop encodes it inline. */
  offloads(format: WireFormat, compression: CompressionSetting, rows: number): boolean;
  /**
   * The batch's encoding, byte for byte what `encodeBatch()` returns on the event loop. Rejects with
   * `signal.reason` once `signal` aborts (the thread's answer, when it comes, is dropped).
   */
  encode(job: EncodeJob, signal: AbortSignal): Promise<SealInput>;
}

/**
 * Smallest batch sent to a thread. Below it a thread saves the event loop a millisecond or less a batch
 * (docs/benchmarks.md, "Event loop").
 */
export const MIN_OFFLOADED_ROWS = 1000;
/** Threads that fail after having worked, before the pool stops starting new ones and encodes inline. */
const MAX_THREAD_FAILURES = 3;

interface Job {
  request: EncodeRequest;
  settle(outcome: { input: SealInput } | { error: unknown }): void;
  settled: boolean;
}

interface Thread {
  worker: Worker;
  job: Job | undefined;
  /** True once it answered a job: a thread that dies before that could not start at all. */
  answered: boolean;
}

// From dist/ the entry is a sibling of the chunk running this: encode-worker.js, or .cjs for the CommonJS build.
// From source (tests, tsx) it is TypeScript, which a worker cannot load by itself: a small module loads it with tsx.
// node:worker_threads is loaded with the first thread: a gateway without threads does not pay for it.
function startWorker(): Worker {
  const here = import.meta.url;
  const { Worker } = createRequire(here)('node:worker_threads') as typeof import('node:worker_threads');
  if (new URL(here).pathname.endsWith('.ts')) return new Worker(new URL('./encode-worker-from-source.mjs', here));
  return new Worker(new URL(here.endsWith('.cjs') ? './encode-worker.cjs' : './encode-worker.js', here));
}

const asError = (reply: { name: string; message: string }): Error => {
  const error = new Error(reply.message);
  error.name = reply.name;
  return error;
};

/**
 * Worker threads that encode and compress batches off the event loop (the `workerThreads` option). Threads start
 * on the first job that needs one and stay until {@link EncoderPool.close}, unref'd while idle so that they never
 * keep a process alive. A job waits for a free thread; a thread that dies mid-job, or threads that cannot start
 * (a bundler left the entry file behind), do not lose the job: it is encoded inline, and after a failure to start
 * (or {@link MAX_THREAD_FAILURES} crashes) every later one too, with one warning in the log.
 */
export class EncoderPool implements BatchEncoder {
  #size: number;
  readonly #logger: Logger;
  readonly #startWorker: () => Worker;
  readonly #threads = new Set<Thread>();
  readonly #waiting: Job[] = [];
  #nextId = 1;
  #failures = 0;
  /** Why threads are not used any more, once they failed to start. */
  #unavailable: string | undefined;

  /**
   * @param size threads at most, 1 or more
   * @param start starts one thread running encode-worker; tests replace it to make threads fail
   */
  constructor(size: number, logger: Logger, start: () => Worker = startWorker) {
    this.#size = size;
    this.#logger = logger;
    this.#startWorker = start;
  }

  /** Threads the pool may start. */
  get size(): number {
    return this.#size;
  }

  /** Threads running now. */
  get running(): number {
    return this.#threads.size;
  }

  /** Why jobs are encoded inline rather than in threads, once threads failed; undefined while they work. */
  get unavailable(): string | undefined {
    return this.#unavailable;
  }

  /** Changes how many threads the pool may run; idle threads beyond it stop now, busy ones after their job. */
  resize(size: number): void {
    this.#size = size;
    for (const thread of this.#threads) {
      if (this.#threads.size <= size) break;
      if (!thread.job) void this.#retire(thread);
    }
  }

  /**
   * Gzip'd JSON batches of {@link MIN_OFFLOADED_ROWS} rows or more. Not compact batches, nor uncompressed JSON:
   * encoding those costs about what copying their rows to a thread does (docs/benchmarks.md, "Event loop").
   */
  offloads(format: WireFormat, compression: CompressionSetting, rows: number): boolean {
    return format === 'json' && compression !== false && rows >= MIN_OFFLOADED_ROWS;
  }

  encode(job: EncodeJob, signal: AbortSignal): Promise<SealInput> {
    if (signal.aborted) return Promise.reject(signal.reason);
    return new Promise<SealInput>((resolve, reject) => {
      const onAbort = () => entry.settle({ error: signal.reason });
      const entry: Job = {
        request: { ...job, id: this.#nextId++ },
        settled: false,
        settle: (outcome) => {
          if (entry.settled) return;
          entry.settled = true;
          signal.removeEventListener('abort', onAbort);
          if ('input' in outcome) resolve(outcome.input);
          else reject(outcome.error);
        },
      };
      signal.addEventListener('abort', onAbort, { once: true });
      this.#waiting.push(entry);
      this.#dispatch();
    });
  }

  /** Stops every thread; a job in flight is finished inline. Safe to call twice. */
  async close(): Promise<void> {
    this.#size = 0;
    await Promise.all([...this.#threads].map((thread) => this.#retire(thread)));
  }

  #dispatch(): void {
    while (this.#waiting.length > 0) {
      const job = this.#waiting[0] as Job;
      if (job.settled) {
        this.#waiting.shift();
        continue;
      }
      if (this.#unavailable !== undefined || this.#size === 0) {
        this.#waiting.shift();
        this.#inline(job);
        continue;
      }
      const thread = this.#idleThread() ?? (this.#threads.size < this.#size ? this.#start() : undefined);
      if (!thread) {
        if (this.#unavailable !== undefined) continue; // it could not start: this job and the rest go inline
        return; // all busy: the next answer dispatches again
      }
      this.#waiting.shift();
      thread.job = job;
      thread.worker.ref(); // a job in flight keeps the process alive, as inline work would
      thread.worker.postMessage(job.request);
    }
  }

  #idleThread(): Thread | undefined {
    for (const thread of this.#threads) if (!thread.job) return thread;
    return undefined;
  }

  #start(): Thread | undefined {
    let worker: Worker;
    try {
      worker = this.#startWorker();
    } catch (error) {
      this.#giveUp(error);
      return undefined;
    }
    worker.unref();
    const thread: Thread = { worker, job: undefined, answered: false };
    this.#threads.add(thread);
    worker.on('message', (reply: EncodeReply) => this.#answered(thread, reply));
    worker.on('error', (error) => this.#lost(thread, error));
    worker.on('exit', (code) => this.#lost(thread, new Error(`the encoder thread exited with code ${code}`)));
    return thread;
  }

  #answered(thread: Thread, reply: EncodeReply): void {
    thread.answered = true;
    const job = thread.job;
    thread.job = undefined;
    thread.worker.unref();
    if (job && job.request.id === reply.id) {
      job.settle(reply.error ? { error: asError(reply.error) } : { input: reply.input });
    }
    if (this.#threads.size > this.#size) void this.#retire(thread);
    this.#dispatch();
  }

  // A thread that errs or exits unasked: its job is encoded inline, so that nothing waits on a dead thread.
  #lost(thread: Thread, error: Error): void {
    if (!this.#threads.delete(thread)) return; // retired on purpose, or already counted
    void thread.worker.terminate();
    const job = thread.job;
    thread.job = undefined;
    if (!thread.answered) this.#giveUp(error);
    else if (++this.#failures >= MAX_THREAD_FAILURES) this.#giveUp(error);
    else this.#logger.warn({ err: error }, 'an encoder thread failed; the pool starts another');
    if (job) this.#inline(job);
    this.#dispatch();
  }

  #giveUp(error: unknown): void {
    if (this.#unavailable !== undefined) return;
    this.#unavailable = (error as Error)?.message ?? String(error);
    this.#logger.warn(
      { err: error },
      `encoder threads are unavailable (${this.#unavailable}); batches are encoded on the event loop`,
    );
  }

  #retire(thread: Thread): Promise<unknown> {
    this.#threads.delete(thread);
    const job = thread.job;
    thread.job = undefined;
    if (job) this.#inline(job);
    return thread.worker.terminate();
  }

  #inline(job: Job): void {
    if (job.settled) return;
    const { header, batchNo, rows, compression, format } = job.request;
    try {
      job.settle({ input: encodeBatch(header, batchNo, rows, compression, format) });
    } catch (error) {
      job.settle({ error });
    }
  }
}

/**
 * The encoder for a `workerThreads` setting: `current` resized, a new pool, or none for 0 (then `current` is
 * closed, its job in flight finished inline).
 */
export function encoderFor(current: EncoderPool | undefined, threads: number, logger: Logger): EncoderPool | undefined {
  if (threads === 0) {
    void current?.close();
    return undefined;
  }
  if (!current) return new EncoderPool(threads, logger);
  current.resize(threads);
  return current;
}
