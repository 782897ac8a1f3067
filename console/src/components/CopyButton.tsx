import { type RefObject, useEffect, useState } from 'react';
import { Button } from './Button.tsx';

type State = 'idle' | 'copied' | 'manual';

/**
 * Copies text with the Clipboard API; where that is not allowed, selects the text in the given
 * field so that Ctrl+C (⌘C) copies it.
 */
export function CopyButton({
  text,
  select,
  label = 'Copy',
}: {
  text: string;
  select?: RefObject<HTMLInputElement | HTMLTextAreaElement | null>;
  label?: string;
}) {
  const [state, setState] = useState<State>('idle');

  useEffect(() => {
    if (state !== 'copied') return;
    const timer = window.setTimeout(() => setState('idle'), 2500);
    return () => window.clearTimeout(timer);
  }, [state]);

  async function copy() {
    try {
      if (!navigator.clipboard) throw new Error('no clipboard');
      await navigator.clipboard.writeText(text);
      setState('copied');
    } catch {
      const field = select?.current;
      if (field) {
        field.focus();
        field.select();
      }
      setState('manual');
    }
  }

  return (
    <span className="copy">
      <Button variant="primary" onClick={copy}>
        {state === 'copied' ? 'Copied' : label}
      </Button>
      <span className={state === 'manual' ? 'copy-status' : 'copy-status visually-hidden'} role="status">
        {state === 'copied'
          ? 'Copied to the clipboard.'
          : state === 'manual'
            ? 'Selected: press Ctrl+C (⌘C) to copy.'
            : ''}
      </span>
    </span>
  );
}
