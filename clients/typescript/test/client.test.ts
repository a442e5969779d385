// The TypeScript client against a real host: pairing over TLS (SPAKE2 made
// here, checked by the Rust host), tasks and their logs, a permission
// request answered, and a reconnect that resumes from the last seq.
import assert from "node:assert/strict";
import { mkdirSync, existsSync } from "node:fs";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import {
  FingerprintMismatchError,
  OpenworkClient,
  pair,
  PairingError,
  RpcError,
  type LogChunk,
  type PairedHost,
  type PermissionRequest,
  type TaskUpdate,
} from "../src/index.js";
import { Relay, SchemaCheck, TestHost, waitFor, within } from "./host.js";

const FINAL = new Set(["succeeded", "failed", "cancelled", "interrupted"]);

/** Collects a task's chunks and its final update, checking each against the schema. */
function follow(client: OpenworkClient, schema: SchemaCheck) {
  const chunks: LogChunk[] = [];
  const updates: TaskUpdate[] = [];
  const requests: PermissionRequest[] = [];
  client.on("log.chunk", (c) => {
    schema.notification("log.chunk", c);
    chunks.push(c);
  });
  client.on("task.updated", (u) => {
    schema.notification("task.updated", u);
    updates.push(u);
  });
  client.on("permission.request", (r) => {
    schema.notification("permission.request", r);
    requests.push(r);
  });
  const final = (taskId: string) =>
    waitFor(`task ${taskId} to end`, 30000, () => updates.find((u) => u.taskId === taskId && FINAL.has(u.status)));
  return { chunks, updates, requests, final };
}

describe("the TypeScript client against a live host", () => {
  const host = new TestHost();
  const schema = new SchemaCheck();
  let paired: PairedHost;
  let client: OpenworkClient;

  before(async () => {
    await host.start();
    paired = await host.pairDevice("ts-suite");
    client = await OpenworkClient.connectTls({
      address: paired.address,
      fingerprint: paired.fingerprint,
      auth: { deviceId: paired.deviceId, token: paired.token },
    });
  });

  after(async () => {
    await client?.close();
    await host.stop();
  });

  test("pairing pins the host's certificate and grants the asked scopes", async () => {
    assert.equal(paired.fingerprint, host.fingerprint);
    assert.match(paired.token, /^[A-Za-z0-9_-]{43}$/);
    schema.result("initialize", client.server);
    assert.deepEqual(
      client.server.scopes.map((s) => s.scope),
      ["tasks.run", "tasks.read", "permissions.reply", "opencode"],
    );
    assert.ok(client.server.capabilities.methods.includes("task.run"));
    const health = await client.healthGet();
    schema.result("health.get", health);
    assert.equal(health.fingerprint, host.fingerprint);
    const devices = JSON.parse(await host.cli("devices", "list", "--json")) as { devices: { deviceId: string }[] };
    assert.ok(devices.devices.some((d) => d.deviceId === paired.deviceId));
  });

  test("a wrong code fails key confirmation and pairs nothing", async () => {
    const window = JSON.parse(await host.cli("pair", "--detach", "--json", "--replace", "--address", "127.0.0.1")) as { code: string };
    const wrong = window.code === "00000000" ? "11111111" : "00000000";
    await assert.rejects(
      pair({ address: host.address, code: wrong, deviceName: "intruder", approvalTimeoutMs: 5000 }),
      (e: Error) => e instanceof PairingError && /could not prove it knows the code/.test(e.message),
    );
    const status = JSON.parse(await host.cli("devices", "pending", "--json")) as { pending: unknown[] };
    assert.equal(status.pending.length, 0);
    await host.cli("pair", "--detach", "--json", "--replace", "--address", "127.0.0.1"); // a fresh window for later tests
  });

  test("a host presenting another certificate is refused before any request", async () => {
    await assert.rejects(
      OpenworkClient.connectTls({ address: paired.address, fingerprint: "ab".repeat(32), auth: paired, reconnect: false }),
      (e: Error) => e instanceof FingerprintMismatchError && e.got === host.fingerprint,
    );
  });

  test("an unauthenticated connection gets -32001 with what to do", async () => {
    const anonymous = await OpenworkClient.connectTls({ address: paired.address, fingerprint: paired.fingerprint, reconnect: false });
    await assert.rejects(anonymous.taskList(), (e: Error) => e instanceof RpcError && e.code === -32001 && !!e.action);
    await anonymous.close();
  });

  test("runs a task and streams its output in order", async () => {
    const seen = follow(client, schema);
    const run = await client.taskRun({ command: "echo hello; echo oops >&2; exit 3", title: "ts test" });
    schema.result("task.run", run);
    const final = await seen.final(run.taskId);
    assert.equal(final.status, "failed");
    assert.equal(final.exitCode, 3);
    const mine = seen.chunks.filter((c) => c.taskId === run.taskId);
    assert.deepEqual(mine.map((c) => c.seq), mine.map((_, i) => i + 1));
    const out = (stream: string) => mine.filter((c) => c.stream === stream).map((c) => c.data).join("");
    assert.equal(out("stdout"), "hello\n");
    assert.equal(out("stderr"), "oops\n");

    const logs = await client.taskLogs({ taskId: run.taskId });
    schema.result("task.logs", logs);
    assert.deepEqual(logs.chunks, mine);
    assert.equal(logs.done, true);
    const record = await client.taskGet({ taskId: run.taskId });
    schema.result("task.get", record);
    assert.equal(record.title, "ts test");
    const list = await client.taskList({ limit: 5 });
    schema.result("task.list", list);
    assert.equal(list.tasks[0]?.taskId, run.taskId);
    await assert.rejects(client.taskGet({ taskId: "t_nope" }), (e: Error) => e instanceof RpcError && e.code === -32003);
  });

  test("a permission request is answered and the task goes on", async () => {
    mkdirSync(join(host.work, "somedir", "inner"), { recursive: true });
    const seen = follow(client, schema);
    const run = await client.taskRun({ command: "rm -r somedir && echo removed", cwd: host.work });
    const request = await waitFor("a permission request", 20000, () => seen.requests.find((r) => r.taskId === run.taskId));
    assert.ok(request.options.includes("once"));
    assert.match(request.detail, /rm -r somedir/);
    const reply = await client.permissionReply({ requestId: request.requestId, decision: "once" });
    schema.result("permission.reply", reply);
    const final = await seen.final(run.taskId);
    assert.equal(final.status, "succeeded");
    assert.ok(seen.updates.some((u) => u.taskId === run.taskId && u.status === "waiting_permission"));
    assert.equal(existsSync(join(host.work, "somedir")), false);
    assert.match(seen.chunks.filter((c) => c.taskId === run.taskId).map((c) => c.data).join(""), /removed/);
  });

  /**
   * A client through a relay, streaming a 60-line task, hit by `fault`
   * mid-stream: what it reported and received, once the task finished.
   */
  async function streamThrough(fault: (relay: Relay) => void, liveness?: { idleMs: number; answerMs: number }) {
    const relay = new Relay();
    await relay.start(host.address);
    const roaming = await OpenworkClient.connectTls({
      address: relay.address,
      fingerprint: paired.fingerprint,
      auth: { deviceId: paired.deviceId, token: paired.token },
      reconnect: { attempts: 20, initialDelayMs: 50 },
      ...(liveness ? { liveness } : {}),
    });
    try {
      const states: { state: string; error?: string }[] = [];
      roaming.onState((state, error) => states.push({ state, ...(error ? { error: error.message } : {}) }));
      const seen = follow(roaming, schema);
      const run = await roaming.taskRun({ command: "for i in $(seq 1 60); do echo line $i; sleep 0.03; done" });
      await waitFor("the first chunks", 20000, () => seen.chunks.length >= 3);
      fault(relay);
      const final = await seen.final(run.taskId);
      assert.equal(final.status, "succeeded");
      const seqs = seen.chunks.map((c) => c.seq);
      assert.deepEqual(seqs, seqs.map((_, i) => i + 1), "every seq once, in order");
      const text = seen.chunks.map((c) => c.data).join("");
      assert.equal(text, Array.from({ length: 60 }, (_, i) => `line ${i + 1}\n`).join(""));
      return { states, reconnects: roaming.reconnects, stillFollowed: roaming.followed.has(run.taskId) };
    } finally {
      await roaming.close();
      await relay.stop();
    }
  }

  test("a dropped connection reconnects and resumes from the last seq with no gap or duplicate", async () => {
    const { states, reconnects, stillFollowed } = await streamThrough((relay) => relay.cut());
    assert.deepEqual(states.map((s) => s.state), ["reconnecting", "open"]);
    assert.equal(reconnects, 1);
    assert.equal(stillFollowed, false, "a finished task is no longer followed");
  });

  test("a connection gone silent is noticed by its unanswered ping, and the task resumes with no gap", async () => {
    const { states } = await streamThrough((relay) => relay.silence(), { idleMs: 300, answerMs: 300 });
    assert.deepEqual(states.map((s) => s.state), ["reconnecting", "open"]);
    assert.match(states[0]?.error ?? "", /did not answer a ping within 300 ms/);
  });

  test("every result and notification seen matched the schema", () => {
    assert.ok(schema.checked > 20, `only ${schema.checked} values were checked`);
  });

  test("the owner's socket is a connection too, with every scope", async () => {
    const owner = await within(10000, "unix connect", OpenworkClient.connectUnix(host.socket));
    const devices = await owner.devicesList();
    schema.result("devices.list", devices);
    assert.ok(devices.devices.some((d) => d.deviceId === paired.deviceId && d.connections >= 1));
    const metrics = await owner.metricsGet();
    schema.result("metrics.get", metrics);
    await owner.close();
  });
});
