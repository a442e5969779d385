// openwork-host's TypeScript client for Node: typed methods and notifications
// generated from schema/openrpc.json, over TLS with a pinned certificate, the
// owner's unix socket, or WebSocket. Browsers import "./browser.js" instead.
export * from "./generated/types.js";
export type { ClientNotifications, Methods, Notifications } from "./generated/methods.js";
export { METHOD_ACCESS, METHOD_PREFIXES } from "./generated/methods.js";
export { OpenworkClient, FINAL_STATUSES } from "./client.js";
export type { ClientOptions, ConnectionState, ReconnectOptions, TlsClientOptions, WebSocketClientOptions } from "./client.js";
export { ClientCore } from "./core.js";
export type { Connector, CoreOptions } from "./core.js";
export { ConnectionClosedError, RpcConnection, RpcError } from "./rpc.js";
export type { MessageTransport, TransportEvents } from "./rpc.js";
export { pair, parsePairLink, PairingError } from "./pairing.js";
export type { PairOptions, PairedHost } from "./pairing.js";
export { FingerprintMismatchError, parseAddress } from "./tls.js";
export { Spake2 } from "./spake2.js";
export { authMessage, generateDeviceKey, pairWebSocket, signatureAuth, WebSocketTransport } from "./websocket.js";
export type { SignatureCredential, WebPairedHost, WebPairOptions, WebSocketLike } from "./websocket.js";
export { dialWebSocket, hostOrigin } from "./websocket-node.js";
