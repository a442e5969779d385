// A host over WebSocket (`wss://HOST:PORT/rpc`, one JSON-RPC message per text
// frame), as browsers reach it: the transport, the signature credential
// (a non-extractable ECDSA P-256 key; `auth.challenge`, then `initialize`
// with a signature over the nonce) and pairing's web variant (no TLS
// exporter; the public key in the transcript). Portable: browsers pass their
// WebSocket, Node the `ws` package's (src/websocket-node.ts).
import { toBase64Url, utf8 } from "./encoding.js";
import type * as T from "./generated/types.js";
import { exchange, PairingError, WEB_PAIRING_BINDING } from "./pairing-core.js";
import { RpcConnection, type MessageTransport, type TransportEvents } from "./rpc.js";

/**
 * The part of the WebSocket API used here, which both browsers' WebSocket
 * and the `ws` package have.
 */
export interface WebSocketLike {
  readonly readyState: number;
  send(data: string): void;
  close(code?: number, reason?: string): void;
  // eslint-disable-next-line @typescript-eslint/no-explicit-any -- each implementation has its own event types
  addEventListener(type: "open" | "message" | "close" | "error", listener: (event: any) => void): void;
}

/** The WebSocket close code for data of a kind not accepted (RFC 6455 §7.4.1). */
const UNSUPPORTED_DATA = 1003;

/** JSON-RPC messages as WebSocket text frames. */
export class WebSocketTransport implements MessageTransport {
  constructor(private readonly socket: WebSocketLike) {}

  start(events: TransportEvents): void {
    let ended = false;
    const end = (reason: string) => {
      if (ended) return;
      ended = true;
      events.closed(reason);
    };
    this.socket.addEventListener("message", (event: { data: unknown }) => {
      if (typeof event.data === "string") events.message(event.data);
      else {
        this.socket.close(UNSUPPORTED_DATA, "binary frames are not part of the protocol");
        end("the host sent a binary frame");
      }
    });
    this.socket.addEventListener("close", (event: { code: number; reason: string }) =>
      end(`closed by the host (WebSocket code ${event.code}${event.reason ? `: ${event.reason}` : ""})`),
    );
  }

  send(text: string): void {
    this.socket.send(text);
  }

  close(): void {
    this.socket.close(1000);
  }
}

/** Waits for `socket` to open; fails (and closes it) on error, close or timeout. */
export function opened(socket: WebSocketLike, url: string, timeoutMs = 15000): Promise<WebSocketTransport> {
  return new Promise((resolve, reject) => {
    let settled = false;
    const fail = (why: string) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      try {
        socket.close();
      } catch {
        // Closing a socket still connecting may throw in some implementations.
      }
      reject(new Error(`cannot open a WebSocket to ${url}: ${why}`));
    };
    const open = () => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      resolve(new WebSocketTransport(socket));
    };
    const timer = setTimeout(() => fail(`no answer within ${timeoutMs} ms`), timeoutMs);
    // A socket handed over already open (or already gone) has no event to wait for.
    if (socket.readyState === 1) return open();
    if (socket.readyState > 1) return fail("it closed before it was used");
    socket.addEventListener("open", open);
    socket.addEventListener("error", (event: { message?: string }) =>
      fail(event.message ?? "the connection failed (refused, a certificate not trusted, or an origin not allowed)"),
    );
    socket.addEventListener("close", (event: { code: number }) => fail(`closed (code ${event.code})`));
  });
}

/** A device's credential in a browser: its id, and a key that cannot leave. */
export interface SignatureCredential {
  deviceId: string;
  /** The host the device is paired with (signed over, so a signature is for one host). */
  hostId: string;
  /** ECDSA P-256, non-extractable. */
  privateKey: CryptoKey;
}

/** What a browser signs to authenticate: bound to the host, the page's origin and the nonce. */
export function authMessage(hostId: string, origin: string, nonce: string, deviceId: string): string {
  return `openwork-browser-auth-v1\n${hostId}\n${origin}\n${nonce}\n${deviceId}`;
}

/** The `initialize` auth of a signature credential: asks a nonce, signs it. */
export async function signatureAuth(
  rpc: RpcConnection,
  credential: SignatureCredential,
  origin: string,
): Promise<T.DeviceAuth & { nonce: string; signature: string }> {
  const { nonce } = (await rpc.request("auth.challenge", {})) as T.AuthChallenge;
  if (typeof nonce !== "string" || !nonce) throw new Error("the host answered auth.challenge without a nonce");
  const signature = await crypto.subtle.sign(
    { name: "ECDSA", hash: "SHA-256" },
    credential.privateKey,
    utf8(authMessage(credential.hostId, origin, nonce, credential.deviceId)),
  );
  return { deviceId: credential.deviceId, nonce, signature: toBase64Url(new Uint8Array(signature)) };
}

/** A new key pair: the private key can sign but never be exported. */
export async function generateDeviceKey(): Promise<CryptoKeyPair> {
  return crypto.subtle.generateKey({ name: "ECDSA", namedCurve: "P-256" }, false, ["sign", "verify"]);
}

/** What pairing over WebSocket needs. */
export interface WebPairOptions {
  /** Opens a WebSocket connection to the host's `/rpc`. */
  dial: () => Promise<MessageTransport>;
  /** The code `openwork-host pair` shows. */
  code: string;
  /** Shown to the host's owner when they approve. */
  deviceName: string;
  scopes?: T.Scope[];
  /**
   * The host certificate's SHA-256 (hex), from the pairing link; without it,
   * the one the host reports (the confirmation fails if another host answers).
   */
  fingerprint?: string;
  /** From the pairing link: the host id the result must carry. */
  hostId?: string;
  /** How long to wait for the owner's approval (default 5 minutes). */
  approvalTimeoutMs?: number;
  /** Called once the host proved it knows the code and the owner's approval is awaited. */
  onAwaitingApproval?: () => void;
}

/** A device paired over WebSocket: its credential and what the host said. */
export interface WebPairedHost extends SignatureCredential {
  hostName: string;
  fingerprint: string;
  scopes: T.Scope[];
  publicKey: CryptoKey;
}

/** Pairs over WebSocket, registering a new non-extractable key (no token is issued). */
export async function pairWebSocket(options: WebPairOptions): Promise<WebPairedHost> {
  const keys = await generateDeviceKey();
  const publicKey = new Uint8Array(await crypto.subtle.exportKey("spki", keys.publicKey));
  let rpc: RpcConnection;
  try {
    rpc = new RpcConnection(await options.dial(), { notification: () => {}, closed: () => {} });
  } catch (e) {
    throw new PairingError(`cannot reach the host: ${(e as Error).message}`, e);
  }
  try {
    let fingerprint = options.fingerprint?.toLowerCase();
    if (fingerprint !== undefined && !/^[0-9a-f]{64}$/.test(fingerprint)) {
      throw new PairingError(`the pairing link's fingerprint ${JSON.stringify(options.fingerprint)} is not a SHA-256 in hex`);
    }
    if (fingerprint === undefined) {
      const health = (await rpc.request("health.get", {}).catch((e: Error) => {
        throw new PairingError(`cannot ask the host its fingerprint: ${e.message}`, e);
      })) as T.HealthReport;
      fingerprint = health.fingerprint.toLowerCase();
    }
    const result = await exchange(rpc, {
      code: options.code.trim(),
      deviceName: options.deviceName,
      ...(options.scopes ? { scopes: options.scopes } : {}),
      binding: WEB_PAIRING_BINDING,
      hostFingerprint: fingerprint,
      publicKey,
      approvalTimeoutMs: options.approvalTimeoutMs ?? 5 * 60 * 1000,
      ...(options.onAwaitingApproval ? { onAwaitingApproval: options.onAwaitingApproval } : {}),
    });
    if (options.hostId !== undefined && result.hostId !== options.hostId) {
      throw new PairingError(`the pairing link is for host ${options.hostId}, but host ${result.hostId} answered`);
    }
    return pairedHost(result, keys);
  } finally {
    rpc.close();
  }
}

/** What a device keeps of a pairing (or a console enrolment): the host's answer and its own keys. */
export function pairedHost(result: T.PairingResult, keys: CryptoKeyPair): WebPairedHost {
  return {
    deviceId: result.deviceId,
    hostId: result.hostId,
    hostName: result.hostName,
    fingerprint: result.fingerprint,
    scopes: result.scopes,
    privateKey: keys.privateKey,
    publicKey: keys.publicKey,
  };
}
