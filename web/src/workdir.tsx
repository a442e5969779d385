// The working directory of a new task: one of the host's workspace roots
// (from `initialize`'s capabilities) and, optionally, a directory inside it.
// A host that does not say its roots gets a plain path field.
import { useState } from "preact/hooks";

/** The root `path` is in (the longest that holds it), and the rest. */
function split(path: string, roots: string[]): [string, string] {
  const root = roots
    .filter((r) => path === r || path.startsWith(r.endsWith("/") ? r : `${r}/`))
    .sort((a, b) => b.length - a.length)[0];
  if (!root) return [roots[0] ?? "", path.startsWith("/") ? "" : path];
  return [root, path.slice(root.length).replace(/^\/+/, "")];
}

export function WorkDir({ roots, value, onChange, recent }: { roots?: string[]; value: string; onChange: (cwd: string) => void; recent: string[] }) {
  const [editing, setEditing] = useState<string | undefined>();
  if (!roots?.length) {
    return (
      <>
        <label for="cwd">Working directory (empty: the first workspace root)</label>
        <input id="cwd" name="cwd" list="cwds" spellcheck={false} autoCapitalize="off" value={value} onInput={(e) => onChange(e.currentTarget.value)} />
        <datalist id="cwds">
          {recent.map((c) => (
            <option key={c} value={c} />
          ))}
        </datalist>
      </>
    );
  }
  const [root, rest] = split(value, roots);
  const sub = editing ?? rest;
  const join = (r: string, s: string) => (s.trim() ? `${r.replace(/\/+$/, "")}/${s.trim().replace(/^\/+/, "")}` : r);
  const inside = [...new Set(recent.map((c) => split(c, roots)).filter(([r, s]) => r === root && s).map(([, s]) => s))];
  return (
    <>
      <label for="cwd-root">Workspace</label>
      <select id="cwd-root" name="cwd-root" value={root} onChange={(e) => onChange(join(e.currentTarget.value, sub))}>
        {roots.map((r) => (
          <option key={r} value={r}>
            {r}
          </option>
        ))}
      </select>
      <label for="cwd">Directory inside it (optional)</label>
      <input
        id="cwd"
        name="cwd"
        list="cwds"
        spellcheck={false}
        autoCapitalize="off"
        placeholder="e.g. src/app"
        value={sub}
        onInput={(e) => {
          setEditing(e.currentTarget.value);
          onChange(join(root, e.currentTarget.value));
        }}
        onBlur={() => setEditing(undefined)}
      />
      <datalist id="cwds">
        {inside.map((c) => (
          <option key={c} value={c} />
        ))}
      </datalist>
    </>
  );
}
