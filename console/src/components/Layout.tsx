import type { ReactNode } from 'react';
import { useState } from 'react';
import { Link } from '../router.tsx';
import { useSession } from '../session.tsx';
import { Badge } from './Badge.tsx';
import { Button } from './Button.tsx';
import { Brand, Icon, type IconName } from './Icon.tsx';

const NAV: { to: string; label: string; icon: IconName }[] = [
  { to: '/keys', label: 'Keys', icon: 'key' },
  { to: '/usage', label: 'Usage', icon: 'usage' },
  { to: '/alerts', label: 'Alerts', icon: 'alert' },
  { to: '/audit', label: 'Audit', icon: 'audit' },
  { to: '/settings', label: 'Settings', icon: 'settings' },
];

/** The signed-in frame: sidebar navigation, the workspace switcher, the user and sign-out. */
export function Layout({ path, children }: { path: string; children: ReactNode }) {
  const { session, user, workspace, setWorkspace, signOut } = useSession();
  const [signingOut, setSigningOut] = useState(false);

  async function onSignOut() {
    setSigningOut(true);
    try {
      await signOut();
    } finally {
      setSigningOut(false);
    }
  }

  return (
    <div className="app">
      <a className="skip-link" href="#content">
        Skip to content
      </a>
      <aside className="sidebar">
        <div className="sidebar-inner">
          <Brand className="brand" />
          <nav aria-label="Console">
            <ul className="nav">
              {NAV.map((item) => {
                const current = path === item.to || path.startsWith(`${item.to}/`);
                return (
                  <li key={item.to}>
                    <Link to={item.to} className={current ? 'nav-link active' : 'nav-link'} current={current}>
                      <Icon name={item.icon} />
                      {item.label}
                    </Link>
                  </li>
                );
              })}
            </ul>
          </nav>
          <div className="sidebar-footer">
            <a className="sidebar-doc" href="/admin/v1/openapi.json" target="_blank" rel="noreferrer">
              Management API (OpenAPI)
            </a>
          </div>
        </div>
      </aside>
      <div className="main">
        <header className="topbar">
          <div className="workspace-switcher">
            <label htmlFor="workspace-select">Workspace</label>
            <select
              id="workspace-select"
              className="select"
              value={workspace.id}
              onChange={(event) => setWorkspace(event.target.value)}
            >
              {session.workspaces.map((ws) => (
                <option key={ws.id} value={ws.id}>
                  {ws.name}
                </option>
              ))}
            </select>
            <Badge tone="blue" title="Your role in this workspace">
              {workspace.role}
            </Badge>
          </div>
          <div className="topbar-user">
            <span className="user-email">{user.email}</span>
            <Button variant="ghost" size="small" onClick={onSignOut} busy={signingOut}>
              <Icon name="signout" />
              Sign out
            </Button>
          </div>
        </header>
        <main id="content" className="content" tabIndex={-1}>
          {children}
        </main>
      </div>
    </div>
  );
}
