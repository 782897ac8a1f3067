import { type FormEvent, useState } from 'react';
import { api } from '../api.ts';
import { Button } from '../components/Button.tsx';
import { ErrorBanner } from '../components/ErrorBanner.tsx';
import { Field } from '../components/Field.tsx';
import { formatDate } from '../format.ts';
import { useSession } from '../session.tsx';
import type { Session } from '../types.ts';
import { MIN_PASSWORD } from './SetupPage.tsx';
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
  const [next, setNext] = useState('');
  const [confirm, setConfirm] = useState('');
  const [touched, setTouched] = useState(false);
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<unknown>(null);
  const [done, setDone] = useState(false);
  const nextError =
    touched && next.length < MIN_PASSWORD ? `Use at least ${MIN_PASSWORD} characters.` : undefined;
  const confirmError = touched && confirm !== next ? 'The two passwords differ.' : undefined;

  async function submit(event: FormEvent) {
    event.preventDefault();
    setTouched(true);
    setDone(false);
    if (next.length < MIN_PASSWORD || confirm !== next) return;
    setBusy(true);
    setError(null);
    try {
      const session = await api.post<Session>('/console/api/password', {
        current_password: current,
        new_password: next,
      });
      replaceSession(session);
      setCurrent('');
      setNext('');
      setConfirm('');
      setTouched(false);
      setDone(true);
    } catch (caught) {
      setError(caught);
    } finally {
      setBusy(false);
    }
  }

  return (
    <form className="card form" onSubmit={submit} noValidate>
      <h2 className="card-title">Password</h2>
      <p className="muted">Changing it signs you out everywhere else.</p>
      <Field label="Current password">
        {(props) => (
          <input
            {...props}
            className="input"
            type="password"
            value={current}
            onChange={(e) => setCurrent(e.target.value)}
            autoComplete="current-password"
          />
        )}
      </Field>
      <Field label="New password" hint={`At least ${MIN_PASSWORD} characters.`} error={nextError}>
        {(props) => (
          <input
            {...props}
            className="input"
            type="password"
            value={next}
            onChange={(e) => setNext(e.target.value)}
            autoComplete="new-password"
          />
        )}
      </Field>
      <Field label="Confirm new password" error={confirmError}>
        {(props) => (
          <input
            {...props}
            className="input"
            type="password"
            value={confirm}
            onChange={(e) => setConfirm(e.target.value)}
            autoComplete="new-password"
          />
        )}
      </Field>
      <ErrorBanner error={error} title="The password was not changed." />
      {done ? (
        <div className="banner banner-success" role="status">
          Password changed. Your other sessions have ended.
        </div>
      ) : null}
      <div className="form-actions">
        <Button type="submit" variant="primary" busy={busy} disabled={current === '' || next === ''}>
          Change password
        </Button>
      </div>
    </form>
  );
}
