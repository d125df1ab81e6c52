// Writes X.gz next to every compressible file of dist/ (level 9, once at build time), so the
// booking service answers gzip without compressing per request. Prints the sizes: the
// storefront's bundle size is reported from here.
import { readdirSync, readFileSync, statSync, writeFileSync } from "node:fs";
import { dirname, join, relative } from "node:path";
import { fileURLToPath } from "node:url";
import { gzipSync } from "node:zlib";

const dist = join(dirname(fileURLToPath(import.meta.url)), "..", "dist");
const compressible = /\.(html|js|mjs|css|svg|json|map|txt|webmanifest)$/;

function* files(dir) {
  for (const name of readdirSync(dir)) {
    const path = join(dir, name);
    if (statSync(path).isDirectory()) yield* files(path);
    else yield path;
  }
}

const rows = [];
for (const path of files(dist)) {
  if (!compressible.test(path) || path.endsWith(".map")) continue;
  const raw = readFileSync(path);
  const gz = gzipSync(raw, { level: 9 });
  writeFileSync(`${path}.gz`, gz);
  rows.push([relative(dist, path), raw.length, gz.length]);
}
rows.sort((a, b) => a[0].localeCompare(b[0]));
const kib = (n) => (n / 1024).toFixed(1).padStart(8);
for (const [name, raw, gz] of rows) console.log(`${kib(raw)} KiB ${kib(gz)} KiB gz  ${name}`);
const shop = rows.filter(([n]) => !n.startsWith("ide/"));
const total = (i) => shop.reduce((s, r) => s + r[i], 0);
console.log(`storefront total: ${kib(total(1))} KiB ${kib(total(2))} KiB gz (${shop.length} files)`);
