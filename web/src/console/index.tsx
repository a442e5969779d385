// The owner's console: the same app as the phone's, a different role for a
// device holding `admin` (the browser `openwork-host ui` enrolled). Screens:
// set-up (onboarding), pair a device (window, QR code, approvals), devices,
// permissions, health with plots, and every device's tasks.
import { useEffect, useState } from "preact/hooks";
import {
  enrolConsole,
  type AuditEntry,
  type ConsoleLinkFragment,
  type ConsoleOverview,
  type DeviceInfo,
  type HealthReport,
  type MetricsReport,
  type MetricsSeries,
  type PairingRequest,
  type PairingWindow,
  type PermissionRule,
  type Scope,
  type TaskRecord,
  type TaskStatus,
} from "../../../clients/typescript/src/browser.js";
import { changed, connect, describe, store, useStore } from "../store.js";
import { Plot, QrCode } from "./plots.js";

const SCOPE_WORDS: Record<Scope, string> = {
  "tasks.run": "start and stop tasks (run commands) on this host",
  "tasks.read": "see tasks, their output, the health panel and metrics",
  "permissions.reply": "approve or reject sensitive actions that tasks ask permission for",
  opencode: "use the OpenCode agent on this host (prompts, its sessions, files in the workspace through its API)",
  admin: "manage paired devices and remembered permission rules",
};
const ALL_SCOPES: Scope[] = ["tasks.run", "tasks.read", "permissions.reply", "opencode", "admin"];

/** Console screens by route; anything else is the phone's. */
export const CONSOLE_ROUTES = ["", "#", "#tasks", "#setup", "#pair-device", "#devices", "#permissions", "#health"];

/**
 * Whether this browser acts as the host's owner: the host lets it call the
 * owner's methods (the console `openwork-host ui` enrolled, or a device with
 * `admin` where `[devices] remote_admin` is on). Before the connection is up,
 * the console's device id says so (`o_…`).
 */
export function isOwner(): boolean {
  const methods = store.client?.server.capabilities.methods;
  if (methods) return methods.includes("devices.list");
  return !!store.credential?.deviceId.startsWith("o_");
}

export function isConsoleRoute(hash: string): boolean {
  return CONSOLE_ROUTES.includes(hash);
}

function when(iso?: string): string {
  if (!iso) return "never";
  return new Date(iso).toLocaleString([], { month: "short", day: "numeric", hour: "2-digit", minute: "2-digit", second: "2-digit" });
}
function pct(r?: number): string {
  return r === undefined ? "no finished tasks" : `${Math.round(r * 100)} %`;
}
function uptime(s: number): string {
  const d = Math.floor(s / 86400);
  const h = Math.floor((s % 86400) / 3600);
  const m = Math.floor((s % 3600) / 60);
  return d ? `${d} d ${h} h` : h ? `${h} h ${m} min` : m ? `${m} min` : `${s} s`;
}
function grouped(code: string): string {
  return code.replace(/(.{4})(?=.)/g, "$1 ");
}
function taskTitle(t: TaskRecord): string {
  return t.title ?? t.command ?? t.argv?.join(" ") ?? t.prompt ?? t.taskId;
}

/** Calls `load` now, on reconnect, and every `everyMs` while shown. */
function usePoll(load: () => Promise<void> | void, everyMs: number, deps: unknown[] = []): void {
  const s = useStore();
  useEffect(() => {
    if (!s.client) return;
    void load();
    const timer = setInterval(() => void load(), everyMs);
    return () => clearInterval(timer);
  }, [s.client, s.epoch, ...deps]);
}

// ---------------------------------------------------------------- enrol

/** Opened by `openwork-host ui`'s link: enrols this browser, once. */
export function ConsoleEnrol({ link }: { link: ConsoleLinkFragment }) {
  const [state, setState] = useState<"working" | "failed">("working");
  const [error, setError] = useState("");
  useEffect(() => {
    let gone = false;
    (async () => {
      try {
        const old = store.client;
        store.client = undefined;
        await old?.close();
        const credential = await enrolConsole(link, "Owner's console (this machine)");
        if (gone) return;
        // The secret leaves the address bar and the history.
        history.replaceState(null, "", `${location.pathname}#setup`);
        window.dispatchEvent(new HashChangeEvent("hashchange"));
        store.credential = credential;
        store.error = "";
        changed();
        await connect();
      } catch (e) {
        setError(e instanceof Error ? e.message : String(e));
        setState("failed");
      }
    })();
    return () => {
      gone = true;
    };
  }, [link.secret]);
  return (
    <section class="screen" aria-labelledby="enrol-title">
      <h2 id="enrol-title">Owner's console</h2>
      {state === "working" ? (
        <p id="enrol-status" role="status">
          Enrolling this browser as the host owner's console…
        </p>
      ) : (
        <div id="enrol-error" role="alert" class="error">
          <p>This console link did not work: {error}</p>
          <p>
            A link works once, and only until the time <code>openwork-host ui</code> printed with it (two minutes, unless <code>--ttl</code> chose another). Run <code>openwork-host ui</code> on the host for a new one, and open it in a browser on the host's
            own machine.
          </p>
          {store.credential && (
            <p>
              <a
                href="#setup"
                onClick={() => {
                  void connect();
                }}
              >
                Go on with this browser's earlier pairing
              </a>
            </p>
          )}
        </div>
      )}
    </section>
  );
}

// ---------------------------------------------------------------- set-up

function Problem({ ok, title, children }: { ok: boolean; title: string; children: preact.ComponentChildren }) {
  return (
    <li class={ok ? "ok" : "problem"} data-ok={ok ? "true" : "false"}>
      <strong>
        {ok ? "✓ " : "! "}
        {title}
      </strong>
      <div>{children}</div>
    </li>
  );
}

function Setup() {
  const s = useStore();
  const [o, setO] = useState<ConsoleOverview | undefined>();
  const [h, setH] = useState<HealthReport | undefined>();
  const [error, setError] = useState("");
  usePoll(async () => {
    try {
      const client = store.client!;
      const [ov, health] = await Promise.all([client.consoleOverview(), client.healthGet()]);
      setO(ov);
      setH(health);
      setError("");
    } catch (e) {
      setError(describe(e));
    }
  }, 10000);
  const opencode = h?.runtimes?.find((r) => r.name === "opencode");
  const discovery = h?.discovery;
  const opencodeCheck = h?.checks?.find((c) => c.name === "runtime.opencode" && !c.ok);
  const failing = h?.checks?.filter((c) => !c.ok && c.name !== "runtime.opencode") ?? [];
  return (
    <section class="screen" aria-labelledby="setup-title">
      <h2 id="setup-title">Set-up</h2>
      {error && <p class="error">{error}</p>}
      <p>
        <strong>{o?.hostName ?? s.credential?.hostName}</strong> is an openwork host: it runs tasks (commands, or prompts to the OpenCode agent) on
        this machine for the devices you pair with it, streams their output to them, asks before anything sensitive runs, and keeps the history.
        Phones use it from their browser; nothing leaves your network.
      </p>
      <h3>Pair a phone in three steps</h3>
      <ol class="steps">
        <li>Put the phone on the same network as this machine (Wi-Fi at home or work, or a VPN such as Tailscale).</li>
        <li>
          Open <a href="#pair-device">Pair a device</a> here, choose what the phone may do, and open a window: a code and a QR code appear.
        </li>
        <li>Scan the QR code with the phone's camera, tap “Pair” on the phone, then approve it here. The phone keeps a key that only works for it.</li>
      </ol>
      <h3>What was checked</h3>
      {o && h ? (
        <ul class="problems" id="setup-checks">
          <Problem ok={!!o.lanAddress && !o.lanAddressIsLoopback} title={`Address phones will use: ${o.lanAddress ? `${o.lanAddress}:${o.port}` : "none"}`}>
            {!o.lanAddress
              ? "The host has no network listener, so phones cannot reach it. Start it without `--listen none` (e.g. `openwork-host serve`)."
              : o.lanAddressIsLoopback
                ? `This address is this machine only: no LAN address was found. Connect this machine to the network, or set [network] advertise_address in ${o.configPath} to an address phones can reach, then restart the host.`
                : "Pairing links and QR codes carry this address. If the phone cannot open it, check that both are on the same network and that no firewall blocks the port."}
          </Problem>
          <Problem ok={!discovery || discovery.state === "advertising" || discovery.state === "off"} title={`Discovery on the LAN: ${discovery?.state ?? "unknown"}`}>
            {discovery?.state === "off"
              ? "Off: devices find the host by the QR code or its address instead (turn it on with [discovery] enabled = true, and serve without --no-mdns)."
              : discovery?.message
                ? `${discovery.message}${discovery.action ? ` What to do: ${discovery.action}` : ""}`
                : "Devices on the LAN can find the host by name."}
          </Problem>
          <Problem
            ok={!opencodeCheck}
            title={`OpenCode: ${opencode ? opencode.state : "not installed or not used"} (setting: ${o.opencodeEnabled})`}
          >
            {opencode?.state === "ready"
              ? `Installed${opencode.version ? ` (version ${opencode.version})` : ""}: phones can send it prompts.`
              : opencodeCheck
                ? `${opencodeCheck.message}. What to do: ${opencodeCheck.action ?? o.opencodeInstall}`
                : `Not in use${opencode?.message ? ` (${opencode.message})` : ""}. To use the agent from phones: ${o.opencodeInstall}. Without it, phones run commands only.`}
          </Problem>
          {failing.map((c) => (
            <Problem key={c.name} ok={false} title={`${c.name}: ${c.message}`}>
              {c.action ? `What to do: ${c.action}` : "See the Health screen."}
            </Problem>
          ))}
          {failing.length === 0 && (
            <Problem ok title={opencodeCheck ? "Every other health check passes" : "Every health check passes"}>
              See <a href="#health">Health</a> for the details.
            </Problem>
          )}
        </ul>
      ) : (
        !error && <p>Loading…</p>
      )}
      {o && (
        <>
          <h3>Settings and what they mean</h3>
          <p class="hint">
            They live in <code>{o.configPath}</code>
            {o.configExists ? "" : " (not created yet: every setting is optional)"}; change them there and restart the host.
          </p>
          <table class="settings">
            <thead>
              <tr>
                <th scope="col">setting</th>
                <th scope="col">now</th>
                <th scope="col">meaning</th>
              </tr>
            </thead>
            <tbody>
              {o.settings.map((x) => (
                <tr key={x.name}>
                  <th scope="row">
                    <code>{x.name}</code>
                  </th>
                  <td class="wrap">{x.value}</td>
                  <td>{x.meaning}</td>
                </tr>
              ))}
            </tbody>
          </table>
          <p class="hint">
            Host id <code>{o.hostId}</code>, certificate fingerprint <code class="wrap">{grouped(o.fingerprint)}</code>, data in <code>{o.dataDir}</code>.
          </p>
        </>
      )}
    </section>
  );
}

// ---------------------------------------------------------------- pair a device

const TTLS: [number, string][] = [
  [60, "1 minute"],
  [300, "5 minutes"],
  [900, "15 minutes"],
  [3600, "1 hour"],
];

function PairDevice() {
  const s = useStore();
  const [ttl, setTtl] = useState(300);
  const [scopes, setScopes] = useState<Scope[]>(["tasks.run", "tasks.read", "permissions.reply", "opencode"]);
  const [win, setWin] = useState<PairingWindow | undefined>();
  const [requests, setRequests] = useState<PairingRequest[]>([]);
  const [failures, setFailures] = useState(0);
  const [maxFailures, setMaxFailures] = useState(5);
  const [closed, setClosed] = useState("");
  const [error, setError] = useState("");
  const [notes, setNotes] = useState<string[]>([]);
  const [now, setNow] = useState(Date.now());
  const [busy, setBusy] = useState(false);
  const [alreadyOpen, setAlreadyOpen] = useState(false);
  const note = (t: string) => setNotes((n) => [t, ...n].slice(0, 8));

  useEffect(() => {
    const t = setInterval(() => setNow(Date.now()), 1000);
    return () => clearInterval(t);
  }, []);
  useEffect(() => {
    const client = s.client;
    if (!client) return;
    const offs = [
      client.on("pairing.requested", (r) => setRequests((old) => [...old.filter((x) => x.requestId !== r.requestId), r])),
      client.on("pairing.withdrawn", (w) => {
        setRequests((old) => old.filter((x) => x.requestId !== w.requestId));
        note(`“${w.deviceName}” from ${w.address} is no longer waiting (${w.reason}).`);
      }),
      client.on("pairing.failed", (f) => {
        setFailures(f.failures);
        note(`A wrong code was tried from ${f.address} (${f.failures} wrong so far, ${f.remaining} left).`);
      }),
      client.on("pairing.closed", (c) => {
        setClosed(c.reason === "paired" ? `Paired: device ${c.deviceId ?? ""}.` : `The window closed: ${c.reason}.`);
        setRequests([]);
      }),
    ];
    return () => offs.forEach((off) => off());
  }, [s.client]);
  // The window's state from the host too (another console, the CLI, a reconnect).
  usePoll(async () => {
    try {
      const st = await store.client!.pairingStatus();
      setFailures(st.failures);
      setMaxFailures(st.maxFailures);
      setAlreadyOpen(st.open);
      setRequests(st.pending);
      if (!st.open && win && !closed) setClosed(`The window closed${st.closedReason ? `: ${st.closedReason}` : ""}.`);
    } catch (e) {
      setError(describe(e));
    }
  }, 2000, [win, closed]);

  const open = async (e: Event) => {
    e.preventDefault();
    setBusy(true);
    setError("");
    try {
      const w = await store.client!.pairingOpen({ ttlS: ttl, scopes, ...(alreadyOpen ? { replace: true } : {}) });
      setWin(w);
      setClosed("");
      setFailures(0);
      setNotes([]);
    } catch (err) {
      setError(describe(err));
    } finally {
      setBusy(false);
    }
  };
  const decide = async (r: PairingRequest, approve: boolean) => {
    try {
      if (approve) {
        const d = await store.client!.pairingApprove({ requestId: r.requestId });
        note(`Approved “${d.name}” (${d.deviceId}).`);
      } else {
        await store.client!.pairingDeny({ requestId: r.requestId });
        note(`Refused “${r.deviceName}”.`);
      }
      setRequests((old) => old.filter((x) => x.requestId !== r.requestId));
    } catch (err) {
      setError(describe(err));
    }
  };
  const left = win ? Math.max(0, Math.round((Date.parse(win.expiresAt) - now) / 1000)) : 0;
  const live = win && !closed && left > 0;
  return (
    <section class="screen" aria-labelledby="pairdev-title">
      <h2 id="pairdev-title">Pair a device</h2>
      {error && (
        <p class="error" role="alert">
          {error}
        </p>
      )}
      {!live && (
        <form id="pair-window-form" onSubmit={(e) => void open(e)}>
          <label for="ttl">The code works for</label>
          <select id="ttl" value={ttl} onChange={(e) => setTtl(Number(e.currentTarget.value))}>
            {TTLS.map(([v, l]) => (
              <option key={v} value={v}>
                {l}
              </option>
            ))}
          </select>
          <fieldset class="scopes-pick">
            <legend>What the device may do</legend>
            {ALL_SCOPES.map((sc) => (
              <label key={sc} class="check">
                <input
                  type="checkbox"
                  name="scope"
                  value={sc}
                  checked={scopes.includes(sc)}
                  onChange={(e) => setScopes((old) => (e.currentTarget.checked ? [...old, sc] : old.filter((x) => x !== sc)))}
                />
                <span>
                  <code>{sc}</code>: {SCOPE_WORDS[sc]}
                  {sc === "admin" && " — only for a device you trust like this machine; it also needs [devices] remote_admin = true to pair or revoke devices"}
                </span>
              </label>
            ))}
          </fieldset>
          {alreadyOpen && <p class="hint">A pairing window is already open (from `openwork-host pair` or another console): opening one here replaces it, and its code stops working.</p>}
          <button id="open-window" type="submit" class="primary" disabled={busy || scopes.length === 0}>
            Open a pairing window
          </button>
        </form>
      )}
      {win && (
        <div class="window" id="pair-window" data-open={live ? "true" : "false"}>
          {live ? (
            <>
              <div class="qr-box">
                {win.webQr && <QrCode rows={win.webQr} label={`QR code of the pairing link ${win.webUri ?? ""}`} />}
                <div>
                  <p class="big-code" id="pair-code" aria-label={`pairing code ${win.code.split("").join(" ")}`}>
                    {grouped(win.code)}
                  </p>
                  <p id="pair-countdown" role="timer" aria-live="off">
                    Works for another {left >= 60 ? `${Math.floor(left / 60)} min ${left % 60} s` : `${left} s`}, once.
                  </p>
                  <p id="pair-failures">
                    Wrong codes: {failures} of {maxFailures}
                  </p>
                  <p class="hint">
                    Scan with the phone's camera, or open <a id="pair-link" href={win.webUri} class="wrap">{win.webUri}</a> on the phone. A laptop can use{" "}
                    <code>
                      openwork-host client pair {win.host}:{win.port} --code {win.code}
                    </code>
                    .
                  </p>
                  <button type="button" class="danger" onClick={() => void store.client!.pairingClose().then(() => setClosed("You closed the window."))}>
                    Close the window
                  </button>
                </div>
              </div>
            </>
          ) : (
            <p id="pair-closed" role="status">
              {closed || "The code expired."} Open a new window for another device.
            </p>
          )}
        </div>
      )}
      <h3>Waiting for your approval</h3>
      {requests.length === 0 ? (
        <p class="hint" id="no-requests">
          No device is waiting.
        </p>
      ) : (
        <ul class="requests" id="pair-requests" aria-live="polite">
          {requests.map((r) => (
            <li key={r.requestId} data-request-id={r.requestId}>
              <p>
                <strong class="device-name">{r.deviceName}</strong> from <code>{r.address}</code> asks to pair. It will be able to:
              </p>
              <ul class="scopes">
                {r.scopes.map((x) => (
                  <li key={x.scope}>
                    <code>{x.scope}</code>: {x.description}
                  </li>
                ))}
              </ul>
              <div class="actions">
                <button type="button" class="primary approve" onClick={() => void decide(r, true)}>
                  Approve
                </button>
                <button type="button" class="danger deny" onClick={() => void decide(r, false)}>
                  Deny
                </button>
              </div>
            </li>
          ))}
        </ul>
      )}
      {notes.length > 0 && (
        <ul class="notes" id="pair-notes">
          {notes.map((n, i) => (
            <li key={i}>{n}</li>
          ))}
        </ul>
      )}
    </section>
  );
}

// ---------------------------------------------------------------- devices

function Devices() {
  const s = useStore();
  const [devices, setDevices] = useState<DeviceInfo[]>([]);
  const [asking, setAsking] = useState<DeviceInfo | undefined>();
  const [error, setError] = useState("");
  const [showRevoked, setShowRevoked] = useState(false);
  const load = async () => {
    try {
      setDevices((await store.client!.devicesList()).devices);
      setError("");
    } catch (e) {
      setError(describe(e));
    }
  };
  // Every second: a revoked or disconnected device leaves "connected" within one.
  usePoll(load, 1000);
  const [done, setDone] = useState("");
  const revoke = async (d: DeviceInfo) => {
    setAsking(undefined);
    try {
      const r = await store.client!.devicesRevoke({ deviceId: d.deviceId });
      setError("");
      setDone(`Revoked “${d.name}”: ${r.closedConnections === 1 ? "1 connection was" : `${r.closedConnections} connections were`} closed, and its key no longer works.`);
      await load();
    } catch (e) {
      setError(describe(e));
    }
  };
  const me = s.credential?.deviceId;
  const shown = devices.filter((d) => showRevoked || !d.revokedAt);
  return (
    <section class="screen" aria-labelledby="devices-title">
      <h2 id="devices-title">Devices</h2>
      {error && (
        <p class="error" role="alert">
          {error}
        </p>
      )}
      {done && (
        <p role="status" id="revoke-done">
          {done}
        </p>
      )}
      <label class="check inline-check">
        <input type="checkbox" checked={showRevoked} onChange={(e) => setShowRevoked(e.currentTarget.checked)} /> Show revoked devices
      </label>
      <div class="table-wrap">
        <table id="device-table">
          <thead>
            <tr>
              <th scope="col">device</th>
              <th scope="col">may</th>
              <th scope="col">paired</th>
              <th scope="col">last seen</th>
              <th scope="col">from</th>
              <th scope="col">connected now</th>
              <th scope="col">
                <span class="sr-only">actions</span>
              </th>
            </tr>
          </thead>
          <tbody>
            {shown.map((d) => (
              <tr key={d.deviceId} data-device-id={d.deviceId} data-connected={d.connections > 0 ? "true" : "false"} class={d.revokedAt ? "revoked" : ""}>
                <th scope="row">
                  {d.name}
                  {d.deviceId === me && <span class="tag"> this browser</span>}
                  <br />
                  <code class="hint">{d.deviceId}</code>
                </th>
                <td>{d.scopes.join(", ")}</td>
                <td>{when(d.pairedAt)}</td>
                <td>{when(d.lastSeenAt)}</td>
                <td>{d.lastAddress ?? "—"}</td>
                <td class="connected">{d.revokedAt ? `revoked ${when(d.revokedAt)}` : d.connections > 0 ? `yes (${d.connections})` : "no"}</td>
                <td>
                  {!d.revokedAt && (
                    <button type="button" class="danger revoke" onClick={() => setAsking(d)} aria-label={`Revoke ${d.name}`}>
                      Revoke
                    </button>
                  )}
                </td>
              </tr>
            ))}
          </tbody>
        </table>
      </div>
      {shown.length === 0 && !error && <p class="hint">No device is paired yet: see Pair a device.</p>}
      {asking && (
        <div class="confirm" role="alertdialog" aria-labelledby="revoke-text" id="revoke-confirm">
          <p id="revoke-text">
            Revoke “{asking.name}”? Its connections close at once and its key never works again; it must pair anew.
            {asking.deviceId === me && " This is this browser: the console stops working here until you run `openwork-host ui` again."} Tasks it
            started run on.
          </p>
          <button type="button" class="danger" id="revoke-yes" onClick={() => void revoke(asking)}>
            Revoke
          </button>
          <button type="button" onClick={() => setAsking(undefined)}>
            Keep it
          </button>
        </div>
      )}
    </section>
  );
}

// ---------------------------------------------------------------- permissions

function who(key: string | undefined, devices: DeviceInfo[]): string {
  if (!key) return "the host";
  if (key === "local") return "the owner (on the host)";
  if (key.startsWith("device:")) {
    const id = key.slice(7);
    const d = devices.find((x) => x.deviceId === id);
    return d ? `${d.name} (${id})` : id;
  }
  return key;
}

function Permissions() {
  const [rules, setRules] = useState<PermissionRule[]>([]);
  const [audit, setAudit] = useState<AuditEntry[]>([]);
  const [devices, setDevices] = useState<DeviceInfo[]>([]);
  const [overview, setOverview] = useState<ConsoleOverview | undefined>();
  const [taskId, setTaskId] = useState("");
  const [deviceId, setDeviceId] = useState("");
  const [decision, setDecision] = useState("");
  const [forgetting, setForgetting] = useState<PermissionRule | undefined>();
  const [error, setError] = useState("");
  const load = async () => {
    try {
      const c = store.client!;
      const [r, a, d, o] = await Promise.all([
        c.permissionRules(),
        c.permissionAudit({
          limit: 100,
          ...(taskId.trim() ? { taskId: taskId.trim() } : {}),
          ...(deviceId ? { deviceId } : {}),
          ...(decision ? { decision: decision as AuditEntry["decision"] & string } : {}),
        }),
        c.devicesList(),
        c.consoleOverview(),
      ]);
      setRules(r.rules);
      setAudit(a.entries);
      setDevices(d.devices);
      setOverview(o);
      setError("");
    } catch (e) {
      setError(describe(e));
    }
  };
  usePoll(load, 5000, [taskId, deviceId, decision]);
  const forget = async (r: PermissionRule) => {
    setForgetting(undefined);
    try {
      await store.client!.permissionForget({ ruleId: r.ruleId });
      await load();
    } catch (e) {
      setError(describe(e));
    }
  };
  return (
    <section class="screen" aria-labelledby="perm-title">
      <h2 id="perm-title">Permissions</h2>
      {error && (
        <p class="error" role="alert">
          {error}
        </p>
      )}
      <h3>Remembered “always” answers</h3>
      {rules.length === 0 ? (
        <p class="hint" id="no-rules">
          None: every sensitive action asks.
        </p>
      ) : (
        <ul class="rules" id="rule-list">
          {rules.map((r) => (
            <li key={r.ruleId} data-rule-id={r.ruleId}>
              <p>
                <strong>{r.description}</strong>
              </p>
              <p class="hint">
                {r.kind}
                {r.program ? ` · program ${r.program}` : ""}
                {r.directory ? ` · in ${r.directory} and below` : ""}
                {r.pattern ? ` · ${r.pattern}` : ""} · {r.runtime} · made by {who(r.createdBy, devices)} on {when(r.createdAt)}
              </p>
              <button type="button" class="danger forget" onClick={() => setForgetting(r)} aria-label={`Forget: ${r.description}`}>
                Forget
              </button>
            </li>
          ))}
        </ul>
      )}
      {forgetting && (
        <div class="confirm" role="alertdialog" aria-labelledby="forget-rule-text">
          <p id="forget-rule-text">Forget “{forgetting.description}”? The next such action asks again.</p>
          <button type="button" class="danger" id="forget-yes" onClick={() => void forget(forgetting)}>
            Forget
          </button>
          <button type="button" onClick={() => setForgetting(undefined)}>
            Keep it
          </button>
        </div>
      )}
      <h3>Audit trail</h3>
      <form class="filters" onSubmit={(e) => e.preventDefault()}>
        <div>
          <label for="audit-task">Task id</label>
          <input id="audit-task" value={taskId} onInput={(e) => setTaskId(e.currentTarget.value)} placeholder="t_…" />
        </div>
        <div>
          <label for="audit-device">Device</label>
          <select id="audit-device" value={deviceId} onChange={(e) => setDeviceId(e.currentTarget.value)}>
            <option value="">every device</option>
            <option value="local">the owner (on the host)</option>
            {devices.map((d) => (
              <option key={d.deviceId} value={d.deviceId}>
                {d.name}
              </option>
            ))}
          </select>
        </div>
        <div>
          <label for="audit-decision">Decision</label>
          <select id="audit-decision" value={decision} onChange={(e) => setDecision(e.currentTarget.value)}>
            <option value="">any</option>
            <option value="once">once</option>
            <option value="always">always</option>
            <option value="reject">reject</option>
          </select>
        </div>
      </form>
      <div class="table-wrap">
        <table id="audit-table">
          <thead>
            <tr>
              <th scope="col">when</th>
              <th scope="col">task</th>
              <th scope="col">event</th>
              <th scope="col">what</th>
              <th scope="col">started by</th>
              <th scope="col">answered by</th>
              <th scope="col">rules</th>
            </tr>
          </thead>
          <tbody>
            {audit.map((a) => (
              <tr key={a.entryId}>
                <td>{when(a.at)}</td>
                <td>
                  <a href={`#task/${a.taskId}`}>{a.taskId}</a>
                </td>
                <td>
                  {a.event}
                  {a.decision ? `: ${a.decision}` : ""}
                </td>
                <td class="wrap">{a.summary}</td>
                <td>{who(a.taskStartedBy, devices)}</td>
                <td>{a.actor ? who(a.actor, devices) : "—"}</td>
                <td class="wrap">{a.rule ?? ""}</td>
              </tr>
            ))}
          </tbody>
        </table>
      </div>
      {audit.length === 0 && <p class="hint">Nothing recorded{taskId || deviceId || decision ? " for this filter" : " yet"}.</p>}
      <h3>The command policy (read-only)</h3>
      {overview && (
        <>
          <p class="hint">
            Checked in this order; deny beats ask beats allow, and what no rule names runs. Change them in <code>{overview.configPath}</code> under{" "}
            <code>[[permissions.rules]]</code> (yours come first; <code>use_default_rules = false</code> drops the defaults), then restart the host.
          </p>
          <div class="table-wrap">
            <table id="policy-table">
              <thead>
                <tr>
                  <th scope="col">rule</th>
                  <th scope="col">action</th>
                  <th scope="col">matches</th>
                  <th scope="col">why</th>
                  <th scope="col">from</th>
                </tr>
              </thead>
              <tbody>
                {overview.policy.map((r, i) => (
                  <tr key={i}>
                    <th scope="row">{r.id ?? `rule-${i + 1}`}</th>
                    <td class={`action-${r.action}`}>{r.action}</td>
                    <td class="mono wrap">{[r.program && `program ${r.program}`, r.args && `args ${r.args}`, r.pattern && `line ${r.pattern}`].filter(Boolean).join(" · ")}</td>
                    <td>{r.explain}</td>
                    <td>{r.source}</td>
                  </tr>
                ))}
              </tbody>
            </table>
          </div>
        </>
      )}
    </section>
  );
}

// ---------------------------------------------------------------- health and metrics

function hourLabel(iso: string): string {
  return new Date(iso).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
}
function dayLabel(ms: number): string {
  return new Date(ms).toLocaleDateString([], { weekday: "short", day: "numeric" });
}

function Health() {
  const [h, setH] = useState<HealthReport | undefined>();
  const [m, setM] = useState<MetricsReport | undefined>();
  const [series, setSeries] = useState<MetricsSeries | undefined>();
  const [error, setError] = useState("");
  usePoll(async () => {
    try {
      const c = store.client!;
      const [a, b, d] = await Promise.all([c.healthGet(), c.metricsGet(), c.metricsSeries({ hours: 168 })]);
      setH(a);
      setM(b);
      setSeries(d);
      setError("");
    } catch (e) {
      setError(describe(e));
    }
  }, 5000);
  const day = series?.buckets.slice(-24) ?? [];
  const labels = day.map((b) => hourLabel(b.start));
  // Seven days, one bar each: the success rate of the tasks that finished that day.
  const days: { start: number; ok: number; judged: number }[] = [];
  for (const b of series?.buckets ?? []) {
    const start = new Date(b.start);
    start.setHours(0, 0, 0, 0);
    let d = days[days.length - 1];
    if (!d || d.start !== start.getTime()) days.push((d = { start: start.getTime(), ok: 0, judged: 0 }));
    d.ok += b.tasks.succeeded;
    d.judged += b.tasks.succeeded + b.tasks.failed + b.tasks.interrupted;
  }
  const week = days.slice(-7);
  return (
    <section class="screen" aria-labelledby="chealth-title">
      <h2 id="chealth-title">Health</h2>
      {error && (
        <p class="error" role="alert">
          {error}
        </p>
      )}
      {h && (
        <>
          <p id="health-status" class={`badge big ${h.status}`}>
            {h.status === "ok" ? "All good" : h.status === "degraded" ? "Works, with less" : "Cannot do its work"}
          </p>
          <dl class="facts">
            <dt>Host</dt>
            <dd>
              {h.hostName} (version {h.version})
            </dd>
            <dt>Up for</dt>
            <dd>
              {uptime(h.uptimeS)} (since {when(h.startedAt)}){m ? `; ${uptime(m.totalUptimeS)} in all` : ""}
            </dd>
            <dt>Listeners</dt>
            <dd>{h.listeners?.map((l) => `${l.transport} ${l.address}`).join(", ") || "none"}</dd>
            <dt>Discovery</dt>
            <dd>
              {h.discovery?.state ?? "unknown"}
              {h.discovery?.instance ? ` as “${h.discovery.instance}”` : ""}
            </dd>
            <dt>Runtimes</dt>
            <dd>{h.runtimes?.map((r) => `${r.name}: ${r.state}${r.version ? ` ${r.version}` : ""}`).join(", ")}</dd>
            <dt>Connections</dt>
            <dd>{h.connections ?? 0} open now</dd>
            <dt>Last task</dt>
            <dd>
              {h.lastTask ? (
                <a href={`#task/${h.lastTask.taskId}`}>
                  {taskTitle(h.lastTask)}: {h.lastTask.status}
                  {h.lastTask.exitCode !== undefined ? ` (exit ${h.lastTask.exitCode})` : ""}
                </a>
              ) : (
                "none yet"
              )}
            </dd>
            <dt>Success, 24 h</dt>
            <dd id="rate-24h">{pct(m?.last24h.successRate)}</dd>
            <dt>Success, 7 days</dt>
            <dd id="rate-7d">{pct(m?.last7d.successRate)}</dd>
          </dl>
          <h3>Checks</h3>
          <ul class="checks all" id="check-list">
            {h.checks?.map((c) => (
              <li key={c.name} class={c.ok ? "pass" : c.severity} data-check={c.name} data-ok={c.ok ? "true" : "false"}>
                <strong>
                  {c.ok ? "✓" : "✗"} {c.name}
                </strong>
                : {c.message}
                {!c.ok && c.action && <p class="action">What to do: {c.action}</p>}
              </li>
            ))}
          </ul>
        </>
      )}
      {series && (
        <>
          <h3>Metrics</h3>
          {!series.telemetry && <p class="hint">Connection counters are off ([metrics] telemetry = false); tasks are still shown.</p>}
          <div class="plots">
            <Plot
              id="plot-tasks"
              kind="bars"
              title="Tasks per hour by outcome, last 24 hours"
              desc={`Finished tasks each hour: ${day.reduce((a, b) => a + b.tasks.succeeded, 0)} succeeded, ${day.reduce((a, b) => a + b.tasks.failed, 0)} failed, ${day.reduce((a, b) => a + b.tasks.cancelled, 0)} cancelled, ${day.reduce((a, b) => a + b.tasks.interrupted, 0)} interrupted in all.`}
              labels={labels}
              unit="hour"
              series={[
                { name: "succeeded", cls: "s-ok", values: day.map((b) => b.tasks.succeeded) },
                { name: "failed", cls: "s-bad", values: day.map((b) => b.tasks.failed) },
                { name: "cancelled", cls: "s-muted", values: day.map((b) => b.tasks.cancelled) },
                { name: "interrupted", cls: "s-warn", values: day.map((b) => b.tasks.interrupted) },
              ]}
            />
            <Plot
              id="plot-success"
              kind="bars"
              title="Success rate by day, last 7 days"
              desc={`Succeeded out of succeeded, failed and interrupted, per day (cancelled tasks left out). 24 hours: ${pct(m?.last24h.successRate)}; 7 days: ${pct(m?.last7d.successRate)}.`}
              labels={week.map((d) => dayLabel(d.start))}
              unit="day"
              max={1}
              format={(v) => `${Math.round(v * 100)} %`}
              series={[{ name: "success rate", cls: "s-ok", values: week.map((d) => (d.judged ? d.ok / d.judged : 0)) }]}
            />
            <Plot
              id="plot-connections"
              kind="lines"
              title="Connections and connection failures per hour, last 24 hours"
              desc={`Connections accepted: ${day.reduce((a, b) => a + b.connections, 0)}; failed TLS handshakes: ${day.reduce((a, b) => a + b.handshakeFailures, 0)}; refused at the limit: ${day.reduce((a, b) => a + b.refused, 0)}.`}
              labels={labels}
              unit="hour"
              series={[
                { name: "connections", cls: "s-accent", values: day.map((b) => b.connections) },
                { name: "failed handshakes", cls: "s-bad", values: day.map((b) => b.handshakeFailures) },
                { name: "refused", cls: "s-warn", values: day.map((b) => b.refused) },
              ]}
            />
            <Plot
              id="plot-auth"
              kind="bars"
              title="Authentication failures per hour, last 24 hours"
              desc={`Credentials presented that did not work: ${day.reduce((a, b) => a + b.authFailures, 0)} in 24 hours, ${m?.connections.authFailures ?? 0} in all.`}
              labels={labels}
              unit="hour"
              series={[{ name: "authentication failures", cls: "s-bad", values: day.map((b) => b.authFailures) }]}
            />
          </div>
        </>
      )}
    </section>
  );
}

// ---------------------------------------------------------------- tasks

const STATUSES: TaskStatus[] = ["running", "waiting_permission", "queued", "succeeded", "failed", "cancelled", "interrupted"];

function Tasks() {
  const [tasks, setTasks] = useState<TaskRecord[]>([]);
  const [devices, setDevices] = useState<DeviceInfo[]>([]);
  const [status, setStatus] = useState<TaskStatus | "">("");
  const [by, setBy] = useState("");
  const [error, setError] = useState("");
  usePoll(
    async () => {
      try {
        const c = store.client!;
        const [t, d] = await Promise.all([c.taskList({ limit: 100, ...(status ? { status } : {}) }), c.devicesList()]);
        setTasks(t.tasks);
        setDevices(d.devices);
        setError("");
      } catch (e) {
        setError(describe(e));
      }
    },
    3000,
    [status],
  );
  const shown = tasks.filter((t) => !by || t.createdBy === by);
  return (
    <section class="screen" aria-labelledby="ctasks-title">
      <h2 id="ctasks-title">Tasks of every device</h2>
      {error && <p class="error">{error}</p>}
      <form class="filters" onSubmit={(e) => e.preventDefault()}>
        <div>
          <label for="task-status">Status</label>
          <select id="task-status" value={status} onChange={(e) => setStatus(e.currentTarget.value as TaskStatus | "")}>
            <option value="">any</option>
            {STATUSES.map((st) => (
              <option key={st} value={st}>
                {st.replace("_", " ")}
              </option>
            ))}
          </select>
        </div>
        <div>
          <label for="task-by">Started by</label>
          <select id="task-by" value={by} onChange={(e) => setBy(e.currentTarget.value)}>
            <option value="">anyone</option>
            <option value="local">the owner (on the host)</option>
            {devices.map((d) => (
              <option key={d.deviceId} value={`device:${d.deviceId}`}>
                {d.name}
              </option>
            ))}
          </select>
        </div>
      </form>
      <div class="table-wrap">
        <table id="console-tasks">
          <thead>
            <tr>
              <th scope="col">task</th>
              <th scope="col">status</th>
              <th scope="col">started by</th>
              <th scope="col">created</th>
              <th scope="col">finished</th>
            </tr>
          </thead>
          <tbody>
            {shown.map((t) => (
              <tr key={t.taskId} data-task-id={t.taskId}>
                <th scope="row" class="mono wrap">
                  <a href={`#task/${t.taskId}`}>{taskTitle(t)}</a>
                </th>
                <td>
                  <span class={`badge ${t.status}`}>{t.status.replace("_", " ")}</span>
                  {t.exitCode !== undefined ? ` (exit ${t.exitCode})` : ""}
                </td>
                <td class="started-by">{who(t.createdBy, devices)}</td>
                <td>{when(t.createdAt)}</td>
                <td>{t.finishedAt ? when(t.finishedAt) : "—"}</td>
              </tr>
            ))}
          </tbody>
        </table>
      </div>
      {shown.length === 0 && !error && <p class="hint">No tasks{status || by ? " for this filter" : " yet"}.</p>}
    </section>
  );
}

// ---------------------------------------------------------------- shell

export function ConsoleScreen({ hash }: { hash: string }) {
  if (hash === "#pair-device") return <PairDevice />;
  if (hash === "#devices") return <Devices />;
  if (hash === "#permissions") return <Permissions />;
  if (hash === "#health") return <Health />;
  if (hash === "#tasks") return <Tasks />;
  return <Setup />;
}

const NAV: [string, string][] = [
  ["#setup", "Set-up"],
  ["#pair-device", "Pair a device"],
  ["#devices", "Devices"],
  ["#permissions", "Permissions"],
  ["#health", "Health"],
  ["#tasks", "Tasks"],
  ["#new", "New task"],
  ["#host", "This browser"],
];

export function ConsoleNav({ hash }: { hash: string }) {
  const current = hash === "" || hash === "#" ? "#setup" : hash.startsWith("#task/") ? "#tasks" : hash;
  return (
    <nav class="console-nav" aria-label="Console">
      {NAV.map(([h, label]) => (
        <a key={h} href={h} aria-current={current === h ? "page" : undefined}>
          {label}
        </a>
      ))}
    </nav>
  );
}
