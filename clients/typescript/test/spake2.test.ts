// SPAKE2 and the pairing MACs, on their own; the live pairing test checks
// them against the Rust host.
import assert from "node:assert/strict";
import { test } from "node:test";
import { confirmations, pairingPassword, transcript } from "../src/pairing.js";
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
