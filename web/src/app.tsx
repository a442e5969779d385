// The web app the host serves: pairing from the QR link, then tasks (list,
// new, live log), permission prompts wherever the user is, health and the
// host. Preact for the components; the only way it talks to the host is the
// TypeScript client's browser build. Routes are `#` fragments (the host has
// no SPA fallback). No inline script or style: the CSP forbids them.
import { render } from "preact";
import { useEffect, useLayoutEffect, useRef, useState } from "preact/hooks";
import {
  FINAL_STATUSES,
  parsePairFragment,
  parseConsoleFragment,
  RpcConnection,
  dialPageHost,
  type BrowserClient,
  type HealthReport,
  type LogChunk,
  type MetricsReport,
  type PairLink,
  type PermissionRequest,
  type Scope,
  type TaskRecord,
  type TaskStatus,
  type TaskUpdate,
} from "../../clients/typescript/src/browser.js";
import { useFollowEnd } from "./follow.js";
import { LogBuffer, type Line } from "./log.js";
import { ConsoleEnrol, ConsoleNav, ConsoleScreen, isConsoleRoute, isOwner } from "./console/index.js";
import { Conversation, ConversationView } from "./conversation.js";
import { WorkDir } from "./workdir.js";
import {
  changed,
  connect,
  describe,
  dialEarly,
  forget,
  hostLabel,
  init,
  remember,
  renameHost,
  savedCommands,
  store,
  toast,
  togglePin,
  useStore,
  whenConnected,
  type Saved,
} from "./store.js";

/** The host's own words for each scope (src/auth.rs `Scope::description`). */
const SCOPES: Record<Scope, string> = {
  "tasks.run": "start and stop tasks (run commands) on this host",
  "tasks.read": "see tasks, their output, the health panel and metrics",
  "permissions.reply": "approve or reject sensitive actions that tasks ask permission for",
  opencode: "use the OpenCode agent on this host: send it prompts, follow its sessions, and read through its API (files in the workspace included)",
  admin: "manage paired devices and remembered permission rules",
};
const WEB_SCOPES: Scope[] = ["tasks.run", "tasks.read", "permissions.reply", "opencode"];

function useHash(): string {
  const [hash, setHash] = useState(location.hash);
  useEffect(() => {
    const on = () => setHash(location.hash);
    window.addEventListener("hashchange", on);
    return () => window.removeEventListener("hashchange", on);
  }, []);
  return hash;
}

const go = (hash: string) => {
  location.hash = hash;
};

function StatusBar() {
  const s = useStore();
  const text =
    s.conn === "open"
      ? `Connected to ${s.client?.server.hostName ?? hostLabel()}`
      : s.conn === "reconnecting"
        ? `Reconnecting… ${s.connDetail}`
        : s.conn === "offline"
          ? `Offline: ${s.connDetail || "no network"}`
          : s.conn === "refused"
            ? s.connDetail
            : s.conn === "connecting"
              ? "Connecting…"
              : s.conn === "unpaired"
                ? "Not paired"
                : s.conn === "pairing"
                  ? "Pairing"
                  : s.conn === "closed"
                    ? "Disconnected"
                    : "Starting…";
  return (
    <p id="status" data-state={s.conn} role="status" aria-live="polite">
      {text}
    </p>
  );
}

// ---------------------------------------------------------------- Pair

function defaultDeviceName(): string {
  const ua = navigator.userAgent;
  const browser = /Firefox\//.test(ua) ? "Firefox" : /Edg\//.test(ua) ? "Edge" : /Chrom(e|ium)\//.test(ua) ? "Chromium" : /Safari\//.test(ua) ? "Safari" : "Browser";
  const device = /Android/.test(ua) ? "Android phone" : /iPhone/.test(ua) ? "iPhone" : /iPad/.test(ua) ? "iPad" : navigator.platform || "this device";
  return `${browser} on ${device}`;
}

/** What to do about a pairing failure, from the host's message. */
function pairAdvice(message: string, wrongCodes: number): string {
  if (/wrong code was entered|code is wrong/.test(message))
    return `The code is wrong. Check it against the host's screen and try again: the host closes the window after 5 wrong codes (about ${Math.max(0, 5 - wrongCodes)} tries left).`;
  if (/closed after \d+ wrong codes/.test(message)) return "Too many wrong codes: the window is closed. Ask the host's owner to run `openwork-host pair` again and open the new QR code.";
  if (/no pairing window/.test(message)) return "No pairing window is open (it closed or expired). Ask the host's owner to run `openwork-host pair` and open the new QR code.";
  if (/another device is pairing/.test(message)) return "Another device is pairing right now. Wait a minute and try again.";
  if (/declined/.test(message)) return "The host's owner declined this browser. Ask them why, or pair with another code.";
  if (/in time|expired/.test(message)) return "No one approved in time. Ask the host's owner to approve it (`openwork-host devices approve`) and try again with a new code.";
  if (/closed before the device was approved/.test(message)) return "The pairing window closed before approval. Ask the host's owner for a new code.";
  if (/link is for host|fingerprint|certificate/.test(message)) return "This is not the host the QR code was for. Do not pair: check the address you opened.";
  return "Check that this device can reach the host and try again.";
}

/** The pairing bundle's URL (build.mjs defines it). */
declare const __PAIR_URL__: string;
let pairing: Promise<typeof import("./pair.js")> | undefined;
/** Loads the pairing code (once; the Pair screen starts it when it shows). */
function loadPairing(): Promise<typeof import("./pair.js")> {
  pairing ??= import(__PAIR_URL__) as Promise<typeof import("./pair.js")>;
  pairing.catch(() => (pairing = undefined));
  return pairing;
}

function Pair({ link }: { link?: PairLink }) {
  const s = useStore();
  const [code, setCode] = useState(link?.code ?? "");
  const [name, setName] = useState(defaultDeviceName());
  const [phase, setPhase] = useState<"" | "working" | "waiting" | "done" | "failed">("");
  const [failure, setFailure] = useState("");
  const [wrong, setWrong] = useState(0);
  const [host, setHost] = useState<{ name: string; fingerprint: string } | undefined>();
  useEffect(() => {
    void loadPairing().catch(() => undefined);
    // Before pairing, the host's name (health.get is open before initialize).
    let rpc: RpcConnection | undefined;
    dialPageHost()
      .then(async (t) => {
        rpc = new RpcConnection(t, { notification: () => undefined, response: () => undefined, closed: () => undefined });
        const h = (await rpc.request("health.get", {}, 8000)) as HealthReport;
        setHost({ name: h.hostName, fingerprint: h.fingerprint });
      })
      .catch(() => undefined)
      .finally(() => rpc?.close());
  }, []);
  const fingerprint = link?.fingerprint ?? host?.fingerprint ?? "";
  const onSubmit = async (e: Event) => {
    e.preventDefault();
    setFailure("");
    setPhase("working");
    store.conn = "pairing";
    changed();
    try {
      const { pairBrowser } = await loadPairing();
      const credential = await pairBrowser({
        code: code.trim(),
        deviceName: name.trim(),
        ...(link?.fingerprint ? { fingerprint: link.fingerprint } : {}),
        ...(link?.hostId ? { hostId: link.hostId } : {}),
        onAwaitingApproval: () => setPhase("waiting"),
      });
      setPhase("done");
      // The code leaves the address bar and the history.
      history.replaceState(null, "", `${location.pathname}#tasks`);
      window.dispatchEvent(new HashChangeEvent("hashchange"));
      store.credential = credential;
      store.error = "";
      changed();
      await connect();
    } catch (err) {
      const message = describe(err);
      const w = /wrong code|code is wrong/.test(message) ? wrong + 1 : wrong;
      setWrong(w);
      setPhase("failed");
      setFailure(`Pairing failed: ${message}. ${pairAdvice(message, w)}`);
      store.conn = "unpaired";
      changed();
    }
  };
  const busy = phase === "working" || phase === "waiting";
  return (
    <section id="pair" class="screen" aria-labelledby="pair-title">
      <h2 id="pair-title">Pair this browser</h2>
      {s.error && s.conn === "refused" && (
        <p id="error" role="alert" class="error">
          {s.error}
        </p>
      )}
      <dl class="facts">
        <dt>Host</dt>
        <dd>{host?.name ?? location.host}</dd>
        <dt>Fingerprint</dt>
        <dd class="mono wrap">{fingerprint || "unknown (open the QR code's link to check it)"}</dd>
      </dl>
      <p class="hint">
        Your browser may warn about the host's certificate: the host made it itself. Continue only if the address is the one the QR code opened; the
        pairing checks the fingerprint above.
      </p>
      <form id="pair-form" autocomplete="off" onSubmit={(e) => void onSubmit(e)}>
        <label for="code">Pairing code</label>
        <input id="code" name="code" inputMode="numeric" required value={code} onInput={(e) => setCode(e.currentTarget.value)} disabled={busy} />
        <label for="device-name">Device name (the owner sees it)</label>
        <input id="device-name" name="device-name" maxLength={64} required value={name} onInput={(e) => setName(e.currentTarget.value)} disabled={busy} />
        <h3>This browser will be able to</h3>
        <ul class="scopes" id="scopes-granted">
          {WEB_SCOPES.map((sc) => (
            <li key={sc}>
              {SCOPES[sc]}
            </li>
          ))}
        </ul>
        <h3>It will not be able to</h3>
        <ul class="scopes denied">
          <li>{SCOPES.admin} (admin)</li>
          <li>pair or approve other devices, or change the host's settings (the owner's, on the host itself)</li>
        </ul>
        <button id="pair-button" type="submit" class="primary" disabled={busy}>
          Pair
        </button>
      </form>
      <p id="pair-status" data-state={phase} role="status" aria-live="polite" class={phase === "waiting" ? "waiting" : ""}>
        {phase === "working"
          ? "Pairing…"
          : phase === "waiting"
            ? "Waiting for approval: the host's owner must approve this browser (openwork-host devices approve, or the pair prompt)…"
            : phase === "done"
              ? "Paired."
              : ""}
      </p>
      {failure && (
        <p id="error" role="alert" class="error">
          {failure}
        </p>
      )}
    </section>
  );
}

// ---------------------------------------------------------------- Tasks

const STATUSES: TaskStatus[] = ["running", "waiting_permission", "queued", "succeeded", "failed", "cancelled", "interrupted"];

function since(iso: string): string {
  const d = new Date(iso);
  return d.toLocaleString([], { month: "short", day: "numeric", hour: "2-digit", minute: "2-digit", second: "2-digit" });
}
function duration(t: TaskRecord): string {
  const start = t.startedAt ?? t.createdAt;
  const end = t.finishedAt ? Date.parse(t.finishedAt) : Date.now();
  const s = Math.max(0, Math.round((end - Date.parse(start)) / 1000));
  return s < 60 ? `${s} s` : s < 3600 ? `${Math.floor(s / 60)} min ${s % 60} s` : `${Math.floor(s / 3600)} h ${Math.floor((s % 3600) / 60)} min`;
}
function taskTitle(t: TaskRecord): string {
  return t.title ?? t.command ?? t.argv?.join(" ") ?? t.prompt ?? t.taskId;
}

function Tasks() {
  const s = useStore();
  const [tasks, setTasks] = useState<TaskRecord[]>([]);
  const [filter, setFilter] = useState<TaskStatus | "">("");
  const [more, setMore] = useState(false);
  const [error, setError] = useState("");
  const load = async (before?: string) => {
    const client = store.client;
    if (!client) return;
    try {
      const r = await client.taskList({ limit: 30, ...(filter ? { status: filter } : {}), ...(before ? { before } : {}) });
      setTasks((old) => (before ? [...old, ...r.tasks] : r.tasks));
      if (!before && !performance.getEntriesByName("openwork:list").length) performance.mark("openwork:list");
      setMore(r.tasks.length === 30);
      setError("");
    } catch (e) {
      setError(describe(e));
    }
  };
  useEffect(() => {
    void load();
  }, [filter, s.epoch]);
  useEffect(() => {
    const client = s.client;
    if (!client) return;
    const off = client.on("task.updated", (u: TaskUpdate) => {
      setTasks((old) => {
        if (!old.some((t) => t.taskId === u.taskId)) {
          void load();
          return old;
        }
        return old.map((t) => (t.taskId === u.taskId ? { ...t, status: u.status, ...(u.exitCode !== undefined ? { exitCode: u.exitCode } : {}) } : t));
      });
    });
    // Tasks started elsewhere: refresh now and then while the list is shown.
    const timer = setInterval(() => void load(), 5000);
    return () => {
      off();
      clearInterval(timer);
    };
  }, [s.client, filter]);
  return (
    <section class="screen" aria-labelledby="tasks-title">
      <h2 id="tasks-title">Tasks</h2>
      <label for="filter" class="inline">
        Show
      </label>
      <select id="filter" value={filter} onChange={(e) => setFilter(e.currentTarget.value as TaskStatus | "")}>
        <option value="">all tasks</option>
        {STATUSES.map((st) => (
          <option key={st} value={st}>
            {st.replace("_", " ")}
          </option>
        ))}
      </select>
      {error && <p class="error">{error}</p>}
      <ul id="task-list" class="tasks">
        {tasks.map((t) => (
          <li key={t.taskId}>
            <a href={`#task/${t.taskId}`} class="task" data-status={t.status}>
              <span class="title mono">{taskTitle(t)}</span>
              <span class="meta">
                <span class={`badge ${t.status}`}>{t.status.replace("_", " ")}</span>
                {t.exitCode !== undefined && <span>exit {t.exitCode}</span>}
                <span>{since(t.createdAt)}</span>
                <span>{duration(t)}</span>
              </span>
            </a>
          </li>
        ))}
      </ul>
      {!tasks.length && !error && <p class="hint">No tasks yet. Start one from “New”.</p>}
      {more && (
        <button type="button" onClick={() => void load(tasks[tasks.length - 1]?.taskId)}>
          Older tasks
        </button>
      )}
    </section>
  );
}

// ---------------------------------------------------------------- New task

function newKey(): string {
  return crypto.randomUUID();
}

function NewTask() {
  const s = useStore();
  const hasOpencode = !!s.client?.server.capabilities.runtimes.includes("opencode");
  const [runtime, setRuntime] = useState("builtin");
  const [command, setCommand] = useState("");
  const [cwd, setCwd] = useState("");
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState("");
  const [saved, setSaved] = useState<Saved[]>(savedCommands());
  // One key per intended task: a double tap or a retry after a drop sends the same key.
  const key = useRef(newKey());
  const cwds = [...new Set(saved.map((x) => x.cwd).filter(Boolean))];
  // Run is not disabled while the connection is down: a tap then waits for
  // it (a phone between networks), so that no tap is lost to the instant
  // the connection dropped.
  const onSubmit = async (e: Event) => {
    e.preventDefault();
    if (busy) return;
    setBusy(true);
    setError("");
    const text = command.trim();
    const params = {
      ...(runtime === "opencode" ? { runtime: "opencode", prompt: text } : { command: text }),
      ...(cwd.trim() ? { cwd: cwd.trim() } : {}),
      idempotencyKey: key.current,
    };
    try {
      let result;
      for (let tries = 0; ; tries++) {
        const client = await whenConnected(60000);
        if (!client) throw new Error(`not connected to the host within a minute (${store.connDetail || store.conn}); nothing was sent`);
        try {
          result = await client.taskRun(params);
          break;
        } catch (err) {
          // A drop: the same key again cannot start a second task.
          if (tries < 3 && /closed|lost|dropped/i.test(describe(err))) {
            await new Promise((r) => setTimeout(r, 1000));
            continue;
          }
          throw err;
        }
      }
      remember({ command: text, cwd: cwd.trim(), runtime });
      key.current = newKey();
      go(`#task/${result.taskId}`);
    } catch (err) {
      setError(`Cannot start it: ${describe(err)}`);
    } finally {
      setBusy(false);
    }
  };
  const use = (x: Saved) => {
    setCommand(x.command);
    setCwd(x.cwd);
    setRuntime(x.runtime);
    key.current = newKey();
  };
  return (
    <section id="session" class="screen" aria-labelledby="new-title">
      <h2 id="new-title">New task</h2>
      <form id="run-form" autocomplete="off" onSubmit={(e) => void onSubmit(e)}>
        {hasOpencode && (
          <fieldset class="segmented">
            <legend>Run</legend>
            <label>
              <input type="radio" name="runtime" value="builtin" checked={runtime === "builtin"} onChange={() => setRuntime("builtin")} /> a command
            </label>
            <label>
              <input type="radio" name="runtime" value="opencode" checked={runtime === "opencode"} onChange={() => setRuntime("opencode")} /> an OpenCode prompt
            </label>
          </fieldset>
        )}
        <label for="command">{runtime === "opencode" ? "Prompt" : "Command"}</label>
        {runtime === "opencode" ? (
          <textarea id="command" name="command" required rows={4} value={command} onInput={(e) => setCommand(e.currentTarget.value)} />
        ) : (
          <input id="command" name="command" spellcheck={false} autoCapitalize="off" required value={command} onInput={(e) => setCommand(e.currentTarget.value)} />
        )}
        <WorkDir roots={s.client?.server.capabilities.workspaceRoots} value={cwd} onChange={setCwd} recent={cwds} />
        <button id="run-button" type="submit" class="primary" disabled={busy || s.conn === "refused"}>
          {!busy ? "Run" : s.conn === "open" ? "Starting…" : "Starting… (waiting for the connection)"}
        </button>
      </form>
      {error && (
        <p id="error" role="alert" class="error">
          {error}
        </p>
      )}
      {saved.length > 0 && (
        <>
          <h3>Pinned and recent</h3>
          <ul class="saved">
            {saved.map((x) => (
              <li key={`${x.runtime}:${x.cwd}:${x.command}`}>
                <button type="button" class="use mono" onClick={() => use(x)}>
                  {x.command}
                  {x.cwd && <span class="meta"> in {x.cwd}</span>}
                </button>
                <button
                  type="button"
                  class="pin"
                  aria-pressed={!!x.pinned}
                  aria-label={x.pinned ? `Unpin ${x.command}` : `Pin ${x.command}`}
                  onClick={() => {
                    togglePin(x);
                    setSaved(savedCommands());
                  }}
                >
                  {x.pinned ? "★" : "☆"}
                </button>
              </li>
            ))}
          </ul>
        </>
      )}
    </section>
  );
}

// ---------------------------------------------------------------- Task view

function LogRow({ line, log }: { line: Line; log: LogBuffer }) {
  return (
    <div class="row">
      {log.segments(line).map((seg, i) => (seg.cls ? <span key={i} class={seg.cls}>{seg.text}</span> : seg.text))}
      {line.done ? "\n" : ""}
    </div>
  );
}

function TaskView({ taskId }: { taskId: string }) {
  const s = useStore();
  const [task, setTask] = useState<TaskRecord | undefined>();
  const [error, setError] = useState("");
  const [confirming, setConfirming] = useState(false);
  const buffer = useRef(new LogBuffer());
  // OpenCode tasks: their `event` chunks as a conversation.
  const convo = useRef(new Conversation());
  const [frame, setFrame] = useState(0);
  const box = useRef<HTMLDivElement>(null);
  const metrics = useRef({ rowH: 18, charW: 8 });
  const pending = useRef(0);
  const [scrollTop, setScrollTop] = useState(0);
  const { follow, setFollow, onScroll } = useFollowEnd(box, metrics.current.rowH * 2, undefined, setScrollTop);

  // The view's subscription: whether a `task.subscribe` is on its way, how
  // many were sent, and where the host's answer said the log starts.
  const sub = useRef({ asking: false, asked: 0, floor: 0 });

  useEffect(() => {
    buffer.current = new LogBuffer();
    convo.current = new Conversation();
    sub.current = { asking: false, asked: 0, floor: 0 };
    setTask(undefined);
    setFollow(true);
  }, [taskId]);

  // The seq of the next chunk to show: chunks are numbered from 1 with no
  // gap, across streams (docs/protocol.md).
  const nextSeq = () => Math.max(buffer.current.lastSeq + 1, convo.current.lastSeq + 1, sub.current.floor);
  // Follows the task from the next chunk to show; the host replays from
  // there. Chunks that come meanwhile past a gap are left to that replay.
  const subscribe = (client: BrowserClient) => {
    const mine = sub.current;
    mine.asking = true;
    mine.asked++;
    return client
      .taskSubscribe({ taskId, fromSeq: nextSeq() })
      .then((r) => {
        if (sub.current === mine) mine.floor = Math.max(mine.floor, r.fromSeq);
      })
      .finally(() => (mine.asking = false));
  };
  // Chunks went by unseen: asked for again, one request at a time and a
  // bounded number of times per view.
  const catchUp = (client: BrowserClient) => {
    if (!sub.current.asking && sub.current.asked < 100) void subscribe(client).catch(() => undefined);
  };
  // The task's record. A finished task's log that still stops short of the
  // record's a moment later (a replay in flight is given that moment) missed
  // its last chunks: caught up.
  const shown = (record: TaskRecord) => {
    setTask(record);
    const mine = sub.current;
    if (!FINAL_STATUSES.has(record.status) || record.taskId !== taskId) return;
    setTimeout(() => {
      const client = store.client;
      // Still this task's view (`sub` is renewed with the task).
      if (client && sub.current === mine && record.lastSeq >= nextSeq()) catchUp(client);
    }, 1500);
  };

  useEffect(() => {
    const client = s.client;
    if (!client) return;
    const draw = () => {
      if (!pending.current) pending.current = requestAnimationFrame(() => {
        pending.current = 0;
        setFrame((f) => f + 1);
      });
    };
    const offChunk = client.on("log.chunk", (c: LogChunk) => {
      if (c.taskId !== taskId) return;
      // A chunk past the next one: those between went by unseen (delivered
      // while this view's subscription failed with a drop, the client then
      // resuming from where it was). Asked again from the first one missing;
      // the replay follows in order.
      const next = nextSeq();
      if (c.seq > next) {
        catchUp(client);
        return;
      }
      // Seen already (a replay repeats what was shown).
      if (c.seq < next) return;
      if (c.stream === "event" ? convo.current.add(c.seq, c.data) : buffer.current.append(c.seq, c.data, c.stream)) draw();
    });
    const offUpdate = client.on("task.updated", (u: TaskUpdate) => {
      if (u.taskId !== taskId) return;
      setTask((t) => (t ? { ...t, status: u.status, ...(u.exitCode !== undefined ? { exitCode: u.exitCode } : {}), ...(u.error ? { error: u.error } : {}) } : t));
      if (FINAL_STATUSES.has(u.status)) void client.taskGet({ taskId }).then(shown, () => undefined);
    });
    // From the line after the last one shown. A reconnect of the same client
    // needs nothing here: the client resumes what it follows from the last
    // seq it delivered (and a chunk past a gap asks again, above).
    void subscribe(client)
      .then(() => client.taskGet({ taskId }))
      .then(shown, (e) => setError(describe(e)));
    return () => {
      offChunk();
      offUpdate();
      if (client === store.client) void client.taskUnsubscribe({ taskId }).catch(() => undefined);
    };
  }, [taskId, s.client]);

  // After a reconnect: the task's state now (it may have ended meanwhile).
  useEffect(() => {
    const client = s.client;
    if (client && s.conn === "open") void client.taskGet({ taskId }).then(shown, () => undefined);
  }, [s.epoch]);

  // Measure a character and a row in the log's font; recount rows on resize.
  useLayoutEffect(() => {
    const el = box.current;
    if (!el) return;
    const probe = document.createElement("span");
    probe.className = "probe";
    probe.textContent = "0".repeat(100);
    el.appendChild(probe);
    const rect = probe.getBoundingClientRect();
    metrics.current = { charW: rect.width / 100 || 8, rowH: rect.height || 18 };
    probe.remove();
    const resize = () => {
      buffer.current.setColumns(Math.floor((el.clientWidth - 16) / metrics.current.charW));
      setFrame((f) => f + 1);
    };
    resize();
    const ro = new ResizeObserver(resize);
    ro.observe(el);
    return () => ro.disconnect();
  }, [taskId]);

  const b = buffer.current;
  const { rowH } = metrics.current;
  const total = b.rows;
  const height = box.current?.clientHeight ?? 400;
  const top = follow ? Math.max(0, total * rowH - height) : scrollTop;
  const first = b.lines.length ? b.lineAt(Math.floor(top / rowH)) : { index: 0, start: 0 };
  const visible: Line[] = [];
  let rows = 0;
  for (let i = first.index; i < b.lines.length && rows * rowH < height + rowH * 4; i++) {
    const line = b.lines[i]!;
    visible.push(line);
    rows += Math.max(1, Math.ceil(line.text.length / b.columns));
  }

  const cancel = async () => {
    setConfirming(false);
    try {
      setTask(await s.client!.taskCancel({ taskId }));
    } catch (e) {
      setError(`Cannot cancel it: ${describe(e)}`);
    }
  };
  const isConvo = task?.runtime === "opencode" || convo.current.items.length > 0;
  const copyText = () => (isConvo ? convo.current.text() + b.text() : b.text());
  const share = async () => {
    const text = copyText();
    if (navigator.share) await navigator.share({ title: task ? taskTitle(task) : taskId, text }).catch(() => undefined);
    else await navigator.clipboard?.writeText(text);
  };
  const status = task?.status;
  const end = task?.exitCode !== undefined ? ` (exit ${task.exitCode})` : "";
  return (
    <section class="screen task-view" aria-labelledby="task-title">
      <p>
        <a href="#tasks" class="back">
          ← Tasks
        </a>
      </p>
      <h2 id="task-title" class="mono wrap">
        {task ? taskTitle(task) : taskId}
      </h2>
      <p id="task-status" data-status={status ?? ""} data-task-id={taskId} role="status" aria-live="polite">
        {status ? `Task ${taskId}: ${status}${end}${task?.error ? `: ${task.error}` : ""}` : "Loading…"}
      </p>
      {task && (
        <p class="meta">
          started {since(task.createdAt)} · {duration(task)} · in <span class="mono">{task.cwd}</span>
        </p>
      )}
      {error && (
        <p id="error" role="alert" class="error">
          {error}
        </p>
      )}
      <div class="actions">
        <button type="button" onClick={() => void navigator.clipboard?.writeText(copyText())}>
          Copy
        </button>
        <button type="button" onClick={() => void share()}>
          Share
        </button>
        {status && !FINAL_STATUSES.has(status) && (
          <button type="button" id="cancel" class="danger" onClick={() => setConfirming(true)}>
            Cancel task
          </button>
        )}
      </div>
      {confirming && (
        <div class="confirm" role="alertdialog" aria-labelledby="confirm-text">
          <p id="confirm-text">Stop this task and everything it started?</p>
          <button type="button" class="danger" id="confirm-cancel" onClick={() => void cancel()}>
            Stop it
          </button>
          <button type="button" onClick={() => setConfirming(false)}>
            Keep running
          </button>
        </div>
      )}
      {b.dropped > 0 && <p class="hint">{b.dropped} earlier lines are not kept in this view (memory bound).</p>}
      {isConvo && <ConversationView convo={convo.current} prompt={task?.prompt} frame={frame} />}
      <div class="log" hidden={isConvo && !b.lines.length} ref={box} onScroll={onScroll} tabIndex={0} role="log" aria-label="task output">
        <div class="spacer" ref={(el) => {
            if (el) el.style.height = `${total * rowH}px`;
          }} />
        <div id="output" class="rows" ref={(el) => {
            if (el) el.style.transform = `translateY(${first.start * rowH}px)`;
          }}>
          {visible.map((line, i) => (
            <LogRow key={first.index + i + b.dropped} line={line} log={b} />
          ))}
        </div>
      </div>
      {!follow && (
        <button
          type="button"
          class="jump primary"
          onClick={() => {
            setFollow(true);
          }}
        >
          Jump to latest
        </button>
      )}
    </section>
  );
}

// ---------------------------------------------------------------- Health

function rate(r?: number): string {
  return r === undefined ? "no finished tasks" : `${Math.round(r * 100)} %`;
}
function uptime(s: number): string {
  const d = Math.floor(s / 86400);
  const h = Math.floor((s % 86400) / 3600);
  const m = Math.floor((s % 3600) / 60);
  return d ? `${d} d ${h} h` : h ? `${h} h ${m} min` : `${m} min`;
}

function Health() {
  const s = useStore();
  const [health, setHealth] = useState<HealthReport | undefined>();
  const [metrics, setMetrics] = useState<MetricsReport | undefined>();
  const [error, setError] = useState("");
  useEffect(() => {
    const client = s.client;
    if (!client) return;
    Promise.all([client.healthGet(), client.metricsGet()]).then(
      ([h, m]) => {
        setHealth(h);
        setMetrics(m);
      },
      (e) => setError(describe(e)),
    );
  }, [s.client, s.epoch]);
  const failing = health?.checks?.filter((c) => !c.ok) ?? [];
  return (
    <section class="screen" aria-labelledby="health-title">
      <h2 id="health-title">Health</h2>
      {error && <p class="error">{error}</p>}
      {health && (
        <>
          <p id="health-status" class={`badge big ${health.status}`}>
            {health.status === "ok" ? "All good" : health.status === "degraded" ? "Works, with less" : "Cannot do its work"}
          </p>
          <dl class="facts">
            <dt>Host</dt>
            <dd>
              {health.hostName} (version {health.version})
            </dd>
            <dt>Up for</dt>
            <dd>{uptime(health.uptimeS)}</dd>
            <dt>Last task</dt>
            <dd>
              {health.lastTask ? (
                <a href={`#task/${health.lastTask.taskId}`}>
                  {taskTitle(health.lastTask)}: {health.lastTask.status}
                  {health.lastTask.exitCode !== undefined ? ` (exit ${health.lastTask.exitCode})` : ""}
                </a>
              ) : (
                "none yet"
              )}
            </dd>
            <dt>Success, 24 h</dt>
            <dd>{rate(metrics?.last24h.successRate)}</dd>
            <dt>Success, 7 days</dt>
            <dd>{rate(metrics?.last7d.successRate)}</dd>
          </dl>
          <h3>Checks</h3>
          {failing.length === 0 ? (
            <p>Every check passes.</p>
          ) : (
            <ul class="checks">
              {failing.map((c) => (
                <li key={c.name} class={c.severity}>
                  <strong>{c.name}</strong>: {c.message}
                  {c.action && <p class="action">What to do: {c.action}</p>}
                </li>
              ))}
            </ul>
          )}
        </>
      )}
    </section>
  );
}

// ---------------------------------------------------------------- Host

function Hosts() {
  const s = useStore();
  const [name, setName] = useState(hostLabel());
  const [asking, setAsking] = useState(false);
  const c = s.credential;
  return (
    <section class="screen" aria-labelledby="host-title">
      <h2 id="host-title">Host</h2>
      <dl class="facts">
        <dt>Host</dt>
        <dd id="host-name">{c?.hostName}</dd>
        <dt>Address</dt>
        <dd>{location.host}</dd>
        <dt>Fingerprint</dt>
        <dd class="mono wrap">{c?.fingerprint}</dd>
        <dt>This browser</dt>
        <dd>
          device <code id="device-id">{c?.deviceId}</code>
        </dd>
        <dt>It may</dt>
        <dd>
          <ul class="scopes">
            {(s.client?.server.scopes ?? c?.scopes.map((sc) => ({ scope: sc, description: SCOPES[sc] })) ?? []).map((x) => (
              <li key={x.scope}>{x.description}</li>
            ))}
          </ul>
        </dd>
      </dl>
      <form
        onSubmit={(e) => {
          e.preventDefault();
          renameHost(name);
        }}
      >
        <label for="host-label">Name shown in this browser</label>
        <input id="host-label" value={name} onInput={(e) => setName(e.currentTarget.value)} />
        <button type="submit">Rename</button>
      </form>
      {"Notification" in window && Notification.permission === "default" && (
        <button type="button" onClick={() => void Notification.requestPermission().then(() => changed())}>
          Notify me of permission prompts when this tab is hidden
        </button>
      )}
      <p class="hint">Each host has its own address, so each host you pair is its own app in this browser: open its address to use it.</p>
      {asking ? (
        <div class="confirm" role="alertdialog" aria-labelledby="forget-text">
          <p id="forget-text">Forget this host? The host is told to revoke this browser, and this browser's key is deleted: pairing again needs a new code from its owner.</p>
          <button
            type="button"
            class="danger"
            id="forget-confirm"
            onClick={() =>
              void forget().then((problem) => {
                if (problem) toast(problem);
                go("#pair");
              })
            }
          >
            Forget
          </button>
          <button type="button" onClick={() => setAsking(false)}>
            Keep
          </button>
        </div>
      ) : (
        <button id="forget" type="button" class="danger" onClick={() => setAsking(true)}>
          Forget this host
        </button>
      )}
    </section>
  );
}

// ---------------------------------------------------------------- Prompts

function Prompts() {
  const s = useStore();
  const [sending, setSending] = useState("");
  // The first prompt not put off with "Later"; those put off wait behind a button.
  const p: PermissionRequest | undefined = s.prompts.find((x) => !s.setAside.includes(x.requestId));
  if (!p) {
    const waiting = s.prompts.length;
    if (!waiting) return null;
    return (
      <button
        type="button"
        id="prompts-waiting"
        class="prompts-waiting"
        onClick={() => {
          store.setAside = [];
          changed();
        }}
      >
        {waiting === 1 ? "A permission request is waiting" : `${waiting} permission requests are waiting`}: show
      </button>
    );
  }
  const later = () => {
    store.setAside = [...store.setAside.filter((id) => s.prompts.some((x) => x.requestId === id)), p.requestId];
    changed();
  };
  const reply = async (decision: PermissionRequest["options"][number]) => {
    setSending(decision);
    try {
      await s.client?.permissionReply({ requestId: p.requestId, decision });
      store.prompts = store.prompts.filter((x) => x.requestId !== p.requestId);
      changed();
    } catch (e) {
      store.error = describe(e);
      store.prompts = store.prompts.filter((x) => x.requestId !== p.requestId);
      changed();
    } finally {
      setSending("");
    }
  };
  const label = (d: string) => (d === "once" ? "Allow once" : d === "always" ? "Always allow" : d === "reject" ? "Reject" : d);
  return (
    <div class="overlay">
      <div class="prompt" id="permission-prompt" role="alertdialog" aria-modal="true" aria-labelledby="prompt-summary" data-request-id={p.requestId}>
        <h2 id="prompt-summary">{p.summary}</h2>
        <p class="meta">
          Task <a href={`#task/${p.taskId}`}>{p.taskId}</a> · {p.tool} · answer before {new Date(p.expiresAt).toLocaleTimeString()}
        </p>
        <pre class="detail">{p.detail}</pre>
        {p.always && <p class="hint">“Always” remembers: {p.always}</p>}
        <div class="actions">
          {p.options.map((d) => (
            <button key={d} type="button" class={d === "reject" ? "danger" : d === "once" ? "primary" : ""} data-decision={d} disabled={!!sending} onClick={() => void reply(d)}>
              {label(d)}
            </button>
          ))}
        </div>
        <div class="actions">
          <button type="button" id="prompt-later" onClick={later} aria-describedby="later-hint">
            Later
          </button>
        </div>
        <p class="hint" id="later-hint">Later: the task keeps waiting; answer here or elsewhere before the deadline.</p>
        {s.prompts.length > 1 && <p class="hint">{s.prompts.length - 1} more waiting</p>}
      </div>
    </div>
  );
}

// ---------------------------------------------------------------- Shell

function App() {
  const s = useStore();
  const hash = useHash();
  const link = parsePairFragment(hash);
  const paired = !!s.credential && s.conn !== "refused";
  // The owner's console (a device holding `admin`): its own screens and navigation.
  const consoleLink = parseConsoleFragment(hash);
  const owner = paired && !link && !consoleLink && isOwner();
  let screen;
  if (consoleLink) screen = <ConsoleEnrol link={consoleLink} key={consoleLink.secret} />;
  else if (owner && isConsoleRoute(hash)) screen = <ConsoleScreen hash={hash} />;
  else if (link || !paired) screen = <Pair link={link} key={hash} />;
  else if (hash.startsWith("#task/")) screen = <TaskView taskId={decodeURIComponent(hash.slice(6))} />;
  else if (hash === "#new") screen = <NewTask />;
  else if (hash === "#health") screen = <Health />;
  else if (hash === "#host") screen = <Hosts />;
  else screen = <Tasks />;
  const tab = hash.startsWith("#task") || hash === "" ? "#tasks" : hash;
  return (
    <>
      <header>
        <h1>{paired ? hostLabel() : "openwork"}</h1>
        <StatusBar />
        {!navigator.onLine && <p class="hint">This device is offline: the app shell works, tasks come back with the network.</p>}
      </header>
      <main id="main" class={owner ? "console-main" : undefined}>{screen}</main>
      {s.toasts.map((t) => (
        <p key={t.id} class="toast" role="status">
          {t.text}
        </p>
      ))}
      {owner && <ConsoleNav hash={hash} />}
      {paired && !link && !owner && !consoleLink && (
        <nav aria-label="Sections">
          {[
            ["#tasks", "Tasks"],
            ["#new", "New"],
            ["#health", "Health"],
            ["#host", "Host"],
          ].map(([h, label]) => (
            <a key={h} href={h} aria-current={tab === h ? "page" : undefined}>
              {label}
            </a>
          ))}
        </nav>
      )}
      {paired && <Prompts />}
    </>
  );
}

async function main(): Promise<void> {
  if (!parsePairFragment(location.hash) && !parseConsoleFragment(location.hash)) dialEarly();
  await init();
  const resume = !!store.credential && !parsePairFragment(location.hash) && !parseConsoleFragment(location.hash);
  store.conn = resume ? "connecting" : "unpaired";
  render(<App />, document.getElementById("app")!);
  // After the components subscribed (effects run after the first paint).
  if (resume) setTimeout(() => void connect(), 0);
  if ("serviceWorker" in navigator && window.isSecureContext) {
    navigator.serviceWorker.register("/sw.js").catch(() => undefined);
  }
}

void main();
