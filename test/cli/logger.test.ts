import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { createLogger, secretScrubber } from '../../src/cli/logger.js';
import { tempDir } from '../helpers/temp-dir.js';
import { waitFor } from '../helpers/wait-for.js';

describe('createLogger()', () => {
  it('writes JSON lines to LOG_FILE with secret fields redacted and secret values censored anywhere', async () => {
    const file = join(tempDir(), 'logs', 'gateway.log');
    const secret = 'sk-live-0123456789';
    const logger = createLogger('info', file, [secret, undefined]);
    logger.info({ apiKey: secret, headers: { authorization: `Bearer ${secret}` }, ok: 1 }, 'configured');
    logger.error({ err: new Error(`the cloud echoed ${secret} back`) }, `failed with key ${secret}`);
    logger.debug({}, 'below the level');
    const read = () => (existsSync(file) ? readFileSync(file, 'utf8') : '');
    await waitFor(() => read().trim().split('\n').length >= 2, 5000, 'two lines in the log file');
    const text = read();
    expect(text).not.toContain(secret);
    const [first, second] = text
      .trim()
      .split('\n')
      .map((line) => JSON.parse(line) as Record<string, unknown>);
    expect(first).toMatchObject({
      msg: 'configured',
      apiKey: '[Redacted]',
      headers: { authorization: '[Redacted]' },
      ok: 1,
    });
    expect(second).toMatchObject({ level: 50, msg: 'failed with key [Redacted]' });
    expect(JSON.stringify(second)).toContain('the cloud echoed [Redacted] back');
    expect(text).not.toContain('below the level');
  });
});

describe('secretScrubber()', () => {
  it('censors each secret, also as escaped inside JSON, and leaves short ones to the redacted fields', () => {
    const scrub = secretScrubber(['pa"ss\\word-1', 'abc']);
    expect(scrub?.(JSON.stringify({ msg: 'x pa"ss\\word-1 y' }))).toBe('{"msg":"x [Redacted] y"}');
    expect(scrub?.('abc stays')).toBe('abc stays');
    expect(secretScrubber([undefined, 'short'])).toBeUndefined();
  });
});
