import type { ReactNode } from 'react';

/** What just worked, announced politely. */
export function SuccessBanner({ children }: { children: ReactNode }) {
  return (
    <div className="banner banner-success" role="status">
      {children}
    </div>
  );
}
