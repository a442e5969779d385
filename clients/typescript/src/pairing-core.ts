// The pairing exchange, whatever carries it: SPAKE2 with the code, key
// confirmation both ways (HKDF keys per role over the whole transcript), then
// the owner's approval. Mirrors the host's src/pairing/crypto.rs exactly.
// Portable (Node and browsers); the TLS client binds the session's exported
// keying material, a WebSocket client (no exporter in browsers) the web
// constant and its public key.
import { hkdf } from "@noble/hashes/hkdf.js";
import { hmac } from "@noble/hashes/hmac.js";
import { sha256 } from "@noble/hashes/sha2.js";
import { concat, constantTimeEqual, fromBase64, toBase64, toBase64Url, utf8 } from "./encoding.js";
import type * as T from "./generated/types.js";
import { RpcError, type RpcConnection } from "./rpc.js";
import { Spake2 } from "./spake2.js";

const CLIENT_IDENTITY = utf8("openwork-client");
const HOST_IDENTITY = utf8("openwork-host");

/**
 * What stands for the TLS exporter on a WebSocket connection (browsers cannot
 * export keying material): SHA-256("openwork-pairing-web-v1").
 */
export const WEB_PAIRING_BINDING: Uint8Array = sha256(utf8("openwork-pairing-web-v1"));

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

/** SPAKE2's password: HMAC-SHA256(TLS exporter, "openwork pairing code v1\0" + code). */
export function pairingPassword(code: string, tlsExporter: Uint8Array): Uint8Array {
  return hmac(sha256, tlsExporter, utf8("openwork pairing code v1\0" + code));
}

/** What both sides agree on besides the code: what the confirmation MACs cover. */
export interface TranscriptContext {
  /** The TLS exporter, or `WEB_PAIRING_BINDING` on a WebSocket. */
  tlsExporter: Uint8Array;
  hostFingerprint: string;
  deviceName: string;
  scopes: string[];
  /** The SPKI DER key a browser registers: one more item when present. */
  publicKey?: Uint8Array;
}

/** SHA-256 over length-prefixed items (u64 big-endian), as the host computes it. */
export function transcript(ctx: TranscriptContext, clientMessage: Uint8Array, hostMessage: Uint8Array): Uint8Array {
  const parts: Uint8Array[] = [];
  const item = (bytes: Uint8Array) => {
    const length = new Uint8Array(8);
    new DataView(length.buffer).setBigUint64(0, BigInt(bytes.length));
    parts.push(length, bytes);
  };
  item(utf8("openwork-pairing-transcript-v1"));
  item(ctx.tlsExporter);
  item(sha256(clientMessage));
  item(sha256(hostMessage));
  item(utf8(ctx.hostFingerprint));
  item(utf8(ctx.deviceName));
  item(utf8(ctx.scopes.join(" ")));
  if (ctx.publicKey) item(ctx.publicKey);
  return sha256(concat(...parts));
}

/** The two confirmation MACs (host's, client's) from the SPAKE2 key. */
export function confirmations(key: Uint8Array, t: Uint8Array): { host: Uint8Array; client: Uint8Array } {
  const mac = (info: string, role: string) => hmac(sha256, hkdf(sha256, key, t, utf8(info), 32), concat(t, utf8(role)));
  return {
    host: mac("openwork pairing host confirmation", "host"),
    client: mac("openwork pairing client confirmation", "client"),
  };
}

/** One pairing exchange on an open connection. */
export interface ExchangeOptions {
  code: string;
  deviceName: string;
  scopes?: T.Scope[];
  /** The TLS exporter, or `WEB_PAIRING_BINDING`. */
  binding: Uint8Array;
  /** The fingerprint of the certificate the host presents (hex). */
  hostFingerprint: string;
  /** SPKI DER of the key a browser registers instead of receiving a token. */
  publicKey?: Uint8Array;
  /** How long to wait for the owner's approval. */
  approvalTimeoutMs: number;
  /** Called once the host proved it knows the code: the owner's approval is awaited. */
  onAwaitingApproval?: () => void;
}

/** Runs `pairing.begin` and `pairing.confirm`; throws `PairingError`. */
export async function exchange(rpc: RpcConnection, options: ExchangeOptions): Promise<T.PairingResult> {
  const deviceName = options.deviceName.trim();
  try {
    const spake = Spake2.startA(pairingPassword(options.code, options.binding), CLIENT_IDENTITY, HOST_IDENTITY);
    const begun = (await rpc.request("pairing.begin", {
      deviceName,
      ...(options.scopes ? { scopes: options.scopes } : {}),
      spake: toBase64(spake.message),
      ...(options.publicKey ? { publicKey: toBase64Url(options.publicKey) } : {}),
    })) as T.PairingBeginResult;
    let hostMessage: Uint8Array;
    let key: Uint8Array;
    try {
      hostMessage = fromBase64(begun.spake);
      key = spake.finish(hostMessage);
    } catch (e) {
      throw new PairingError(`the host sent a malformed SPAKE2 message: ${(e as Error).message}`, e);
    }
    const t = transcript(
      {
        tlsExporter: options.binding,
        hostFingerprint: options.hostFingerprint.toLowerCase(),
        deviceName,
        scopes: begun.scopes,
        ...(options.publicKey ? { publicKey: options.publicKey } : {}),
      },
      spake.message,
      hostMessage,
    );
    const macs = confirmations(key, t);
    let hostConfirm: Uint8Array;
    try {
      hostConfirm = fromBase64(begun.hostConfirm);
    } catch {
      hostConfirm = new Uint8Array(0);
    }
    if (!constantTimeEqual(hostConfirm, macs.host)) {
      throw new PairingError(
        "the host could not prove it knows the code: the code is wrong, or someone is between you and the host. " +
          "Check the code shown by `openwork-host pair` and try again",
      );
    }
    options.onAwaitingApproval?.();
    return (await rpc.request(
      "pairing.confirm",
      { exchangeId: begun.exchangeId, clientConfirm: toBase64(macs.client) },
      options.approvalTimeoutMs,
    )) as T.PairingResult;
  } catch (e) {
    if (e instanceof PairingError) throw e;
    if (e instanceof RpcError) throw new PairingError(`the host refused: ${e.message}${e.action ? ` (${e.action})` : ""}`, e);
    throw new PairingError(`pairing failed: ${(e as Error).message}`, e);
  }
}
