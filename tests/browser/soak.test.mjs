// The web app in the compressed-week soak (src/bin/openwork-soak), run here
// rather than in `cargo test`'s short soak: there Chromium would share the
// 2-core machine with four more phones and the rest of the Rust suite. One
// library phone and the web app in Chromium, each behind its own faulty
// network path (cuts, roams, stalls, link-downs, slow links) and through a
// host SIGTERM and a SIGKILL restart; the app's every task is checked byte for
// byte against what the host recorded.
import { test } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { existsSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { repo } from "./harness.mjs";

const host = process.env.OPENWORK_HOST_BIN ?? join(repo, "target", "debug", "openwork-host");
const soak = process.env.OPENWORK_SOAK_BIN ?? join(dirname(host), "openwork-soak");

test("the web app loses no task to a disconnect in a compressed week", { timeout: 240_000 }, async () => {
  assert.ok(existsSync(soak), `no soak driver at ${soak} (cargo build --bin openwork-soak)`);
  const dir = mkdtempSync(join(tmpdir(), "openwork-soak-web-"));
  const reportPath = join(dir, "report.json");
  try {
    const child = spawn(
      soak,
      ["--seconds", "60", "--seed", "7", "--clients", "1", "--no-opencode", "--browser", join(repo, "tests", "browser", "soak-phone.mjs"), "--host-bin", host, "--report", reportPath],
      { stdio: ["ignore", "pipe", "pipe"] },
    );
    let log = "";
    child.stdout.on("data", (d) => (log += d));
    child.stderr.on("data", (d) => (log += d));
    const code = await new Promise((resolve) => child.on("exit", resolve));
    assert.ok(existsSync(reportPath), `no report (exit ${code}):\n${log}`);
    const report = JSON.parse(readFileSync(reportPath, "utf8"));
    const context = `\n${JSON.stringify(report.disconnect_related)}\n${JSON.stringify(report.examples)}\n${log.slice(-4000)}`;
    assert.equal(report.disconnect_related.total, 0, `disconnect-related failures${context}`);
    assert.equal(code, 0, `the soak's exit status${context}`);
    assert.ok(report.consistent, `the phones' counts and the host's record agree${context}`);
    const web = report.browser_client;
    assert.ok(web.tasks >= 5, `the web app ran only ${web.tasks} tasks${context}`);
    assert.equal(web.checked_against_host, web.tasks, `every task the app showed matches the host's record${context}`);
    assert.equal(report.faults.restart_term, 1, "a SIGTERM restart happened");
    assert.equal(report.faults.restart_kill, 1, "a SIGKILL restart happened");
    const network = ["cut", "roam", "down", "stall", "slow", "down_long"].reduce((n, k) => n + (report.faults[k] ?? 0), 0);
    assert.ok(network >= 6, `network faults: ${JSON.stringify(report.faults)}`);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
