// An OpenCode prompt from a phone: the real `opencode serve` with a fake
// model on loopback (tests/browser/fake-model.mjs), the host's policy asking
// before the sub-agent's command, the prompt answered on the phone, and the
// conversation view: text streamed in, reasoning collapsed, the tool call
// with its input and output inside the sub-agent, then a model error shown.
// Skipped without OpenCode installed (scripts/test installs it; CI must).
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { approve, launchBrowser, opencodeBinary, opencodeHost, openPairingWindow, checkScreen, PHONE, PHONE_AND_DESKTOP, spkiHash } from "./harness.mjs";

const binary = opencodeBinary();

describe("an OpenCode prompt on a phone", { skip: !binary && "OpenCode is not installed (scripts/test installs it)" }, () => {
  let host;
  let model;
  let browser;
  let page;
  const problems = [];

  /** The screen in both colour schemes, phone and desktop size; no serious or critical axe violation. */
  async function check(name) {
    await checkScreen(page, `app-${name}`, name, PHONE_AND_DESKTOP);
  }

  async function runPrompt(text) {
    await page.tap('nav a[href="#new"]');
    await page.check('input[name="runtime"][value="opencode"]');
    await page.fill("#command", text);
    await page.tap("#run-button");
    await page.waitForSelector("#task-status[data-task-id]");
  }

  before(async () => {
    ({ host, model } = await opencodeHost(binary, { permission: { bash: "ask" }, agent: { general: { permission: { bash: "ask" } } } }));
    browser = await launchBrowser(await spkiHash(host.address), PHONE);
    page = await browser.context.newPage();
    page.on("pageerror", (e) => problems.push(`uncaught: ${e.message}`));
    page.on("console", (m) => {
      if (m.type() === "error") problems.push(`console: ${m.text()}`);
    });
    const window = await openPairingWindow(host);
    await page.goto(`https://${host.address}/#pair?code=${window.code}&fp=${window.fingerprint}&id=${window.hostId}`);
    await page.fill("#device-name", "opencode phone");
    await page.tap("#pair-button");
    await page.waitForSelector('#pair-status[data-state="waiting"]');
    await approve(host, "opencode phone");
    await page.waitForSelector('#status[data-state="open"]');
  });

  after(async () => {
    await browser?.close();
    await host?.stop();
  });

  test("a prompt whose sub-agent asks: answered on the phone, the conversation shown", async () => {
    model.command = "TASK:general:echo from-a-subagent";
    await page.tap('nav a[href="#new"]');
    // The New screen renders after the tap; the choice is there once it has (bounded).
    await page
      .waitForSelector('input[name="runtime"][value="opencode"]', { timeout: 10000 })
      .catch(() => assert.fail("the host offers OpenCode: the prompt choice never appeared on the New screen"));
    await runPrompt("please run it in a sub-agent");
    await page.waitForSelector("#permission-prompt", { timeout: 90000 });
    assert.match(await page.textContent("#permission-prompt"), /echo from-a-subagent/);
    await check("opencode-permission");
    await page.tap('#permission-prompt button[data-decision="once"]');
    await page.waitForSelector("#permission-prompt", { state: "detached" });
    await page.waitForSelector('#task-status[data-status="succeeded"]', { timeout: 90000 });
    // The main session's text, streamed in deltas, in one paragraph.
    await page.waitForFunction(() => [...document.querySelectorAll("#conversation > .said")].some((p) => p.textContent === "Done: the command ran."));
    // The sub-agent, with its own tool call: input and output.
    const sub = page.locator("#conversation details.subagent");
    assert.equal(await sub.count(), 1);
    const tool = sub.locator("details.tool.completed");
    assert.equal(await tool.count(), 1, "the sub-agent's bash call");
    assert.match(await tool.locator(".tool-name").textContent(), /bash/);
    assert.match(await tool.locator(".tool-input").textContent(), /"command": "echo from-a-subagent"/);
    assert.equal((await tool.locator(".tool-output").textContent()).trim(), "from-a-subagent");
    // The main session's `task` call that started it.
    assert.equal(await page.locator("#conversation > details.tool .tool-name", { hasText: "task" }).count(), 1);
    // Reasoning is there, collapsed.
    const thinking = page.locator("#conversation details.reasoning").first();
    assert.equal(await thinking.getAttribute("open"), null, "reasoning starts collapsed");
    assert.match(await thinking.textContent(), /The tool answered\./);
    // The answer given on the phone is in the conversation.
    assert.match(await page.textContent("#conversation"), /Permission allowed/);
    await tool.locator("summary").tap();
    await check("opencode-conversation");
  });

  test("a model error ends the task, shown in the conversation", async () => {
    model.failNext(400, "the fake model refuses");
    await runPrompt("this one fails");
    await page.waitForSelector('#task-status[data-status="failed"]', { timeout: 90000 });
    await page.waitForSelector("#conversation .convo-error");
    assert.match(await page.textContent("#conversation .convo-error"), /the fake model refuses/);
    assert.match(await page.textContent("#task-status"), /the fake model refuses/);
    await check("opencode-error");
  });

  test("no uncaught error", () => {
    assert.deepEqual(
      problems.filter((p) => !/WebSocket|Failed to load resource/.test(p)),
      [],
    );
  });
});
