// Pairing a device with a host: SPAKE2 with the code over TLS, the code mixed
// with the TLS session's exported keying material, key confirmation both
// ways (HKDF keys per role over the whole transcript), then the owner's
// approval. Mirrors the host's src/pairing/crypto.rs exactly.
import { createHash, createHmac, hkdfSync, timingSafeEqual } from "node:crypto";
import type * as T from "./generated/types.js";
import { RpcConnection, RpcError } from "./rpc.js";
import { Spake2 } from "./spake2.js";
import { connectTls, exporter, parseAddress, type Endpoint } from "./tls.js";

const CLIENT_IDENTITY = Buffer.from("openwork-client");
const HOST_IDENTITY = Buffer.from("openwork-host");

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

/** Why pairing failed. */
export class PairingError extends Error {
  constructor(
    message: string,
    readonly cause?: unknown,
  ) {
    super(message);
    this.name = "PairingError";
  }
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

/** SPAKE2's password: HMAC-SHA256(TLS exporter, "openwork pairing code v1\0" + code). */
export function pairingPassword(code: string, tlsExporter: Uint8Array): Buffer {
  return createHmac("sha256", tlsExporter).update("openwork pairing code v1\0").update(code).digest();
}

/** What both sides agree on besides the code: what the confirmation MACs cover. */
export interface TranscriptContext {
  tlsExporter: Uint8Array;
  hostFingerprint: string;
  deviceName: string;
  scopes: string[];
}

/** SHA-256 over length-prefixed items (u64 big-endian), as the host computes it. */
export function transcript(ctx: TranscriptContext, clientMessage: Uint8Array, hostMessage: Uint8Array): Buffer {
  const h = createHash("sha256");
  const item = (bytes: Uint8Array) => {
    const length = Buffer.alloc(8);
    length.writeBigUInt64BE(BigInt(bytes.length));
    h.update(length);
    h.update(bytes);
  };
  const sha = (b: Uint8Array) => createHash("sha256").update(b).digest();
  item(Buffer.from("openwork-pairing-transcript-v1"));
  item(ctx.tlsExporter);
  item(sha(clientMessage));
  item(sha(hostMessage));
  item(Buffer.from(ctx.hostFingerprint));
  item(Buffer.from(ctx.deviceName));
  item(Buffer.from(ctx.scopes.join(" ")));
  return h.digest();
}

/** The two confirmation MACs (host's, client's) from the SPAKE2 key. */
export function confirmations(key: Uint8Array, t: Buffer): { host: Buffer; client: Buffer } {
  const mac = (info: string, role: string) => {
    const k = Buffer.from(hkdfSync("sha256", key, t, info, 32));
    return createHmac("sha256", k).update(t).update(role).digest();
  };
  return {
    host: mac("openwork pairing host confirmation", "host"),
    client: mac("openwork pairing client confirmation", "client"),
  };
}

/** Pairs with a host and returns the credential to keep. */
export async function pair(options: PairOptions): Promise<PairedHost> {
  const endpoint = typeof options.address === "string" ? parseAddress(options.address) : options.address;
  const deviceName = options.deviceName.trim();
  const connected = await connectTls(endpoint, options.expectedFingerprint);
  const rpc = new RpcConnection(connected.socket, { notification: () => {}, closed: () => {} });
  try {
    const tlsExporter = exporter(connected.socket);
    const spake = Spake2.startA(pairingPassword(options.code, tlsExporter), CLIENT_IDENTITY, HOST_IDENTITY);
    const begun = (await rpc.request("pairing.begin", {
      deviceName,
      ...(options.scopes ? { scopes: options.scopes } : {}),
      spake: Buffer.from(spake.message).toString("base64"),
    })) as T.PairingBeginResult;
    const hostMessage = Buffer.from(begun.spake, "base64");
    let key: Uint8Array;
    try {
      key = spake.finish(hostMessage);
    } catch (e) {
      throw new PairingError(`the host sent a malformed SPAKE2 message: ${(e as Error).message}`, e);
    }
    const t = transcript(
      { tlsExporter, hostFingerprint: connected.fingerprint, deviceName, scopes: begun.scopes },
      spake.message,
      hostMessage,
    );
    const macs = confirmations(key, t);
    const hostConfirm = Buffer.from(begun.hostConfirm, "base64");
    if (hostConfirm.length !== macs.host.length || !timingSafeEqual(hostConfirm, macs.host)) {
      throw new PairingError(
        "the host could not prove it knows the code: the code is wrong, or someone is between you and the host. " +
          "Check the code shown by `openwork-host pair` and try again",
      );
    }
    const result = (await rpc.request(
      "pairing.confirm",
      { exchangeId: begun.exchangeId, clientConfirm: macs.client.toString("base64") },
      options.approvalTimeoutMs ?? 5 * 60 * 1000,
    )) as T.PairingResult;
    // A native client always gets a token; only a browser's key pairing has none.
    if (result.token === undefined) throw new PairingError("the host registered no token for this device");
    return {
      address: `${endpoint.host.includes(":") ? `[${endpoint.host}]` : endpoint.host}:${endpoint.port}`,
      hostId: result.hostId,
      hostName: result.hostName,
      fingerprint: connected.fingerprint,
      deviceId: result.deviceId,
      token: result.token,
      scopes: result.scopes,
    };
  } catch (e) {
    if (e instanceof PairingError) throw e;
    if (e instanceof RpcError) throw new PairingError(`the host refused: ${e.message}${e.action ? ` (${e.action})` : ""}`, e);
    throw new PairingError(`pairing failed: ${(e as Error).message}`, e);
  } finally {
    rpc.close();
  }
}
