// Benchmark (figures, not a test): 256 MiB of one task's output followed by
// the Node raw TLS client (ALPN openwork/1, LSP frames) and by a Node
// WebSocket client (ALPN http/1.1, `/rpc`, a signature credential as a
// browser has), from the same host in the same run. Each transport follows
// a live run of its own, then replays a finished task from seq 1 (the
// transport alone, without the task producing). Prints MiB/s.
//   npm run bench [-- MiB]        (default 256; the host from cargo's debug build or $OPENWORK_HOST_BIN)
import { OpenworkClient, pairWebSocket, parseAddress, dialWebSocket, type LogChunk, type TaskUpdate } from "../src/index.js";
import { TestHost, waitFor } from "../test/host.js";

const MIB = 1024 * 1024;
const size = Number(process.argv[2] ?? 256) * MIB;
// Printable lines of 64 bytes: the output is text, as a build log is.
const COMMAND = `yes 'openwork benchmark line: 0123456789abcdefghijklmnopqrstuvwxyz' | head -c ${size}`;

async function followLive(client: OpenworkClient): Promise<number> {
  let bytes = 0;
  let done: TaskUpdate | undefined;
  let taskId = "";
  const offChunk = client.on("log.chunk", (c: LogChunk) => {
    if (c.taskId === taskId || !taskId) bytes += c.data.length;
  });
  const offUpdate = client.on("task.updated", (u) => {
    if (u.taskId === taskId && (u.status === "succeeded" || u.status === "failed")) done = u;
  });
  const start = performance.now();
  taskId = (await client.taskRun({ command: COMMAND, title: "websocket bench" })).taskId;
  await waitFor("the task to end", 30 * 60 * 1000, () => done && bytes >= size);
  const seconds = (performance.now() - start) / 1000;
  offChunk();
  offUpdate();
  if (done?.status !== "succeeded" || bytes !== size) throw new Error(`the task ended ${done?.status} after ${bytes} bytes`);
  lastTask = taskId;
  return size / MIB / seconds;
}
let lastTask = "";

async function followReplay(client: OpenworkClient, taskId: string): Promise<number> {
  let bytes = 0;
  const off = client.on("log.chunk", (c) => {
    if (c.taskId === taskId) bytes += c.data.length;
  });
  const start = performance.now();
  await client.taskSubscribe({ taskId, fromSeq: 1 });
  await waitFor("the replay to end", 30 * 60 * 1000, () => bytes >= size);
  const seconds = (performance.now() - start) / 1000;
  off();
  return size / MIB / seconds;
}

const host = new TestHost();
try {
  await host.start();
  const endpoint = parseAddress(host.address);
  const native = await host.pairDevice("bench over openwork/1");
  const tlsClient = await OpenworkClient.connectTls({
    address: native.address,
    fingerprint: native.fingerprint,
    auth: { deviceId: native.deviceId, token: native.token },
    maxFrameBytes: 256 * MIB,
  });

  const window = JSON.parse(await host.cli("pair", "--detach", "--json", "--address", "127.0.0.1")) as { code: string };
  const pairing = pairWebSocket({
    dial: () => dialWebSocket({ endpoint, fingerprint: host.fingerprint }),
    code: window.code,
    deviceName: "bench over websocket",
    fingerprint: host.fingerprint,
    approvalTimeoutMs: 20000,
  });
  pairing.catch(() => undefined);
  const requestId = await waitFor("the WebSocket device to wait for approval", 20000, async () => {
    const pending = JSON.parse(await host.cli("devices", "pending", "--json")) as { pending: { requestId: string; deviceName: string }[] };
    return pending.pending.find((p) => p.deviceName === "bench over websocket")?.requestId;
  });
  await host.cli("devices", "approve", requestId);
  const credential = await pairing;
  const wsClient = await OpenworkClient.connectWebSocket({ address: endpoint, fingerprint: host.fingerprint, credential });

  console.log(`${size / MIB} MiB of task output, one host, loopback (${process.env.OPENWORK_HOST_BIN ?? "debug build"})`);
  const tlsLive = await followLive(tlsClient);
  const tlsTask = lastTask;
  console.log(`  raw TLS (openwork/1)  live run: ${tlsLive.toFixed(1)} MiB/s`);
  const wsLive = await followLive(wsClient);
  console.log(`  WebSocket (/rpc)      live run: ${wsLive.toFixed(1)} MiB/s  (${((wsLive / tlsLive) * 100).toFixed(0)} % of raw)`);
  const tlsReplay = await followReplay(tlsClient, tlsTask);
  console.log(`  raw TLS (openwork/1)  replay:   ${tlsReplay.toFixed(1)} MiB/s`);
  const wsReplay = await followReplay(wsClient, tlsTask);
  console.log(`  WebSocket (/rpc)      replay:   ${wsReplay.toFixed(1)} MiB/s  (${((wsReplay / tlsReplay) * 100).toFixed(0)} % of raw; goal >= 70 %)`);
  await tlsClient.close();
  await wsClient.close();
} finally {
  await host.stop();
}
