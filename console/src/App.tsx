import { useQuery, useQueryClient } from '@tanstack/react-query';
import { useEffect, useMemo, useState } from 'react';
import { api, configureApi, errorMessage } from './api.ts';
import { Button } from './components/Button.tsx';
import { Layout } from './components/Layout.tsx';
import { Loading } from './components/Loading.tsx';
import { AlertsPage } from './pages/AlertsPage.tsx';
import { AuditPage } from './pages/AuditPage.tsx';
import { AuthFrame } from './pages/AuthFrame.tsx';
import { InvitePage } from './pages/InvitePage.tsx';
import { KeysPage } from './pages/KeysPage.tsx';
import { NotFoundPage } from './pages/NotFoundPage.tsx';
import { SettingsPage } from './pages/SettingsPage.tsx';
import { SetupPage } from './pages/SetupPage.tsx';
import { SignInPage } from './pages/SignInPage.tsx';
import { UsagePage } from './pages/UsagePage.tsx';
import { navigate, usePath } from './router.tsx';
import {
  abilitiesOf,
  fetchSession,
  rememberedWorkspace,
  rememberWorkspace,
  SESSION_KEY,
  type SessionContextValue,
  SessionProvider,
  useSignOutAndReload,
} from './session.tsx';
import type { Session } from './types.ts';

const SIGNED_OUT: Session = {
  setup_required: false,
  user: null,
  csrf_token: null,
  workspaces: [],
  ca_cert_path: null,
};

/** Paths that only make sense signed out; signed in, they lead to the keys. */
const ENTRY_PATHS = new Set(['/', '/sign-in', '/setup']);

export function App() {
  const path = usePath();
  const queryClient = useQueryClient();
  const sessionQuery = useQuery({
    queryKey: SESSION_KEY,
    queryFn: fetchSession,
    staleTime: Number.POSITIVE_INFINITY,
  });
  const [chosen, setChosen] = useState<string | null>(rememberedWorkspace);
  const session = sessionQuery.data;

  useEffect(() => {
    // A management API call answered 401: the session ended (expired, signed out elsewhere).
    configureApi({ onUnauthorized: () => void queryClient.invalidateQueries({ queryKey: SESSION_KEY }) });
  }, [queryClient]);

  const workspace = session?.user
    ? (session.workspaces.find((w) => w.id === chosen) ?? session.workspaces[0])
    : undefined;
  // Set during render, so the first queries of a page already carry them.
  configureApi({ csrfToken: session?.csrf_token ?? null, workspaceId: workspace?.id ?? null });

  const signedIn = Boolean(session?.user);
  useEffect(() => {
    if (signedIn && ENTRY_PATHS.has(path)) navigate('/keys', { replace: true });
  }, [signedIn, path]);

  // Signed out (or the session ended): forget what the signed-in pages loaded. In an effect, so
  // the pages have unmounted first; removed under a mounted page, a query would refetch (401).
  useEffect(() => {
    if (!signedIn) queryClient.removeQueries({ predicate: (q) => q.queryKey[0] !== SESSION_KEY[0] });
  }, [signedIn, queryClient]);

  const value = useMemo<SessionContextValue | null>(() => {
    if (!session?.user || !workspace) return null;
    return {
      session,
      user: session.user,
      workspace,
      can: abilitiesOf(workspace.role),
      setWorkspace(id: string) {
        rememberWorkspace(id);
        setChosen(id);
      },
      replaceSession(next: Session) {
        configureApi({ csrfToken: next.csrf_token });
        queryClient.setQueryData(SESSION_KEY, next);
      },
      async signOut() {
        try {
          await api.post('/console/api/logout');
          queryClient.setQueryData<Session>(SESSION_KEY, SIGNED_OUT);
        } catch {
          await queryClient.refetchQueries({ queryKey: SESSION_KEY });
        }
      },
    };
  }, [session, workspace, queryClient]);

  if (sessionQuery.isPending) {
    return (
      <AuthFrame title="Keygate">
        <Loading label="Opening the console…" />
      </AuthFrame>
    );
  }
  if (!session) {
    return (
      <AuthFrame title="The console cannot reach the gateway">
        <p className="banner banner-error" role="alert">
          {errorMessage(sessionQuery.error)}
        </p>
        <Button variant="primary" onClick={() => void sessionQuery.refetch()}>
          Try again
        </Button>
      </AuthFrame>
    );
  }
  if (path === '/invite') {
    return (
      <InvitePage
        session={session}
        onJoined={(workspaceId, next) => {
          rememberWorkspace(workspaceId);
          setChosen(workspaceId);
          configureApi({ csrfToken: next.csrf_token });
          queryClient.setQueryData(SESSION_KEY, next);
          navigate('/keys', { replace: true });
        }}
      />
    );
  }
  if (!session.user) return session.setup_required ? <SetupPage /> : <SignInPage />;
  if (!value) return <NoWorkspace email={session.user.email} />;

  return (
    <SessionProvider value={value}>
      <Layout path={path}>
        <Page path={path} />
      </Layout>
    </SessionProvider>
  );
}

function Page({ path }: { path: string }) {
  if (ENTRY_PATHS.has(path) || path === '/keys') return <KeysPage />;
  if (path === '/usage') return <UsagePage />;
  if (path === '/alerts') return <AlertsPage />;
  if (path === '/audit') return <AuditPage />;
  if (path === '/settings') return <SettingsPage tab="workspace" />;
  if (path === '/settings/members') return <SettingsPage tab="members" />;
  if (path === '/settings/profile') return <SettingsPage tab="profile" />;
  return <NotFoundPage />;
}

function NoWorkspace({ email }: { email: string }) {
  const signOut = useSignOutAndReload();
  return (
    <AuthFrame title="No workspace yet">
      <p>
        You are signed in as <strong>{email}</strong>, but you are not a member of any workspace. Ask a
        workspace owner or admin to invite you, then open the link from the invitation.
      </p>
      <Button onClick={() => void signOut()}>Sign out</Button>
    </AuthFrame>
  );
}
