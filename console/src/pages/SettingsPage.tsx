import { PageHeader } from '../components/PageHeader.tsx';
import { Link } from '../router.tsx';
import { useSession } from '../session.tsx';
import { MembersSection } from './MembersSection.tsx';
import { ProfileSection } from './ProfileSection.tsx';
import { WorkspacePolicyForm } from './WorkspacePolicyForm.tsx';

type Tab = 'workspace' | 'members' | 'profile';

const TABS: { tab: Tab; to: string; label: string }[] = [
  { tab: 'workspace', to: '/settings', label: 'Workspace policy' },
  { tab: 'members', to: '/settings/members', label: 'Members' },
  { tab: 'profile', to: '/settings/profile', label: 'Profile & sign-in' },
];

export function SettingsPage({ tab }: { tab: Tab }) {
  const { workspace } = useSession();
  return (
    <>
      <PageHeader
        title="Settings"
        description={`Workspace ${workspace.name} (${workspace.id}) and your own account.`}
      />
      <nav className="tabs" aria-label="Settings">
        {TABS.map((t) => (
          <Link
            key={t.tab}
            to={t.to}
            className={t.tab === tab ? 'tab active' : 'tab'}
            current={t.tab === tab}
          >
            {t.label}
          </Link>
        ))}
      </nav>
      {tab === 'workspace' ? <WorkspacePolicyForm /> : null}
      {tab === 'members' ? <MembersSection /> : null}
      {tab === 'profile' ? <ProfileSection /> : null}
    </>
  );
}
