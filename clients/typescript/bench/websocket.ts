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

/** MiB/s, and the share of that time this process (the client) spent on a CPU. */
interface Rate {
  mibps: number;
  clientCpu: number;
}

function measure(start: number, cpu: NodeJS.CpuUsage): Rate {
  const seconds = (performance.now() - start) / 1000;
  const used = process.cpuUsage(cpu);
  return { mibps: size / MIB / seconds, clientCpu: (used.user + used.system) / 1e6 / seconds };
}

const show = (r: Rate, base?: Rate) =>
  `${r.mibps.toFixed(1)} MiB/s, client CPU ${(r.clientCpu * 100).toFixed(0)} %` +
  (base ? `  (${((r.mibps / base.mibps) * 100).toFixed(0)} % of raw TLS)` : "");

async function followLive(client: OpenworkClient): Promise<Rate> {
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
  const cpu = process.cpuUsage();
  taskId = (await client.taskRun({ command: COMMAND, title: "websocket bench" })).taskId;
  await waitFor("the task to end", 30 * 60 * 1000, () => done && bytes >= size);
  const rate = measure(start, cpu);
  offChunk();
  offUpdate();
  if (done?.status !== "succeeded" || bytes !== size) throw new Error(`the task ended ${done?.status} after ${bytes} bytes`);
  lastTask = taskId;
  return rate;
}
let lastTask = "";

async function followReplay(client: OpenworkClient, taskId: string): Promise<Rate> {
  let bytes = 0;
  const off = client.on("log.chunk", (c) => {
    if (c.taskId === taskId) bytes += c.data.length;
  });
  const start = performance.now();
  const cpu = process.cpuUsage();
  await client.taskSubscribe({ taskId, fromSeq: 1 });
  await waitFor("the replay to end", 30 * 60 * 1000, () => bytes >= size);
  const rate = measure(start, cpu);
  off();
  return rate;
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
  console.log(`  raw TLS (openwork/1)  live run: ${show(tlsLive)}`);
  const wsLive = await followLive(wsClient);
  console.log(`  WebSocket (/rpc)      live run: ${show(wsLive, tlsLive)}`);
  const tlsReplay = await followReplay(tlsClient, tlsTask);
  console.log(`  raw TLS (openwork/1)  replay:   ${show(tlsReplay)}`);
  const wsReplay = await followReplay(wsClient, tlsTask);
  console.log(`  WebSocket (/rpc)      replay:   ${show(wsReplay, tlsReplay)}`);
  console.log("  goal: WebSocket at least 70 % of raw TLS");
  await tlsClient.close();
  await wsClient.close();
} finally {
  await host.stop();
}
