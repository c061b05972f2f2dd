import type { IngestKeyWrite, Storage } from '../storage/storage.js';

/** How long and how many idempotency keys are kept: the HTTP server's options, resolved. @internal */
export interface IngestKeyBounds {
  /** Ms a key is remembered from the commit of its readings. */
  windowMs: number;
  /** Most keys kept; past it the oldest are forgotten early. */
  maxKeys: number;
}

/**
 * An idempotency key held by one request from its lookup until its readings are committed or refused: no other
 * request of the same key can store meanwhile. @internal
 */
export interface IngestKeyClaim extends IngestKeyBounds {
  readonly idempotencyKey: string;
  /** sha-256 of the request body, hex. */
  readonly hash: string;
  /** Lets the key go, once the request is answered, whatever the answer. Safe to call twice. */
  release(): void;
}

/** What a key's lookup found. @internal */
export type IngestKeyLookup =
  /** Unknown (or expired): now held by the caller, who must release it. */
  | { kind: 'claimed'; claim: IngestKeyClaim }
  /** Stored with the same body: the answer it got. */
  | { kind: 'replayed'; accepted: number; stored: number }
  /** Stored with another body. */
  | { kind: 'conflict' }
  /** Held by a request still in flight. */
  | { kind: 'in-progress' }
  /** The storage keeps no idempotency keys. */
  | { kind: 'unsupported' };

/**
 * A claimed key riding in a group commit with its request's readings. `stored` is read inside the commit, once the
 * built-in processors have decided what they keep. @internal
 */
export interface PendingIngestKey {
  readonly claim: IngestKeyClaim;
  readonly accepted: number;
  stored(): number;
}

/**
 * The gateway's idempotency keys in flight. A key is held from its lookup to its request's answer, in memory: the
 * storage's lock makes this process the only writer of the database, so the keys held here and those committed
 * there are all the keys there are. @internal
 */
export class IngestKeys {
  readonly #held = new Set<string>();

  /** Looks `idempotencyKey` up in flight, then in `storage`; holds it for the caller when it is unknown. */
  claim(storage: Storage, idempotencyKey: string, hash: string, bounds: IngestKeyBounds, now: number): IngestKeyLookup {
    if (!storage.lookupIngestKey) return { kind: 'unsupported' };
    if (this.#held.has(idempotencyKey)) return { kind: 'in-progress' };
    const known = storage.lookupIngestKey(idempotencyKey, now);
    if (known) {
      return known.hash === hash
        ? { kind: 'replayed', accepted: known.accepted, stored: known.stored }
        : { kind: 'conflict' };
    }
    this.#held.add(idempotencyKey);
    let held = true;
    const release = () => {
      if (!held) return;
      held = false;
      this.#held.delete(idempotencyKey);
    };
    return {
      kind: 'claimed',
      claim: { idempotencyKey, hash, windowMs: bounds.windowMs, maxKeys: bounds.maxKeys, release },
    };
  }
}

/** What a group commit writes to the ledger for its keys, at `now` (epoch ms). @internal */
export function ledgerWrite(keys: readonly PendingIngestKey[], now: number): IngestKeyWrite {
  let maxEntries = 1;
  const entries = keys.map(({ claim, accepted, stored }) => {
    maxEntries = Math.max(maxEntries, claim.maxKeys);
    return {
      idempotencyKey: claim.idempotencyKey,
      hash: claim.hash,
      accepted,
      stored: stored(),
      expiresAt: now + claim.windowMs,
    };
  });
  return { entries, now, maxEntries };
}
