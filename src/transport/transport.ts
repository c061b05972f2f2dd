import type { PullRequester, PullResponse, PushRequest, PushResponse } from '../model/records-wire.js';
import type { BatchAck, RejectedPoint } from '../model/wire.js';

/**
 * The `Transport` contract: moving sealed batches to the cloud. Expected outcomes (the cloud is down, refuses
 * the key, refuses a reading) come back as a tagged {@link SendResult}; a transport throws only on misuse.
 */

/** A sealed batch as handed to a transport. Its bytes are the same on every attempt. */
export interface OutgoingBatch {
  readonly replicaId: string;
  readonly batchNo: number;
  readonly count: number;
  readonly body: Uint8Array;
  readonly contentType: string;
  /** `gzip`, or null. */
  readonly contentEncoding: string | null;
  /** `{replicaId}:{batchNo}`: the server stores its answer under it and replays it. */
  readonly idempotencyKey: string;
}

/**
 * Why a send may succeed if tried again later. `tls`: the cloud's certificate was not trusted (expired, another
 * host's, an unknown CA) or the TLS handshake was refused (e.g. a client certificate the cloud does not take);
 * `pin-mismatch`: its certificate chain holds no pinned key. Those two do not fix themselves within seconds: the
 * gateway retries them at its longest interval, reports them in health, and never sends without the check.
 */
export type RetryableCode = 'network' | 'timeout' | 'server' | 'throttled' | 'tls' | 'pin-mismatch';

/** The outcome of one attempt to send one batch. */
export type SendResult =
  /** Stored, or already stored (`replayed`: the answer to an earlier attempt was lost). Remove the batch locally. */
  | { readonly status: 'acknowledged'; readonly ack: BatchAck; readonly replayed: boolean }
  /** Not stored; try the same bytes again later, not before `retryAfterMs` when given. */
  | {
      readonly status: 'retryable';
      readonly code: RetryableCode;
      readonly message: string;
      readonly httpStatus?: number;
      readonly retryAfterMs?: number;
    }
  /** The cloud refused the batch's content (400, 413, 422). `rejected` names the readings at fault, if known. */
  | {
      readonly status: 'rejected';
      readonly httpStatus: number;
      readonly message: string;
      readonly rejected?: readonly RejectedPoint[];
    }
  /** The cloud does not take this body's content type (415): the gateway falls back to JSON. */
  | { readonly status: 'unsupported'; readonly httpStatus: number; readonly message: string }
  /** The idempotency key was already used for other bytes (409). */
  | { readonly status: 'conflict'; readonly message: string }
  /** The cloud refused the credentials (401, 403). */
  | { readonly status: 'unauthorized'; readonly httpStatus: number; readonly message: string };

/** The outcome of a liveness probe. */
export type PingResult =
  | { readonly reachable: true; readonly serverTime?: string }
  | { readonly reachable: false; readonly message: string; readonly code?: RetryableCode };

/** The outcome of a records exchange (push or pull). */
export type ExchangeResult<T> =
  | { readonly status: 'ok'; readonly body: T }
  /** Nothing happened that matters; try again later, not before `retryAfterMs` when given. */
  | {
      readonly status: 'retryable';
      readonly code: RetryableCode;
      readonly message: string;
      readonly httpStatus?: number;
      readonly retryAfterMs?: number;
    }
  | { readonly status: 'unauthorized'; readonly httpStatus: number; readonly message: string }
  /** The cloud refused the request as such (a 4xx other than auth and throttling; 404: it has no records API). */
  | { readonly status: 'refused'; readonly httpStatus: number; readonly message: string };

/** Moves batches to the cloud. {@link HttpTransport} is the default. */
export interface Transport {
  /** Sends one sealed batch. Never throws for a network or server failure: returns a {@link SendResult}. */
  sendBatch(batch: OutgoingBatch, signal?: AbortSignal): Promise<SendResult>;
  /** Checks that the cloud answers, when there is nothing to send. */
  ping(signal?: AbortSignal): Promise<PingResult>;
  /** Pushes record mutations (`POST /records/push`). Absent on transports without records sync. */
  pushRecords?(request: PushRequest, signal?: AbortSignal): Promise<ExchangeResult<PushResponse>>;
  /**
   * Pulls record changes after `cursor` (`GET /records/pull`), as `requester` when given: the cloud then leaves out
   * the requester's own changes it already holds (a transport that ignores `requester` gets every change, which is
   * correct, only wasteful). Absent on transports without records sync.
   */
  pullRecords?(
    cursor: number,
    limit: number,
    signal?: AbortSignal,
    requester?: PullRequester,
  ): Promise<ExchangeResult<PullResponse>>;
  /** Releases connections. Safe to call twice. */
  close(): Promise<void>;
}
