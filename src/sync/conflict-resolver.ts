/**
 * The `ConflictResolver` contract: choosing between the edge's and the cloud's version of one shared record.
 * Records sync uses it; see docs/conflicts.md.
 */

/** A shared record as a resolver sees it. */
export interface SyncRecord<T = unknown> {
  collection: string;
  key: string;
  value: T;
  /** The cloud's version counter the record is at (or was based on, for an edge edit). */
  version: number;
  /** When it was written, from its hybrid logical clock. */
  timestamp: Date;
  /** Hybrid logical clock stamp, comparable as a string. */
  hlc: string;
  /** `edge` or `cloud`, or the replica id that wrote it. */
  origin: string;
  deleted: boolean;
}

/** The built-in strategies, and `custom` for a resolver function. */
export type ConflictStrategy = 'last-write-wins' | 'cloud-wins' | 'edge-wins' | 'custom';

/** What a resolver returns: one of the two sides, or a merged value to push against the cloud's version. */
export type Resolution<T = unknown> = SyncRecord<T> | { value: T; deleted?: boolean };

/** Chooses between two versions of one record. May be async; a throw leaves the edit pending. */
export interface ConflictResolver {
  resolve(edge: SyncRecord, cloud: SyncRecord): Resolution | Promise<Resolution>;
}

/** Compares hybrid logical clocks, then origins, so that every replica picks the same winner. */
export const lastWriteWins: ConflictResolver = {
  resolve(edge, cloud) {
    if (edge.hlc !== cloud.hlc) return edge.hlc > cloud.hlc ? edge : cloud;
    return edge.origin > cloud.origin ? edge : cloud;
  },
};

/** The resolver of a built-in strategy. */
export function resolverFor(strategy: Exclude<ConflictStrategy, 'custom'>): ConflictResolver {
  switch (strategy) {
    case 'cloud-wins':
      return { resolve: (_edge, cloud) => cloud };
    case 'edge-wins':
      return { resolve: (edge) => edge };
    default:
      return lastWriteWins;
  }
}
