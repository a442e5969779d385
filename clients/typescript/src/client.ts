// The Node client: a connection to a host over TLS with a pinned certificate,
// the owner's unix socket, or a WebSocket as browsers use; the typed methods,
// handlers and reconnection with resume are the shared core's (core.ts).
import * as net from "node:net";
import type * as T from "./generated/types.js";
import { ClientCore, type CoreOptions } from "./core.js";
import { ConnectionClosedError, RpcError } from "./rpc.js";
import { StreamTransport } from "./stream.js";
import { connectTls, parseAddress, type Endpoint } from "./tls.js";
import { signatureAuth, type SignatureCredential } from "./websocket.js";
import { dialWebSocket, hostOrigin } from "./websocket-node.js";

export { FINAL_STATUSES } from "./core.js";
export type { ConnectionState, ReconnectOptions } from "./core.js";

/** Options common to the Node transports. */
export interface ClientOptions extends CoreOptions {
  /** A paired device's credential (TLS); the owner's socket needs none. */
  auth?: T.DeviceAuth;
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

/** Connecting over WebSocket (`wss://…/rpc`) with a key registered at pairing. */
export interface WebSocketClientOptions extends CoreOptions {
  address: string | Endpoint;
  fingerprint: string;
  credential: SignatureCredential;
  /** The `Origin` sent and signed (default the host's own, `https://HOST:PORT`). */
  origin?: string;
  connectTimeoutMs?: number;
}

/** A client of one host, from Node. */
export class OpenworkClient extends ClientCore {
  /** Connects to a paired host over TLS, pinning its certificate, and initializes. */
  static async connectTls(options: TlsClientOptions): Promise<OpenworkClient> {
    const endpoint = typeof options.address === "string" ? parseAddress(options.address) : options.address;
    const client = new OpenworkClient(
      {
        dial: async () => {
          const { socket } = await connectTls(endpoint, options.fingerprint, options.connectTimeoutMs);
          return new StreamTransport(socket, options.maxFrameBytes);
        },
        auth: async () => options.auth && { ...options.auth },
      },
      options,
    );
    await client.start();
    return client;
  }

  /** Connects to the host's owner-only unix socket (every scope) and initializes. */
  static async connectUnix(path: string, options: ClientOptions = {}): Promise<OpenworkClient> {
    const dial = () =>
      new Promise<StreamTransport>((resolve, reject) => {
        const socket = net.connect(path);
        socket.once("connect", () => resolve(new StreamTransport(socket, options.maxFrameBytes)));
        socket.once("error", reject);
      });
    const client = new OpenworkClient({ dial, auth: async () => options.auth && { ...options.auth } }, options);
    await client.start();
    return client;
  }

  /**
   * Connects over WebSocket as a browser does (signature credential, ALPN
   * http/1.1), pinning the host's certificate, and initializes.
   */
  static async connectWebSocket(options: WebSocketClientOptions): Promise<OpenworkClient> {
    const endpoint = typeof options.address === "string" ? parseAddress(options.address) : options.address;
    const origin = options.origin ?? hostOrigin(endpoint);
    const client = new OpenworkClient(
      {
        dial: () =>
          dialWebSocket({
            endpoint,
            fingerprint: options.fingerprint,
            origin,
            ...(options.connectTimeoutMs !== undefined ? { connectTimeoutMs: options.connectTimeoutMs } : {}),
          }),
        auth: (rpc) => signatureAuth(rpc, options.credential, origin),
      },
      options,
    );
    await client.start();
    return client;
  }
}

export { ConnectionClosedError, RpcError };
