import { ConfigError } from '../../errors.js';
import * as z from '../../zod.js';

/**
 * Which tags, with the sensor id, tell one series from another: `all` of them, `none` (one series per sensor),
 * or the named ones (the others are left out of the series and of its aggregates).
 */
export type TagGrouping = 'all' | 'none' | readonly string[];

/** Which sensors a built-in processor handles: every one (the default), a list of ids, a pattern, or a test. */
export type SensorSelector = readonly string[] | RegExp | ((sensorId: string) => boolean);

/** Options every built-in shares. @internal */
export const commonOptions = {
  name: z.optional(z.string().check(z.minLength(1), z.maxLength(128))),
  sensors: z.optional(
    z.union([
      z.readonly(z.array(z.string())),
      z.instanceof(RegExp),
      z.custom<(sensorId: string) => boolean>((v) => typeof v === 'function', 'expected a function'),
    ]),
  ),
  groupBy: z._default(z.union([z.enum(['all', 'none']), z.readonly(z.array(z.string().check(z.minLength(1))))]), 'all'),
  maxSeries: z._default(z.int().check(z.positive(), z.lte(10_000_000)), 10_000),
};

/** Parses a built-in's options, throwing `ConfigError` that names the processor, the option and the value. @internal */
export function parseOptions<T extends z.ZodMiniType>(processor: string, schema: T, input: unknown): z.output<T> {
  const parsed = schema.safeParse(input ?? {});
  if (parsed.success) return parsed.data;
  throw new ConfigError(
    parsed.error.issues.map((issue) => {
      if (issue.code === 'unrecognized_keys') return `Misspelled ${processor} option(s): ${issue.keys.join(', ')}`;
      const name = issue.path.map(String).join('.') || '(options)';
      return `Expected the "${name}" option of ${processor} to be valid: ${issue.message}`;
    }),
    { cause: parsed.error },
  );
}

/** A test for the sensors a processor handles. @internal */
export function sensorTest(selector: SensorSelector | undefined): (sensorId: string) => boolean {
  if (selector === undefined) return () => true;
  if (typeof selector === 'function') return selector;
  if (selector instanceof RegExp) return (id) => selector.test(id);
  const ids = new Set(selector);
  return (id) => ids.has(id);
}

const CACHE_LIMIT = 10_000;

/**
 * Turns a reading's tags (JSON text as stored) into the tags of its series, canonical (keys sorted) so that
 * `{a, b}` and `{b, a}` are one series. Caches by the stored text: readings of one series repeat it.
 * @internal
 */
export class SeriesTags {
  readonly #grouping: TagGrouping;
  readonly #cache = new Map<string, string | null>();

  constructor(grouping: TagGrouping) {
    this.#grouping = grouping;
  }

  of(tags: string | null): string | null {
    if (tags === null || this.#grouping === 'none') return null;
    const cached = this.#cache.get(tags);
    if (cached !== undefined) return cached;
    const parsed = JSON.parse(tags) as Record<string, string>;
    const keys = Object.keys(parsed)
      .filter((key) => this.#grouping === 'all' || this.#grouping.includes(key))
      .sort();
    const canonical =
      keys.length === 0 ? null : JSON.stringify(Object.fromEntries(keys.map((key) => [key, parsed[key]])));
    if (this.#cache.size >= CACHE_LIMIT) this.#cache.clear();
    this.#cache.set(tags, canonical);
    return canonical;
  }
}

/** The state key of a series. @internal */
export const seriesKey = (sensorId: string, tags: string | null): string =>
  tags === null ? sensorId : `${sensorId}\u0000${tags}`;
