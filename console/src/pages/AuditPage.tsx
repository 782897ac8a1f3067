import { keepPreviousData, useInfiniteQuery } from '@tanstack/react-query';
import { useMemo, useState } from 'react';
import { admin, api, query } from '../api.ts';
import { Button } from '../components/Button.tsx';
import { EmptyState } from '../components/EmptyState.tsx';
import { ErrorBanner } from '../components/ErrorBanner.tsx';
import { Loading } from '../components/Loading.tsx';
import { PageHeader } from '../components/PageHeader.tsx';
import { useDebounced } from '../hooks.ts';
import { useMemberEmails } from '../queries.ts';
import { useSession } from '../session.tsx';
import type { AuditList } from '../types.ts';
import { AuditTable } from './AuditTable.tsx';

const KNOWN_ACTIONS = [
  'key.create',
  'key.update',
  'key.rotate',
  'key.revoke',
  'key.expire',
  'workspace.update',
  'membership.set',
  'member.remove',
  'invite.create',
  'invite.accept',
  'invite.revoke',
  'user.login',
  'user.login_failed',
  'user.logout',
  'user.password_change',
  'user.totp_enable',
  'user.totp_disable',
  'alert.acknowledge',
  'alert_rule.update',
  'channel.create',
  'channel.delete',
];

const SINCE = [
  { value: '', label: 'Any time' },
  { value: '1h', label: 'Last hour' },
  { value: '24h', label: 'Last 24 hours' },
  { value: '7d', label: 'Last 7 days' },
  { value: '30d', label: 'Last 30 days' },
] as const;

const SINCE_MS: Record<string, number> = {
  '1h': 3_600_000,
  '24h': 86_400_000,
  '7d': 7 * 86_400_000,
  '30d': 30 * 86_400_000,
};

export function AuditPage() {
  const { workspace, can } = useSession();
  const [action, setAction] = useState('');
  const [target, setTarget] = useState('');
  const [since, setSince] = useState('');
  const debouncedAction = useDebounced(action.trim(), 300);
  const debouncedTarget = useDebounced(target.trim(), 300);
  const filters = { action: debouncedAction, target: debouncedTarget, since };
  const emails = useMemberEmails();
  const sinceIso = useMemo(
    () => (filters.since ? new Date(Date.now() - (SINCE_MS[filters.since] ?? 0)).toISOString() : undefined),
    [filters.since],
  );

  const events = useInfiniteQuery({
    queryKey: [workspace.id, 'audit', filters],
    queryFn: ({ pageParam }) =>
      api.get<AuditList>(
        admin(
          `/audit${query({
            workspace_id: workspace.id,
            action: filters.action,
            target_id: filters.target,
            since: sinceIso,
            limit: 50,
            before: pageParam,
          })}`,
        ),
      ),
    initialPageParam: undefined as number | undefined,
    getNextPageParam: (last) => last.next_before ?? undefined,
    placeholderData: keepPreviousData,
    enabled: can.readAudit,
  });

  const list = events.data?.pages.flatMap((p) => p.data) ?? [];
  const filtered = filters.action !== '' || filters.target !== '' || filters.since !== '';

  return (
    <>
      <PageHeader
        title="Audit log"
        description="Who changed what, when, and from where. Newest first; never a secret."
      />
      {!can.readAudit ? (
        <EmptyState title={`Your role (${workspace.role}) cannot read the audit log.`}>
          Owners, admins and viewers of the workspace can.
        </EmptyState>
      ) : (
        <>
          <div className="toolbar">
            <div className="field field-inline">
              <label htmlFor="audit-action">Action</label>
              <input
                id="audit-action"
                className="input mono"
                list="audit-actions"
                placeholder="e.g. key.revoke"
                value={action}
                onChange={(e) => setAction(e.target.value)}
              />
              <datalist id="audit-actions">
                {KNOWN_ACTIONS.map((a) => (
                  <option key={a} value={a} />
                ))}
              </datalist>
            </div>
            <div className="field field-inline">
              <label htmlFor="audit-target">Target id</label>
              <input
                id="audit-target"
                className="input mono"
                placeholder="key_… or ws_…"
                value={target}
                onChange={(e) => setTarget(e.target.value)}
              />
            </div>
            <div className="field field-inline">
              <label htmlFor="audit-since">Since</label>
              <select
                id="audit-since"
                className="select"
                value={since}
                onChange={(e) => setSince(e.target.value)}
              >
                {SINCE.map((s) => (
                  <option key={s.value} value={s.value}>
                    {s.label}
                  </option>
                ))}
              </select>
            </div>
            {filtered || action || target ? (
              <Button
                variant="ghost"
                size="small"
                onClick={() => {
                  setAction('');
                  setTarget('');
                  setSince('');
                }}
              >
                Clear filters
              </Button>
            ) : null}
          </div>
          <ErrorBanner error={events.error} title="The audit log could not be loaded." />
          {events.isPending ? (
            <Loading label="Loading the audit log…" />
          ) : list.length === 0 && !events.isError ? (
            <EmptyState title={filtered ? 'No event matches these filters.' : 'Nothing recorded yet.'}>
              {filtered
                ? 'Try another action, clear the target, or a longer time range.'
                : 'Every change to keys, members, policy and alerts is recorded here.'}
            </EmptyState>
          ) : (
            <>
              <AuditTable events={list} emails={emails} />
              {events.hasNextPage ? (
                <div className="load-more">
                  <Button onClick={() => void events.fetchNextPage()} busy={events.isFetchingNextPage}>
                    Load more
                  </Button>
                </div>
              ) : (
                <p className="muted load-more">The beginning of the log.</p>
              )}
            </>
          )}
        </>
      )}
    </>
  );
}
