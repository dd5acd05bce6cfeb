import { defineConfig } from 'vitest/config';

// Two tiers (CONVENTIONS.md habit 9): "unit" runs as any user and fast; "root" builds real network
// namespaces, iptables rules and lab clusters, so it needs root and runs one file at a time (two cores, and
// kernel state such as netns names must not race).
const ROOT_TESTS = ['**/*.root.test.ts', 'test/e2e/**/*.test.ts'];
const IGNORED = ['**/node_modules/**', '**/build/**'];

export default defineConfig({
  test: {
    reporters: ['default', './test/support/summary-reporter.ts'],
    projects: [
      {
        test: {
          name: 'unit',
          include: ['**/*.test.ts'],
          exclude: [...IGNORED, ...ROOT_TESTS],
          testTimeout: 20_000,
        },
      },
      {
        test: {
          name: 'root',
          include: ROOT_TESTS,
          exclude: IGNORED,
          setupFiles: ['./test/support/require-root.ts'],
          fileParallelism: false,
          testTimeout: 120_000,
          hookTimeout: 180_000,
        },
      },
    ],
  },
});
