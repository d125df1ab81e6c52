// Puts the GraphQL IDE into dist/ide: GraphiQL's and React's own prebuilt UMD files, taken
// from the npm packages pinned in package-lock.json (not copied into the repository), plus
// our two small files from ide/. The booking service serves this folder at /graphql/ide/ and
// ide/index.html at GET /graphql, so the IDE needs no CDN.
import { copyFileSync, mkdirSync } from "node:fs";
import { createRequire } from "node:module";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
const root = join(here, "..");
const require = createRequire(join(root, "package.json"));
const out = join(root, "dist", "ide");
mkdirSync(out, { recursive: true });

const pkgDir = (name) => dirname(require.resolve(`${name}/package.json`));
const files = [
  [join(pkgDir("graphiql"), "graphiql.min.js"), "graphiql.min.js"],
  [join(pkgDir("graphiql"), "graphiql.min.css"), "graphiql.min.css"],
  [join(pkgDir("react"), "umd", "react.production.min.js"), "react.production.min.js"],
  [join(pkgDir("react-dom"), "umd", "react-dom.production.min.js"), "react-dom.production.min.js"],
  [join(root, "ide", "index.html"), "index.html"],
  [join(root, "ide", "ide.js"), "ide.js"],
];
for (const [from, to] of files) copyFileSync(from, join(out, to));
console.log(`GraphQL IDE: ${files.length} files in ${out}`);
