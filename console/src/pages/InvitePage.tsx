import { useQuery, useQueryClient } from '@tanstack/react-query';
import { type FormEvent, useState } from 'react';
import { ApiError, api } from '../api.ts';
import { Button } from '../components/Button.tsx';
import { ErrorBanner } from '../components/ErrorBanner.tsx';
import { Loading } from '../components/Loading.tsx';
import { NewPasswordFields, useNewPassword } from '../components/NewPasswordFields.tsx';
import { SignInForm } from '../components/SignInForm.tsx';
import { formatDateTime } from '../format.ts';
import { useAsyncAction, useFocusRef } from '../hooks.ts';
import { SESSION_KEY, useSignOutAndReload } from '../session.tsx';
import type { InviteInfo, Session } from '../types.ts';
import { AuthFrame } from './AuthFrame.tsx';

interface InvitePageProps {
  session: Session;
  onJoined: (workspaceId: string, session: Session) => void;
}

/** `/console/invite#<token>`: what the invitation is for, then a new password or a sign-in, then accept. */
export function InvitePage({ session, onJoined }: InvitePageProps) {
  const [token] = useState(() => decodeURIComponent(window.location.hash.slice(1)));
  const inspect = useQuery({
    queryKey: ['invite', token],
    queryFn: () => api.post<InviteInfo>('/console/api/invite/inspect', { token }),
    enabled: token !== '',
    staleTime: Number.POSITIVE_INFINITY,
  });

  if (token === '') {
    return (
      <AuthFrame title="Incomplete invitation link">
        <p>
          This address has no invitation in it. Open the whole link you were sent (it ends with <code>#</code>{' '}
          and a long code), or ask for a new invitation.
        </p>
      </AuthFrame>
    );
  }
  if (inspect.isPending) {
    return (
      <AuthFrame title="Invitation">
        <Loading label="Checking the invitation…" />
      </AuthFrame>
    );
  }
  if (inspect.isError) {
    return (
      <AuthFrame title="This invitation cannot be used">
        <ErrorBanner error={inspect.error} />
        <p className="muted">Invitations are valid for 7 days and work once. Ask for a new one if needed.</p>
      </AuthFrame>
    );
  }

  const invite = inspect.data;
  const subtitle = (
    <>
      You are invited to <strong>{invite.workspace_name}</strong> as <strong>{invite.role}</strong>, with the
      email <strong>{invite.email}</strong>. The invitation expires {formatDateTime(invite.expires_at)}.
    </>
  );
  return (
    <AuthFrame title={`Join ${invite.workspace_name}`} subtitle={subtitle}>
      <InviteStep session={session} invite={invite} token={token} onJoined={onJoined} />
    </AuthFrame>
  );
}

function InviteStep({
  session,
  invite,
  token,
  onJoined,
}: {
  session: Session;
  invite: InviteInfo;
  token: string;
  onJoined: InvitePageProps['onJoined'];
}) {
  const queryClient = useQueryClient();
  const { busy, error, setError, run } = useAsyncAction();
  const [mode, setModeState] = useState<'new' | 'sign-in' | 'exists'>('new');
  const setMode = (next: 'new' | 'sign-in') => {
    setError(null);
    setModeState(next);
  };

  function accept(password?: string) {
    void run(async () => {
      let next: Session;
      try {
        next = await api.post<Session>(
          '/console/api/invite/accept',
          password ? { token, password } : { token },
        );
      } catch (caught) {
        // A new account for an email that has one: sign in to it instead.
        if (!(password && caught instanceof ApiError && caught.code === 'not_signed_in')) throw caught;
        setModeState('exists');
        return;
      }
      window.history.replaceState(null, '', window.location.pathname);
      onJoined(invite.workspace_id, next);
    });
  }

  const signOut = useSignOutAndReload();

  const user = session.user;
  if (user && user.email.toLowerCase() === invite.email.toLowerCase()) {
    return (
      <div className="form">
        <p>
          You are signed in as <strong>{user.email}</strong>.
        </p>
        <ErrorBanner error={error} />
        <Button variant="primary" busy={busy} onClick={() => accept()}>
          Accept invitation
        </Button>
      </div>
    );
  }
  if (user) {
    return (
      <div className="form">
        <p>
          You are signed in as <strong>{user.email}</strong>, but this invitation is for{' '}
          <strong>{invite.email}</strong>. Sign out, then open the link again.
        </p>
        <Button onClick={() => void signOut()}>Sign out</Button>
      </div>
    );
  }
  // The gateway does not say whether the invited email has an account (that would let anyone
  // holding an invitation probe addresses): the invitee says so, and a new account for an email
  // that has one is refused with `not_signed_in`, which switches to signing in.
  if (mode !== 'new') {
    return (
      <>
        <p className="muted">
          {mode === 'exists'
            ? `${invite.email} has an account already: sign in to accept.`
            : `Sign in as ${invite.email} to accept.`}
        </p>
        <SignInForm
          fixedEmail={invite.email}
          onSignedIn={(signedIn) => queryClient.setQueryData(SESSION_KEY, signedIn)}
        />
        <Button variant="ghost" onClick={() => setMode('new')}>
          I have no account yet
        </Button>
      </>
    );
  }
  return (
    <>
      <NewAccountForm busy={busy} error={error} onSubmit={accept} />
      <Button variant="ghost" onClick={() => setMode('sign-in')}>
        I already have an account: sign in
      </Button>
    </>
  );
}

function NewAccountForm({
  busy,
  error,
  onSubmit,
}: {
  busy: boolean;
  error: unknown;
  onSubmit: (password: string) => void;
}) {
  const newPassword = useNewPassword();
  const first = useFocusRef<HTMLInputElement>();

  function submit(event: FormEvent) {
    event.preventDefault();
    if (newPassword.check()) onSubmit(newPassword.password);
  }

  return (
    <form className="form" onSubmit={submit} noValidate>
      <p className="muted">Choose a password for your new account.</p>
      <NewPasswordFields state={newPassword} ref={first} required />
      <ErrorBanner error={error} />
      <Button type="submit" variant="primary" busy={busy} disabled={newPassword.password === ''}>
        Create account and join
      </Button>
    </form>
  );
}
