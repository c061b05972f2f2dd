// The encoder thread's entry when the gateway runs from source (tests, tsx): a worker thread cannot load
// TypeScript by itself, so this loads encode-worker.ts through tsx's API. The built package never uses it: tsup
// builds encode-worker.ts into dist/encode-worker.js and .cjs.
const { tsImport } = await import('tsx/esm/api');
await tsImport('./encode-worker.ts', import.meta.url);
