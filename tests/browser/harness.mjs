// What the browser tests share: the real host (clients/typescript's test
// harness, compiled), Debian's Chromium under playwright-core with a fresh
// profile that trusts the host's certificate by its SPKI hash, screenshots
// under target/screenshots/, and small bounded waits.
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { createRequire } from "node:module";
import assert from "node:assert/strict";
import { fileURLToPath } from "node:url";
import { chromium } from "playwright-core";
import { FakeModel } from "./fake-model.mjs";
import { spkiHashAt } from "./spki.mjs";

export const repo = resolve(dirname(fileURLToPath(import.meta.url)), "..", "..");
const compiled = join(repo, "clients", "typescript", "dist");

/** The TypeScript client and its test harness, as `npm run build` in clients/typescript compiled them. */
export const client = await import(join(compiled, "src", "index.js"));
export const { TestHost, waitFor, within } = await import(join(compiled, "test", "host.js"));

/** Debian's Chromium (no browser download is possible here). */
export const CHROMIUM = process.env.OPENWORK_TEST_CHROMIUM ?? "/usr/bin/chromium";

/** Base64 SHA-256 of the host certificate's SubjectPublicKeyInfo: what Chromium's SPKI list takes. */
export function spkiHash(address) {
  const { host, port } = client.parseAddress(address);
  return spkiHashAt(host, port);
}

/** A device paired as a script is (with a token), connected over TLS without reconnecting: "another client". */
export async function nativeClient(host, name) {
  const paired = await host.pairDevice(name);
  return client.OpenworkClient.connectTls({
    address: paired.address,
    fingerprint: paired.fingerprint,
    auth: { deviceId: paired.deviceId, token: paired.token },
    reconnect: false,
  });
}

/** A phone: what the app is built for first (a 360 px wide screen, touch, a mobile user agent). */
export const PHONE = {
  viewport: { width: 360, height: 740 },
  deviceScaleFactor: 2,
  isMobile: true,
  hasTouch: true,
  userAgent:
    "Mozilla/5.0 (Linux; Android 14; Pixel 7) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/130.0.0.0 Mobile Safari/537.36",
};

/** A fresh Chromium profile that trusts only the host's key besides the usual CAs; `profile` e.g. PHONE. */
export async function launchBrowser(spki, device = { viewport: { width: 900, height: 640 } }) {
  const profile = mkdtempSync(join(tmpdir(), "openwork-chromium-"));
  const context = await chromium.launchPersistentContext(profile, {
    executablePath: CHROMIUM,
    headless: true,
    ...device,
    args: [
      "--headless",
      "--no-sandbox",
      "--disable-gpu",
      "--disable-quic",
      "--no-first-run",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
      `--ignore-certificate-errors-spki-list=${spki}`,
    ],
    timeout: 60000,
  });
  context.setDefaultTimeout(20000);
  return {
    context,
    async close() {
      await context.close().catch(() => undefined);
      rmSync(profile, { recursive: true, force: true });
    },
  };
}

/** Saves a screenshot as target/screenshots/NAME.png. */
export async function screenshot(page, name) {
  const dir = join(process.env.CARGO_TARGET_DIR ?? join(repo, "target"), "screenshots");
  mkdirSync(dir, { recursive: true });
  const path = join(dir, `${name}.png`);
  await page.screenshot({ path, fullPage: true });
  return path;
}

const axeSource = readFileSync(createRequire(import.meta.url).resolve("axe-core/axe.min.js"), "utf8");

/** A phone's and a desktop's size: `checkScreen`'s sizes for a screen of the phone app. */
export const PHONE_AND_DESKTOP = [
  ["", PHONE.viewport],
  ["-desktop", { width: 1280, height: 800 }],
];

/**
 * Saves `shot` + size suffix + `-light`/`-dark` screenshots of the page at
 * each of `sizes` ([suffix, viewport]; the page's own size by default) and
 * asserts axe-core finds no serious or critical violation on any; the page
 * is left light, at the first size.
 */
export async function checkScreen(page, shot, label, sizes = [["", null]]) {
  for (const [suffix, viewport] of sizes) {
    if (viewport) await page.setViewportSize(viewport);
    for (const scheme of ["light", "dark"]) {
      await page.emulateMedia({ colorScheme: scheme });
      await screenshot(page, `${shot}${suffix}-${scheme}`);
      // page.evaluate is not subject to the page's CSP (an injected <script> would be).
      await page.evaluate(axeSource);
      const violations = await page.evaluate(async () => {
        const r = await globalThis.axe.run(document, { resultTypes: ["violations"] });
        return r.violations.filter((v) => v.impact === "serious" || v.impact === "critical").map((v) => `${v.id}: ${v.help} (${v.nodes.map((n) => n.target.join(" ")).join(", ")})`);
      });
      assert.deepEqual(violations, [], `axe on ${label}${suffix} (${scheme})`);
    }
  }
  if (sizes[0][1]) await page.setViewportSize(sizes[0][1]);
  await page.emulateMedia({ colorScheme: "light" });
}

/** The owner opens a pairing window; its code, fingerprint and host id. */
export async function openPairingWindow(host) {
  return JSON.parse(await host.cli("pair", "--detach", "--json", "--address", "127.0.0.1"));
}

/** The owner approves the pending request of the device named `deviceName`. */
export async function approve(host, deviceName) {
  const requestId = await waitFor(`${deviceName} to wait for approval`, 20000, async () => {
    const status = JSON.parse(await host.cli("devices", "pending", "--json"));
    return status.pending.find((p) => p.deviceName === deviceName)?.requestId;
  });
  await host.cli("devices", "approve", requestId);
}

/** The host's devices, as `devices list --json` shows them. */
export async function devices(host) {
  return JSON.parse(await host.cli("devices", "list", "--json")).devices;
}

/** Sends raw text frames on a fresh WebSocket from Node and collects what comes back. */
export async function rawWebSocket(address, fingerprint, origin) {
  const transport = await client.dialWebSocket({ endpoint: client.parseAddress(address), fingerprint, origin });
  const received = [];
  let closed;
  transport.start({ message: (text) => received.push(JSON.parse(text)), closed: (reason) => (closed = reason) });
  return {
    send: (text) => transport.send(text),
    close: () => transport.close(),
    get closed() {
      return closed;
    },
    /** The reply to request `id` (bounded wait). */
    reply: (id) => waitFor(`the reply to request ${id}`, 10000, () => received.find((m) => m.id === id) ?? (closed !== undefined && { closed })),
  };
}

/** The OpenCode binary scripts/test installs ($OPENWORK_TEST_OPENCODE), or undefined (CI must have it). */
export function opencodeBinary() {
  const path = process.env.OPENWORK_TEST_OPENCODE ?? join(repo, "target", "test-deps", "node_modules", "opencode-linux-x64", "bin", "opencode");
  if (existsSync(path)) return path;
  if (process.env.CI) throw new Error(`OpenCode is not installed at ${path}: run scripts/test, which installs it`);
  return undefined;
}

/**
 * A host whose OpenCode (the real `opencode serve`, isolated in a HOME inside
 * the host's temporary dir, offline) uses a fake model on loopback; the
 * project's opencode.json takes `permission` and `agent`. Started, and
 * OpenCode ready. `stop()` stops both.
 */
export async function opencodeHost(binary, { permission = { bash: "ask" }, agent = {} } = {}) {
  const model = await new FakeModel().start();
  const host = new TestHost();
  const home = join(host.dir, "oc-home");
  const env = {
    HOME: home,
    XDG_CONFIG_HOME: join(home, "config"),
    XDG_DATA_HOME: join(home, "data"),
    XDG_STATE_HOME: join(home, "state"),
    XDG_CACHE_HOME: join(home, "cache"),
    OPENCODE_DISABLE_MODELS_FETCH: "1",
    OPENCODE_DISABLE_AUTOUPDATE: "1",
  };
  const config = join(host.data, "config.toml");
  const text = readFileSync(config, "utf8").replace(/\[opencode\]\nenabled = "off"\n/, "");
  writeFileSync(
    config,
    `${text}\n[opencode]\nenabled = "on"\nbinary = ${JSON.stringify(binary)}\nstartup_timeout_s = 120\n\n[opencode.env]\n` +
      Object.entries(env)
        .map(([k, v]) => `${k} = ${JSON.stringify(v)}\n`)
        .join(""),
  );
  writeFileSync(join(host.work, "opencode.json"), model.opencodeJson(permission, agent));
  await host.start();
  await waitFor("OpenCode to be ready", 150000, async () => {
    const health = JSON.parse(await host.cli("status", "--json"));
    const runtime = (health.runtimes ?? []).find((r) => r.name === "opencode");
    if (runtime && !["starting", "restarting", "ready"].includes(runtime.state)) throw new Error(`OpenCode is ${runtime.state}: ${runtime.message ?? ""}`);
    return runtime?.state === "ready";
  });
  const stop = host.stop.bind(host);
  host.stop = async () => {
    await stop();
    await model.stop();
  };
  return { host, model };
}
