// A task's output as the task view shows it: chunks split into lines, ANSI
// SGR colours turned into classes (never inline styles: the CSP forbids
// them), long lines cut into rows of the view's width, and the rows of the
// viewport found without walking the whole log. Memory is bounded: past
// `maxLines` the oldest lines are dropped (and counted).

/** A run of text with one look: classes `f0`…`f15` (colour), `b` (bold), `e` (stderr). */
export interface Segment {
  text: string;
  cls: string;
}

/**
 * One line of output; `done` once its newline arrived. Kept compact, since a
 * view holds up to `maxLines` of them: the text as one string, and its looks
 * as `runs` (`[start, look, start, look, …]`, indices into the buffer's
 * looks), `null` for a line in the plain look. `LogBuffer.segments` gives
 * the runs as text and classes for the few lines on screen.
 */
export interface Line {
  text: string;
  runs: number[] | null;
  done: boolean;
}

// CSI sequences; only SGR (`m`) changes the look, the rest is dropped.
const CSI = /\x1b\[([0-9;?]*)([@-~])/g;

export class LogBuffer {
  lines: Line[] = [];
  /** Lines dropped from the start to bound memory. */
  dropped = 0;
  /** The last seq appended (a replay repeating it is ignored). */
  lastSeq = 0;
  private fg = -1;
  private bold = false;
  /** An escape sequence cut by the chunk boundary. */
  private carry = "";
  private cols = 80;
  /** starts[i]: the first row of line i; valid below `validUpTo`. */
  private starts: number[] = [];
  private validUpTo = 0;
  /** Each look's classes, by index; 0 is the plain look. */
  private looks: string[] = [""];
  private lookIds = new Map<string, number>([["", 0]]);
  /** The current look's index for stdout and stderr; -1 until the next use after an SGR. */
  private lookOf = [-1, -1];

  /** 150,000 lines (a 100,000-line log whole) take about 15 MB. */
  constructor(readonly maxLines = 150_000) {}

  /** Appends a chunk; false when its seq was already seen. */
  append(seq: number, data: string, stream: string): boolean {
    if (seq <= this.lastSeq) return false;
    this.lastSeq = seq;
    let text = this.carry + data;
    this.carry = "";
    const cut = text.lastIndexOf("\x1b");
    if (cut >= 0 && !/^\x1b\[[0-9;?]*[@-~]/.test(text.slice(cut)) && text.length - cut < 32) {
      this.carry = text.slice(cut);
      text = text.slice(0, cut);
    }
    const err = stream === "stderr";
    const rows = text.replace(/\r\n/g, "\n").replace(/\r/g, "").split("\n");
    for (let i = 0; i < rows.length; i++) {
      this.add(rows[i]!, err);
      if (i < rows.length - 1) this.current().done = true;
    }
    this.validUpTo = Math.min(this.validUpTo, this.lines.length - 1);
    if (this.lines.length > this.maxLines) {
      const drop = this.lines.length - Math.floor(this.maxLines * 0.9);
      this.lines.splice(0, drop);
      this.dropped += drop;
      this.validUpTo = 0;
    }
    return true;
  }

  /** The current look's index (one string per look, made once). */
  private look(err: boolean): number {
    const known = this.lookOf[err ? 1 : 0] ?? -1;
    if (known >= 0) return known;
    const cls = `${this.fg >= 0 ? `f${this.fg}` : ""}${this.bold ? " b" : ""}${err ? " e" : ""}`.trim();
    let id = this.lookIds.get(cls);
    if (id === undefined) {
      id = this.looks.length;
      this.looks.push(cls);
      this.lookIds.set(cls, id);
    }
    this.lookOf[err ? 1 : 0] = id;
    return id;
  }

  /** The line being written (a new one after a newline). */
  private current(): Line {
    let line = this.lines[this.lines.length - 1];
    if (!line || line.done) {
      line = { text: "", runs: null, done: false };
      this.lines.push(line);
    }
    return line;
  }

  /** Adds one row's worth of a chunk (no newline in it) to the current line:
   * its text once, as one flat string, and where its look changes. */
  private add(row: string, err: boolean): void {
    if (!row) {
      this.current();
      return;
    }
    const line = this.current();
    let runs = line.runs;
    let at = line.text.length;
    const mark = (look: number) => {
      const was = runs ? runs[runs.length - 1]! : 0;
      if (look === was) return;
      // A new array of the exact size: `push` would leave room for 16 more.
      if (runs) runs = runs.concat(at, look);
      else runs = at === 0 ? [0, look] : [0, 0, at, look];
    };
    let text: string;
    if (!row.includes("\x1b")) {
      mark(this.look(err));
      text = row;
    } else {
      const pieces: string[] = [];
      let last = 0;
      CSI.lastIndex = 0;
      const take = (piece: string) => {
        if (!piece) return;
        mark(this.look(err));
        pieces.push(piece);
        at += piece.length;
      };
      for (let m = CSI.exec(row); m; m = CSI.exec(row)) {
        take(row.slice(last, m.index));
        if (m[2] === "m") this.sgr(m[1] ?? "");
        last = CSI.lastIndex;
      }
      take(row.slice(last));
      text = pieces.join("");
    }
    line.runs = runs;
    line.text = line.text ? line.text + text : text;
  }

  /** A line's text by look, for drawing it. */
  segments(line: Line): Segment[] {
    const { runs, text } = line;
    if (!runs) return text ? [{ text, cls: "" }] : [];
    const out: Segment[] = [];
    for (let i = 0; i < runs.length; i += 2) {
      const piece = text.slice(runs[i], runs[i + 2] ?? text.length);
      if (piece) out.push({ text: piece, cls: this.looks[runs[i + 1]!] ?? "" });
    }
    return out;
  }

  private sgr(params: string): void {
    this.lookOf = [-1, -1];
    const codes = params === "" ? [0] : params.split(";").map((p) => Number(p) || 0);
    for (let i = 0; i < codes.length; i++) {
      const c = codes[i] ?? 0;
      if (c === 0) {
        this.fg = -1;
        this.bold = false;
      } else if (c === 1) this.bold = true;
      else if (c === 22) this.bold = false;
      else if (c >= 30 && c <= 37) this.fg = c - 30;
      else if (c >= 90 && c <= 97) this.fg = c - 90 + 8;
      else if (c === 39) this.fg = -1;
      else if (c === 38 || c === 48) {
        // 256-colour and true colour: the basic 16 kept, others dropped.
        if (codes[i + 1] === 5) {
          const n = codes[i + 2] ?? 0;
          if (c === 38) this.fg = n < 16 ? n : -1;
          i += 2;
        } else if (codes[i + 1] === 2) i += 4;
      }
    }
  }

  /** Sets the width in characters; rows are recounted lazily. */
  setColumns(cols: number): void {
    const next = Math.max(20, cols);
    if (next !== this.cols) {
      this.cols = next;
      this.validUpTo = 0;
    }
  }

  get columns(): number {
    return this.cols;
  }

  private rowsOf(line: Line): number {
    return Math.max(1, Math.ceil(line.text.length / this.cols));
  }

  private index(): void {
    const { lines, starts } = this;
    if (starts.length > lines.length) starts.length = lines.length;
    let row = this.validUpTo > 0 ? (starts[this.validUpTo - 1] ?? 0) + this.rowsOf(lines[this.validUpTo - 1]!) : 0;
    for (let i = this.validUpTo; i < lines.length; i++) {
      starts[i] = row;
      row += this.rowsOf(lines[i]!);
    }
    this.validUpTo = lines.length;
  }

  /** Rows the whole log takes. */
  get rows(): number {
    this.index();
    const n = this.lines.length;
    return n === 0 ? 0 : (this.starts[n - 1] ?? 0) + this.rowsOf(this.lines[n - 1]!);
  }

  /** The line holding `row`, and the row it starts at. */
  lineAt(row: number): { index: number; start: number } {
    this.index();
    let lo = 0;
    let hi = this.lines.length - 1;
    while (lo < hi) {
      const mid = (lo + hi + 1) >> 1;
      if ((this.starts[mid] ?? 0) <= row) lo = mid;
      else hi = mid - 1;
    }
    return { index: Math.max(0, lo), start: this.starts[lo] ?? 0 };
  }

  /** The log as plain text (what copy and share give). */
  text(): string {
    return this.lines.map((l) => l.text + (l.done ? "\n" : "")).join("");
  }
}
