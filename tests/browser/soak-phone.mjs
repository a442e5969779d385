// One phone of the soak (src/bin/openwork-soak) that is the web app in
// Debian's Chromium: it pairs from the QR link, then runs tasks through the
// app's own screens, one after another, each behind the soak's faulty network
// path, and writes one JSON line per task on stdout (what the app showed:
// status and the whole copied log); the soak checks each against what the
// host recorded. Lines on stdin from the soak: `mark roam T` (the phone's OS
// reports a network change: the app sees offline then online), `stop`.
//
//   node tests/browser/soak-phone.mjs '{"origin":..., "code":..., "fingerprint":..., "hostId":..., "w": 9, "seed": 1}'
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createInterface } from "node:readline";
import { chromium } from "playwright-core";
import { spkiHashAt } from "./spki.mjs";

const args = JSON.parse(process.argv[2] ?? "{}");
const { origin, code, fingerprint, hostId, w } = args;
const CHROMIUM = process.env.OPENWORK_TEST_CHROMIUM ?? "/usr/bin/chromium";
const emit = (line) => process.stdout.write(`${JSON.stringify(line)}\n`);
const say = (text) => process.stderr.write(`browser phone ${w}: ${text}\n`);

/** Base64 SHA-256 of the host certificate's SubjectPublicKeyInfo, for Chromium's SPKI list. */
function spkiHash(url) {
  const { hostname, port } = new URL(url);
  return spkiHashAt(hostname, Number(port), 20000);
}

/** A small deterministic generator (the seed makes the mix repeatable). */
function rng(seed) {
  let s = BigInt(seed) ^ 0x9e3779b97f4a7c15n;
  return () => {
    s ^= s << 13n;
    s &= 0xffffffffffffffffn;
    s ^= s >> 7n;
    s ^= s << 17n;
    s &= 0xffffffffffffffffn;
    return Number(s % 1000000n) / 1000000;
  };
}

/** Task k: a command and the exact log it must end with. */
function spec(k, random) {
  const id = `b${w}-t${k}`;
  if (random() < 0.5) {
    return { kind: "browser_short", command: `echo '${id} hello'; exit 0`, expected: `${id} hello\n`, status: "succeeded" };
  }
  const n = 20 + Math.floor(random() * 80);
  const lines = Array.from({ length: n }, (_, i) => `${id} line ${i + 1}\n`).join("");
  return {
    kind: "browser_stream",
    command: `i=1; while [ $i -le ${n} ]; do echo "${id} line $i"; i=$((i+1)); if [ $((i % 10)) = 0 ]; then sleep 0.1; fi; done`,
    expected: lines,
    status: "succeeded",
  };
}

let stopping = false;
let networkChanged = 0;
const input = createInterface({ input: process.stdin });
input.on("line", (line) => {
  const [word, kind] = line.split(" ");
  if (word === "stop") stopping = true;
  if (word === "mark" && kind === "roam") networkChanged += 1;
});
input.on("close", () => (stopping = true));

const FINAL = ["succeeded", "failed", "cancelled", "interrupted"];
const profile = mkdtempSync(join(tmpdir(), "openwork-soak-chromium-"));
let context;
let page;
let started = 0;
let stopRoaming = () => undefined;
let gaveUp = 0;
try {
  context = await chromium.launchPersistentContext(profile, {
    executablePath: CHROMIUM,
    headless: true,
    viewport: { width: 360, height: 740 },
    isMobile: true,
    hasTouch: true,
    args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync", `--ignore-certificate-errors-spki-list=${await spkiHash(origin)}`],
    timeout: 120000,
  });
  context.setDefaultTimeout(60000);
  await context.grantPermissions(["clipboard-read", "clipboard-write"], { origin });
  page = await context.newPage();
  page.on("pageerror", (e) => say(`page error: ${e.message}`));
  // Other phones' tasks asking for permission cover the screen: this phone's
  // person is not the one to answer them, and puts each off ("Later") to go
  // on; several may be queued (their phones asleep or away), each shown in
  // turn. Not waiting for the overlay to go: a new request may come meanwhile,
  // and the handler runs again on the next action.
  await page.addLocatorHandler(
    page.locator("#permission-prompt"),
    async () => {
      for (let i = 0; i < 50 && (await page.locator("#permission-prompt").isVisible().catch(() => false)); i++) {
        await page.tap("#prompt-later", { timeout: 5000 }).catch(() => undefined);
      }
    },
    { noWaitAfter: true },
  );
  await page.goto(`${origin}/#pair?code=${code}&fp=${fingerprint}&id=${hostId}`, { timeout: 120000 });
  await page.fill("#device-name", `browser phone ${w}`);
  await page.tap("#pair-button");
  await page.waitForSelector('#status[data-state="open"]', { timeout: 120000 });
  say("paired");
  emit({ t: "paired", w });

  // A network change comes whenever it comes, whatever the person is doing:
  // the phone's OS tells the app (offline, then online) at once.
  let roaming = Promise.resolve();
  const roamWatch = setInterval(() => {
    if (networkChanged === 0) return;
    networkChanged -= 1;
    roaming = roaming.then(async () => {
      await context.setOffline(true);
      await context.setOffline(false);
    }).catch(() => undefined);
  }, 100);
  stopRoaming = () => clearInterval(roamWatch);

  const random = rng(args.seed ?? 1);
  // Bounded: the soak says stop; past a day of tasks the phone stops by itself.
  for (let k = 0; k < 100000 && !stopping; k++) {
    const task = spec(k, random);
    started += 1;
    let line = { t: "task", w, k, kind: task.kind, outcome: "ok", detail: "", browser: true };
    try {
      // Once the app shows the host (reconnecting after a cut takes a moment).
      await page.waitForSelector('#status[data-state="open"]', { timeout: 300000 });
      await page.tap('nav a[href="#new"]');
      await page.fill("#command", task.command);
      // A start refused by a drop is shown ("Cannot start it"): the person taps
      // Run again, and the app sends the same idempotency key.
      for (let tries = 0; ; tries++) {
        await page.tap("#run-button");
        const shown = await page.waitForSelector('#task-status[data-task-id]:not([data-task-id=""]), #error:has-text("Cannot start it")', { timeout: 120000 });
        if ((await shown.getAttribute("id")) === "task-status") break;
        if (tries >= 20) throw new Error(`the app could not start the task: ${await shown.textContent()}`);
        line.runTappedAgain = tries + 1;
        await page.waitForSelector('#status[data-state="open"]', { timeout: 300000 });
      }
      const taskId = await page.getAttribute("#task-status", "data-task-id");
      line.taskId = taskId;
      // Faults come while it runs; up to five minutes to finish.
      let status = "";
      for (let i = 0; i < 3000 && !FINAL.includes(status); i++) {
        status = (await page.getAttribute("#task-status", "data-status")) ?? "";
        if (!FINAL.includes(status)) await new Promise((r) => setTimeout(r, 100));
      }
      line.status = status;
      // The whole log, as the person copies it (the view shows only the rows on screen);
      // the final status may come before the last rows are drawn.
      let copied = "";
      for (let i = 0; i < 100; i++) {
        // A prompt that comes up during the tap intercepts it: tapped again.
        if (!(await page.click("text=Copy", { timeout: 10000 }).then(() => true, () => false))) continue;
        copied = await page.evaluate(() => navigator.clipboard.readText());
        if (copied === task.expected || status === "interrupted") break;
        await new Promise((r) => setTimeout(r, 100));
      }
      line.output = copied;
      if (!FINAL.includes(status)) {
        line.outcome = "hung";
        line.detail = `no final status within 5 minutes (shows ${status})`;
      } else if (status === "interrupted") {
        line.outcome = task.expected.startsWith(copied) ? "host_restart" : "lost_output";
      } else if (copied !== task.expected) {
        line.outcome = copied.length > task.expected.length ? "duplicated_output" : "lost_output";
        line.detail = `${copied.length} bytes shown, ${task.expected.length} expected`;
      } else if (status !== task.status) {
        line.outcome = "failed";
        line.detail = `${status}, ${task.status} expected`;
      }
    } catch (e) {
      line.outcome = "gave_up";
      line.detail = String(e.message ?? e).slice(0, 2000);
      // What the screen showed, for the report: the status line and a picture.
      line.screen = await page
        .evaluate(() => ({
          status: document.querySelector("#status")?.textContent ?? "",
          state: document.querySelector("#status")?.getAttribute("data-state") ?? "",
          hash: location.hash,
          online: navigator.onLine,
        }))
        .catch((err) => ({ error: String(err) }));
      gaveUp += 1;
      if (process.env.SOAK_BROWSER_SHOT && gaveUp <= 20) {
        await page.screenshot({ path: process.env.SOAK_BROWSER_SHOT.replace(/(\.png)?$/, `-gave-up-${k}.png`) }).catch(() => undefined);
      }
    }
    emit(line);
  }
} catch (e) {
  say(`failed: ${e.stack ?? e}`);
  if (process.env.SOAK_BROWSER_SHOT) await page?.screenshot({ path: process.env.SOAK_BROWSER_SHOT }).catch(() => undefined);
  process.exitCode = 1;
} finally {
  stopRoaming();
  emit({ t: "stats", w, started, reconnects: 0, retried_calls: 0 });
  input.close();
  await context?.close().catch(() => undefined);
  rmSync(profile, { recursive: true, force: true });
}
