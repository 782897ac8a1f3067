/** `keygate audit` and `keygate workspaces`. */
import type { Command } from 'commander';
import { parseCidrs } from '../auth/ip.ts';
import type { WorkspacePatch } from '../store/types.ts';
import { withBackend } from './backend.ts';
import { addTargetOptions, print, printJson, type TargetOptions, UserError } from './common.ts';
import { fieldRows, table } from './format.ts';
import { budgets, collect, count, duration, list, optionalDuration } from './parse.ts';

export function registerAdminCommands(program: Command): Command {
  addTargetOptions(
    program
      .command('audit')
      .description('show the audit log: who changed what, when, from where (newest first)')
      .option('--key <id>', 'only events about this key (or any target id)')
      .option('--workspace <id>', 'only this workspace')
      .option('--action <action>', 'only this action, e.g. key.revoke')
      .option('--since <duration>', 'only the last period, e.g. 7d')
      .option('--limit <n>', 'at most this many (default 50)')
      .option('--json', 'print JSON'),
  ).action(
    async (
      options: TargetOptions & {
        key?: string;
        workspace?: string;
        action?: string;
        since?: string;
        limit?: string;
        json?: boolean;
      },
    ) => {
      const since = options.since === undefined ? undefined : Date.now() - duration('--since', options.since);
      const limit = options.limit === undefined ? 50 : (count('--limit', options.limit) ?? 50);
      await withBackend(options, async (backend) => {
        const views = await backend.listAudit({
          targetId: options.key,
          workspaceId: options.workspace,
          action: options.action,
          since,
          limit,
        });
        if (options.json) {
          printJson(views);
          return;
        }
        if (views.length === 0) {
          print('No audit events match.');
          return;
        }
        print(
          table(
            ['TIME', 'ACTOR', 'ACTION', 'TARGET', 'CHANGED'],
            views.map((v) => [
              v.at ?? '',
              [v.actor.type, v.actor.id, v.actor.ip].filter(Boolean).join(' '),
              v.action,
              v.target.id ?? '',
              Object.keys(v.changes).join(', '),
            ]),
          ),
        );
      });
    },
  );

  const workspaces = program.command('workspaces').description('list workspaces and set their key policy');
  addTargetOptions(
    workspaces.command('list').description('list workspaces').option('--json', 'print JSON'),
  ).action(async (options: TargetOptions & { json?: boolean }) => {
    await withBackend(options, async (backend) => {
      const views = await backend.listWorkspaces();
      if (options.json) printJson(views);
      else
        print(
          table(
            ['ID', 'NAME', 'MAX KEY LIFETIME', 'ALLOWED IPS', 'BUDGET/DAY', 'BUDGET/MONTH'],
            views.map((w) => [
              w.id,
              w.name,
              w.policy.max_key_lifetime ?? 'unlimited',
              w.policy.allowed_ips.join(',') || 'any',
              String(w.policy.budget.tokens_per_day ?? '-'),
              String(w.policy.budget.tokens_per_month ?? '-'),
            ]),
          ),
        );
    });
  });

  addTargetOptions(
    workspaces
      .command('show')
      .description('show one workspace')
      .argument('<id>', 'workspace id')
      .option('--json', 'print JSON'),
  ).action(async (id: string, options: TargetOptions & { json?: boolean }) => {
    await withBackend(options, async (backend) => {
      const view = await backend.getWorkspace(id);
      if (options.json) printJson(view);
      else print(table(['FIELD', 'VALUE'], fieldRows(view)));
    });
  });

  addTargetOptions(
    workspaces
      .command('update')
      .description('set the workspace policy: longest key lifetime, default IP allowlist, shared budget')
      .argument('<id>', 'workspace id')
      .option('--name <name>', 'new name')
      .option(
        '--max-key-lifetime <duration>',
        'longest lifetime of a new key, e.g. 90d ("none" for unlimited)',
      )
      .option('--allow-ip <cidrs>', 'default allowlist for keys without their own ("any" for anywhere)')
      .option('--budget <tokens/period>', 'workspace token budget, e.g. 10000000/month (repeatable)', collect)
      .option('--json', 'print JSON'),
  ).action(
    async (
      id: string,
      options: TargetOptions & {
        name?: string;
        maxKeyLifetime?: string;
        allowIp?: string;
        budget?: string[];
        json?: boolean;
      },
    ) => {
      const patch: WorkspacePatch = {};
      if (options.name !== undefined) {
        const name = options.name.trim();
        if (name.length === 0 || name.length > 128)
          throw new UserError('a workspace name has 1 to 128 characters', 2);
        patch.name = name;
      }
      if (options.maxKeyLifetime !== undefined) {
        patch.maxKeyLifetimeMs = optionalDuration('--max-key-lifetime', options.maxKeyLifetime);
      }
      if (options.allowIp !== undefined) {
        try {
          patch.allowedIps = parseCidrs(list(options.allowIp, { emptyWords: ['any'] })).map((c) => c.text);
        } catch (error) {
          throw new UserError(`--allow-ip: ${(error as Error).message}`, 2);
        }
      }
      if (options.budget !== undefined) patch.budget = budgets(options.budget);
      if (Object.keys(patch).length === 0)
        throw new UserError('nothing to change (see keygate workspaces update --help)', 2);
      await withBackend(options, async (backend) => {
        const updated = await backend.updateWorkspace(id, patch);
        if (options.json) printJson(updated);
        else print(`Updated workspace ${id}.`);
      });
    },
  );
  return workspaces;
}
