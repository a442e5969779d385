// Pairing, in its own bundle: the SPAKE2 exchange and its curves are half
// the app's code and only the Pair screen needs them, so a browser that
// paired before never downloads them (build.mjs builds this file apart and
// gives the app its URL as `__PAIR_URL__`).
export { pairBrowser } from "../../clients/typescript/src/browser.js";
