import { Button } from '../components/Button.tsx';
import { Dialog } from '../components/Dialog.tsx';
import { SecretReveal } from '../components/SecretReveal.tsx';
import { formatDateTime } from '../format.ts';
import { useSession } from '../session.tsx';
import type { CreatedKey, RotatedKey } from '../types.ts';

/** The secret of a new or rotated key, shown once. */
export function KeySecretDialog({
  created,
  onClose,
}: {
  created: CreatedKey | RotatedKey;
  onClose: () => void;
}) {
  const rotated = 'previous_secret_valid_until' in created;
  // With the gateway's self-signed certificate, curl must be told to trust it.
  const caCert = useSession().session.ca_cert_path;
  const cacert = caCert ? `--cacert '${caCert.replaceAll("'", `'\\''`)}' ` : '';
  return (
    <Dialog
      title={rotated ? `New secret for ${created.name}` : `Key ${created.name} created`}
      onClose={onClose}
      wide
    >
      <SecretReveal
        label="Secret key"
        value={created.key}
        warning="Copy the key now: you will not see it again. Keygate keeps only a hash of it."
      >
        {rotated ? (
          <p className="muted">
            The previous secret keeps working until {formatDateTime(created.previous_secret_valid_until)}.
            Deploy the new one before then.
          </p>
        ) : null}
        <div className="snippet">
          <div className="snippet-title">Call the API with it</div>
          <pre className="mono">{`curl ${cacert}${window.location.origin}/v1/chat/completions \\
  -H "Authorization: Bearer $KEYGATE_KEY" \\
  -H "Content-Type: application/json" \\
  -d '{"model":"mistral-small-latest","messages":[{"role":"user","content":"Hello"}]}'`}</pre>
        </div>
      </SecretReveal>
      <div className="dialog-actions">
        <Button variant="primary" onClick={onClose}>
          I have copied the key
        </Button>
      </div>
    </Dialog>
  );
}
