import { afterEach } from 'vitest';

const tasks: (() => unknown)[] = [];

// Last in, first out: a gateway is stopped before its server closes and before its folder is removed.
afterEach(async () => {
  const errors: unknown[] = [];
  for (const task of tasks.splice(0).reverse()) {
    try {
      await task();
    } catch (error) {
      errors.push(error);
    }
  }
  if (errors.length > 0) throw errors[0];
});

/** Runs `task` after the current test, whether it passed or failed. */
export function defer(task: () => unknown): void {
  tasks.push(task);
}
