import { describe, expect, it } from 'vitest';
import type { CliIo } from '../../src/cli/cli.js';
import { runDemo } from '../../src/cli/demo.js';

describe('edge-gateway demo', () => {
  it('rides out the outage and verifies from the cloud that nothing was lost or duplicated', async () => {
    const lines: string[] = [];
    const io: CliIo = {
      out: (line) => lines.push(line),
      err: (line) => lines.push(line),
      untilSignal: () => new Promise(() => {}),
    };
    // Status lines come once a second: an outage of 2.4 s holds two, so that one of them comes after the gateway
    // has noticed (a sync attempt must fail first, which a loaded machine may take past the first line).
    const code = await runDemo(io, { rateHz: 40, onlineMs: 800, outageMs: 2400, afterMs: 600 });
    const output = lines.join('\n');
    expect(output).toContain('the cloud is gone');
    expect(output).toContain('the cloud is back');
    // Readings queued while the cloud was away: the live line showed the gateway offline with a backlog.
    expect(output).toMatch(/cloud DOWN \| sent +\d+ \| queued +[1-9]\d* .*\| offline/);
    const verdict = /sent (\d+), stored in cloud (\d+), lost (\d+), duplicates (\d+)/.exec(output);
    expect(verdict).not.toBeNull();
    const [, sent, stored, lost, duplicates] = (verdict as RegExpExecArray).map(Number);
    expect(sent).toBeGreaterThan(100);
    expect(stored).toBe(sent);
    expect(lost).toBe(0);
    expect(duplicates).toBe(0);
    expect(output).toContain('OK: every accepted reading is in the cloud exactly once.');
    expect(code).toBe(0);
  }, 30_000);
});
