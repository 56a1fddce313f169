#!/usr/bin/env node
// The JavaScript budget of the first view: the gzip size of the entry chunk plus every chunk it
// imports statically (transitively), read from web/dist/.vite/manifest.json (Vite's build.manifest).
// Chunks behind a dynamic import() (the chart, the mesh panel) do not count. Prints one JSON
// line; exits 1 above the budget (250 KB gzip, 1 KB = 1000 bytes).
//
//   node web/scripts/budget.mjs [dist-dir] [--budget-kb N]
import { readFileSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { gzipSync } from "node:zlib";

const args = process.argv.slice(2);
const at = args.indexOf("--budget-kb");
const budgetKb = at >= 0 ? Number(args.splice(at, 2)[1]) : 250;
const dist = resolve(args[0] ?? join(dirname(fileURLToPath(import.meta.url)), "..", "dist"));

const manifest = JSON.parse(readFileSync(join(dist, ".vite", "manifest.json"), "utf8"));
const entries = Object.entries(manifest).filter(([, chunk]) => chunk.isEntry);
if (entries.length !== 1) {
  console.error(`budget: expected one entry chunk in ${dist}/.vite/manifest.json, found ${entries.length}`);
  process.exit(2);
}

const gz = (file) => gzipSync(readFileSync(join(dist, file)), { level: 9 }).length;

// The entry and its static imports, depth first.
const firstView = [];
const visit = (key) => {
  const chunk = manifest[key];
  if (chunk === undefined || firstView.some((c) => c.key === key)) return;
  firstView.push({ key, file: chunk.file });
  for (const imported of chunk.imports ?? []) visit(imported);
};
visit(entries[0][0]);

const files = firstView.map(({ file }) => ({ file, bytes: readFileSync(join(dist, file)).length, gzip: gz(file) }));
const lazy = Object.values(manifest)
  .filter((c) => c.isDynamicEntry)
  .map((c) => ({ file: c.file, gzip: gz(c.file) }));
const css = [...new Set(firstView.flatMap(({ key }) => manifest[key].css ?? []))].map((file) => ({ file, gzip: gz(file) }));
const totalGzip = files.reduce((sum, f) => sum + f.gzip, 0);
const ok = totalGzip <= budgetKb * 1000;

console.log(
  JSON.stringify({
    firstViewJsGzipBytes: totalGzip,
    firstViewJsGzipKb: Number((totalGzip / 1000).toFixed(1)),
    budgetKb,
    ok,
    firstView: files,
    css,
    lazy,
  }),
);
if (!ok) {
  console.error(`budget: the first view needs ${(totalGzip / 1000).toFixed(1)} KB of gzip JavaScript, over ${budgetKb} KB`);
  process.exit(1);
}
