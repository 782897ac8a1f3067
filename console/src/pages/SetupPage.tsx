import { useQueryClient } from '@tanstack/react-query';
import { type FormEvent, useEffect, useRef, useState } from 'react';
import { ApiError, api } from '../api.ts';
import { Button } from '../components/Button.tsx';
import { ErrorBanner } from '../components/ErrorBanner.tsx';
import { Field } from '../components/Field.tsx';
import { SESSION_KEY } from '../session.tsx';
import type { Session } from '../types.ts';
import { AuthFrame } from './AuthFrame.tsx';

export const MIN_PASSWORD = 12;

/** First run: the setup token from `keygate start`, and the owner's email and password. */
export function SetupPage() {
  const queryClient = useQueryClient();
  const [token, setToken] = useState('');
  const [email, setEmail] = useState('');
  const [password, setPassword] = useState('');
  const [confirm, setConfirm] = useState('');
  const [error, setError] = useState<unknown>(null);
  const [busy, setBusy] = useState(false);
  const first = useRef<HTMLInputElement>(null);
  useEffect(() => first.current?.focus(), []);
  const [touched, setTouched] = useState(false);

  const passwordError =
    touched && password.length < MIN_PASSWORD ? `Use at least ${MIN_PASSWORD} characters.` : undefined;
  const confirmError = touched && confirm !== password ? 'The two passwords differ.' : undefined;

  async function submit(event: FormEvent) {
    event.preventDefault();
    setTouched(true);
    if (password.length < MIN_PASSWORD || confirm !== password) return;
    setBusy(true);
    setError(null);
    try {
      const session = await api.post<Session>('/console/api/setup', {
        setup_token: token.trim(),
        email: email.trim(),
        password,
      });
      queryClient.setQueryData(SESSION_KEY, session);
    } catch (caught) {
      if (caught instanceof ApiError && caught.code === 'setup_done') {
        await queryClient.refetchQueries({ queryKey: SESSION_KEY });
        return;
      }
      setError(caught);
    } finally {
      setBusy(false);
    }
  }

  return (
    <AuthFrame
      title="Set up Keygate"
      subtitle="Create the owner account. The owner manages every workspace, its keys and its members."
    >
      <form className="form" onSubmit={submit} noValidate>
        <Field
          label="Setup token"
          hint={
            <>
              Printed by <code>keygate start</code> on a new install; <code>keygate setup-token</code> prints
              it again.
            </>
          }
        >
          {(props) => (
            <input
              {...props}
              className="input mono"
              value={token}
              onChange={(e) => setToken(e.target.value)}
              autoComplete="off"
              spellCheck={false}
              ref={first}
              required
            />
          )}
        </Field>
        <Field label="Email">
          {(props) => (
            <input
              {...props}
              className="input"
              type="email"
              value={email}
              onChange={(e) => setEmail(e.target.value)}
              autoComplete="username"
              required
            />
          )}
        </Field>
        <Field label="Password" hint={`At least ${MIN_PASSWORD} characters.`} error={passwordError}>
          {(props) => (
            <input
              {...props}
              className="input"
              type="password"
              value={password}
              onChange={(e) => setPassword(e.target.value)}
              autoComplete="new-password"
              required
            />
          )}
        </Field>
        <Field label="Confirm password" error={confirmError}>
          {(props) => (
            <input
              {...props}
              className="input"
              type="password"
              value={confirm}
              onChange={(e) => setConfirm(e.target.value)}
              autoComplete="new-password"
              required
            />
          )}
        </Field>
        <ErrorBanner error={error} />
        <Button
          type="submit"
          variant="primary"
          busy={busy}
          disabled={token.trim() === '' || email.trim() === '' || password === ''}
        >
          Create owner account
        </Button>
      </form>
    </AuthFrame>
  );
}
