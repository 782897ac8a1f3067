/**
 * A strict parser of the Prometheus text exposition format, version 0.0.4
 * (https://prometheus.io/docs/instrumenting/exposition_formats/), for tests.
 *
 * Strict where Prometheus is: metric and label names, label value escapes, float values
 * (`NaN`, `+Inf`, `-Inf`, any case), optional integer timestamps, one HELP and one TYPE per family, TYPE
 * before the family's first sample, a family's lines in one group, no duplicate series, no
 * duplicate label in a sample. It also checks what Prometheus relies on for histograms: every
 * series has `_bucket` lines with an `le` label in increasing order, cumulative (non-decreasing)
 * counts, a `+Inf` bucket equal to `_count`, and a `_sum`. Anything else throws, with the line
 * number.
 */

export type MetricType = 'counter' | 'gauge' | 'histogram' | 'summary' | 'untyped';

export interface Sample {
  name: string;
  labels: Record<string, string>;
  value: number;
  timestamp?: number;
}

export interface MetricFamily {
  name: string;
  help: string | undefined;
  type: MetricType;
  samples: Sample[];
}

const METRIC_NAME = /^[a-zA-Z_:][a-zA-Z0-9_:]*$/;
const LABEL_NAME = /^[a-zA-Z_][a-zA-Z0-9_]*$/;
const FLOAT = /^[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?$/;
const INTEGER = /^-?\d+$/;
const TYPES: readonly string[] = ['counter', 'gauge', 'histogram', 'summary', 'untyped'];

export class ExpositionError extends Error {
  override name = 'ExpositionError';
}

/**
 * A float as Prometheus reads one (Go's strconv.ParseFloat, without hex floats or underscores):
 * the special values are matched ignoring case, so prom-client's `Nan` is a NaN.
 */
function parseFloatStrict(text: string, where: string): number {
  if (/^nan$/i.test(text)) return Number.NaN;
  const infinity = /^([+-]?)(?:inf|infinity)$/i.exec(text);
  if (infinity) return infinity[1] === '-' ? Number.NEGATIVE_INFINITY : Number.POSITIVE_INFINITY;
  if (!FLOAT.test(text)) throw new ExpositionError(`${where}: "${text}" is not a float`);
  return Number(text);
}

function unescapeHelp(text: string, where: string): string {
  let out = '';
  for (let i = 0; i < text.length; i++) {
    const c = text[i]!;
    if (c !== '\\') {
      out += c;
      continue;
    }
    const next = text[++i];
    if (next === '\\') out += '\\';
    else if (next === 'n') out += '\n';
    else throw new ExpositionError(`${where}: invalid escape "\\${next ?? ''}" in HELP`);
  }
  return out;
}

/** Parses `{a="x",b="y"}` starting at `start` (the `{`); returns the labels and the index after `}`. */
function parseLabels(
  line: string,
  start: number,
  where: string,
): { labels: Record<string, string>; end: number } {
  const labels: Record<string, string> = Object.create(null) as Record<string, string>;
  let i = start + 1;
  const skipBlanks = () => {
    while (line[i] === ' ' || line[i] === '\t') i++;
  };
  for (;;) {
    skipBlanks();
    if (line[i] === '}') return { labels, end: i + 1 };
    const nameStart = i;
    while (i < line.length && /[a-zA-Z0-9_]/.test(line[i]!)) i++;
    const name = line.slice(nameStart, i);
    if (!LABEL_NAME.test(name)) throw new ExpositionError(`${where}: invalid label name "${name}"`);
    if (name.startsWith('__')) throw new ExpositionError(`${where}: reserved label name "${name}"`);
    if (name in labels) throw new ExpositionError(`${where}: duplicate label "${name}"`);
    skipBlanks();
    if (line[i] !== '=') throw new ExpositionError(`${where}: expected "=" after label ${name}`);
    i++;
    skipBlanks();
    if (line[i] !== '"') throw new ExpositionError(`${where}: expected a quoted value for label ${name}`);
    i++;
    let value = '';
    for (;;) {
      const c = line[i];
      if (c === undefined) throw new ExpositionError(`${where}: unterminated value of label ${name}`);
      if (c === '"') break;
      if (c === '\\') {
        const next = line[i + 1];
        if (next === '\\') value += '\\';
        else if (next === '"') value += '"';
        else if (next === 'n') value += '\n';
        else throw new ExpositionError(`${where}: invalid escape "\\${next ?? ''}" in label ${name}`);
        i += 2;
        continue;
      }
      value += c;
      i++;
    }
    i++;
    labels[name] = value;
    skipBlanks();
    if (line[i] === ',') {
      i++;
      continue;
    }
    if (line[i] === '}') return { labels, end: i + 1 };
    throw new ExpositionError(`${where}: expected "," or "}" after label ${name}`);
  }
}

function seriesKey(name: string, labels: Record<string, string>): string {
  return JSON.stringify([name, Object.entries(labels).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))]);
}

/** The family a sample name belongs to, given the family whose lines are being read. */
function familyOf(sampleName: string, current: MetricFamily | undefined): string {
  if (current) {
    if (current.type === 'histogram') {
      for (const suffix of ['_bucket', '_sum', '_count']) {
        if (sampleName === current.name + suffix) return current.name;
      }
    } else if (current.type === 'summary') {
      for (const suffix of ['', '_sum', '_count'])
        if (sampleName === current.name + suffix) return current.name;
    }
  }
  return sampleName;
}

export function parseExposition(text: string): Map<string, MetricFamily> {
  if (text.length > 0 && !text.endsWith('\n')) throw new ExpositionError('the last line must end with "\\n"');
  const families = new Map<string, MetricFamily>();
  const closed = new Set<string>();
  const series = new Set<string>();
  const typed = new Set<string>();
  const helped = new Set<string>();
  let current: MetricFamily | undefined;

  const enter = (name: string, where: string): MetricFamily => {
    if (current?.name === name) return current;
    if (current) closed.add(current.name);
    if (closed.has(name)) throw new ExpositionError(`${where}: the lines of ${name} are not in one group`);
    let family = families.get(name);
    if (!family) {
      family = { name, help: undefined, type: 'untyped', samples: [] };
      families.set(name, family);
    }
    current = family;
    return family;
  };

  const lines = text.split('\n');
  if (lines[lines.length - 1] === '') lines.pop();
  lines.forEach((line, index) => {
    const where = `line ${index + 1}`;
    if (line.trim() === '') return;
    if (line.startsWith('#')) {
      const parts = line
        .slice(1)
        .trimStart()
        .split(/[ \t]+/);
      const keyword = parts[0];
      if (keyword !== 'HELP' && keyword !== 'TYPE') return; // a plain comment
      const name = parts[1] ?? '';
      if (!METRIC_NAME.test(name)) throw new ExpositionError(`${where}: invalid metric name "${name}"`);
      const family = enter(name, where);
      if (keyword === 'HELP') {
        if (helped.has(name)) throw new ExpositionError(`${where}: second HELP for ${name}`);
        helped.add(name);
        const match = /^#[ \t]+HELP[ \t]+\S+(?:[ \t](.*))?$/.exec(line);
        family.help = unescapeHelp(match?.[1] ?? '', where);
      } else {
        if (typed.has(name)) throw new ExpositionError(`${where}: second TYPE for ${name}`);
        if (family.samples.length > 0)
          throw new ExpositionError(`${where}: TYPE of ${name} after its samples`);
        const type = parts[2] ?? '';
        if (!TYPES.includes(type) || parts.length !== 3) {
          throw new ExpositionError(`${where}: invalid TYPE line for ${name}`);
        }
        typed.add(name);
        family.type = type as MetricType;
      }
      return;
    }

    let i = 0;
    while (i < line.length && /[a-zA-Z0-9_:]/.test(line[i]!)) i++;
    const name = line.slice(0, i);
    if (!METRIC_NAME.test(name)) throw new ExpositionError(`${where}: invalid metric name "${name}"`);
    let labels: Record<string, string> = Object.create(null) as Record<string, string>;
    if (line[i] === '{') ({ labels, end: i } = parseLabels(line, i, where));
    const rest = line.slice(i);
    if (!/^[ \t]/.test(rest)) throw new ExpositionError(`${where}: expected a blank before the value`);
    const fields = rest.trim().split(/[ \t]+/);
    if (fields.length < 1 || fields.length > 2)
      throw new ExpositionError(`${where}: expected "value [timestamp]"`);
    const value = parseFloatStrict(fields[0]!, where);
    const sample: Sample = { name, labels: { ...labels }, value };
    if (fields[1] !== undefined) {
      if (!INTEGER.test(fields[1])) throw new ExpositionError(`${where}: invalid timestamp "${fields[1]}"`);
      sample.timestamp = Number(fields[1]);
    }
    const family = enter(familyOf(name, current), where);
    if (family.type === 'histogram' && name === `${family.name}_bucket` && !('le' in labels)) {
      throw new ExpositionError(`${where}: histogram bucket without "le"`);
    }
    if (family.type === 'summary' && name === family.name && !('quantile' in labels)) {
      throw new ExpositionError(`${where}: summary sample without "quantile"`);
    }
    const key = seriesKey(name, labels);
    if (series.has(key))
      throw new ExpositionError(`${where}: duplicate series ${name}${JSON.stringify(labels)}`);
    series.add(key);
    family.samples.push(sample);
  });

  for (const family of families.values()) if (family.type === 'histogram') checkHistogram(family);
  return families;
}

function withoutLabel(labels: Record<string, string>, name: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const [k, v] of Object.entries(labels)) if (k !== name) out[k] = v;
  return out;
}

function checkHistogram(family: MetricFamily): void {
  const groups = new Map<string, { buckets: Sample[]; sum?: Sample; count?: Sample }>();
  const groupOf = (labels: Record<string, string>) => {
    const key = seriesKey('', labels);
    let group = groups.get(key);
    if (!group) {
      group = { buckets: [] };
      groups.set(key, group);
    }
    return group;
  };
  for (const s of family.samples) {
    if (s.name.endsWith('_bucket')) groupOf(withoutLabel(s.labels, 'le')).buckets.push(s);
    else if (s.name.endsWith('_sum')) groupOf(s.labels).sum = s;
    else groupOf(s.labels).count = s;
  }
  for (const [key, group] of groups) {
    const where = `histogram ${family.name} ${key}`;
    if (!group.sum || !group.count) throw new ExpositionError(`${where}: _sum or _count missing`);
    if (group.buckets.length === 0) throw new ExpositionError(`${where}: no buckets`);
    let lastLe = Number.NEGATIVE_INFINITY;
    let lastCount = 0;
    for (const bucket of group.buckets) {
      const le = parseFloatStrict(bucket.labels.le!, where);
      if (!(le > lastLe)) throw new ExpositionError(`${where}: le values not increasing`);
      if (bucket.value < lastCount) throw new ExpositionError(`${where}: bucket counts not cumulative`);
      lastLe = le;
      lastCount = bucket.value;
    }
    if (lastLe !== Number.POSITIVE_INFINITY) throw new ExpositionError(`${where}: no +Inf bucket`);
    if (lastCount !== group.count.value)
      throw new ExpositionError(`${where}: +Inf bucket differs from _count`);
  }
}

/** The value of the one sample named `name` whose labels are exactly `labels`; undefined if none. */
export function sampleValue(
  families: Map<string, MetricFamily>,
  name: string,
  labels: Record<string, string> = {},
): number | undefined {
  const want = seriesKey(name, labels);
  for (const family of families.values()) {
    for (const s of family.samples) if (seriesKey(s.name, s.labels) === want) return s.value;
  }
  return undefined;
}

/** Every sample named `name` (of any family). */
export function samplesNamed(families: Map<string, MetricFamily>, name: string): Sample[] {
  const out: Sample[] = [];
  for (const family of families.values()) for (const s of family.samples) if (s.name === name) out.push(s);
  return out;
}
