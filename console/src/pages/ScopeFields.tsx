import { useSession } from '../session.tsx';
import { INFERENCE_SCOPES, MANAGEMENT_SCOPES, type Scope } from '../types.ts';

const SCOPE_HINTS: Record<Scope, string> = {
  chat: 'POST /v1/chat/completions',
  fim: 'POST /v1/fim/completions',
  embeddings: 'POST /v1/embeddings',
  models: 'GET /v1/models',
  admin: 'every management scope',
  'keys:read': 'list and show keys',
  'keys:write': 'create, change, rotate, revoke keys',
  'usage:read': 'usage reports and alerts',
  'audit:read': 'the audit log',
  'workspaces:read': 'workspace, members',
  'workspaces:write': 'policy, members, alerts',
  metrics: 'GET /metrics',
};

/** The scope checkboxes: inference scopes, and the management scopes the user's role may grant. */
export function ScopeFields({
  scopes,
  error,
  onToggle,
}: {
  scopes: Scope[];
  error: string | undefined;
  onToggle: (scope: Scope, on: boolean) => void;
}) {
  const { can } = useSession();
  return (
    <fieldset className="fieldset">
      <legend>Scopes</legend>
      {error ? <div className="field-error">{error}</div> : null}
      <div className="scope-groups">
        <div>
          <div className="scope-group-title">Inference (/v1)</div>
          {INFERENCE_SCOPES.map((scope) => (
            <label key={scope} className="check">
              <input
                type="checkbox"
                checked={scopes.includes(scope)}
                onChange={(e) => onToggle(scope, e.target.checked)}
              />
              <span>
                <code>{scope}</code> <span className="muted">{SCOPE_HINTS[scope]}</span>
              </span>
            </label>
          ))}
        </div>
        <div>
          <div className="scope-group-title">Management API (/admin/v1)</div>
          {MANAGEMENT_SCOPES.map((scope) => {
            const allowed = can.grantable(scope) || scopes.includes(scope);
            return (
              <label key={scope} className={allowed ? 'check' : 'check check-disabled'}>
                <input
                  type="checkbox"
                  checked={scopes.includes(scope)}
                  disabled={!allowed}
                  onChange={(e) => onToggle(scope, e.target.checked)}
                />
                <span>
                  <code>{scope}</code> <span className="muted">{SCOPE_HINTS[scope]}</span>
                </span>
              </label>
            );
          })}
          <div className="field-hint">A key can only be given management scopes your role has.</div>
        </div>
      </div>
    </fieldset>
  );
}
