// An OpenCode task as a conversation: its `event` log chunks (README,
// "OpenCode") folded into items — text streaming in, reasoning collapsed,
// tool calls with their input and output, sub-agents with their own items,
// permission answers, retries and errors. The model is plain data updated in
// place; the view re-renders it (the task view batches that per frame).
import { useRef } from "preact/hooks";
import { useFollowEnd } from "./follow.js";

export type Item =
  | { type: "text" | "reasoning"; partId: string; text: string }
  | { type: "tool"; callId: string; tool: string; status: string; title?: string; input?: unknown; output?: string; error?: string }
  | { type: "subagent"; sessionId: string; title: string; items: Item[] }
  | { type: "permission"; reply: string; text: string }
  | { type: "retry"; attempt: number; message: string }
  | { type: "error"; message: string };

type Event = Record<string, unknown>;

/** The most of one tool output, or of one text, the view keeps (memory is bounded; `task.logs` has it all). */
export const MAX_TEXT = 200_000;
function bounded(text: string): string {
  return text.length > MAX_TEXT ? `${text.slice(0, MAX_TEXT)}\n… (${text.length - MAX_TEXT} more characters not kept in this view)` : text;
}
const str = (v: unknown): string => (typeof v === "string" ? v : v === undefined || v === null ? "" : JSON.stringify(v));

export class Conversation {
  items: Item[] = [];
  /** The last seq taken (a replay repeating it is ignored). */
  lastSeq = 0;
  /** The main session's id. */
  sessionId = "";
  private subagents = new Map<string, Item[]>();

  /** Takes one `event` chunk; false when its seq was already seen or it is not an event. */
  add(seq: number, data: string): boolean {
    if (seq <= this.lastSeq) return false;
    this.lastSeq = seq;
    let ev: Event;
    try {
      const parsed: unknown = JSON.parse(data);
      if (!parsed || typeof parsed !== "object") return true;
      ev = parsed as Event;
    } catch {
      return true;
    }
    const kind = str(ev.kind);
    if (kind === "session") {
      this.sessionId = str(ev.sessionId);
      return true;
    }
    if (kind === "subagent") {
      const id = str(ev.sessionId);
      if (!this.subagents.has(id)) {
        const items: Item[] = [];
        this.subagents.set(id, items);
        const parent = this.listFor(str(ev.parentId));
        parent.push({ type: "subagent", sessionId: id, title: str(ev.title) || "sub-agent", items });
      }
      return true;
    }
    const list = this.listFor(str(ev.sessionId));
    switch (kind) {
      case "text":
      case "reasoning": {
        const partId = str(ev.partId);
        const existing = list.find((i): i is Extract<Item, { type: "text" | "reasoning" }> => (i.type === "text" || i.type === "reasoning") && i.partId === partId);
        const piece = typeof ev.delta === "string" ? ev.delta : str(ev.text);
        if (existing) {
          if (typeof ev.delta === "string") {
            if (existing.text.length < MAX_TEXT) existing.text = bounded(existing.text + piece);
          } else existing.text = bounded(piece);
        } else list.push({ type: kind, partId, text: bounded(piece) });
        break;
      }
      case "tool": {
        const callId = str(ev.callId);
        let item = list.find((i): i is Extract<Item, { type: "tool" }> => i.type === "tool" && i.callId === callId);
        if (!item) {
          item = { type: "tool", callId, tool: str(ev.tool), status: "" };
          list.push(item);
        }
        item.status = str(ev.status);
        if (ev.input !== undefined && ev.input !== null) item.input = ev.input;
        if (ev.title !== undefined && ev.title !== null) item.title = str(ev.title);
        if (ev.output !== undefined && ev.output !== null) item.output = bounded(str(ev.output));
        if (ev.error !== undefined && ev.error !== null) item.error = str(ev.error);
        break;
      }
      case "permission": {
        const reply = str(ev.reply);
        const what = ev.permission ? `${str(ev.permission)}: ` : "";
        const why = ev.reason ? ` (${str(ev.reason)})` : ev.by ? ` by ${str(ev.by)}` : ev.decision ? ` (answered ${str(ev.decision)})` : "";
        list.push({ type: "permission", reply, text: `${what}${reply === "reject" ? "rejected" : "allowed"}${why}` });
        break;
      }
      case "retry":
        list.push({ type: "retry", attempt: Number(ev.attempt) || 0, message: str(ev.message) });
        break;
      case "error":
        list.push({ type: "error", message: str(ev.message) || "unknown error" });
        break;
    }
    return true;
  }

  private listFor(sessionId: string): Item[] {
    return (sessionId && this.subagents.get(sessionId)) || this.items;
  }

  /** The conversation as plain text (what copy and share give). */
  text(items = this.items, indent = ""): string {
    return items
      .map((i) => {
        switch (i.type) {
          case "text":
            return `${indent}${i.text}\n`;
          case "reasoning":
            return `${indent}(thinking) ${i.text}\n`;
          case "tool":
            return `${indent}[${i.tool} ${i.status}] ${i.title ?? toolLine(i.input)}\n${i.output ? `${indent}${i.output.trimEnd()}\n` : ""}${i.error ? `${indent}error: ${i.error}\n` : ""}`;
          case "subagent":
            return `${indent}sub-agent ${i.title}:\n${this.text(i.items, `${indent}  `)}`;
          case "permission":
            return `${indent}permission ${i.text}\n`;
          case "retry":
            return `${indent}retry ${i.attempt}: ${i.message}\n`;
          case "error":
            return `${indent}error: ${i.message}\n`;
        }
      })
      .join("");
  }
}

/** A tool's input in one line: its command or description when it has one. */
function toolLine(input: unknown): string {
  if (input && typeof input === "object") {
    const o = input as Record<string, unknown>;
    for (const k of ["command", "description", "filePath", "pattern", "url"]) if (typeof o[k] === "string") return o[k] as string;
  }
  return input === undefined ? "" : JSON.stringify(input);
}

const STATUS: Record<string, string> = { pending: "waiting", running: "running", completed: "done", error: "failed" };

function Tool({ item }: { item: Extract<Item, { type: "tool" }> }) {
  const failed = item.status === "error";
  return (
    <details class={`tool ${item.status}`} open={failed}>
      <summary>
        <span class="tool-name mono">{item.tool}</span> <span class={`badge ${failed ? "failed" : item.status === "completed" ? "succeeded" : "running"}`}>{STATUS[item.status] ?? item.status}</span>{" "}
        <span class="tool-line mono">{item.title ?? toolLine(item.input)}</span>
      </summary>
      {item.input !== undefined && (
        <>
          <h4>Input</h4>
          <pre class="mono tool-input">{JSON.stringify(item.input, null, 2)}</pre>
        </>
      )}
      {item.output !== undefined && (
        <>
          <h4>Output</h4>
          <pre class="mono tool-output">{item.output}</pre>
        </>
      )}
      {item.error !== undefined && (
        <p class="error tool-error" role="alert">
          {item.error}
        </p>
      )}
    </details>
  );
}

function Items({ items }: { items: Item[] }) {
  return (
    <>
      {items.map((item, i) => {
        switch (item.type) {
          case "text":
            return (
              <p key={i} class="said">
                {item.text}
              </p>
            );
          case "reasoning":
            return (
              <details key={i} class="reasoning">
                <summary>Thinking</summary>
                <p>{item.text}</p>
              </details>
            );
          case "tool":
            return <Tool key={i} item={item} />;
          case "subagent":
            return (
              <details key={i} class="subagent" open>
                <summary>
                  Sub-agent: <span class="mono">{item.title}</span>
                </summary>
                <Items items={item.items} />
              </details>
            );
          case "permission":
            return (
              <p key={i} class={`permission-note ${item.reply}`}>
                Permission {item.text}
              </p>
            );
          case "retry":
            return (
              <p key={i} class="hint retry">
                Retrying the model (attempt {item.attempt}): {item.message}
              </p>
            );
          case "error":
            return (
              <p key={i} class="error convo-error" role="alert">
                {item.message}
              </p>
            );
        }
      })}
    </>
  );
}

/**
 * The conversation, following the end unless the user scrolled up (then a
 * "Jump to latest" button). `frame` changes when the model changed.
 */
export function ConversationView({ convo, prompt, frame }: { convo: Conversation; prompt?: string; frame: number }) {
  const box = useRef<HTMLDivElement>(null);
  const { follow, setFollow, onScroll } = useFollowEnd(box, 24, [frame]);
  return (
    <>
      <div id="conversation" class="conversation" ref={box} onScroll={onScroll} tabIndex={0} role="log" aria-label="conversation with OpenCode">
        {prompt && <p class="asked">{prompt}</p>}
        <Items items={convo.items} />
        {!convo.items.length && <p class="hint">Waiting for OpenCode…</p>}
      </div>
      {!follow && (
        <button type="button" class="jump primary" onClick={() => setFollow(true)}>
          Jump to latest
        </button>
      )}
    </>
  );
}
