// Build: the page goes to ../build/dashboard/dist (index.html + hashed files
// under assets/), served by `rusm dashboard` at / and /assets/*.
// Dev (`npm run dev`): starts the protocol mock (mock/server.mjs) and proxies
// /api, /ws and /metrics to it; RUSM_BACKEND=http://127.0.0.1:8080 proxies to
// a real `rusm dashboard` instead.
import react from '@vitejs/plugin-react';
import { fileURLToPath } from 'node:url';
import type { Plugin } from 'vite';
import { defineConfig } from 'vitest/config';

const outDir = fileURLToPath(new URL('../build/dashboard/dist', import.meta.url));
const mockPort = Number(process.env.RUSM_MOCK_PORT ?? 8090);
const backend = process.env.RUSM_BACKEND ?? `http://127.0.0.1:${mockPort}`;

function devMock(): Plugin {
  return {
    name: 'rusm-dev-mock',
    apply: 'serve',
    async configureServer(server) {
      if (process.env.RUSM_BACKEND || process.env.VITEST) return;
      const { startMock } = await import('./mock/server.mjs');
      const mock = await startMock({ port: mockPort, quiet: true });
      server.config.logger.info(`  rusm mock feed on http://127.0.0.1:${mockPort}`);
      server.httpServer?.on('close', () => mock.close());
    },
  };
}

export default defineConfig({
  base: '/',
  plugins: [react(), devMock()],
  build: {
    outDir,
    emptyOutDir: true,
    assetsDir: 'assets',
    target: 'es2022',
    sourcemap: false,
    modulePreload: { polyfill: false },
    reportCompressedSize: true,
  },
  server: {
    host: '127.0.0.1',
    proxy: {
      '/api': backend,
      '/metrics': backend,
      '/ws': { target: backend.replace(/^http/, 'ws'), ws: true },
    },
  },
  test: {
    environment: 'jsdom',
    include: ['src/**/*.test.tsx'],
    setupFiles: ['src/testing/setup.ts'],
    restoreMocks: true,
    unstubGlobals: true,
  },
});
