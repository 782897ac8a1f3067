/**
 * `keygate users …` (on the local data directory only: the management API has no users) and the
 * membership commands of `keygate workspaces …` (local, or a gateway's API with --url).
 */
import { createInterface } from 'node:readline';
import { type Command, Option } from 'commander';
import { CLI_ACTOR, ROLES, type Role } from '../store/types.ts';
import { createUser, setRole } from '../users/service.ts';
import { iso } from '../views.ts';
import { withBackend } from './backend.ts';
import {
  addLocalOnlyOptions,
  addTargetOptions,
  print,
  printJson,
  refuseRemote,
  type TargetOptions,
  withStore,
} from './common.ts';
import { table } from './format.ts';

async function readPassword(fromStdin: boolean): Promise<string> {
  if (fromStdin || !process.stdin.isTTY) {
    let text = '';
    for await (const chunk of process.stdin) text += String(chunk);
    return text.replace(/\r?\n$/, '');
  }
  // Interactive: prompt without echoing what is typed.
  const rl = createInterface({ input: process.stdin, output: process.stderr, terminal: true });
  const write = (rl as unknown as { _writeToOutput: (s: string) => void })._writeToOutput;
  (rl as unknown as { _writeToOutput: (s: string) => void })._writeToOutput = (s: string) => {
    if (s.startsWith('Password')) write.call(rl, s);
  };
  const password = await new Promise<string>((resolve) => rl.question('Password: ', resolve));
  rl.close();
  process.stderr.write('\n');
  return password;
}

export function registerPeopleCommands(program: Command, workspaces: Command): void {
  const users = program
    .command('users')
    .description('user accounts (for the console and the management API)');
  addLocalOnlyOptions(
    users
      .command('create')
      .description('create a user; the password is read from stdin (or prompted for)')
      .requiredOption('--email <email>', 'email address (the sign-in name)')
      .option('--password-stdin', 'read the password from standard input')
      .option('--workspace <id>', 'also make the user a member of this workspace')
      .addOption(new Option('--role <role>', 'role in --workspace').choices(ROLES).default('member'))
      .option('--json', 'print JSON'),
  ).action(
    async (
      options: TargetOptions & {
        email: string;
        passwordStdin?: boolean;
        workspace?: string;
        role: Role;
        json?: boolean;
      },
    ) => {
      refuseRemote('users create', options);
      const password = await readPassword(options.passwordStdin === true);
      await withStore(options, async ({ store }) => {
        const user = await createUser(store, { email: options.email, password }, CLI_ACTOR);
        const membership = options.workspace
          ? await setRole(
              store,
              { workspaceId: options.workspace, user: user.id, role: options.role },
              CLI_ACTOR,
            )
          : undefined;
        const view = {
          id: user.id,
          email: user.email,
          created_at: iso(user.createdAt),
          membership: membership ?? null,
        };
        if (options.json) printJson(view);
        else
          print(
            `Created user ${user.id} <${user.email}>${membership ? ` as ${membership.role} of ${membership.workspaceId}` : ''}.`,
          );
      });
    },
  );
  addLocalOnlyOptions(users.command('list').description('list users').option('--json', 'print JSON')).action(
    async (options: TargetOptions & { json?: boolean }) => {
      refuseRemote('users list', options);
      await withStore(options, async ({ store }) => {
        const views = (await store.listUsers()).map((u) => ({
          id: u.id,
          email: u.email,
          created_at: iso(u.createdAt),
          disabled_at: iso(u.disabledAt),
        }));
        if (options.json) printJson(views);
        else if (views.length === 0)
          print('No users yet. Create one with: keygate users create --email <email>');
        else
          print(
            table(
              ['ID', 'EMAIL', 'CREATED'],
              views.map((u) => [u.id, u.email, u.created_at ?? '']),
            ),
          );
      });
    },
  );

  addTargetOptions(
    workspaces
      .command('create')
      .description('create a workspace')
      .requiredOption('--name <name>', 'its name')
      .option('--json', 'print JSON'),
  ).action(async (options: TargetOptions & { name: string; json?: boolean }) => {
    await withBackend(options, async (backend) => {
      const ws = await backend.createWorkspace(options.name);
      if (options.json) printJson({ id: ws.id, name: ws.name, created_at: ws.created_at });
      else print(`Created workspace ${ws.id} "${ws.name}".`);
    });
  });

  addTargetOptions(
    workspaces
      .command('members')
      .description("list a workspace's members and their roles")
      .argument('<id>', 'workspace id')
      .option('--json', 'print JSON'),
  ).action(async (id: string, options: TargetOptions & { json?: boolean }) => {
    await withBackend(options, async (backend) => {
      const views = await backend.listMembers(id);
      if (options.json) printJson(views);
      else if (views.length === 0)
        print(`No members yet. Add one with: keygate workspaces set-role ${id} --user <email> --role owner`);
      else
        print(
          table(
            ['USER', 'EMAIL', 'ROLE', 'SINCE'],
            views.map((m) => [m.user_id, m.email, m.role, m.since ?? '']),
          ),
        );
    });
  });

  addTargetOptions(
    workspaces
      .command('set-role')
      .description(
        "change a member's role; the operator (locally, or with ws_default's admin key) may also add an existing account (others invite from the console)",
      )
      .argument('<id>', 'workspace id')
      .requiredOption('--user <email-or-id>', 'the user')
      .addOption(
        new Option('--role <role>', 'owner, admin, member or viewer').choices(ROLES).makeOptionMandatory(),
      )
      .option('--json', 'print JSON'),
  ).action(async (id: string, options: TargetOptions & { user: string; role: Role; json?: boolean }) => {
    await withBackend(options, async (backend) => {
      const m = await backend.setRole(id, options.user, options.role);
      if (options.json) printJson({ user_id: m.user_id, email: m.email, role: m.role, workspace_id: id });
      else print(`${m.email} is now ${m.role} of ${id}.`);
    });
  });

  addTargetOptions(
    workspaces
      .command('remove-member')
      .description(
        'remove a member from a workspace and revoke the keys they own in it (the last owner cannot be removed)',
      )
      .argument('<id>', 'workspace id')
      .requiredOption('--user <email-or-id>', 'the user'),
  ).action(async (id: string, options: TargetOptions & { user: string }) => {
    await withBackend(options, async (backend) => {
      await backend.removeMember(id, options.user);
      print(`Removed ${options.user} from ${id}; the keys they owned there are revoked.`);
    });
  });
}
