import { type ReactNode, useRef } from 'react';
import { CopyButton } from './CopyButton.tsx';

/** A secret shown once: a read-only field, a Copy button, and a warning that it will not be shown again. */
export function SecretReveal({
  label,
  value,
  warning = 'Copy it now and store it somewhere safe: you will not see it again.',
  children,
}: {
  label: string;
  value: string;
  warning?: ReactNode;
  children?: ReactNode;
}) {
  const field = useRef<HTMLInputElement>(null);
  return (
    <div className="secret">
      <div className="banner banner-warning">
        <strong>Shown once.</strong> {warning}
      </div>
      <label className="secret-label" htmlFor="secret-value">
        {label}
      </label>
      <div className="secret-row">
        <input
          ref={field}
          id="secret-value"
          className="input mono secret-value"
          readOnly
          value={value}
          spellCheck={false}
          autoComplete="off"
          data-autofocus
          onFocus={(event) => event.currentTarget.select()}
        />
        <CopyButton text={value} select={field} />
      </div>
      {children}
    </div>
  );
}
