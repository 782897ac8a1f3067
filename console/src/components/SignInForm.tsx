import { type FormEvent, useState } from 'react';
import { ApiError, api } from '../api.ts';
import { useAsyncAction, useFocusRef } from '../hooks.ts';
import type { Session } from '../types.ts';
import { Button } from './Button.tsx';
import { ErrorBanner } from './ErrorBanner.tsx';
import { TextField } from './Field.tsx';

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
  const { busy, error, setError, run } = useAsyncAction();
  // The first empty field has the focus: the email, the password (email given) or the code.
  const first = useFocusRef<HTMLInputElement>(step);

  function submit(event: FormEvent) {
    event.preventDefault();
    void run(async () => {
      const body = step === 'totp' ? { email, password, totp_code: code.trim() } : { email, password };
      try {
        onSignedIn(await api.post<Session>('/console/api/login', body));
      } catch (caught) {
        if (!(caught instanceof ApiError && caught.code === 'totp_required')) throw caught;
        setStep('totp');
      }
    });
  }

  if (step === 'totp') {
    return (
      <form className="form" onSubmit={submit} noValidate>
        <p className="muted">
          Two-factor sign-in is on for {email}. Enter the 6-digit code from your authenticator app.
        </p>
        <TextField
          label="Authentication code"
          hint="Lost your device? Enter one of your recovery codes instead."
          className="input mono"
          value={code}
          onChange={setCode}
          ref={first}
          autoComplete="one-time-code"
          inputMode="text"
          required
        />
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
      <TextField
        label="Email"
        type="email"
        value={email}
        onChange={setEmail}
        autoComplete="username"
        readOnly={fixedEmail !== undefined}
        ref={fixedEmail === undefined ? first : undefined}
        required
      />
      <TextField
        label="Password"
        type="password"
        value={password}
        onChange={setPassword}
        autoComplete="current-password"
        ref={fixedEmail !== undefined ? first : undefined}
        required
      />
      <ErrorBanner error={error} />
      <Button type="submit" variant="primary" busy={busy} disabled={email.trim() === '' || password === ''}>
        Sign in
      </Button>
    </form>
  );
}
