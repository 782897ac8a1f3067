import { useQueryClient } from '@tanstack/react-query';
import { SignInForm } from '../components/SignInForm.tsx';
import { SESSION_KEY } from '../session.tsx';
import { AuthFrame } from './AuthFrame.tsx';

export function SignInPage() {
  const queryClient = useQueryClient();
  return (
    <AuthFrame title="Sign in" subtitle="Manage your API keys and see what they spend.">
      <SignInForm onSignedIn={(session) => queryClient.setQueryData(SESSION_KEY, session)} />
      <p className="auth-footnote">
        No account yet? Ask a workspace owner or admin to invite you, then open the link from the invitation.
      </p>
    </AuthFrame>
  );
}
