/** `keygate keys …`: the key lifecycle from the command line. */
import { type Command, Option } from 'commander';
import type { KeyRestrictions } from '../keys/service.ts';
import { ALL_SCOPES, DEFAULT_KEY_POLICY, type KeyStatus } from '../store/types.ts';
import { type Backend, withBackend } from './backend.ts';
import { addTargetOptions, print, printJson, type TargetOptions, UserError } from './common.ts';
import { fieldRows, table } from './format.ts';
import { budgets, collect, count, duration, list, optionalDuration } from './parse.ts';

interface RestrictionOptions {
  scopes?: string;
  models?: string;
  allowIp?: string;
  rpm?: string;
  tpm?: string;
  concurrency?: string;
  budget?: string[];
}

/**
 * The restriction options of `create` and `update`. Only `create` has defaults to show: an option
 * left out of `update` leaves that restriction as it is, and a given one replaces it.
 */
function addRestrictionOptions(command: Command, use: 'create' | 'update'): Command {
  const [was, none] =
    use === 'create' ? [(what: string) => ` (default: ${what})`, 'no limit'] : [() => '', 'remove the limit'];
  return command
    .option(
      '--scopes <list>',
      `comma-separated scopes from ${ALL_SCOPES.join(', ')}${was(DEFAULT_KEY_POLICY.scopes.join(','))}`,
    )
    .option(
      '--models <list>',
      `allowed models or patterns, e.g. "mistral-small-*,codestral-latest" ("any" for all)${was('any')}`,
    )
    .option(
      '--allow-ip <cidrs>',
      `allowed client addresses, e.g. "10.0.0.0/8,2001:db8::/32" ("any" for anywhere)${was('anywhere')}`,
    )
    .option('--rpm <n>', `requests per minute ("none": ${none})${was('no limit')}`)
    .option('--tpm <n>', `tokens per minute ("none": ${none})${was('no limit')}`)
    .option('--concurrency <n>', `requests in flight at once ("none": ${none})${was('no limit')}`)
    .option(
      '--budget <tokens/period>',
      `token budget, e.g. 1000000/month or 50000/day, or none/day (repeatable)${was('none')}`,
      collect,
    );
}

function restrictionsFrom(options: RestrictionOptions): KeyRestrictions {
  const restrictions: KeyRestrictions = {};
  if (options.scopes !== undefined) restrictions.scopes = list(options.scopes);
  if (options.models !== undefined)
    restrictions.models = list(options.models, { emptyWords: ['any', 'all', '*'] });
  if (options.allowIp !== undefined) restrictions.allowedIps = list(options.allowIp, { emptyWords: ['any'] });
  const limits: KeyRestrictions['limits'] = {};
  if (options.rpm !== undefined) limits.rpm = count('--rpm', options.rpm);
  if (options.tpm !== undefined) limits.tpm = count('--tpm', options.tpm);
  if (options.concurrency !== undefined) limits.concurrency = count('--concurrency', options.concurrency);
  if (Object.keys(limits).length > 0) restrictions.limits = limits;
  if (options.budget !== undefined) restrictions.budget = budgets(options.budget);
  return restrictions;
}

function printSecret(id: string, name: string, key: string, what: string): void {
  print(`${what} key ${id} "${name}".`);
  print('');
  print(`  ${key}`);
  print('');
  print('This is the only time the secret is shown: store it now (e.g. in a secret manager).');
  print('Use it as "Authorization: Bearer <key>" against the gateway.');
}

const STATUSES: readonly KeyStatus[] = ['active', 'revoked', 'expired'];

/**
 * Until when the secret a key had before its last rotation keeps working, from the audit event of
 * that rotation (a later rotation cuts every earlier grace to its own end, so the last one says it
 * all). Undefined when it cannot be read: an event pruned, or an admin key without audit:read.
 */
async function graceEnd(backend: Backend, id: string): Promise<string | undefined> {
  try {
    const [rotation] = await backend.listAudit({ targetId: id, action: 'key.rotate', limit: 1 });
    const until = rotation?.changes.previous_secret_valid_until?.after;
    return typeof until === 'string' ? until : undefined;
  } catch {
    return undefined;
  }
}

export function registerKeyCommands(program: Command): void {
  const keys = program.command('keys').description('create, list, show, update, rotate and revoke API keys');

  addRestrictionOptions(
    addTargetOptions(
      keys
        .command('create')
        .description('create a key and print its secret (shown once)')
        .requiredOption('--name <name>', 'a name that says who or what uses the key')
        .option('--expires <duration>', 'lifetime, e.g. 90d, 12h, 30m')
        .option('--workspace <id>', 'workspace (default: ws_default)')
        .option(
          '--owner <email-or-id>',
          'the user the key belongs to: it acts with their role (management scopes)',
        )
        .option('--json', 'print JSON'),
    ),
    'create',
  ).action(
    async (
      options: TargetOptions &
        RestrictionOptions & {
          name: string;
          expires?: string;
          workspace?: string;
          owner?: string;
          json?: boolean;
        },
    ) => {
      const expiresInMs = options.expires === undefined ? undefined : duration('--expires', options.expires);
      const restrictions = restrictionsFrom(options);
      await withBackend(options, async (backend) => {
        const created = await backend.createKey({
          name: options.name,
          expiresInMs,
          workspaceId: options.workspace,
          owner: options.owner,
          ...restrictions,
        });
        if (options.json) {
          printJson(created);
          return;
        }
        printSecret(created.id, created.name, created.key, 'Created');
        if (created.expires_at !== null) print(`It expires at ${created.expires_at}.`);
      });
    },
  );

  addTargetOptions(
    keys
      .command('list')
      .description('list keys (never their secrets)')
      .option('--workspace <id>', 'only this workspace')
      .addOption(new Option('--status <status>', 'only keys with this status').choices(STATUSES))
      .option('--search <text>', 'name contains, or exact id / display prefix')
      .option('--limit <n>', 'at most this many')
      .option('--after <id>', 'the page after this key id')
      .option('--json', 'print JSON'),
  ).action(
    async (
      options: TargetOptions & {
        workspace?: string;
        status?: KeyStatus;
        search?: string;
        limit?: string;
        after?: string;
        json?: boolean;
      },
    ) => {
      const limit = options.limit === undefined ? undefined : (count('--limit', options.limit) ?? undefined);
      await withBackend(options, async (backend) => {
        const views = await backend.listKeys({
          workspaceId: options.workspace,
          status: options.status,
          search: options.search,
          after: options.after,
          limit,
        });
        if (options.json) {
          printJson(views);
          return;
        }
        if (views.length === 0) {
          print('No keys found. Create one with: keygate keys create --name <name>');
          return;
        }
        print(
          table(
            ['ID', 'NAME', 'KEY', 'STATUS', 'SCOPES', 'MODELS', 'LAST USED', 'EXPIRES'],
            views.map((k) => [
              k.id,
              k.name,
              k.display,
              k.status,
              k.scopes.join(','),
              k.models.length === 0 ? 'any' : k.models.join(','),
              k.last_used_at ?? 'never',
              k.expires_at ?? 'never',
            ]),
          ),
        );
      });
    },
  );

  addTargetOptions(
    keys
      .command('show')
      .description('show one key')
      .argument('<id>', 'key id')
      .option('--json', 'print JSON'),
  ).action(async (id: string, options: TargetOptions & { json?: boolean }) => {
    await withBackend(options, async (backend) => {
      const view = await backend.getKey(id);
      if (options.json) {
        printJson(view);
        return;
      }
      const rows = fieldRows(view);
      if (view.rotated_at !== null) {
        const until = await graceEnd(backend, id);
        if (until !== undefined) {
          const ended = Date.parse(until) <= Date.now();
          rows.splice(rows.findIndex(([name]) => name === 'rotated_at') + 1, 0, [
            'previous_secret_valid_until',
            ended ? `${until} (ended)` : until,
          ]);
        }
      }
      print(table(['FIELD', 'VALUE'], rows));
    });
  });

  addRestrictionOptions(
    addTargetOptions(
      keys
        .command('update')
        .description(
          "change a key's name, restrictions, limits, budget or expiry (effective within a second)",
        )
        .argument('<id>', 'key id')
        .option('--name <name>', 'new name')
        .option('--expires <duration>', 'new lifetime from now, or "never"')
        .option('--json', 'print JSON'),
    ),
    'update',
  ).action(
    async (
      id: string,
      options: TargetOptions & RestrictionOptions & { name?: string; expires?: string; json?: boolean },
    ) => {
      const restrictions = restrictionsFrom(options);
      const expiresInMs =
        options.expires === undefined ? undefined : optionalDuration('--expires', options.expires);
      if (options.name === undefined && expiresInMs === undefined && Object.keys(restrictions).length === 0) {
        throw new UserError(
          'nothing to change: give at least one option (see keygate keys update --help)',
          2,
        );
      }
      await withBackend(options, async (backend) => {
        const updated = await backend.updateKey(id, { name: options.name, expiresInMs, ...restrictions });
        if (options.json) printJson(updated);
        else print(`Updated key ${id} "${updated.name}".`);
      });
    },
  );

  addTargetOptions(
    keys
      .command('rotate')
      .description('issue a new secret for a key; the old one keeps working for the grace period')
      .argument('<id>', 'key id')
      .option('--grace <duration>', 'how long the old secret keeps working (0 ends it now)', '24h')
      .option('--json', 'print JSON'),
  ).action(async (id: string, options: TargetOptions & { grace: string; json?: boolean }) => {
    const graceMs = duration('--grace', options.grace, { allowZero: true });
    await withBackend(options, async (backend) => {
      const rotated = await backend.rotateKey(id, graceMs);
      if (options.json) {
        printJson(rotated);
        return;
      }
      printSecret(id, rotated.name, rotated.key, 'Rotated');
      print(
        graceMs === 0
          ? 'The previous secret no longer works.'
          : `The previous secret keeps working until ${rotated.previous_secret_valid_until}.`,
      );
    });
  });

  addTargetOptions(
    keys
      .command('revoke')
      .description('revoke a key at once (a running gateway refuses it within a second)')
      .argument('<id>', 'key id')
      .option('--json', 'print JSON'),
  ).action(async (id: string, options: TargetOptions & { json?: boolean }) => {
    await withBackend(options, async (backend) => {
      const { key, alreadyRevokedAt } = await backend.revokeKey(id);
      if (options.json) printJson(key);
      else if (alreadyRevokedAt !== null) print(`Key ${id} was already revoked at ${alreadyRevokedAt}.`);
      else print(`Revoked key ${id} "${key.name}". Requests with it are refused from now on.`);
    });
  });
}
