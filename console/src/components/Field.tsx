import type { InputHTMLAttributes, ReactNode, Ref, SelectHTMLAttributes } from 'react';
import { useId } from 'react';

interface FieldProps {
  label: ReactNode;
  hint?: ReactNode;
  error?: string | undefined;
  /** Renders the control with the id and the aria attributes that tie it to the label, hint and error. */
  children: (control: { id: string; 'aria-describedby'?: string; 'aria-invalid'?: boolean }) => ReactNode;
  className?: string;
}

/** A labelled form control with an optional hint and error message. */
export function Field({ label, hint, error, children, className }: FieldProps) {
  const id = useId();
  const hintId = `${id}-hint`;
  const errorId = `${id}-error`;
  const describedBy = [hint ? hintId : '', error ? errorId : ''].filter(Boolean).join(' ');
  return (
    <div className={`field ${className ?? ''}`}>
      <label htmlFor={id}>{label}</label>
      {children({
        id,
        ...(describedBy ? { 'aria-describedby': describedBy } : {}),
        ...(error ? { 'aria-invalid': true } : {}),
      })}
      {hint ? (
        <div id={hintId} className="field-hint">
          {hint}
        </div>
      ) : null}
      {error ? (
        <div id={errorId} className="field-error">
          {error}
        </div>
      ) : null}
    </div>
  );
}

/** What a field around a control shows: its label, and an optional hint and error. */
type Labelled = Pick<FieldProps, 'label' | 'hint' | 'error'>;

interface TextFieldProps
  extends Labelled,
    Omit<InputHTMLAttributes<HTMLInputElement>, 'value' | 'onChange' | 'children'> {
  value: string;
  onChange: (value: string) => void;
  /** The class of the field around the input (the input's own is `className`, "input" unless told). */
  fieldClassName?: string;
  ref?: Ref<HTMLInputElement>;
}

/** A labelled text input (any type that holds a string: text, email, password…). */
export function TextField({
  label,
  hint,
  error,
  value,
  onChange,
  fieldClassName,
  className = 'input',
  ...input
}: TextFieldProps) {
  return (
    <Field label={label} hint={hint} error={error} className={fieldClassName}>
      {(props) => (
        <input
          {...props}
          {...input}
          className={className}
          value={value}
          onChange={(e) => onChange(e.target.value)}
        />
      )}
    </Field>
  );
}

/** A labelled list of entries, one per line (model patterns, IP ranges). */
export function LinesField({
  label,
  hint,
  value,
  onChange,
}: Labelled & { value: string; onChange: (value: string) => void }) {
  return (
    <Field label={label} hint={hint}>
      {(props) => (
        <textarea
          {...props}
          className="input mono"
          rows={3}
          value={value}
          onChange={(e) => onChange(e.target.value)}
          spellCheck={false}
        />
      )}
    </Field>
  );
}

interface SelectFieldProps<T extends string>
  extends Labelled,
    Omit<SelectHTMLAttributes<HTMLSelectElement>, 'value' | 'onChange'> {
  value: T;
  /** Called with the chosen option's value, one of the `<option>` children's. */
  onChange: (value: T) => void;
}

/** A labelled `<select>`; its options are the children. */
export function SelectField<T extends string>({
  label,
  hint,
  error,
  value,
  onChange,
  children,
  ...select
}: SelectFieldProps<T>) {
  return (
    <Field label={label} hint={hint} error={error}>
      {(props) => (
        <select
          {...props}
          {...select}
          className="select"
          value={value}
          onChange={(e) => onChange(e.target.value as T)}
        >
          {children}
        </select>
      )}
    </Field>
  );
}
