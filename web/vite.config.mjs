// Vite build of the dashboard. `web/dist` is committed and embedded in the tickmesh binary, so
// the build must be byte-identical from run to run: no timestamps, no source maps (they would
// carry paths), content-hashed chunk names, a manifest for scripts/budget.mjs.
import { defineConfig } from "vite";

export default defineConfig({
  // Relative asset URLs: the page works wherever the server mounts web/dist.
  base: "./",
  resolve: {
    // One copy of Connect and protobuf-es: @tickmesh/client (a linked directory with its own
    // node_modules) and this package import the same versions; bundle them once.
    dedupe: ["@connectrpc/connect", "@connectrpc/connect-web", "@bufbuild/protobuf"],
  },
  build: {
    outDir: "dist",
    emptyOutDir: true,
    target: "es2022",
    sourcemap: false,
    manifest: true,
    reportCompressedSize: false,
    chunkSizeWarningLimit: 1024,
    rollupOptions: {
      output: {
        entryFileNames: "assets/[name]-[hash].js",
        chunkFileNames: "assets/[name]-[hash].js",
        assetFileNames: "assets/[name]-[hash][extname]",
      },
    },
  },
  server: { host: "127.0.0.1", port: 5173, strictPort: false },
});
