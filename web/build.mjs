// Builds the app into dist/: index.html with the JS bundle and the
// stylesheet inside it (one request on a slow network instead of two in a
// row; the host's CSP allows exactly these by their SHA-256, see build.rs),
// and the service worker. The same sources and lockfile give the same bytes.
//   node build.mjs           write dist/
//   node build.mjs --check   write nothing; exit 1 if dist/ is not what a build gives
import { readFileSync, readdirSync, rmSync, mkdirSync, writeFileSync, existsSync, statSync } from "node:fs";
import { dirname, join, relative } from "node:path";
import { fileURLToPath } from "node:url";
import * as esbuild from "esbuild";

const root = dirname(fileURLToPath(import.meta.url));
const dist = join(root, "dist");
const check = process.argv.includes("--check");

const common = {
  absWorkingDir: root,
  jsx: "automatic",
  jsxImportSource: "preact",
  bundle: true,
  minify: true,
  format: "esm",
  target: ["es2022", "chrome100", "firefox100", "safari16"],
  platform: "browser",
  outdir: "dist/assets",
  entryNames: "[name]-[hash]",
  legalComments: "eof",
  charset: "utf8",
  sourcemap: false,
  metafile: true,
  write: false,
  logLevel: "warning",
};
// The pairing code first, on its own (only the Pair screen loads it), so
// that the app can be given its URL.
const pairBuild = await esbuild.build({ ...common, entryPoints: { pair: "src/pair.ts" } });
if (pairBuild.outputFiles.length !== 1) throw new Error("the pairing bundle is one file");
const pairRel = relative(dist, pairBuild.outputFiles[0].path).split("\\").join("/");

const result = await esbuild.build({
  ...common,
  define: { __PAIR_URL__: JSON.stringify(`/${pairRel}`) },
  external: ["/assets/*"],
  entryPoints: { app: "src/app.tsx", style: "src/app.css" },
});

/** dist-relative path → bytes. */
const files = new Map([[pairRel, Buffer.from(pairBuild.outputFiles[0].contents)]]);
let script;
let style;
for (const file of result.outputFiles) {
  const rel = relative(dist, file.path).split("\\").join("/");
  files.set(rel, Buffer.from(file.contents));
  if (rel.endsWith(".js")) script = rel;
  if (rel.endsWith(".css")) style = rel;
}
if (!script || !style) throw new Error(`esbuild gave no script or stylesheet: ${[...files.keys()].join(", ")}`);
// Inside <script> and <style> these would end the element early or change
// how the HTML parser reads it: the build refuses them rather than guess.
const js = files.get(script).toString("utf8").trimEnd();
const css = files.get(style).toString("utf8").trimEnd();
for (const [what, text, bad] of [
  ["the JS bundle", js, /<\/script|<script|<!--/i],
  ["the stylesheet", css, /<\/style/i],
]) {
  const m = bad.exec(text);
  if (m) throw new Error(`${what} holds \`${m[0]}\`, which cannot be put inside index.html as it is`);
}
files.delete(script);
files.delete(style);
const html = readFileSync(join(root, "src", "index.html"), "utf8").replace("{{style}}", () => css).replace("{{script}}", () => js);
files.set("index.html", Buffer.from(html));
// The service worker: the shell (the page, which holds everything) offline.
const shell = ["/"];
const sw = readFileSync(join(root, "src", "sw.js"), "utf8").replace("[/*SHELL*/]", JSON.stringify(shell)).replace("/*VERSION*/", script.replace(/\W/g, ""));
files.set("sw.js", Buffer.from(sw));

// Dotfiles (dist/.gitkeep) are not served (build.rs skips them) and are left alone.
function existing(dir, prefix = "") {
  if (!existsSync(dir)) return [];
  return readdirSync(dir)
    .filter((name) => !name.startsWith("."))
    .flatMap((name) =>
      statSync(join(dir, name)).isDirectory() ? existing(join(dir, name), `${prefix}${name}/`) : [`${prefix}${name}`],
    );
}

if (check) {
  const problems = [];
  const present = new Set(existing(dist));
  for (const [rel, bytes] of files) {
    if (!present.has(rel)) problems.push(`missing: web/dist/${rel}`);
    else if (!readFileSync(join(dist, rel)).equals(bytes)) problems.push(`differs: web/dist/${rel}`);
  }
  for (const rel of present) if (!files.has(rel)) problems.push(`not from this build: web/dist/${rel}`);
  if (problems.length) {
    console.error(`web/dist is not what building web/ gives (run \`npm run build\` in web/ and commit dist/):\n  ${problems.join("\n  ")}`);
    process.exit(1);
  }
  console.log(`web/dist is up to date (${files.size} files)`);
} else {
  for (const rel of existing(dist)) rmSync(join(dist, rel));
  rmSync(join(dist, "assets"), { recursive: true, force: true });
  for (const [rel, bytes] of files) {
    mkdirSync(dirname(join(dist, rel)), { recursive: true });
    writeFileSync(join(dist, rel), bytes);
  }
  for (const [rel, bytes] of files) console.log(`web/dist/${rel}  ${bytes.length} bytes`);
}
