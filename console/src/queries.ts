/** Shared queries of the signed-in pages; every key starts with the workspace id. */
import { useMutation, useQuery } from '@tanstack/react-query';
import { useState } from 'react';
import { admin, api, query } from './api.ts';
import { startOfUtcMonth } from './format.ts';
import { useSession } from './session.tsx';
import type { Member, UsageList, Workspace } from './types.ts';

export const enc = encodeURIComponent;

export function useWorkspaceDetails() {
  const { workspace } = useSession();
  return useQuery({
    queryKey: [workspace.id, 'workspace'],
    queryFn: () => api.get<Workspace>(admin(`/workspaces/${enc(workspace.id)}`)),
  });
}

export function useMembers() {
  const { workspace } = useSession();
  return useQuery({
    queryKey: [workspace.id, 'members'],
    queryFn: () => api.get<{ data: Member[] }>(admin(`/workspaces/${enc(workspace.id)}/members`)),
    select: (list) => list.data,
  });
}

/** user id → email, for "created by" and audit actors. */
export function useMemberEmails(): Map<string, string> {
  const members = useMembers();
  const map = new Map<string, string>();
  for (const m of members.data ?? []) map.set(m.user_id, m.email);
  return map;
}

/** key id → tokens since the start of this UTC month. */
export function useMonthTokens() {
  const { workspace } = useSession();
  const from = startOfUtcMonth();
  return useQuery({
    queryKey: [workspace.id, 'usage', 'month-by-key', from],
    queryFn: () =>
      api.get<UsageList>(admin(`/usage${query({ by: 'key', from, workspace_id: workspace.id })}`)),
    select: (report) => {
      const map = new Map<string, number>();
      for (const row of report.data) if (row.key_id) map.set(row.key_id, row.total_tokens);
      return map;
    },
  });
}

/**
 * A change asked for first (a deletion): `ask(item)` opens its confirmation, whose props are `dialog`.
 * The confirmation closes when the change is made (after `onDone`) or cancelled.
 */
export function useConfirmedMutation<T>(mutationFn: (item: T) => Promise<unknown>, onDone: () => unknown) {
  const [target, setTarget] = useState<T | null>(null);
  const mutation = useMutation({
    mutationFn,
    onSuccess: () => {
      void onDone();
      setTarget(null);
    },
  });
  return {
    target,
    ask: (item: T) => setTarget(() => item),
    dialog: {
      onConfirm: () => {
        if (target !== null) mutation.mutate(target);
      },
      onClose: () => {
        setTarget(null);
        mutation.reset();
      },
      busy: mutation.isPending,
      error: mutation.error,
    },
  };
}
