// Test harness: a real `openwork-host serve` on a temporary data dir with a
// TLS listener on loopback, driven through its own CLI. Every wait is bounded.
import { execFile, spawn, type ChildProcess } from "node:child_process";
import { existsSync, mkdirSync, mkdtempSync, realpathSync, rmSync, writeFileSync, readFileSync } from "node:fs";
import * as net from "node:net";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { Ajv } from "ajv";
import { pair, type PairedHost } from "../src/index.js";

const repo = resolve(dirname(fileURLToPath(import.meta.url)), "..", "..", "..", "..");

/** The host binary: $OPENWORK_HOST_BIN, else cargo's debug build. */
export function hostBinary(): string {
  const candidates = [
    process.env.OPENWORK_HOST_BIN,
    process.env.CARGO_TARGET_DIR && join(process.env.CARGO_TARGET_DIR, "debug", "openwork-host"),
    join(repo, "target", "debug", "openwork-host"),
  ].filter((c): c is string => !!c);
  const found = candidates.find((c) => existsSync(c));
  if (!found) throw new Error(`no openwork-host binary (tried ${candidates.join(", ")}): run \`cargo build\` or set OPENWORK_HOST_BIN`);
  return found;
}

/** Polls `check` every 20 ms until it is truthy or `ms` pass. */
export async function waitFor<T>(what: string, ms: number, check: () => T | Promise<T>): Promise<NonNullable<T>> {
  const deadline = Date.now() + ms;
  for (;;) {
    const value = await check();
    if (value) return value as NonNullable<T>;
    if (Date.now() > deadline) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

/** Resolves with `promise`, or fails after `ms`. */
export function within<T>(ms: number, what: string, promise: Promise<T>): Promise<T> {
  let timer: NodeJS.Timeout;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms: ${what}`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

/** A host on a temporary data dir, with its own workspace. */
export class TestHost {
  readonly dir = mkdtempSync(join(tmpdir(), "openwork-ts-"));
  readonly data = join(this.dir, "data");
  readonly work: string;
  private child: ChildProcess | undefined;
  /** `127.0.0.1:PORT` of the TLS listener. */
  address = "";
  fingerprint = "";

  constructor() {
    mkdirSync(this.data, { recursive: true });
    mkdirSync(join(this.dir, "work"));
    this.work = realpathSync(join(this.dir, "work"));
    writeFileSync(
      join(this.data, "config.toml"),
      `[tasks]\nworkspace_roots = [${JSON.stringify(this.work)}]\nkill_grace_ms = 1000\n\n` +
        `[pairing]\nfailure_pause_ms = 50\n\n[opencode]\nenabled = "off"\n`,
    );
  }

  get socket(): string {
    return join(this.data, "host.sock");
  }

  /** Starts `serve` on loopback and waits until it answers. */
  async start(): Promise<void> {
    this.child = spawn(hostBinary(), ["serve", "--no-mdns", "--listen", "127.0.0.1:0", "--log", "warn", "--data-dir", this.data], {
      stdio: ["ignore", "ignore", "inherit"],
    });
    await waitFor("the host's socket", 20000, () => canConnect(this.socket));
    const status = JSON.parse(await this.cli("status", "--json")) as { fingerprint: string; listeners?: { transport: string; address: string }[] };
    this.fingerprint = status.fingerprint;
    const tls = status.listeners?.find((l) => l.transport === "tls");
    if (!tls) throw new Error(`the host reports no TLS listener: ${JSON.stringify(status)}`);
    this.address = tls.address;
  }

  /** Runs the host's CLI on this data dir and returns its stdout. */
  cli(...args: string[]): Promise<string> {
    return new Promise((resolve, reject) => {
      execFile(hostBinary(), [...args, "--data-dir", this.data], { timeout: 20000 }, (error, stdout, stderr) => {
        if (error) reject(new Error(`openwork-host ${args.join(" ")}: ${error.message}\n${stderr}`));
        else resolve(stdout);
      });
    });
  }

  /** Pairs a device the way a script would: `pair --detach`, then `devices approve`. */
  async pairDevice(deviceName = "ts-test", address = this.address): Promise<PairedHost> {
    const window = JSON.parse(await this.cli("pair", "--detach", "--json", "--replace", "--address", "127.0.0.1")) as { code: string };
    const pairing = pair({ address, code: window.code, deviceName, approvalTimeoutMs: 20000 });
    pairing.catch(() => undefined);
    const requestId = await waitFor("the device to wait for approval", 20000, async () => {
      const status = JSON.parse(await this.cli("devices", "pending", "--json")) as { pending: { requestId: string; deviceName: string }[] };
      return status.pending.find((p) => p.deviceName === deviceName)?.requestId;
    });
    await this.cli("devices", "approve", requestId);
    return within(20000, "pairing to finish", pairing);
  }

  /** SIGTERM, then waits (bounded) for the host to exit; removes the data dir. */
  async stop(): Promise<void> {
    const child = this.child;
    this.child = undefined;
    if (child && child.exitCode === null) {
      const exited = new Promise((r) => child.once("exit", r));
      child.kill("SIGTERM");
      await within(30000, "the host to stop", exited).catch(() => child.kill("SIGKILL"));
    }
    rmSync(this.dir, { recursive: true, force: true });
  }
}

function canConnect(path: string): Promise<boolean> {
  return new Promise((resolve) => {
    const s = net.connect(path);
    s.once("connect", () => {
      s.destroy();
      resolve(true);
    });
    s.once("error", () => resolve(false));
  });
}

/** A TCP relay to the host that a test can cut, as a network failure would. */
export class Relay {
  private readonly sockets = new Set<net.Socket>();
  private server!: net.Server;
  address = "";

  async start(target: string): Promise<void> {
    const [host, port] = [target.slice(0, target.lastIndexOf(":")), Number(target.slice(target.lastIndexOf(":") + 1))];
    this.server = net.createServer((inbound) => {
      const outbound = net.connect(port, host);
      for (const s of [inbound, outbound]) {
        this.sockets.add(s);
        s.on("close", () => this.sockets.delete(s));
        s.on("error", () => undefined);
      }
      inbound.pipe(outbound);
      outbound.pipe(inbound);
      inbound.on("close", () => outbound.destroy());
      outbound.on("close", () => inbound.destroy());
    });
    await new Promise<void>((r) => this.server.listen(0, "127.0.0.1", r));
    this.address = `127.0.0.1:${(this.server.address() as net.AddressInfo).port}`;
  }

  /**
   * Every connection through the relay goes silent for good: nothing is
   * forwarded and nothing is closed, as when a NAT forgets the mapping. New
   * connections work.
   */
  silence(): void {
    for (const s of this.sockets) {
      s.unpipe();
      s.removeAllListeners("data");
      s.on("data", () => undefined);
      s.removeAllListeners("close");
      s.on("close", () => this.sockets.delete(s));
    }
  }

  /** Cuts every connection through the relay. */
  cut(): void {
    for (const s of this.sockets) s.destroy();
  }

  async stop(): Promise<void> {
    this.cut();
    await new Promise((r) => this.server.close(r));
  }
}

/** Checks results and notifications against schema/openrpc.json's schemas. */
export class SchemaCheck {
  private readonly ajv = new Ajv({ strict: false, validateFormats: false, allErrors: true });
  private readonly doc: {
    methods: { name: string; result?: { schema: unknown } }[];
    "x-notifications": { name: string; "x-params": unknown }[];
  };
  checked = 0;

  constructor() {
    this.doc = JSON.parse(readFileSync(join(repo, "schema", "openrpc.json"), "utf8"));
    this.ajv.addSchema(this.doc as object, "openrpc.json");
  }

  private validate(schema: unknown, value: unknown, what: string): void {
    const validate = this.ajv.compile(rewrite(schema) as object);
    if (!validate(value)) throw new Error(`${what} does not match schema/openrpc.json: ${this.ajv.errorsText(validate.errors)}\n${JSON.stringify(value)}`);
    this.checked++;
  }

  result(method: string, value: unknown): void {
    const entry = this.doc.methods.find((m) => m.name === method);
    if (!entry?.result) throw new Error(`${method} has no result in the schema`);
    this.validate(entry.result.schema, value, `the result of ${method}`);
  }

  notification(method: string, params: unknown): void {
    const entry = this.doc["x-notifications"].find((n) => n.name === method);
    if (!entry) throw new Error(`${method} is not a documented notification`);
    this.validate(entry["x-params"], params, `${method} params`);
  }
}

// Local references become references into the registered document.
function rewrite(schema: unknown): unknown {
  return JSON.parse(JSON.stringify(schema).replaceAll('"#/components/', '"openrpc.json#/components/'));
}
