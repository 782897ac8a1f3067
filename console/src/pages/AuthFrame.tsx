import { type ReactNode, useEffect } from 'react';
import { Logo } from '../components/Icon.tsx';

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
        <div className="auth-brand">
          <Logo />
          <span className="brand-name">Keygate</span>
        </div>
        <h1>{title}</h1>
        {subtitle ? <p className="auth-subtitle">{subtitle}</p> : null}
        {children}
      </main>
    </div>
  );
}
