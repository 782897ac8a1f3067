/**
 * The benchmark's chart as a self-contained SVG (no scripts, no external fonts or images), for
 * the README: grouped bars of throughput at saturation per scenario and target, and a second
 * panel with the latency each gateway adds over direct at the fixed offered load.
 */

export interface LatencyBar {
  p50: number;
  p99: number;
}

export interface ChartData {
  title: string;
  subtitle: string;
  /** Panel 1: req/s at saturation, by scenario then target (null: not measured). */
  throughput: {
    scenarios: string[];
    targets: string[];
    rps: Record<string, Record<string, number | null>>;
  };
  /** Panel 2: added latency in ms over direct at the fixed rate, by group then gateway. */
  added: {
    title: string;
    groups: string[];
    gateways: string[];
    values: Record<string, Record<string, LatencyBar | null>>;
    /** Dashed reference lines, e.g. the targets. */
    lines: { value: number; label: string }[];
  };
}

const WIDTH = 980;
const PANEL_HEIGHT = 300;
const MARGIN = { left: 74, right: 130, top: 80, bottom: 48 };
const FONT = 'system-ui, -apple-system, "Segoe UI", Helvetica, Arial, sans-serif';
const PALETTE: Record<string, string> = {
  direct: '#7f7f7f',
  keygate: '#1f77b4',
  'keygate-https': '#17becf',
  'keygate-pg': '#2ca02c',
  portkey: '#d62728',
};
const FALLBACK = ['#9467bd', '#8c564b', '#e377c2', '#bcbd22'];

function colour(name: string, index: number): string {
  return PALETTE[name] ?? FALLBACK[index % FALLBACK.length] ?? '#333333';
}

function esc(text: string): string {
  return text.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;');
}

function num(n: number): string {
  return String(Math.round(n * 10) / 10);
}

/** A "nice" axis: a step of 1, 2 or 5 × 10^k and a top at a multiple of it. */
function niceAxis(min: number, max: number, ticks = 5): { lo: number; hi: number; step: number } {
  const span = Math.max(max - min, 1e-9);
  const raw = span / ticks;
  const magnitude = 10 ** Math.floor(Math.log10(raw));
  const step = ([1, 2, 5, 10].find((m) => m * magnitude >= raw) ?? 10) * magnitude;
  return { lo: Math.floor(min / step) * step, hi: Math.ceil(max / step) * step, step };
}

function formatTick(value: number, step: number): string {
  if (Math.abs(value) >= 1000 && step >= 1000) return `${num(value / 1000)}k`;
  return step < 1 ? value.toFixed(Math.min(3, Math.ceil(-Math.log10(step)))) : String(Math.round(value));
}

interface Bar {
  value: number | null;
  fill: string;
  opacity: number;
  label: string;
}

interface Group {
  name: string;
  bars: Bar[];
}

function panel(
  out: string[],
  panelTop: number,
  title: string,
  unit: string,
  groups: Group[],
  lines: { value: number; label: string }[],
  /** Axis top: bars above it are cut there and marked with their value and ▲. */
  clipAt?: number,
): void {
  const x0 = MARGIN.left;
  const x1 = WIDTH - MARGIN.right;
  const y0 = panelTop + MARGIN.top;
  const y1 = panelTop + PANEL_HEIGHT - MARGIN.bottom;
  const values = groups.flatMap((g) => g.bars.map((b) => b.value ?? 0));
  const top = Math.max(1e-6, ...values, ...lines.map((l) => l.value));
  const axis = niceAxis(Math.min(0, ...values), clipAt !== undefined ? Math.min(top, clipAt) : top);
  const clip = (v: number): number => Math.min(v, axis.hi);
  const y = (v: number): number => y1 - ((clip(v) - axis.lo) / (axis.hi - axis.lo)) * (y1 - y0);

  out.push(
    `<text x="${x0}" y="${panelTop + 36}" font-size="15" font-weight="600" fill="#222">${esc(title)}</text>`,
    `<text x="${x0 - 56}" y="${(y0 + y1) / 2}" font-size="12" fill="#555" transform="rotate(-90 ${x0 - 56} ${(y0 + y1) / 2})" text-anchor="middle">${esc(unit)}</text>`,
  );
  for (let v = axis.lo; v <= axis.hi + axis.step / 2; v += axis.step) {
    const yy = y(v);
    out.push(
      `<line x1="${x0}" x2="${x1}" y1="${yy}" y2="${yy}" stroke="${Math.abs(v) < axis.step / 2 ? '#888' : '#e3e3e3'}" stroke-width="1"/>`,
      `<text x="${x0 - 8}" y="${yy + 4}" font-size="11" fill="#555" text-anchor="end">${formatTick(v, axis.step)}</text>`,
    );
  }

  const groupWidth = (x1 - x0) / Math.max(1, groups.length);
  groups.forEach((group, gi) => {
    const gx = x0 + gi * groupWidth;
    const inner = groupWidth * 0.8;
    const barWidth = inner / Math.max(1, group.bars.length);
    group.bars.forEach((bar, bi) => {
      const bx = gx + groupWidth * 0.1 + bi * barWidth;
      const cx = bx + barWidth / 2;
      if (bar.value === null) {
        out.push(
          `<text x="${cx}" y="${y(0) - 4}" font-size="10" fill="#999" text-anchor="middle">n/a</text>`,
        );
        return;
      }
      const top0 = Math.min(y(bar.value), y(0));
      const height = Math.max(1, Math.abs(y(bar.value) - y(0)));
      const clipped = bar.value > axis.hi;
      const text = `${clipped ? '▲ ' : ''}${bar.label.split(': ').pop() ?? ''}`;
      out.push(
        `<rect x="${bx + 1}" y="${top0}" width="${Math.max(1, barWidth - 2)}" height="${height}" fill="${bar.fill}" fill-opacity="${bar.opacity}"><title>${esc(`${group.name} ${bar.label}`)}</title></rect>`,
        `<text x="${cx}" y="${bar.value >= 0 ? top0 - 4 : top0 + height + 12}" font-size="10" fill="#333" text-anchor="middle">${esc(text)}</text>`,
      );
    });
    out.push(
      `<text x="${gx + groupWidth / 2}" y="${y1 + 20}" font-size="13" fill="#222" text-anchor="middle">${esc(group.name)}</text>`,
    );
  });
  for (const line of lines) {
    const yy = y(line.value);
    out.push(
      `<line x1="${x0}" x2="${x1}" y1="${yy}" y2="${yy}" stroke="#444" stroke-width="1" stroke-dasharray="5 4"/>`,
      `<text x="${x1 + 6}" y="${yy + 4}" font-size="10" fill="#444">${esc(line.label)}</text>`,
    );
  }
}

function legend(out: string[], top: number, items: { label: string; fill: string; opacity: number }[]): void {
  let x = MARGIN.left;
  for (const item of items) {
    out.push(
      `<rect x="${x}" y="${top - 10}" width="12" height="12" fill="${item.fill}" fill-opacity="${item.opacity}"/>`,
      `<text x="${x + 17}" y="${top}" font-size="12" fill="#333">${esc(item.label)}</text>`,
    );
    x += 30 + item.label.length * 7;
  }
}

export function renderChart(data: ChartData): string {
  const height = 2 * PANEL_HEIGHT + 60;
  const out: string[] = [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${WIDTH}" height="${height}" viewBox="0 0 ${WIDTH} ${height}" font-family='${FONT}'>`,
    `<rect width="${WIDTH}" height="${height}" fill="#ffffff"/>`,
    `<text x="${MARGIN.left}" y="24" font-size="17" font-weight="700" fill="#111">${esc(data.title)}</text>`,
    `<text x="${MARGIN.left}" y="42" font-size="12" fill="#555">${esc(data.subtitle)}</text>`,
  ];

  const t = data.throughput;
  const throughputGroups: Group[] = t.scenarios.map((scenario) => ({
    name: scenario,
    bars: t.targets.map((target, i) => {
      const value = t.rps[scenario]?.[target] ?? null;
      return {
        value,
        fill: colour(target, i),
        opacity: 1,
        label: `${target}: ${value === null ? 'n/a' : Math.round(value)}`,
      };
    }),
  }));
  panel(out, 30, 'Throughput at saturation (req/s, higher is better)', 'req/s', throughputGroups, []);
  legend(
    out,
    30 + 54,
    t.targets.map((target, i) => ({ label: target, fill: colour(target, i), opacity: 1 })),
  );

  const a = data.added;
  const latencyGroups: Group[] = a.groups.map((group) => ({
    name: group,
    bars: a.gateways.flatMap((gateway) => {
      const v = a.values[group]?.[gateway] ?? null;
      const i = t.targets.indexOf(gateway);
      const fill = colour(gateway, Math.max(i, 0));
      return [
        { value: v?.p50 ?? null, fill, opacity: 1, label: `${gateway} p50: ${v ? num(v.p50) : 'n/a'}` },
        { value: v?.p99 ?? null, fill, opacity: 0.4, label: `${gateway} p99: ${v ? num(v.p99) : 'n/a'}` },
      ];
    }),
  }));
  const top2 = 30 + PANEL_HEIGHT;
  // Cut the axis well above the reference lines, so that small added latencies stay readable
  // next to a much slower gateway (cut bars are marked ▲ with their value).
  const clipAt = a.lines.length > 0 ? 4 * Math.max(...a.lines.map((l) => l.value)) : undefined;
  panel(out, top2, a.title, 'ms added', latencyGroups, a.lines, clipAt);
  legend(out, top2 + 54, [
    ...a.gateways.map((gateway) => {
      const i = t.targets.indexOf(gateway);
      return { label: gateway, fill: colour(gateway, Math.max(i, 0)), opacity: 1 };
    }),
    { label: 'solid: +p50', fill: '#555', opacity: 1 },
    { label: 'pale: +p99', fill: '#555', opacity: 0.4 },
  ]);
  out.push('</svg>');
  return `${out.join('\n')}\n`;
}
