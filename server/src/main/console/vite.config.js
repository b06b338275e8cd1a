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
  },
});
