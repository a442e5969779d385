// openwork-host's TypeScript client: typed methods and notifications
// generated from schema/openrpc.json, over TLS with a pinned certificate.
export * from "./generated/types.js";
export type { ClientNotifications, Methods, Notifications } from "./generated/methods.js";
export { METHOD_ACCESS, METHOD_PREFIXES } from "./generated/methods.js";
export { OpenworkClient, FINAL_STATUSES } from "./client.js";
export type { ClientOptions, ConnectionState, ReconnectOptions, TlsClientOptions } from "./client.js";
export { ConnectionClosedError, RpcError } from "./rpc.js";
export { pair, parsePairLink, PairingError } from "./pairing.js";
export type { PairOptions, PairedHost } from "./pairing.js";
export { FingerprintMismatchError, parseAddress } from "./tls.js";
export { Spake2 } from "./spake2.js";
