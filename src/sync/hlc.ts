import { formatHlc, HLC_MAX_COUNTER, type HlcStamp, parseHlc } from '../model/records-wire.js';

/**
 * A hybrid logical clock (Kulkarni, Demirbas et al., "Logical Physical Clocks", 2014): stamps that never go
 * backwards, stay within a bounded distance of physical time, and order every write after what its writer had
 * seen. The gateway stamps each record write with one, and so does the reference cloud server.
 *
 * The physical part reads `now() + offsetMs`: the gateway sets `offsetMs` from the server's clock (see
 * {@link HybridClock.observeServerTime}), so that a device whose wall clock is an hour fast stamps its writes
 * in the cloud's time once it has talked to the cloud, instead of winning every last-write-wins conflict.
 */
export class HybridClock {
  #last: HlcStamp;
  #offsetMs = 0;
  readonly #now: () => number;
  /** A remote stamp further ahead of our physical time than this is not followed (a broken remote clock). */
  readonly #maxDriftMs: number;

  constructor(options: { now?: () => number; last?: string | undefined; offsetMs?: number; maxDriftMs?: number } = {}) {
    this.#now = options.now ?? Date.now;
    this.#last = options.last ? parseHlc(options.last) : { ms: 0, counter: 0 };
    this.#offsetMs = options.offsetMs ?? 0;
    this.#maxDriftMs = options.maxDriftMs ?? 60_000;
  }

  /** Physical time as this clock reads it: the wall clock corrected by the measured offset. */
  physical(): number {
    return Math.round(this.#now() + this.#offsetMs);
  }

  /** Wall clock minus the server's, in ms, as last measured: positive when this device runs ahead. */
  get skewMs(): number {
    return -this.#offsetMs;
  }

  get offsetMs(): number {
    return this.#offsetMs;
  }

  /** The last stamp given or followed. */
  get last(): string {
    return formatHlc(this.#last);
  }

  /** A stamp for a local event (a write): after every stamp before it. */
  tick(): string {
    const pt = this.physical();
    const last = this.#last;
    this.#last = pt > last.ms ? { ms: pt, counter: 0 } : bump(last.ms, last.counter);
    return formatHlc(this.#last);
  }

  /**
   * Follows a stamp received from elsewhere, so that our next stamp orders after it. A stamp more than
   * `maxDriftMs` ahead of our physical time is ignored: one broken clock must not drag every replica forward.
   * Returns whether it was followed.
   */
  receive(remote: string): boolean {
    const theirs = parseHlc(remote);
    const pt = this.physical();
    if (theirs.ms > pt + this.#maxDriftMs) return false;
    const ours = this.#last;
    const ms = Math.max(ours.ms, theirs.ms, pt);
    if (ms === ours.ms && ms === theirs.ms) this.#last = bump(ms, Math.max(ours.counter, theirs.counter));
    else if (ms === ours.ms) this.#last = bump(ms, ours.counter);
    else if (ms === theirs.ms) this.#last = bump(ms, theirs.counter);
    else this.#last = { ms, counter: 0 };
    return true;
  }

  /**
   * Learns the offset to a server's clock from a response: `serverTime` was read about half a round trip before
   * the response arrived. Returns the new offset.
   */
  observeServerTime(serverTime: string | number | Date, roundTripMs: number): number {
    const serverMs = typeof serverTime === 'number' ? serverTime : new Date(serverTime).getTime();
    if (!Number.isFinite(serverMs)) return this.#offsetMs;
    this.#offsetMs = Math.round(serverMs + roundTripMs / 2 - this.#now());
    return this.#offsetMs;
  }

  /** Sets the offset (restored from storage at start). */
  setOffset(offsetMs: number): void {
    if (Number.isFinite(offsetMs)) this.#offsetMs = offsetMs;
  }
}

function bump(ms: number, counter: number): HlcStamp {
  // A counter past its width would break string order: move the physical part on by one ms instead.
  return counter >= HLC_MAX_COUNTER ? { ms: ms + 1, counter: 0 } : { ms, counter: counter + 1 };
}

/** The physical time of a stamp, as a Date. */
export function hlcTime(hlc: string): Date {
  return new Date(parseHlc(hlc).ms);
}
