// The browser build's entry: the shared client over a WebSocket to the page's
// own host (`wss://<location.host>/rpc`), authenticated by a non-extractable
// key kept in IndexedDB, and pairing from a `#pair?code=…&fp=…&id=…` link.
import { ClientCore, type CoreOptions } from "./core.js";
import type { MessageTransport } from "./rpc.js";
import { forgetCredential, loadCredential, saveCredential, type StoredCredential } from "./browser-store.js";
import { opened, pairedHost, pairWebSocket, signatureAuth, generateDeviceKey, type SignatureCredential, type WebPairOptions } from "./websocket.js";
import { toBase64Url } from "./encoding.js";
import { RpcConnection as Rpc } from "./rpc.js";
import type * as T from "./generated/types.js";

export * from "./generated/types.js";
export type { ClientNotifications, Methods, Notifications } from "./generated/methods.js";
export { ClientCore, FINAL_STATUSES, wakeablePause } from "./core.js";
export type { ConnectionState, CoreOptions, ReconnectOptions } from "./core.js";
export { ConnectionClosedError, RpcConnection, RpcError } from "./rpc.js";
export type { MessageTransport } from "./rpc.js";
export { PairingError } from "./pairing-core.js";
export { authMessage, type SignatureCredential, type WebPairedHost } from "./websocket.js";
export { forgetCredential, loadCredential, type StoredCredential };

/** The page's host's JSON-RPC endpoint. */
export function rpcUrl(): string {
  return `wss://${location.host}/rpc`;
}

/** Opens a WebSocket to the page's host. */
export function dialPageHost(): Promise<MessageTransport> {
  return adoptPageSocket(new WebSocket(rpcUrl()));
}

/** A WebSocket to the page's host opened elsewhere (maybe open already) as a transport. */
export function adoptPageSocket(socket: WebSocket): Promise<MessageTransport> {
  return opened(socket, rpcUrl());
}

/** A client of the host that served the page. */
export class BrowserClient extends ClientCore {
  /**
   * Connects with a stored credential, signing the host's nonce, and
   * initializes. `early`: a connection dialled ahead (while the page was
   * still reading the credential), used for the first dial when it opened.
   */
  static async connectWith(credential: SignatureCredential, options: CoreOptions = {}, onDial?: () => void, early?: Promise<MessageTransport>): Promise<BrowserClient> {
    let ahead = early;
    const client = new BrowserClient(
      {
        dial: async () => {
          const first = ahead;
          ahead = undefined;
          if (first) {
            const transport = await first.catch(() => undefined);
            if (transport) return transport;
          }
          onDial?.();
          return dialPageHost();
        },
        auth: (rpc) => signatureAuth(rpc, credential, location.origin),
      },
      { clientInfo: { name: "openwork-web", version: "0.1.0" }, ...options },
    );
    await client.start();
    return client;
  }
}

/** A pairing link's fragment: `#pair?code=…&fp=…&id=…`. */
export interface PairLink {
  code: string;
  fingerprint?: string;
  hostId?: string;
}

/** Reads a pairing link from `location.hash`; undefined when it is not one. */
export function parsePairFragment(hash: string): PairLink | undefined {
  const body = hash.startsWith("#") ? hash.slice(1) : hash;
  if (!body.startsWith("pair?")) return undefined;
  const query = new URLSearchParams(body.slice("pair?".length));
  const code = query.get("code")?.trim();
  if (!code) return undefined;
  const fingerprint = query.get("fp")?.trim();
  const hostId = query.get("id")?.trim();
  return { code, ...(fingerprint ? { fingerprint } : {}), ...(hostId ? { hostId } : {}) };
}

/** Pairing from the page. */
export type BrowserPairOptions = Omit<WebPairOptions, "dial">;

/** Pairs this browser with the page's host and keeps the credential in IndexedDB. */
export async function pairBrowser(options: BrowserPairOptions): Promise<StoredCredential> {
  const paired = await pairWebSocket({ ...options, dial: dialPageHost });
  return saveCredential(paired);
}

/** A console link's fragment: `#console?secret=…&fp=…&id=…` (what `openwork-host ui` prints). */
export interface ConsoleLinkFragment {
  secret: string;
  fingerprint?: string;
  hostId?: string;
}

/** Reads a console link from `location.hash`; undefined when it is not one. */
export function parseConsoleFragment(hash: string): ConsoleLinkFragment | undefined {
  const body = hash.startsWith("#") ? hash.slice(1) : hash;
  if (!body.startsWith("console?")) return undefined;
  const query = new URLSearchParams(body.slice("console?".length));
  const secret = query.get("secret")?.trim();
  if (!secret) return undefined;
  const fingerprint = query.get("fp")?.trim();
  const hostId = query.get("id")?.trim();
  return { secret, ...(fingerprint ? { fingerprint } : {}), ...(hostId ? { hostId } : {}) };
}

/**
 * Enrols this browser as the owner's console with a one-time link's secret:
 * a new non-extractable key, registered by `console.enrol`, kept in IndexedDB.
 */
export async function enrolConsole(link: ConsoleLinkFragment, deviceName?: string): Promise<StoredCredential> {
  const keys = await generateDeviceKey();
  const publicKey = new Uint8Array(await crypto.subtle.exportKey("spki", keys.publicKey));
  const rpc = new Rpc(await dialPageHost(), { notification: () => {}, closed: () => {} });
  try {
    const result = (await rpc.request("console.enrol", {
      secret: link.secret,
      publicKey: toBase64Url(publicKey),
      ...(deviceName ? { deviceName } : {}),
    })) as T.PairingResult;
    if (link.hostId !== undefined && result.hostId !== link.hostId) {
      throw new Error(`the link is for host ${link.hostId}, but ${result.hostId} answered`);
    }
    return await saveCredential(pairedHost(result, keys));
  } finally {
    rpc.close();
  }
}
