import { type KeyRecord, keyStatus } from '../store/types.ts';

export function iso(ms: number | null): string | null {
  return ms === null ? null : new Date(ms).toISOString();
}

/** The public view of a key: everything but the secret (which is never stored anyway). */
export function keyView(key: KeyRecord, now = Date.now()) {
  return {
    id: key.id,
    name: key.name,
    workspace_id: key.workspaceId,
    display: `${key.start}…${key.last4}`,
    status: keyStatus(key, now),
    created_at: iso(key.createdAt),
    created_by: key.createdBy,
    expires_at: iso(key.expiresAt),
    revoked_at: iso(key.revokedAt),
    last_used_at: iso(key.lastUsedAt),
    last_used_ip: key.lastUsedIp,
  };
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
