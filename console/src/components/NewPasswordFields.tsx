import { type Ref, useState } from 'react';
import { TextField } from './Field.tsx';

export const MIN_PASSWORD = 12;

/** A new password typed twice; its errors show once the form has been sent. */
export function useNewPassword() {
  const [password, setPassword] = useState('');
  const [confirm, setConfirm] = useState('');
  const [touched, setTouched] = useState(false);
  return {
    password,
    confirm,
    setPassword,
    setConfirm,
    passwordError:
      touched && password.length < MIN_PASSWORD ? `Use at least ${MIN_PASSWORD} characters.` : undefined,
    confirmError: touched && confirm !== password ? 'The two passwords differ.' : undefined,
    /** Shows the errors from now on; true when the password is long enough and typed the same twice. */
    check(): boolean {
      setTouched(true);
      return password.length >= MIN_PASSWORD && confirm === password;
    },
    reset() {
      setPassword('');
      setConfirm('');
      setTouched(false);
    },
  };
}

/** The new password and its confirmation ("Confirm password" for the label "Password"). */
export function NewPasswordFields({
  state,
  label = 'Password',
  required,
  ref,
}: {
  state: ReturnType<typeof useNewPassword>;
  label?: string;
  required?: boolean;
  ref?: Ref<HTMLInputElement>;
}) {
  return (
    <>
      <TextField
        label={label}
        hint={`At least ${MIN_PASSWORD} characters.`}
        error={state.passwordError}
        type="password"
        value={state.password}
        onChange={state.setPassword}
        autoComplete="new-password"
        ref={ref}
        required={required}
      />
      <TextField
        label={`Confirm ${label.toLowerCase()}`}
        error={state.confirmError}
        type="password"
        value={state.confirm}
        onChange={state.setConfirm}
        autoComplete="new-password"
        required={required}
      />
    </>
  );
}
