// SPAKE2 on the Ed25519 group, compatible byte for byte with RustCrypto's
// `spake2` 0.4 (and python-spake2): the same M and N points, the same
// password-to-scalar (HKDF-SHA256, info "SPAKE2 pw", 48 bytes read big-endian,
// reduced mod L), messages of a side byte ('A' 0x41, 'B' 0x42) and a
// compressed point, and the key SHA-256(SHA-256(pw) | SHA-256(idA) |
// SHA-256(idB) | X | Y | K).
//
// Portable (Node and browsers): hashing by @noble/hashes, randomness by
// WebCrypto's getRandomValues.
import { ed25519 } from "@noble/curves/ed25519.js";
import { hkdf } from "@noble/hashes/hkdf.js";
import { sha256 as sha256Hash } from "@noble/hashes/sha2.js";
import { concat } from "./encoding.js";

const Point = ed25519.Point;
type Point = InstanceType<typeof ed25519.Point>;
const L = Point.Fn.ORDER;

/** The group's fixed elements M (side A) and N (side B), as in spake2 0.4. */
const M = Point.fromHex("15cfd18e385952982b6a8f8c7854963b58e34388c8e6dae891db756481a02312");
const N = Point.fromHex("f04f2e7eb734b2a8f8b472eaf9c3c632576ac64aea650b496a8a20ff00e583c3");

const SIDE_A = 0x41;
const SIDE_B = 0x42;

/** A SPAKE2 message that cannot be used. */
export class Spake2Error extends Error {}

const sha256 = (...parts: Uint8Array[]): Uint8Array => sha256Hash(concat(...parts));

/** The password's scalar: HKDF-SHA256 (empty salt, info "SPAKE2 pw") to 48 bytes, big-endian, mod L. */
export function passwordToScalar(password: Uint8Array): bigint {
  const okm = hkdf(sha256Hash, password, new Uint8Array(0), new TextEncoder().encode("SPAKE2 pw"), 48);
  let n = 0n;
  for (const byte of okm) n = (n << 8n) | BigInt(byte);
  return n % L;
}

/** A uniformly random non-zero scalar: 64 random bytes, little-endian, mod L. */
export function randomScalar(): bigint {
  for (;;) {
    const bytes = globalThis.crypto.getRandomValues(new Uint8Array(64));
    let n = 0n;
    for (let i = bytes.length - 1; i >= 0; i--) n = (n << 8n) | BigInt(bytes[i]!);
    n %= L;
    if (n !== 0n) return n;
  }
}

/** `point * scalar` for any scalar mod L (noble refuses 0). */
function mul(point: Point, scalar: bigint): Point {
  const s = ((scalar % L) + L) % L;
  return s === 0n ? Point.ZERO : point.multiply(s);
}

/** One side of an exchange: `message` goes to the peer, `finish` takes the peer's. */
export class Spake2 {
  /** The message to send: the side byte and a compressed point. */
  readonly message: Uint8Array;
  private readonly element: Uint8Array;
  private readonly pw: bigint;

  private constructor(
    private readonly side: "A" | "B",
    private readonly password: Uint8Array,
    private readonly idA: Uint8Array,
    private readonly idB: Uint8Array,
    private readonly secret: bigint,
  ) {
    this.pw = passwordToScalar(password);
    const blinding = side === "A" ? M : N;
    this.element = mul(Point.BASE, secret).add(mul(blinding, this.pw)).toBytes();
    this.message = new Uint8Array([side === "A" ? SIDE_A : SIDE_B, ...this.element]);
  }

  /** Side A (the pairing device). `secret` is for tests only. */
  static startA(password: Uint8Array, idA: Uint8Array, idB: Uint8Array, secret = randomScalar()): Spake2 {
    return new Spake2("A", password, idA, idB, secret);
  }

  /** Side B (the host's role; used here to test side A). */
  static startB(password: Uint8Array, idA: Uint8Array, idB: Uint8Array, secret = randomScalar()): Spake2 {
    return new Spake2("B", password, idA, idB, secret);
  }

  /** The shared key (32 bytes) from the peer's message. */
  finish(peerMessage: Uint8Array): Uint8Array {
    if (peerMessage.length !== 33) throw new Spake2Error(`a SPAKE2 message is 33 bytes, not ${peerMessage.length}`);
    const expected = this.side === "A" ? SIDE_B : SIDE_A;
    if (peerMessage[0] !== expected) throw new Spake2Error("the SPAKE2 message is from the wrong side");
    const peerElement = peerMessage.subarray(1);
    let peer: Point;
    try {
      peer = Point.fromBytes(peerElement);
    } catch {
      throw new Spake2Error("the SPAKE2 message is not a curve point");
    }
    const unblinding = this.side === "A" ? N : M;
    const k = mul(peer.add(mul(unblinding, -this.pw)), this.secret).toBytes();
    const [x, y] = this.side === "A" ? [this.element, peerElement] : [peerElement, this.element];
    return sha256(sha256(this.password), sha256(this.idA), sha256(this.idB), x, y, k);
  }
}
