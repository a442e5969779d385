// The typed client: a connection to a host (TLS with a pinned certificate,
// or the owner's unix socket), typed methods and notification handlers, and
// reconnection that resumes every followed task from the last seq it saw.
import * as net from "node:net";
import type { Duplex } from "node:stream";
import { GeneratedMethods, type ClientNotifications, type Methods, type Notifications } from "./generated/methods.js";
import type * as T from "./generated/types.js";
import { ConnectionClosedError, RpcConnection, RpcError } from "./rpc.js";
import { connectTls, parseAddress, type Endpoint } from "./tls.js";

/** Statuses after which a task changes no more. */
export const FINAL_STATUSES: ReadonlySet<T.TaskStatus> = new Set(["succeeded", "failed", "cancelled", "interrupted"]);

/** How the client reconnects after losing the connection. */
export interface ReconnectOptions {
  /** Tries before giving up (default 10). */
  attempts?: number;
  /** Wait before the first try, doubled each time (default 100 ms). */
  initialDelayMs?: number;
  /** Longest wait between tries (default 5000 ms). */
  maxDelayMs?: number;
}

/** Options common to every transport. */
export interface ClientOptions {
  clientInfo?: T.ClientInfo;
  /** A paired device's credential (TLS); the owner's socket needs none. */
  auth?: T.DeviceAuth;
  /** `false` to fail instead of reconnecting. */
  reconnect?: ReconnectOptions | false;
  /** Largest frame accepted from the host (default 64 MiB). */
  maxFrameBytes?: number;
}

/** Connecting over TLS to a paired host. */
export interface TlsClientOptions extends ClientOptions {
  /** `host:port`, or an endpoint. */
  address: string | Endpoint;
  /** The host certificate's SHA-256 (hex), from pairing. */
  fingerprint: string;
  connectTimeoutMs?: number;
}

/** The connection's state, as reported to `onState`. */
export type ConnectionState = "open" | "reconnecting" | "closed";

type Handler<P> = (params: P) => void;

/** A client of one host. */
export class OpenworkClient extends GeneratedMethods {
  /** What `initialize` answered on the current connection. */
  server!: T.InitializeResult;
  private rpc!: RpcConnection;
  private readonly handlers = new Map<string, Set<Handler<never>>>();
  private readonly stateHandlers = new Set<(state: ConnectionState, error?: Error) => void>();
  /** Tasks followed, with the last seq delivered: what a reconnect resumes. */
  private readonly following = new Map<string, number>();
  private closedByUser = false;
  /** Set once the first connection is up: only then is a lost one re-established. */
  private established = false;
  private reconnecting: Promise<void> | undefined;
  /** How many times the connection was re-established. */
  reconnects = 0;

  private constructor(
    private readonly dial: () => Promise<Duplex>,
    private readonly options: ClientOptions,
  ) {
    super();
  }

  /** Connects to a paired host over TLS, pinning its certificate, and initializes. */
  static async connectTls(options: TlsClientOptions): Promise<OpenworkClient> {
    const endpoint = typeof options.address === "string" ? parseAddress(options.address) : options.address;
    const dial = async () => (await connectTls(endpoint, options.fingerprint, options.connectTimeoutMs)).socket;
    const client = new OpenworkClient(dial, options);
    await client.open();
    client.established = true;
    return client;
  }

  /** Connects to the host's owner-only unix socket (every scope) and initializes. */
  static async connectUnix(path: string, options: ClientOptions = {}): Promise<OpenworkClient> {
    const dial = () =>
      new Promise<Duplex>((resolve, reject) => {
        const socket = net.connect(path);
        socket.once("connect", () => resolve(socket));
        socket.once("error", reject);
      });
    const client = new OpenworkClient(dial, options);
    await client.open();
    client.established = true;
    return client;
  }

  /** Handles a host notification; returns a function that removes the handler. */
  on<N extends keyof Notifications>(method: N, handler: Handler<Notifications[N]>): () => void {
    let set = this.handlers.get(method);
    if (!set) this.handlers.set(method, (set = new Set()));
    set.add(handler as Handler<never>);
    return () => set.delete(handler as Handler<never>);
  }

  /** Hears of the connection dropping, coming back, or closing for good. */
  onState(handler: (state: ConnectionState, error?: Error) => void): () => void {
    this.stateHandlers.add(handler);
    return () => this.stateHandlers.delete(handler);
  }

  /** The last seq delivered for each task this client follows. */
  get followed(): ReadonlyMap<string, number> {
    return this.following;
  }

  request<M extends keyof Methods>(method: M, params: Methods[M]["params"]): Promise<Methods[M]["result"]> {
    return this.rpc.request(method, params) as Promise<Methods[M]["result"]>;
  }

  requestDynamic(method: string, params: Record<string, unknown>): Promise<unknown> {
    return this.rpc.request(method, params);
  }

  notify<M extends keyof ClientNotifications>(method: M, params: ClientNotifications[M]): void {
    this.rpc.notify(method, params);
  }

  /** Ends the session (`shutdown`, `exit`) and closes the connection; no reconnect. */
  async close(): Promise<void> {
    this.closedByUser = true;
    if (this.rpc.open) {
      await this.rpc.request("shutdown", {}, 2000).catch(() => undefined);
      this.rpc.notify("exit", {});
      this.rpc.close();
    }
  }

  /** Drops the connection as a network failure would (for tests and diagnostics). */
  dropConnection(): void {
    this.rpc.close();
    this.onClosed(new ConnectionClosedError("dropped by the client"));
  }

  private async open(): Promise<void> {
    const stream = await this.dial();
    this.rpc = new RpcConnection(
      stream,
      {
        notification: (method, params) => this.onNotification(method, params),
        response: (method, params, result) => this.onResponse(method, params, result),
        closed: (error) => {
          if (error) this.onClosed(error);
        },
      },
      this.options.maxFrameBytes,
    );
    this.server = (await this.rpc.request("initialize", {
      clientInfo: this.options.clientInfo ?? { name: "openwork-host-client-ts", version: "0.1.0" },
      protocolVersion: "1",
      ...(this.options.auth ? { auth: this.options.auth } : {}),
    })) as T.InitializeResult;
  }

  // Runs before the caller sees the result, in order with the notifications
  // after it: the first chunks of a task follow its `task.run` reply at once.
  private onResponse(method: string, params: unknown, result: unknown): void {
    if (method === "task.run") {
      const { taskId } = result as T.TaskRunResult;
      if (!this.following.has(taskId)) this.following.set(taskId, 0);
    } else if (method === "task.subscribe") {
      const r = result as T.TaskSubscribeResult;
      if (FINAL_STATUSES.has(r.status) && r.fromSeq > r.lastSeq) this.following.delete(r.taskId);
      else this.following.set(r.taskId, r.fromSeq - 1);
    } else if (method === "task.unsubscribe") {
      this.following.delete((params as T.TaskIdParams).taskId);
    }
  }

  private onNotification(method: string, params: unknown): void {
    if (method === "log.chunk") {
      const chunk = params as T.LogChunk;
      const last = this.following.get(chunk.taskId);
      if (last !== undefined) {
        // A replay after a reconnect may repeat what was already delivered.
        if (chunk.seq <= last) return;
        this.following.set(chunk.taskId, chunk.seq);
      }
    }
    if (method === "task.updated") {
      const update = params as T.TaskUpdate;
      if (FINAL_STATUSES.has(update.status)) this.following.delete(update.taskId);
    }
    for (const handler of this.handlers.get(method) ?? []) {
      try {
        (handler as Handler<unknown>)(params);
      } catch (e) {
        process.emitWarning(`a ${method} handler threw: ${(e as Error).stack ?? e}`);
      }
    }
  }

  private emitState(state: ConnectionState, error?: Error): void {
    for (const handler of this.stateHandlers) handler(state, error);
  }

  private onClosed(error: Error): void {
    if (this.closedByUser || this.reconnecting || !this.established) return;
    if (this.options.reconnect === false) {
      this.emitState("closed", error);
      return;
    }
    this.emitState("reconnecting", error);
    this.reconnecting = this.reconnect(this.options.reconnect ?? {}).finally(() => {
      this.reconnecting = undefined;
    });
  }

  private async reconnect(options: ReconnectOptions): Promise<void> {
    const attempts = options.attempts ?? 10;
    let delay = options.initialDelayMs ?? 100;
    let lastError: Error | undefined;
    for (let attempt = 0; attempt < attempts && !this.closedByUser; attempt++) {
      await new Promise((r) => setTimeout(r, delay));
      delay = Math.min(delay * 2, options.maxDelayMs ?? 5000);
      try {
        await this.open();
        await this.resume();
        this.reconnects++;
        this.emitState("open");
        return;
      } catch (e) {
        lastError = e as Error;
        // A credential the host refuses will not work on the next try either.
        if (e instanceof RpcError && (e.code === -32001 || e.code === -32002)) break;
        if (this.rpc?.open) this.rpc.close();
      }
    }
    this.emitState("closed", lastError);
  }

  /** Follows every task again from the seq after the last one delivered. */
  private async resume(): Promise<void> {
    for (const [taskId, last] of [...this.following]) {
      try {
        await this.rpc.request("task.subscribe", { taskId, fromSeq: last + 1 });
      } catch (e) {
        if (e instanceof RpcError && e.code === -32003) this.following.delete(taskId);
        else throw e;
      }
    }
  }
}

export { ConnectionClosedError, RpcError };
