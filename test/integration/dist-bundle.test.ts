import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';

const dist = join(import.meta.dirname, '..', '..', 'dist');
const built = existsSync(join(dist, 'index.js'));

/** The text of `entry` and of every chunk it imports, at load or lazily (`serveHttp()` loads the HTTP server). */
function loadedWith(entry: string): string[] {
  const files = new Map<string, string>();
  const visit = (name: string) => {
    if (files.has(name)) return;
    const text = readFileSync(join(dist, name), 'utf8');
    files.set(name, text);
    for (const [, next] of text.matchAll(/(?:from|import|require)\s*\(?\s*["']\.\/([^"']+)["']/g)) {
      if (next) visit(next);
    }
  };
  visit(entry);
  return [...files.values()];
}

// zod is bundled so that the gateway loads only what it uses of it: zod/mini and English messages, a few MiB less
// resident than classic zod with every locale. The cloud server and the CLI use classic zod; an import of it on the
// gateway's path, or of all of zod from theirs, would bring it all back. `npm run build` first; skipped without dist/.
describe.skipIf(!built)('the built package (dist/)', () => {
  for (const entry of ['index.js', 'index.cjs']) {
    it(`loads zod/mini with English messages, not classic zod or other locales, from ${entry}`, () => {
      const text = loadedWith(entry).join('\n');
      expect(text).toContain('"ZodMiniObject"');
      expect(text).not.toContain('"ZodObject"');
      expect(text).not.toContain('Ongeldige invoer'); // Dutch: ASCII, as the bundler escapes other characters
    });
  }
});
