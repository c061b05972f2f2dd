/**
 * A clock in epoch ms that cannot jump: anchored to the wall clock once, when it is made, and advanced from there by a
 * monotonic source only. A wall clock stepped while it runs (NTP correcting a Raspberry Pi that booted with
 * fake-hwclock's old time, an operator's `date -s`) moves nothing; the next clock made (at a restart) takes the step.
 * What the ingest ledger measures its windows by, so that a forward step does not make every key look expired.
 * @internal
 */
export class SteadyClock {
  readonly #monotonic: () => number;
  /** Wall time at the monotonic source's zero. */
  readonly #origin: number;

  /**
   * @param wall the wall clock, epoch ms, read once (`Date.now`)
   * @param monotonic a clock that never goes back nor jumps, any origin, ms (`performance.now`)
   */
  constructor(wall: () => number, monotonic: () => number) {
    this.#monotonic = monotonic;
    this.#origin = wall() - monotonic();
  }

  /** Epoch ms, whole: the wall time at the anchor plus the monotonic time since. */
  now(): number {
    return Math.floor(this.#origin + this.#monotonic());
  }
}
