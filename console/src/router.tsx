/** A small history router for the paths under /console/. */
import { type MouseEvent, type ReactNode, useSyncExternalStore } from 'react';

export const BASE = '/console';
const CHANGE = 'keygate:navigate';

function subscribe(onChange: () => void): () => void {
  window.addEventListener('popstate', onChange);
  window.addEventListener(CHANGE, onChange);
  return () => {
    window.removeEventListener('popstate', onChange);
    window.removeEventListener(CHANGE, onChange);
  };
}

/** The path below /console, e.g. "/keys" ("/" for the console's root). */
function currentPath(): string {
  const path = window.location.pathname;
  const rest = path.startsWith(BASE) ? path.slice(BASE.length) : path;
  const trimmed = rest.replace(/\/+$/, '');
  return trimmed === '' ? '/' : trimmed;
}

export function usePath(): string {
  return useSyncExternalStore(subscribe, currentPath);
}

/** Goes to a path below /console ("/keys"), keeping the fragment out unless given. */
export function navigate(to: string, options: { replace?: boolean } = {}): void {
  const url = `${BASE}${to === '/' ? '/' : to}`;
  if (url === window.location.pathname + window.location.hash) return;
  if (options.replace) window.history.replaceState(null, '', url);
  else window.history.pushState(null, '', url);
  window.dispatchEvent(new Event(CHANGE));
}

interface LinkProps {
  to: string;
  children: ReactNode;
  className?: string;
  current?: boolean;
}

export function Link({ to, children, className, current }: LinkProps) {
  function onClick(event: MouseEvent<HTMLAnchorElement>) {
    if (event.button !== 0 || event.metaKey || event.ctrlKey || event.shiftKey || event.altKey) return;
    event.preventDefault();
    navigate(to);
  }
  return (
    <a
      href={`${BASE}${to}`}
      className={className}
      onClick={onClick}
      aria-current={current ? 'page' : undefined}
    >
      {children}
    </a>
  );
}
