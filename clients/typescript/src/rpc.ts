// One JSON-RPC 2.0 connection over any message transport (LSP frames on a
// stream, WebSocket text frames): requests matched to responses by id,
// notifications handed on in arrival order. Portable (Node and browsers).

/** An error object the host answered with. */
export class RpcError extends Error {
  constructor(
    readonly code: number,
    message: string,
    readonly data?: unknown,
  ) {
    super(message);
    this.name = "RpcError";
  }

  /** What the user can do about it (`data.action`), when the host says. */
  get action(): string | undefined {
    const data = this.data as { action?: unknown } | undefined;
    return typeof data?.action === "string" ? data.action : undefined;
  }
}

/** The connection closed before the answer came. */
export class ConnectionClosedError extends Error {
  constructor(reason: string) {
    super(`the connection to the host closed: ${reason}`);
    this.name = "ConnectionClosedError";
  }
}

/**
 * Carries whole JSON-RPC messages (as JSON text) both ways; knows nothing of
 * their meaning. `start` is called once, before anything is sent.
 */
export interface MessageTransport {
  /** Begins delivering: each message received, then one `closed` at the end. */
  start(events: TransportEvents): void;
  /** Sends one message (its JSON text). */
  send(text: string): void;
  /** Closes the transport; no `closed` event follows. */
  close(): void;
}

/** What a transport reports. */
export interface TransportEvents {
  /** One message (JSON text). */
  message(text: string): void;
  /** The transport ended, or failed (`reason`). */
  closed(reason: string): void;
}

interface Pending {
  method: string;
  params: unknown;
  resolve: (result: unknown) => void;
  reject: (error: Error) => void;
  timer?: ReturnType<typeof setTimeout>;
}

/** What an `RpcConnection` reports. */
export interface RpcEvents {
  /** A notification from the host. */
  notification(method: string, params: unknown): void;
  /** Any message arrived (the connection is alive). */
  received?(): void;
  /**
   * A response, before the caller's promise resolves: runs in arrival order
   * with the notifications that follow it (a promise continuation would not).
   */
  response?(method: string, params: unknown, result: unknown): void;
  /** The connection closed; `error` when it was not closed by `close()`. */
  closed(error?: Error): void;
}

/** A JSON-RPC connection on one transport. */
export class RpcConnection {
  private readonly pending = new Map<number, Pending>();
  private nextId = 1;
  private closed: Error | undefined;
  private closing = false;
  /** While set, requests without their own timeout must be answered by then (`Date.now()` ms). */
  private deadline: number | undefined;

  constructor(
    private readonly transport: MessageTransport,
    private readonly events: RpcEvents,
  ) {
    transport.start({
      message: (text) => this.onMessage(text),
      closed: (reason) => this.shut(new ConnectionClosedError(reason)),
    });
  }

  /** Whether the connection is still usable. */
  get open(): boolean {
    return this.closed === undefined;
  }

  /**
   * Until `at` (a `Date.now()` time; undefined to end it), every request
   * without its own timeout fails if not answered by then: a handshake on a
   * connection that went silent fails instead of waiting for ever.
   */
  dueBy(at: number | undefined): void {
    this.deadline = at;
  }

  /** Sends a request; resolves with its result or rejects with `RpcError`. */
  request(method: string, params: unknown, timeoutMs?: number): Promise<unknown> {
    if (this.closed) return Promise.reject(this.closed);
    if (timeoutMs === undefined && this.deadline !== undefined) timeoutMs = Math.max(1, this.deadline - Date.now());
    const id = this.nextId++;
    return new Promise((resolve, reject) => {
      const entry: Pending = { method, params, resolve, reject };
      if (timeoutMs !== undefined) {
        entry.timer = setTimeout(() => {
          this.pending.delete(id);
          reject(new Error(`no answer to ${method} within ${timeoutMs} ms`));
        }, timeoutMs);
      }
      this.pending.set(id, entry);
      this.transport.send(JSON.stringify({ jsonrpc: "2.0", id, method, params }));
    });
  }

  /** Sends a notification. */
  notify(method: string, params: unknown): void {
    if (!this.closed) this.transport.send(JSON.stringify({ jsonrpc: "2.0", method, params }));
  }

  /** Closes the stream; pending requests fail. */
  close(): void {
    this.closing = true;
    this.transport.close();
    this.shut(new ConnectionClosedError("closed by the client"));
  }

  private onMessage(text: string): void {
    this.events.received?.();
    let message: unknown;
    try {
      message = JSON.parse(text);
    } catch {
      return;
    }
    for (const m of Array.isArray(message) ? message : [message]) this.dispatch(m);
  }

  private dispatch(message: Record<string, unknown>): void {
    if (typeof message !== "object" || message === null) return;
    if (typeof message.method === "string") {
      if (message.id === undefined) this.events.notification(message.method, message.params);
      return;
    }
    const entry = typeof message.id === "number" ? this.pending.get(message.id) : undefined;
    if (!entry || typeof message.id !== "number") return;
    this.pending.delete(message.id);
    if (entry.timer) clearTimeout(entry.timer);
    const error = message.error as { code?: number; message?: string; data?: unknown } | undefined;
    if (error) {
      entry.reject(new RpcError(error.code ?? -32603, error.message ?? "unknown error", error.data));
      return;
    }
    this.events.response?.(entry.method, entry.params, message.result);
    entry.resolve(message.result);
  }

  private shut(reason: Error): void {
    if (this.closed) return;
    this.closed = reason;
    for (const entry of this.pending.values()) {
      if (entry.timer) clearTimeout(entry.timer);
      entry.reject(reason);
    }
    this.pending.clear();
    this.events.closed(this.closing ? undefined : reason);
  }
}
