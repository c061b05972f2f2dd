/**
 * Counts events over a sliding window of monotonic time: how many happened in the last `windowMs`. Events less
 * than `resolutionMs` apart share one entry, so memory is bounded by `windowMs / resolutionMs` entries however
 * many events come.
 * @internal
 */
export class RecentCount {
  readonly #resolutionMs: number;
  #windowMs: number;
  /** Oldest first: when a run of events began (monotonic ms), and how many it holds. */
  readonly #entries: { at: number; count: number }[] = [];

  /**
   * @param windowMs how far back events count
   * @param resolutionMs events this close together are stored as one entry. @default 1000
   */
  constructor(windowMs: number, resolutionMs = 1000) {
    this.#windowMs = windowMs;
    this.#resolutionMs = resolutionMs;
  }

  get windowMs(): number {
    return this.#windowMs;
  }

  set windowMs(value: number) {
    this.#windowMs = value;
  }

  /** Records `count` events at `now` (monotonic ms, e.g. `performance.now()`). */
  add(count: number, now: number): void {
    if (count <= 0) return;
    const last = this.#entries.at(-1);
    if (last && now - last.at < this.#resolutionMs) last.count += count;
    else this.#entries.push({ at: now, count });
    this.#prune(now);
  }

  /** Events in the window that ends at `now`. */
  total(now: number): number {
    this.#prune(now);
    let sum = 0;
    for (const entry of this.#entries) sum += entry.count;
    return sum;
  }

  #prune(now: number): void {
    let drop = 0;
    while (drop < this.#entries.length && now - (this.#entries[drop] as { at: number }).at > this.#windowMs) drop++;
    if (drop > 0) this.#entries.splice(0, drop);
  }
}
