import { PageHeader } from '../components/PageHeader.tsx';
import { AlertChannels } from './AlertChannels.tsx';
import { AlertFeed } from './AlertFeed.tsx';
import { AlertRules } from './AlertRules.tsx';

export function AlertsPage() {
  return (
    <>
      <PageHeader
        title="Alerts"
        description="Usage spikes, budgets, new networks, failed authentication and expiring keys: what happened, and where the alerts are sent."
      />
      <AlertFeed />
      <AlertRules />
      <AlertChannels />
    </>
  );
}
