import type { ReactNode } from 'react';
import { Button } from './Button.tsx';

/** A data table: the column headers (`<th>`s), then the rows. */
export function Table({ head, children }: { head: ReactNode; children: ReactNode }) {
  return (
    <div className="table-wrap">
      <table className="table">
        <thead>
          <tr>{head}</tr>
        </thead>
        <tbody>{children}</tbody>
      </table>
    </div>
  );
}

/** The header of the row actions' column, named for screen readers only. */
export function ActionsHeader() {
  return (
    <th scope="col">
      <span className="visually-hidden">Actions</span>
    </th>
  );
}

/** A small button in a table row; `label` names it with its row, e.g. "Revoke support-bot". */
export function RowAction({
  label,
  onClick,
  danger = false,
  children,
}: {
  label: string;
  onClick: () => void;
  danger?: boolean;
  children: ReactNode;
}) {
  return (
    <Button
      size="small"
      variant="ghost"
      className={danger ? 'danger-text' : undefined}
      onClick={onClick}
      aria-label={label}
    >
      {children}
    </Button>
  );
}
