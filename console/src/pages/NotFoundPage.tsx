import { EmptyState } from '../components/EmptyState.tsx';
import { PageHeader } from '../components/PageHeader.tsx';
import { Link } from '../router.tsx';

export function NotFoundPage() {
  return (
    <>
      <PageHeader title="Page not found" />
      <EmptyState
        title="There is no console page at this address."
        action={<Link to="/keys">Go to the keys</Link>}
      />
    </>
  );
}
