/** `keygate users …` and the membership commands of `keygate workspaces …`. */
import { createInterface } from 'node:readline';
import { type Command, Option } from 'commander';
import { CLI_ACTOR, ROLES, type Role } from '../store/types.ts';
import { createUser, createWorkspace, removeMember, setRole } from '../users/service.ts';
import { iso } from '../views.ts';
import { addStoreOptions, print, printJson, type StoreOptions, UserError, withStore } from './common.ts';
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
  addStoreOptions(
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
      options: StoreOptions & {
        email: string;
        passwordStdin?: boolean;
        workspace?: string;
        role: Role;
        json?: boolean;
      },
    ) => {
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
  addStoreOptions(users.command('list').description('list users').option('--json', 'print JSON')).action(
    async (options: StoreOptions & { json?: boolean }) => {
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

  addStoreOptions(
    workspaces
      .command('create')
      .description('create a workspace')
      .requiredOption('--name <name>', 'its name')
      .option('--json', 'print JSON'),
  ).action(async (options: StoreOptions & { name: string; json?: boolean }) => {
    await withStore(options, async ({ store }) => {
      const ws = await createWorkspace(store, options.name, CLI_ACTOR);
      if (options.json) printJson({ id: ws.id, name: ws.name, created_at: iso(ws.createdAt) });
      else print(`Created workspace ${ws.id} "${ws.name}".`);
    });
  });

  addStoreOptions(
    workspaces
      .command('members')
      .description("list a workspace's members and their roles")
      .argument('<id>', 'workspace id')
      .option('--json', 'print JSON'),
  ).action(async (id: string, options: StoreOptions & { json?: boolean }) => {
    await withStore(options, async ({ store }) => {
      if (!(await store.getWorkspace(id))) throw new UserError(`no workspace with id ${id}`);
      const views = (await store.listMembers(id)).map((m) => ({
        user_id: m.userId,
        email: m.email,
        role: m.role,
        since: iso(m.createdAt),
      }));
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

  addStoreOptions(
    workspaces
      .command('set-role')
      .description('add a member to a workspace, or change their role')
      .argument('<id>', 'workspace id')
      .requiredOption('--user <email-or-id>', 'the user')
      .addOption(
        new Option('--role <role>', 'owner, admin, member or viewer').choices(ROLES).makeOptionMandatory(),
      )
      .option('--json', 'print JSON'),
  ).action(async (id: string, options: StoreOptions & { user: string; role: Role; json?: boolean }) => {
    await withStore(options, async ({ store }) => {
      const m = await setRole(store, { workspaceId: id, user: options.user, role: options.role }, CLI_ACTOR);
      if (options.json)
        printJson({ user_id: m.userId, email: m.email, role: m.role, workspace_id: m.workspaceId });
      else print(`${m.email} is now ${m.role} of ${m.workspaceId}.`);
    });
  });

  addStoreOptions(
    workspaces
      .command('remove-member')
      .description('remove a member from a workspace (the last owner cannot be removed)')
      .argument('<id>', 'workspace id')
      .requiredOption('--user <email-or-id>', 'the user'),
  ).action(async (id: string, options: StoreOptions & { user: string }) => {
    await withStore(options, async ({ store }) => {
      await removeMember(store, { workspaceId: id, user: options.user }, CLI_ACTOR);
      print(`Removed ${options.user} from ${id}.`);
    });
  });
}
