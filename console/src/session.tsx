/** The signed-in user, the workspace they act in, and what their role lets them do there. */
import { useQueryClient } from '@tanstack/react-query';
import { createContext, type ReactNode, useContext } from 'react';
import { api } from './api.ts';
import { ROLE_SCOPES, type Role, type Session, type SessionUser, type SessionWorkspace } from './types.ts';

/** The query key of the session object. */
export const SESSION_KEY = ['session'] as const;

export function fetchSession(): Promise<Session> {
  return api.get<Session>('/console/api/session');
}

/**
 * Signing out from a page without a workspace to act in (an invitation for someone else, no
 * workspace yet): the session is fetched again, whatever the answer.
 */
export function useSignOutAndReload(): () => Promise<void> {
  const queryClient = useQueryClient();
  return async () => {
    try {
      await api.post('/console/api/logout');
    } finally {
      await queryClient.refetchQueries({ queryKey: SESSION_KEY });
    }
  };
}

/** The owner of ws_default: changes workspace policies and creates workspaces. */
export function isOperator(session: Session): boolean {
  return session.workspaces.some((w) => w.id === 'ws_default' && w.role === 'owner');
}

export interface Abilities {
  /** Create, edit, rotate and revoke keys (a member: their own). */
  writeKeys: boolean;
  /** Change the workspace: members, invitations, alert rules and channels, acknowledge alerts. */
  manageWorkspace: boolean;
  readAudit: boolean;
  /** The management scopes this role may grant to a key. */
  grantable: (scope: string) => boolean;
}

export function abilitiesOf(role: Role): Abilities {
  const scopes = ROLE_SCOPES[role];
  const has = (scope: string) => scopes.includes('admin') || (scopes as readonly string[]).includes(scope);
  return {
    writeKeys: has('keys:write'),
    manageWorkspace: has('workspaces:write'),
    readAudit: has('audit:read'),
    grantable: has,
  };
}

export interface SessionContextValue {
  session: Session;
  user: SessionUser;
  workspace: SessionWorkspace;
  can: Abilities;
  setWorkspace(id: string): void;
  /** Replaces the session (after a password change, a TOTP change, an invitation). */
  replaceSession(session: Session): void;
  signOut(): Promise<void>;
}

const SessionContext = createContext<SessionContextValue | null>(null);

export function SessionProvider({ value, children }: { value: SessionContextValue; children: ReactNode }) {
  return <SessionContext value={value}>{children}</SessionContext>;
}

export function useSession(): SessionContextValue {
  const value = useContext(SessionContext);
  if (!value) throw new Error('useSession outside of a signed-in page');
  return value;
}

const STORAGE = 'keygate.workspace';

export function rememberedWorkspace(): string | null {
  try {
    return window.localStorage.getItem(STORAGE);
  } catch {
    return null;
  }
}

export function rememberWorkspace(id: string): void {
  try {
    window.localStorage.setItem(STORAGE, id);
  } catch {
    // Storage may be unavailable (private mode); the choice then lasts for this page only.
  }
}
