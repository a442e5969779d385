// The transport-independent client: typed methods and notification handlers
// on one connection to a host, and reconnection that re-authenticates and
// resumes every followed task from the last seq it saw. Portable (Node and
// browsers): the Node client (TLS, unix socket) and the browser client
// (WebSocket) differ only in how they dial and authenticate.
import { GeneratedMethods, type ClientNotifications, type Methods, type Notifications } from "./generated/methods.js";
import type * as T from "./generated/types.js";
import { ConnectionClosedError, RpcConnection, RpcError, type MessageTransport } from "./rpc.js";

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

/**
 * How a connection that went silent is noticed. A network that drops packets
 * without closing anything (a NAT that forgot the mapping, a phone that
 * changed networks) leaves a socket that looks open for many minutes; so
 * after `idleMs` without a message the host is pinged (`$/ping`), and a
 * connection whose ping goes unanswered for `answerMs` counts as dropped.
 */
export interface LivenessOptions {
  /** Quiet time before a ping (default 15000 ms). */
  idleMs?: number;
  /** How long the ping may take (default 15000 ms). */
  answerMs?: number;
}

/** Options common to every transport. */
export interface CoreOptions {
  clientInfo?: T.ClientInfo;
  /** `false` to fail instead of reconnecting. */
  reconnect?: ReconnectOptions | false;
  /** `false` to trust the transport to report every loss. */
  liveness?: LivenessOptions | false;
  /**
   * How long authenticating, `initialize` and resuming may take on a new
   * connection before it counts as failed (default 20000 ms): a connection
   * that opened and then went silent would otherwise hold the client forever.
   */
  handshakeTimeoutMs?: number;
}

/** How a client reaches the host: dialing, then the credential for `initialize`. */
export interface Connector {
  /** Opens a new connection. */
  dial(): Promise<MessageTransport>;
  /**
   * The `auth` of `initialize` on a connection just opened (it may ask the
   * host first, as signature auth asks for a nonce); none for the owner's socket.
   */
  auth?(rpc: RpcConnection): Promise<T.DeviceAuth | undefined>;
}

/** The connection's state, as reported to `onState`. */
export type ConnectionState = "open" | "reconnecting" | "closed";

type Handler<P> = (params: P) => void;

/** A client of one host, over whatever `Connector` reaches it. */
export class ClientCore extends GeneratedMethods {
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
  /** Ends the current wait between reconnection attempts (`reconnectNow`). */
  private wake: (() => void) | undefined;
  /** When the last message arrived on the current connection (ms, `Date.now`). */
  private lastHeard = 0;
  private probing = false;
  private livenessTimer: ReturnType<typeof setInterval> | undefined;
  /** How many times the connection was re-established. */
  reconnects = 0;

  protected constructor(
    private readonly connector: Connector,
    private readonly coreOptions: CoreOptions,
  ) {
    super();
  }

  /** Connects with `connector` and initializes. */
  static async connect(connector: Connector, options: CoreOptions = {}): Promise<ClientCore> {
    const client = new ClientCore(connector, options);
    await client.start();
    return client;
  }

  /** Opens the first connection; a later loss of it is re-established. */
  protected async start(): Promise<void> {
    await this.open();
    this.established = true;
    this.watchLiveness();
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
    if (this.livenessTimer) clearInterval(this.livenessTimer);
    this.livenessTimer = undefined;
    this.wake?.();
    if (this.rpc.open) {
      await this.rpc.request("shutdown", {}, 2000).catch(() => undefined);
      this.rpc.notify("exit", {});
      this.rpc.close();
    }
  }

  /** Drops the connection as a network failure would (for tests and diagnostics). */
  dropConnection(error: Error = new ConnectionClosedError("dropped by the client")): void {
    this.rpc.close();
    this.onClosed(error);
  }

  /**
   * The network changed (the device came back online, or moved): the current
   * connection is dropped, since it may be dead without knowing it, and a
   * reconnection waiting between attempts tries at once.
   */
  reconnectNow(): void {
    if (this.closedByUser || !this.established) return;
    if (this.reconnecting) this.wake?.();
    else this.dropConnection(new ConnectionClosedError("the network changed"));
  }

  /** Pings a connection that has been quiet, and drops it when the ping goes unanswered. */
  private watchLiveness(): void {
    const options = this.coreOptions.liveness;
    if (options === false || this.livenessTimer) return;
    const idleMs = options?.idleMs ?? 15000;
    const answerMs = options?.answerMs ?? 15000;
    const check = () => {
      if (this.closedByUser || this.reconnecting || this.probing || !this.rpc.open) return;
      if (Date.now() - this.lastHeard < idleMs) return;
      const rpc = this.rpc;
      this.probing = true;
      rpc.request("$/ping", {}, answerMs).then(
        () => (this.probing = false),
        (e: Error) => {
          this.probing = false;
          // Only a silent connection is dropped here; a closed one reports itself.
          if (rpc === this.rpc && rpc.open && !(e instanceof RpcError)) {
            this.dropConnection(new ConnectionClosedError(`the host did not answer a ping within ${answerMs} ms`));
          }
        },
      );
    };
    this.livenessTimer = setInterval(check, Math.max(50, Math.min(idleMs, answerMs) / 4));
    // Node: the check alone does not keep a process running.
    (this.livenessTimer as { unref?: () => void }).unref?.();
  }

  private async open(): Promise<void> {
    const transport = await this.connector.dial();
    this.lastHeard = Date.now();
    this.rpc = new RpcConnection(transport, {
      notification: (method, params) => this.onNotification(method, params),
      response: (method, params, result) => this.onResponse(method, params, result),
      received: () => (this.lastHeard = Date.now()),
      closed: (error) => {
        if (error) this.onClosed(error);
      },
    });
    try {
      this.rpc.dueBy(Date.now() + (this.coreOptions.handshakeTimeoutMs ?? 20000));
      const auth = await this.connector.auth?.(this.rpc);
      this.server = (await this.rpc.request("initialize", {
        clientInfo: this.coreOptions.clientInfo ?? { name: "openwork-host-client-ts", version: "0.1.0" },
        protocolVersion: "1",
        ...(auth ? { auth } : {}),
      })) as T.InitializeResult;
      this.rpc.dueBy(undefined);
    } catch (e) {
      this.rpc.close();
      throw e;
    }
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
        warn(`a ${method} handler threw: ${(e as Error).stack ?? e}`);
      }
    }
  }

  private emitState(state: ConnectionState, error?: Error): void {
    for (const handler of this.stateHandlers) handler(state, error);
  }

  private onClosed(error: Error): void {
    if (this.closedByUser || this.reconnecting || !this.established) return;
    if (this.coreOptions.reconnect === false) {
      this.closedForGood(error);
      return;
    }
    this.emitState("reconnecting", error);
    this.reconnecting = this.reconnect(this.coreOptions.reconnect ?? {}).finally(() => {
      this.reconnecting = undefined;
    });
  }

  private async reconnect(options: ReconnectOptions): Promise<void> {
    const attempts = options.attempts ?? 10;
    let delay = options.initialDelayMs ?? 100;
    let lastError: Error | undefined;
    for (let attempt = 0; attempt < attempts && !this.closedByUser; attempt++) {
      const pause = wakeablePause(delay);
      this.wake = pause.wake;
      await pause.over;
      this.wake = undefined;
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
    this.closedForGood(lastError);
  }

  /** The connection is gone and will not be re-established: nothing more to watch. */
  private closedForGood(error?: Error): void {
    if (this.livenessTimer) clearInterval(this.livenessTimer);
    this.livenessTimer = undefined;
    this.emitState("closed", error);
  }

  /** Follows every task again from the seq after the last one delivered. */
  private async resume(): Promise<void> {
    const timeout = this.coreOptions.handshakeTimeoutMs ?? 20000;
    for (const [taskId, last] of [...this.following]) {
      try {
        await this.rpc.request("task.subscribe", { taskId, fromSeq: last + 1 }, timeout);
      } catch (e) {
        if (e instanceof RpcError && e.code === -32003) this.following.delete(taskId);
        else throw e;
      }
    }
  }
}

/** A wait of `ms` that `wake()` ends at once (a retry's backoff, cut short when the network returns). */
export function wakeablePause(ms: number): { over: Promise<void>; wake: () => void } {
  let wake = () => {};
  const over = new Promise<void>((resolve) => {
    const timer = setTimeout(resolve, ms);
    wake = () => {
      clearTimeout(timer);
      resolve();
    };
  });
  return { over, wake };
}

/** A warning where the platform shows them: Node's process warnings, else the console. */
function warn(message: string): void {
  const node = (globalThis as { process?: { emitWarning?: (m: string) => void } }).process;
  if (node?.emitWarning) node.emitWarning(message);
  else console.warn(message);
}
