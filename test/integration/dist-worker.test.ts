import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { describe, expect, it } from 'vitest';

const root = join(import.meta.dirname, '..', '..');
const built = existsSync(join(root, 'dist', 'index.js'));
const run = promisify(execFile);

// The worker thread's entry is a file of its own next to the built chunks: a build that lost it, or a chunk that
// looks for it in the wrong place, would fall back to inline encoding with a warning. `npm run build` first (CI
// does); without dist/ these are skipped. /proc tells the thread apart from inline encoding: Linux only.
describe.skipIf(!built || process.platform !== 'linux')('the built package (dist/)', () => {
  for (const system of ['esm', 'cjs']) {
    it(`encodes JSON batches in a worker thread when loaded as ${system === 'esm' ? 'ESM' : 'CommonJS'}`, async () => {
      const { stdout } = await run(process.execPath, [join(root, 'test', 'fixtures', 'dist-worker.mjs'), system], {
        timeout: 30_000,
      });
      expect(JSON.parse(stdout)).toEqual({ acknowledged: 2000, delivered: 2000, gained: 1, warnings: [] });
    });
  }
});
