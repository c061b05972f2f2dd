import type { LedgerComparison } from './reading-ledger.js';
import { type ChaosRow, recordChaos } from './summary.js';

/**
 * One scenario's row of the chaos summary, added up over the tests of a file: each test adds its trials, faults,
 * recovery times and delivery comparison; `record()` (in `afterAll`) writes the row. Samples this process's
 * resident memory while it runs, since these scenarios run the gateway in the test process.
 */
export class ScenarioTally {
  readonly #row: ChaosRow;
  readonly #sampler: NodeJS.Timeout;

  constructor(scenario: string) {
    this.#row = {
      scenario,
      trials: 0,
      kills: 0,
      faults: 0,
      acknowledged: 0,
      delivered: 0,
      lost: 0,
      duplicated: 0,
      maxRecoveryMs: 0,
      peakRssMb: 0,
    };
    this.#sample();
    this.#sampler = setInterval(() => this.#sample(), 50);
    this.#sampler.unref();
  }

  #sample(): void {
    this.#row.peakRssMb = Math.max(this.#row.peakRssMb, process.memoryUsage.rss() / (1024 * 1024));
  }

  /** Counts one trial and the faults it injected. */
  trial(faults: number): void {
    this.#row.trials++;
    this.#row.faults += faults;
  }

  /** Notes how long the gateway took to recover from a fault, in ms. */
  recovered(ms: number): void {
    this.#row.maxRecoveryMs = Math.max(this.#row.maxRecoveryMs, Math.round(ms));
  }

  /** Adds a comparison of what was accepted with what the cloud holds. */
  delivery(result: LedgerComparison): void {
    this.#row.acknowledged += result.acknowledged;
    this.#row.delivered += result.delivered;
    this.#row.lost += result.lost;
    this.#row.duplicated += result.duplicated;
  }

  /** Writes the row to the run's summary; stops sampling memory. */
  record(): void {
    clearInterval(this.#sampler);
    this.#sample();
    recordChaos({ ...this.#row });
  }
}
