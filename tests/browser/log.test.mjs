// The task view's log model (web/src/log.ts), without a browser: lines and
// colour runs, escapes cut by a chunk boundary, replays ignored, rows for the
// virtualised view, and the memory bound (a 100,000-line log kept whole,
// beyond the bound the oldest lines dropped and counted).
import { test } from "node:test";
import assert from "node:assert/strict";
import { createRequire } from "node:module";
import { join } from "node:path";
import { repo } from "./harness.mjs";

const esbuild = createRequire(join(repo, "web", "package.json"))("esbuild");
const built = await esbuild.build({ entryPoints: [join(repo, "web", "src", "log.ts")], bundle: true, format: "esm", write: false, logLevel: "warning" });
const { LogBuffer } = await import(`data:text/javascript;base64,${Buffer.from(built.outputFiles[0].contents).toString("base64")}`);

const shown = (log) => log.lines.map((l) => log.segments(l).map((s) => (s.cls ? `[${s.cls}:${s.text}]` : s.text)).join(""));

test("colours become runs of classes; stderr is marked; text is whole", () => {
  const log = new LogBuffer();
  assert.ok(log.append(1, "plain \x1b[31mred\x1b[1m bold\x1b[0m tail\nnext", "stdout"));
  assert.ok(log.append(2, " more\x1b[3", "stdout"), "an escape cut by the chunk's end waits for the next chunk");
  assert.ok(log.append(3, "2mgreen\n", "stderr"));
  assert.deepEqual(shown(log), ["plain [f1:red][f1 b: bold] tail", "next more[f2 e:green]", ""]);
  assert.equal(log.text(), "plain red bold tail\nnext moregreen\n");
  assert.equal(log.lines[0].runs.length, 8, "four runs: plain, red, red bold, plain");
  assert.equal(log.lines[1].text, "next moregreen", "a line continued across chunks");
});

test("a chunk seen before (a replay after a reconnect) is ignored", () => {
  const log = new LogBuffer();
  log.append(1, "a\n", "stdout");
  assert.equal(log.append(1, "a\n", "stdout"), false);
  log.append(2, "b\n", "stdout");
  assert.equal(log.text(), "a\nb\n");
});

test("long lines take several rows; lineAt finds the line of a row", () => {
  const log = new LogBuffer();
  log.setColumns(20);
  log.append(1, `${"x".repeat(45)}\nshort\n${"y".repeat(20)}\n`, "stdout");
  assert.equal(log.rows, 3 + 1 + 1 + 1, "45 characters at 20 a row take 3 rows; the empty last line one");
  assert.deepEqual(log.lineAt(2), { index: 0, start: 0 });
  assert.deepEqual(log.lineAt(3), { index: 1, start: 3 });
  assert.deepEqual(log.lineAt(4), { index: 2, start: 4 });
});

test("a 100,000-line log is kept whole; past the bound the oldest lines go and are counted", () => {
  const log = new LogBuffer();
  let seq = 0;
  const block = (from, n) => Array.from({ length: n }, (_, i) => `\x1b[32mline\x1b[0m ${from + i}\n`).join("");
  for (let i = 0; i < 100; i++) log.append(++seq, block(i * 1000 + 1, 1000), "stdout");
  assert.equal(log.dropped, 0);
  assert.equal(log.lines.length, 100_001);
  assert.equal(log.lines[0].text, "line 1");
  for (let i = 100; i < 300; i++) log.append(++seq, block(i * 1000 + 1, 1000), "stdout");
  assert.ok(log.lines.length <= log.maxLines, `${log.lines.length} lines kept, bound ${log.maxLines}`);
  assert.equal(log.dropped + log.lines.length, 300_001, "every line is either kept or counted as dropped");
  assert.equal(log.lines[0].text, `line ${log.dropped + 1}`, "the oldest go first, in order");
  assert.deepEqual(shown(log).at(-2), "[f2:line] 300000");
});
