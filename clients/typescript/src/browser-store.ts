// Where a browser keeps its credential: IndexedDB, which stores the
// non-extractable CryptoKey itself (structured clone), so the page can sign
// with it after a reload but no script can read the key's bytes.
import type * as T from "./generated/types.js";
import type { WebPairedHost } from "./websocket.js";

const DATABASE = "openwork";
const STORE = "credentials";
/** One credential per origin: a page served by one host pairs with that host. */
const KEY = "device";

/** What is kept of a pairing. */
export interface StoredCredential {
  deviceId: string;
  hostId: string;
  hostName: string;
  fingerprint: string;
  scopes: T.Scope[];
  privateKey: CryptoKey;
  publicKey: CryptoKey;
  /** When it was paired (ms since the epoch). */
  pairedAt: number;
}

function openDatabase(): Promise<IDBDatabase> {
  return new Promise((resolve, reject) => {
    const request = indexedDB.open(DATABASE, 1);
    request.onupgradeneeded = () => request.result.createObjectStore(STORE);
    request.onsuccess = () => resolve(request.result);
    request.onerror = () => reject(new Error(`cannot open the browser's storage (IndexedDB): ${request.error?.message}`));
    request.onblocked = () => reject(new Error("the browser's storage (IndexedDB) is blocked by another tab"));
  });
}

async function withStore<R>(mode: IDBTransactionMode, run: (store: IDBObjectStore) => IDBRequest<R>): Promise<R> {
  const db = await openDatabase();
  try {
    return await new Promise<R>((resolve, reject) => {
      const tx = db.transaction(STORE, mode);
      const request = run(tx.objectStore(STORE));
      tx.oncomplete = () => resolve(request.result);
      tx.onerror = () => reject(new Error(`the browser's storage (IndexedDB) failed: ${tx.error?.message}`));
      tx.onabort = () => reject(new Error(`the browser's storage (IndexedDB) failed: ${tx.error?.message ?? "aborted"}`));
    });
  } finally {
    db.close();
  }
}

/** The credential kept by this origin, if any. */
export async function loadCredential(): Promise<StoredCredential | undefined> {
  const value = (await withStore("readonly", (s) => s.get(KEY))) as StoredCredential | undefined;
  return value && value.privateKey instanceof CryptoKey ? value : undefined;
}

/** Keeps a new pairing, replacing any earlier one. */
export async function saveCredential(paired: WebPairedHost): Promise<StoredCredential> {
  const stored: StoredCredential = {
    deviceId: paired.deviceId,
    hostId: paired.hostId,
    hostName: paired.hostName,
    fingerprint: paired.fingerprint,
    scopes: paired.scopes,
    privateKey: paired.privateKey,
    publicKey: paired.publicKey,
    pairedAt: Date.now(),
  };
  await withStore("readwrite", (s) => s.put(stored, KEY));
  return stored;
}

/** Forgets this origin's credential (its key is gone for good). */
export async function forgetCredential(): Promise<void> {
  await withStore("readwrite", (s) => s.delete(KEY));
}
