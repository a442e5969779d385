// SPAKE2 and the pairing MACs, on their own; the live pairing test checks
// them against the Rust host.
import assert from "node:assert/strict";
import { createHash, createPublicKey, verify as cryptoVerify } from "node:crypto";
import { test } from "node:test";
import { fromBase64, toBase64, toBase64Url } from "../src/encoding.js";
import { confirmations, pairingPassword, transcript, WEB_PAIRING_BINDING } from "../src/pairing.js";
import { RpcConnection } from "../src/rpc.js";
import { authMessage, generateDeviceKey, signatureAuth } from "../src/websocket.js";
import { Spake2 } from "../src/spake2.js";
import { FrameDecoder, FramingError, encodeFrame } from "../src/framing.js";

const idA = Buffer.from("openwork-client");
const idB = Buffer.from("openwork-host");

test("both sides derive the same key with the same password", () => {
  const a = Spake2.startA(Buffer.from("pw"), idA, idB);
  const b = Spake2.startB(Buffer.from("pw"), idA, idB);
  assert.equal(a.message.length, 33);
  assert.equal(a.message[0], 0x41);
  assert.equal(b.message[0], 0x42);
  assert.deepEqual(a.finish(b.message), b.finish(a.message));
});

test("different passwords give different keys", () => {
  const a = Spake2.startA(Buffer.from("pw"), idA, idB);
  const b = Spake2.startB(Buffer.from("other"), idA, idB);
  assert.notDeepEqual(a.finish(b.message), b.finish(a.message));
});

test("messages from the wrong side or of the wrong size are refused", () => {
  const a = Spake2.startA(Buffer.from("pw"), idA, idB);
  const a2 = Spake2.startA(Buffer.from("pw"), idA, idB);
  assert.throws(() => a.finish(a2.message), /wrong side/);
  assert.throws(() => a.finish(new Uint8Array(5)), /33 bytes/);
});

test("the confirmations bind the TLS session and what the device asked for", () => {
  const exporter = new Uint8Array(32).fill(7);
  const a = Spake2.startA(pairingPassword("12345678", exporter), idA, idB);
  const b = Spake2.startB(pairingPassword("12345678", exporter), idA, idB);
  const key = a.finish(b.message);
  assert.deepEqual(key, b.finish(a.message));
  const ctx = { tlsExporter: exporter, hostFingerprint: "ab12", deviceName: "phone", scopes: ["tasks.run"] };
  const mine = confirmations(key, transcript(ctx, a.message, b.message));
  const tampered = confirmations(key, transcript({ ...ctx, scopes: ["admin"] }, a.message, b.message));
  assert.notDeepEqual(mine.host, mine.client, "one MAC per role");
  assert.notDeepEqual(mine.host, tampered.host);
  const otherSession = new Uint8Array(32).fill(8);
  assert.notDeepEqual(pairingPassword("12345678", exporter), pairingPassword("12345678", otherSession));
});

test("LSP frames split anywhere are reassembled, and oversized ones refused", () => {
  const frames = Buffer.concat([encodeFrame({ a: 1 }), encodeFrame({ b: "é" })]);
  const decoder = new FrameDecoder();
  const got = [...frames].flatMap((byte) => decoder.push(Buffer.from([byte])));
  assert.deepEqual(got.map((f) => JSON.parse(f.toString())), [{ a: 1 }, { b: "é" }]);
  assert.throws(() => new FrameDecoder(10).push(Buffer.from("Content-Length: 11\r\n\r\n")), FramingError);
});

test("SPAKE2, the password and the MACs give the bytes the Node-crypto implementation gave", () => {
  // Recorded from the implementation on node:crypto before the move to
  // @noble/hashes (which browsers run too): the bytes must not change.
  const hex = (b: Uint8Array) => Buffer.from(b).toString("hex");
  const exporter = new Uint8Array(32).fill(7);
  const pw = pairingPassword("12345678", exporter);
  assert.equal(hex(pw), "f607ea65c46c49518df01ba38e52e98040459db3877ee7e3577a3564640a4aa8");
  const a = Spake2.startA(pw, idA, idB, 12345n);
  const b = Spake2.startB(pw, idA, idB, 6789n);
  assert.equal(hex(a.message), "4163041efe19b179e04f829369c9d032c4fecbca7b57c6f7e422c2694883d6b329");
  assert.equal(hex(b.message), "426503d371620c1a4439c5e6397a97e6d8f3a415fcb1229f6d5930f8947a3bd7c5");
  const key = a.finish(b.message);
  assert.equal(hex(key), "be65617325bba629b4391f69d8930d3353c3af926080c346834c8dc647484d95");
  const ctx = { tlsExporter: exporter, hostFingerprint: "ab12", deviceName: "phone", scopes: ["tasks.run", "tasks.read"] };
  const t = transcript(ctx, a.message, b.message);
  assert.equal(hex(t), "87c7f21933857beceb482c5f2a4339c4e6651ea7f48b006f0b82e653e611e302");
  const macs = confirmations(key, t);
  assert.equal(hex(macs.host), "2e00d8ff1f9f7c285e51ebe446bcc8f0970930c3e165d950d0bdf9fd66376bdb");
  assert.equal(hex(macs.client), "1545bf6c602944bd661b90766df4dae8da4b8e85fbd3dd7d64d2b59ef8cfa06c");
});

test("the web variant binds SHA-256 of its label instead of an exporter, and the registered key", () => {
  assert.equal(Buffer.from(WEB_PAIRING_BINDING).toString("hex"), createHash("sha256").update("openwork-pairing-web-v1").digest("hex"));
  const ctx = { tlsExporter: WEB_PAIRING_BINDING, hostFingerprint: "ab12", deviceName: "phone", scopes: ["tasks.run"] };
  const [x, y] = [new Uint8Array(33).fill(1), new Uint8Array(33).fill(2)];
  const without = transcript(ctx, x, y);
  const key = new Uint8Array(91).fill(9);
  const withKey = transcript({ ...ctx, publicKey: key }, x, y);
  const otherKey = transcript({ ...ctx, publicKey: new Uint8Array(91).fill(10) }, x, y);
  assert.notDeepEqual(withKey, without);
  assert.notDeepEqual(withKey, otherKey);
  // The key is one more length-prefixed item after the scopes: recompute it by hand.
  const item = (b: Uint8Array) => {
    const n = Buffer.alloc(8);
    n.writeBigUInt64BE(BigInt(b.length));
    return Buffer.concat([n, b]);
  };
  const sha = (b: Uint8Array) => createHash("sha256").update(b).digest();
  const byHand = sha(
    Buffer.concat([
      item(Buffer.from("openwork-pairing-transcript-v1")),
      item(WEB_PAIRING_BINDING),
      item(sha(x)),
      item(sha(y)),
      item(Buffer.from("ab12")),
      item(Buffer.from("phone")),
      item(Buffer.from("tasks.run")),
      item(key),
    ]),
  );
  assert.deepEqual(Buffer.from(withKey), byHand);
});

test("a browser's signature is raw r||s over the documented message, verifiable with its SPKI key", async () => {
  const keys = await generateDeviceKey();
  assert.equal(keys.privateKey.extractable, false);
  await assert.rejects(crypto.subtle.exportKey("pkcs8", keys.privateKey));
  const answers: string[] = [];
  const transport = {
    start(events: { message(text: string): void }) {
      this.events = events;
    },
    events: undefined as undefined | { message(text: string): void },
    send(text: string) {
      const request = JSON.parse(text) as { id: number; method: string };
      answers.push(request.method);
      this.events!.message(JSON.stringify({ jsonrpc: "2.0", id: request.id, result: { nonce: "bm9uY2U" } }));
    },
    close() {},
  };
  const rpc = new RpcConnection(transport, { notification: () => {}, closed: () => {} });
  const auth = await signatureAuth(rpc, { deviceId: "d_1", hostId: "HOSTID", privateKey: keys.privateKey }, "https://127.0.0.1:4747");
  assert.deepEqual(answers, ["auth.challenge"]);
  assert.equal(auth.nonce, "bm9uY2U");
  assert.match(auth.signature, /^[A-Za-z0-9_-]{86}$/, "64 bytes, base64url without padding");
  const message = "openwork-browser-auth-v1\nHOSTID\nhttps://127.0.0.1:4747\nbm9uY2U\nd_1";
  assert.equal(authMessage("HOSTID", "https://127.0.0.1:4747", "bm9uY2U", "d_1"), message);
  const spki = await crypto.subtle.exportKey("spki", keys.publicKey);
  const verifier = createPublicKey({ key: Buffer.from(spki), format: "der", type: "spki" });
  const signature = Buffer.from(auth.signature, "base64url");
  assert.equal(signature.length, 64);
  assert.ok(cryptoVerify("sha256", Buffer.from(message), { key: verifier, dsaEncoding: "ieee-p1363" }, signature));
  assert.ok(!cryptoVerify("sha256", Buffer.from(message + "x"), { key: verifier, dsaEncoding: "ieee-p1363" }, signature));
});

test("base64 and base64url round-trip, and junk is refused", () => {
  for (let n = 0; n < 70; n++) {
    const bytes = new Uint8Array(n).map((_, i) => (i * 37 + n) & 0xff);
    assert.equal(toBase64(bytes), Buffer.from(bytes).toString("base64"));
    assert.equal(toBase64Url(bytes), Buffer.from(bytes).toString("base64url"));
    assert.deepEqual(fromBase64(toBase64(bytes)), bytes);
    assert.deepEqual(fromBase64(toBase64Url(bytes)), bytes);
  }
  assert.throws(() => fromBase64("ab$d"), /not base64/);
  assert.throws(() => fromBase64("abcde"), /not base64/);
});
