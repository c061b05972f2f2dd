/**
 * The JSON protocol's version and content type, apart from the zod schemas of wire.ts (which re-exports them): the
 * encoder (and its worker thread) needs these two constants, not zod and its ~12 MiB of memory.
 */

/** Protocol version of the JSON batch body. */
export const BATCH_VERSION = 1;
/** Content type of a JSON batch body. */
export const JSON_BATCH_CONTENT_TYPE = 'application/json';
