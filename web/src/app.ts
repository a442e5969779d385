// The test page: pairs this browser from a `#pair?code=…&fp=…&id=…` link (or
// a typed code), then keeps one connection to the host that served it, runs
// a command and shows its output as it streams. The only way it talks to the
// host is the TypeScript client's browser build. No inline script (the CSP
// forbids it): this module is the page's one script.
import {
  BrowserClient,
  FINAL_STATUSES,
  forgetCredential,
  loadCredential,
  pairBrowser,
  parsePairFragment,
  RpcError,
  type ConnectionState,
  type LogChunk,
  type PairLink,
  type StoredCredential,
  type TaskUpdate,
} from "../../clients/typescript/src/browser.js";

/** What the connection status shows; `refused` is a credential the host no longer accepts. */
type Status = "starting" | "unpaired" | "pairing" | "connecting" | ConnectionState | "refused";

function element<E extends HTMLElement>(id: string): E {
  const found = document.getElementById(id);
  if (!found) throw new Error(`the page has no #${id}`);
  return found as E;
}

const view = {
  status: element("status"),
  pair: element("pair"),
  pairForm: element<HTMLFormElement>("pair-form"),
  code: element<HTMLInputElement>("code"),
  deviceName: element<HTMLInputElement>("device-name"),
  pairButton: element<HTMLButtonElement>("pair-button"),
  pairStatus: element("pair-status"),
  session: element("session"),
  hostName: element("host-name"),
  deviceId: element("device-id"),
  runForm: element<HTMLFormElement>("run-form"),
  command: element<HTMLInputElement>("command"),
  runButton: element<HTMLButtonElement>("run-button"),
  taskStatus: element("task-status"),
  output: element("output"),
  forget: element<HTMLButtonElement>("forget"),
  error: element("error"),
};

/** The page's one store: the link, the credential, the connection and the task shown. */
const state: {
  link?: PairLink;
  credential?: StoredCredential;
  client?: BrowserClient;
  taskId?: string;
} = {};

function setStatus(status: Status, text: string): void {
  view.status.dataset.state = status;
  view.status.textContent = text;
}

function showError(message: string | undefined): void {
  view.error.hidden = !message;
  view.error.textContent = message ?? "";
}

function describe(error: unknown): string {
  if (error instanceof RpcError) return `${error.message}${error.action ? ` (${error.action})` : ""}`;
  return error instanceof Error ? error.message : String(error);
}

/** A credential the host refuses: revoked, or paired with another host. */
function refused(error: unknown): boolean {
  return error instanceof RpcError && (error.code === -32001 || error.code === -32002);
}

function showPairing(): void {
  view.session.hidden = true;
  view.pair.hidden = false;
  if (state.link) view.code.value = state.link.code;
  if (!view.deviceName.value) view.deviceName.value = defaultDeviceName();
  view.pairButton.disabled = false;
}

function defaultDeviceName(): string {
  const ua = navigator.userAgent;
  const browser = /Firefox\//.test(ua) ? "Firefox" : /Edg\//.test(ua) ? "Edge" : /Chrom(e|ium)\//.test(ua) ? "Chromium" : /Safari\//.test(ua) ? "Safari" : "Browser";
  return `${browser} on ${navigator.platform || "this device"}`;
}

async function onPair(event: SubmitEvent): Promise<void> {
  event.preventDefault();
  showError(undefined);
  view.pairButton.disabled = true;
  view.pairStatus.dataset.state = "working";
  view.pairStatus.textContent = "Pairing…";
  setStatus("pairing", "Pairing");
  try {
    const link = state.link;
    const credential = await pairBrowser({
      code: view.code.value,
      deviceName: view.deviceName.value,
      ...(link?.fingerprint ? { fingerprint: link.fingerprint } : {}),
      ...(link?.hostId ? { hostId: link.hostId } : {}),
      onAwaitingApproval: () => {
        view.pairStatus.dataset.state = "waiting";
        view.pairStatus.textContent = "Waiting for approval on the host (openwork-host devices approve, or the pair prompt)…";
      },
    });
    view.pairStatus.dataset.state = "done";
    view.pairStatus.textContent = "Paired.";
    state.link = undefined;
    history.replaceState(null, "", location.pathname + location.search);
    state.credential = credential;
    await connect();
  } catch (e) {
    view.pairStatus.dataset.state = "failed";
    view.pairStatus.textContent = "";
    showError(`Pairing failed: ${describe(e)}`);
    setStatus("unpaired", "Not paired");
    view.pairButton.disabled = false;
  }
}

async function connect(): Promise<void> {
  const credential = state.credential;
  if (!credential) return;
  view.pair.hidden = true;
  view.session.hidden = false;
  view.hostName.textContent = credential.hostName;
  view.deviceId.textContent = credential.deviceId;
  view.runButton.disabled = true;
  setStatus("connecting", "Connecting…");
  let client: BrowserClient;
  try {
    client = await BrowserClient.connectWith(credential, { reconnect: { attempts: 8, initialDelayMs: 200, maxDelayMs: 5000 } });
  } catch (e) {
    onConnectionLost(e);
    return;
  }
  state.client = client;
  client.on("log.chunk", onChunk);
  client.on("task.updated", onUpdate);
  client.onState((s, error) => {
    if (s === "open") {
      setStatus("open", `Connected to ${client.server.hostName}`);
      view.runButton.disabled = false;
    } else if (s === "reconnecting") {
      setStatus("reconnecting", `Connection lost (${describe(error)}); reconnecting…`);
      view.runButton.disabled = true;
    } else onConnectionLost(error);
  });
  setStatus("open", `Connected to ${client.server.hostName}`);
  view.runButton.disabled = false;
}

function onConnectionLost(error: unknown): void {
  state.client = undefined;
  view.runButton.disabled = true;
  if (refused(error)) {
    setStatus("refused", "Refused by the host: this browser's pairing was revoked or is unknown there");
    showError(`The host refused this browser: ${describe(error)}. Pair again to use it.`);
    showPairing();
  } else {
    setStatus("closed", "Disconnected");
    showError(`Cannot reach the host: ${describe(error)}. Reload the page to try again.`);
  }
}

async function onRun(event: SubmitEvent): Promise<void> {
  event.preventDefault();
  const client = state.client;
  if (!client) return;
  showError(undefined);
  view.output.replaceChildren();
  view.taskStatus.textContent = "Starting…";
  view.runButton.disabled = true;
  try {
    const { taskId } = await client.taskRun({ command: view.command.value });
    state.taskId = taskId;
    view.taskStatus.dataset.taskId = taskId;
    if (view.taskStatus.dataset.final !== taskId) view.taskStatus.textContent = `Task ${taskId}: running`;
  } catch (e) {
    view.taskStatus.textContent = "";
    showError(`Cannot run it: ${describe(e)}`);
  } finally {
    view.runButton.disabled = !state.client;
  }
}

function onChunk(chunk: LogChunk): void {
  if (chunk.taskId !== state.taskId) return;
  const last = view.output.lastElementChild as HTMLElement | null;
  if (last && last.dataset.stream === chunk.stream) last.append(chunk.data);
  else {
    const span = document.createElement("span");
    span.dataset.stream = chunk.stream;
    span.className = chunk.stream;
    span.textContent = chunk.data;
    view.output.append(span);
  }
}

function onUpdate(update: TaskUpdate): void {
  if (update.taskId !== state.taskId) return;
  const end = update.exitCode !== undefined ? ` (exit ${update.exitCode})` : update.signal ? ` (${update.signal})` : "";
  view.taskStatus.textContent = `Task ${update.taskId}: ${update.status}${end}${update.error ? `: ${update.error}` : ""}`;
  view.taskStatus.dataset.status = update.status;
  if (FINAL_STATUSES.has(update.status)) view.taskStatus.dataset.final = update.taskId;
}

async function onForget(): Promise<void> {
  await state.client?.close();
  state.client = undefined;
  await forgetCredential();
  state.credential = undefined;
  setStatus("unpaired", "Not paired");
  showPairing();
}

async function main(): Promise<void> {
  view.pairForm.addEventListener("submit", (e) => void onPair(e));
  view.runForm.addEventListener("submit", (e) => void onRun(e));
  view.forget.addEventListener("click", () => void onForget());
  state.link = parsePairFragment(location.hash);
  try {
    state.credential = await loadCredential();
  } catch (e) {
    showError(describe(e));
  }
  if (state.link || !state.credential) {
    setStatus("unpaired", "Not paired");
    showPairing();
  } else {
    await connect();
  }
}

void main();
