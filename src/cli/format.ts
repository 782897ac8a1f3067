/** One line per field for `show`: nested values flattened as `limits.requests_per_minute`. */
export function fieldRows(value: Record<string, unknown>, prefix = ''): string[][] {
  const rows: string[][] = [];
  for (const [name, field] of Object.entries(value)) {
    if (field !== null && typeof field === 'object' && !Array.isArray(field)) {
      rows.push(...fieldRows(field as Record<string, unknown>, `${prefix}${name}.`));
    } else if (Array.isArray(field)) {
      rows.push([`${prefix}${name}`, field.length === 0 ? '(any)' : field.join(', ')]);
    } else {
      rows.push([`${prefix}${name}`, field === null || field === undefined ? '-' : String(field)]);
    }
  }
  return rows;
}

/** A plain text table: columns padded to their widest cell. */
export function table(headers: readonly string[], rows: readonly (readonly string[])[]): string {
  const widths = headers.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? '').length)));
  const line = (cells: readonly string[]) =>
    cells
      .map((c, i) => c.padEnd(widths[i] ?? 0))
      .join('  ')
      .trimEnd();
  return [line(headers), ...rows.map(line)].join('\n');
}
