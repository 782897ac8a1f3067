import { type FormEvent, useEffect, useRef, useState } from 'react';
import { ApiError, api } from '../api.ts';
import type { Session } from '../types.ts';
import { Button } from './Button.tsx';
import { ErrorBanner } from './ErrorBanner.tsx';
import { Field } from './Field.tsx';

/**
 * Email and password, then (when the server answers `totp_required`) a code from the
 * authenticator app or a recovery code.
 */
export function SignInForm({
  fixedEmail,
  onSignedIn,
}: {
  fixedEmail?: string;
  onSignedIn: (s: Session) => void;
}) {
  const [email, setEmail] = useState(fixedEmail ?? '');
  const [password, setPassword] = useState('');
  const [code, setCode] = useState('');
  const [step, setStep] = useState<'password' | 'totp'>('password');
  const [error, setError] = useState<unknown>(null);
  const [busy, setBusy] = useState(false);
  const first = useRef<HTMLInputElement>(null);

  // The first empty field has the focus: the email, the password (email given) or the code.
  // biome-ignore lint/correctness/useExhaustiveDependencies: again whenever the step changes
  useEffect(() => {
    first.current?.focus();
  }, [step]);

  async function submit(event: FormEvent) {
    event.preventDefault();
    setBusy(true);
    setError(null);
    try {
      const body = step === 'totp' ? { email, password, totp_code: code.trim() } : { email, password };
      onSignedIn(await api.post<Session>('/console/api/login', body));
    } catch (caught) {
      if (caught instanceof ApiError && caught.code === 'totp_required') {
        setStep('totp');
      } else {
        setError(caught);
      }
    } finally {
      setBusy(false);
    }
  }

  if (step === 'totp') {
    return (
      <form className="form" onSubmit={submit} noValidate>
        <p className="muted">
          Two-factor sign-in is on for {email}. Enter the 6-digit code from your authenticator app.
        </p>
        <Field label="Authentication code" hint="Lost your device? Enter one of your recovery codes instead.">
          {(props) => (
            <input
              {...props}
              className="input mono"
              value={code}
              onChange={(e) => setCode(e.target.value)}
              ref={first}
              autoComplete="one-time-code"
              inputMode="text"
              required
            />
          )}
        </Field>
        <ErrorBanner error={error} />
        <div className="form-actions">
          <Button
            onClick={() => {
              setStep('password');
              setCode('');
              setError(null);
            }}
          >
            Back
          </Button>
          <Button type="submit" variant="primary" busy={busy}>
            Verify and sign in
          </Button>
        </div>
      </form>
    );
  }

  return (
    <form className="form" onSubmit={submit} noValidate>
      <Field label="Email">
        {(props) => (
          <input
            {...props}
            className="input"
            type="email"
            value={email}
            onChange={(e) => setEmail(e.target.value)}
            autoComplete="username"
            readOnly={fixedEmail !== undefined}
            ref={fixedEmail === undefined ? first : undefined}
            required
          />
        )}
      </Field>
      <Field label="Password">
        {(props) => (
          <input
            {...props}
            className="input"
            type="password"
            value={password}
            onChange={(e) => setPassword(e.target.value)}
            autoComplete="current-password"
            ref={fixedEmail !== undefined ? first : undefined}
            required
          />
        )}
      </Field>
      <ErrorBanner error={error} />
      <Button type="submit" variant="primary" busy={busy} disabled={email.trim() === '' || password === ''}>
        Sign in
      </Button>
    </form>
  );
}
