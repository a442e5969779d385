// Hand-written SVG plots for the console's health screen: stacked bars and
// lines over hourly buckets, each with a title, a description and a table
// of the same numbers for screen readers and for anyone who prefers it.
import type { ComponentChildren } from "preact";

export interface Series {
  name: string;
  /** A CSS class giving the colour (fill/stroke), e.g. "s-ok". */
  cls: string;
  values: number[];
}

interface PlotProps {
  id: string;
  title: string;
  desc: string;
  labels: string[];
  series: Series[];
  /** Stacked bars, or lines. */
  kind: "bars" | "lines";
  /** Formats a y value (axis and table). */
  format?: (v: number) => string;
  /** A fixed top of the y axis (e.g. 1 for a rate). */
  max?: number;
  unit?: string;
}

const W = 640;
const H = 200;
const PAD = { l: 60, r: 8, t: 12, b: 28 };

/** A round top for the y axis; at least 2, so that counts get whole ticks. */
function niceMax(v: number): number {
  if (v <= 2) return 2;
  const p = Math.pow(10, Math.floor(Math.log10(v)));
  for (const m of [1, 2, 5, 10]) if (v <= m * p) return m * p;
  return 10 * p;
}

export function Plot(props: PlotProps): preact.JSX.Element {
  const { id, title, desc, labels, series, kind } = props;
  const fmt = props.format ?? ((v: number) => String(v));
  const n = labels.length;
  const totals = labels.map((_, i) => (kind === "bars" ? series.reduce((a, s) => a + (s.values[i] ?? 0), 0) : Math.max(0, ...series.map((s) => s.values[i] ?? 0))));
  const top = props.max ?? niceMax(Math.max(0, ...totals));
  const iw = W - PAD.l - PAD.r;
  const ih = H - PAD.t - PAD.b;
  const x = (i: number) => PAD.l + (iw * i) / Math.max(1, n);
  const bw = iw / Math.max(1, n);
  const y = (v: number) => PAD.t + ih - (ih * v) / top;
  const ticks = [0, top / 2, top];
  const every = Math.max(1, Math.ceil(n / 6));
  const shapes: ComponentChildren[] = [];
  if (kind === "bars") {
    labels.forEach((_, i) => {
      let base = 0;
      for (const s of series) {
        const v = s.values[i] ?? 0;
        if (v > 0) {
          shapes.push(<rect key={`${s.name}-${i}`} class={s.cls} x={x(i) + bw * 0.12} width={bw * 0.76} y={y(base + v)} height={y(base) - y(base + v)} />);
        }
        base += v;
      }
    });
  } else {
    for (const s of series) {
      const pts = s.values.map((v, i) => `${x(i) + bw / 2},${y(v)}`).join(" ");
      shapes.push(<polyline key={s.name} class={`line ${s.cls}`} points={pts} />);
      s.values.forEach((v, i) => shapes.push(<circle key={`${s.name}-${i}`} class={s.cls} cx={x(i) + bw / 2} cy={y(v)} r={2.5} />));
    }
  }
  return (
    <figure class="plot" id={id}>
      <figcaption id={`${id}-title`}>{title}</figcaption>
      <svg viewBox={`0 0 ${W} ${H}`} role="img" aria-labelledby={`${id}-svg-title ${id}-svg-desc`}>
        <title id={`${id}-svg-title`}>{title}</title>
        <desc id={`${id}-svg-desc`}>{desc}</desc>
        {ticks.map((t) => (
          <g key={t}>
            <line class="grid" x1={PAD.l} x2={W - PAD.r} y1={y(t)} y2={y(t)} />
            <text class="axis" x={PAD.l - 6} y={y(t) + 4} text-anchor="end">
              {fmt(t)}
            </text>
          </g>
        ))}
        {labels.map((l, i) =>
          i % every === 0 ? (
            <text key={i} class="axis" x={x(i) + bw / 2} y={H - 8} text-anchor="middle">
              {l}
            </text>
          ) : null,
        )}
        {shapes}
      </svg>
      <ul class="legend" aria-hidden="true">
        {series.map((s) => (
          <li key={s.name}>
            <span class={`swatch ${s.cls}`} />
            {s.name}
          </li>
        ))}
      </ul>
      <details>
        <summary>Table of these numbers</summary>
        <table>
          <caption>{title}</caption>
          <thead>
            <tr>
              <th scope="col">{props.unit ?? "time"}</th>
              {series.map((s) => (
                <th key={s.name} scope="col">
                  {s.name}
                </th>
              ))}
            </tr>
          </thead>
          <tbody>
            {labels.map((l, i) => (
              <tr key={i}>
                <th scope="row">{l}</th>
                {series.map((s) => (
                  <td key={s.name}>{fmt(s.values[i] ?? 0)}</td>
                ))}
              </tr>
            ))}
          </tbody>
        </table>
      </details>
    </figure>
  );
}

/** A QR code from its modules (rows of "0"/"1"), dark on light with a quiet zone. */
export function QrCode({ rows, label }: { rows: string[]; label: string }): preact.JSX.Element {
  const size = rows.length + 8;
  let d = "";
  rows.forEach((row, y) => {
    for (let x = 0; x < row.length; x++) if (row[x] === "1") d += `M${x + 4} ${y + 4}h1v1h-1z`;
  });
  return (
    <svg class="qr" viewBox={`0 0 ${size} ${size}`} role="img" aria-label={label} shape-rendering="crispEdges">
      <rect class="qr-bg" width={size} height={size} />
      <path class="qr-fg" d={d} />
    </svg>
  );
}
