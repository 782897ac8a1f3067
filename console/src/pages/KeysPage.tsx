import { keepPreviousData, useInfiniteQuery } from '@tanstack/react-query';
import { useState } from 'react';
import { admin, api, query } from '../api.ts';
import { Button } from '../components/Button.tsx';
import { EmptyState } from '../components/EmptyState.tsx';
import { ErrorBanner } from '../components/ErrorBanner.tsx';
import { Icon } from '../components/Icon.tsx';
import { Loading } from '../components/Loading.tsx';
import { PageHeader } from '../components/PageHeader.tsx';
import { useDebounced } from '../hooks.ts';
import { useMemberEmails, useMonthTokens, useWorkspaceDetails } from '../queries.ts';
import { useSession } from '../session.tsx';
import type { CreatedKey, Key, KeyList, KeyStatus, RotatedKey } from '../types.ts';
import { KeyFormDialog } from './KeyFormDialog.tsx';
import { KeySecretDialog } from './KeySecretDialog.tsx';
import { KeyTable } from './KeyTable.tsx';
import { RevokeKeyDialog } from './RevokeKeyDialog.tsx';
import { RotateKeyDialog } from './RotateKeyDialog.tsx';

const PAGE = 100;

type Open =
  | { kind: 'create' }
  | { kind: 'edit'; key: Key }
  | { kind: 'rotate'; key: Key }
  | { kind: 'revoke'; key: Key }
  | { kind: 'secret'; key: CreatedKey | RotatedKey }
  | null;

export function KeysPage() {
  const { workspace, can } = useSession();
  const [status, setStatus] = useState<KeyStatus | ''>('');
  const [search, setSearch] = useState('');
  const searchTerm = useDebounced(search.trim(), 250);
  const [open, setOpen] = useState<Open>(null);
  const details = useWorkspaceDetails();
  const emails = useMemberEmails();
  const monthTokens = useMonthTokens();

  const keys = useInfiniteQuery({
    queryKey: [workspace.id, 'keys', { status, search: searchTerm }],
    queryFn: ({ pageParam }) =>
      api.get<KeyList>(
        admin(
          `/keys${query({ workspace_id: workspace.id, status, search: searchTerm, limit: PAGE, after: pageParam })}`,
        ),
      ),
    initialPageParam: undefined as string | undefined,
    getNextPageParam: (last) => last.next_after ?? undefined,
    placeholderData: keepPreviousData,
    refetchInterval: 30_000,
  });

  const list = keys.data?.pages.flatMap((p) => p.data) ?? [];
  const filtered = status !== '' || searchTerm !== '';
  const createButton = can.writeKeys ? (
    <Button variant="primary" onClick={() => setOpen({ kind: 'create' })}>
      <Icon name="plus" />
      Create key
    </Button>
  ) : null;

  return (
    <>
      <PageHeader
        title="API keys"
        description={
          <>
            Keys call the Mistral-compatible API at <code>{window.location.origin}/v1</code>. Each key carries
            its own scopes, models, limits and budget.
          </>
        }
        actions={createButton}
      />

      <div className="toolbar">
        <div className="search">
          <Icon name="search" className="search-icon" />
          <label className="visually-hidden" htmlFor="key-search">
            Search keys
          </label>
          <input
            id="key-search"
            className="input"
            type="search"
            placeholder="Search by name, id or prefix"
            value={search}
            onChange={(e) => setSearch(e.target.value)}
          />
        </div>
        <label className="inline-label" htmlFor="key-status">
          Status
        </label>
        <select
          id="key-status"
          className="select"
          value={status}
          onChange={(e) => setStatus(e.target.value as KeyStatus | '')}
        >
          <option value="">All</option>
          <option value="active">Active</option>
          <option value="expired">Expired</option>
          <option value="revoked">Revoked</option>
        </select>
        {!can.writeKeys ? (
          <span className="muted toolbar-note">
            Your role ({workspace.role}) can view keys but not change them.
          </span>
        ) : null}
      </div>

      <ErrorBanner error={keys.error} title="The keys could not be loaded." />
      {keys.isPending ? (
        <Loading label="Loading keys…" />
      ) : list.length === 0 && !keys.isError ? (
        filtered ? (
          <EmptyState title="No key matches these filters.">
            Clear the search or choose another status.
          </EmptyState>
        ) : (
          <EmptyState title="No keys yet — create one to call /v1" action={createButton}>
            {can.writeKeys
              ? 'A key is shown once when you create it. Give each app or team its own key, so you can limit and revoke it alone.'
              : 'Ask an admin of this workspace to create one.'}
          </EmptyState>
        )
      ) : (
        <>
          <KeyTable
            keys={list}
            emails={emails}
            monthTokens={monthTokens.data}
            canWrite={can.writeKeys}
            onEdit={(key) => setOpen({ kind: 'edit', key })}
            onRotate={(key) => setOpen({ kind: 'rotate', key })}
            onRevoke={(key) => setOpen({ kind: 'revoke', key })}
          />
          {keys.hasNextPage ? (
            <div className="load-more">
              <Button onClick={() => void keys.fetchNextPage()} busy={keys.isFetchingNextPage}>
                Load more keys
              </Button>
            </div>
          ) : null}
        </>
      )}

      {open?.kind === 'create' || open?.kind === 'edit' ? (
        <KeyFormDialog
          editing={open.kind === 'edit' ? open.key : undefined}
          policy={details.data?.policy}
          onClose={() => setOpen(null)}
          onCreated={(key) => setOpen({ kind: 'secret', key })}
        />
      ) : null}
      {open?.kind === 'rotate' ? (
        <RotateKeyDialog
          apiKey={open.key}
          onClose={() => setOpen(null)}
          onRotated={(key) => setOpen({ kind: 'secret', key })}
        />
      ) : null}
      {open?.kind === 'revoke' ? <RevokeKeyDialog apiKey={open.key} onClose={() => setOpen(null)} /> : null}
      {open?.kind === 'secret' ? <KeySecretDialog created={open.key} onClose={() => setOpen(null)} /> : null}
    </>
  );
}
