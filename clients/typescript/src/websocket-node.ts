// WebSocket to a host from Node, as a browser would reach it (`wss://…/rpc`,
// ALPN http/1.1, an `Origin`), by the `ws` package, with the host's
// certificate pinned by fingerprint as the TLS client does.
import * as tls from "node:tls";
import WebSocket from "ws";
import { certFingerprint, FingerprintMismatchError, SERVER_NAME, type Endpoint } from "./tls.js";
import { opened, type WebSocketLike, type WebSocketTransport } from "./websocket.js";

/** Where and how to open a WebSocket to a host. */
export interface NodeWebSocketOptions {
  /** `host:port` or an endpoint. */
  endpoint: Endpoint;
  /** The host certificate's SHA-256 (hex); checked before the upgrade request is sent. */
  fingerprint: string;
  /** The `Origin` header (default `https://HOST:PORT`, the host's own origin). */
  origin?: string;
  connectTimeoutMs?: number;
}

/** `host:port` with IPv6 literals bracketed. */
export function hostPort(endpoint: Endpoint): string {
  return `${endpoint.host.includes(":") ? `[${endpoint.host}]` : endpoint.host}:${endpoint.port}`;
}

/** The origin a page served by the host has. */
export function hostOrigin(endpoint: Endpoint): string {
  return `https://${hostPort(endpoint)}`;
}

/** Opens `wss://HOST:PORT/rpc` and waits until the upgrade is done. */
export function dialWebSocket(options: NodeWebSocketOptions): Promise<WebSocketTransport> {
  const url = `wss://${hostPort(options.endpoint)}/rpc`;
  const pinned = options.fingerprint.toLowerCase();
  const socket = new WebSocket(url, {
    origin: options.origin ?? hostOrigin(options.endpoint),
    perMessageDeflate: false,
    handshakeTimeout: options.connectTimeoutMs ?? 15000,
    // The host's certificate is self-signed: its fingerprint is the check.
    createConnection: (o: tls.ConnectionOptions) => {
      const connection = tls.connect({
        ...o,
        servername: SERVER_NAME,
        ALPNProtocols: ["http/1.1"],
        minVersion: "TLSv1.3",
        rejectUnauthorized: false,
      });
      connection.once("secureConnect", () => {
        const cert = connection.getPeerCertificate();
        const got = cert?.raw ? certFingerprint(cert.raw) : "";
        if (got !== pinned) connection.destroy(new FingerprintMismatchError(url, pinned, got || "(none)"));
        else connection.setNoDelay(true);
      });
      return connection;
    },
  } as WebSocket.ClientOptions);
  return opened(socket as unknown as WebSocketLike, url, options.connectTimeoutMs);
}
