// Pairing a device with a host from Node over TLS: the exchange of
// pairing-core.ts with the code mixed with the TLS session's exported keying
// material, then the owner's approval; the device gets a token.
import type * as T from "./generated/types.js";
import { exchange, PairingError } from "./pairing-core.js";
import { RpcConnection } from "./rpc.js";
import { StreamTransport } from "./stream.js";
import { connectTls, exporter, parseAddress, type Endpoint } from "./tls.js";

export { confirmations, pairingPassword, PairingError, transcript, WEB_PAIRING_BINDING } from "./pairing-core.js";
export type { TranscriptContext } from "./pairing-core.js";

/** What pairing needs. */
export interface PairOptions {
  /** `host:port` of the host's TLS listener. */
  address: string | Endpoint;
  /** The code `openwork-host pair` shows. */
  code: string;
  /** Shown to the host's owner when they approve. */
  deviceName: string;
  /** Scopes asked for (default: all the window offers). */
  scopes?: T.Scope[];
  /** From a QR code or `openwork://` link: the certificate the host must present. */
  expectedFingerprint?: string;
  /** How long to wait for the owner's approval (default 5 minutes). */
  approvalTimeoutMs?: number;
}

/** A paired host: what to keep (the token is a secret) to connect again. */
export interface PairedHost {
  address: string;
  hostId: string;
  hostName: string;
  /** The certificate fingerprint to pin: the one this TLS session presented. */
  fingerprint: string;
  deviceId: string;
  token: string;
  scopes: T.Scope[];
}

/** An `openwork://pair?host=…&port=…&fp=…&code=…` link, as in the QR code. */
export function parsePairLink(uri: string): { address: string; code: string; fingerprint?: string; hostId?: string } {
  const prefix = "openwork://pair?";
  if (!uri.startsWith(prefix)) throw new PairingError(`not an openwork pairing link: ${uri}`);
  const query = new URLSearchParams(uri.slice(prefix.length));
  const host = query.get("host");
  const port = query.get("port");
  const code = query.get("code");
  if (!host || !port || !code) throw new PairingError("the pairing link lacks host, port or code");
  return {
    address: host.includes(":") ? `[${host}]:${port}` : `${host}:${port}`,
    code,
    fingerprint: query.get("fp") ?? undefined,
    hostId: query.get("id") ?? undefined,
  };
}

/** Pairs with a host over TLS and returns the credential to keep. */
export async function pair(options: PairOptions): Promise<PairedHost> {
  const endpoint = typeof options.address === "string" ? parseAddress(options.address) : options.address;
  const connected = await connectTls(endpoint, options.expectedFingerprint);
  const rpc = new RpcConnection(new StreamTransport(connected.socket), { notification: () => {}, closed: () => {} });
  try {
    const result = await exchange(rpc, {
      code: options.code,
      deviceName: options.deviceName,
      ...(options.scopes ? { scopes: options.scopes } : {}),
      binding: exporter(connected.socket),
      hostFingerprint: connected.fingerprint,
      approvalTimeoutMs: options.approvalTimeoutMs ?? 5 * 60 * 1000,
    });
    if (result.token === undefined) throw new PairingError("the host issued no token (a key-registered device cannot pair over TLS)");
    return {
      address: `${endpoint.host.includes(":") ? `[${endpoint.host}]` : endpoint.host}:${endpoint.port}`,
      hostId: result.hostId,
      hostName: result.hostName,
      fingerprint: connected.fingerprint,
      deviceId: result.deviceId,
      token: result.token,
      scopes: result.scopes,
    };
  } finally {
    rpc.close();
  }
}
