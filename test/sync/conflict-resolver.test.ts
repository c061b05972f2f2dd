import { describe, expect, it } from 'vitest';
import { isConfigError } from '../../src/index.js';
import { lastWriteWins, resolverFor, type SyncRecord } from '../../src/sync/conflict-resolver.js';
import { createGateway } from '../helpers/gateway.js';

const record = (origin: string, hlc: string, value: unknown): SyncRecord => ({
  collection: 'setpoints',
  key: 'boiler-1',
  value,
  version: 3,
  timestamp: new Date(0),
  hlc,
  origin,
  deleted: false,
});

describe('conflict resolvers', () => {
  const edge = record('edge', '0001795759000000:0001', { target: 72 });
  const cloud = record('cloud', '0001795759000000:0002', { target: 70 });

  it('last-write-wins picks the later hybrid clock', () => {
    expect(lastWriteWins.resolve(edge, cloud)).toBe(cloud);
    expect(lastWriteWins.resolve(cloud, edge)).toBe(cloud);
  });

  it('last-write-wins breaks a tie on the clock by origin, the same way on every replica', () => {
    const a = record('replica-a', 'same', 1);
    const b = record('replica-b', 'same', 2);
    expect(lastWriteWins.resolve(a, b)).toBe(b);
    expect(lastWriteWins.resolve(b, a)).toBe(b);
  });

  it('cloud-wins and edge-wins pick their side whatever the clocks say', () => {
    expect(resolverFor('cloud-wins').resolve(edge, cloud)).toBe(cloud);
    expect(resolverFor('edge-wins').resolve(edge, cloud)).toBe(edge);
    expect(resolverFor('last-write-wins')).toBe(lastWriteWins);
  });
});

describe('EdgeGateway conflict settings', () => {
  it('defaults to last-write-wins', () => {
    const gateway = createGateway();
    expect(gateway.conflictStrategy).toBe('last-write-wins');
    expect(gateway.conflictResolver).toBe(lastWriteWins);
  });

  it('switches strategy with setConflictResolutionStrategy()', () => {
    const gateway = createGateway();
    gateway.setConflictResolutionStrategy('cloud-wins');
    expect(gateway.conflictStrategy).toBe('cloud-wins');
    const edge = record('edge', 'b', 1);
    const cloud = record('cloud', 'a', 2);
    expect(gateway.conflictResolver.resolve(edge, cloud)).toBe(cloud);
  });

  it('takes a custom resolver function and reports the custom strategy', async () => {
    const gateway = createGateway();
    gateway.setConflictResolver(async (edge, cloud) => (edge.timestamp > cloud.timestamp ? edge : cloud));
    expect(gateway.conflictStrategy).toBe('custom');
    gateway.setConflictResolutionStrategy('custom'); // keeps the resolver
    const later = { ...record('edge', 'x', 1), timestamp: new Date(10) };
    expect(await gateway.conflictResolver.resolve(later, record('cloud', 'y', 2))).toBe(later);
  });

  it('takes a resolver through the conflictResolver option', () => {
    const resolver = { resolve: (_edge: SyncRecord, cloud: SyncRecord) => cloud };
    const gateway = createGateway({ conflictResolver: resolver });
    expect(gateway.conflictStrategy).toBe('custom');
    expect(gateway.conflictResolver).toBe(resolver);
  });

  it('refuses "custom" without a resolver, and an unknown strategy, with ConfigError', () => {
    const gateway = createGateway();
    expect(() => gateway.setConflictResolutionStrategy('custom')).toThrow(/needs a resolver/);
    let caught: unknown;
    try {
      gateway.setConflictResolutionStrategy('newest' as never);
    } catch (error) {
      caught = error;
    }
    expect(isConfigError(caught)).toBe(true);
    expect(gateway.conflictStrategy).toBe('last-write-wins');
  });
});
