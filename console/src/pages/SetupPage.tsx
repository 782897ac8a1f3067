import { useQueryClient } from '@tanstack/react-query';
import { type FormEvent, useState } from 'react';
import { ApiError, api } from '../api.ts';
import { Button } from '../components/Button.tsx';
import { ErrorBanner } from '../components/ErrorBanner.tsx';
import { TextField } from '../components/Field.tsx';
import { NewPasswordFields, useNewPassword } from '../components/NewPasswordFields.tsx';
import { useAsyncAction, useFocusRef } from '../hooks.ts';
import { SESSION_KEY } from '../session.tsx';
import type { Session } from '../types.ts';
import { AuthFrame } from './AuthFrame.tsx';

/** First run: the setup token from `keygate start`, and the owner's email and password. */
export function SetupPage() {
  const queryClient = useQueryClient();
  const [token, setToken] = useState('');
  const [email, setEmail] = useState('');
  const newPassword = useNewPassword();
  const { password } = newPassword;
  const { busy, error, run } = useAsyncAction();
  const first = useFocusRef<HTMLInputElement>();

  function submit(event: FormEvent) {
    event.preventDefault();
    if (!newPassword.check()) return;
    void run(async () => {
      try {
        const session = await api.post<Session>('/console/api/setup', {
          setup_token: token.trim(),
          email: email.trim(),
          password,
        });
        queryClient.setQueryData(SESSION_KEY, session);
      } catch (caught) {
        if (!(caught instanceof ApiError && caught.code === 'setup_done')) throw caught;
        await queryClient.refetchQueries({ queryKey: SESSION_KEY });
      }
    });
  }

  return (
    <AuthFrame
      title="Set up Keygate"
      subtitle="Create the owner account. The owner manages every workspace, its keys and its members."
    >
      <form className="form" onSubmit={submit} noValidate>
        <TextField
          label="Setup token"
          hint={
            <>
              Printed by <code>keygate start</code> on a new install; <code>keygate setup-token</code> prints
              it again.
            </>
          }
          className="input mono"
          value={token}
          onChange={setToken}
          autoComplete="off"
          spellCheck={false}
          ref={first}
          required
        />
        <TextField
          label="Email"
          type="email"
          value={email}
          onChange={setEmail}
          autoComplete="username"
          required
        />
        <NewPasswordFields state={newPassword} required />
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
