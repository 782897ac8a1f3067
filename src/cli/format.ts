import { type KeyRecord, keyStatus, type TokenBudget } from '../store/types.ts';

export function iso(ms: number | null): string | null {
  return ms === null ? null : new Date(ms).toISOString();
}

function budgetView(budget: TokenBudget) {
  return { tokens_per_day: budget.day, tokens_per_month: budget.month };
}

/** The public view of a key: everything but the secret (which is never stored anyway). */
export function keyView(key: KeyRecord, now = Date.now()) {
  return {
    id: key.id,
    name: key.name,
    workspace_id: key.workspaceId,
    display: `${key.start}…${key.last4}`,
    status: keyStatus(key, now),
    scopes: key.policy.scopes,
    models: key.policy.models,
    allowed_ips: key.policy.allowedIps,
    limits: {
      requests_per_minute: key.policy.limits.rpm,
      tokens_per_minute: key.policy.limits.tpm,
      concurrent_requests: key.policy.limits.concurrency,
    },
    budget: budgetView(key.policy.budget),
    created_at: iso(key.createdAt),
    created_by: key.createdBy,
    updated_at: iso(key.updatedAt),
    rotated_at: iso(key.rotatedAt),
    expires_at: iso(key.expiresAt),
    revoked_at: iso(key.revokedAt),
    last_used_at: iso(key.lastUsedAt),
    last_used_ip: key.lastUsedIp,
  };
}

export type KeyView = ReturnType<typeof keyView>;

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
