// The host certificate's SPKI hash, what Chromium's
// --ignore-certificate-errors-spki-list takes to trust it. No dependencies:
// the soak's browser phone uses it without the built TypeScript client.
import { createHash, X509Certificate } from "node:crypto";
import * as tls from "node:tls";

/** Base64 SHA-256 of the SubjectPublicKeyInfo of the certificate served on `host`:`port`. */
export function spkiHashAt(host, port, timeoutMs = 10000) {
  return new Promise((resolve, reject) => {
    const socket = tls.connect({ host, port, servername: "localhost", ALPNProtocols: ["http/1.1"], rejectUnauthorized: false });
    const timer = setTimeout(() => socket.destroy(new Error("timed out")), timeoutMs);
    socket.once("error", (e) => {
      clearTimeout(timer);
      reject(e);
    });
    socket.once("secureConnect", () => {
      clearTimeout(timer);
      const cert = new X509Certificate(socket.getPeerCertificate().raw);
      socket.destroy();
      resolve(createHash("sha256").update(cert.publicKey.export({ type: "spki", format: "der" })).digest("base64"));
    });
  });
}
