// Vite builds the storefront into dist/ (hashed files under dist/assets/). JSX is compiled by
// esbuild for Preact directly, so no framework plugin (and no Babel) is needed.
// `npm run dev` proxies the APIs to a running `make dev` (gateway on 8000), like Kong does.
import { defineConfig } from "vite";

const target = process.env.MOVIEBOOK_URL ?? "http://127.0.0.1:8000";

export default defineConfig({
  esbuild: { jsx: "automatic", jsxImportSource: "preact" },
  build: {
    target: "es2020",
    outDir: "dist",
    assetsInlineLimit: 0,
    sourcemap: false,
    reportCompressedSize: true,
  },
  server: {
    proxy: {
      "/graphql": { target, ws: true },
      "/api": { target },
    },
  },
});
