import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    globalSetup: ['test/chaos/lib/global-setup.ts'],
    testTimeout: 30_000,
    hookTimeout: 30_000,
    // Child-process and server tests share two cores; files run in parallel, tests within a file in order.
    pool: 'forks',
    coverage: {
      provider: 'v8',
      include: ['src/**/*.ts'],
      exclude: ['src/cli/main.ts'],
      reporter: ['text-summary', 'text'],
      // The floor, not the aim: the suite stands above 95% of lines.
      thresholds: { lines: 90, statements: 90, functions: 88, branches: 82 },
    },
  },
});
