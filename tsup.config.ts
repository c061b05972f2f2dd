import { defineConfig } from 'tsup';

export default defineConfig({
  entry: {
    index: 'src/index.ts',
    cloud: 'src/cloud/index.ts',
    testing: 'src/testing/index.ts',
    cli: 'src/cli/main.ts',
    // Started by EncoderPool as a worker thread, from next to the chunk that starts it (see encoder-pool.ts).
    'encode-worker': 'src/sync/encode-worker.ts',
  },
  format: ['esm', 'cjs'],
  target: 'node20',
  dts: { entry: { index: 'src/index.ts', cloud: 'src/cloud/index.ts', testing: 'src/testing/index.ts' }, compilerOptions: { ignoreDeprecations: '6.0' } },
  sourcemap: true,
  clean: true,
  splitting: true,
  // import.meta.url in the CommonJS build, where the encoder pool finds its worker entry with it.
  shims: true,
  noExternal: ['zod'],
});
