// The web app's budgets, measured and printed (figures, not timed tests):
//   1. compressed JS + CSS of the first screen (budget 80 KB);
//   2. with the CPU throttled 4x and "fast 3G" emulated, the time from opening
//      the URL to the task list on screen, the median of BENCH_OPENS (5) cold
//      opens (budget 1.5 s);
//   3. a task printing 10,000 lines per second for BENCH_SECONDS (default 60)
//      followed in the task view: the page's worst main-thread delay (a stand-in
//      for input delay, budget 100 ms) and its JS heap (budget 100 MB).
// Run by scripts/bench-web against a freshly built host, on a phone profile.
import { existsSync, readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { gzipSync } from "node:zlib";
import { approve, launchBrowser, openPairingWindow, PHONE, repo, spkiHash, TestHost } from "./harness.mjs";

const seconds = Number(process.env.BENCH_SECONDS ?? 60);
// The JS and CSS are inside index.html (one request); any files under assets/ count too.
const assets = join(repo, "web", "dist", "assets");
let compressed = 0;
for (const name of existsSync(assets) ? readdirSync(assets) : []) compressed += gzipSync(readFileSync(join(assets, name)), { level: 9 }).length;
const html = gzipSync(readFileSync(join(repo, "web", "dist", "index.html")), { level: 9 }).length;
console.log(`first screen, gzip: index.html with its JS and CSS ${(html / 1024).toFixed(1)} KB (budget 80 KB); the pairing code, loaded by the Pair screen only, ${(compressed / 1024).toFixed(1)} KB more`);

const host = new TestHost();
await host.start();
const origin = `https://${host.address}`;
const browser = await launchBrowser(await spkiHash(host.address), PHONE);
try {
  const page = await browser.context.newPage();
  const window = await openPairingWindow(host);
  await page.goto(`${origin}/#pair?code=${window.code}&fp=${window.fingerprint}&id=${window.hostId}`);
  await page.fill("#device-name", "bench phone");
  await page.click("#pair-button");
  await approve(host, "bench phone");
  await page.waitForSelector('#status[data-state="open"]');

  // 2. Cold opens (the cache emptied, the service worker gone) under throttling, several: the median is the figure.
  const cdp = await browser.context.newCDPSession(page);
  await cdp.send("Network.enable");
  const opens = [];
  const rounds = Number(process.env.BENCH_OPENS ?? 5);
  for (let round = 0; round < rounds; round++) {
    await cdp.send("Emulation.setCPUThrottlingRate", { rate: 1 });
    await cdp.send("Network.emulateNetworkConditions", { offline: false, latency: 0, downloadThroughput: -1, uploadThroughput: -1 });
    await page.goto(`${origin}/#tasks`);
    await page.waitForSelector('#status[data-state="open"]', { timeout: 60000 });
    await page.evaluate(async () => {
      for (const r of await navigator.serviceWorker.getRegistrations()) await r.unregister();
      for (const k of await caches.keys()) await caches.delete(k);
    });
    await cdp.send("Network.clearBrowserCache");
    await page.goto("about:blank");
    await cdp.send("Emulation.setCPUThrottlingRate", { rate: 4 });
    // Chrome DevTools' "Fast 3G": 562.5 ms RTT, 1.44 Mbit/s down, 675 kbit/s up.
    await cdp.send("Network.emulateNetworkConditions", {
      offline: false,
      latency: 562.5,
      downloadThroughput: (1.44 * 1024 * 1024) / 8,
      uploadThroughput: (675 * 1024) / 8,
    });
    const start = Date.now();
    await page.goto(`${origin}/#tasks`);
    await page.waitForSelector("#task-list", { state: "attached", timeout: 60000 });
    await page.waitForSelector('#status[data-state="open"]', { timeout: 60000 });
    const interactive = Date.now() - start;
    opens.push(interactive);
    // Where the time went: the page, then the connection (WebSocket upgrade, auth.challenge, initialize, task.list).
    const parts = await page.evaluate(() => {
      const nav = performance.getEntriesByType("navigation")[0];
      const marks = Object.fromEntries(performance.getEntriesByType("mark").map((m) => [m.name.replace("openwork:", ""), Math.round(m.startTime)]));
      return { firstByte: Math.round(nav.responseStart), html: Math.round(nav.responseEnd), dom: Math.round(nav.domContentLoadedEventEnd), marks };
    });
    console.log(`  open ${round + 1}: ${interactive} ms; page's first byte ${parts.firstByte} ms, whole ${parts.html} ms, scripts run by ${parts.dom} ms; marks ${JSON.stringify(parts.marks)}`);
  }
  const sorted = [...opens].sort((a, b) => a - b);
  console.log(`task list on screen and connected, CPU 4x slower, fast 3G: median ${sorted[Math.floor(sorted.length / 2)]} ms of ${opens.length} cold opens (${sorted.join(", ")}) (budget 1500 ms; the 3G round trip alone is 562 ms)`);
  await cdp.send("Emulation.setCPUThrottlingRate", { rate: 1 });
  await cdp.send("Network.emulateNetworkConditions", { offline: false, latency: 0, downloadThroughput: -1, uploadThroughput: -1 });

  // 3. 10,000 lines a second.
  await page.click('nav a[href="#new"]');
  await page.fill(
    "#command",
    `i=0; while [ $i -lt ${seconds} ]; do seq $((i*10000+1)) $((i*10000+10000)) | sed 's/^/\\x1b[32mline\\x1b[0m /'; i=$((i+1)); sleep 1; done`,
  );
  await page.click("#run-button");
  await page.waitForSelector('#task-status[data-status="running"]');
  await page.evaluate(() => {
    // The main thread's responsiveness: how late a message posted every 50 ms runs.
    const state = { worst: 0, samples: [] };
    globalThis.__bench = state;
    const channel = new MessageChannel();
    let sent = 0;
    channel.port1.onmessage = () => {
      const late = performance.now() - sent;
      state.worst = Math.max(state.worst, late);
      state.samples.push(late);
    };
    setInterval(() => {
      sent = performance.now();
      channel.port2.postMessage(0);
    }, 50);
  });
  let heapMax = 0;
  const heaps = [];
  for (let s = 0; s < seconds + 30; s++) {
    await new Promise((r) => setTimeout(r, 1000));
    const { usedSize } = await cdp.send("Runtime.getHeapUsage");
    heapMax = Math.max(heapMax, usedSize);
    heaps.push(usedSize);
    if ((await page.getAttribute("#task-status", "data-status")) === "succeeded") break;
  }
  const lag = await page.evaluate(() => {
    const s = globalThis.__bench.samples.sort((a, b) => a - b);
    return { worst: globalThis.__bench.worst, p99: s[Math.floor(s.length * 0.99)] ?? 0, n: s.length };
  });
  const shown = await page.evaluate(() => document.querySelectorAll("#output .row").length);
  console.log(`${seconds} s at 10,000 lines/s: main-thread delay worst ${lag.worst.toFixed(0)} ms, p99 ${lag.p99.toFixed(0)} ms over ${lag.n} samples (budget 100 ms)`);
  console.log(`JS heap: max ${(heapMax / 1048576).toFixed(1)} MB, last ${(heaps[heaps.length - 1] / 1048576).toFixed(1)} MB (budget 100 MB); rows in the DOM: ${shown}`);
  console.log(`task ended: ${await page.textContent("#task-status")}`);
} finally {
  await browser.close();
  await host.stop();
}
