import { readFileSync } from 'node:fs';

/**
 * This process's peak resident memory, MiB. On Linux, from `VmHWM` in /proc/self/status: `maxRSS` of
 * `process.resourceUsage()` survives exec, so a child spawned by a large parent would report the parent's size (a
 * child of a 300 MiB parent reports 304 MiB while its own peak is 40). Elsewhere, `maxRSS`.
 */
export function peakRssMb() {
  try {
    const match = /^VmHWM:\s+(\d+) kB/m.exec(readFileSync('/proc/self/status', 'utf8'));
    if (match) return Number(match[1]) / 1024;
  } catch {
    // not Linux
  }
  return process.resourceUsage().maxRSS / 1024;
}
