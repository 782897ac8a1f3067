import type { FormEvent, ReactNode } from 'react';
import { Button } from './Button.tsx';
import { Dialog } from './Dialog.tsx';
import { ErrorBanner } from './ErrorBanner.tsx';

interface FormDialogProps {
  title: string;
  description?: ReactNode;
  wide?: boolean;
  onClose: () => void;
  onSubmit: () => void;
  /** The request the form sends: busy while pending, its error shown above the buttons. */
  sending: { isPending: boolean; error: unknown };
  /** The submit button's text. */
  submitLabel: string;
  /** The error's heading, e.g. "The key was not rotated." */
  errorTitle: string;
  disabled?: boolean;
  /** A button at the start of the actions row, apart from Cancel and submit. */
  extraAction?: ReactNode;
  children: ReactNode;
}

/** A form in a dialog: its fields, what went wrong, then Cancel and the submit button. */
export function FormDialog({
  title,
  description,
  wide,
  onClose,
  onSubmit,
  sending,
  submitLabel,
  errorTitle,
  disabled,
  extraAction,
  children,
}: FormDialogProps) {
  function submit(event: FormEvent) {
    event.preventDefault();
    onSubmit();
  }
  return (
    <Dialog title={title} description={description} onClose={onClose} wide={wide}>
      <form className="form" onSubmit={submit} noValidate>
        {children}
        <ErrorBanner error={sending.error} title={errorTitle} />
        <div className="dialog-actions">
          {extraAction}
          {extraAction ? <span className="spacer" /> : null}
          <Button onClick={onClose}>Cancel</Button>
          <Button type="submit" variant="primary" busy={sending.isPending} disabled={disabled}>
            {submitLabel}
          </Button>
        </div>
      </form>
    </Dialog>
  );
}
