// The Node client over WebSocket (`wss://…/rpc`, as a browser reaches the
// host): pairing that registers a key (no token), signature auth, a task's
// output, and a dropped connection that reconnects with a fresh signature
// and resumes from the last seq.
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import {
  dialWebSocket,
  OpenworkClient,
  pairWebSocket,
  parseAddress,
  PairingError,
  RpcError,
  type LogChunk,
  type TaskUpdate,
  type WebPairedHost,
} from "../src/index.js";
import { SchemaCheck, TestHost, waitFor, within } from "./host.js";

describe("the TypeScript client over WebSocket against a live host", () => {
  const host = new TestHost();
  const schema = new SchemaCheck();
  let paired: WebPairedHost;

  const dial = () => dialWebSocket({ endpoint: parseAddress(host.address), fingerprint: host.fingerprint });

  async function pairOverWebSocket(deviceName: string): Promise<WebPairedHost> {
    const window = JSON.parse(await host.cli("pair", "--detach", "--json", "--address", "127.0.0.1")) as { code: string; fingerprint: string };
    const pairing = pairWebSocket({ dial, code: window.code, deviceName, fingerprint: window.fingerprint, approvalTimeoutMs: 20000 });
    pairing.catch(() => undefined);
    const requestId = await waitFor("the device to wait for approval", 20000, async () => {
      const status = JSON.parse(await host.cli("devices", "pending", "--json")) as { pending: { requestId: string; deviceName: string }[] };
      return status.pending.find((p) => p.deviceName === deviceName)?.requestId;
    });
    await host.cli("devices", "approve", requestId);
    return within(20000, "pairing to finish", pairing);
  }

  before(async () => {
    await host.start();
    paired = await pairOverWebSocket("ts over websocket");
  });

  after(() => host.stop());

  test("pairing over WebSocket registers a non-extractable key and issues no token", async () => {
    assert.equal(paired.privateKey.extractable, false);
    assert.equal((paired as unknown as { token?: string }).token, undefined);
    assert.equal(paired.fingerprint, host.fingerprint);
    const client = await OpenworkClient.connectWebSocket({ address: host.address, fingerprint: host.fingerprint, credential: paired, reconnect: false });
    schema.result("initialize", client.server);
    assert.equal(client.server.hostId, paired.hostId);
    await client.close();
  });

  test("a wrong code over WebSocket fails key confirmation", async () => {
    const window = JSON.parse(await host.cli("pair", "--detach", "--json", "--address", "127.0.0.1")) as { code: string; fingerprint: string };
    const wrong = window.code === "00000000" ? "11111111" : "00000000";
    await assert.rejects(
      pairWebSocket({ dial, code: wrong, deviceName: "intruder", fingerprint: window.fingerprint, approvalTimeoutMs: 5000 }),
      (e: Error) => e instanceof PairingError && /could not prove it knows the code/.test(e.message),
    );
  });

  test("another device's id with this key is refused", async () => {
    const native = await host.pairDevice("token device");
    await assert.rejects(
      OpenworkClient.connectWebSocket({
        address: host.address,
        fingerprint: host.fingerprint,
        credential: { ...paired, deviceId: native.deviceId },
        reconnect: false,
      }),
      (e: Error) => e instanceof RpcError && e.code === -32001,
    );
  });

  test("a dropped WebSocket reconnects with a fresh signature and resumes with no gap or duplicate", async () => {
    const client = await OpenworkClient.connectWebSocket({
      address: host.address,
      fingerprint: host.fingerprint,
      credential: paired,
      reconnect: { attempts: 20, initialDelayMs: 50 },
    });
    try {
      const states: string[] = [];
      client.onState((s) => states.push(s));
      const chunks: LogChunk[] = [];
      const updates: TaskUpdate[] = [];
      client.on("log.chunk", (c) => {
        schema.notification("log.chunk", c);
        chunks.push(c);
      });
      client.on("task.updated", (u) => updates.push(u));
      const run = await client.taskRun({ command: "for i in $(seq 1 40); do echo line $i; sleep 0.02; done" });
      await waitFor("the first chunks", 20000, () => chunks.length >= 3);
      client.dropConnection();
      await waitFor("the task to end", 30000, () => updates.find((u) => u.taskId === run.taskId && u.status === "succeeded"));
      assert.deepEqual(states, ["reconnecting", "open"]);
      assert.equal(client.reconnects, 1);
      const seqs = chunks.map((c) => c.seq);
      assert.deepEqual(seqs, seqs.map((_, i) => i + 1), "every seq once, in order");
      assert.equal(chunks.map((c) => c.data).join(""), Array.from({ length: 40 }, (_, i) => `line ${i + 1}\n`).join(""));
    } finally {
      await client.close();
    }
  });
});
