// The web page and the browser credential in a real Chromium against a real
// host: pairing from the page with the owner's approval, a task's output
// streamed onto the page, the key beyond a page script's reach, a replayed
// `initialize` and a foreign `Origin` refused, the raw protocol and a browser
// on one port at once, and a revoked browser cut off. Screenshots of each
// state go to target/screenshots/.
import assert from "node:assert/strict";
import { writeFileSync } from "node:fs";
import * as http from "node:http";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import {
  approve,
  client,
  devices,
  launchBrowser,
  openPairingWindow,
  rawWebSocket,
  screenshot,
  spkiHash,
  TestHost,
  waitFor,
  within,
} from "./harness.mjs";

const BROWSER_NAME = "chromium under test";

describe("the web page in Chromium against a live host", () => {
  const host = new TestHost();
  let browser;
  let page;
  let origin;
  /** Console errors and uncaught exceptions on the host's page. */
  const pageProblems = [];
  let deviceId;

  before(async () => {
    await host.start();
    origin = `https://${host.address}`;
    browser = await launchBrowser(await spkiHash(host.address));
    page = await browser.context.newPage();
    page.on("console", (m) => {
      if (m.type() === "error") pageProblems.push(`console: ${m.text()}`);
    });
    page.on("pageerror", (e) => pageProblems.push(`uncaught: ${e.message}`));
  });

  after(async () => {
    await browser?.close();
    await host.stop();
  });

  test("the page pairs this browser from the QR link once the owner approves", async () => {
    const window = await openPairingWindow(host);
    await page.goto(`${origin}/#pair?code=${window.code}&fp=${window.fingerprint}&id=${window.hostId}`);
    await page.waitForSelector('#status[data-state="unpaired"]');
    assert.equal(await page.inputValue("#code"), window.code, "the code comes from the link");
    await page.fill("#device-name", BROWSER_NAME);
    await page.click("#pair-button");
    await page.waitForSelector('#pair-status[data-state="waiting"], #pair-status[data-state="failed"]', { state: "attached" });
    assert.equal(await page.getAttribute("#pair-status", "data-state"), "waiting", await page.locator("#error").allTextContents().then(String));
    assert.match(await page.textContent("#pair-status"), /Waiting for approval/);
    await screenshot(page, "1-pairing-waiting-for-approval");

    await approve(host, BROWSER_NAME);
    await page.waitForSelector('#status[data-state="open"]');
    await screenshot(page, "2-paired-connected");
    assert.equal(await page.textContent("#status"), `Connected to ${window.hostName}`);
    assert.doesNotMatch(new URL(page.url()).hash, /code=/, "the code leaves the address bar once used");
    await page.click('nav a[href="#host"]');
    deviceId = await page.textContent("#device-id");
    const mine = (await devices(host)).find((d) => d.deviceId === deviceId);
    assert.ok(mine, `device ${deviceId} is not in the host's list`);
    assert.equal(mine.name, BROWSER_NAME);
    assert.ok(mine.connections >= 1, "the page's connection is counted");
  });

  test("a task runs from the page and its output streams onto it", async () => {
    // The task prints a first line, then waits (bounded) for the test's go-ahead:
    // the first line must be on the page while the task still runs.
    const go = join(host.work, "go-ahead");
    await page.click('nav a[href="#new"]');
    await page.fill(
      "#command",
      "for i in 1 2 3; do echo \"line $i from the browser\"; done; " +
        "n=0; while [ ! -e go-ahead ] && [ $n -lt 400 ]; do sleep 0.05; n=$((n+1)); done; printf 'déjà vu\\n'",
    );
    await page.click("#run-button");
    await page.waitForFunction(() => document.getElementById("output")?.textContent?.includes("line 3 from the browser"));
    assert.equal(await page.getAttribute("#task-status", "data-status"), "running", "the output shows before the task ends");
    await screenshot(page, "3-task-output-streaming");
    writeFileSync(go, "");
    await page.waitForSelector('#task-status[data-status="succeeded"]');
    await screenshot(page, "4-task-output-done");
    assert.equal(
      await page.textContent("#output"),
      "line 1 from the browser\nline 2 from the browser\nline 3 from the browser\ndéjà vu\n",
    );
    assert.match(await page.textContent("#task-status"), /succeeded \(exit 0\)/);
  });

  test("a page script can use the key but cannot export it", async () => {
    const seen = await page.evaluate(async () => {
      const db = await new Promise((resolve, reject) => {
        const r = indexedDB.open("openwork");
        r.onsuccess = () => resolve(r.result);
        r.onerror = () => reject(r.error);
      });
      const stored = await new Promise((resolve, reject) => {
        const r = db.transaction("credentials").objectStore("credentials").get("device");
        r.onsuccess = () => resolve(r.result);
        r.onerror = () => reject(r.error);
      });
      const key = stored.privateKey;
      const out = { type: key.type, extractable: key.extractable, curve: key.algorithm.namedCurve, usages: key.usages };
      for (const format of ["pkcs8", "jwk"]) {
        try {
          await crypto.subtle.exportKey(format, key);
          out[format] = "exported";
        } catch (e) {
          out[format] = e.name;
        }
      }
      const wrapping = await crypto.subtle.generateKey({ name: "AES-KW", length: 256 }, true, ["wrapKey"]);
      try {
        await crypto.subtle.wrapKey("pkcs8", key, wrapping, "AES-KW");
        out.wrapKey = "wrapped";
      } catch (e) {
        out.wrapKey = e.name;
      }
      const signature = await crypto.subtle.sign({ name: "ECDSA", hash: "SHA-256" }, key, new Uint8Array([1, 2, 3]));
      out.signatureBytes = signature.byteLength;
      return out;
    });
    assert.deepEqual(seen, {
      type: "private",
      extractable: false,
      curve: "P-256",
      usages: ["sign"],
      pkcs8: "InvalidAccessError",
      jwk: "InvalidAccessError",
      wrapKey: "InvalidAccessError",
      signatureBytes: 64,
    });
  });

  test("the initialize a page sent is refused when replayed on another connection", async () => {
    const sent = [];
    const listen = (ws) => {
      if (ws.url().endsWith("/rpc")) ws.on("framesent", (f) => sent.push(f.payload));
    };
    page.on("websocket", listen);
    await page.reload();
    await page.waitForSelector('#status[data-state="open"]');
    page.off("websocket", listen);
    const initialize = sent.find((f) => typeof f === "string" && JSON.parse(f).method === "initialize");
    assert.ok(initialize, `no initialize among the frames the page sent: ${sent.join(" ")}`);
    const { params, id } = JSON.parse(initialize);
    assert.equal(params.auth.deviceId, deviceId);
    assert.equal(params.auth.token, undefined, "a browser sends no bearer token");
    assert.match(params.auth.signature, /^[A-Za-z0-9_-]{86}$/);

    // As captured, on a fresh connection with the page's own Origin.
    const replay = await rawWebSocket(host.address, host.fingerprint, origin);
    replay.send(initialize);
    const refused = await replay.reply(id);
    assert.equal(refused.error?.code, -32001, JSON.stringify(refused));
    replay.close();

    // Even after that connection asked a nonce of its own.
    const second = await rawWebSocket(host.address, host.fingerprint, origin);
    second.send(JSON.stringify({ jsonrpc: "2.0", id: 1, method: "auth.challenge", params: {} }));
    const challenge = await second.reply(1);
    assert.match(challenge.result?.nonce ?? "", /^[A-Za-z0-9_-]{43}$/, JSON.stringify(challenge));
    assert.notEqual(challenge.result.nonce, params.auth.nonce);
    second.send(initialize);
    assert.equal((await second.reply(id)).error?.code, -32001);
    second.close();
    // The page itself is still connected: its own session was not disturbed.
    assert.equal(await page.getAttribute("#status", "data-state"), "open");
  });

  test("a WebSocket from another origin is refused, from the host's own page it opens", async () => {
    const other = http.createServer((_, res) => {
      res.writeHead(200, { "content-type": "text/html" });
      res.end("<!doctype html><title>another site</title><p>another site</p>");
    });
    await new Promise((r) => other.listen(0, "127.0.0.1", r));
    const probe = (url) =>
      new Promise((resolve) => {
        const ws = new WebSocket(url);
        ws.onopen = () => {
          ws.close();
          resolve("open");
        };
        ws.onerror = () => resolve("refused");
        setTimeout(() => resolve("no answer"), 10000);
      });
    const rpc = `wss://${host.address}/rpc`;
    try {
      const foreign = await browser.context.newPage();
      await foreign.goto(`http://127.0.0.1:${other.address().port}/`);
      assert.equal(await foreign.evaluate(probe, rpc), "refused");
      await foreign.close();
      assert.equal(await page.evaluate(probe, rpc), "open", "the same probe from the host's page opens");
    } finally {
      await new Promise((r) => other.close(r));
    }
    // From Node, where any Origin can be forged: only the host's own passes.
    for (const forged of [`http://127.0.0.1:${host.address.split(":")[1]}`, "https://evil.example", "null"]) {
      await assert.rejects(rawWebSocket(host.address, host.fingerprint, forged), /403/, `Origin ${forged}`);
    }
    (await rawWebSocket(host.address, host.fingerprint, origin)).close();
  });

  test("the raw protocol and a browser share the port at the same time", async () => {
    const native = await host.pairDevice("node over openwork/1");
    assert.equal(native.address, host.address, "the same address and port");
    const tlsClient = await client.OpenworkClient.connectTls({
      address: native.address,
      fingerprint: native.fingerprint,
      auth: { deviceId: native.deviceId, token: native.token },
      reconnect: false,
    });
    try {
      const chunks = [];
      const updates = [];
      tlsClient.on("log.chunk", (c) => chunks.push(c));
      tlsClient.on("task.updated", (u) => updates.push(u));
      // Both run a task at once, each followed on its own connection.
      await page.click('nav a[href="#new"]');
      await page.fill("#command", "for i in 1 2 3 4 5; do echo browser $i; sleep 0.05; done");
      const [, run] = await Promise.all([
        page.click("#run-button"),
        tlsClient.taskRun({ command: "for i in 1 2 3 4 5; do echo native $i; sleep 0.05; done" }),
      ]);
      await waitFor("the native task to end", 20000, () => updates.find((u) => u.taskId === run.taskId && u.status === "succeeded"));
      await page.waitForSelector('#task-status[data-status="succeeded"]');
      assert.equal(chunks.filter((c) => c.taskId === run.taskId).map((c) => c.data).join(""), "native 1\nnative 2\nnative 3\nnative 4\nnative 5\n");
      assert.equal(await page.textContent("#output"), "browser 1\nbrowser 2\nbrowser 3\nbrowser 4\nbrowser 5\n");
      const list = await devices(host);
      assert.ok(list.find((d) => d.deviceId === native.deviceId)?.connections >= 1);
      assert.ok(list.find((d) => d.deviceId === deviceId)?.connections >= 1);
    } finally {
      await tlsClient.close();
    }
  });

  test("a browser the owner revokes is cut off and the page says so", async () => {
    await host.cli("devices", "revoke", deviceId);
    await within(20000, "the page to show the refusal", page.waitForSelector('#status[data-state="refused"]'));
    await screenshot(page, "5-revoked");
    assert.match(await page.textContent("#status"), /Refused by the host/);
    assert.match(await page.textContent("#error"), /revoked/);
    assert.equal(await page.isVisible("#session"), false, "no command can be run");
    assert.equal(await page.isVisible("#pair-form"), true, "the page offers to pair again");
    // A reload tries the stored key again, and is refused again.
    await page.reload();
    await page.waitForSelector('#status[data-state="refused"]');
  });

  test("the page ran under the host's CSP without errors", () => {
    // The refusals after the revocation are expected: the page reports them itself.
    const unexpected = pageProblems.filter((p) => !/WebSocket|revoked|not paired/.test(p));
    assert.deepEqual(unexpected, []);
  });
});
