import { type FormEvent, useState } from 'react';
import { api } from '../api.ts';
import { Button } from '../components/Button.tsx';
import { ErrorBanner } from '../components/ErrorBanner.tsx';
import { TextField } from '../components/Field.tsx';
import { NewPasswordFields, useNewPassword } from '../components/NewPasswordFields.tsx';
import { SuccessBanner } from '../components/SuccessBanner.tsx';
import { formatDate } from '../format.ts';
import { useAsyncAction } from '../hooks.ts';
import { useSession } from '../session.tsx';
import type { Session } from '../types.ts';
import { TwoFactorSection } from './TwoFactorSection.tsx';

export function ProfileSection() {
  const { user, session } = useSession();
  return (
    <div className="profile">
      <section className="card">
        <h2 className="card-title">Profile</h2>
        <dl className="facts">
          <div>
            <dt>Email</dt>
            <dd>{user.email}</dd>
          </div>
          <div>
            <dt>Account created</dt>
            <dd>{formatDate(user.created_at)}</dd>
          </div>
          <div>
            <dt>Workspaces</dt>
            <dd>{session.workspaces.map((w) => `${w.name} (${w.role})`).join(', ')}</dd>
          </div>
        </dl>
      </section>
      <PasswordForm />
      <TwoFactorSection />
    </div>
  );
}

function PasswordForm() {
  const { replaceSession } = useSession();
  const [current, setCurrent] = useState('');
  const newPassword = useNewPassword();
  const { busy, error, run } = useAsyncAction();
  const [done, setDone] = useState(false);

  function submit(event: FormEvent) {
    event.preventDefault();
    setDone(false);
    if (!newPassword.check()) return;
    void run(async () => {
      const session = await api.post<Session>('/console/api/password', {
        current_password: current,
        new_password: newPassword.password,
      });
      replaceSession(session);
      setCurrent('');
      newPassword.reset();
      setDone(true);
    });
  }

  return (
    <form className="card form" onSubmit={submit} noValidate>
      <h2 className="card-title">Password</h2>
      <p className="muted">Changing it signs you out everywhere else.</p>
      <TextField
        label="Current password"
        type="password"
        value={current}
        onChange={setCurrent}
        autoComplete="current-password"
      />
      <NewPasswordFields state={newPassword} label="New password" />
      <ErrorBanner error={error} title="The password was not changed." />
      {done ? <SuccessBanner>Password changed. Your other sessions have ended.</SuccessBanner> : null}
      <div className="form-actions">
        <Button
          type="submit"
          variant="primary"
          busy={busy}
          disabled={current === '' || newPassword.password === ''}
        >
          Change password
        </Button>
      </div>
    </form>
  );
}
