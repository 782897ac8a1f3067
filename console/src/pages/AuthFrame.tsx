import { type ReactNode, useEffect } from 'react';
import { Brand } from '../components/Icon.tsx';

/** The centred card of the signed-out pages (setup, sign-in, invitation). */
export function AuthFrame({
  title,
  subtitle,
  children,
}: {
  title: string;
  subtitle?: ReactNode;
  children: ReactNode;
}) {
  useEffect(() => {
    document.title = `${title} · Keygate`;
  }, [title]);
  return (
    <div className="auth">
      <main className="auth-card">
        <Brand className="auth-brand" />
        <h1>{title}</h1>
        {subtitle ? <p className="auth-subtitle">{subtitle}</p> : null}
        {children}
      </main>
    </div>
  );
}
