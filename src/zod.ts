import { config } from 'zod/mini';
import en from 'zod/v4/locales/en.js';

/**
 * zod/mini, with zod's English messages: the schemas on the gateway's import path use it rather than classic zod,
 * which tree-shakes poorly and costs several MiB more to load. zod/mini loads no locale, and without one every
 * issue reads "Invalid input", while `ConfigError` texts are built from those messages. A locale the host
 * application chose for zod (the config is shared through `globalThis`) is left in place, as classic zod leaves it.
 *
 * Import it as a namespace (`import * as z from '../zod.js'`) and use only property accesses on it, so that the
 * bundler keeps only what is used; re-exporting zod/mini's `z` object would keep all of it, every locale included.
 * Classic zod, where it stays (the cloud server), is imported the same way (`import * as z from 'zod'`):
 * the bundler puts all that any entry keeps of zod core in the chunk the gateway loads, and `import { z } from 'zod'`
 * would keep every locale there (over 2 MiB more at the gateway's import).
 */
if (!config().localeError) config(en());

export * from 'zod/mini';
