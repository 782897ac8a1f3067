import { ApiError, errorMessage, issueField } from '../api.ts';
import { RichText } from './RichText.tsx';

/** What went wrong, in the API's words; validation errors list each field. */
export function ErrorBanner({ error, title }: { error: unknown; title?: string }) {
  if (error === null || error === undefined) return null;
  const issues = error instanceof ApiError ? error.detail : [];
  return (
    <div className="banner banner-error" role="alert">
      {title ? <strong className="banner-title">{title}</strong> : null}
      {issues.length > 1 ? (
        <ul>
          {issues.map((issue) => (
            <li key={`${issue.loc.join('.')}:${issue.msg}`}>
              {issueField(issue) ? <code>{issueField(issue)}</code> : null} {issue.msg}
            </li>
          ))}
        </ul>
      ) : (
        <span>
          <RichText text={errorMessage(error)} />
        </span>
      )}
    </div>
  );
}
