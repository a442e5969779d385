// TLS to a host: TLS 1.3 only, the host's ALPN id, and its certificate pinned
// by SHA-256 fingerprint (the certificate is self-signed: no CA vouches for
// it, pairing does). The handshake's signature is still verified by TLS, so
// a peer presenting the pinned certificate must hold its key.
import { createHash } from "node:crypto";
import * as tls from "node:tls";

/** The host's ALPN protocol id. */
export const ALPN = "openwork/1";
/** The name sent in SNI; the certificate is checked by fingerprint, not by name. */
export const SERVER_NAME = "openwork-host";
/** The TLS exporter label of pairing (RFC 8446 §7.5). */
export const EXPORTER_LABEL = "EXPORTER-openwork-pairing-v1";

/** The host presented another certificate than the one pinned. */
export class FingerprintMismatchError extends Error {
  constructor(
    readonly address: string,
    readonly expected: string,
    readonly got: string,
  ) {
    super(
      `the host at ${address} presented certificate ${got}, but ${expected} is pinned: the host may be impersonated. ` +
        "If the host was reinstalled or its identity reset, pair again",
    );
  }
}

/** A TLS connection and what its handshake showed. */
export interface TlsConnected {
  socket: tls.TLSSocket;
  /** SHA-256 of the certificate the host presented, lowercase hex. */
  fingerprint: string;
}

/** Where a host listens. */
export interface Endpoint {
  host: string;
  port: number;
}

/** Splits `host:port` or `[v6]:port`. */
export function parseAddress(address: string): Endpoint {
  const match = /^\[(.+)\]:(\d+)$/.exec(address) ?? /^([^:]+):(\d+)$/.exec(address);
  if (!match) throw new Error(`expected host:port, got ${JSON.stringify(address)}`);
  return { host: match[1]!, port: Number(match[2]) };
}

/** SHA-256 of a DER certificate, lowercase hex (the host's fingerprint format). */
export function certFingerprint(der: Buffer): string {
  return createHash("sha256").update(der).digest("hex");
}

/**
 * Connects with TLS; with `pinned`, any other certificate fails the
 * connection before a byte of the protocol is sent. Without it (pairing
 * only), the certificate seen is returned for the caller to pin.
 */
export function connectTls(endpoint: Endpoint, pinned: string | undefined, timeoutMs = 15000): Promise<TlsConnected> {
  const address = `${endpoint.host}:${endpoint.port}`;
  return new Promise((resolve, reject) => {
    const socket = tls.connect({
      host: endpoint.host,
      port: endpoint.port,
      servername: SERVER_NAME,
      ALPNProtocols: [ALPN],
      minVersion: "TLSv1.3",
      maxVersion: "TLSv1.3",
      // The chain is not CA-signed: the fingerprint below is the check.
      rejectUnauthorized: false,
    });
    const timer = setTimeout(() => {
      socket.destroy();
      reject(new Error(`timed out connecting to ${address}`));
    }, timeoutMs);
    socket.once("error", (e) => {
      clearTimeout(timer);
      reject(new Error(`cannot reach ${address}: ${e.message}`));
    });
    socket.once("secureConnect", () => {
      clearTimeout(timer);
      const cert = socket.getPeerCertificate();
      const fingerprint = cert?.raw ? certFingerprint(cert.raw) : "";
      if (!fingerprint) {
        socket.destroy();
        reject(new Error(`the host at ${address} presented no certificate`));
        return;
      }
      if (pinned !== undefined && fingerprint !== pinned.toLowerCase()) {
        socket.destroy();
        reject(new FingerprintMismatchError(address, pinned.toLowerCase(), fingerprint));
        return;
      }
      socket.setNoDelay(true);
      resolve({ socket, fingerprint });
    });
  });
}

/** 32 bytes of exported keying material for pairing. */
export function exporter(socket: tls.TLSSocket): Uint8Array {
  return new Uint8Array(socket.exportKeyingMaterial(32, EXPORTER_LABEL, Buffer.alloc(0)));
}
