import { defineConfig } from 'vite';
import { fileURLToPath } from 'node:url';

// Built into the server's classes (target/classes/console), so the jar serves it from
// console/ resources at /console/. Nothing is loaded from outside the server: no CDN, no inline
// script (the server's Content-Security-Policy forbids both).
export default defineConfig({
  base: '/console/',
  build: {
    outDir: fileURLToPath(new URL('../../../target/classes/console', import.meta.url)),
    emptyOutDir: true,
    assetsInlineLimit: 0,
    modulePreload: { polyfill: false },
    sourcemap: false,
    reportCompressedSize: false,
  },
  test: {
    include: ['test/**/*.test.js'],
    // Pure functions without a DOM: one thread, no per-file isolation, so the Maven test phase
    // does not start a process pool for them (about a quarter less wall time, measured).
    pool: 'threads',
    isolate: false,
  },
});
