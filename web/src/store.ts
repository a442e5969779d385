// The app's state outside the components: the credential, the connection
// and its status, pending permission prompts, and recent/pinned commands
// (localStorage). Components re-render through `useStore`.
import { useEffect, useState } from "preact/hooks";
import {
  BrowserClient,
  RpcError,
  adoptPageSocket,
  dialPageHost,
  loadCredential,
  forgetCredential,
  wakeablePause,
  type MessageTransport,
  type PermissionRequest,
  type StoredCredential,
} from "../../clients/typescript/src/browser.js";

/** Set once this browser connected with a credential: the next open dials early. */
const PAIRED = "openwork.paired";

export type Conn = "starting" | "unpaired" | "pairing" | "connecting" | "open" | "reconnecting" | "offline" | "closed" | "refused";

export interface Toast {
  id: number;
  text: string;
}

export const store = {
  credential: undefined as StoredCredential | undefined,
  client: undefined as BrowserClient | undefined,
  conn: "starting" as Conn,
  /** What the status line adds: the attempt, the error. */
  connDetail: "",
  attempt: 0,
  error: "",
  prompts: [] as PermissionRequest[],
  /** Prompts the user put off with "Later": still pending, shown again on request. */
  setAside: [] as string[],
  toasts: [] as Toast[],
  /** Bumped when the connection is (re)established: views resubscribe. */
  epoch: 0,
};

const listeners = new Set<() => void>();
export function changed(): void {
  for (const l of listeners) l();
}

export function useStore(): typeof store {
  const [, setTick] = useState(0);
  useEffect(() => {
    const l = () => setTick((t) => t + 1);
    listeners.add(l);
    return () => void listeners.delete(l);
  }, []);
  return store;
}

/**
 * The client once the app is connected to the host: at once when it is,
 * else when it connects within `timeoutMs` (undefined when it does not).
 */
export function whenConnected(timeoutMs: number): Promise<BrowserClient | undefined> {
  if (store.conn === "open" && store.client) return Promise.resolve(store.client);
  return new Promise((resolve) => {
    const check = () => {
      if (store.conn === "open" && store.client) done(store.client);
    };
    const done = (client: BrowserClient | undefined) => {
      listeners.delete(check);
      clearTimeout(timer);
      resolve(client);
    };
    const timer = setTimeout(() => done(undefined), timeoutMs);
    listeners.add(check);
  });
}

let toastId = 0;
export function toast(text: string): void {
  const id = ++toastId;
  store.toasts = [...store.toasts, { id, text }];
  changed();
  setTimeout(() => {
    store.toasts = store.toasts.filter((t) => t.id !== id);
    changed();
  }, 6000);
}

export function describe(error: unknown): string {
  // The pairing bundle has its own copy of RpcError: told apart by its `action`.
  const action = error instanceof RpcError || error instanceof Error ? (error as { action?: unknown }).action : undefined;
  if (error instanceof Error && typeof action === "string" && action) return `${error.message} (${action})`;
  if (error instanceof RpcError) return error.message;
  return error instanceof Error ? error.message : String(error);
}

function refused(error: unknown): boolean {
  return error instanceof RpcError && (error.code === -32001 || error.code === -32002);
}

function setConn(conn: Conn, detail = ""): void {
  store.conn = conn;
  store.connDetail = detail;
  changed();
}

let connecting = false;
/** Ends `connect`'s wait before its next attempt (the network came back). */
let wakeConnect: (() => void) | undefined;

/** A connection dialled while the page starts (see `dialEarly`), for the first `connect`. */
let early: Promise<MessageTransport> | undefined;

/**
 * Opens the WebSocket while the page still reads the credential and draws:
 * on a slow network that round trip is the largest part of opening the app.
 * Only where the credential is expected (this browser paired before); it is
 * closed when unused.
 */
export function dialEarly(): void {
  if (localStorage.getItem(PAIRED) !== "1") return;
  performance.mark("openwork:early-dial");
  // index.html's first script opened it before this bundle arrived.
  const opened = (window as { openworkEarly?: WebSocket }).openworkEarly;
  delete (window as { openworkEarly?: WebSocket }).openworkEarly;
  if (opened) performance.mark("openwork:early-from-page");
  early = opened ? adoptPageSocket(opened) : dialPageHost();
  void early.then(() => performance.mark("openwork:early-open"), () => undefined);
  early.catch(() => undefined);
  // Unused within a few seconds (no credential after all): closed.
  const mine = early;
  setTimeout(() => {
    if (early === mine) {
      early = undefined;
      void mine.then((t) => t.close(), () => undefined);
    }
  }, 5000);
}

/** Connects with the stored credential; retries with backoff until it works or is refused. */
export async function connect(): Promise<void> {
  const credential = store.credential;
  if (!credential || connecting || store.client) return;
  connecting = true;
  store.attempt = 0;
  let delay = 500;
  try {
    for (let round = 0; round < 1000 && store.credential === credential; round++) {
      if (!navigator.onLine) {
        setConn("offline", "no network: this device is offline; it reconnects when the network returns");
        return;
      }
      setConn(store.attempt ? "reconnecting" : "connecting", store.attempt ? `attempt ${store.attempt + 1}: opening a connection to ${location.host}` : "");
      try {
        // Marks for scripts/bench-web: where opening the app spends its time.
        performance.mark("openwork:dial");
        const ahead = early;
        early = undefined;
        const client = await BrowserClient.connectWith(
          credential,
          { reconnect: { attempts: 6, initialDelayMs: 300, maxDelayMs: 8000 } },
          () => {
            store.attempt++;
            if (store.conn === "reconnecting") store.connDetail = `attempt ${store.attempt}: opening a connection to ${location.host} and following tasks from the last line seen`;
            changed();
          },
          ahead,
        );
        localStorage.setItem(PAIRED, "1");
        performance.mark("openwork:connected");
        attach(client);
        return;
      } catch (e) {
        if (refused(e)) {
          onRefused(e);
          return;
        }
        store.error = "";
        setConn("reconnecting", `attempt ${store.attempt}: ${describe(e)}; next try in ${Math.round(delay / 1000)} s`);
        const pause = wakeablePause(delay);
        wakeConnect = pause.wake;
        await pause.over;
        wakeConnect = undefined;
        delay = Math.min(delay * 2, 15000);
      }
    }
  } finally {
    connecting = false;
  }
}

/** Prompts asked before this connection followed their task (or before the app connected). */
function fetchPending(client: BrowserClient): void {
  if (!client.server.capabilities.methods.includes("permission.pending")) return;
  client.permissionPending().then(
    (r) => {
      const known = new Set(store.prompts.map((p) => p.requestId));
      const fresh = r.requests.filter((p) => !known.has(p.requestId));
      // Those no longer pending were answered or expired while away.
      const pending = new Set(r.requests.map((p) => p.requestId));
      store.prompts = [...store.prompts.filter((p) => pending.has(p.requestId)), ...fresh];
      changed();
    },
    () => undefined,
  );
}

function attach(client: BrowserClient): void {
  store.client = client;
  store.attempt = 0;
  store.epoch++;
  fetchPending(client);
  client.on("permission.request", (p) => {
    store.prompts = [...store.prompts.filter((x) => x.requestId !== p.requestId), p];
    changed();
    if (document.hidden && "Notification" in window && Notification.permission === "granted") {
      new Notification(`${client.server.hostName}: permission asked`, { body: p.summary, tag: p.requestId });
    }
  });
  client.on("permission.resolved", (r) => {
    const had = store.prompts.some((p) => p.requestId === r.requestId);
    store.prompts = store.prompts.filter((p) => p.requestId !== r.requestId);
    if (had) toast(`A permission prompt was answered (${r.decision}) by ${r.by}.`);
    changed();
  });
  client.onState((s, error) => {
    if (s === "open") {
      store.attempt = 0;
      store.epoch++;
      setConn("open");
      fetchPending(client);
    } else if (s === "reconnecting") {
      if (!navigator.onLine) setConn("offline", "no network: the app reconnects by itself when it returns");
      else setConn("reconnecting", `connection lost (${describe(error)}); retrying`);
    } else {
      store.client = undefined;
      if (refused(error)) onRefused(error);
      else void connect();
    }
  });
  setConn("open");
}

function onRefused(error: unknown): void {
  store.client = undefined;
  // Forgotten meanwhile: the refusal is the host agreeing.
  if (!store.credential) return;
  store.error = `This browser can no longer use ${store.credential?.hostName ?? "this host"}: its pairing was revoked by the host's owner, or is unknown there (the host said: ${error instanceof Error ? error.message : String(error)}). To use it again, ask the owner for a new pairing code (openwork-host pair) and pair below.`;
  setConn("refused", "Refused by the host: this browser's pairing was revoked or is unknown there");
}

export async function init(): Promise<void> {
  try {
    store.credential = await loadCredential();
  } catch (e) {
    store.error = describe(e);
  }
  // A network change leaves the WebSocket stale: drop it and reconnect at
  // once (not after the backoff's wait), the open task view resuming from the
  // last line it showed.
  window.addEventListener("online", () => {
    if (store.credential && store.conn !== "refused") {
      if (store.client) store.client.reconnectNow();
      else if (wakeConnect) wakeConnect();
      else void connect();
    }
  });
  window.addEventListener("offline", () => {
    const client = store.client;
    setConn("offline", "no network: the app reconnects by itself when it returns");
    client?.dropConnection();
  });
  document.addEventListener("visibilitychange", () => {
    if (!document.hidden && store.credential && !store.client && store.conn !== "refused") void connect();
  });
}

/**
 * Forgets the host: the host is told first (`devices.revokeSelf`), so the
 * key this browser deletes can never be used again. Returns what to tell the
 * user when the host could not be told (the key is deleted all the same).
 */
export async function forget(): Promise<string> {
  const client = store.client;
  let told = "";
  if (client && client.server.capabilities.methods.includes("devices.revokeSelf")) {
    try {
      await client.devicesRevokeSelf();
    } catch (e) {
      told = describe(e);
    }
  } else told = client ? "this host does not support it" : "this browser is not connected to it";
  // No credential first: nothing reconnects with it meanwhile.
  store.credential = undefined;
  store.client = undefined;
  await client?.close().catch(() => undefined);
  await forgetCredential();
  localStorage.removeItem(PAIRED);
  store.prompts = [];
  setConn("unpaired");
  return told
    ? `This browser forgot the host, but could not tell it (${told}): ask its owner to revoke this device (openwork-host devices revoke).`
    : "";
}

// Recent and pinned commands, kept in this browser only.
export interface Saved {
  command: string;
  cwd: string;
  runtime: string;
  pinned?: boolean;
}
const SAVED = "openwork.commands";
export function savedCommands(): Saved[] {
  try {
    const parsed = JSON.parse(localStorage.getItem(SAVED) ?? "[]") as unknown;
    return Array.isArray(parsed) ? (parsed as Saved[]) : [];
  } catch {
    return [];
  }
}
export function remember(entry: Saved): void {
  const all = savedCommands();
  const old = all.find((s) => s.command === entry.command && s.cwd === entry.cwd && s.runtime === entry.runtime);
  const next = [{ ...entry, pinned: old?.pinned ?? false }, ...all.filter((s) => s !== old)];
  const pinned = next.filter((s) => s.pinned);
  const recent = next.filter((s) => !s.pinned).slice(0, 10);
  localStorage.setItem(SAVED, JSON.stringify([...pinned, ...recent]));
}
export function togglePin(entry: Saved): void {
  const all = savedCommands().map((s) => (s.command === entry.command && s.cwd === entry.cwd && s.runtime === entry.runtime ? { ...s, pinned: !s.pinned } : s));
  localStorage.setItem(SAVED, JSON.stringify(all));
}

/** The local name this browser gives the host (rename), else the host's own. */
export function hostLabel(): string {
  return localStorage.getItem("openwork.hostLabel") || store.credential?.hostName || location.host;
}
export function renameHost(name: string): void {
  if (name.trim()) localStorage.setItem("openwork.hostLabel", name.trim());
  else localStorage.removeItem("openwork.hostLabel");
  changed();
}
