import { useEffect, useRef, useState } from 'react';

/** The value, once it has stopped changing for `ms`. */
export function useDebounced<T>(value: T, ms: number): T {
  const [debounced, setDebounced] = useState(value);
  useEffect(() => {
    const timer = window.setTimeout(() => setDebounced(value), ms);
    return () => window.clearTimeout(timer);
  }, [value, ms]);
  return debounced;
}

/** A ref to the element that takes the focus when the component mounts, and again whenever `key` changes. */
export function useFocusRef<T extends HTMLElement>(key?: unknown) {
  const ref = useRef<T>(null);
  // biome-ignore lint/correctness/useExhaustiveDependencies: again whenever the key changes
  useEffect(() => {
    ref.current?.focus();
  }, [key]);
  return ref;
}

/**
 * Async work started by the user (a form sent, a button pressed): `busy` while it runs, and what it
 * threw, kept until the next run.
 */
export function useAsyncAction() {
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<unknown>(null);
  async function run(work: () => Promise<unknown>) {
    setBusy(true);
    setError(null);
    try {
      await work();
    } catch (caught) {
      setError(caught);
    } finally {
      setBusy(false);
    }
  }
  return { busy, error, setError, run };
}
