import { useQueryClient } from '@tanstack/react-query';
import QRCode from 'qrcode';
import { type FormEvent, useEffect, useRef, useState } from 'react';
import { api } from '../api.ts';
import { Badge } from '../components/Badge.tsx';
import { Button } from '../components/Button.tsx';
import { CopyButton } from '../components/CopyButton.tsx';
import { ErrorBanner } from '../components/ErrorBanner.tsx';
import { TextField } from '../components/Field.tsx';
import { SuccessBanner } from '../components/SuccessBanner.tsx';
import { useAsyncAction } from '../hooks.ts';
import { SESSION_KEY, useSession } from '../session.tsx';
import type { Session, TotpSetup } from '../types.ts';

/** Settings → Profile: switch two-factor sign-in on (QR code, a code, recovery codes) or off. */
export function TwoFactorSection() {
  const { user } = useSession();
  const [recoveryCodes, setRecoveryCodes] = useState<string[] | null>(null);
  return (
    <section className="card" aria-labelledby="totp-title">
      <h2 className="card-title title-with-badge" id="totp-title">
        Two-factor sign-in{' '}
        {user.totp_enabled ? <Badge tone="green">on</Badge> : <Badge tone="gray">off</Badge>}
      </h2>
      {recoveryCodes ? (
        <RecoveryCodes codes={recoveryCodes} onDone={() => setRecoveryCodes(null)} />
      ) : user.totp_enabled ? (
        <DisableTotp />
      ) : (
        <SetUpTotp onEnabled={setRecoveryCodes} />
      )}
    </section>
  );
}

function SetUpTotp({ onEnabled }: { onEnabled: (codes: string[]) => void }) {
  const queryClient = useQueryClient();
  const [pending, setPending] = useState<TotpSetup | null>(null);
  const [qr, setQr] = useState<string | null>(null);
  const [code, setCode] = useState('');
  const { busy, error, run } = useAsyncAction();
  const codeInput = useRef<HTMLInputElement>(null);

  useEffect(() => {
    if (!pending) return;
    let cancelled = false;
    QRCode.toString(pending.otpauth_url, { type: 'svg', margin: 1, errorCorrectionLevel: 'M' })
      .then((svg) => {
        if (!cancelled) setQr(`data:image/svg+xml;charset=utf-8,${encodeURIComponent(svg)}`);
      })
      .catch(() => setQr(null));
    codeInput.current?.focus();
    return () => {
      cancelled = true;
    };
  }, [pending]);

  function start() {
    void run(async () => setPending(await api.post<TotpSetup>('/console/api/totp/setup')));
  }

  function enable(event: FormEvent) {
    event.preventDefault();
    void run(async () => {
      const result = await api.post<{ recovery_codes: string[] }>('/console/api/totp/enable', {
        code: code.replaceAll(/\s/g, ''),
      });
      onEnabled(result.recovery_codes);
      void queryClient.invalidateQueries({ queryKey: SESSION_KEY });
    });
  }

  if (!pending) {
    return (
      <>
        <p className="muted">
          After your password, sign-in asks for a 6-digit code from an authenticator app (any TOTP app:
          1Password, Google Authenticator, Aegis…).
        </p>
        <ErrorBanner error={error} />
        <Button variant="primary" onClick={start} busy={busy}>
          Set up two-factor sign-in
        </Button>
      </>
    );
  }

  return (
    <form className="totp-setup" onSubmit={enable} noValidate>
      <div className="totp-qr">
        {qr ? (
          <img src={qr} width="184" height="184" alt="QR code to scan with your authenticator app" />
        ) : null}
      </div>
      <div className="form">
        <p>1. Scan the QR code with your authenticator app, or enter this secret by hand:</p>
        <code className="totp-secret">{pending.secret.replace(/(.{4})/g, '$1 ').trim()}</code>
        <p>2. Enter the 6-digit code the app shows.</p>
        <TextField
          label="Code from the app"
          ref={codeInput}
          className="input mono input-code"
          inputMode="numeric"
          autoComplete="one-time-code"
          maxLength={8}
          value={code}
          onChange={setCode}
        />
        <ErrorBanner error={error} title="Two-factor sign-in is not on yet." />
        <div className="form-actions">
          <Button onClick={() => setPending(null)}>Cancel</Button>
          <Button type="submit" variant="primary" busy={busy} disabled={code.trim() === ''}>
            Turn on
          </Button>
        </div>
      </div>
    </form>
  );
}

function RecoveryCodes({ codes, onDone }: { codes: string[]; onDone: () => void }) {
  const area = useRef<HTMLTextAreaElement>(null);
  const text = codes.join('\n');
  return (
    <div className="form">
      <SuccessBanner>Two-factor sign-in is on.</SuccessBanner>
      <div className="banner banner-warning">
        <strong>Shown once.</strong> Save these recovery codes somewhere safe: each one signs you in once if
        you lose your device. You will not see them again.
      </div>
      <label htmlFor="recovery-codes" className="secret-label">
        Recovery codes
      </label>
      <textarea
        id="recovery-codes"
        ref={area}
        className="input mono recovery-codes"
        readOnly
        rows={Math.min(codes.length, 10)}
        value={text}
      />
      <div className="form-actions">
        <CopyButton text={text} select={area} label="Copy codes" />
        <Button onClick={onDone}>I have saved them</Button>
      </div>
    </div>
  );
}

function DisableTotp() {
  const { replaceSession } = useSession();
  const [password, setPassword] = useState('');
  const { busy, error, run } = useAsyncAction();

  function submit(event: FormEvent) {
    event.preventDefault();
    void run(async () => replaceSession(await api.post<Session>('/console/api/totp/disable', { password })));
  }

  return (
    <form className="form form-narrow" onSubmit={submit} noValidate>
      <p className="muted">
        Sign-in asks for a code from your authenticator app. To turn it off, confirm your password.
      </p>
      <TextField
        label="Password"
        type="password"
        value={password}
        onChange={setPassword}
        autoComplete="current-password"
      />
      <ErrorBanner error={error} title="Two-factor sign-in is still on." />
      <div className="form-actions">
        <Button type="submit" variant="danger" busy={busy} disabled={password === ''}>
          Turn off two-factor sign-in
        </Button>
      </div>
    </form>
  );
}
